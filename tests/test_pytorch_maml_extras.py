"""PyTorch-MAML's extras on the MAML family: batch-norm modes, gradient checkpointing,
zero head, layer freezing, inner momentum / weight decay, and its encoders."""
import numpy as np
import pytest
import tensorflow as tf

from model import backbones, inner_loop, maml, nets, resnets
from model import resolve_frozen

F64 = tf.float64


def tiny(bn_mode='transductive', n_steps=2, dtype=F64, backbone='conv4', way=3, seed=0,
         image_shape=(16, 16, 1), zero_head=False, **kw):
    tf.random.set_seed(seed)
    if backbone == 'conv4':
        net = nets.Conv4(way, 4, image_shape, dtype=dtype, zero_head=zero_head)
    else:
        net = nets.Conv4(way, 4, image_shape, 'pytorch', dtype=dtype, zero_head=zero_head)
    return maml.MAML(net, inner_lr=0.3, n_steps=n_steps, bn_mode=bn_mode, **kw)


def episode(way=3, shot=2, query=3, shape=(16, 16, 1), seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    xs = rng.random((way * shot, *shape)).astype(dtype)
    xq = rng.random((way * query, *shape)).astype(dtype)
    ys = np.repeat(np.arange(way), shot).astype(np.int32)
    yq = np.repeat(np.arange(way), query).astype(np.int32)
    return tuple(tf.constant(a) for a in (xs, ys, xq, yq))


def meta_gradient(model, ep, compiled=False):
    def run():
        with tf.GradientTape() as tape:
            loss, _ = model.task_loss(*ep, training=True)
        return loss, tape.gradient(loss, model.outer_variables)
    loss, grads = (tf.function(run) if compiled else run)()
    return loss.numpy(), [g.numpy() for g in grads]


# ---- batch-norm modes ---------------------------------------------------------------------
@pytest.mark.parametrize('mode', ['episodic', 'support'])
def test_inductive_modes_predict_each_query_independently(mode):
    """Inductive: a query's logits do not depend on the other queries; transductive: they
    do, and a skewed query batch (all of one class) changes them."""
    xs, ys, xq, _ = episode()
    skewed = tf.concat([xq[:1], tf.repeat(xq[-1:], 5, axis=0)], 0)
    for m, inductive in ((tiny(mode), True), (tiny('transductive'), False)):
        adapted = m.adapt(xs, ys, training=False)
        alone = m.query_logits(adapted, xq[:1]).numpy()[0]
        full = m.query_logits(adapted, xq).numpy()[0]
        skew = m.query_logits(adapted, skewed).numpy()[0]
        if inductive:
            np.testing.assert_allclose(alone, full, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(skew, full, rtol=1e-9, atol=1e-12)
        else:
            assert np.abs(skew - full).max() > 1e-3


def test_support_mode_normalises_with_the_support_statistics():
    """Scoring the support set itself with support statistics is the transductive forward
    of the support batch."""
    xs, ys, _, _ = episode()
    m = tiny('support')
    adapted = m.adapt(xs, ys, training=False)
    np.testing.assert_allclose(m.query_logits(adapted, xs).numpy(),
                               m.predict(adapted.params, xs).numpy(), rtol=1e-9, atol=1e-12)


def test_episodic_running_statistics_follow_torch():
    """One inner step: running = 0.9 (0, 1) + 0.1 (mean, unbiased var) of the support
    batch's first-layer pre-BN activations under theta_0."""
    xs, ys, _, _ = episode()
    m = tiny('episodic', n_steps=1, bn_momentum=0.1)
    adapted = m.adapt(xs, ys, training=True)
    theta = m.net.initial_params()
    pre = tf.nn.conv2d(xs, theta['conv1_w'], 1, 'SAME') + theta['conv1_b']
    flat = pre.numpy().reshape(-1, pre.shape[-1])
    mean, var = adapted.running['conv1']
    np.testing.assert_allclose(mean.numpy(), 0.1 * flat.mean(0), rtol=1e-9)
    np.testing.assert_allclose(var.numpy(), 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-9)
    # Buffers: no meta-gradient flows through them (all layers' stats are constants).
    with tf.GradientTape() as tape:
        running = m.adapt(xs, ys, training=True).running
        total = tf.add_n([tf.reduce_sum(mu) + tf.reduce_sum(v) for mu, v in running.values()])
    assert all(g is None for g in tape.gradient(total, m.outer_variables))


def test_episodic_state_survives_the_test_time_while_loop():
    xs, ys, _, _ = episode()
    m = tiny('episodic', n_steps=3)
    unrolled = m.adapt(xs, ys, training=True)
    looped = m.adapt(xs, ys, training=False, n_steps=3)
    for k in unrolled.running:
        for a, b in zip(unrolled.running[k], looped.running[k]):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9)


def test_bn_mode_default_is_transductive_and_unknown_is_refused():
    assert tiny().bn_mode == 'transductive'
    with pytest.raises(ValueError, match='bn_mode'):
        tiny('global')


# ---- gradient checkpointing ---------------------------------------------------------------
@pytest.mark.parametrize('mode,extra', [
    ('transductive', {}),
    ('episodic', dict(inner_momentum=0.9, inner_weight_decay=0.01)),
    ('support', dict(meta_sgd=True)),
])
def test_checkpointed_meta_gradient_equals_plain(mode, extra):
    ep = episode()
    plain_loss, plain = meta_gradient(tiny(mode, n_steps=3, **extra), ep, compiled=True)
    ckpt_loss, ckpt = meta_gradient(tiny(mode, n_steps=3, efficient=True, **extra), ep,
                                    compiled=True)
    assert plain_loss == pytest.approx(ckpt_loss, rel=1e-12)
    for a, b in zip(plain, ckpt):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert max(np.abs(g).max() for g in plain) > 1e-4


def test_checkpointed_step_keeps_second_order_terms():
    """Closed form on a quadratic: d f(theta_n) / d theta_0 = (I - lr A)^n^T grad f."""
    rng = np.random.default_rng(1)
    q = rng.standard_normal((3, 3))
    a = tf.constant(q @ q.T + np.eye(3), F64)
    theta = tf.Variable(rng.standard_normal(3), dtype=F64)
    lr, n = 0.1, 4

    def loss_fn(p):
        return 0.5 * tf.tensordot(p['t'], tf.linalg.matvec(a, p['t']), 1)

    with tf.GradientTape() as tape:
        fast, _ = inner_loop.gradient_descent(loss_fn, {'t': theta}, n, lr, recompute=True)
        f = tf.reduce_sum(fast['t'])
    m = np.linalg.matrix_power(np.eye(3) - lr * a.numpy(), n)
    np.testing.assert_allclose(tape.gradient(f, theta).numpy(), m.T @ np.ones(3), rtol=1e-10)


def test_efficient_refuses_a_stochastic_inner_loss():
    from model.metadrop import MetaDropout
    net = nets.Conv4(3, 4, (16, 16, 1), dtype=F64)
    md = MetaDropout(net, n_steps=1, efficient=True)
    xs, ys, xq, yq = episode()
    with pytest.raises(ValueError, match='redraw'):
        md.task_loss(xs, ys, xq, yq, training=True)


# ---- zero head, freezing, momentum and weight decay ---------------------------------------
def test_zero_head_predicts_uniformly_before_adaptation():
    m = tiny(zero_head=True, way=4)
    assert 'dense_w' not in m.net.theta and 'dense_b' not in m.net.theta
    xs, ys, xq, _ = episode(way=4)
    probs = tf.nn.softmax(m.predict(m.net.initial_params(), xq)).numpy()
    np.testing.assert_allclose(probs, 0.25, rtol=1e-12)
    # The first step cannot move the encoder: its gradient goes through the zero head.
    adapted = m.adapt(xs, ys, training=True, n_steps=1)
    for k, v in m.net.theta.items():
        np.testing.assert_array_equal(adapted.params[k].numpy(), v.numpy())
    assert np.abs(adapted.params['dense_w'].numpy()).max() > 0
    # and the way is free: the same encoder serves a 4-way and a 2-way task.
    two = maml.MAML(nets.Conv4(2, 4, (16, 16, 1), dtype=F64, zero_head=True))
    assert two.net.param_shapes()['dense_w'] == [two.net.feature_dim, 2]


def test_frozen_layers_keep_their_initial_weights():
    xs, ys, _, _ = episode()
    m = tiny(backbone='pytorch', n_steps=3, frozen=('conv1_w', 'conv2_bn_gamma'))
    adapted = m.adapt(xs, ys, training=True)
    for k, v in m.net.theta.items():
        same = np.array_equal(adapted.params[k].numpy(), v.numpy())
        assert same == (k in ('conv1_w', 'conv2_bn_gamma')), k
    # Frozen in the inner loop, still meta-learned.
    _, grads = meta_gradient(m, episode())
    names = list(m.net.theta)
    assert np.abs(grads[names.index('conv1_w')]).max() > 0


def test_frozen_patterns_as_pytorch_maml():
    names = list(tiny(backbone='pytorch').net.param_shapes())
    assert resolve_frozen(['bn'], names) == tuple(n for n in names if '_bn_' in n)
    assert resolve_frozen(['classifier'], names) == ('dense_w', 'dense_b')
    assert set(resolve_frozen(['encoder'], names)) == set(names) - {'dense_w', 'dense_b'}
    with pytest.raises(ValueError, match='matches no parameter'):
        resolve_frozen(['layer9'], names)


def test_inner_momentum_and_weight_decay_as_torch_sgd():
    """Two steps on L = 0.5 a t^2: g_s = a t_s + wd t_s; buf_1 = g_0, buf_2 = g_1 + m buf_1;
    t_{s+1} = t_s - lr buf_{s+1}."""
    a, lr, mom, wd, t0 = 2.0, 0.1, 0.9, 0.05, 1.5
    t = tf.Variable(t0, dtype=F64)
    fast, _ = inner_loop.gradient_descent(lambda p: 0.5 * a * p['t'] ** 2, {'t': t}, 2, lr,
                                          momentum=mom, weight_decay=wd)
    g0 = (a + wd) * t0
    t1 = t0 - lr * g0
    t2 = t1 - lr * ((a + wd) * t1 + mom * g0)
    assert float(fast['t']) == pytest.approx(t2, rel=1e-12)
    looped, _ = inner_loop.gradient_descent(lambda p: 0.5 * a * p['t'] ** 2, {'t': t}, 2, lr,
                                            momentum=mom, weight_decay=wd, unroll=False)
    assert float(looped['t']) == pytest.approx(t2, rel=1e-12)


# ---- encoders -----------------------------------------------------------------------------
def test_resnet12_pooling_chain_and_widths():
    net = backbones.build_backbone('resnet12', 5, (84, 84, 3))
    assert net.feature_dim == 512
    assert backbones.build_backbone('wide_resnet12', 5, (84, 84, 3)).feature_dim == 640
    x = tf.random.uniform([2, 84, 84, 3])
    assert net(x).shape == (2, 5)
    # Init: kaiming normal, fan_out, gain sqrt(2); BN gamma 1, beta 0.
    w = net.theta['layer3_conv2_w'].numpy()
    assert w.std() == pytest.approx(np.sqrt(2. / (9 * 256)), rel=0.05)
    assert np.all(net.theta['layer1_bn1_gamma'].numpy() == 1)
    # 84 -> 42 -> 21 -> 10 -> 5, then the average pool.
    sizes, h, p = [], x, net.initial_params()
    for i in range(1, 5):
        h = tf.nn.max_pool2d(net.conv(h, p[f'layer{i}_sc_conv_w']), 2, 2, 'VALID')
        sizes.append(h.shape[1])
    assert sizes == [42, 21, 10, 5]


def test_resnet18_runs_with_the_strided_shortcut():
    """PyTorch-MAML's ResNet-18 adds a stride-1 shortcut to a stride-2 path (shapes
    84 vs 42) and cannot run; here the shortcut has the block's stride."""
    net = backbones.build_backbone('resnet18', 5, (84, 84, 3))
    assert [k for k in net.theta if k.endswith('sc_conv_w')] == \
        ['layer2_sc_conv_w', 'layer3_sc_conv_w', 'layer4_sc_conv_w']
    x = tf.random.uniform([2, 84, 84, 3])
    with tf.GradientTape() as tape:
        logits = net(x)
        total = tf.reduce_sum(logits * tf.random.normal(logits.shape))
    grads = tape.gradient(total, list(net.theta.values()))
    assert logits.shape == (2, 5) and all(g is not None for g in grads)
    assert backbones.build_backbone('wide_resnet18', 5, (84, 84, 3)).feature_dim == 640


def test_torch_padding_keeps_stride_two_grids_aligned():
    """A stride-2 3x3 conv pads one pixel on each side, as torch: its output at (i, j) is
    centred on input pixel (2i, 2j), the pixel the 1x1 shortcut samples."""
    x = tf.reshape(tf.range(16 * 16, dtype=tf.float32), [1, 16, 16, 1])
    centre = np.zeros([3, 3, 1, 1], np.float32)
    centre[1, 1] = 1
    main = resnets._TorchStyleResNet.conv(x, tf.constant(centre), 2)
    shortcut = resnets._TorchStyleResNet.conv(x, tf.ones([1, 1, 1, 1]), 2)
    np.testing.assert_array_equal(main.numpy(), shortcut.numpy())


def test_pytorch_conv4_widths_and_batch_norm():
    small = backbones.build_backbone('convnet4', 5, (84, 84, 3))
    wide = backbones.build_backbone('wide_convnet4', 5, (84, 84, 3))
    assert (small.n_channel, small.feature_dim) == (32, 800)
    assert (wide.n_channel, wide.feature_dim) == (64, 1600)
    assert small.bn_epsilon == 1e-5 and not small.bn_beta
    assert 'conv1_bn_gamma' in small.theta and 'conv1_bn_beta' in small.theta
    bound = 1 / np.sqrt(9 * 3)   # torch's default conv init
    w = small.theta['conv1_w'].numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound


def test_input_normalisation_is_per_channel():
    net = nets.Conv4(2, 4, (16, 16, 3), 'pytorch', input_norm=((0.5, 0.4, 0.3), (0.2, 0.1, 0.5)))
    x = tf.fill([1, 16, 16, 3], 0.5)
    np.testing.assert_allclose(net.prepare(x).numpy()[0, 0, 0], [0., 1., 0.4], rtol=1e-6)
    with pytest.raises(ValueError, match='positive'):
        nets.Conv4(2, 4, (16, 16, 3), 'pytorch', input_norm=((0.5,), (0.,)))


@pytest.mark.parametrize('mode', ['episodic', 'support'])
def test_meta_dropout_takes_the_batch_norm_modes_too(mode):
    from model.metadrop import MetaDropout
    tf.random.set_seed(0)
    md = MetaDropout(nets.Conv4(3, 4, (16, 16, 1), dtype=F64), n_steps=2, bn_mode=mode)
    xs, ys, xq, yq = episode()
    adapted = md.adapt(xs, ys, training=False)
    np.testing.assert_allclose(md.query_logits(adapted, xq[:1]).numpy()[0],
                               md.query_logits(adapted, xq).numpy()[0], rtol=1e-9, atol=1e-12)
    loss, _ = md.task_loss(xs, ys, xq, yq, training=True)
    assert np.isfinite(loss.numpy())


def test_command_line_choices_match_the_model():
    """main.py lists backbones and BN modes without importing TensorFlow; they must stay the
    model's."""
    import main
    assert main.BACKBONES == backbones.BACKBONES
    assert main.BN_MODES == maml.BN_MODES
