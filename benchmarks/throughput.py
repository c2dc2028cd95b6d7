"""Throughput benchmark: meta-train steps/s, time to the first step, meta-test episodes/s and
peak resident memory, for this project and the PyTorch reference of each method run in the
same invocation, with their ratio.

    python -m benchmarks.throughput                       # the standard table (every method)
    python -m benchmarks.throughput --configs omni20_1shot,omni20_1shot:metadrop
    python -m benchmarks.throughput --model mtl           # the mtl_* configurations
    python -m benchmarks.throughput --kernels --configs omni5_1shot   # oneDNN primitives

Each measurement runs in a fresh process (so peak RSS is that configuration's alone), on
random inputs of the configuration's shapes, as the references do. Ours runs the same
compiled step as `main.py` (model/steps.py). See benchmarks/README.md.
"""
import argparse
import importlib.metadata
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_BENCH = os.path.join(os.path.dirname(REPO), 'shared', 'bench')
DEFAULT_REFERENCE = os.path.join(SHARED_BENCH, 'torch_maml.py')
TORCH_EVAL = os.path.join(REPO, 'benchmarks', 'torch_eval.py')
# Each method's PyTorch reference of the same meta-train step: a file name under
# --reference_dir (../shared/bench), or a path of its own. LEO's is the corrected copy in
# benchmarks/ (the shared one also computes the decoder-side KL at every decode and throws it
# away, work our compiled step never does; benchmarks/torch_leo.py's docstring).
REFERENCES = {'maml': 'torch_maml.py', 'fomaml': 'torch_maml.py',
              'metadrop': 'torch_metadrop.py', 'mtl': 'torch_mtl.py',
              'leo': os.path.join(REPO, 'benchmarks', 'torch_leo.py')}
# Why a method has no reference (printed once per run when one of its rows is measured).
NO_REFERENCE = {
    'taml': 'there is none for TAML (l2b is TF1 code; no PyTorch port of its step exists here)',
    'metasgd': 'there is none for Meta-SGD (torch_maml.py has no learned step sizes)',
}
# Timed steps of each reference (its own warm-up: torch_maml.py and torch_metadrop.py 3
# fixed steps, torch_leo.py / torch_mtl.py --warmup) when --ref_iters / --ref_warmup are unset.
REF_ITERS = {'maml': 10, 'fomaml': 10, 'metadrop': 5, 'leo': 20, 'mtl': 3}
REF_WARMUP = {'leo': 3, 'mtl': 1}

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


def family(c):
    """Which code path a configuration runs: conv (the MAML family's Conv4), taml, leo or mtl."""
    if is_leo(c):
        return 'leo'
    if is_mtl(c):
        return 'mtl'
    return 'taml' if 'max_shot' in c else 'conv'


# The configurations each --model can run (fomaml also runs the second-order ones first order).
MODEL_FAMILIES = {'maml': ('conv', 'taml'), 'fomaml': ('conv',), 'metasgd': ('conv', 'taml'),
                  'metadrop': ('conv',), 'taml': ('taml',), 'leo': ('leo',), 'mtl': ('mtl',)}
MODELS = tuple(MODEL_FAMILIES)
# The standard table (no --configs, no --model): the MAML rows, then one row of every other
# method with a PyTorch reference (issue 24).
DEFAULT_ROWS = (('omni20_1shot', 'maml'), ('omni5_1shot', 'maml'), ('omni20_1shot_fo', 'fomaml'),
                ('omni5_1shot_fo', 'fomaml'), ('mimg5_1shot', 'maml'),
                ('omni20_1shot', 'metadrop'), ('leo_mini5_1shot', 'leo'),
                ('leo_mini5_5shot', 'leo'), ('mtl_mini5_1shot', 'mtl'),
                ('mtl_omni5_1shot_28', 'mtl'))


def default_model(c):
    """The method a configuration runs when none is named."""
    f = family(c)
    if f == 'conv':
        return 'fomaml' if c['first_order'] else 'maml'
    return f


