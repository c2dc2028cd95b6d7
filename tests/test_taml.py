"""Bayesian TAML (model/taml.py): the inference network, the balancing variables' math,
padding, the KL, and equivalence with MAML / Meta-SGD when the switches are off."""
import numpy as np
import pytest
import tensorflow as tf

from model import nets
from model.maml import MAML
from model.taml import TAML, InferenceNetwork, kl_to_standard_normal

WAY = 3
SHAPE = (16, 16, 1)


def make_taml(seed=0, dtype=tf.float32, channels=4, **switches):
    tf.random.set_seed(seed)
    net = nets.Conv4(WAY, channels, SHAPE, 'metadrop', zero_head=True, dtype=dtype)
    return TAML(net, max_shot=6, inner_lr=0.4, n_steps=2, n_test_steps=3, **switches)


def episode(seed=0, shots=(1, 4, 2), query=2, pad=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    ys = np.concatenate([np.full(s, c) for c, s in enumerate(shots)] + [np.full(pad, -1)])
    xs = rng.random((len(ys), *SHAPE)).astype(dtype)
    xs[ys < 0] = 0.
    yq = np.repeat(np.arange(WAY), query)
    xq = np.random.default_rng(seed + 1).random((len(yq), *SHAPE)).astype(dtype)
    return xs, ys.astype(np.int32), xq, yq.astype(np.int32)


def fixed_noise(model, value=0.3):
    model.noise = lambda shape, dtype: tf.fill(shape, tf.constant(value, dtype))


ALL_ON = dict(alpha_on=True, omega_on=True, gamma_on=True, z_on=True)


def test_inference_network_shapes_and_parameter_count():
    model = make_taml(**ALL_ON)
    xs, ys, _, _ = episode()
    post = model.encoder(xs, ys)
    assert {k: (tuple(m.shape), tuple(s.shape)) for k, (m, s) in post.items()} == {
        'omega': ((WAY,), (WAY,)), 'gamma': ((5,), (5,)), 'z': ((2 * 4 * 4,), (2 * 4 * 4,))}
    assert all(float(tf.reduce_min(s)) > 0 for _, s in post.values())
    # conv 10 + 10, dense 64, interact 3->4 twice, 256->128->32, heads 64 + 2 outputs each.
    flat = 4 * 4 * 10
    expected = (9 * 1 * 10 + 10) + (9 * 10 * 10 + 10) + (flat * 64 + 64) + 2 * (3 * 4 + 4) + \
        (256 * 128 + 128) + (128 * 32 + 32) + \
        (256 * 64 + 64) + 2 * (64 + 1) + 2 * (128 * 64 + 64) + 2 * (64 * 5 + 5) + \
        2 * (64 * 32 + 32)
    assert sum(int(np.prod(v.shape)) for v in model.encoder.trainable_variables) == expected


def test_l2b_cifar_encoder_and_z_sizes():
    tf.random.set_seed(0)
    net = nets.Conv4(5, 32, (32, 32, 3), 'metadrop', zero_head=True)
    model = TAML(net, z_on=True)
    assert model.n_z == 256                       # 2 * n_channel * 4, as l2b
    assert model.encoder.dense1.input_size == 640  # 8 * 8 * 10 after two pools of 32x32
    assert net.feature_dim == 128                  # 2 * 2 * 32


def test_inference_network_is_invariant_to_the_order_of_examples():
    model = make_taml(**ALL_ON)
    xs, ys, _, _ = episode(shots=(2, 5, 3))
    perm = np.random.default_rng(1).permutation(len(ys))
    a = model.encoder(xs, ys)
    b = model.encoder(xs[perm], ys[perm])
    for k in a:
        for u, v in zip(a[k], b[k]):
            np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-5, atol=1e-6)
    # ... but not to moving an example to another class.
    ys2 = ys.copy()
    ys2[0], ys2[-1] = ys[-1], ys[0]
    c = model.encoder(xs, ys2)
    diff = np.abs(a['omega'][0].numpy() - c['omega'][0].numpy()).max()
    assert diff > 1e-4 * np.abs(a['omega'][0].numpy()).max()


def test_set_size_statistic_is_l2bs_normalisation():
    enc = InferenceNetwork(WAY, max_shot=50, n_z=8)
    np.testing.assert_allclose(enc.set_size(tf.constant([1., 50., 25.])).numpy(),
                               [0., 1., 24. / 49.])


@pytest.mark.parametrize('training', [True, False])
def test_padded_rows_change_nothing(training):
    model = make_taml(**ALL_ON)
    fixed_noise(model)
    plain = episode(pad=0)
    padded = episode(pad=5)
    np.testing.assert_array_equal(plain[0], padded[0][:7])

    def run(ep):
        with tf.GradientTape() as tape:
            loss = model.task_loss(*ep, training=training)[0]
        return loss, tape.gradient(loss, model.outer_variables)

    (la, ga), (lb, gb) = run(plain), run(padded)
    np.testing.assert_allclose(la.numpy(), lb.numpy(), rtol=1e-6)
    for u, v in zip(ga, gb):
        if u is not None:
            np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-4, atol=1e-7)


