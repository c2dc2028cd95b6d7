"""Throughput benchmark: meta-train steps/s, time to the first step, meta-test episodes/s and
peak resident memory, for this project and, where one exists, the PyTorch reference run in
the same invocation, with their ratio.

    python -m benchmarks.throughput                       # every standard configuration
    python -m benchmarks.throughput --configs omni20_1shot --model maml
    python -m benchmarks.throughput --model mtl           # the mtl_* configurations

Each measurement runs in a fresh process (so peak RSS is that configuration's alone), on
random inputs of the configuration's shapes, as the reference does. Ours runs the same
compiled step as `main.py` (model/steps.py). See benchmarks/README.md.
"""
import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_REFERENCE = os.path.join(os.path.dirname(REPO), 'shared', 'bench', 'torch_maml.py')
TORCH_EVAL = os.path.join(REPO, 'benchmarks', 'torch_eval.py')

# name -> settings; metadrop's Omniglot and miniImageNet settings (fidelity sheet section 7).
CONFIGS = {
    'omni20_1shot': dict(way=20, shot=1, query=15, metabatch=4, n_steps=5, inner_lr=0.1,
                         image=(28, 28, 1), n_channel=64, first_order=False),
    'omni5_1shot': dict(way=5, shot=1, query=15, metabatch=4, n_steps=5, inner_lr=0.1,
                        image=(28, 28, 1), n_channel=64, first_order=False),
    'omni20_1shot_fo': dict(way=20, shot=1, query=15, metabatch=4, n_steps=5, inner_lr=0.1,
                            image=(28, 28, 1), n_channel=64, first_order=True),
    'omni5_1shot_fo': dict(way=5, shot=1, query=15, metabatch=4, n_steps=5, inner_lr=0.1,
                           image=(28, 28, 1), n_channel=64, first_order=True),
    'mimg5_1shot': dict(way=5, shot=1, query=15, metabatch=4, n_steps=5, inner_lr=0.01,
                        image=(84, 84, 3), n_channel=32, first_order=False),
    # Bayesian TAML's code path (l2b): imbalanced tasks of 1..max_shot shots, support sets
    # zero-padded within the metabatch. --model maml / metasgd / taml = its switches off /
    # alpha only / all four. No PyTorch reference exists for these.
    'taml_omni5_imb': dict(way=5, max_shot=15, query=5, metabatch=4, n_steps=5, inner_lr=0.5,
                           image=(28, 28, 1), n_channel=32, first_order=False),
    'taml_cifar5': dict(way=5, max_shot=50, query=15, metabatch=4, n_steps=5, inner_lr=0.5,
                        image=(32, 32, 3), n_channel=32, first_order=False),
    # LEO (deepmind/leo config.py defaults and its runner's float32) on random embeddings of
    # the published shape (640-d WRN-28-10 features): metabatch 12, 15 queries at meta-train;
    # meta-test episodes have 600 - K queries per class, as the original evaluates.
    'leo_mini5_1shot': dict(way=5, shot=1, query=15, test_query=599, metabatch=12, dim=640,
                            num_latents=64, n_steps=5, finetuning_steps=5, float64=False),
    'leo_mini5_5shot': dict(way=5, shot=5, query=15, test_query=595, metabatch=12, dim=640,
                            num_latents=64, n_steps=5, finetuning_steps=5, float64=False),
    # The module's default precision (--use_64bits_dtype), for comparison.
    'leo_mini5_1shot_f64': dict(way=5, shot=1, query=15, test_query=599, metabatch=12, dim=640,
                                num_latents=64, n_steps=5, finetuning_steps=5, float64=True),
    # MTL (yaoyao-liu/meta-transfer-learning's runner, main.py MTL_DEFAULTS): 5-way,
    # metabatch 2, 15 queries per class and 20 second-order inner steps (FC only, base_lr
    # 1e-3) at meta-train; meta-test 100 inner steps on the flip-doubled support set with K
    # queries per class, --eval_chunk (10) episodes per call. Random (not pre-trained)
    # backbone weights: the speed does not depend on them.
    'mtl_mini5_1shot': dict(way=5, shot=1, query=15, test_query=1, metabatch=2, n_steps=20,
                            n_test_steps=100, base_lr=1e-3, arch='resnet12', image=(84, 84, 3),
                            img_size=84, test_chunk=10),
    'mtl_mini5_5shot': dict(way=5, shot=5, query=15, test_query=5, metabatch=2, n_steps=20,
                            n_test_steps=100, base_lr=1e-3, arch='resnet12', image=(84, 84, 3),
                            img_size=84, test_chunk=10),
    # Our Omniglot runs (runfiles/mtl_omni_small.sh): 28x28 grey images, replicated to three
    # channels, at --img_size 28 (28 -> 14 -> 7 -> 3 -> 1).
    'mtl_omni5_1shot_28': dict(way=5, shot=1, query=15, test_query=1, metabatch=2, n_steps=20,
                               n_test_steps=100, base_lr=1e-3, arch='resnet12',
                               image=(28, 28, 1), img_size=28, test_chunk=10),
}
# Test-only configurations: accepted by --configs, never run by default nor listed.
TEST_CONFIGS = {
    # MTL's whole code path at a toy size (tests/test_throughput.py): ResNet-12 at 16x16.
    'mtl_tiny': dict(way=3, shot=1, query=2, test_query=1, metabatch=2, n_steps=2,
                     n_test_steps=3, base_lr=1e-3, arch='resnet12', image=(16, 16, 1),
                     img_size=16, test_chunk=2),
    # The MAML family's code path at a toy size (benchmarks/profile_step.py's test).
    'maml_tiny': dict(way=3, shot=1, query=2, metabatch=2, n_steps=2, inner_lr=0.1,
                      image=(16, 16, 1), n_channel=8, first_order=False),
}
ALL_CONFIGS = {**CONFIGS, **TEST_CONFIGS}
# Per-model defaults of --windows / --window_steps / --test_batches (an 84x84 MTL step takes
# ~45 s on 2 cores) and the warm-up steps before the timed windows.
TIMING_DEFAULTS = {'mtl': dict(windows=3, window_steps=1, test_batches=2, warmup=1)}
DEFAULT_TIMING = dict(windows=5, window_steps=3, test_batches=5, warmup=2)


