"""Meta-gradient math of the shared inner loop and the MAML family, in float64."""
import collections

import numpy as np
import pytest
import tensorflow as tf

from model import inner_loop, maml, nets, optim

F64 = tf.float64


def tiny_maml(first_order=False, meta_sgd=False, n_steps=2, way=3, seed=0):
    tf.random.set_seed(seed)
    net = nets.Conv4(way, n_channel=8, image_shape=(16, 16, 1), dtype=F64)
    # Non-zero BN shifts so ReLUs are not all at their kink at initialisation.
    for b in net.bn_beta.values():
        b.assign(tf.random.normal(b.shape, stddev=0.5, dtype=F64))
    return maml.MAML(net, inner_lr=0.5, n_steps=n_steps, first_order=first_order,
                     meta_sgd=meta_sgd)


def task(way=3, shot=2, query=3, seed=1):
    rng = np.random.default_rng(seed)
    xs = tf.constant(rng.random((way * shot, 16, 16, 1)), F64)
    xq = tf.constant(rng.random((way * query, 16, 16, 1)), F64)
    ys = tf.constant(np.repeat(np.arange(way), shot), tf.int32)
    yq = tf.constant(np.repeat(np.arange(way), query), tf.int32)
    return xs, ys, xq, yq


def meta_grad(model, episode):
    with tf.GradientTape() as tape:
        loss, _ = model.task_loss(*episode, training=True)
    return loss, tape.gradient(loss, model.outer_variables)


def query_loss_at(model, episode, values):
    """Query loss after adaptation with the outer variables set to `values` (restored)."""
    old = [v.numpy() for v in model.outer_variables]
    for v, x in zip(model.outer_variables, values):
        v.assign(x)
    loss, _ = model.task_loss(*episode, training=True)
    for v, x in zip(model.outer_variables, old):
        v.assign(x)
    return float(loss)


@pytest.mark.parametrize('meta_sgd', [False, True])
def test_second_order_meta_gradient_matches_finite_differences(meta_sgd):
    model = tiny_maml(meta_sgd=meta_sgd)
    episode = task()
    _, grads = meta_grad(model, episode)
    base = [v.numpy() for v in model.outer_variables]
    rng = np.random.default_rng(2)
    # Max-pool and ReLU kinks sit close to any point of a network this small: central
    # differences agree to ~1e-8 at eps 1e-7 and not at 1e-4 (measured), so keep eps small.
    eps = 1e-7
    for _ in range(3):
        direction = [rng.standard_normal(b.shape) for b in base]
        analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction))
        plus = query_loss_at(model, episode, [b + eps * d for b, d in zip(base, direction)])
        minus = query_loss_at(model, episode, [b - eps * d for b, d in zip(base, direction)])
        numeric = (plus - minus) / (2 * eps)
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_first_order_equals_query_gradient_at_adapted_weights():
    """FOMAML's meta-gradient is dL_query/d theta' at the adapted theta' (the inner
    gradients are constants), and differs from the second-order one."""
    episode = task()
    fo = tiny_maml(first_order=True)
    _, fo_grads = meta_grad(fo, episode)

    fast = fo.adapt(episode[0], episode[1], training=True).params
    fast = collections.OrderedDict((k, tf.constant(v.numpy())) for k, v in fast.items())
    with tf.GradientTape() as tape:
        tape.watch(list(fast.values()))
        loss = maml.cross_entropy(fo.net(episode[2], fast), episode[3])
    expected = tape.gradient(loss, list(fast.values()))
    for g, e in zip(fo_grads[:len(expected)], expected):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-10, atol=1e-12)

    so = tiny_maml(first_order=False)
    _, so_grads = meta_grad(so, episode)
    diff = max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(so_grads, fo_grads))
    assert diff > 1e-4


