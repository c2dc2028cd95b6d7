"""Single device against tf.distribute.MirroredStrategy over 2 logical CPU devices, for the
meta-train step of model/steps.py (`--distribute mirrored --n_cpu_devices 2` of main.py):
how far apart their meta-gradients are, and what the strategy costs in speed.

    python -m benchmarks.distribute                        # omni20_1shot (metabatch 4)
    python -m benchmarks.distribute --setting mimg5_1shot --json out.json

In one process (the CPU is split into 2 logical devices before TensorFlow initialises), each
side builds the same model (throughput.py's configuration table) under its own scope from the
same tf.random seed, with model/optim.py's SGD at learning rate 1 and no momentum, no clipping,
in float32 as trained. The first step of each, on the same metabatch, gives its meta-gradient
(captured exactly as the optimiser receives it; the update equals minus it, which is checked
too); the same step again from the restored weights shows how much each side varies by itself
from run to run. Then both steps run with the learning rate set to 0 (the same compiled step,
the weights kept): warm-up, then timed windows alternating between the two (median steps/s
reported). The single-device side goes first (--mirrored_first swaps them), so its first step
also carries the process's one-time set-up.

The 2 logical devices share the same physical cores (2 on the development machines), so no
speed-up is expected: the point is that the distributed meta-gradient matches and what the
replication (two half-metabatches, all-reduce of the meta-gradient) costs. See
benchmarks/README.md.
"""
import argparse
import json
import os
import statistics
import sys
import time

# As main.py, before TensorFlow is imported (model/__init__.py explains the oneDNN switch).
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from benchmarks.inner_steps import (episode_shapes, model_config, peak_rss_mib,
                                    synthetic_batches, timed_window)
from benchmarks.throughput import CONFIGS, fmt, machine

N_DEVICES = 2
NOTE = ('The logical devices share the same physical cores, so no speed-up is expected: '
        'this measures correctness and the overhead of the strategy.')


def readout_sgd(optim, tf):
    """model/optim.py's SGD that also keeps the gradients of its last apply."""
    class ReadoutSGD(optim.SGD):
        def __init__(self, variables):
            super().__init__(variables, 1.0, momentum=0.)
            with self.name_scope:
                self.last = [tf.Variable(tf.zeros_like(v), trainable=False, name='last_grad')
                             for v in self.variables_to_train]

        def apply(self, grads):
            for slot, g in zip(self.last, grads):
                if g is not None:
                    slot.assign(tf.cast(g, slot.dtype))
            super().apply(grads)

    return ReadoutSGD


def build(setting, n_steps, efficient, strategy, tf):
    """(model, optimiser, train step) for one side, its variables created in its own scope
    from the same seed."""
    from model import build_model, optim, steps
    cfg, c = model_config(setting, n_steps, efficient)
    T, ns, nq = episode_shapes(c)
    with strategy.scope() if strategy else tf.name_scope('single'):
        tf.random.set_seed(0)
        model = build_model(cfg, c['way'], c['image'])
        opt = readout_sgd(optim, tf)(model.outer_variables)
    step = steps.make_train_step(model, opt, 0., steps.episode_spec(T, ns, nq, c['image']),
                                 strategy=strategy)
    return model, opt, step


def values(variables):
    import numpy as np
    return [np.array(v.numpy(), dtype=np.float32) for v in variables]