def is_leo(c):
    return 'dim' in c


def is_mtl(c):
    return 'arch' in c
TAML_SWITCHES = {'maml': (), 'metasgd': ('alpha',), 'taml': ('alpha', 'omega', 'gamma', 'z')}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.


# ---- our side (runs in a worker process) ------------------------------------------------
def worker(name, model_name, windows, window_steps, test_batches, mc_samples=1, warmup=2,
           task_loop='while', parallel_tasks=1):
    loop = dict(task_loop=task_loop, parallel_tasks=parallel_tasks)
    c = ALL_CONFIGS[name]
    if is_leo(c):
        return leo_worker(name, model_name, windows, window_steps, test_batches)
    if model_name == 'leo':
        raise SystemExit(f'{name} is not a LEO configuration; LEO runs leo_* configurations')
    if is_mtl(c):
        return mtl_worker(name, model_name, windows, window_steps, test_batches, warmup,
                          **loop)
    if model_name == 'mtl':
        raise SystemExit(f'{name} is not an MTL configuration; MTL runs mtl_* configurations')
    if 'max_shot' in c:
        return taml_worker(name, model_name, windows, window_steps, test_batches, mc_samples,
                           **loop)
    model_name, train_step, eval_step, batches = maml_family_steps(name, model_name,
                                                                   mc_samples, **loop)
    return dict(config=name, model=model_name, **time_steps(train_step, eval_step, batches,
                                                            windows, window_steps, test_batches))


