"""How the cost of a second-order MAML meta-train step grows with the work: steps/s, time to
the first step and peak resident memory against way, shot, metabatch, inner steps (with and
without --efficient) and image size, varying ONE factor at a time around omni5_1shot
(benchmarks/throughput.py: 5-way 1-shot, 15 queries, metabatch 4, 5 inner steps at lr 0.1,
Conv4-64 on 28x28x1); then the time to meta-test 600 and 6000 episodes of omni5_1shot.

    python -m benchmarks.scaling                          # every factor (estimate: 30-40 min)
    python -m benchmarks.scaling --factors way,n_steps --markdown out.md
    python -m benchmarks.scaling --quick                  # toy sizes (the tests' run)

Each measurement runs in a fresh process (so its peak RSS is its own), on random episodes of
its shapes, with the compiled step of main.py (model/steps.py: Adam, clipping at 3, the
default --task_loop while and fused batch norm). The base configuration is measured once and
shown in every factor's rows. Meta-test is the eval step of main.py's meta_test
(steps.make_eval_step: tf.map_fn over a metabatch of episodes, 5 inner steps), called on
metabatch-sized batches of random episodes (no data loading), first call included.
"""
import argparse
import json
import subprocess
import sys
import time

from benchmarks import inner_steps, throughput

BASE = 'omni5_1shot'
# factor -> the values measured; 'image' is the side of the (still one-channel) input.
FACTORS = {'way': (5, 20), 'shot': (1, 5), 'metabatch': (1, 4, 16), 'n_steps': (1, 5, 10, 20),
           'image': (28, 84)}
TEST_EPISODES = (600, 6000)
# --quick: the same table at toy sizes around throughput.py's maml_tiny.
QUICK_BASE = 'maml_tiny'
QUICK_FACTORS = {'way': (3, 5), 'shot': (1, 2), 'metabatch': (1, 2), 'n_steps': (1, 2),
                 'image': (16, 24)}
QUICK_TEST_EPISODES = (4, 8)
TIMING = dict(warmup=2, windows=3, steps_per_window=2)
QUICK_TIMING = dict(warmup=0, windows=1, steps_per_window=1)


def config(base, factor=None, value=None):
    """The base configuration with one factor replaced."""
    c = dict(throughput.ALL_CONFIGS[base])
    if factor == 'image':
        c['image'] = (value, value, c['image'][2])
    elif factor is not None:
        c[factor] = value
    return c


def measurements(base, factors, test_episodes):
    """[(factor, value, efficient, test episodes or None)] in table order; the base point of
    every factor is one measurement (its key is the same)."""
    out = []
    for factor, values in factors.items():
        for v in values:
            out.append((factor, v, False, None))
            if factor == 'n_steps':
                out.append((factor, v, True, None))
    out += [('test', n, False, n) for n in test_episodes]
    return out


def key(base, factor, value, efficient, episodes):
    """Measurements with equal keys are the same run (the base point of each factor)."""
    c = config(base, None if factor == 'test' else factor, value)
    return json.dumps([sorted((k, list(v) if isinstance(v, tuple) else v)
                              for k, v in c.items()), efficient, episodes])