def row_error(name, model_name):
    """Why `model_name` cannot run configuration `name` (None if it can)."""
    c = ALL_CONFIGS[name]
    f = family(c)
    if f == 'leo' and model_name != 'leo':
        return f'{name} is a LEO configuration: run it with --model leo'
    if f != 'leo' and model_name == 'leo':
        return f'{name} is not a LEO configuration; LEO runs leo_* configurations'
    if f == 'mtl' and model_name != 'mtl':
        return f'{name} is an MTL configuration: run it with --model mtl'
    if f != 'mtl' and model_name == 'mtl':
        return f'{name} is not an MTL configuration; MTL runs mtl_* configurations'
    if f == 'taml' and model_name not in TAML_SWITCHES:
        return (f'{name} runs the TAML code path: use --model '
                f'{" / ".join(TAML_SWITCHES)} (switches off / alpha / all four)')
    if f == 'conv' and model_name == 'taml':
        return f'{name} is not a TAML configuration; --model taml runs taml_* configurations'
    if f == 'conv' and c['first_order'] and model_name not in ('maml', 'fomaml'):
        return f'{name} is a first-order MAML configuration; run it with --model maml'
    return None


TAML_SWITCHES = {'maml': (), 'metasgd': ('alpha',), 'taml': ('alpha', 'omega', 'gamma', 'z')}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.


# ---- our side (runs in a worker process) ------------------------------------------------
def worker(name, model_name, windows, window_steps, test_batches, mc_samples=1, warmup=2,
           task_loop='while', parallel_tasks=1):
    label, train_step, eval_step, train, test = build_steps(name, model_name, mc_samples,
                                                            task_loop, parallel_tasks)
    return dict(config=name, model=label, **time_steps(train_step, eval_step, train, windows,
                                                       window_steps, test_batches, test=test,
                                                       warmup=warmup))


def build_steps(name, model_name, mc_samples=1, task_loop='while', parallel_tasks=1):
    """(row label, compiled meta-train step, meta-test step, meta-train metabatches,
    meta-test batches or None for the same) of any row, as main.py's runners build them."""
    loop = dict(task_loop=task_loop, parallel_tasks=parallel_tasks)
    c = ALL_CONFIGS[name]
    error = row_error(name, model_name)
    if error:
        raise SystemExit(error)
    if is_leo(c):
        return leo_steps(name)
    if is_mtl(c):
        return mtl_steps(name, **loop)
    if 'max_shot' in c:
        return taml_steps(name, model_name, mc_samples, **loop)
    return (*maml_family_steps(name, model_name, mc_samples, **loop), None)


def prepare_tensorflow():
    """The environment of a run, before TensorFlow is imported: oneDNN on unless
    TF_ENABLE_ONEDNN_OPTS is exported (model/__init__.py), TensorFlow's info lines off."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    __import__('model')


def maml_family_steps(name, model_name, mc_samples=1, task_loop='while', parallel_tasks=1):
    """(model name, compiled train step, eval step, 4 random metabatches) of a MAML-family
    configuration, built as main.py builds them (model/steps.py, Adam, clipping at 3)."""
    return build_maml_family(ALL_CONFIGS[name], model_name, mc_samples, task_loop,
                             parallel_tasks)


def build_maml_family(c, model_name, mc_samples=1, task_loop='while', parallel_tasks=1,
                      efficient=False):
    """maml_family_steps of a configuration given as a dict (benchmarks/scaling.py varies
    one of its entries); efficient: main.py's --efficient (checkpointed inner loop)."""
    import types
    prepare_tensorflow()
    import tensorflow as tf
    from model import build_model, optim, steps

    if c['first_order']:
        if model_name not in ('maml', 'fomaml'):
            raise SystemExit('a first-order MAML configuration runs with --model maml')
        model_name = 'fomaml'
    cfg = types.SimpleNamespace(model=model_name, backbone='conv4', n_channel=c['n_channel'],
                                inner_lr=c['inner_lr'], n_steps=c['n_steps'], n_test_steps=None,
                                alpha_init=None, inner_loss='mean', n_test_mc_samp=mc_samples,
                                maml=False, efficient=bool(efficient))
    tf.random.set_seed(0)
    model = build_model(cfg, c['way'], c['image'])
    opt = optim.Adam(model.outer_variables, 1e-3)
    T, ns, nq = c['metabatch'], c['way'] * c['shot'], c['way'] * c['query']
    train_step = steps.make_train_step(model, opt, 3.0,
                                       steps.episode_spec(T, ns, nq, c['image']),
                                       task_loop=task_loop, parallel_tasks=parallel_tasks)
    eval_step = steps.make_eval_step(model, steps.episode_spec(None, None, None, c['image']))
    return model_name, train_step, eval_step, random_batches(c, c['query'], T)


