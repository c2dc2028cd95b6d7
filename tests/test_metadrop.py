"""Meta-Dropout: the noise, the --maml switch, which variables train, the meta-gradient,
export, and an end-to-end run."""
import numpy as np
import pytest
import tensorflow as tf

from model import nets
from model.maml import MAML
from model.metadrop import MetaDropout


def small_net(way=3, n_channel=4, seed=0):
    tf.random.set_seed(seed)
    return nets.Conv4(way, n_channel, (28, 28, 1))


def copy_weights(src, dst):
    for a, b in zip(list(src.theta.values()) + list(src.bn_beta.values()),
                    list(dst.theta.values()) + list(dst.bn_beta.values())):
        b.assign(a)


def episode(way=3, shot=2, query=3, seed=0):
    rng = np.random.default_rng(seed)
    xs = tf.constant(rng.uniform(size=(way * shot, 28, 28, 1)), tf.float32)
    ys = tf.constant(np.repeat(np.arange(way), shot), tf.int32)
    xq = tf.constant(rng.uniform(size=(way * query, 28, 28, 1)), tf.float32)
    yq = tf.constant(np.repeat(np.arange(way), query), tf.int32)
    return xs, ys, xq, yq


def expected_softplus_normal(a):
    """E[softplus(z)], z ~ N(a, 1), by Gauss-Hermite quadrature."""
    t, w = np.polynomial.hermite_e.hermegauss(80)
    return float(np.sum(w * np.logaddexp(0.0, a + t)) / np.sqrt(2 * np.pi))


@pytest.mark.parametrize('a', [-2.0, 0.0, 1.5])
def test_conv_noise_is_softplus_of_normal_around_alpha(a):
    model = MetaDropout(small_net(), inner_lr=0.1)
    # alpha = a everywhere: zero phi kernel, bias a.
    model.phi['conv1_w'].assign(tf.zeros_like(model.phi['conv1_w']))
    model.phi['conb1_b'].assign(tf.fill(model.phi['conb1_b'].shape, a))
    h = tf.ones([50, 28, 28, 1])
    mu = tf.ones([50, 28, 28, 4])
    tf.random.set_seed(1)
    factor = model.noise_hook(sample=True)(h, mu, 1).numpy().ravel()
    # 156800 draws: the standard error of the mean is < 0.01.
    se = factor.std() / np.sqrt(factor.size)
    assert abs(factor.mean() - expected_softplus_normal(a)) < 5 * se
    assert abs(np.log(np.expm1(factor)).std() - 1.0) < 0.02   # z has unit scale
    # Not sampling still multiplies by softplus(alpha) (the original's query forward).
    det = model.noise_hook(sample=False)(h, mu, 1).numpy()
    np.testing.assert_allclose(det, np.log1p(np.exp(a)), rtol=1e-5)
    # --maml: no multiplication at all.
    assert MetaDropout(small_net(), maml=True).noise_hook(sample=True) is None


def test_dense_noise_shares_one_sigma_across_classes():
    model = MetaDropout(small_net(way=4), inner_lr=0.1)
    x = tf.constant(np.random.default_rng(0).uniform(size=(6, 28, 28, 1)), tf.float32)
    theta = {k: tf.convert_to_tensor(v) for k, v in model.net.theta.items()}
    # Only the dense noise: conv noise off by drawing zeros for the 4-D conv shapes.
    model.noise = lambda shape, dtype: (tf.zeros(shape, dtype) if shape.shape[0] == 4
                                        else tf.random.normal(shape, dtype=dtype))
    model.phi['dense_b'].assign([1.0])
    mean = model.predict(theta, x).numpy()
    draws = np.stack([model.forward(theta, x, sample=True).numpy() for _ in range(400)])
    feats = model.features(theta, x).numpy()
    sigma = np.log1p(np.exp(feats @ model.phi['dense_w'].numpy() + 1.0))  # [6, 1]
    np.testing.assert_allclose(draws.mean(0), mean, atol=4 * sigma.max() / np.sqrt(400) * 1.5)
    std = draws.std(0)                                                    # [6, 4]
    np.testing.assert_allclose(std, np.broadcast_to(sigma, std.shape), rtol=0.2)


def test_maml_switch_equals_plain_maml_on_the_same_weights_and_episode():
    net_a, net_b = small_net(seed=0), small_net(seed=5)
    copy_weights(net_a, net_b)
    plain = MAML(net_a, inner_lr=0.1, n_steps=2)
    switched = MetaDropout(net_b, inner_lr=0.1, n_steps=2, maml=True)
    xs, ys, xq, yq = episode()
    outs, grads = [], []
    for m in (plain, switched):
        with tf.GradientTape() as tape:
            loss, acc = m.task_loss(xs, ys, xq, yq, training=True)
        outs.append((loss.numpy(), acc.numpy()))
        grads.append([g.numpy() for g in tape.gradient(loss, m.outer_variables)])
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5)
    assert len(grads[0]) == len(grads[1])       # --maml trains no phi
    for g0, g1 in zip(*grads):
        np.testing.assert_allclose(g0, g1, rtol=1e-4, atol=1e-7)
    # Test-time adaptation too (the while-loop path).
    np.testing.assert_allclose(plain.task_loss(xs, ys, xq, yq, training=False),
                               switched.task_loss(xs, ys, xq, yq, training=False), rtol=1e-5)