def test_l2b_padding_reproduces_the_leak_into_batch_norm_and_n():
    model = make_taml(**ALL_ON)
    fixed_noise(model)
    model.l2b_padding = True
    plain = model.task_loss(*episode(pad=0))[0]
    padded = model.task_loss(*episode(pad=5))[0]
    assert abs(float(plain) - float(padded)) > 1e-4


def test_all_switches_off_is_maml_and_alpha_alone_is_meta_sgd():
    for alpha_on in (False, True):
        taml = make_taml(alpha_on=alpha_on, dtype=tf.float64)
        tf.random.set_seed(5)
        net = nets.Conv4(WAY, 4, SHAPE, 'metadrop', zero_head=True, dtype=tf.float64)
        maml = MAML(net, inner_lr=0.4, n_steps=2, n_test_steps=3, meta_sgd=alpha_on,
                    alpha_init=0.01)
        assert taml.encoder is None and len(maml.outer_variables) == len(taml.outer_variables)
        for a, b in zip(maml.outer_variables, taml.outer_variables):
            assert a.shape == b.shape
            a.assign(b + tf.random.normal(b.shape, stddev=0.01, dtype=b.dtype)
                     if 'alpha' in a.name else b)
            b.assign(a)
        ep = episode(shots=(3, 3, 3), dtype=np.float64)
        with tf.GradientTape(persistent=True) as tape:
            lt, at, extra = taml.task_loss(*ep)
            lm, am = maml.task_loss(*ep)
        np.testing.assert_allclose(lt.numpy(), lm.numpy(), rtol=1e-12)
        assert float(extra['kl']) == 0. and float(at) == float(am)
        for g, h in zip(tape.gradient(lt, taml.outer_variables),
                        tape.gradient(lm, maml.outer_variables)):
            np.testing.assert_allclose(g.numpy(), h.numpy(), rtol=1e-9, atol=1e-12)
        # Test time (while loop, n_test_steps) too.
        ct, _, acc_t = taml.evaluate(*ep, n_mc=0)
        cm, acc_m = maml.task_loss(*ep, training=False)
        assert float(acc_t) == float(acc_m)
        assert float(ct) == pytest.approx(float(cm), rel=1e-9)


def test_kl_matches_numerical_integration():
    mu = np.array([0.3, -1.2, 0.])
    sigma = np.array([0.5, 1.7, 1.])
    x = np.linspace(-15, 15, 200001)
    total = 0.
    for m, s in zip(mu, sigma):
        q = np.exp(-0.5 * ((x - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))
        p = np.exp(-0.5 * x ** 2) / np.sqrt(2 * np.pi)
        total += np.trapezoid(q * (np.log(q + 1e-300) - np.log(p)), x)
    assert float(kl_to_standard_normal(tf.constant(mu), tf.constant(sigma))) == \
        pytest.approx(total, rel=1e-6)


def test_task_kl_is_scaled_by_support_plus_query_size():
    model = make_taml(omega_on=True, gamma_on=True)
    xs, ys, xq, yq = episode(pad=3)
    post = model.posterior(xs, ys)
    kl = sum(float(kl_to_standard_normal(m, s)) for m, s in post.values())
    _, _, extra = model.task_loss(xs, ys, xq, yq)
    assert float(extra['kl']) == pytest.approx(kl / (7 + len(yq)), rel=1e-5)
    model.l2b_padding = True   # l2b's N counts the padded rows
    _, _, extra = model.task_loss(xs, ys, xq, yq)
    assert float(extra['kl']) == pytest.approx(kl / (10 + len(yq)), rel=1e-5)


def test_inner_loss_is_the_omega_weighted_per_class_sum():
    model = make_taml()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, WAY)).astype(np.float32)
    y = np.array([0, 1, 1, 1, 2, 2, -1, -1], np.int32)
    omega = np.array([0.5, -1., 2.], np.float32)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ce = np.array([-logp[i, c] if c >= 0 else 0. for i, c in enumerate(y)])
    n = 6.
    per_class = np.array([WAY / n * ce[y == c].sum() for c in range(WAY)])
    w = np.exp(omega) / np.exp(omega).sum()
    assert float(model.weighted_ce(logits, y, n, omega)) == pytest.approx((w * per_class).sum(),
                                                                          rel=1e-5)
    # Without omega: mean over classes = sum of CE / N (MAML's mean CE on real rows).
    assert float(model.weighted_ce(logits, y, n)) == pytest.approx(ce.sum() / n, rel=1e-5)


