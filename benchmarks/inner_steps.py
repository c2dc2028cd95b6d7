"""Memory and speed of second-order MAML against the number of inner steps, with and
without gradient checkpointing of the inner loop (`--efficient`, model/inner_loop.py
`checkpointed`).

    python -m benchmarks.inner_steps                                  # omni20_1shot, 1,5,10,20
    python -m benchmarks.inner_steps --setting mimg5_1shot --json mimg.json

Every (setting, n_steps, efficient) configuration runs in a fresh process, so its peak
resident memory is its own. The process builds the model exactly as benchmarks/throughput.py
does (its configuration table; the compiled step of model/steps.py that main.py runs, with
Adam and clipping at 3), makes random episodes of the setting's shapes, reads its resident
memory, then times the first step, warm-up steps and several timed windows (median steps/s
reported), and reads its peak resident memory (getrusage ru_maxrss) at the end. The growth
over the built model is what the compiled step itself costs (its traced graph, kernels and,
mostly, the activations kept for the meta-gradient). See benchmarks/README.md.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types

# As main.py, before TensorFlow is imported (model/__init__.py explains the oneDNN switch).
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from benchmarks.throughput import (CONFIGS, REPO, fmt, last_line, machine, random_batches,
                                   value_line)

DEFAULT_N_STEPS = '1,5,10,20'


# ---- helpers shared with benchmarks/distribute.py ------------------------------------------
def model_config(setting, n_steps=None, efficient=False):
    """(flags namespace for model.build_model, the setting's dict) of a throughput.py
    configuration, as its worker builds them; n_steps overrides the setting's."""
    c = dict(CONFIGS[setting])
    if n_steps is not None:
        c['n_steps'] = int(n_steps)
    cfg = types.SimpleNamespace(model='fomaml' if c['first_order'] else 'maml',
                                backbone='conv4', n_channel=c['n_channel'],
                                inner_lr=c['inner_lr'], n_steps=c['n_steps'], n_test_steps=None,
                                alpha_init=None, inner_loss='mean', n_test_mc_samp=1,
                                maml=False, efficient=bool(efficient),
                                dataset='synthetic', normalization='none')
    return cfg, c


def episode_shapes(c):
    """(tasks, support size, query size) of a setting."""
    return c['metabatch'], c['way'] * c['shot'], c['way'] * c['query']


def synthetic_batches(c, n=4, seed=0):
    """n metabatches of random episodes (xs, ys, xq, yq) of the setting's shapes."""
    return random_batches(c, c['query'], c['metabatch'], n, seed)


def time_step(step, batches, warmup, windows, steps_per_window):
    """(time of the first call, median steps/s of the timed windows, every window's rate)."""
    t = time.perf_counter()
    step(*batches[0])[0].numpy()
    first = time.perf_counter() - t
    for i in range(warmup):
        step(*batches[(i + 1) % len(batches)])[0].numpy()
    rates = [timed_window(step, batches, steps_per_window) for _ in range(windows)]
    return first, statistics.median(rates), rates


def timed_window(step, batches, n):
    """steps/s of n consecutive steps, ending by fetching the last step's loss so that all
    of them have run."""
    t = time.perf_counter()
    for i in range(n):
        out = step(*batches[i % len(batches)])
    out[0].numpy()
    return n / (time.perf_counter() - t)


def peak_rss_mib():
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.


def current_rss_mib():
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return float(line.split()[1]) / 1024.
    except OSError:
        pass
    return float('nan')


def tensor_memory_available():
    import tensorflow as tf
    try:
        tf.config.experimental.get_memory_info('CPU:0')
        return True
    except ValueError:
        return False


# ---- one configuration (runs in a fresh process) ------------------------------------------
def worker(setting, n_steps, efficient, warmup, windows, steps_per_window):
    import tensorflow as tf
    from model import build_model, optim, steps

    cfg, c = model_config(setting, n_steps, efficient)
    tf.random.set_seed(0)
    model = build_model(cfg, c['way'], c['image'])
    opt = optim.Adam(model.outer_variables, 1e-3)
    T, ns, nq = episode_shapes(c)
    train_step = steps.make_train_step(model, opt, 3.0, steps.episode_spec(T, ns, nq, c['image']))
    batches = synthetic_batches(c)
    rss_built = current_rss_mib()          # model, optimiser and episodes; nothing traced yet
    peak_built = peak_rss_mib()
    t = time.perf_counter()
    train_step(*batches[0])[0].numpy()                 # traces, compiles and runs once
    first = time.perf_counter() - t
    # Tensor memory of the steps that follow, from TensorFlow's allocator (the BFC allocator,
    # which the parent turns on for the CPU: TF_CPU_ALLOCATOR_USE_BFC): the activations a step
    # keeps for its meta-gradient, without the traced graph and the kernels that RSS includes.
    tensor_stats = tensor_memory_available()
    if tensor_stats:
        tf.config.experimental.reset_memory_stats('CPU:0')
    _, rate, rates = time_step(train_step, batches[1:] + batches[:1], warmup, windows,
                               steps_per_window)
    tensor_peak = (tf.config.experimental.get_memory_info('CPU:0')['peak'] / 2 ** 20
                   if tensor_stats else None)
    peak = peak_rss_mib()
    return dict(setting=setting, model=cfg.model, n_steps=int(n_steps), efficient=bool(efficient),
                rss_built_mib=rss_built, peak_rss_built_mib=peak_built, peak_rss_mib=peak,
                rss_growth_mib=peak - rss_built, steps_per_s=rate, window_rates=rates,
                first_step_s=first, tensor_peak_mib=tensor_peak, warmup=warmup, windows=windows,
                steps_per_window=steps_per_window)


def run_worker(setting, n_steps, efficient, args):
    cmd = [sys.executable, '-m', 'benchmarks.inner_steps', '--worker', '--setting', setting,
           '--n_steps_list', str(n_steps), '--warmup', str(args.warmup),
           '--windows', str(args.windows), '--steps_per_window', str(args.steps_per_window)]
    if efficient:
        cmd.append('--efficient')
    t = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.timeout,
                             env=dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC='true'))
    except subprocess.TimeoutExpired:
        return dict(setting=setting, n_steps=n_steps, efficient=efficient,
                    error=f'timed out after {args.timeout} s')
    if out.returncode != 0:
        # e.g. killed by the kernel's OOM killer (-9) at a large n_steps
        return dict(setting=setting, n_steps=n_steps, efficient=efficient,
                    error=f'exit code {out.returncode}: {out.stderr.strip()[-1500:]}')
    r = json.loads(value_line(out.stdout))
    r['process_s'] = time.perf_counter() - t
    return r


