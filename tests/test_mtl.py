"""MTL's networks and steps (model/mtl.py) against the original's definitions: shapes and the
pooling chain, initialisers and parameter counts, scaling/shifting semantics, the inner loop
and its loss scaling, the second-order meta-gradient, what receives gradients, the test-time
while loop, the flip augmentation, the schedules and the hard-task class choice."""
import collections

import numpy as np
import pytest
import tensorflow as tf

from model import mtl, optim, steps


def small_mtl(shot=1, size=16, channels=3, **kw):
    return mtl.MTL(5, shot, (size, size, channels), img_size=size, **kw)


def randomise_backbone(backbone, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    for k, v in backbone.weights.items():
        if '_bias' in k:
            if bias:
                v.assign(rng.normal(0, 0.5, v.shape).astype(np.float32))
        else:
            v.assign(v * (1 + 0.1 * rng.normal(size=v.shape)).astype(np.float32))


def test_resnet12_pooling_chain_84_42_21_10_5_and_512_features():
    net = mtl.MtlBackbone('resnet12')
    shapes = []
    f = net.features(tf.random.uniform([2, 84 * 84 * 3]), shapes=shapes)
    assert f.shape == (2, 512)
    assert [s[1:] for s in shapes] == [[84, 84, 3], [42, 42, 64], [21, 21, 128],
                                        [10, 10, 256], [5, 5, 512]]
    assert mtl.final_pool_size('resnet12', 84) == 5
    # The average pool is over the whole 5x5 map: features are the mean of the last block.


def test_resnet12_weights_names_shapes_and_initialisers():
    net = mtl.MtlBackbone('resnet12')
    w = net.weights
    assert list(w)[:7] == ['block1_conv1', 'block1_bias1', 'block1_conv2', 'block1_bias2',
                           'block1_conv3', 'block1_bias3', 'block1_conv_res']
    assert w['block1_conv1'].shape == (3, 3, 3, 64)
    assert w['block3_conv2'].shape == (3, 3, 256, 256)
    assert w['block4_conv_res'].shape == (1, 1, 256, 512)
    n_frozen = sum(int(np.prod(v.shape)) for v in w.values())
    assert 7.9e6 < n_frozen < 8.1e6   # the sheet: ~7.99M
    for k, v in w.items():
        x = v.numpy()
        if '_bias' in k:
            assert not x.any()
        else:   # Glorot uniform, fan = k*k*C
            k1, k2, cin, cout = x.shape
            limit = np.sqrt(6. / (k1 * k2 * (cin + cout)))
            assert np.abs(x).max() <= limit + 1e-7 and np.abs(x).max() > 0.9 * limit
    model = mtl.MTL(5, 1)
    scales = sum(int(np.prod(v.shape)) for k, v in model.ss.items() if '_conv' in k)
    shifts = sum(int(np.prod(v.shape)) for k, v in model.ss.items() if '_bias' in k)
    fc = sum(int(np.prod(v.shape)) for v in model.fc.values())
    assert (scales, shifts, fc) == (868544, 2880, 2565)
    assert all((v.numpy() == 1).all() for k, v in model.ss.items() if '_conv' in k)
    assert model.ss['block2_conv1'].shape == (1, 1, 64, 128)
    assert 'block1_conv_res' not in model.ss   # shortcuts have no SS
    assert not model.fc['b5'].numpy().any()
    limit = np.sqrt(6. / (512 + 5))
    assert np.abs(model.fc['w5'].numpy()).max() <= limit + 1e-7


def test_resnet18_shapes_names_and_ss_counts():
    net = mtl.MtlBackbone('resnet18')
    shapes = []
    f = net.features(tf.random.uniform([1, 84, 84, 3]), shapes=shapes)
    assert f.shape == (1, 512)
    assert shapes[0][1:] == [224, 224, 3]   # resized in the graph
    sides = [s[1] for s in shapes[1:]]
    assert sides == [112, 112, 56, 56, 28, 28, 14, 14, 7]
    assert net.weights['block0_1_conv1'].shape == (7, 7, 3, 64)
    assert net.weights['block2_1_conv_res'].shape == (1, 1, 64, 128)
    model = mtl.MTL(5, 1, arch='resnet18')
    scales = sum(int(np.prod(v.shape)) for k, v in model.ss.items() if '_conv' in k)
    shifts = sum(int(np.prod(v.shape)) for k, v in model.ss.items() if '_bias' in k)
    assert (scales, shifts) == (1220800, 3904)


def test_resnet18_resizes_as_tf1_without_half_pixel_centres():
    """The original's tf.image.resize_images (TF 1.x) samples output pixel i at input
    coordinate i * 84 / 224 (clamped); TF 2's half-pixel centres would sample
    (i + 0.5) * 84 / 224 - 0.5. On a ramp the resized row is that coordinate."""
    net = mtl.MtlBackbone('resnet18')
    ramp = np.broadcast_to(np.arange(84, dtype=np.float32)[None, :, None], (84, 84, 3))
    row = net.prepare(ramp[None]).numpy()[0, 0, :, 0]
    np.testing.assert_allclose(row, np.minimum(np.arange(224) * 84 / 224, 83), atol=1e-4)


def test_batch_norm_is_affine_free_batch_statistics_and_leaky_slope_is_0_1():
    x = tf.random.normal([6, 4, 4, 3]) * 3 + 2
    y = mtl.normalize(x, 'batch_norm').numpy()
    mean, var = x.numpy().mean((0, 1, 2)), x.numpy().var((0, 1, 2))
    np.testing.assert_allclose(y, (x.numpy() - mean) / np.sqrt(var + 1e-3), atol=1e-5)
    act = mtl.activation_fn('leaky_relu')
    np.testing.assert_allclose(act(tf.constant([-2., 3.])).numpy(), [-0.2, 3.])


def test_scale_one_and_copied_shift_equal_the_pretrained_network():
    for norm in ('batch_norm', 'None'):
        model = small_mtl(norm=norm)
        randomise_backbone(model.backbone)
        model.copy_shift_from_backbone()
        x = tf.random.uniform([4, 16, 16, 3])
        plain = model.backbone.features(x).numpy()
        np.testing.assert_allclose(model.embed(x).numpy(), plain, rtol=1e-5, atol=1e-5)
        if norm == 'None':
            # Where the bias matters, the shift must be the copy: zeros give another net.
            zero = collections.OrderedDict(
                (k, tf.zeros_like(v) if '_bias' in k else v) for k, v in model.ss.items())
            assert np.abs(model.backbone.features(x, ss=zero).numpy() - plain).max() > 1e-3


def test_shift_cancels_under_batch_norm_as_in_the_original():
    model = small_mtl()
    x = tf.random.uniform([4, 16, 16, 3])
    before = model.embed(x).numpy()
    for k, v in model.ss.items():
        if '_bias' in k:
            v.assign(tf.random.normal(v.shape))
    np.testing.assert_allclose(model.embed(x).numpy(), before, atol=1e-4)


def test_scale_is_one_scalar_per_input_output_kernel_slice():
    model = small_mtl(norm='None', activation='None')
    x = tf.random.uniform([2, 16, 16, 3])
    ss = collections.OrderedDict((k, tf.identity(v)) for k, v in model.ss.items())
    scale = np.ones([1, 1, 3, 64], np.float32)
    scale[0, 0, 1, 7] = 2.5
    ss['block1_conv1'] = tf.constant(scale)
    weights = collections.OrderedDict((k, tf.identity(v)) for k, v in model.backbone.weights.items())
    kernel = weights['block1_conv1'].numpy().copy()
    kernel[:, :, 1, 7] *= 2.5
    weights['block1_conv1'] = tf.constant(kernel)
    np.testing.assert_allclose(model.backbone.features(x, ss=ss).numpy(),
                               model.backbone.features(x, weights=weights).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_inner_step_is_sgd_on_the_summed_xent_over_shot():
    model = small_mtl(shot=2, base_lr=0.1)
    rng = np.random.default_rng(0)
    f = rng.normal(size=(10, 512)).astype(np.float32)
    y = np.repeat(np.arange(5), 2).astype(np.int32)
    w, b = model.fc['w5'].numpy(), model.fc['b5'].numpy()
    new = model.inner_step(tf.constant(f), tf.constant(y),
                           collections.OrderedDict(w5=tf.constant(w), b5=tf.constant(b)))
    logits = f @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = (p - np.eye(5)[y]) / 2.   # d(sum CE / shot) / d logits
    np.testing.assert_allclose(new['w5'].numpy(), w - 0.1 * f.T @ d, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new['b5'].numpy(), b - 0.1 * d.sum(0), rtol=1e-4, atol=1e-6)


def test_meta_gradient_is_second_order_finite_differences():
    """d query-loss(after 3 steps) / d FC init, in float64, against central differences."""
    model = small_mtl(base_lr=0.5)
    rng = np.random.default_rng(1)
    fs = tf.constant(rng.normal(size=(5, 512)) / 10)
    fq = tf.constant(rng.normal(size=(15, 512)) / 10)
    ys = tf.constant(np.arange(5, dtype=np.int32))
    yq = tf.constant(np.repeat(np.arange(5), 3).astype(np.int32))
    w0 = tf.constant(rng.normal(size=(512, 5)) * 0.05)
    b0 = tf.constant(rng.normal(size=5) * 0.1)

    def outer(w, b):
        fc = collections.OrderedDict(w5=w, b5=b)
        for _ in range(3):
            fc = model.inner_step(fs, ys, fc)
        return tf.reduce_sum(mtl.xent(mtl.fc_forward(fq, fc), yq))

    with tf.GradientTape() as tape:
        tape.watch([w0, b0])
        loss = outer(w0, b0)
    gw, gb = tape.gradient(loss, [w0, b0])
    eps = 1e-6
    for j in range(5):
        e = np.zeros(5)
        e[j] = eps
        fd = (outer(w0, b0 + e) - outer(w0, b0 - e)) / (2 * eps)
        assert float(gb[j]) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)
    for i, j in ((0, 0), (10, 3), (511, 4)):
        e = np.zeros((512, 5))
        e[i, j] = eps
        fd = (outer(w0 + e, b0) - outer(w0 - e, b0)) / (2 * eps)
        assert float(gw[i, j]) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)
    # First order would differ: the inner gradients depend on w.
    with tf.GradientTape() as tape:
        tape.watch([w0, b0])
        fc = collections.OrderedDict(w5=w0, b5=b0)
        for _ in range(3):
            new = model.inner_step(fs, ys, fc)
            fc = collections.OrderedDict((k, fc[k] + tf.stop_gradient(new[k] - fc[k])) for k in fc)
        fo = tf.reduce_sum(mtl.xent(mtl.fc_forward(fq, fc), yq))
    assert np.abs(tape.gradient(fo, w0).numpy() - gw.numpy()).max() > 1e-6