def random_batches(c, query, tasks, n=4, seed=0, unit_norm=False):
    """n metabatches (xs, ys, xq, yq) of `tasks` random episodes of the configuration's
    shapes (c['image'], or c['dim']-d features), class after class, `query` queries per
    class; unit_norm: every feature vector scaled to norm 1 (LEO's embeddings)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    shape = c['image'] if 'image' in c else (c['dim'],)
    ns, nq = c['way'] * c['shot'], c['way'] * query
    ys = np.tile(np.repeat(np.arange(c['way']), c['shot']), (tasks, 1)).astype(np.int32)
    yq = np.tile(np.repeat(np.arange(c['way']), query), (tasks, 1)).astype(np.int32)

    def x(size):
        v = rng.standard_normal((tasks, size, *shape), dtype=np.float32)
        return v / np.linalg.norm(v, axis=-1, keepdims=True) if unit_norm else v
    return [(x(ns), ys, x(nq), yq) for _ in range(n)]


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


def taml_steps(name, model_name, mc_samples, task_loop='while', parallel_tasks=1):
    """A TAML configuration: the runner's compiled steps (support length free) on imbalanced
    padded metabatches of random images drawn by the ImbalancedSampler."""
    import types
    import numpy as np
    prepare_tensorflow()
    import tensorflow as tf
    from data.episodes import ClassSplit, ImbalancedSampler
    from model import build_model, optim, steps

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
    return label, train_step, eval_step, batches, None


def leo_steps(name):
    """A LEO configuration: the runner's compiled train step (LEO's outer update: clipping,
    NaN guard, TF1 Adam) and its evaluation step, on random embeddings of the real shape."""
    prepare_tensorflow()
    import tensorflow as tf
    from model import leo, optim, steps

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

    train = random_batches(c, c['query'], T, unit_norm=True)
    # Evaluation as the runner computes it: --eval_chunk (20) episodes per call.
    test = random_batches(c, c['test_query'], 20, n=2, seed=1, unit_norm=True)
    return 'leo', train_step, eval_step, train, test


def mtl_steps(name, task_loop='while', parallel_tasks=1):
    """An MTL configuration: the runner's compiled meta-train step (T tasks of n_steps
    second-order FC steps, Adam on the scales, shifts and FC, NaN guard) and its meta-test
    step (n_test_steps in a tf.while_loop on the flip-doubled support set), on random
    images of the configuration's shape."""
    prepare_tensorflow()
    import tensorflow as tf
    from model import mtl, optim, steps

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
    train = random_batches(c, c['query'], T)
    # Meta-test as the runner computes it: --eval_chunk episodes per call, K queries a class.
    test = random_batches(c, c['test_query'], c['test_chunk'], n=2, seed=1)
    return 'mtl', train_step, eval_step, train, test


# ---- the reference (PyTorch, in subprocesses) ---------------------------------------------
def run_python(args, timeout=1800, env=None):
    """Runs a Python script with args; returns (stdout, peak RSS MB of that process)."""
    code = ('import runpy, sys, resource; sys.argv = sys.argv[1:]; '
            'runpy.run_path(sys.argv[0], run_name="__main__"); '
            'print("maxrss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)')
    out = subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True,
                         timeout=timeout, env=env)
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


def reference_path(model_name, args):
    """The reference script of a method (--reference replaces the MAML family's)."""
    if model_name in ('maml', 'fomaml') and args.reference:
        return args.reference
    return os.path.join(args.reference_dir, REFERENCES[model_name])   # an absolute name wins


def reference_args(name, model_name, iters, warmup, threads):
    """(the reference's meta-train arguments, the arguments of benchmarks/torch_eval.py or
    None) for a row, from the flags each reference's docstring lists."""
    c = ALL_CONFIGS[name]
    f = family(c)
    s = lambda *kv: [str(x) for x in kv]   # noqa: E731
    if f == 'leo':
        train = s('--way', c['way'], '--shot', c['shot'], '--query', c['query'], '--metabatch',
                  c['metabatch'], '--dim', c['dim'], '--num_latents', c['num_latents'],
                  '--steps', c['n_steps'], '--finetuning_steps', c['finetuning_steps'])
        train += ['--float64'] if c['float64'] else []
        return train + s('--iters', iters, '--warmup', warmup, '--threads', threads), None
    h, w, ch = c['image']
    if f == 'mtl':
        if c['img_size'] != h:
            raise SystemExit(f'{name}: torch_mtl.py does not resize (img_size must be the side)')
        return s('--way', c['way'], '--shot', c['shot'], '--query', c['query'], '--metabatch',
                 c['metabatch'], '--steps', c['n_steps'], '--inner_lr', c['base_lr'], '--xdim',
                 h, '--ch', ch, '--iters', iters, '--warmup', warmup, '--threads', threads), None
    common = s('--way', c['way'], '--shot', c['shot'], '--query', c['query'], '--steps',
               c['n_steps'], '--inner_lr', c['inner_lr'], '--xdim', h, '--ch', ch, '--nch',
               c['n_channel'], '--threads', threads)
    train = common + s('--metabatch', c['metabatch'], '--iters', iters)
    if c['first_order'] or model_name == 'fomaml':
        train.append('--first_order')
    # torch_eval.py adapts and scores MAML's network: no evaluation reference for the others.
    return train, (common if model_name in ('maml', 'fomaml') else None)