# ---- report ---------------------------------------------------------------------------------
def ratio(a, b):
    return f'{a / b:.2f}' if a is not None and b else '-'


def table(results):
    lines = ['| setting | n_steps | efficient | peak tensor memory of a step (MiB) | peak RSS (MiB) | '
             'RSS growth over the built model (MiB) | steps/s | first step (s) | tensor memory '
             'efficient/plain | speed efficient/plain |',
             '|' + ' --- |' * 10]
    by_key = {(r['setting'], r['n_steps'], r['efficient']): r for r in results}
    for r in results:
        key = (r['setting'], r['n_steps'], r['efficient'])
        if 'error' in r:
            lines.append(f'| {key[0]} | {key[1]} | {"yes" if key[2] else "no"} | failed: '
                         f'{last_line(r["error"])[:80]} | | | | | | |')
            continue
        plain = by_key.get((key[0], key[1], False)) if key[2] else None
        ok = plain is not None and 'error' not in plain
        lines.append(
            f'| {key[0]} | {key[1]} | {"yes" if key[2] else "no"} | '
            f'{fmt(r.get("tensor_peak_mib"), 0)} | {fmt(r["peak_rss_mib"], 0)} | '
            f'{fmt(r["rss_growth_mib"], 0)} | {fmt(r["steps_per_s"])} | '
            f'{fmt(r["first_step_s"], 1)} | '
            f'{ratio(r.get("tensor_peak_mib"), plain.get("tensor_peak_mib")) if ok else "-"} | '
            f'{ratio(r["steps_per_s"], plain["steps_per_s"]) if ok else "-"} |')
    return '\n'.join(lines)