def test_only_ss_and_fc_receive_gradients_and_change():
    model = small_mtl()
    randomise_backbone(model.backbone)
    model.copy_shift_from_backbone()
    opt = optim.Adam(model.outer_variables, 1e-3)
    assert not any(v.trainable for v in model.backbone.weights.values())
    assert {id(v) for v in model.outer_variables} == \
        {id(v) for v in list(model.ss.values()) + list(model.fc.values())}
    spec = steps.episode_spec(2, 5, 10, (16, 16, 3))
    step = mtl.make_meta_train_step(model, opt, spec)
    frozen = [v.numpy() for v in model.backbone.weights.values()]
    scales = {k: v.numpy() for k, v in model.ss.items() if '_conv' in k}
    fc = [v.numpy() for v in model.fc.values()]
    rng = np.random.default_rng(0)
    ep = (rng.random((2, 5, 16, 16, 3), np.float32), np.tile(np.arange(5, dtype=np.int32), (2, 1)),
          rng.random((2, 10, 16, 16, 3), np.float32),
          np.tile(np.repeat(np.arange(5, dtype=np.int32), 2), (2, 1)))
    loss, acc, applied, class_acc = step(*ep)
    assert bool(applied) and acc.shape == (2,) and class_acc.shape == (2, 5)
    for a, v in zip(frozen, model.backbone.weights.values()):
        np.testing.assert_array_equal(a, v.numpy())
    assert all(np.abs(model.ss[k].numpy() - a).max() > 0 for k, a in scales.items())
    assert all(np.abs(a - v.numpy()).max() > 0 for a, v in zip(fc, model.fc.values()))
    # the per-task loss is the summed query xent / shot, averaged over tasks
    per_task = [model.task_loss(*(e[t] for e in ep))[0] for t in range(2)]
    assert np.isfinite(float(loss)) and len(per_task) == 2