def reference(name, model_name, args):
    """The reference's steps/s (and test episodes/s where torch_eval.py applies) and peak RSS;
    with several --threads counts each runs and the faster is kept (a reference is never
    measured slower than it can run: tiny ops can run faster on 1 thread than on 2)."""
    iters = args.ref_iters or REF_ITERS[model_name]
    warmup = REF_WARMUP.get(model_name, 0) if args.ref_warmup is None else args.ref_warmup
    script = reference_path(model_name, args)
    train_runs, test_runs = [], []
    for threads in args.threads:
        train, common = reference_args(name, model_name, iters, warmup, threads)
        out, rss = run_python([script, *train])
        train_runs.append((value_after(out, 'torch steps/s'), rss, threads))
        if common is not None:
            out, rss = run_python([TORCH_EVAL, *common, '--episodes',
                                   str(args.ref_test_episodes)])
            test_runs.append((value_after(out, 'torch test episodes/s'), rss, threads))
    rate, rss, threads = max(train_runs)
    test_rate, test_rss, test_threads = max(test_runs) if test_runs else (None, None, None)
    return dict(script=os.path.basename(script), steps_per_s=rate, peak_rss_mb=rss,
                threads=threads, test_episodes_per_s=test_rate, eval_peak_rss_mb=test_rss,
                test_threads=test_threads, threads_tried=list(args.threads))


def torch_available():
    return importlib.util.find_spec('torch') is not None


def reference_skip(model_name, args, have_torch):
    """Why a row of this method has no reference column (None: it has one)."""
    if args.no_reference:
        return 'skipped (--no_reference)'
    if not have_torch:
        return 'PyTorch is not installed (pip install torch==2.13.0)'
    if model_name not in REFERENCES:
        return NO_REFERENCE.get(model_name, f'there is none for {model_name}')
    path = reference_path(model_name, args)
    if not os.path.exists(path):
        return f'{path} not found (--reference_dir / --reference)'
    return None


# ---- worker processes ------------------------------------------------------------------------
def worker_command(name, args):
    return [sys.executable, '-m', 'benchmarks.throughput', '--worker', name, '--model',
            args.model, '--mc_samples', str(args.mc_samples), '--windows', str(args.windows),
            '--window_steps', str(args.window_steps), '--test_batches', str(args.test_batches),
            '--warmup', str(args.warmup), '--task_loop', args.task_loop, '--batch_norm',
            args.batch_norm, '--parallel_tasks', str(args.parallel_tasks)]


def run_worker(name, args):
    out = subprocess.run(worker_command(name, args), cwd=REPO, capture_output=True, text=True,
                         timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f'worker {name} failed: {out.stderr[-3000:]}')
    return json.loads(value_line(out.stdout))


def last_line(text):
    """The last non-blank line (a failed process's error)."""
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else text


def value_line(stdout):
    for line in stdout.splitlines():
        if line.startswith('RESULT '):
            return line[len('RESULT '):]
    raise RuntimeError(f'no RESULT line in worker output:\n{stdout[-2000:]}')


# ---- oneDNN primitives (--kernels) -----------------------------------------------------------
KERNEL_MARK = 'KERNELS STEADY STATE'