def maml_family_steps(name, model_name, mc_samples=1, task_loop='while', parallel_tasks=1):
    """(model name, compiled train step, eval step, 4 random metabatches) of a MAML-family
    configuration, built as main.py builds them (model/steps.py, Adam, clipping at 3)."""
    import types
    import numpy as np
    __import__('main')  # sets TF_ENABLE_ONEDNN_OPTS before TensorFlow, as a run does
    import tensorflow as tf
    from model import build_model, optim, steps

    c = ALL_CONFIGS[name]
    if c['first_order']:
        if model_name not in ('maml', 'fomaml'):
            raise SystemExit(f'{name} is a first-order MAML configuration; run it with --model maml')
        model_name = 'fomaml'
    cfg = types.SimpleNamespace(model=model_name, backbone='conv4', n_channel=c['n_channel'],
                                inner_lr=c['inner_lr'], n_steps=c['n_steps'], n_test_steps=None,
                                alpha_init=None, inner_loss='mean', n_test_mc_samp=mc_samples,
                                maml=False)
    tf.random.set_seed(0)
    model = build_model(cfg, c['way'], c['image'])
    opt = optim.Adam(model.outer_variables, 1e-3)
    T, ns, nq = c['metabatch'], c['way'] * c['shot'], c['way'] * c['query']
    train_step = steps.make_train_step(model, opt, 3.0,
                                       steps.episode_spec(T, ns, nq, c['image']),
                                       task_loop=task_loop, parallel_tasks=parallel_tasks)
    eval_step = steps.make_eval_step(model, steps.episode_spec(None, None, None, c['image']))
    rng = np.random.default_rng(0)
    ys = np.tile(np.repeat(np.arange(c['way']), c['shot']), (T, 1)).astype(np.int32)
    yq = np.tile(np.repeat(np.arange(c['way']), c['query']), (T, 1)).astype(np.int32)
    batches = [(rng.standard_normal((T, ns, *c['image']), dtype=np.float32), ys,
                rng.standard_normal((T, nq, *c['image']), dtype=np.float32), yq)
               for _ in range(4)]
    return model_name, train_step, eval_step, batches


def time_steps(train_step, eval_step, batches, windows, window_steps, test_batches, test=None,
               warmup=2):
    """First step, median steps/s over windows after `warmup` steps, first eval and test
    episodes/s, on the given batches (meta-test on `test` when given)."""
    test = batches if test is None else test
    t = time.perf_counter()
    train_step(*batches[0])[0].numpy()
    first_step = time.perf_counter() - t
    for i in range(warmup):
        train_step(*batches[i % len(batches)])[0].numpy()
    rates = []
    for w in range(windows):
        t = time.perf_counter()
        for i in range(window_steps):
            out = train_step(*batches[i % len(batches)])
        out[0].numpy()
        rates.append(window_steps / (time.perf_counter() - t))
    t = time.perf_counter()
    eval_step(*test[0])[-1].numpy()
    first_eval = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(test_batches):
        eval_step(*test[i % len(test)])[-1].numpy()
    test_eps = test_batches * len(test[0][0]) / (time.perf_counter() - t)
    return dict(steps_per_s=statistics.median(rates), window_rates=rates,
                first_step_s=first_step, first_eval_s=first_eval, test_episodes_per_s=test_eps,
                peak_rss_mb=peak_rss_mb())


def taml_worker(name, model_name, windows, window_steps, test_batches, mc_samples,
                task_loop='while', parallel_tasks=1):
    """A TAML configuration: the runner's compiled steps (support length free) on imbalanced
    padded metabatches of random images drawn by the ImbalancedSampler."""
    import types
    import numpy as np
    __import__('main')  # TF_ENABLE_ONEDNN_OPTS before TensorFlow, as a run does
    import tensorflow as tf
    from data.episodes import ClassSplit, ImbalancedSampler
    from model import build_model, optim, steps

    if model_name not in TAML_SWITCHES:
        raise SystemExit(f'{name} runs the TAML code path: use --model '
                         f'{" / ".join(TAML_SWITCHES)} (switches off / alpha / all four)')
    c = CONFIGS[name]
    on = TAML_SWITCHES[model_name]
    cfg = types.SimpleNamespace(model='taml', n_channel=c['n_channel'], inner_lr=c['inner_lr'],
                                n_steps=c['n_steps'], n_test_steps=10, alpha_init=None,
                                max_shot=c['max_shot'], n_mc_samples=mc_samples,
                                l2b_padding=False, normalization='none',
                                **{f'{k}_on': k in on for k in ('alpha', 'omega', 'gamma', 'z')})
    tf.random.set_seed(0)
    model = build_model(cfg, c['way'], c['image'])
    opt = optim.Adam(model.outer_variables, 1e-3)
    T, nq = c['metabatch'], c['way'] * c['query']
    train_step = steps.make_train_step(model, opt, 3.0,
                                       steps.episode_spec(T, None, nq, c['image']),
                                       task_loop=task_loop, parallel_tasks=parallel_tasks)

    @tf.function(input_signature=steps.episode_spec(None, None, None, c['image']))
    def eval_step(xs, ys, xq, yq):
        return tf.map_fn(lambda e: model.evaluate(*e), (xs, ys, xq, yq),
                         fn_output_signature=(tf.float32,) * 3)

    rng = np.random.default_rng(0)
    split = ClassSplit(rng.integers(0, 256, (20, c['max_shot'] + c['query'], *c['image']),
                                    dtype=np.uint8))
    sampler = ImbalancedSampler(split, c['way'], c['max_shot'], c['query'])
    batches = [sampler.sample(rng, T) for _ in range(4)]
    label = model_name if model_name == 'taml' else f'taml:{model_name}'
    return dict(config=name, model=label, **time_steps(train_step, eval_step, batches, windows,
                                                       window_steps, test_batches))