def test_task_loss_scaling_and_class_accuracy():
    model = small_mtl(shot=1, n_steps=0)
    rng = np.random.default_rng(2)
    xs = rng.random((5, 16, 16, 3), np.float32)
    xq = rng.random((10, 16, 16, 3), np.float32)
    ys = np.arange(5, dtype=np.int32)
    yq = np.repeat(np.arange(5, dtype=np.int32), 2)
    loss, acc, extras = model.task_loss(xs, ys, xq, yq)
    logits = mtl.fc_forward(model.embed(xq), model.fc)
    np.testing.assert_allclose(float(loss), float(tf.reduce_sum(mtl.xent(logits, yq))), rtol=1e-5)
    correct = (np.argmax(logits.numpy(), 1) == yq).astype(float)
    np.testing.assert_allclose(extras['class_acc'].numpy(), correct.reshape(5, 2).mean(1))
    assert float(acc) == pytest.approx(correct.mean())


def test_test_loop_matches_unrolled_steps_and_flips_double_the_support():
    model = small_mtl(base_lr=0.05)
    rng = np.random.default_rng(3)
    xs = rng.random((5, 16, 16, 3), np.float32)
    xq = rng.random((10, 16, 16, 3), np.float32)
    ys = np.arange(5, dtype=np.int32)
    yq = np.repeat(np.arange(5, dtype=np.int32), 2)
    x2, y2 = model.augment_support(tf.constant(xs), tf.constant(ys))
    assert x2.shape == (10, 16, 16, 3)
    np.testing.assert_array_equal(x2.numpy()[5:], xs[:, :, ::-1, :])
    np.testing.assert_array_equal(y2.numpy(), np.concatenate([ys, ys]))
    loss, accs = model.evaluate_task(xs, ys, xq, yq, 4, augment=True)
    fs, fq = model.embed(x2), model.embed(xq)
    fc = collections.OrderedDict((k, tf.convert_to_tensor(v)) for k, v in model.fc.items())
    expected = []
    for _ in range(4):
        fc = model.inner_step(fs, y2, fc)
        expected.append(float(mtl.accuracy(mtl.fc_forward(fq, fc), yq)))
    np.testing.assert_allclose(accs.numpy(), expected)
    final = tf.reduce_sum(mtl.xent(mtl.fc_forward(fq, fc), yq)) / model.shot
    assert float(loss) == pytest.approx(float(final), rel=1e-4)
    # compiled over tasks
    spec = steps.episode_spec(None, None, None, (16, 16, 3))
    ev = mtl.make_eval_step(model, spec, 4, True)
    l2, a2 = ev(xs[None], ys[None], xq[None], yq[None])
    assert a2.shape == (1, 4)
    np.testing.assert_allclose(a2.numpy()[0], expected)