def kernel_worker(name, model_name, mc_samples, task_loop, parallel_tasks):
    """Runs a row's first step, prints KERNEL_MARK, then one more step: with ONEDNN_VERBOSE=1
    (set by the parent) the oneDNN primitives after the mark are one steady-state step's."""
    import ctypes
    c = ALL_CONFIGS[name]
    error = row_error(name, model_name)
    if error:
        raise SystemExit(error)
    if family(c) != 'conv':
        raise SystemExit('--kernels runs the MAML-family configurations (Conv4)')
    _, train_step, _, batches = maml_family_steps(name, model_name, mc_samples, task_loop,
                                                  parallel_tasks)
    train_step(*batches[0])[0].numpy()
    sys.stdout.flush()
    ctypes.CDLL(None).fflush(None)   # oneDNN prints through C stdio: order it with ours
    print(KERNEL_MARK, flush=True)
    train_step(*batches[1])[0].numpy()
    ctypes.CDLL(None).fflush(None)


def onednn_summary(text, steps=1):
    """{'info': [...], 'rows': [(kind, implementation, propagation, calls a step, ms a step)]}
    from ONEDNN_VERBOSE=1 output (v1 'onednn_verbose,v1,primitive,exec,cpu,<kind>,<impl>,
    <prop>,...,<ms>' and the older layout without 'v1,primitive'), per step over `steps`."""
    info, total = [], {}
    for line in text.splitlines():
        if not line.startswith('onednn_verbose,'):
            continue
        f = line.split(',')
        if 'info' in f[:3]:   # the version, and the CPU's runtime, threads and ISA
            what = ','.join(f[f.index('info') + 1:])
            if what.startswith(('oneDNN', 'cpu,')):
                info.append(what)
        if 'exec' not in f[:5]:
            continue
        i = f.index('exec')
        try:
            ms = float(f[-1])
        except ValueError:
            continue
        key = tuple(f[i + 2:i + 5])
        calls, t = total.get(key, (0, 0.))
        total[key] = (calls + 1, t + ms)
    rows = sorted(((*k, n / steps, ms / steps) for k, (n, ms) in total.items()),
                  key=lambda r: -r[4])
    return dict(info=info, rows=rows)


def kernels_markdown(side, summary, top=10):
    rows = summary['rows']
    busy = sum(r[4] for r in rows) or float('nan')
    lines = [f'{side}: {"; ".join(summary["info"]) or "no oneDNN output"}', '',
             '| primitive | implementation | propagation | calls a step | ms a step | share |',
             '|' + ' --- |' * 6]
    for kind, impl, prop, calls, ms in rows[:top]:
        lines.append(f'| {kind} | {impl} | {prop} | {calls:g} | {ms:.1f} | '
                     f'{100 * ms / busy:.0f}% |')
    rest = rows[top:]
    if rest:
        ms = sum(r[4] for r in rest)
        lines.append(f'| ({len(rest)} more) | | | {sum(r[3] for r in rest):g} | {ms:.1f} | '
                     f'{100 * ms / busy:.0f}% |')
    return '\n'.join(lines)


def kernels(name, model_name, args, have_reference):
    """Markdown: the oneDNN primitives of one steady-state step of ours and, if it runs, of
    the reference (averaged over its warm-up and one timed step)."""
    env = dict(os.environ, ONEDNN_VERBOSE='1')
    cmd = worker_command(name, args) + ['--kernels']
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600, env=env)
    if out.returncode != 0 or KERNEL_MARK not in out.stdout:
        raise RuntimeError(f'kernel worker {name} failed: {out.stderr[-3000:]}')
    head, steady = out.stdout.split(KERNEL_MARK, 1)
    ours = onednn_summary(steady)
    ours['info'] = onednn_summary(head)['info'] or ours['info']
    parts = [f'{name} {model_name}, oneDNN primitives of one steady-state step '
             '(ONEDNN_VERBOSE=1; the times include its logging; TensorFlow\'s own kernels, '
             'e.g. Mul, Sum, MaxPoolGradGrad, are not oneDNN primitives and do not appear):',
             '', kernels_markdown(f'ours (TF_ENABLE_ONEDNN_OPTS='
                                  f'{os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1")})', ours)]
    if have_reference:
        warmup = 0 if model_name in REF_WARMUP else 3   # torch_maml.py's 3 fixed warm-up steps
        train, _ = reference_args(name, model_name, 1, 0, max(args.threads))
        ref_out, _ = run_python([reference_path(model_name, args), *train], env=env)
        parts += ['', kernels_markdown(
            f'reference {os.path.basename(reference_path(model_name, args))} (per step over '
            f'{warmup + 1} steps)', onednn_summary(ref_out, warmup + 1))]
    return '\n'.join(parts)