def test_only_phi_changes_between_forwards_with_equal_theta():
    net_a, net_b = small_net(seed=0), small_net(seed=7)
    copy_weights(net_a, net_b)
    tf.random.set_seed(1)
    a = MetaDropout(net_a)
    tf.random.set_seed(2)
    b = MetaDropout(net_b)
    assert not np.allclose(a.phi['conv1_w'].numpy(), b.phi['conv1_w'].numpy())
    xs, _, xq, _ = episode()
    theta = {k: tf.convert_to_tensor(v) for k, v in net_a.theta.items()}
    # Deterministic query forward: repeatable, and it depends on phi (softplus(alpha)).
    np.testing.assert_array_equal(a.predict(theta, xq), a.predict(theta, xq))
    assert not np.allclose(a.predict(theta, xq), b.predict(theta, xq))
    # Same phi and theta, fixed noise: identical; sampled noise: different.
    for v, w in zip(a.phi.values(), b.phi.values()):
        w.assign(v)
    np.testing.assert_allclose(a.predict(theta, xq), b.predict(theta, xq), rtol=1e-6)
    assert not np.allclose(a.forward(theta, xs, True), a.forward(theta, xs, True))
    # Under --maml phi has no effect at all.
    c = MetaDropout(net_a, maml=True)
    np.testing.assert_allclose(c.predict(theta, xq), net_a(xq, theta), rtol=1e-6)


def test_trained_variables_and_phi_gradients():
    model = MetaDropout(small_net(), inner_lr=0.1, n_steps=2)
    n_theta = len(model.net.theta) + len(model.net.bn_beta)
    assert len(model.outer_variables) == n_theta + len(model.phi)
    assert len(MetaDropout(small_net(), maml=True).outer_variables) == n_theta
    # The misspelled bias names of the original (checkpoint compatibility).
    assert list(model.phi) == ['conv1_w', 'conb1_b', 'conv2_w', 'conb2_b', 'conv3_w',
                               'conb3_b', 'conv4_w', 'conb4_b', 'dense_w', 'dense_b']
    assert model.phi['dense_w'].shape == (model.net.feature_dim, 1)
    xs, ys, xq, yq = episode()
    with tf.GradientTape() as tape:
        loss, _ = model.task_loss(xs, ys, xq, yq, training=True)
    grads = dict(zip([v.name for v in model.outer_variables],
                     tape.gradient(loss, model.outer_variables)))
    for k, v in model.phi.items():
        g = [g for n, g in grads.items() if n == v.name][0]
        assert g is not None and np.any(g.numpy() != 0), k  # every phi tensor learns


def test_phi_dense_learns_only_through_the_inner_loop():
    model = MetaDropout(small_net(), inner_lr=0.1, n_steps=1)
    _, _, xq, yq = episode()
    theta = {k: tf.convert_to_tensor(v) for k, v in model.net.theta.items()}
    with tf.GradientTape() as tape:
        loss = model.support_ce(model.predict(theta, xq), yq)
    g = tape.gradient(loss, [model.phi['dense_w'], model.phi['conv1_w']])
    assert g[0] is None                        # the query path has no dense noise
    assert np.any(g[1].numpy() != 0)           # but it scales the convs by softplus(alpha)


