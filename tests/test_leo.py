"""LEO (model/leo.py) in float64, as leo model_test.py checks it and more: variables and
initialisers, the deterministic forward and both inner loops against a numpy
re-implementation with hand-derived gradients (sum over support examples), the meta-gradient
against finite differences (meta-test and meta-train modes), sampling, KL and penalties on
known inputs, that adaptation lowers the support loss, and the NaN guard and per-tensor
clipping of the outer update."""
import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from model import leo as leo_lib
from model import optim

N, K, D, L = 3, 2, 6, 3


def make(way=N, shot=K, dim=D, latents=L, seed=0, **kw):
    tf.random.set_seed(seed)
    opts = dict(num_latents=latents, inner_unroll_length=3, finetuning_unroll_length=4,
                inner_lr_init=0.1, finetuning_lr_init=0.2, dropout_rate=0.3, kl_weight=0.01,
                encoder_penalty_weight=0.01, l2_penalty_weight=0.01,
                orthogonality_penalty_weight=0.01)
    opts.update(kw)
    return leo_lib.LEO(way, shot, dim, **opts)


def problem(t=2, way=N, shot=K, query=4, dim=D, seed=1):
    """A metabatch as the samplers give it: class-major, label = class position."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(t, way, 1, dim))
    xs = (centres + 0.5 * rng.normal(size=(t, way, shot, dim))).reshape(t, way * shot, dim)
    xq = (centres + 0.5 * rng.normal(size=(t, way, query, dim))).reshape(t, way * query, dim)
    ys = np.tile(np.repeat(np.arange(way), shot), (t, 1)).astype(np.int32)
    yq = np.tile(np.repeat(np.arange(way), query), (t, 1)).astype(np.int32)
    return xs, ys, xq, yq


def randomise_step_sizes(model, seed=3):
    rng = np.random.default_rng(seed)
    model.inner_lr.assign(rng.uniform(0.05, 0.3, model.inner_lr.shape))
    model.finetuning_lr.assign(rng.uniform(0.05, 0.3, model.finetuning_lr.shape))


# ---- numpy reference of the deterministic (meta-test) forward ------------------------------

def softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ce(logits, labels, way):
    return -np.log(softmax(logits))[..., :][np.eye(way, dtype=bool)[labels]].reshape(labels.shape)


def reference(model, xs, ys, xq, yq):
    """(per-episode loss, accuracy) of one episode, meta-test mode, in numpy."""
    way, shot, dim = model.way, model.shot, model.embedding_dim
    we = model.encoder_linear.w.numpy()
    w0, w1, w2 = [layer.w.numpy() for layer in model.relation_mlp._layers]
    wd = model.decoder_linear.w.numpy()
    alpha, beta = model.inner_lr.numpy()[0, 0], model.finetuning_lr.numpy()[0, 0]
    x = xs.reshape(way, shot, dim).astype(np.float64)
    y = ys.reshape(way, shot)
    codes = (x @ we).reshape(way * shot, -1)
    pairs = np.concatenate([np.repeat(codes[:, None], way * shot, 1),
                            np.repeat(codes[None], way * shot, 0)], -1)
    h = np.maximum(pairs @ w0, 0)
    h = np.maximum(h @ w1, 0)
    rn = (h @ w2).mean(1).reshape(way, shot, -1)
    z = np.repeat(rn.mean(1, keepdims=True), shot, 1)[..., :model.num_latents]
    dec = wd[:, :dim]   # the means half of the decoder

    def grad_wbar(wbar):
        """d(sum of support CE)/d(mean weight per class) [way, dim]."""
        p = softmax(x @ wbar.T)                       # [way, shot, classes]
        err = p - np.eye(way)[y]
        return np.einsum('nkc,nkd->cd', err, x)

    for _ in range(model.inner_unroll_length):
        g_w = grad_wbar((z @ dec).mean(1)) / shot     # each of the K copies gets 1/K
        z = z - alpha * (g_w[:, None, :] @ dec.T)
    w = z @ dec
    for _ in range(model.finetuning_unroll_length):
        w = w - beta * (grad_wbar(w.mean(1)) / shot)[:, None, :]
    logits = xq.reshape(way, -1, dim) @ w.mean(1).T
    yq = yq.reshape(way, -1)
    cent = ce(logits, yq, way).mean()
    l2 = model.l2_penalty_weight * sum(0.5 * (m.numpy() ** 2).sum() for m in model.weight_matrices)
    norms = np.linalg.norm(wd, axis=1, keepdims=True) + 1e-32
    corr = wd @ wd.T / (norms @ norms.T)
    ortho = model.orthogonality_penalty_weight * ((corr - np.eye(len(wd))) ** 2).mean()
    acc = (logits.argmax(-1) == yq).mean()
    return cent + l2 + ortho, acc


def test_variables_shapes_and_initialisers():
    model = leo_lib.LEO(5, 1, 640)
    shapes = [tuple(v.shape) for v in model.outer_variables]
    assert shapes == [(640, 64), (128, 128), (128, 128), (128, 128), (64, 1280), (1, 1, 64),
                      (1, 1, 640)]
    assert sum(int(np.prod(s)) for s in shapes) == 172736
    assert len(model.trainable_variables) == 7
    assert {v.ref() for v in model.trainable_variables} == {v.ref() for v in model.outer_variables}
    assert all(v.dtype == tf.float64 for v in model.outer_variables)
    for w, (fan_in, fan_out) in zip(model.weight_matrices, [(640, 64)] + [(128, 128)] * 3 +
                                    [(64, 1280)]):
        limit = math.sqrt(6. / (fan_in + fan_out))   # Glorot uniform
        w = w.numpy()
        assert np.abs(w).max() <= limit
        assert np.std(w) == pytest.approx(limit / math.sqrt(3), rel=0.05)
    assert np.all(model.inner_lr.numpy() == 1.0) and np.all(model.finetuning_lr.numpy() == 0.001)
    assert model.stddev_offset == pytest.approx(math.sqrt(2. / 645))
    assert leo_lib.LEO(5, 1, 17, use_64bits_dtype=False).encoder_linear.w.dtype == tf.float32


def test_deterministic_forward_and_inner_loops_match_numpy():
    model = make()
    randomise_step_sizes(model)
    xs, ys, xq, yq = problem(t=3)
    loss, acc, parts = model.episode_losses(xs, ys, xq, yq, training=False)
    for t in range(3):
        ref_loss, ref_acc = reference(model, xs[t], ys[t], xq[t], yq[t])
        assert loss[t].numpy() == pytest.approx(ref_loss, rel=1e-10)
        assert acc[t].numpy() == pytest.approx(ref_acc)
    assert np.all(parts['kl'].numpy() == 0) and np.all(parts['encoder_penalty'].numpy() == 0)
    # Batching does not mix episodes: each alone gives the same.
    single = [model.task_loss(xs[t], ys[t], xq[t], yq[t], training=False)[0].numpy()
              for t in range(3)]
    np.testing.assert_allclose(single, loss.numpy(), rtol=1e-12)


def test_closed_form_latent_step():
    """One latent step on a 1-way problem by hand: z1 = z0 - alpha * dsum(CE)/dz0, with
    2-way logits so the CE is not constant."""
    model = make(way=2, shot=1, dim=2, latents=1, inner_unroll_length=1,
                 finetuning_unroll_length=0, l2_penalty_weight=0., orthogonality_penalty_weight=0.)
    model.decoder_linear.w.assign([[1., 0., 0., 0.]])   # W_c = z_c * e_1 (means half)
    x = tf.constant([[[1., 0.]], [[0., 1.]]], tf.float64)[None]     # [1, 2, 1, 2]
    y = tf.constant([[[0], [1]]])
    z0 = tf.constant([[[[0.5]], [[-0.5]]]], tf.float64)            # [1, 2, 1, 1]
    z1, _ = model.leo_inner_loop(x, y, z0, training=False)
    # logits of example 0 (x = e1): [z_0, z_1]; of example 1 (x = e2): [0, 0]
    p0 = softmax(np.array([0.5, -0.5]))
    g = np.array([p0[0] - 1 + 0.5, p0[1] + 0.5 - 1])   # dsum CE/dz_c: example 0 then 1
    g = np.array([p0[0] - 1, p0[1]])                   # example 1 has x_1 = 0: no gradient
    expected = np.array([0.5, -0.5]) - 0.1 * g
    np.testing.assert_allclose(z1.numpy().ravel(), expected, rtol=1e-12)


def finite_difference_check(model, loss_fn, n_entries=3, eps=1e-6, seed=0):
    rng = np.random.default_rng(seed)
    with tf.GradientTape() as tape:
        loss = loss_fn()
    grads = tape.gradient(loss, model.outer_variables)
    for var, grad in zip(model.outer_variables, grads):
        assert grad is not None, var.name
        flat = var.numpy().ravel()
        for idx in rng.choice(flat.size, min(n_entries, flat.size), replace=False):
            values = []
            for sign in (1, -1):
                pert = flat.copy()
                pert[idx] += sign * eps
                var.assign(pert.reshape(var.shape))
                values.append(float(loss_fn()))
            var.assign(flat.reshape(var.shape))
            numeric = (values[0] - values[1]) / (2 * eps)
            analytic = grad.numpy().ravel()[idx]
            assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-8), (var.name, idx)


def test_meta_gradient_finite_differences_meta_test_mode():
    model = make()
    randomise_step_sizes(model)
    xs, ys, xq, yq = problem()
    finite_difference_check(
        model, lambda: tf.reduce_mean(model.episode_losses(xs, ys, xq, yq, False)[0]))


def test_meta_gradient_finite_differences_meta_train_mode():
    """Second order through sampling, dropout, both loops and the KL: the noise is replayed
    by resetting the seed before every evaluation (eager mode). The encoder penalty is off
    here: its stop_gradient makes its gradient differ from the finite difference by design
    (next test)."""
    model = make(kl_weight=0.3, encoder_penalty_weight=0.)
    randomise_step_sizes(model)
    xs, ys, xq, yq = problem()

    def loss_fn():
        tf.random.set_seed(7)
        return model.metabatch_loss(xs, ys, xq, yq, training=True)[0]

    finite_difference_check(model, loss_fn)


def test_encoder_penalty_gradient_stops_at_the_adapted_latents():
    """d mean((z_0 - sg(z_T))^2) / d theta is the finite difference of mean((z_0(theta) -
    c)^2) with c = z_T held at its value: it reaches the encoder and relation network
    through z_0 only, and nothing else."""
    model = make(encoder_penalty_weight=1.)
    randomise_step_sizes(model)
    xs, ys, xq, yq = problem()
    x, y = model._class_major(xs, ys, model.shot)

    def initial_latents():
        tf.random.set_seed(7)   # the same first random ops as episode_losses: dropout, draw
        codes = model.average_codes_per_class(model.relation_network(model.encoder(x, True)))
        return model.possibly_sample(codes, True)[0]

    with tf.GradientTape() as tape:
        tf.random.set_seed(7)
        penalty = tf.reduce_sum(model.episode_losses(xs, ys, xq, yq, True)[2]['encoder_penalty'])
    grads = tape.gradient(penalty, model.outer_variables)
    latents = initial_latents()
    adapted, _ = model.leo_inner_loop(x, y, latents, True)
    frozen = tf.constant(adapted.numpy())

    def with_frozen_target():
        return tf.reduce_sum(tf.reduce_mean(tf.square(initial_latents() - frozen), [1, 2, 3]))

    assert float(with_frozen_target()) == pytest.approx(float(penalty), rel=1e-12)
    assert float(penalty) > 1e-3
    reached = model.weight_matrices[:4]   # encoder and the relation network's three layers
    for var, grad in zip(model.outer_variables, grads):
        if any(var is r for r in reached):
            continue
        assert grad is None or not np.any(grad.numpy()), var.name
    rng = np.random.default_rng(0)
    for var, grad in zip(reached, grads[:4]):
        flat = var.numpy().ravel()
        for idx in rng.choice(flat.size, 3, replace=False):
            values = []
            for sign in (1, -1):
                pert = flat.copy()
                pert[idx] += sign * 1e-6
                var.assign(pert.reshape(var.shape))
                values.append(float(with_frozen_target()))
            var.assign(flat.reshape(var.shape))
            numeric = (values[0] - values[1]) / 2e-6
            assert grad.numpy().ravel()[idx] == pytest.approx(numeric, rel=1e-4, abs=1e-8)


def test_gradients_reach_every_variable():
    model = make()
    xs, ys, xq, yq = problem()
    with tf.GradientTape() as tape:
        loss = model.metabatch_loss(xs, ys, xq, yq, training=True)[0]
    grads = tape.gradient(loss, model.outer_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    # None flows into the inputs' side: the embeddings are data, not variables.
    assert len(model.trainable_variables) == 7


def test_possibly_sample_sigma_floor_and_kl():
    model = make()
    rng = np.random.default_rng(0)
    means = rng.normal(size=(1, 2, 3, 4))
    u = np.array([-1., 0., 0.3, 1.])[None, None, None].repeat(2, 1).repeat(3, 2)
    params = tf.constant(np.concatenate([means, u], -1))
    test_z, test_kl = model.possibly_sample(params, training=False)
    np.testing.assert_array_equal(test_z.numpy(), means)
    assert test_kl.numpy().tolist() == [0.]
    tf.random.set_seed(1)
    z1, kl1 = model.possibly_sample(params, training=True)
    z2, _ = model.possibly_sample(params, training=True)
    assert np.abs(z1.numpy() - z2.numpy()).sum() > 1e-3
    sigma = np.maximum(np.exp(u) - 1., 1e-10)
    assert sigma[..., 0].max() == 1e-10 and sigma[..., 1].max() == 1e-10   # floored
    z = z1.numpy()
    # Independent draws per (class, example): the copies of a class differ where sigma > 0.
    assert np.all(np.abs(z[0, :, 0, 2:] - z[0, :, 1, 2:]) > 0)
    expected = (stats.norm.logpdf(z, means, sigma) - stats.norm.logpdf(z)).mean()
    assert kl1.numpy()[0] == pytest.approx(expected, rel=1e-6)
    # The classifier weights' offset sqrt(2 / (N + D)) moves sigma off the floor at u = 0.
    draws = tf.stack([model.possibly_sample(tf.zeros([1, 1, 1, 2000], tf.float64), True,
                                            model.stddev_offset)[0] for _ in range(5)])
    assert np.std(draws.numpy()) == pytest.approx(model.stddev_offset, rel=0.05)


def test_penalties_on_known_inputs():
    model = make(latents=2, dim=3, l2_penalty_weight=0.5, orthogonality_penalty_weight=2.)
    wd = np.array([[1., 0., 0., 1., 0., 0.], [1., 1., 0., 0., 0., 0.]])
    model.decoder_linear.w.assign(wd)
    # rows: |r1| = |r2| = sqrt 2, <r1, r2> = 1 -> C = [[1, .5], [.5, 1]] -> mean((C-I)^2) = .125
    assert model.orthogonality_penalty().numpy() == pytest.approx(2. * 0.125)
    model.decoder_linear.w.assign(np.eye(2, 6))
    assert model.orthogonality_penalty().numpy() == pytest.approx(0.)
    for w in model.weight_matrices:
        w.assign(np.ones(w.shape))
    total = sum(int(np.prod(w.shape)) for w in model.weight_matrices)
    assert model.l2_penalty().numpy() == pytest.approx(0.5 * 0.5 * total)
    model = make(dim=3)   # (all-ones weights overflow exp(u) in the forward)
    xs, ys, xq, yq = problem(dim=3)
    _, _, parts = model.episode_losses(xs, ys, xq, yq, training=True)
    assert np.all(parts['encoder_penalty'].numpy() > 1e-3)
    assert np.all(parts['kl'].numpy() != 0)
    _, _, parts = model.episode_losses(xs, ys, xq, yq, training=False)
    assert np.all(parts['encoder_penalty'].numpy() == 0) and np.all(parts['kl'].numpy() == 0)


def test_inner_loops_lower_the_support_loss():
    model = make(shot=3, inner_lr_init=1.0, finetuning_lr_init=0.5, inner_unroll_length=5,
                 finetuning_unroll_length=5)
    xs, ys, _, _ = problem(t=4, shot=3)
    x, y = model._class_major(xs, ys, model.shot)
    latents, _ = model.possibly_sample(model.average_codes_per_class(
        model.relation_network(model.encoder(x, False))), False)

    def support_loss(w):
        return float(tf.reduce_sum(model.loss_fn(model.predict(x, w, False), y)))

    before = support_loss(model.forward_decoder(latents, False))
    _, w_t = model.leo_inner_loop(x, y, latents, False)
    after_latent = support_loss(w_t)
    after_finetuning = support_loss(model.finetuning_inner_loop(x, y, w_t, False))
    assert after_latent < before - 1e-3
    assert after_finetuning < after_latent - 1e-3


def test_module_is_locked_to_its_shot():
    model = make()
    xs, ys, xq, yq = problem(shot=K + 1)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        model.episode_losses(xs, ys, xq, yq, training=False)


def test_float32_module_runs():
    model = make(use_64bits_dtype=False)
    xs, ys, xq, yq = problem()
    loss, acc, _ = model.metabatch_loss(xs.astype(np.float32), ys, xq.astype(np.float32), yq,
                                        training=True)
    assert loss.dtype == tf.float32 and np.isfinite(loss.numpy())


# ---- the outer update ------------------------------------------------------------------

def sgd_update(model, **kw):
    """The outer update with plain SGD (lr 1, no momentum): a variable moves by -gradient,
    so what the optimiser received can be read off."""
    opt = optim.SGD(model.outer_variables, 1.0, momentum=0.)
    return leo_lib.make_outer_update(model, opt, **kw)


def deltas(model, before):
    return [v.numpy() - b for v, b in zip(model.outer_variables, before)]


def test_per_tensor_clipping_by_value_then_norm():
    model = make()
    before = [v.numpy() for v in model.outer_variables]
    grads = [tf.fill(v.shape, tf.constant(5., tf.float64)) for v in model.outer_variables]
    grads[0] = tf.tensor_scatter_nd_update(tf.zeros(model.outer_variables[0].shape, tf.float64),
                                           [[0, 0]], [0.05])
    applied = sgd_update(model, gradient_threshold=0.1, gradient_norm_threshold=0.1)(
        tf.constant(1., tf.float64), grads)
    assert bool(applied)
    moved = deltas(model, before)
    # A single small entry is neither clipped by value nor by norm.
    assert moved[0][0, 0] == pytest.approx(-0.05) and np.count_nonzero(moved[0]) == 1
    for m in moved[1:]:   # 5 -> 0.1 each, then the tensor's norm -> 0.1
        assert np.linalg.norm(m) == pytest.approx(0.1)
        np.testing.assert_allclose(m, -0.1 / math.sqrt(m.size))


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_nan_guard_fixed(bad):
    model = make()
    before = [v.numpy() for v in model.outer_variables]
    grads = [tf.zeros(v.shape, tf.float64) for v in model.outer_variables]
    grads[2] = tf.fill(grads[2].shape, tf.constant(bad, tf.float64))
    applied = sgd_update(model, gradient_threshold=0., gradient_norm_threshold=0.)(
        tf.constant(1., tf.float64), grads)
    assert not bool(applied)
    moved = deltas(model, before)
    for m, b in zip(moved[:5], before[:5]):   # the intended gradient 1e-4 * W
        np.testing.assert_allclose(m, -1e-4 * b, rtol=1e-9)
    assert not moved[5].any() and not moved[6].any()   # step sizes untouched


def test_nan_guard_original_bug_and_inf():
    model = make()
    before = [v.numpy() for v in model.outer_variables]
    grads = [tf.zeros(v.shape, tf.float64) for v in model.outer_variables]
    loss = tf.constant(np.nan, tf.float64)
    applied = sgd_update(model, gradient_threshold=0., gradient_norm_threshold=0.,
                         original_nan_guard=True)(loss, grads)
    assert not bool(applied)
    for m, b in zip(deltas(model, before), before):   # the variable's own value, lrs too
        np.testing.assert_allclose(m, -b, rtol=1e-9)
    # The original checks NaN only: an Inf gradient goes through, clipped to the threshold.
    model = make()
    before = [v.numpy() for v in model.outer_variables]
    grads[0] = tf.fill(grads[0].shape, tf.constant(np.inf, tf.float64))
    applied = sgd_update(model, gradient_threshold=0.1, gradient_norm_threshold=0.,
                         original_nan_guard=True)(tf.constant(1., tf.float64), grads)
    assert bool(applied)
    np.testing.assert_allclose(deltas(model, before)[0], -0.1)


def test_compiled_train_step_with_adam_learns_a_metabatch():
    """The shared compiled step with LEO's update: the loss on a fixed metabatch falls."""
    from model import steps
    model = make(dropout_rate=0., kl_weight=1e-3, encoder_penalty_weight=1e-9,
                 l2_penalty_weight=1e-8, orthogonality_penalty_weight=1e-3)
    opt = optim.Adam(model.outer_variables, 1e-2)
    xs, ys, xq, yq = problem(t=2)
    spec = steps.episode_spec(2, N * K, N * 4, (D,))
    step = steps.make_train_step(model, opt, 0., spec, update=leo_lib.make_outer_update(
        model, opt, 0.1, 0.1))
    args = [tf.constant(a) for a in (xs.astype(np.float32), ys, xq.astype(np.float32), yq)]
    first = float(model.metabatch_loss(*args, training=False)[0])
    for _ in range(30):
        loss, acc, applied, extras = step(*args)
        assert bool(applied) and set(extras) == {'cent', 'kl'}
    assert float(model.metabatch_loss(*args, training=False)[0]) < first - 0.05