# ---- report -------------------------------------------------------------------------------------
def machine():
    cpu = 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as f:   # lscpu's "Model name"
            cpu = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
    except (OSError, StopIteration):
        pass
    import platform
    return f'{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}'


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(results, threads):
    """One line: the machine, TensorFlow and its oneDNN switch as the workers ran, PyTorch."""
    ours = [r['ours'] for r in results if r.get('ours')]
    tf_version = next((o['tensorflow'] for o in ours if o.get('tensorflow')), None) or \
        package_version('tensorflow')
    opts = next((o['onednn_opts'] for o in ours if o.get('onednn_opts')), None) or \
        os.environ.get('TF_ENABLE_ONEDNN_OPTS', '1')
    line = (f'Machine: {machine()}; Python {sys.version.split()[0]}, TensorFlow {tf_version} '
            f'with TF_ENABLE_ONEDNN_OPTS={opts} (oneDNN {"on" if opts == "1" else "off"})')
    if any(r.get('reference') for r in results):
        counts = ' or '.join(map(str, threads))
        line += (f', PyTorch {package_version("torch")} with {counts} threads'
                 + (' (each reference at its faster count)' if len(threads) > 1 else ''))
    return line + '.'


def fmt(x, digits=3):
    return '-' if x is None else f'{x:.{digits}f}'


def ratio(a, b):
    return f'{a / b:.2f}' if a is not None and b else '-'


def which(ref, key):
    """' (N threads)' after a reference figure when several thread counts were tried."""
    if len(ref.get('threads_tried') or ()) < 2 or ref.get(key) is None:
        return ''
    return f' ({ref[key]} thread{"s" if ref[key] > 1 else ""})'


def markdown_table(results):
    lines = ['| config | model | steps/s | torch steps/s | ratio | first step (s) | '
             'test episodes/s | torch test episodes/s | ratio | peak RSS (MB) | '
             'torch peak RSS (MB) |', '|' + ' --- |' * 11]
    for r in results:
        o, t = r['ours'], r['reference'] or {}
        if 'error' in o:
            lines.append(f'| {o["config"]} | {o["model"]} | failed: {o["error"][:80]} |'
                         + ' |' * 8)
            continue
        if 'error' in t:
            t = dict(steps_per_s=None, test_episodes_per_s=None, peak_rss_mb=None)
        lines.append(
            f'| {o["config"]} | {o["model"]} | {fmt(o["steps_per_s"])} | '
            f'{fmt(t.get("steps_per_s"))}{which(t, "threads")} | '
            f'{ratio(o["steps_per_s"], t.get("steps_per_s"))} | '
            f'{fmt(o["first_step_s"], 1)} | {fmt(o["test_episodes_per_s"], 2)} | '
            f'{fmt(t.get("test_episodes_per_s"), 2)}{which(t, "test_threads")} | '
            f'{ratio(o["test_episodes_per_s"], t.get("test_episodes_per_s"))} | '
            f'{fmt(o["peak_rss_mb"], 0)} | {fmt(t.get("peak_rss_mb"), 0)} |')
    return '\n'.join(lines)


def row_line(name, ours, ref):
    if 'error' in ours:
        return f'{name:18s} {ours["model"]:8s} FAILED: {ours["error"]}'
    if ref and 'error' in ref:
        return f'{row_line(name, ours, None)} | {ref["script"]} FAILED: {ref["error"]}'
    line = (f'{name:18s} {ours["model"]:8s} train {fmt(ours["steps_per_s"])} steps/s, '
            f'first step {fmt(ours["first_step_s"], 1)} s, test '
            f'{fmt(ours["test_episodes_per_s"], 2)} episodes/s, peak RSS '
            f'{fmt(ours["peak_rss_mb"], 0)} MB')
    if ref:
        line += (f' | {ref["script"]} train {fmt(ref["steps_per_s"])} steps/s'
                 f'{which(ref, "threads")} (x{ratio(ours["steps_per_s"], ref["steps_per_s"])})')
        if ref.get('test_episodes_per_s'):
            line += (f', test {fmt(ref["test_episodes_per_s"], 2)} episodes/s '
                     f'(x{ratio(ours["test_episodes_per_s"], ref["test_episodes_per_s"])})')
        line += f', peak RSS {fmt(ref["peak_rss_mb"], 0)} MB'
    return line