def test_closed_form_meta_gradient_on_a_quadratic():
    """L(theta) = 0.5 theta^T A theta - b^T theta: n steps of lr give
    theta_n = M theta_0 + c with M = (I - lr A)^n, so d f(theta_n)/d theta_0 = M^T grad f."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((4, 4))
    a = tf.constant(q @ q.T + np.eye(4), F64)
    b = tf.constant(rng.standard_normal(4), F64)
    target = tf.constant(rng.standard_normal(4), F64)
    theta = tf.Variable(rng.standard_normal(4), dtype=F64)
    lr, n = 0.05, 3

    def loss_fn(p):
        t = p['theta']
        return 0.5 * tf.tensordot(t, tf.linalg.matvec(a, t), 1) - tf.tensordot(b, t, 1)

    with tf.GradientTape() as tape:
        fast, losses = inner_loop.gradient_descent(loss_fn, {'theta': theta}, n, lr)
        f = 0.5 * tf.reduce_sum((fast['theta'] - target) ** 2)
    grad = tape.gradient(f, theta).numpy()
    m = np.linalg.matrix_power(np.eye(4) - lr * a.numpy(), n)
    np.testing.assert_allclose(grad, m.T @ (fast['theta'].numpy() - target.numpy()), rtol=1e-10)
    assert losses.shape == (n,)
    # The loop really descends.
    assert float(loss_fn(fast)) < float(losses[0])


def test_while_loop_inner_loop_equals_unrolled():
    model = tiny_maml(n_steps=3)
    xs, ys, _, _ = task()
    unrolled, l1 = model.adapt(xs, ys, training=True)[:2]
    looped, l2 = model.adapt(xs, ys, training=False)[:2]
    for k in unrolled:
        np.testing.assert_allclose(unrolled[k].numpy(), looped[k].numpy(), rtol=1e-10)
    np.testing.assert_allclose(l1.numpy(), l2.numpy(), rtol=1e-10)


def test_meta_sgd_alphas_get_gradients_and_start_as_maml():
    episode = task()
    msgd = tiny_maml(meta_sgd=True)
    plain = tiny_maml(meta_sgd=False)
    # Same seed, same theta; alpha initialised to inner_lr -> same loss as MAML.
    loss_msgd, grads = meta_grad(msgd, episode)
    loss_plain, _ = meta_grad(plain, episode)
    assert float(loss_msgd) == pytest.approx(float(loss_plain), rel=1e-12)
    n_theta = len(msgd.net.theta) + len(msgd.net.bn_beta)
    alpha_grads = grads[n_theta:]
    assert len(alpha_grads) == len(msgd.alpha) == 10
    assert msgd.alpha['dense_w'].shape == (msgd.net.feature_dim, 1)
    for k, g in zip(msgd.alpha, alpha_grads):
        assert g is not None, k
        if not k.endswith('_b') or k == 'dense_b':  # conv biases are cancelled by batch norm
            assert float(tf.reduce_max(tf.abs(g))) > 0, k


def test_maml_sum_loss_is_way_times_mean():
    model = tiny_maml()
    xs, ys, _, _ = task()
    mean = model.inner_loss(model.net.theta, xs, ys)
    model.inner_loss_kind = 'maml_sum'
    summed = model.inner_loss(model.net.theta, xs, ys)
    assert float(summed) == pytest.approx(3 * float(mean), rel=1e-12)


def test_adam_matches_tf1_adam_optimizer():
    rng = np.random.default_rng(0)
    init = rng.standard_normal((3, 2)).astype(np.float32)
    ours, ref = tf.Variable(init), tf.Variable(init)
    opt = optim.Adam([ours], learning_rate=0.01)
    ref_opt = tf.compat.v1.train.AdamOptimizer(0.01)
    for _ in range(5):
        g = tf.constant(rng.standard_normal((3, 2)).astype(np.float32))
        opt.apply([g])
        ref_opt.apply_gradients([(g, ref)])
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-6, atol=1e-7)


def test_clip_by_value():
    g = [tf.constant([-5., 0.5, 7.]), None]
    clipped = optim.clip_by_value(g, 3.)
    np.testing.assert_array_equal(clipped[0].numpy(), [-3., 0.5, 3.])
    assert clipped[1] is None
    assert optim.clip_by_value(g, 0)[0] is g[0]