def line(r):
    what = (f'{r["setting"]:14s} n_steps {r["n_steps"]:3d} '
            f'{"efficient" if r["efficient"] else "plain    "}')
    if 'error' in r:
        return f'{what} FAILED: {last_line(r["error"])}'
    return (f'{what} {fmt(r["steps_per_s"])} steps/s (windows '
            f'{", ".join(fmt(x) for x in r["window_rates"])}), first step '
            f'{fmt(r["first_step_s"], 1)} s, tensor peak {fmt(r.get("tensor_peak_mib"), 0)} MiB, '
            f'RSS built {fmt(r["rss_built_mib"], 0)} MiB, peak '
            f'{fmt(r["peak_rss_mib"], 0)} MiB (+{fmt(r["rss_growth_mib"], 0)}), process '
            f'{fmt(r["process_s"], 0)} s')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--setting', default='omni20_1shot',
                   help=f'comma-separated, from benchmarks/throughput.py: {", ".join(CONFIGS)}')
    p.add_argument('--n_steps_list', default=DEFAULT_N_STEPS,
                   help='comma-separated numbers of inner steps (meta-train)')
    p.add_argument('--efficient', action='store_true', help=argparse.SUPPRESS)  # worker only
    p.add_argument('--only', choices=['both', 'plain', 'efficient'], default='both',
                   help='run both variants (default) or one of them')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps after the first')
    p.add_argument('--windows', type=int, default=3, help='timed windows (median reported)')
    p.add_argument('--steps_per_window', type=int, default=2, help='steps per timed window')
    p.add_argument('--timeout', type=float, default=3600., help='seconds per configuration')
    p.add_argument('--json', help='also write the results to this file')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    settings = [s.strip() for s in args.setting.split(',') if s.strip()]
    unknown = [s for s in settings if s not in CONFIGS]
    if unknown:
        p.error(f'unknown setting(s) {", ".join(unknown)}; known: {", ".join(CONFIGS)}')
    try:
        n_steps_list = [int(n) for n in args.n_steps_list.split(',') if n.strip()]
    except ValueError:
        p.error(f'--n_steps_list must be comma-separated integers, got {args.n_steps_list!r}')
    if not n_steps_list or min(n_steps_list) < 1:
        p.error('--n_steps_list needs numbers of inner steps >= 1')
    if args.windows < 1 or args.steps_per_window < 1 or args.warmup < 0:
        p.error('--windows and --steps_per_window must be >= 1, --warmup >= 0')

    if args.worker:
        print('RESULT ' + json.dumps(worker(settings[0], n_steps_list[0], args.efficient,
                                            args.warmup, args.windows, args.steps_per_window)))
        return 0

    variants = {'both': (False, True), 'plain': (False,), 'efficient': (True,)}[args.only]
    print(f'machine: {machine()}')
    print(f'each configuration in a fresh process: first step, {args.warmup} warm-up step(s), '
          f'{args.windows} timed window(s) of {args.steps_per_window} step(s)', flush=True)
    results = []
    start = time.perf_counter()
    for setting in settings:
        for n in n_steps_list:
            for efficient in variants:
                results.append(run_worker(setting, n, efficient, args))
                print(line(results[-1]), flush=True)
    print(f'total {time.perf_counter() - start:.0f} s')
    print()
    print(table(results))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(machine=machine(), args=vars(args), results=results), f, indent=1)
    return 1 if any('error' in r for r in results) else 0


if __name__ == '__main__':
    sys.exit(main())