# ---- one measurement (runs in a fresh process) ----------------------------------------------
def worker(c, efficient, episodes, warmup, windows, steps_per_window):
    _, train_step, eval_step, batches = throughput.build_maml_family(c, 'maml',
                                                                     efficient=efficient)
    if episodes is None:
        first, rate, rates = inner_steps.time_step(train_step, batches, warmup, windows,
                                                   steps_per_window)
        return dict(steps_per_s=rate, window_rates=rates, first_step_s=first,
                    peak_rss_mb=inner_steps.peak_rss_mib())
    calls = -(-episodes // c['metabatch'])   # main.py: metabatch-sized batches of episodes
    t = time.perf_counter()
    eval_step(*batches[0])[-1].numpy()
    first = time.perf_counter() - t
    for i in range(1, calls):
        out = eval_step(*batches[i % len(batches)])
    if calls > 1:
        out[-1].numpy()
    total = time.perf_counter() - t
    return dict(test_s=total, first_call_s=first, episodes=calls * c['metabatch'],
                test_episodes_per_s=calls * c['metabatch'] / total,
                peak_rss_mb=inner_steps.peak_rss_mib())


def run_worker(c, efficient, episodes, timing, timeout):
    spec = dict(config=c, efficient=efficient, episodes=episodes, **timing)
    cmd = [sys.executable, '-m', 'benchmarks.scaling', '--worker', json.dumps(spec)]
    t = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=throughput.REPO, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(error=f'timed out after {timeout:.0f} s')
    if out.returncode != 0:   # e.g. killed by the OOM killer (-9)
        return dict(error=f'exit code {out.returncode}: '
                          f'{throughput.last_line(out.stderr or "no output")}')
    r = json.loads(throughput.value_line(out.stdout))
    r['process_s'] = time.perf_counter() - t
    return r


# ---- report -----------------------------------------------------------------------------------
def describe(base, factor, value, efficient):
    c = config(base, factor, value)
    h, w, ch = c['image']
    return (f'{c["way"]}-way {c["shot"]}-shot, metabatch {c["metabatch"]}, {c["n_steps"]} inner '
            f'steps{" (--efficient)" if efficient else ""}, {h}x{w}x{ch}')


def train_table(base, rows):
    """rows: [(factor, value, efficient, result)] of the meta-train measurements."""
    base_r = next((r for f, v, e, r in rows if not e and config(base, f, v) == config(base)
                   and 'error' not in r), None)
    lines = [f'Meta-train, one factor at a time around {base} ({describe(base, None, None, False)}'
             '); "x base" is the time a step takes relative to the base configuration.', '',
             '| factor | value | --efficient | steps/s | s a step | x base | first step (s) | '
             'peak RSS (MB) |', '|' + ' --- |' * 8]
    for factor, value, efficient, r in rows:
        is_base = not efficient and config(base, factor, value) == config(base)
        label = f'{value}{" (base)" if is_base else ""}'
        if 'error' in r:
            lines.append(f'| {factor} | {label} | {"yes" if efficient else "no"} | failed: '
                         f'{r["error"][:80]} | | | | |')
            continue
        rel = base_r['steps_per_s'] / r['steps_per_s'] if base_r else None
        lines.append(f'| {factor} | {label} | {"yes" if efficient else "no"} | '
                     f'{throughput.fmt(r["steps_per_s"])} | '
                     f'{throughput.fmt(1. / r["steps_per_s"], 2)} | {throughput.fmt(rel, 2)} | '
                     f'{throughput.fmt(r["first_step_s"], 1)} | '
                     f'{throughput.fmt(r["peak_rss_mb"], 0)} |')
    return '\n'.join(lines)


def test_table(base, rows):
    c = config(base)
    lines = [f'Meta-test of {base} (eval step on batches of {c["metabatch"]} episodes, '
             f'{c["n_steps"]} inner steps; first call included).', '',
             '| episodes | total (s) | first call (s) | episodes/s | peak RSS (MB) |',
             '|' + ' --- |' * 5]
    for _, n, _, r in rows:
        if 'error' in r:
            lines.append(f'| {n} | failed: {r["error"][:80]} | | | |')
            continue
        lines.append(f'| {n} | {throughput.fmt(r["test_s"], 1)} | '
                     f'{throughput.fmt(r["first_call_s"], 1)} | '
                     f'{throughput.fmt(r["test_episodes_per_s"], 2)} | '
                     f'{throughput.fmt(r["peak_rss_mb"], 0)} |')
    return '\n'.join(lines)


def line(factor, value, efficient, r):
    what = f'{factor:9s} {str(value):5s}{" efficient" if efficient else ""}'
    if 'error' in r:
        return f'{what}: FAILED {r["error"]}'
    if 'steps_per_s' in r:
        return (f'{what}: {throughput.fmt(r["steps_per_s"])} steps/s, first step '
                f'{throughput.fmt(r["first_step_s"], 1)} s, peak RSS '
                f'{throughput.fmt(r["peak_rss_mb"], 0)} MB')
    return (f'{what}: {r["episodes"]} episodes in {throughput.fmt(r["test_s"], 1)} s (first call '
            f'{throughput.fmt(r["first_call_s"], 1)} s), peak RSS '
            f'{throughput.fmt(r["peak_rss_mb"], 0)} MB')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--factors', default=','.join([*FACTORS, 'test']),
                   help=f'comma-separated, from: {", ".join(FACTORS)}, test (meta-test time)')
    p.add_argument('--quick', action='store_true',
                   help=f'toy sizes around {QUICK_BASE}, one timed step (tests)')
    p.add_argument('--warmup', type=int, help=f'untimed steps after the first (default '
                                              f'{TIMING["warmup"]}; --quick 0)')
    p.add_argument('--windows', type=int, help=f'timed windows, median reported (default '
                                               f'{TIMING["windows"]}; --quick 1)')
    p.add_argument('--steps_per_window', type=int,
                   help=f'steps per timed window (default {TIMING["steps_per_window"]}; '
                        '--quick 1)')
    p.add_argument('--timeout', type=float, default=3600., help='seconds per measurement')
    p.add_argument('--markdown', help='also write the tables to this file')
    p.add_argument('--json', help='also write the results to this file')
    p.add_argument('--worker', help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        throughput.prepare_tensorflow()
        spec = json.loads(args.worker)
        c = dict(spec['config'], image=tuple(spec['config']['image']))
        print('RESULT ' + json.dumps(worker(c, spec['efficient'], spec['episodes'],
                                            spec['warmup'], spec['windows'],
                                            spec['steps_per_window'])))
        return 0

    base = QUICK_BASE if args.quick else BASE
    all_factors = QUICK_FACTORS if args.quick else FACTORS
    chosen = [f.strip() for f in args.factors.split(',') if f.strip()]
    unknown = [f for f in chosen if f not in (*FACTORS, 'test')]
    if unknown or not chosen:
        p.error(f'--factors: unknown {", ".join(unknown) or "(none given)"}; known: '
                f'{", ".join(FACTORS)}, test')
    timing = dict(QUICK_TIMING if args.quick else TIMING)
    for k in timing:
        if getattr(args, k) is not None:
            timing[k] = getattr(args, k)
    if timing['windows'] < 1 or timing['steps_per_window'] < 1 or timing['warmup'] < 0:
        p.error('--windows and --steps_per_window must be >= 1, --warmup >= 0')
    factors = {f: v for f, v in all_factors.items() if f in chosen}
    episodes = (QUICK_TEST_EPISODES if args.quick else TEST_EPISODES) if 'test' in chosen else ()

    print(f'machine: {throughput.machine()}')
    print(f'one factor at a time around {base}: {describe(base, None, None, False)}; each '
          f'measurement in a fresh process: first step, {timing["warmup"]} warm-up step(s), '
          f'{timing["windows"]} timed window(s) of {timing["steps_per_window"]} step(s)',
          flush=True)
    start, done, rows = time.perf_counter(), {}, []
    for factor, value, efficient, n in measurements(base, factors, episodes):
        k = key(base, factor, value, efficient, n)
        if k not in done:
            c = config(base, None if factor == 'test' else factor, value)
            done[k] = run_worker(c, efficient, n, timing, args.timeout)
            print(line(factor, value, efficient, done[k]), flush=True)
        rows.append((factor, value, efficient, done[k]))
    print(f'total {time.perf_counter() - start:.0f} s')

    env = throughput.environment([], None)
    parts = [env]
    train = [r for r in rows if r[0] != 'test']
    if train:
        parts.append(train_table(base, train))
    tests = [r for r in rows if r[0] == 'test']
    if tests:
        parts.append(test_table(base, tests))
    text = '\n\n'.join(parts)
    print('\n' + text)
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(text + '\n')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(environment=env, base=base, timing=timing,
                           results=[dict(factor=f, value=v, efficient=e, **r)
                                    for f, v, e, r in rows]), f, indent=1)
    return 1 if any('error' in r for *_, r in rows) else 0


if __name__ == '__main__':
    sys.exit(main())
