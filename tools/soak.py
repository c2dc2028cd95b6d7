"""Kill-and-resume soak test of meta_train.

    python tools/soak.py [--runs 20] [--seed 0] [--n_train_iters 40] [--save_freq 2]

Runs one tiny meta_train uninterrupted (the reference), then `--runs` times: starts the same
command in a fresh savedir, kills it with SIGKILL at a random moment of its training (a
delay after its own first logged iteration, drawn with `--seed` uniformly over the time the
reference took from its first iteration to its end; start-up time is left out because it
varies with the machine's load and holds nothing to lose), reruns the same command to
completion, and compares the final checkpoint with the reference's.

Reports how many runs resumed from their last checkpoint, how many iterations were lost
(completed before the kill but redone after it, read from the log, which has a line per
iteration here), how many kills hit a checkpoint being written, and whether the final
weights, Adam state and iteration match the reference (bitwise, else the largest absolute
difference). Runs one TensorFlow process at a time; TensorFlow is imported here only for
the final comparison.

`--phases` adds kills during the runs that write once at their end, `--phase_runs` of each
(default 4): meta_test and export (on copies of the trained reference savedir) and dataset
preprocessing (a meta_train whose first run decodes the Omniglot zips of
../shared/data/omniglot into the omniglot28.npz cache). The first run of each phase is
killed the moment its first temporary file appears (the worst moment for an atomic write),
the others at a moment drawn uniformly over the reference's duration (from its progress
bar's appearance when it has one). After each kill every output file present must read
back completely (nothing half-written); the rerun must exit 0 and write what the reference
wrote. Temporary files a kill leaves behind are counted (they are never read).
"""
import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--dataset', 'synthetic', '--way', '5', '--shot', '1', '--query', '5',
        '--metabatch', '2', '--n_steps', '1', '--n_channel', '8', '--noprogress',
        '--n_val_batches', '2', '--print_freq', '1', '--max_to_keep', '2']
# Not training state: how often this process's Checkpoint object saved, the object graph,
# and the flags (they hold the savedir, which differs).
IGNORED_KEYS = ('save_counter/.ATTRIBUTES/VARIABLE_VALUE', '_CHECKPOINTABLE_OBJECT_GRAPH',
                'run/config/.ATTRIBUTES/VARIABLE_VALUE')


def command(savedir, args):
    return [sys.executable, os.path.join(REPO, 'main.py'), '--mode', 'meta_train',
            '--savedir', savedir, *TINY, '--n_train_iters', str(args.n_train_iters),
            '--save_freq', str(args.save_freq), '--val_freq', str(args.val_freq)]


def last_iteration_logged(savedir):
    """The last iteration whose 'Iter <i> start' line reached the log (-1: none)."""
    path = os.path.join(savedir, 'meta_train.log')
    if not os.path.exists(path):
        return -1
    with open(path, errors='replace') as f:
        found = re.findall(r'^Iter (\d+) start', f.read(), flags=re.M)
    return int(found[-1]) if found else -1


def listed_checkpoint(savedir):
    """The checkpoint number <savedir>/checkpoint names as the latest (None: none)."""
    path = os.path.join(savedir, 'checkpoint')
    if not os.path.exists(path):
        return None
    with open(path) as f:
        m = re.search(r'^model_checkpoint_path: "model-(\d+)"', f.read(), flags=re.M)
    return int(m.group(1)) if m else None


def save_in_progress(savedir, listed):
    """True if the kill left a save half-done: TF's temporary folder, or the files of a
    checkpoint newer than the listed one."""
    for n in os.listdir(savedir):
        if re.fullmatch(r'model-\d+_temp', n):
            return True
        m = re.fullmatch(r'model-(\d+)\.(index|data-.*)', n)
        if m and (listed is None or int(m.group(1)) > listed):
            return True
    return False


def run_reference(savedir, args):
    """Runs uninterrupted; returns (seconds to the first iteration, seconds from there to
    its last checkpoint being listed, i.e. the span of training)."""
    t0 = time.time()
    proc = subprocess.Popen(command(savedir, args), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    first = last = None
    while proc.poll() is None:
        if first is None and last_iteration_logged(savedir) >= 0:
            first = time.time() - t0
        if last is None and listed_checkpoint(savedir) == args.n_train_iters:
            last = time.time() - t0
        time.sleep(0.005)
    end = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f'the reference run failed:\n{proc.stderr.read()[-3000:]}')
    first = first if first is not None else end
    return first, (last if last is not None else end) - first