def leo_worker(name, model_name, windows, window_steps, test_batches):
    """A LEO configuration: the runner's compiled train step (LEO's outer update: clipping,
    NaN guard, TF1 Adam) and its evaluation step, on random embeddings of the real shape."""
    import numpy as np
    __import__('main')  # TF_ENABLE_ONEDNN_OPTS before TensorFlow, as a run does
    import tensorflow as tf
    from model import leo, optim, steps

    if model_name != 'leo':
        raise SystemExit(f'{name} is a LEO configuration: run it with --model leo')
    c = CONFIGS[name]
    tf.random.set_seed(0)
    model = leo.LEO(c['way'], c['shot'], c['dim'], num_latents=c['num_latents'],
                    inner_unroll_length=c['n_steps'],
                    finetuning_unroll_length=c['finetuning_steps'],
                    use_64bits_dtype=c['float64'])
    opt = optim.Adam(model.outer_variables, 1e-4)
    T, ns, nq = c['metabatch'], c['way'] * c['shot'], c['way'] * c['query']
    train_step = steps.make_train_step(
        model, opt, 0., steps.episode_spec(T, ns, nq, (c['dim'],)),
        update=leo.make_outer_update(model, opt))

    @tf.function(input_signature=steps.episode_spec(None, ns, None, (c['dim'],)))
    def eval_step(xs, ys, xq, yq):
        loss, acc, _ = model.episode_losses(xs, ys, xq, yq, training=False)
        return loss, acc

    rng = np.random.default_rng(0)

    def batch(query, tasks):
        def unit(n):
            x = rng.standard_normal((tasks, n, c['dim'])).astype(np.float32)
            return x / np.linalg.norm(x, axis=-1, keepdims=True)
        ys = np.tile(np.repeat(np.arange(c['way']), c['shot']), (tasks, 1)).astype(np.int32)
        yq = np.tile(np.repeat(np.arange(c['way']), query), (tasks, 1)).astype(np.int32)
        return unit(ns), ys, unit(c['way'] * query), yq

    train = [batch(c['query'], T) for _ in range(4)]
    # Evaluation as the runner computes it: --eval_chunk (20) episodes per call.
    test = [batch(c['test_query'], 20) for _ in range(2)]
    return dict(config=name, model='leo', **time_steps(train_step, eval_step, train, windows,
                                                       window_steps, test_batches, test=test))