def measure(args):
    import numpy as np
    from model import runner
    runner.configure_cpu_devices(N_DEVICES)  # before anything initialises TensorFlow's devices
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices('CPU')]
    strategy = tf.distribute.MirroredStrategy(devices)
    cfg, c = model_config(args.setting, args.n_steps, args.efficient)
    batches = synthetic_batches(c)
    sides = {'single': None, 'mirrored': strategy}
    if args.mirrored_first:
        sides = {'mirrored': strategy, 'single': None}
    out = dict(setting=args.setting, n_steps=cfg.n_steps, efficient=bool(args.efficient),
               metabatch=c['metabatch'], devices=devices,
               replicas=strategy.num_replicas_in_sync, order=list(sides))
    built, first = {}, {}
    for name, strat in sides.items():
        model, opt, step = build(args.setting, cfg.n_steps, args.efficient, strat, tf)
        before = values(model.outer_variables)
        t = time.perf_counter()
        loss, acc, applied = step(*batches[0])
        loss = float(loss.numpy())
        first[name] = time.perf_counter() - t
        built[name] = dict(model=model, opt=opt, step=step, before=before,
                           after=values(model.outer_variables), grads=values(opt.last),
                           loss=loss, acc=acc.numpy().tolist(), applied=bool(applied.numpy()))
        opt.learning_rate.assign(0.)          # from here on the weights stay put
        # The same step again from the same weights: how much one side varies by itself
        # (multi-threaded kernels need not sum in the same order every time).
        for v, b in zip(model.outer_variables, before):
            v.assign(b)
        step(*batches[0])[0].numpy()
        built[name]['repeat_grads'] = values(opt.last)

    s, m = built['single'], built['mirrored']
    names = [v.name.split('/', 1)[-1] for v in s['model'].outer_variables]  # no 'single/'
    init_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(s['before'], m['before']))
    grad_diff = [float(np.max(np.abs(a - b))) for a, b in zip(s['grads'], m['grads'])]
    worst = int(np.argmax(grad_diff))
    scale = max(float(np.max(np.abs(g))) for g in s['grads'])
    # the brief's readout: minus the SGD update (lr 1) of each side
    upd_s = [b - a for b, a in zip(s['before'], s['after'])]
    upd_m = [b - a for b, a in zip(m['before'], m['after'])]
    update_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(upd_s, upd_m))
    update_vs_grad = max(float(np.max(np.abs(u - g))) for side in (s, m)
                         for u, g in zip([b - a for b, a in zip(side['before'], side['after'])],
                                         side['grads']))
    resolution = max(float(np.max(np.spacing(np.abs(b)))) for b in s['before'])
    repeat = {name: max(float(np.max(np.abs(a - b)))
                        for a, b in zip(built[name]['grads'], built[name]['repeat_grads']))
              for name in sides}
    out.update(
        n_parameters=int(sum(g.size for g in s['grads'])),
        initial_weights_max_abs_diff=init_diff,
        grad_max_abs_diff=max(grad_diff), grad_max_abs=scale,
        grad_max_rel_diff=max(grad_diff) / scale if scale else float('nan'),
        worst_variable=names[worst],
        worst_variable_max_abs_grad=float(np.max(np.abs(s['grads'][worst]))),
        update_max_abs_diff=update_diff, update_vs_grad_max_abs=update_vs_grad,
        update_readout_resolution=resolution,
        repeat_grad_max_abs_diff=repeat,
        loss=dict(single=s['loss'], mirrored=m['loss']),
        loss_abs_diff=abs(s['loss'] - m['loss']),
        acc_equal=s['acc'] == m['acc'], applied=dict(single=s['applied'], mirrored=m['applied']))

    for name in sides:
        step = built[name]['step']
        for i in range(args.warmup):
            step(*batches[(i + 1) % len(batches)])[0].numpy()
    rates = {name: [] for name in sides}
    for _ in range(args.windows):              # alternated, so load drift hits both alike
        for name in sides:
            rates[name].append(timed_window(built[name]['step'], batches, args.steps_per_window))
    for name in sides:
        out[name] = dict(steps_per_s=statistics.median(rates[name]), window_rates=rates[name],
                         first_step_s=first[name])
    out['speed_mirrored_over_single'] = (out['mirrored']['steps_per_s'] /
                                         out['single']['steps_per_s'])
    out['peak_rss_mib'] = peak_rss_mib()
    return out