def trial(savedir, kill_at, args):
    """Starts the command, kills it `kill_at` seconds after its first iteration reached the
    log (start-up time varies with the machine's load; training is what is being tested),
    reruns it to the end and reads what happened."""
    proc = subprocess.Popen(command(savedir, args), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None and last_iteration_logged(savedir) < 0:
        time.sleep(0.005)
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < kill_at:
        time.sleep(0.002)
    finished = proc.poll() is not None
    if not finished:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = last_iteration_logged(savedir)
    listed = listed_checkpoint(savedir)
    mid_save = save_in_progress(savedir, listed)
    rerun = subprocess.run(command(savedir, args), cwd=REPO, capture_output=True, text=True)
    with open(os.path.join(savedir, 'meta_train.log'), errors='replace') as f:
        log = f.read()
    resumed_from = re.findall(r'^resumed from model-(\d+) at iteration', log, flags=re.M)
    resumed_from = int(resumed_from[0]) if resumed_from else None
    restart = (resumed_from + 1) if resumed_from is not None else 0
    return dict(kill_at=kill_at, finished=finished, done=done, listed=listed,
                mid_save=mid_save, rc=rerun.returncode, stderr=rerun.stderr,
                resumed_from=resumed_from, lost=max(0, done + 1 - restart),
                fell_back='cannot be read' in log)


# ---- kills during the phases that write their outputs once, at the end ---------------

def read_outputs(savedir, phase):
    """{file: content digest} of a phase's outputs present in `savedir`; a file that does
    not read back completely raises ValueError naming it (half-written)."""
    import glob
    import hashlib
    import json
    import pickle
    import zipfile

    import numpy as np

    def arrays(path):
        with np.load(path, allow_pickle=False) as z:
            h = hashlib.sha256()
            for k in sorted(z.files):
                h.update(k.encode() + np.ascontiguousarray(z[k]).tobytes())
            return h.hexdigest()

    files = {'meta_test': ['meta_test.log', 'meta_test.json'],
             'export': ['export.pkl', 'export.npz', 'stochastic.npz'],
             'preprocess': [os.path.join('data', 'omniglot', 'omniglot28.npz')]}[phase]
    out = {}
    for name in files:
        path = os.path.join(savedir, name)
        if not os.path.exists(path):
            continue
        try:
            if name.endswith('.log'):
                text = open(path).read()
                if not re.fullmatch(r'accuracy : [\d.]+ \+- [\d.]+\n', text):
                    raise ValueError(repr(text[:80]))
                out[name] = text
            elif name.endswith('.json'):
                out[name] = json.dumps(json.load(open(path)), sort_keys=True)
            elif name.endswith('.pkl'):
                with open(path, 'rb') as f:   # our own file, written by export
                    out[name] = hashlib.sha256(pickle.dumps(pickle.load(f))).hexdigest()
            else:
                out[name] = arrays(path)
        except (ValueError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
            raise ValueError(f'{name} is half-written ({type(e).__name__}: {e})') from None
    out['_leftovers'] = len(glob.glob(os.path.join(savedir, '**', '*.tmp'), recursive=True) +
                            glob.glob(os.path.join(savedir, '**', '.*.tmp'), recursive=True))
    return out


def phase_setup(phase, trained, d, args):
    """Prepares `d` for a run of `phase`; returns (command, stderr marker or None)."""
    shutil.rmtree(d, ignore_errors=True)
    if phase == 'preprocess':   # a fresh data root holding only the zips
        zips = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'omniglot')
        os.makedirs(os.path.join(d, 'data', 'omniglot'))
        for n in ('images_background_small1.zip', 'images_background_small2.zip'):
            os.symlink(os.path.join(zips, n), os.path.join(d, 'data', 'omniglot', n))
        argv = [a for a in TINY if a not in ('synthetic', '--noprogress')]
        argv[argv.index('--dataset') + 1:argv.index('--dataset') + 1] = ['omniglot']
        return ([sys.executable, os.path.join(REPO, 'main.py'), '--mode', 'meta_train',
                 '--savedir', os.path.join(d, 'run'), *argv, '--omniglot_source', 'small',
                 '--data_root', os.path.join(d, 'data'), '--n_train_iters', '0'],
                'decoding Omniglot')
    shutil.copytree(trained, d, ignore=shutil.ignore_patterns('meta_test*', 'export*', '.lock'))
    argv = [a for a in TINY if a != '--noprogress']
    return ([sys.executable, os.path.join(REPO, 'main.py'), '--mode', phase, '--savedir', d,
             *argv, '--n_train_iters', str(args.n_train_iters), '--n_test_iters', '400'],
            'meta_test' if phase == 'meta_test' else None)


def run_phase(phase, trained, workdir, rng, args):
    """The reference run of `phase`, then --phase_runs killed runs and their reruns."""
    def start(d):
        cmd, marker = phase_setup(phase, trained, d, args)
        err = open(os.path.join(workdir, f'{phase}.stderr'), 'w+')
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err), \
            err, marker, cmd

    def wait_marker(proc, err, marker):
        t0 = time.time()
        while marker and proc.poll() is None:
            err.seek(0)
            if marker in err.read():
                return time.time()
            time.sleep(0.005)
        return t0

    ref = os.path.join(workdir, f'{phase}-reference')
    proc, err, marker, _ = start(ref)
    t0 = wait_marker(proc, err, marker)
    proc.wait()
    span = time.time() - t0
    if proc.returncode != 0:
        err.seek(0)
        sys.exit(f'the {phase} reference failed:\n{err.read()[-3000:]}')
    expected = read_outputs(ref, phase)
    expected.pop('_leftovers')
    rows = []
    for k in range(args.phase_runs):
        d = os.path.join(workdir, f'{phase}{k:02d}')
        proc, err, marker, cmd = start(d)
        at_write = k == 0
        t0 = wait_marker(proc, err, marker)
        kill_at = None if at_write else rng.uniform(0, span)
        while proc.poll() is None:
            if at_write and read_outputs_tmp(d):
                break
            if not at_write and time.time() - t0 >= kill_at:
                break
            time.sleep(0.001)
        finished = proc.poll() is not None
        if not finished:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        try:
            found = read_outputs(d, phase)
            half = None
        except ValueError as e:
            found, half = {'_leftovers': 0}, str(e)
        rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        after = read_outputs(d, phase) if rerun.returncode == 0 else {}
        after.pop('_leftovers', None)
        rows.append(dict(kill_at=kill_at, finished=finished, half=half,
                         present=sorted(n for n in found if n != '_leftovers'),
                         leftovers=found['_leftovers'], rc=rerun.returncode,
                         same=after == expected, stderr=rerun.stderr))
        r = rows[-1]
        moment = ('when its first temporary file appeared' if at_write else
                  f'{kill_at:5.2f} s into {"the progress bar" if marker else "the run"}')
        print(f'{phase} run {k}: killed {moment}{" (had finished)" if finished else ""}; '
              f'complete outputs left: {", ".join(r["present"]) or "none"}'
              f'{"; HALF-WRITTEN: " + half if half else ""}; temporary files left '
              f'{r["leftovers"]}; rerun exit {r["rc"]}, outputs as the reference\'s: '
              f'{r["same"]}', flush=True)
        if r['rc'] != 0:
            print(r['stderr'][-2000:])
    return rows