def parse_rows(p, args):
    """[(configuration, model)] from --configs ('name' or 'name:model') and --model."""
    if args.configs is None:
        if args.model is None:
            return list(DEFAULT_ROWS)
        rows = [(n, args.model) for n, c in CONFIGS.items()
                if family(c) in MODEL_FAMILIES[args.model]]
        return [(n, m) for n, m in rows if row_error(n, m) is None]
    rows = []
    for entry in (e.strip() for e in args.configs.split(',')):
        if not entry:
            continue
        name, _, model_name = entry.partition(':')
        if name not in ALL_CONFIGS:
            p.error(f'unknown configuration {name!r}; known: {", ".join(CONFIGS)}')
        model_name = model_name or args.model or default_model(ALL_CONFIGS[name])
        if model_name not in MODEL_FAMILIES:
            p.error(f'unknown model {model_name!r} in {entry!r}; known: {", ".join(MODELS)}')
        error = row_error(name, model_name)
        if error:
            p.error(error)
        rows.append((name, model_name))
    if not rows:
        p.error('--configs names no configuration')
    return rows


def row_args(args, model_name):
    """The run's arguments for one row: its model, and the timing defaults of that model
    unless given on the command line."""
    a = argparse.Namespace(**vars(args))
    a.model = model_name
    for k, v in TIMING_DEFAULTS.get(model_name, DEFAULT_TIMING).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--configs',
                   help='comma-separated rows, each a configuration or configuration:model '
                        f'(e.g. omni20_1shot:metadrop), from: {", ".join(CONFIGS)}; default: '
                        'the standard table (' + ', '.join(f'{n}:{m}' for n, m in DEFAULT_ROWS)
                        + '), or every configuration of --model')
    p.add_argument('--model', choices=MODELS,
                   help='our method for the rows that do not name one (default: the '
                        "configuration's own: maml, fomaml for *_fo, taml, leo, mtl); the "
                        '*_fo configurations turn maml into fomaml; on the taml_* ones maml / '
                        "metasgd / taml = l2b's switches off / alpha / all four")
    p.add_argument('--mc_samples', type=int, default=1,
                   help='--model metadrop: MC samples of the inner loss at meta-test (the '
                        'runfiles use 30); --model taml: sampled test passes (l2b: 10)')
    p.add_argument('--windows', type=int,
                   help='timed windows (median reported); default 5 (mtl rows: 3)')
    p.add_argument('--window_steps', type=int,
                   help='steps per timed window; default 3 (mtl rows: 1)')
    p.add_argument('--test_batches', type=int,
                   help='meta-test metabatches (LEO, MTL: evaluation calls) timed; default 5 '
                        '(mtl rows: 2)')
    p.add_argument('--warmup', type=int,
                   help='untimed steps after the first one; default 2 (mtl rows: 1)')
    p.add_argument('--task_loop', default='while', choices=['while', 'unrolled'],
                   help="how our meta-train step runs the metabatch's tasks (main.py "
                        "--task_loop): while = one traced task in a tf.while_loop (the "
                        "default), unrolled = every task in the graph (the earlier path)")
    p.add_argument('--parallel_tasks', type=int, default=1,
                   help='main.py --parallel_tasks: tasks of the while loop in flight')
    p.add_argument('--batch_norm', default='fused', choices=['fused', 'plain'],
                   help='main.py --[no]fused_batch_norm: the fused kernel (the default) or the '
                        'plain arithmetic')
    p.add_argument('--reference_dir', default=SHARED_BENCH,
                   help="where the methods' PyTorch references are (torch_maml.py, "
                        'torch_metadrop.py, torch_mtl.py; LEO\'s is benchmarks/torch_leo.py)')
    p.add_argument('--reference', help='path of torch_maml.py (the MAML-family reference); '
                                       'default: in --reference_dir')
    p.add_argument('--ref_iters', type=int,
                   help='timed steps of the reference; default maml 10, metadrop 5, leo 20, '
                        'mtl 3')
    p.add_argument('--ref_warmup', type=int,
                   help='warm-up steps of torch_leo.py / torch_mtl.py (default 3 / 1; '
                        'torch_maml.py and torch_metadrop.py always take 3)')
    p.add_argument('--ref_test_episodes', type=int, default=20)
    p.add_argument('--threads', default=str(os.cpu_count()),
                   help='PyTorch threads of the references (default: all cores, as '
                        'TensorFlow); a comma-separated list (1,2) runs each reference at each '
                        'count and keeps the faster')
    p.add_argument('--no_reference', action='store_true')
    p.add_argument('--kernels', action='store_true',
                   help='instead of timing: the oneDNN primitives (ONEDNN_VERBOSE=1) of one '
                        'steady-state step of ours and of the reference (MAML-family rows)')
    p.add_argument('--json', help='also write the results to this file')
    p.add_argument('--markdown', help='also write the environment line and the table (or '
                                      'the --kernels tables) to this file')
    p.add_argument('--worker', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.threads = sorted({int(t) for t in args.threads.split(',') if t.strip()})
    except ValueError:
        p.error(f'--threads must be comma-separated integers, got {args.threads!r}')
    if not args.threads or min(args.threads) < 1:
        p.error('--threads needs thread counts >= 1')
    for k in ('windows', 'window_steps', 'test_batches', 'ref_iters',
              'parallel_tasks', 'mc_samples', 'ref_test_episodes'):
        if getattr(args, k) is not None and getattr(args, k) < 1:
            p.error(f'--{k} must be >= 1')
    for k in ('warmup', 'ref_warmup'):
        if getattr(args, k) is not None and getattr(args, k) < 0:
            p.error(f'--{k} must be >= 0')

    if args.worker:
        if args.worker not in ALL_CONFIGS:
            p.error(f'unknown configuration {args.worker!r}')
        args = row_args(args, args.model or default_model(ALL_CONFIGS[args.worker]))
        prepare_tensorflow()
        from model import nets
        nets.FUSED_BATCH_NORM = args.batch_norm == 'fused'
        if args.kernels:
            kernel_worker(args.worker, args.model, args.mc_samples, args.task_loop,
                          args.parallel_tasks)
            return 0
        result = worker(args.worker, args.model, args.windows, args.window_steps,
                        args.test_batches, args.mc_samples, args.warmup, args.task_loop,
                        args.parallel_tasks)
        import tensorflow as tf
        result.update(tensorflow=tf.__version__,
                      onednn_opts=os.environ.get('TF_ENABLE_ONEDNN_OPTS'))
        print('RESULT ' + json.dumps(result))
        return 0

    rows = parse_rows(p, args)
    have_torch = torch_available()
    skipped = {}
    for _, model_name in rows:
        why = reference_skip(model_name, args, have_torch)
        if why and model_name not in skipped:
            skipped[model_name] = why
            print(f'reference skipped for {model_name}: {why}')

    print(f'machine: {machine()}', flush=True)
    if args.kernels:
        other = [n for n, _ in rows if family(ALL_CONFIGS[n]) != 'conv']
        if other:
            p.error(f'--kernels runs the MAML-family configurations, not {", ".join(other)}')
        parts = []
        for name, model_name in rows:
            parts.append(kernels(name, model_name, row_args(args, model_name),
                                 model_name not in skipped))
            print(parts[-1] + '\n', flush=True)
        if args.markdown:
            with open(args.markdown, 'w') as f:
                f.write(f'Machine: {machine()}.\n\n' + '\n\n'.join(parts) + '\n')
        return 0

    results = []
    for name, model_name in rows:
        a = row_args(args, model_name)
        try:
            ours = run_worker(name, a)
        except (RuntimeError, subprocess.TimeoutExpired) as e:   # the others still run
            results.append(dict(ours=dict(config=name, model=model_name,
                                          error=last_line(str(e))), reference=None))
            print(row_line(name, results[-1]['ours'], None), flush=True)
            continue
        ours['task_loop'] = None if is_leo(ALL_CONFIGS[name]) else args.task_loop
        ours['batch_norm'] = args.batch_norm
        if ours['task_loop'] == 'unrolled':
            ours['model'] += ' (unrolled)'
        if args.batch_norm == 'plain':
            ours['model'] += ' (plain BN)'
        if args.parallel_tasks != 1:
            ours['model'] += f' ({args.parallel_tasks} tasks in flight)'
        ref = None
        if model_name not in skipped:
            try:
                ref = reference(name, model_name, a)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                ref = dict(script=os.path.basename(reference_path(model_name, a)),
                           error=last_line(str(e)))
        results.append(dict(ours=ours, reference=ref))
        print(row_line(name, ours, ref), flush=True)

    env = environment(results, args.threads)
    table = markdown_table(results)
    print(f'\n{env}\n\n{table}')
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(f'{env}\n\n{table}\n')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(machine=machine(), environment=env, results=results), f, indent=1)
    failed = [r for r in results if 'error' in r['ours'] or 'error' in (r['reference'] or {})]
    if failed:
        print(f'error: {len(failed)} row(s) failed (shown in the table)', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