def test_meta_gradient_matches_finite_differences_with_fixed_noise():
    tf.keras.backend.set_floatx('float64')
    try:
        tf.random.set_seed(3)
        net = nets.Conv4(2, 3, (16, 16, 1), dtype=tf.float64)
        model = MetaDropout(net, inner_lr=0.3, n_steps=2)
        rng = np.random.default_rng(0)
        # One fixed noise tensor per call (cycled), so the loss is a smooth function.
        bank = [rng.standard_normal(64 * 16 * 16 * 3) for _ in range(64)]
        calls = {'i': 0}

        def noise(shape, dtype):
            n = int(np.prod(shape.numpy()))
            out = tf.constant(bank[calls['i'] % len(bank)][:n].reshape(shape.numpy()), dtype)
            calls['i'] += 1
            return out

        model.noise = noise
        xs = tf.constant(rng.uniform(size=(4, 16, 16, 1)))
        ys = tf.constant([0, 0, 1, 1], tf.int32)
        xq = tf.constant(rng.uniform(size=(6, 16, 16, 1)))
        yq = tf.constant([0, 0, 0, 1, 1, 1], tf.int32)

        def loss():
            calls['i'] = 0
            return model.task_loss(xs, ys, xq, yq, training=True)[0]

        with tf.GradientTape() as tape:
            value = loss()
        variables = [model.phi['conv2_w'], model.phi['dense_w'], model.net.theta['conv1_w'],
                     model.phi['conb3_b']]
        grads = tape.gradient(value, variables)
        eps = 1e-6
        for v, g in zip(variables, grads):
            flat = v.numpy().ravel()
            for j in rng.choice(flat.size, 3, replace=False):
                old = flat[j]
                for sign in (1, -1):
                    flat[j] = old + sign * eps
                    v.assign(flat.reshape(v.shape))
                    if sign == 1:
                        up = loss().numpy()
                    else:
                        down = loss().numpy()
                flat[j] = old
                v.assign(flat.reshape(v.shape))
                fd = (up - down) / (2 * eps)
                assert abs(fd - g.numpy().ravel()[j]) < 1e-6 + 1e-4 * abs(fd), (v.name, j)
    finally:
        tf.keras.backend.set_floatx('float32')


def test_mc_samples_at_test_average_the_inner_loss():
    model = MetaDropout(small_net(), n_test_mc_samp=16)
    xs, ys, _, _ = episode()
    theta = {k: tf.convert_to_tensor(v) for k, v in model.net.theta.items()}
    calls = {'n': 0}
    base = model.noise

    def counting(shape, dtype):
        calls['n'] += 1
        return base(shape, dtype)

    model.noise = counting
    model.inner_loss(theta, xs, ys, training=True)
    per_forward = calls['n']
    assert per_forward == 5                    # 4 conv layers + the dense layer
    calls['n'] = 0
    model.inner_loss(theta, xs, ys, training=False)
    assert calls['n'] == 16 * per_forward
    train = np.std([model.inner_loss(theta, xs, ys, True).numpy() for _ in range(40)])
    test = np.std([model.inner_loss(theta, xs, ys, False).numpy() for _ in range(40)])
    assert test < train / 2                    # ~1/4 for 16 samples


def test_noise_is_redrawn_at_every_inner_step():
    model = MetaDropout(small_net(), n_steps=3)
    xs, ys, _, _ = episode()
    seen = []
    base = model.noise

    def recording(shape, dtype):
        out = base(shape, dtype)
        seen.append(out.numpy())
        return out

    model.noise = recording
    model.adapt(xs, ys, training=True)
    conv1 = [s for s in seen if s.ndim == 4 and s.shape[-1] == 4 and s.shape[1] == 28]
    assert len(conv1) == 3                     # one draw per step
    assert not np.allclose(conv1[0], conv1[1]) and not np.allclose(conv1[1], conv1[2])


def main_runner(argv):
    import main
    return main.run_mode(main.parse_config(argv))


@pytest.mark.slow
def test_metadrop_runs_end_to_end_and_exports(tmp_path):
    """meta_train -> meta_test (MC samples) -> export with htr_sample and stochastic.npz."""
    common = ['--model', 'metadrop', '--dataset', 'synthetic', '--data_root', str(tmp_path),
              '--way', '5', '--shot', '2', '--query', '3', '--n_channel', '8',
              '--savedir', str(tmp_path / 'run'), '--progress=false']
    main_runner(['--mode', 'meta_train', '--metabatch', '2', '--n_train_iters', '30',
                 '--val_freq', '100', '--n_val_batches', '1', '--meta_lr', '3e-3'] + common)
    record = main_runner(['--mode', 'meta_test', '--metabatch', '1', '--n_test_iters', '30',
                          '--n_test_mc_samp', '3'] + common)
    assert record['accuracy'] > 35             # chance is 20%
    main_runner(['--mode', 'export'] + common)
    ex = np.load(tmp_path / 'run' / 'export.npz')
    f = ex['htr'].shape[-1]
    assert ex['htr'].shape == (10, 6, 4, f) and ex['hte'].shape == (10, 6, 6, f)
    assert ex['htr_sample'].shape == (10, 6, 10, 4, f)
    assert ex['w'].shape == (10, 6, f, 2) and ex['b'].shape == (10, 6, 2)
    np.testing.assert_array_equal(ex['classes'][:, 1] - ex['classes'][:, 0], 5)
    # The noisy support features scatter around the deterministic ones.
    assert not np.allclose(ex['htr_sample'][0, 0, 0], ex['htr_sample'][0, 0, 1])
    st = np.load(tmp_path / 'run' / 'stochastic.npz')
    assert list(st['layers']) == [1, 2, 3]
    assert st['layer1'].shape == (4, 20, 28, 28, 8) and st['layer3_mean'].shape == (4, 7, 7, 8)