def read_outputs_tmp(d):
    """Whether a temporary file of an atomic write exists anywhere under `d` now."""
    for root, _, names in os.walk(d):
        if any(n.endswith('.tmp') for n in names):
            return True
    return False


def compare(reference, other):
    """(bitwise equal, max abs difference) over every training-state tensor."""
    import numpy as np
    import tensorflow as tf
    a, b = tf.train.load_checkpoint(reference), tf.train.load_checkpoint(other)
    keys = set(a.get_variable_to_shape_map()) - set(IGNORED_KEYS)
    if keys != set(b.get_variable_to_shape_map()) - set(IGNORED_KEYS):
        return False, float('inf')
    equal, worst = True, 0.0
    for k in sorted(keys):
        x, y = a.get_tensor(k), b.get_tensor(k)
        if isinstance(x, bytes) or getattr(x, 'dtype', None) == object:
            equal &= bool(np.all(x == y))
            continue
        x, y = np.asarray(x), np.asarray(y)
        equal &= np.array_equal(x, y)
        if x.size:
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
    return equal, worst


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--runs', type=int, default=20)
    p.add_argument('--seed', type=int, default=0, help='seed of the kill moments')
    p.add_argument('--n_train_iters', type=int, default=40)
    p.add_argument('--save_freq', type=int, default=2)
    p.add_argument('--val_freq', type=int, default=20)
    p.add_argument('--workdir', default=None, help='default: a temporary folder, deleted')
    p.add_argument('--phases', default='meta_test,export,preprocess',
                   help='comma-separated one-shot phases also killed (empty: none)')
    p.add_argument('--phase_runs', type=int, default=4, help='killed runs per phase')
    args = p.parse_args()
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    workdir = args.workdir or tempfile.mkdtemp(prefix='soak-')
    os.makedirs(workdir, exist_ok=True)
    try:
        ref_dir = os.path.join(workdir, 'reference')
        shutil.rmtree(ref_dir, ignore_errors=True)
        startup, span = run_reference(ref_dir, args)
        print(f'reference: first iteration logged after {startup:.1f} s, then {span:.2f} s to '
              f'its last checkpoint; each run is killed at a moment drawn uniformly in '
              f'[0, {span:.2f}] s after its first iteration', flush=True)
        rng = random.Random(args.seed)
        results = []
        for k in range(args.runs):
            d = os.path.join(workdir, f'run{k:02d}')
            shutil.rmtree(d, ignore_errors=True)
            r = trial(d, rng.uniform(0, span), args)
            results.append(r)
            print(f'run {k:2d}: killed {r["kill_at"]:5.2f} s into training'
                  f'{" (had already finished)" if r["finished"] else ""}, last iteration '
                  f'logged {r["done"]}, listed checkpoint {r["listed"]}'
                  f'{", a save was in progress" if r["mid_save"] else ""}; rerun exit '
                  f'{r["rc"]}, resumed from {r["resumed_from"]}, iterations lost {r["lost"]}',
                  flush=True)
            if r['rc'] != 0:
                print(r['stderr'][-2000:])

        final = f'model-{args.n_train_iters}'
        matches = [compare(os.path.join(ref_dir, final), os.path.join(workdir, f'run{k:02d}',
                                                                        final))
                   if r['rc'] == 0 else (False, float('inf')) for k, r in enumerate(results)]
        killed = [r for r in results if not r['finished']]
        with_ckpt = [r for r in killed if r['listed'] is not None]
        resumed = [r for r in with_ckpt if r['resumed_from'] == r['listed']]
        lost = [r["lost"] for r in killed]
        bitwise = sum(m[0] for m in matches)
        print()
        print(f'soak: {args.runs} runs of a tiny meta_train (synthetic 5-way 1-shot, metabatch '
              f'2, 1 inner step, 8 channels; iterations 0..{args.n_train_iters}, checkpoint '
              f'every {args.save_freq}, validation every {args.val_freq}) killed with SIGKILL '
              f'at random moments (seed {args.seed}), each rerun with the same command')
        during = [r for r in killed if r['listed'] != args.n_train_iters]
        before_first = len(killed) - len(with_ckpt)
        print(f'  killed: {len(killed)} ({len(during)} during training, of which '
              f'{before_first} before the first checkpoint and '
              f'{sum(r["mid_save"] for r in killed)} while a checkpoint was being written; '
              f'{len(killed) - len(during)} after the last checkpoint, while exiting); '
              f'{len(results) - len(killed)} had finished before the kill')
        print(f'  reruns exited 0: {sum(r["rc"] == 0 for r in results)}/{len(results)}; resumed '
              f'from the last listed checkpoint: {len(resumed)}/{len(with_ckpt)}; fell back to '
              f'an older checkpoint: {sum(r["fell_back"] for r in results)}')
        if lost:
            print(f'  iterations lost (done before the kill, redone after): max {max(lost)}, '
                  f'mean {sum(lost) / len(lost):.1f} (checkpoint every {args.save_freq})')
        print(f'  final state vs the uninterrupted run (weights, Adam moments and step, '
              f'iteration): {bitwise}/{len(results)} bitwise identical, max abs difference '
              f'{max(m[1] for m in matches):g}')
        ok = bitwise == len(results) and len(resumed) == len(with_ckpt)
        phases = [p for p in args.phases.split(',') if p.strip()]
        for phase in phases:
            print(flush=True)
            rows = run_phase(phase, ref_dir, workdir, rng, args)
            killed_rows = [r for r in rows if not r['finished']]
            print(f'soak {phase}: {len(killed_rows)} of {len(rows)} runs killed (1 at the '
                  f'first temporary file); half-written outputs: '
                  f'{sum(r["half"] is not None for r in rows)}; temporary files left: '
                  f'{sum(r["leftovers"] for r in rows)}; reruns exited 0: '
                  f'{sum(r["rc"] == 0 for r in rows)}/{len(rows)}; outputs as the '
                  f'reference\'s: {sum(r["same"] for r in rows)}/{len(rows)}', flush=True)
            ok &= all(r['half'] is None and r['rc'] == 0 and r['same'] for r in rows)
        return 0 if ok else 1
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
