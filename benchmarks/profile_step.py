"""Where a meta-train step's time goes: the first step split into tracing (Python, building
the graph) and the first call (graph optimisation, kernel set-up, first execution), the
Python functions that dominate tracing (cProfile), and the TensorFlow ops that dominate
a steady-state step (the TF profiler, aggregated by op type).

    python -m benchmarks.profile_step --config omni20_1shot
    python -m benchmarks.profile_step --config omni20_1shot --task_loop unrolled --batch_norm plain
    python -m benchmarks.profile_step --config omni20_1shot --steps 3 --top 15 --logdir prof

    python -m benchmarks.profile_step --config mtl_omni5_1shot_28 --steps 1   # any method

The configurations are benchmarks/throughput.py's, each run with its own method or --model
(same model, same compiled step as main.py). The profile of the steady-state steps is also
left in --logdir for TensorBoard's profile plugin.
"""
import argparse
import collections
import cProfile
import glob
import os
import pstats
import sys
import tempfile
import time

from benchmarks import throughput


def trace_profile(fn, top):
    """Runs fn under cProfile; returns (result, seconds, the top entries by own time)."""
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    out = fn()
    prof.disable()
    seconds = time.perf_counter() - t
    rows = sorted(((own, cumulative, calls, f'{short(path)}:{line}({func})')
                   for (path, line, func), (_, calls, own, cumulative, _)
                   in pstats.Stats(prof).stats.items()), reverse=True)
    return out, seconds, rows[:top]


def short(path):
    for marker in ('site-packages/', '/work/', 'lib/python3'):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def op_profile(logdir):
    """{op type: (total ms, count)} of the TensorFlow op events in the profile under logdir:
    the events named 'op name:OpType' on the host's executor threads (tf_Compute lines),
    each lasting as long as its kernel ran (intra-op helper threads included)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    files = sorted(glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True))
    if not files:
        raise RuntimeError(f'no *.xplane.pb under {logdir}: the TF profiler wrote nothing')
    space = xplane_pb2.XSpace()
    with open(files[-1], 'rb') as f:
        space.ParseFromString(f.read())
    total = collections.defaultdict(lambda: [0., 0])
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith('tf_Compute'):
                continue
            for ev in line.events:
                name = plane.event_metadata[ev.metadata_id].name
                kind = name.rsplit(':', 1)[-1]
                if ':' not in name or not kind.isidentifier() or '::' in name:
                    continue
                total[kind][0] += ev.duration_ps / 1e9
                total[kind][1] += 1
    return {k: tuple(v) for k, v in total.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--config', default='omni20_1shot', choices=list(throughput.ALL_CONFIGS))
    p.add_argument('--model', choices=throughput.MODELS,
                   help="default: the configuration's own method")
    p.add_argument('--task_loop', default='while', choices=['while', 'unrolled'])
    p.add_argument('--batch_norm', default='fused', choices=['fused', 'plain'],
                   help='main.py --[no]fused_batch_norm')
    p.add_argument('--steps', type=int, default=3, help='steady-state steps profiled')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--top', type=int, default=12, help='entries of each table')
    p.add_argument('--logdir', help='where the TF profile goes (default: a temporary folder)')
    args = p.parse_args(argv)

    model_name = args.model or throughput.default_model(throughput.ALL_CONFIGS[args.config])
    error = throughput.row_error(args.config, model_name)
    if error:
        p.error(error)
    throughput.prepare_tensorflow()  # TF_ENABLE_ONEDNN_OPTS before TensorFlow, as a run does
    from model import nets
    nets.FUSED_BATCH_NORM = args.batch_norm == 'fused'
    model_name, train_step, _, batches, _ = throughput.build_steps(
        args.config, model_name, task_loop=args.task_loop)
    import tensorflow as tf
    spec = train_step.input_signature
    concrete, trace_s, rows = trace_profile(lambda: train_step.get_concrete_function(*spec),
                                              args.top)
    n_ops = len(concrete.graph.get_operations())
    t = time.perf_counter()
    train_step(*batches[0])[0].numpy()
    first_call_s = time.perf_counter() - t
    print(f'{args.config} {model_name} task_loop={args.task_loop} '
          f'batch_norm={args.batch_norm}: first step {trace_s + first_call_s:.1f} s = '
          f'tracing {trace_s:.1f} s (under cProfile, {n_ops} ops at the top level of the '
          f'graph) + first call {first_call_s:.1f} s (graph optimisation, kernel set-up, '
          'first execution)')
    print(f'\ntracing, top {args.top} functions by own time (s): own | cumulative | calls | '
          'function')
    for own, cumulative, calls, where in rows:
        print(f'  {own:6.2f} | {cumulative:7.2f} | {calls:7d} | {where}')

    for i in range(args.warmup):
        train_step(*batches[(i + 1) % len(batches)])[0].numpy()
    logdir = args.logdir or tempfile.mkdtemp(prefix='profile_step_')
    t = time.perf_counter()
    tf.profiler.experimental.start(logdir)
    for i in range(args.steps):
        train_step(*batches[i % len(batches)])[0].numpy()
    tf.profiler.experimental.stop()
    wall = time.perf_counter() - t
    ops = op_profile(logdir)
    busy = sum(ms for ms, _ in ops.values())
    print(f'\n{args.steps} steady-state steps, {wall / args.steps:.2f} s a step under the '
          f'profiler; op time {busy / args.steps / 1000:.2f} s a step (summed over threads; '
          f'profile in {logdir})')
    print(f'top {args.top} op types: ms a step | share | ops a step | type')
    for kind, (ms, count) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f'  {ms / args.steps:9.2f} | {100 * ms / busy:5.1f}% | {count // args.steps:6d} '
              f'| {kind}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
