"""--distribute: the metabatch split across replicas gives the single-device meta-gradient.

Logical CPU devices must be configured before TensorFlow initialises, so every check runs
in a fresh Python process."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--dataset', 'synthetic', '--way', '5', '--shot', '1', '--query', '5',
        '--metabatch', '4', '--n_steps', '2', '--n_channel', '8', '--noprogress',
        '--n_val_batches', '1', '--val_freq', '1000', '--n_train_iters', '2',
        '--n_test_iters', '8', '--optimizer', 'sgd', '--momentum', '0.9', '--meta_lr', '0.1']
# SGD, not Adam: a conv bias right before batch norm has a zero meta-gradient up to float
# noise, which Adam's normalisation would blow up into lr-sized steps of random sign.

GRADIENT_CHECK = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    from model import leo, maml, nets, optim, runner, steps, taml
    runner.configure_cpu_devices(2)

    def build(strategy):
        with strategy.scope() if strategy else tf.name_scope('single'):
            tf.random.set_seed(0)
            if sys.argv[1] == 'taml':   # all four switches, fixed posterior noise
                net = nets.Conv4(3, 4, (16, 16, 1), dtype=tf.float64, zero_head=True)
                model = taml.TAML(net, max_shot=3, n_steps=2, alpha_on=True, omega_on=True,
                                  gamma_on=True, z_on=True)
                model.noise = lambda shape, dtype: tf.fill(shape, tf.constant(0.3, dtype))
            elif sys.argv[1] == 'leo':   # every penalty on, fixed latent/weight noise
                model = leo.LEO(3, 2, 7, num_latents=3, inner_unroll_length=2,
                                finetuning_unroll_length=2, inner_lr_init=0.5,
                                finetuning_lr_init=0.3, dropout_rate=0., kl_weight=0.1,
                                encoder_penalty_weight=0.1, l2_penalty_weight=0.01,
                                orthogonality_penalty_weight=0.1)
                model.noise = lambda shape, dtype: tf.fill(shape, tf.constant(0.3, dtype))
                opt = optim.SGD(model.outer_variables, 1.0, momentum=0.)
                return model, opt, leo.make_outer_update(model, opt, 0., 0.)
            else:
                net = nets.Conv4(3, 4, (16, 16, 1), dtype=tf.float64)
                model = maml.MAML(net, inner_lr=0.3, n_steps=2, bn_mode=sys.argv[1])
            # SGD without momentum at lr 1: the update is minus the meta-gradient.
            return model, optim.SGD(model.outer_variables, 1.0, momentum=0.), None

    rng = np.random.default_rng(0)
    T = 4
    shape = (7,) if sys.argv[1] == 'leo' else (16, 16, 1)   # LEO: embedding vectors
    xs = rng.random((T, 6, *shape))
    xq = rng.random((T, 9, *shape))
    ys = np.tile(np.repeat(np.arange(3), 2), (T, 1)).astype(np.int32)
    if sys.argv[1] == 'taml':   # imbalanced tasks, zero-padded support rows
        ys[1] = [0, 1, 1, 2, -1, -1]
        ys[2] = [0, 1, 2, -1, -1, -1]
        xs[ys < 0] = 0.
    yq = np.tile(np.repeat(np.arange(3), 3), (T, 1)).astype(np.int32)
    spec = steps.episode_spec(T, 6, 9, shape)
    spec = [tf.TensorSpec(s.shape, tf.float64 if s.dtype == tf.float32 else s.dtype) for s in spec]
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    out = {'replicas': strategy.num_replicas_in_sync}
    for name, strat in (('single', None), ('mirrored', strategy)):
        model, opt, update = build(strat)
        before = [v.numpy().copy() for v in model.outer_variables]
        loss, acc, applied, *extras = steps.make_train_step(
            model, opt, 0., spec, strategy=strat, update=update)(xs, ys, xq, yq)
        out[name] = dict(loss=float(loss), acc=acc.numpy().tolist(), applied=bool(applied),
                         extras={k: float(v) for k, v in (extras[0] if extras else {}).items()},
                         grads=[(b - v.numpy()).ravel().tolist()
                                for b, v in zip(before, model.outer_variables)])
    try:
        steps.make_train_step(model, opt, 0., steps.episode_spec(3, 6, 9, (16, 16, 1)),
                              strategy=strategy)
    except ValueError as e:
        out['odd_metabatch'] = str(e)
    print('RESULT' + json.dumps(out))
''')


def run_python(code, *args, env=None, timeout=300):
    out = subprocess.run([sys.executable, '-c', code, *args], cwd=REPO, capture_output=True,
                         text=True, timeout=timeout, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [l for l in out.stdout.splitlines() if l.startswith('RESULT')][-1]
    return json.loads(line[len('RESULT'):])


@pytest.mark.parametrize('bn_mode', ['transductive', 'episodic', 'taml', 'leo'])
def test_mirrored_meta_gradient_equals_single_device(bn_mode):
    r = run_python(GRADIENT_CHECK, bn_mode, timeout=900)
    assert r['replicas'] == 2
    single, mirrored = r['single'], r['mirrored']
    assert mirrored['applied'] and single['applied']
    assert mirrored['loss'] == pytest.approx(single['loss'], rel=1e-12)
    assert mirrored['acc'] == single['acc']          # all 4 tasks, in metabatch order
    diff = max(np.abs(np.array(a) - np.array(b)).max()
               for a, b in zip(single['grads'], mirrored['grads']))
    scale = max(np.abs(np.array(a)).max() for a in single['grads'])
    assert scale > 1e-3 and diff < 1e-12 * max(1., scale), (diff, scale)
    assert mirrored['extras'].keys() == single['extras'].keys()
    for k, v in single['extras'].items():      # TAML's cent and kl, averaged over replicas
        assert mirrored['extras'][k] == pytest.approx(v, rel=1e-12)
    assert ('kl' in single['extras']) == (bn_mode in ('taml', 'leo'))
    assert 'metabatch 3 cannot be split evenly across 2 replicas' in r['odd_metabatch']


def checkpoint_weights(savedir):
    import tensorflow as tf
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(savedir))
    # Weights, Adam moments, step and iteration (not the flags under run/).
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.endswith('VARIABLE_VALUE') and not k.startswith('run/')}


def main_py(savedir, *extra, env=None, mode='meta_train'):
    cmd = [sys.executable, 'main.py', '--mode', mode, '--savedir', str(savedir), *TINY, *extra]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


# Two float32 computations that differ in summation order (the replicas' meta-gradients
# are averaged after summing each replica's tasks; one device sums all tasks at once) agree
# to float32 round-off of the reductions, which is relative to the magnitudes summed, not to
# the result: an element that is a near-cancelling sum (a momentum entry close to 0) can
# differ by 100% of itself. So each tensor is compared at a tolerance scaled by its own
# largest magnitude. A conv weight's meta-gradient sums ~ metabatch x 30 images x 28 x 28
# ~ 1e5 products per entry: round-off ~ sqrt(1e5) x eps32 (1.19e-7) ~ 4e-5 of the summed
# magnitudes per reduction, compounded over three iterations of second-order steps with
# momentum. Measured here (difference / max(scale, 5e-3)): 5.5e-5 with oneDNN, 1.0e-4 without; the
# tolerance, 1e-3, is 10x that and still 250x below a real difference (a task missing from
# a replica changes the meta-gradient by ~1/metabatch = 25%). A tensor whose exact value is
# 0 (the conv biases right before batch norm have a zero meta-gradient: SGD moves them by
# round-off, ~1e-9) has no scale of its own: an absolute 1e-6 (~10 float32 ulps of the
# weights' 0.1 scale) covers it.
FLOAT32_NOISE = 1e-3
ZERO_NOISE = 1e-6


def assert_same_weights(a, b, rel=FLOAT32_NOISE, floor=ZERO_NOISE):
    assert a.keys() == b.keys() and a
    worst = 0.
    for k in a:
        x, y = np.asarray(a[k], np.float64), np.asarray(b[k], np.float64)
        scale = max(float(np.abs(x).max(initial=0.)), 1e-30)
        diff = float(np.abs(x - y).max(initial=0.))
        worst = max(worst, diff / max(scale, floor / rel))
        assert diff <= rel * scale + floor, (k, diff, scale)
    print(f'largest difference relative to its tensor\'s scale: {worst:.2e}')


def test_mirrored_training_matches_single_device_end_to_end(tmp_path):
    """Three meta-train iterations on 2 logical CPUs, then meta_test from the
    mirrored checkpoint: the same weights as the plain run, within float32 tolerance."""
    finish(main_py(tmp_path / 'plain'))
    finish(main_py(tmp_path / 'mirrored', '--distribute', 'mirrored', '--n_cpu_devices', '2'))
    plain, mirrored = checkpoint_weights(tmp_path / 'plain'), checkpoint_weights(tmp_path / 'mirrored')
    assert_same_weights(plain, mirrored)
    out = finish(main_py(tmp_path / 'mirrored', '--distribute', 'mirrored', '--n_cpu_devices',
                         '2', mode='meta_test'))
    assert 'accuracy :' in out
    record = json.loads((tmp_path / 'mirrored' / 'meta_test.json').read_text())
    assert record['n_episodes'] == 8


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_train_like_one_process(tmp_path):
    """MultiWorkerMirroredStrategy over two local processes (TF_CONFIG): the chief's
    checkpoint equals a single-process run; the other worker keeps its copy in
    <savedir>/worker1."""
    finish(main_py(tmp_path / 'plain'))
    workers = [f'127.0.0.1:{free_port()}', f'127.0.0.1:{free_port()}']
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {'cluster': {'worker': workers}, 'task': {'type': 'worker', 'index': i}}))
        procs.append(main_py(tmp_path / 'mw', '--distribute', 'multi_worker', env=env))
    for p in procs:
        finish(p)
    plain = checkpoint_weights(tmp_path / 'plain')
    assert_same_weights(plain, checkpoint_weights(tmp_path / 'mw'))
    assert_same_weights(plain, checkpoint_weights(tmp_path / 'mw' / 'worker1'))
