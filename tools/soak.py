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
        return 0 if bitwise == len(results) and len(resumed) == len(with_ckpt) else 1
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