def report(r):
    sci = (lambda x: f'{x:.3g}')
    lines = [
        f'{r["setting"]}: metabatch {r["metabatch"]} ({r["metabatch"] // r["replicas"]} tasks '
        f'per replica), {r["n_steps"]} inner steps{", efficient" if r["efficient"] else ""}, '
        f'{r["n_parameters"]} meta-learned parameters, float32; '
        f'{r["replicas"]} replicas on {", ".join(r["devices"])}; '
        f'{" first, then ".join(r["order"])}',
        f'initial weights identical: {r["initial_weights_max_abs_diff"] == 0.} '
        f'(max abs difference {sci(r["initial_weights_max_abs_diff"])})',
        f'meta-gradient: max |mirrored - single| = {sci(r["grad_max_abs_diff"])} '
        f'(largest |gradient| {sci(r["grad_max_abs"])}, relative {sci(r["grad_max_rel_diff"])}; '
        f'worst variable {r["worst_variable"]}, its largest |gradient| '
        f'{sci(r["worst_variable_max_abs_grad"])})',
        f'the same step repeated from the same weights: max |repeat - first| = '
        f'{sci(r["repeat_grad_max_abs_diff"]["single"])} single, '
        f'{sci(r["repeat_grad_max_abs_diff"]["mirrored"])} mirrored',
        f'SGD update (lr 1): max |mirrored - single| = {sci(r["update_max_abs_diff"])}, '
        f'max |-(update) - gradient| = {sci(r["update_vs_grad_max_abs"])} (float32 resolution '
        f'of the weights: {sci(r["update_readout_resolution"])})',
        f'query loss: single {r["loss"]["single"]:.6f}, mirrored {r["loss"]["mirrored"]:.6f} '
        f'(|diff| {sci(r["loss_abs_diff"])}); per-task accuracies equal: {r["acc_equal"]}; '
        f'update applied: {r["applied"]["single"]} / {r["applied"]["mirrored"]}',
    ]
    for name in ('single', 'mirrored'):
        x = r[name]
        lines.append(f'{name:8s} {fmt(x["steps_per_s"])} steps/s (windows '
                     f'{", ".join(fmt(v) for v in x["window_rates"])}), first step '
                     f'{fmt(x["first_step_s"], 1)} s')
    lines += [f'mirrored/single speed: {r["speed_mirrored_over_single"]:.2f}; peak RSS of the '
              f'process (both models) {fmt(r["peak_rss_mib"], 0)} MiB',
              NOTE, '',
              '| setting | n_steps | side | steps/s | first step (s) | speed vs single | '
              'max abs meta-gradient diff | largest abs meta-gradient |',
              '|' + ' --- |' * 8]
    for name in ('single', 'mirrored'):
        x = r[name]
        lines.append(
            f'| {r["setting"]} | {r["n_steps"]} | '
            f'{"single device" if name == "single" else "mirrored, 2 CPU devices"} | '
            f'{fmt(x["steps_per_s"])} | {fmt(x["first_step_s"], 1)} | '
            f'{x["steps_per_s"] / r["single"]["steps_per_s"]:.2f} | '
            f'{"-" if name == "single" else sci(r["grad_max_abs_diff"])} | '
            f'{sci(r["grad_max_abs"])} |')
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--setting', default='omni20_1shot',
                   help=f'from benchmarks/throughput.py: {", ".join(CONFIGS)}')
    p.add_argument('--n_steps', type=int, default=None,
                   help="inner steps (default: the setting's, 5)")
    p.add_argument('--efficient', action='store_true',
                   help='gradient checkpointing of the inner loop on both sides')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps of each after the first')
    p.add_argument('--windows', type=int, default=5,
                   help='timed windows of each, alternated (median reported)')
    p.add_argument('--steps_per_window', type=int, default=2, help='steps per timed window')
    p.add_argument('--mirrored_first', action='store_true',
                   help='build and run the mirrored side first (by default the single-device '
                        "side goes first and its first step carries the process's one-time "
                        'set-up)')
    p.add_argument('--json', help='also write the results to this file')
    args = p.parse_args(argv)
    if args.setting not in CONFIGS:
        p.error(f'unknown setting {args.setting}; known: {", ".join(CONFIGS)}')
    if CONFIGS[args.setting]['metabatch'] % N_DEVICES:
        p.error(f'metabatch {CONFIGS[args.setting]["metabatch"]} does not split across '
                f'{N_DEVICES} replicas')
    if args.n_steps is not None and args.n_steps < 1:
        p.error('--n_steps must be >= 1')
    if args.windows < 1 or args.steps_per_window < 1 or args.warmup < 0:
        p.error('--windows and --steps_per_window must be >= 1, --warmup >= 0')

    print(f'machine: {machine()}', flush=True)
    t = time.perf_counter()
    r = measure(args)
    r['total_s'] = time.perf_counter() - t
    print(report(r))
    print(f'total {r["total_s"]:.0f} s')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(machine=machine(), args=vars(args), note=NOTE, result=r), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