def test_grey_images_are_replicated_and_resized():
    model = mtl.MTL(5, 1, (28, 28, 1), img_size=16)
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype(np.float32)
    h = model.backbone.prepare(x)
    assert h.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(h.numpy()[..., 0], h.numpy()[..., 2])
    assert model.embed(x).shape == (2, 512)
    with pytest.raises(ValueError, match='too small'):
        mtl.MtlBackbone('resnet12', img_size=8)


def test_halving_schedules_of_the_original():
    s = lambda i: mtl.halving_schedule(1e-3, i, 1000, 0.5, 1e-4)   # noqa: E731
    assert [s(i) for i in (0, 1, 1000)] == [1e-3] * 3
    assert s(1001) == pytest.approx(5e-4) and s(2000) == pytest.approx(5e-4)
    assert s(2001) == pytest.approx(2.5e-4) and s(3001) == pytest.approx(1.25e-4)
    assert s(4001) == pytest.approx(1e-4) and s(19999) == pytest.approx(1e-4)
    p = lambda i: mtl.halving_schedule(1e-3, i, 5000)   # noqa: E731  (no floor)
    assert p(5000) == 1e-3 and p(5001) == pytest.approx(5e-4)
    assert p(15001) == pytest.approx(1.25e-4) and p(25001) == pytest.approx(3.125e-5)


def test_hard_task_classes_take_each_tasks_failure_class_then_the_next_hardest():
    rng = np.random.default_rng(0)
    classes = np.array([[10, 11, 12, 13, 14], [20, 21, 22, 23, 24]])
    acc = np.array([[0.9, 0.2, 0.8, 0.7, 1.0], [0.5, 0.6, 0.95, 0.1, 0.4]])
    hard = mtl.hard_task_classes(classes, acc, 5, rng)
    assert hard.tolist() == [23, 11, 24, 20, 21]   # failures 23 (0.1), 11 (0.2); then 0.4, 0.5, 0.6
    # a class shared by both tasks counts once; more failures than way: the hardest ones
    classes = np.array([[1, 2, 3], [3, 4, 5], [6, 7, 8], [9, 1, 4]])
    acc = np.array([[1., 1., 0.], [0., 1., 1.], [1., 0.5, 1.], [0.2, 1., 1.]])
    hard = mtl.hard_task_classes(classes, acc, 3, rng)
    assert hard.tolist() == [3, 9, 7]
    assert len(set(hard.tolist())) == 3
