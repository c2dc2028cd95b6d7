"""Speed settings keep the numerics: the meta-gradient with TensorFlow's oneDNN kernels (on
by default, see model/__init__.py) equals the one with its plain kernels."""
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import sys
import numpy as np
import tensorflow as tf
from model import nets, maml
tf.random.set_seed(0)
net = nets.Conv4(5, n_channel=16, image_shape=(28, 28, 1))
model = maml.MAML(net, inner_lr=0.1, n_steps=2)
rng = np.random.default_rng(0)
xs = tf.constant(rng.random((5, 28, 28, 1), dtype=np.float32))
xq = tf.constant(rng.random((15, 28, 28, 1), dtype=np.float32))
ys = tf.constant(np.arange(5, dtype=np.int32))
yq = tf.constant(np.repeat(np.arange(5, dtype=np.int32), 3))
with tf.GradientTape() as tape:
    loss, _ = model.task_loss(xs, ys, xq, yq)
grads = tape.gradient(loss, model.outer_variables)
np.savez(sys.argv[1], loss=loss.numpy(), *[g.numpy() for g in grads])
'''


def meta_gradient(tmp_path, onednn):
    out = tmp_path / f'onednn{onednn}.npz'
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=str(onednn), TF_CPP_MIN_LOG_LEVEL='2')
    subprocess.run([sys.executable, '-c', SCRIPT, str(out)], cwd=REPO, env=env, check=True,
                   timeout=300)
    return np.load(out)


def test_onednn_kernels_give_the_plain_kernels_meta_gradient(tmp_path):
    fast, plain = meta_gradient(tmp_path, 1), meta_gradient(tmp_path, 0)
    assert fast['loss'] == np.float32(fast['loss']) and abs(fast['loss'] - plain['loss']) < 1e-5
    grads = [k for k in plain.files if k != 'loss']
    # Conv biases have a true meta-gradient of exactly zero (batch norm cancels them), so
    # their entries are pure round-off: tolerances are relative to the overall scale.
    overall = max(np.abs(plain[k]).max() for k in grads)
    for k in grads:
        np.testing.assert_allclose(fast[k], plain[k], rtol=1e-3, atol=1e-4 * overall, err_msg=k)


# ---- the metabatch's tasks in a tf.while_loop (the default) against unrolled tasks ----------
import types

import pytest
import tensorflow as tf

from model import build_model, mtl, optim, steps

WAY, SHOT, QUERY, T, IMAGE = 3, 1, 2, 3, (16, 16, 1)


def small_model(name='maml', **options):
    cfg = types.SimpleNamespace(model=name, backbone='conv4', n_channel=4, inner_lr=0.1,
                                n_steps=2, n_test_steps=None, alpha_init=None,
                                inner_loss='mean', n_test_mc_samp=1, maml=False, **options)
    if name == 'taml':
        cfg.__dict__.update(max_shot=2, n_mc_samples=0, l2b_padding=False, alpha_on=True,
                            omega_on=True, gamma_on=True, z_on=True, alpha_init=None)
    tf.random.set_seed(0)
    return build_model(cfg, WAY, IMAGE)


def fixed_noise(shape, dtype):
    """Deterministic 'draws' of a shape, so both paths see the same noise."""
    n = tf.reduce_prod(shape)
    return tf.reshape(tf.sin(tf.cast(tf.range(n), dtype) * 0.7), shape)


def metabatch(seed=0, tasks=T):
    rng = np.random.default_rng(seed)
    ys = np.tile(np.repeat(np.arange(WAY), SHOT), (tasks, 1)).astype(np.int32)
    yq = np.tile(np.repeat(np.arange(WAY), QUERY), (tasks, 1)).astype(np.int32)
    return (rng.random((tasks, WAY * SHOT, *IMAGE), dtype=np.float32), ys,
            rng.random((tasks, WAY * QUERY, *IMAGE), dtype=np.float32), yq)


def gradient_by(model, loop, batch, metric_names=(), tasks=T, task_fn=None, parallel_tasks=1):
    task_fn = task_fn or (lambda xs, ys, xq, yq: lambda t: model.task_loss(
        xs[t], ys[t], xq[t], yq[t], training=True))

    @tf.function(autograph=False)
    def run(xs, ys, xq, yq):
        return steps.metabatch_gradient(task_fn(xs, ys, xq, yq), tasks, model.outer_variables,
                                        metric_names, loop, parallel_tasks)
    return run(*batch)


def assert_same(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(b).max(), 1e-12)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale, err_msg=what)


def assert_paths_agree(model, metric_names=(), parallel_tasks=1):
    batch = metabatch()
    fast = gradient_by(model, 'while', batch, metric_names, parallel_tasks=parallel_tasks)
    plain = gradient_by(model, 'unrolled', batch, metric_names)
    assert_same(fast[0], plain[0], 'loss')
    assert_same(fast[1], plain[1], 'accuracies')
    assert [g is None for g in fast[2]] == [g is None for g in plain[2]]
    grads = [(v.name, f, p) for v, f, p in zip(model.outer_variables, fast[2], plain[2])
             if p is not None]
    overall = max(np.abs(p.numpy()).max() for _, _, p in grads)
    assert overall > 0
    for name, f, p in grads:
        np.testing.assert_allclose(f.numpy(), p.numpy(), rtol=1e-4, atol=1e-5 * overall,
                                   err_msg=name)
    for k in metric_names:
        assert fast[3][k].shape == (T,) and plain[3][k].shape == (T,)
        assert_same(fast[3][k], plain[3][k], k)
    # The loop ran every task: the mean differs from the first task's own meta-gradient.
    first = gradient_by(model, 'unrolled', tuple(x[:1] for x in batch), metric_names, tasks=1)
    assert abs(float(first[0]) - float(plain[0])) > 1e-6
    return fast, plain


@pytest.mark.parametrize('name,options', [
    ('maml', {}), ('fomaml', {}), ('metasgd', {}),
    ('maml', dict(bn_mode='episodic')), ('maml', dict(bn_mode='support')),
    ('maml', dict(efficient=True)),
])
def test_while_loop_over_tasks_gives_the_unrolled_meta_gradient(name, options):
    assert_paths_agree(small_model(name, **options))


def test_tasks_in_flight_give_the_same_meta_gradient():
    assert_paths_agree(small_model('maml'), parallel_tasks=T)


def test_while_loop_over_tasks_metadrop_with_fixed_noise():
    model = small_model('metadrop')
    model.noise = fixed_noise
    fast, _ = assert_paths_agree(model)
    # phi (the noise generator) is meta-learned through the loop too.
    phi = {id(v) for v in model.phi.values()}
    assert any(np.abs(g.numpy()).max() > 0 for v, g in zip(model.outer_variables, fast[2])
               if id(v) in phi and g is not None)


def test_while_loop_over_tasks_taml_metrics():
    model = small_model('taml')
    model.noise = fixed_noise
    assert model.task_metrics == ('cent', 'kl')
    fast, plain = assert_paths_agree(model, ('cent', 'kl'))
    # loss = cent + kl, task by task
    assert_same(fast[0], np.mean(fast[3]['cent'] + fast[3]['kl']), 'cent + kl')


def test_while_loop_keeps_unconnected_variables_none_and_checks_metric_names():
    model = small_model('maml')
    unused = model.outer_variables[0]

    def task_fn(xs, ys, xq, yq):
        # Only the head: the first conv kernel does not affect this loss.
        return lambda t: (tf.reduce_sum(model.net.theta['dense_w'] * tf.reduce_mean(xq[t])),
                          tf.constant(1.), {})
    for loop in steps.TASK_LOOPS:
        out = gradient_by(model, loop, metabatch(), task_fn=task_fn)
        names = [v.name for v, g in zip(model.outer_variables, out[2]) if g is not None]
        assert names == [model.net.theta['dense_w'].name] and unused.name not in names
    with pytest.raises(ValueError, match=r"returned metrics \[\], but \['cent'\] were declared"):
        gradient_by(model, 'while', metabatch(), ('cent',), task_fn=task_fn)
    with pytest.raises(ValueError, match='task_loop must be one of while, unrolled'):
        steps.metabatch_gradient(lambda t: None, T, model.outer_variables, (), 'vmap')


def train_once(model, loop, batch, clip_value=3., lr=1.):
    opt = optim.SGD(model.outer_variables, lr, momentum=0.)
    before = [v.numpy().copy() for v in model.outer_variables]
    step = steps.make_train_step(model, opt, clip_value, steps.episode_spec(T, WAY * SHOT,
                                 WAY * QUERY, IMAGE), task_loop=loop)
    loss, acc, applied = step(*batch)
    after = [v.numpy().copy() for v in model.outer_variables]
    for v, b in zip(model.outer_variables, before):
        v.assign(b)
    return float(loss), acc.numpy(), bool(applied), [b - a for b, a in zip(before, after)]


def test_train_step_paths_apply_the_same_clipped_update_and_skip_the_same_bad_steps():
    model = small_model('maml')
    batch = metabatch()
    # clip_value small enough to bind: the update is the clipped meta-gradient.
    fast, plain = (train_once(model, loop, batch, clip_value=1e-3) for loop in steps.TASK_LOOPS)
    assert fast[2] and plain[2]
    assert_same(fast[0], plain[0], 'loss')
    assert_same(fast[1], plain[1], 'acc')
    assert max(np.abs(d).max() for d in fast[3]) == pytest.approx(1e-3, rel=1e-4)
    # (conv biases, cancelled by batch norm, have a true meta-gradient of 0: round-off)
    for f, p in zip(fast[3], plain[3]):
        np.testing.assert_allclose(f, p, atol=1e-5)
    # One non-finite task skips the whole update, on both paths.
    bad = list(batch)
    bad[2] = batch[2].copy()
    bad[2][1, 0, 0, 0, 0] = np.nan
    for loop in steps.TASK_LOOPS:
        loss, _, applied, delta = train_once(model, loop, bad)
        assert not applied
        assert all(np.all(d == 0) for d in delta)


def test_mtl_meta_train_step_paths_agree():
    tf.random.set_seed(0)
    model = mtl.MTL(WAY, SHOT, IMAGE, arch='resnet12', img_size=16, base_lr=1e-2, n_steps=2)
    batch = metabatch()
    spec = steps.episode_spec(T, WAY * SHOT, WAY * QUERY, IMAGE)
    out = {}
    for loop in steps.TASK_LOOPS:
        opt = optim.SGD(model.outer_variables, 1., momentum=0.)
        before = [v.numpy().copy() for v in model.outer_variables]
        loss, acc, applied, class_acc = mtl.make_meta_train_step(model, opt, spec, loop)(*batch)
        out[loop] = (float(loss), acc.numpy(), class_acc.numpy(),
                     [b - v.numpy() for b, v in zip(before, model.outer_variables)])
        assert bool(applied) and class_acc.shape == (T, WAY)
        for v, b in zip(model.outer_variables, before):
            v.assign(b)
    fast, plain = out['while'], out['unrolled']
    assert_same(fast[0], plain[0], 'loss')
    assert_same(fast[1], plain[1], 'acc')
    assert_same(fast[2], plain[2], 'class_acc')
    overall = max(np.abs(d).max() for d in plain[3])
    assert overall > 0
    for f, p in zip(fast[3], plain[3]):
        np.testing.assert_allclose(f, p, rtol=1e-4, atol=1e-5 * overall)


# ---- batch norm through the fused kernel (the default) against the plain arithmetic -------
from model import nets


@pytest.fixture
def bn_path():
    saved = nets.FUSED_BATCH_NORM

    def use(fused):
        nets.FUSED_BATCH_NORM = fused
    yield use
    nets.FUSED_BATCH_NORM = saved


def test_fused_batch_norm_matches_the_plain_one_to_second_order(bn_path):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((6, 5, 5, 3)), tf.float32)
    beta = tf.constant(rng.standard_normal(3), tf.float32)
    gamma = tf.constant(rng.uniform(0.5, 2., 3), tf.float32)
    w = tf.constant(rng.standard_normal((6, 5, 5, 3)), tf.float32)

    def derivatives(fused, g):
        bn_path(fused)

        @tf.function(autograph=False)
        def run():
            with tf.GradientTape(persistent=True) as outer:
                outer.watch([x, beta])
                with tf.GradientTape() as inner:
                    inner.watch([x, beta])
                    y = nets.batch_norm(x, beta, 1e-3, g)
                    loss = tf.reduce_sum(tf.sin(y) * w)
                gx, gb = inner.gradient(loss, [x, beta])
                second = tf.reduce_sum(gx ** 2) + tf.reduce_sum(tf.sin(gb))
            ops = [o.type for o in tf.compat.v1.get_default_graph().get_operations()]
            return [y, gx, gb, *outer.gradient(second, [x, beta])], ops
        return run()
    for g in (None, gamma):
        (fast, fast_ops), (plain, plain_ops) = derivatives(True, g), derivatives(False, g)
        assert 'FusedBatchNormV3' in fast_ops and 'FusedBatchNormV3' not in plain_ops
        for what, f, p in zip(['y', 'dy/dx', 'dy/dbeta', 'd2/dx', 'd2/dbeta'], fast, plain):
            np.testing.assert_allclose(f.numpy(), p.numpy(), rtol=1e-4,
                                       atol=1e-5 * np.abs(p.numpy()).max(), err_msg=what)
    # torch's epsilon 1e-5 is below the kernel's minimum: the plain path, unchanged.
    bn_path(True)
    assert not nets.fused_applies(x, 1e-5) and nets.fused_applies(x, 1e-3)


@pytest.mark.parametrize('name', ['maml', 'metadrop'])
def test_fused_batch_norm_gives_the_plain_meta_gradient(bn_path, name):
    batch = metabatch()
    out = {}
    for fused in (True, False):
        bn_path(fused)
        model = small_model(name)
        model.noise = fixed_noise
        out[fused] = gradient_by(model, 'while', batch)
    (fast, plain), names = (out[True], out[False]), [v.name for v in model.outer_variables]
    assert_same(fast[0], plain[0], 'loss')
    overall = max(np.abs(p.numpy()).max() for p in plain[2] if p is not None)
    for name, f, p in zip(names, fast[2], plain[2]):
        np.testing.assert_allclose(f.numpy(), p.numpy(), rtol=1e-3, atol=1e-4 * overall,
                                   err_msg=name)