def mtl_worker(name, model_name, windows, window_steps, test_batches, warmup,
               task_loop='while', parallel_tasks=1):
    """An MTL configuration: the runner's compiled meta-train step (T tasks of n_steps
    second-order FC steps, Adam on the scales, shifts and FC, NaN guard) and its meta-test
    step (n_test_steps in a tf.while_loop on the flip-doubled support set), on random
    images of the configuration's shape."""
    import numpy as np
    __import__('main')  # TF_ENABLE_ONEDNN_OPTS before TensorFlow, as a run does
    import tensorflow as tf
    from model import mtl, optim, steps

    if model_name != 'mtl':
        raise SystemExit(f'{name} is an MTL configuration: run it with --model mtl')
    c = ALL_CONFIGS[name]
    tf.random.set_seed(0)
    model = mtl.MTL(c['way'], c['shot'], c['image'], arch=c['arch'], img_size=c['img_size'],
                    base_lr=c['base_lr'], n_steps=c['n_steps'], n_test_steps=c['n_test_steps'],
                    base_augmentation=True)
    opt = optim.Adam(model.outer_variables, 1e-3)
    T, ns = c['metabatch'], c['way'] * c['shot']
    train_step = mtl.make_meta_train_step(
        model, opt, steps.episode_spec(T, ns, c['way'] * c['query'], c['image']), task_loop,
        parallel_tasks)
    eval_step = mtl.make_eval_step(model, steps.episode_spec(None, None, None, c['image']),
                                   c['n_test_steps'], True)
    rng = np.random.default_rng(0)

    def batch(query, tasks):
        ys = np.tile(np.repeat(np.arange(c['way']), c['shot']), (tasks, 1)).astype(np.int32)
        yq = np.tile(np.repeat(np.arange(c['way']), query), (tasks, 1)).astype(np.int32)
        return (rng.standard_normal((tasks, ns, *c['image']), dtype=np.float32), ys,
                rng.standard_normal((tasks, c['way'] * query, *c['image']), dtype=np.float32),
                yq)

    train = [batch(c['query'], T) for _ in range(4)]
    # Meta-test as the runner computes it: --eval_chunk episodes per call, K queries a class.
    test = [batch(c['test_query'], c['test_chunk']) for _ in range(2)]
    return dict(config=name, model='mtl', **time_steps(train_step, eval_step, train, windows,
                                                       window_steps, test_batches, test=test,
                                                       warmup=warmup))


# ---- the reference (PyTorch, in subprocesses) ---------------------------------------------
def run_python(args, timeout=1800):
    """Runs a Python script with args; returns (stdout, peak RSS MB of that process)."""
    code = ('import runpy, sys, resource; sys.argv = sys.argv[1:]; '
            'runpy.run_path(sys.argv[0], run_name="__main__"); '
            'print("maxrss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)')
    out = subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f'{args[0]} failed: {out.stderr[-1500:]}')
    rss = [float(l.split()[1]) / 1024. for l in out.stdout.splitlines()
           if l.startswith('maxrss_kb')]
    return out.stdout, max(rss) if rss else float('nan')


def value_after(stdout, prefix):
    for line in stdout.splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    raise RuntimeError(f'no line starting with {prefix!r} in:\n{stdout}')


def reference(name, ref_path, iters, test_episodes, threads):
    c = CONFIGS[name]
    h, w, ch = c['image']
    common = ['--way', str(c['way']), '--shot', str(c['shot']), '--query', str(c['query']),
              '--steps', str(c['n_steps']), '--inner_lr', str(c['inner_lr']), '--xdim', str(h),
              '--ch', str(ch), '--nch', str(c['n_channel']), '--threads', str(threads)]
    train_args = [ref_path, *common, '--metabatch', str(c['metabatch']), '--iters', str(iters)]
    if c['first_order']:
        train_args.append('--first_order')
    out, rss = run_python(train_args)
    steps_per_s = value_after(out, 'torch steps/s')
    out, eval_rss = run_python([TORCH_EVAL, *common, '--episodes', str(test_episodes)])
    return dict(steps_per_s=steps_per_s, test_episodes_per_s=value_after(out, 'torch test episodes/s'),
                peak_rss_mb=rss, eval_peak_rss_mb=eval_rss)


def run_worker(name, args):
    cmd = [sys.executable, '-m', 'benchmarks.throughput', '--worker', name, '--model', args.model,
           '--mc_samples', str(args.mc_samples),
           '--windows', str(args.windows), '--window_steps', str(args.window_steps),
           '--test_batches', str(args.test_batches), '--warmup', str(args.warmup),
           '--task_loop', args.task_loop, '--batch_norm', args.batch_norm,
           '--parallel_tasks', str(args.parallel_tasks)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f'worker {name} failed: {out.stderr[-3000:]}')
    return json.loads(value_line(out.stdout))