def test_z_modulates_conv_weights_per_output_channel_and_shifts_biases():
    model = make_taml(z_on=True)
    z = tf.constant(np.random.default_rng(0).normal(size=model.n_z), tf.float32)
    start = model.net.initial_params()
    out = model.modulate(start, z)
    zw, zb = np.split(z.numpy(), 2)
    for l in range(4):
        np.testing.assert_allclose(out[f'conv{l + 1}_w'].numpy(),
                                   start[f'conv{l + 1}_w'].numpy() * (1 + zw[4 * l:4 * l + 4]),
                                   rtol=1e-6)
        np.testing.assert_allclose(out[f'conv{l + 1}_b'].numpy(),
                                   start[f'conv{l + 1}_b'].numpy() + zb[4 * l:4 * l + 4])
    np.testing.assert_array_equal(out['dense_w'].numpy(), 0.)   # z never touches the head


def test_gamma_multiplies_each_layers_step():
    model = make_taml(gamma_on=True)
    gamma = np.array([0.1, -0.2, 0.3, -0.4, 0.7], np.float32)
    scale = model.layer_scale(tf.constant(gamma))
    for l in range(4):
        for k in ('w', 'b'):
            assert float(scale[f'conv{l + 1}_{k}']) == pytest.approx(np.exp(gamma[l]))
    assert float(scale['dense_w']) == float(scale['dense_b']) == pytest.approx(np.exp(0.7))
    # One inner step from the zero head: only the head moves, exp(gamma_5) times as far.
    xs, ys, xq, yq = episode()
    model.n_steps = 1
    model.posterior = lambda xs, ys: {'gamma': (tf.constant(gamma), tf.ones([5]))}
    fast_gamma = model.adapt_task(xs, ys, training=True, sample=False)[0]
    model.posterior = lambda xs, ys: {}
    fast_plain = model.adapt_task(xs, ys, training=True, sample=False)[0]
    for k in ('dense_w', 'dense_b'):
        np.testing.assert_allclose(fast_gamma[k].numpy(), np.exp(0.7) * fast_plain[k].numpy(),
                                   rtol=1e-5, atol=1e-8)
    # l2b's zero head makes every conv gradient exactly zero at the first step.
    for k in fast_plain:
        if k.startswith('conv'):
            np.testing.assert_array_equal(fast_plain[k].numpy(), model.net.theta[k].numpy())


def test_monte_carlo_passes_average_the_softmax_outputs():
    model = make_taml(**ALL_ON)
    ep = episode()
    fixed_noise(model, 0.)
    mean = model.evaluate(*ep, n_mc=0)
    mc = model.evaluate(*ep, n_mc=3)    # zero noise: every pass is the mean pass
    np.testing.assert_allclose([t.numpy() for t in mean], [t.numpy() for t in mc], rtol=1e-5)
    draws = iter([0.5] * 3 + [-0.5] * 3)   # omega, gamma, z of each pass
    model.noise = lambda shape, dtype: tf.fill(shape, tf.constant(next(draws), dtype))
    cent, _, acc = model.evaluate(*ep, n_mc=2)
    probs = []
    for value in (0.5, -0.5):
        fixed_noise(model, value)
        fast = model.adapt_task(ep[0], ep[1], training=False, sample=True).params
        probs.append(tf.nn.softmax(model.net(ep[2], fast)).numpy())
    avg = np.mean(probs, 0)
    assert float(cent) == pytest.approx(-np.mean(np.log(avg[np.arange(len(ep[3])), ep[3]])),
                                        rel=1e-5)
    assert float(acc) == pytest.approx(np.mean(avg.argmax(1) == ep[3]))


def test_meta_gradient_matches_finite_differences():
    model = make_taml(dtype=tf.float64, channels=2, **ALL_ON)
    fixed_noise(model, 0.2)
    ep = episode(shots=(1, 3, 2), pad=2, dtype=np.float64)
    ep = (ep[0], ep[1], ep[2], ep[3])
    picks = {'omega': model.encoder.heads['omega'][1].b,
             'gamma': model.encoder.heads['gamma'][2].w,
             'z': model.encoder.heads['z'][1].w,
             'conv1': model.encoder.conv1.w,
             'alpha': model.alpha['conv2_w'],
             'theta': model.net.theta['conv3_w'],
             'beta': model.net.bn_beta['conv2']}

    def loss():
        return model.task_loss(*ep)[0]

    with tf.GradientTape() as tape:
        value = loss()
    grads = tape.gradient(value, list(picks.values()))
    rng = np.random.default_rng(0)
    for (name, var), g in zip(picks.items(), grads):
        flat = var.numpy().reshape(-1)
        for idx in rng.choice(flat.size, min(2, flat.size), replace=False):
            eps = 1e-5
            orig = var.numpy()
            bumped = orig.copy().reshape(-1)
            bumped[idx] += eps
            var.assign(bumped.reshape(orig.shape))
            up = float(loss())
            bumped[idx] -= 2 * eps
            var.assign(bumped.reshape(orig.shape))
            down = float(loss())
            var.assign(orig)
            fd = (up - down) / (2 * eps)
            assert g.numpy().reshape(-1)[idx] == pytest.approx(fd, rel=1e-4, abs=1e-8), name