def value_line(stdout):
    for line in stdout.splitlines():
        if line.startswith('RESULT '):
            return line[len('RESULT '):]
    raise RuntimeError(f'no RESULT line in worker output:\n{stdout[-2000:]}')


def machine():
    cpu = 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
    except (OSError, StopIteration):
        pass
    import platform
    return f'{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}'


def fmt(x, digits=3):
    return '-' if x is None else f'{x:.{digits}f}'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--configs', default=','.join(CONFIGS),
                   help=f'comma-separated, from: {", ".join(CONFIGS)}')
    p.add_argument('--model', default='maml',
                   choices=['maml', 'fomaml', 'metasgd', 'metadrop', 'taml', 'leo', 'mtl'],
                   help='our method (the *_fo configurations turn maml into fomaml; the taml_* '
                        'configurations run l2b\'s code path: maml / metasgd / taml = its '
                        'switches off / alpha / all four; the leo_* configurations run with leo '
                        'and the mtl_* ones with mtl); the PyTorch reference is MAML, so it '
                        'runs only for the MAML family on the non-TAML configurations')
    p.add_argument('--mc_samples', type=int, default=1,
                   help='--model metadrop: MC samples of the inner loss at meta-test (the '
                        'runfiles use 30); --model taml: sampled test passes (l2b: 10)')
    p.add_argument('--windows', type=int,
                   help='timed windows (median reported); default 5 (--model mtl: 3)')
    p.add_argument('--window_steps', type=int,
                   help='steps per timed window; default 3 (--model mtl: 1)')
    p.add_argument('--test_batches', type=int,
                   help='meta-test metabatches (LEO, MTL: evaluation calls) timed; default 5 '
                        '(--model mtl: 2)')
    p.add_argument('--warmup', type=int,
                   help='untimed steps after the first one; default 2 (--model mtl: 1)')
    p.add_argument('--task_loop', default='while', choices=['while', 'unrolled'],
                   help="how our meta-train step runs the metabatch's tasks (main.py "
                        "--task_loop): while = one traced task in a tf.while_loop (the "
                        "default), unrolled = every task in the graph (the earlier path)")
    p.add_argument('--parallel_tasks', type=int, default=1,
                   help='main.py --parallel_tasks: tasks of the while loop in flight')
    p.add_argument('--batch_norm', default='fused', choices=['fused', 'plain'],
                   help='main.py --[no]fused_batch_norm: the fused kernel (the default) or the '
                        'plain arithmetic')
    p.add_argument('--reference', default=DEFAULT_REFERENCE, help='path of torch_maml.py')
    p.add_argument('--ref_iters', type=int, default=10, help='timed steps of the reference')
    p.add_argument('--ref_test_episodes', type=int, default=20)
    p.add_argument('--threads', type=int, default=os.cpu_count(),
                   help='PyTorch threads of the reference (default: all cores, as TensorFlow)')
    p.add_argument('--no_reference', action='store_true')
    p.add_argument('--json', help='also write the results to this file')
    p.add_argument('--worker', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for k, v in TIMING_DEFAULTS.get(args.model, DEFAULT_TIMING).items():
        if getattr(args, k) is None:
            setattr(args, k, v)

    if args.worker:
        __import__('main')  # TF_ENABLE_ONEDNN_OPTS before TensorFlow, as a run does
        from model import nets
        nets.FUSED_BATCH_NORM = args.batch_norm == 'fused'
        print('RESULT ' + json.dumps(worker(args.worker, args.model, args.windows,
                                            args.window_steps, args.test_batches,
                                            args.mc_samples, args.warmup,
                                            args.task_loop, args.parallel_tasks)))
        return 0

    names = [n.strip() for n in args.configs.split(',') if n.strip()]
    if args.model == 'taml' and args.configs == p.get_default('configs'):
        names = [n for n in CONFIGS if 'max_shot' in CONFIGS[n]]
    if args.model == 'leo' and args.configs == p.get_default('configs'):
        names = [n for n in CONFIGS if is_leo(CONFIGS[n])]
    elif args.model == 'mtl' and args.configs == p.get_default('configs'):
        names = [n for n in CONFIGS if is_mtl(CONFIGS[n])]
    elif args.configs == p.get_default('configs'):
        names = [n for n in names if not is_leo(CONFIGS[n]) and not is_mtl(CONFIGS[n])]
    unknown = [n for n in names if n not in ALL_CONFIGS]
    if unknown:
        p.error(f'unknown configuration(s) {", ".join(unknown)}; known: {", ".join(CONFIGS)}')
    have_ref = not args.no_reference
    if have_ref and args.model == 'mtl':
        print('reference skipped: the PyTorch reference is MAML with a Conv4 network; there is '
              'none for MTL (ResNet-12 with scaling and shifting; the original is TF1 code)')
        have_ref = False
    if have_ref and importlib.util.find_spec('torch') is None:
        print('reference skipped: PyTorch is not installed (pip install torch==2.13.0)')
        have_ref = False
    if have_ref and args.model == 'metadrop':
        print('reference skipped: the PyTorch reference is MAML; there is none for Meta-Dropout '
              '(compare with a --model maml run of the same configuration)')
        have_ref = False
    if have_ref and args.model == 'leo':
        print('reference skipped: the PyTorch reference is MAML on images; there is none for '
              'LEO (deepmind/leo is TF1 code that no longer installs)')
        have_ref = False
    if have_ref and not os.path.exists(args.reference):
        print(f'reference skipped: {args.reference} not found (pass --reference PATH)')
        have_ref = False

    print(f'machine: {machine()}')
    results = []
    for name in names:
        ours = run_worker(name, args)
        ours['task_loop'] = None if is_leo(ALL_CONFIGS[name]) else args.task_loop
        ours['batch_norm'] = args.batch_norm
        if ours['task_loop'] == 'unrolled':
            ours['model'] += ' (unrolled)'
        if args.batch_norm == 'plain':
            ours['model'] += ' (plain BN)'
        if args.parallel_tasks != 1:
            ours['model'] += f' ({args.parallel_tasks} tasks in flight)'
        ref = reference(name, args.reference, args.ref_iters, args.ref_test_episodes,
                        args.threads) if have_ref and 'max_shot' not in ALL_CONFIGS[name] else None
        results.append(dict(ours=ours, reference=ref))
        line = (f'{name:18s} {ours["model"]:7s} train {fmt(ours["steps_per_s"])} steps/s, '
                f'first step {fmt(ours["first_step_s"], 1)} s, test '
                f'{fmt(ours["test_episodes_per_s"], 2)} episodes/s, peak RSS '
                f'{fmt(ours["peak_rss_mb"], 0)} MB')
        if ref:
            line += (f' | torch train {fmt(ref["steps_per_s"])} steps/s (x{ours["steps_per_s"] / ref["steps_per_s"]:.2f}), '
                     f'test {fmt(ref["test_episodes_per_s"], 2)} episodes/s '
                     f'(x{ours["test_episodes_per_s"] / ref["test_episodes_per_s"]:.2f}), '
                     f'peak RSS {fmt(ref["peak_rss_mb"], 0)} MB')
        print(line, flush=True)

    print()
    print('| config | model | steps/s | torch steps/s | ratio | first step (s) | test episodes/s '
          '| torch test episodes/s | ratio | peak RSS (MB) | torch peak RSS (MB) |')
    print('|' + ' --- |' * 11)
    for r in results:
        o, t = r['ours'], r['reference'] or {}
        ratio = (lambda a, b: f'{a / b:.2f}' if b else '-')
        print(f'| {o["config"]} | {o["model"]} | {fmt(o["steps_per_s"])} | {fmt(t.get("steps_per_s"))} | '
              f'{ratio(o["steps_per_s"], t.get("steps_per_s"))} | {fmt(o["first_step_s"], 1)} | '
              f'{fmt(o["test_episodes_per_s"], 2)} | {fmt(t.get("test_episodes_per_s"), 2)} | '
              f'{ratio(o["test_episodes_per_s"], t.get("test_episodes_per_s"))} | '
              f'{fmt(o["peak_rss_mb"], 0)} | {fmt(t.get("peak_rss_mb"), 0)} |')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(machine=machine(), results=results), f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
