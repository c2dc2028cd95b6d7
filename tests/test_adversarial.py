"""PGD under L1, L2 and Linf (model/adversarial.py) and `--mode adv_test` end to end."""
import json

import numpy as np
import pytest
import tensorflow as tf
from absl import app

import main
from model import adversarial as adv
from model.runner import Runner, RunError, TEST_STREAM, episode_rng

EPS = {'linf': 0.2, 'l2': 1.5, 'l1': 6.0}
BIG_EPS = {'linf': 0.5, 'l2': 4.0, 'l1': 30.0}


def glyphs(n=12, size=8, seed=0):
    """Images in [0, 1] with most pixels at the box edges, as Omniglot's strokes."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 1))
    x = np.where(x < 0.6, 0., np.where(x > 0.8, 1., x))
    return tf.constant(x, tf.float32)


def linear_model(dim=64, way=5, seed=0):
    w = tf.constant(np.random.default_rng(seed).standard_normal((dim, way)), tf.float32)
    return lambda x: tf.reshape(x, [tf.shape(x)[0], -1]) @ w


def tiny_conv(way=4, seed=0):
    """A conv layer, batch-statistics batch norm (transductive, as the backbones), ReLU, head."""
    rng = np.random.default_rng(seed)
    k = tf.constant(rng.standard_normal((3, 3, 1, 4)) * 0.5, tf.float32)
    w = tf.constant(rng.standard_normal((4 * 4 * 4, way)), tf.float32)

    def logits(x):
        h = tf.nn.conv2d(x, k, 1, 'SAME')
        mean, var = tf.nn.moments(h, [0, 1, 2])
        h = tf.nn.relu((h - mean) * tf.math.rsqrt(var + 1e-3))
        h = tf.nn.max_pool2d(h, 2, 2, 'VALID')
        return tf.reshape(h, [tf.shape(x)[0], -1]) @ w
    return logits


def acc(logits_fn, x, y):
    return float(np.mean(np.argmax(logits_fn(x).numpy(), -1) == y.numpy()))


def per_example(x_adv, x, norm):
    return adv.norms(tf.reshape(x_adv - x, [x.shape[0], -1]), norm).numpy()


def attack(logits_fn, x, y, norm, eps, n_iter=10, **kw):
    return adv.pgd(logits_fn, x, y, norm, eps, n_iter, 2.5 * eps / n_iter,
                   seed=tf.constant([3, 4]), **kw)


# ---- projections -------------------------------------------------------------------

def l1_reference(v, eps):
    """Projection onto the L1 ball by bisection on the soft threshold (not sort-based)."""
    if np.abs(v).sum() <= eps:
        return v.copy()
    lo, hi = 0., np.abs(v).max()
    for _ in range(200):
        theta = (lo + hi) / 2
        if np.maximum(np.abs(v) - theta, 0).sum() > eps:
            lo = theta
        else:
            hi = theta
    return np.sign(v) * np.maximum(np.abs(v) - (lo + hi) / 2, 0)


def test_l1_projection_is_exact():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((8, 13)) * rng.uniform(0.1, 3, (8, 1))
    v[0, 3:] = 0.                                   # sparse row
    v[1] = 0.25                                     # ties everywhere
    for eps in (0.5, 2.0, 7.0):
        w = adv.project_l1_ball(tf.constant(v), eps).numpy()
        for row, out in zip(v, w):
            np.testing.assert_allclose(out, l1_reference(row, eps), atol=1e-10)
            if np.abs(row).sum() <= eps:
                assert np.array_equal(out, row)     # inside: unchanged
            else:
                # KKT: on the sphere; moved entries shrink by one theta, the rest are <= theta.
                assert np.abs(out).sum() == pytest.approx(eps, rel=1e-12)
                moved = out != 0
                theta = np.abs(row[moved]) - np.abs(out[moved])
                np.testing.assert_allclose(theta, theta[0], atol=1e-12)
                assert (np.abs(row[~moved]) <= theta[0] + 1e-12).all()
                assert (np.sign(out[moved]) == np.sign(row[moved])).all()
    assert not adv.project_l1_ball(tf.constant(v), 0.).numpy().any()


@pytest.mark.parametrize('norm', adv.NORMS)
def test_projection_then_box_clipping_stays_in_the_ball(norm):
    x = tf.reshape(glyphs(n=16), [16, -1])
    delta = tf.constant(np.random.default_rng(1).standard_normal(x.shape) * 2, tf.float32)
    projected = adv.project(delta, norm, EPS[norm])
    clipped = adv.clip_to_box(x, projected, (0., 1.))
    assert (adv.norms(projected, norm).numpy() <= EPS[norm] * (1 + 1e-5)).all()
    # Clipping to the box only moves coordinates towards zero: still in the ball.
    assert (np.abs(clipped.numpy()) <= np.abs(projected.numpy()) + 1e-6).all()
    assert (adv.norms(clipped, norm).numpy() <= EPS[norm] * (1 + 1e-5)).all()
    x_adv = (x + clipped).numpy()
    assert x_adv.min() >= 0. and x_adv.max() <= 1.


@pytest.mark.parametrize('norm', adv.NORMS)
def test_random_start_is_in_the_ball_and_reproducible(norm):
    draw = lambda s: adv.random_in_ball([50, 30], norm, EPS[norm], tf.constant(s)).numpy()
    a = draw([1, 2])
    assert (adv.norms(tf.constant(a), norm).numpy() <= EPS[norm] * (1 + 1e-5)).all()
    assert np.array_equal(a, draw([1, 2])) and not np.array_equal(a, draw([1, 3]))


# ---- PGD ---------------------------------------------------------------------------

@pytest.mark.parametrize('norm', adv.NORMS)
def test_pgd_stays_in_each_ball_and_the_box(norm):
    f = tiny_conv()
    x = glyphs()
    y = tf.constant(np.arange(12) % 4, tf.int32)
    for keep_best in (True, False):
        x_adv = attack(f, x, y, norm, EPS[norm], keep_best=keep_best)
        assert x_adv.shape == x.shape
        assert (per_example(x_adv, x, norm) <= EPS[norm] * (1 + 1e-5)).all()
        assert x_adv.numpy().min() >= 0. and x_adv.numpy().max() <= 1.


@pytest.mark.parametrize('norm', adv.NORMS)
def test_pgd_with_a_large_budget_breaks_a_linear_model(norm):
    f = linear_model()
    x = glyphs(n=20)
    y = tf.argmax(f(x), -1, output_type=tf.int32)   # clean accuracy 100%
    assert acc(f, x, y) == 1.
    for keep_best in (True, False):
        x_adv = attack(f, x, y, norm, BIG_EPS[norm], n_iter=20, l1_frac=0.05,
                       keep_best=keep_best)
        assert acc(f, x_adv, y) < 0.5, (norm, keep_best)


@pytest.mark.parametrize('norm', adv.NORMS)
def test_pgd_never_raises_accuracy(norm):
    """Random labels: some clean predictions are right by chance; the attack keeps them at
    most as many (the clean batch is a candidate), also with a small budget and a BN model."""
    for seed in range(3):
        f = tiny_conv(seed=seed)
        x = glyphs(seed=seed)
        y = tf.constant(np.random.default_rng(seed).integers(0, 4, 12), tf.int32)
        x_adv = attack(f, x, y, norm, EPS[norm] / 20, n_iter=3)
        assert acc(f, x_adv, y) <= acc(f, x, y)


@pytest.mark.parametrize('norm', adv.NORMS)
def test_zero_budget_changes_nothing(norm):
    f = tiny_conv()
    x = glyphs()
    y = tf.constant(np.arange(12) % 4, tf.int32)
    for keep_best in (True, False):
        x_adv = adv.pgd(f, x, y, norm, 0., 5, 0., seed=tf.constant([0, 1]),
                        keep_best=keep_best)
        assert np.array_equal(x_adv.numpy(), x.numpy())
        assert acc(f, x_adv, y) == acc(f, x, y)


def test_l1_step_is_sparse_and_skips_saturated_pixels():
    f = linear_model()
    x = glyphs(n=6)
    y = tf.argmax(f(x), -1, output_type=tf.int32)
    k = round(0.05 * 64)
    x_adv = adv.pgd(f, x, y, 'l1', 1.0, 1, 1.0, rand_init=False, l1_frac=0.05,
                    keep_best=False)
    moved = (x_adv - x).numpy().reshape(6, -1) != 0
    # Exactly k pixels move: none of the chosen ones was stuck at the box edge its gradient
    # points beyond (clipping would have kept it in place).
    assert (moved.sum(1) == k).all()
    assert (per_example(x_adv, x, 'l1') <= 1.0 + 1e-6).all()


# ---- flags -------------------------------------------------------------------------

def test_norm_names_agree_with_main():
    assert main.ATTACK_NORMS == adv.NORMS


@pytest.mark.parametrize('argv,message', [
    (['--attacks', 'l1,l3'], '--attacks: unknown attack(s) l3; use l1, l2, linf'),
    (['--attacks', ' , '], '--attacks is empty'),
    (['--attacks', 'l2,l2'], '--attacks lists an attack twice'),
    (['--eps_linf', '-0.1'], '--eps_linf must be >= 0 and finite, got -0.1'),
    (['--eps_l1', 'inf'], '--eps_l1 must be >= 0 and finite, got inf'),
    (['--pgd_steps', '0'], '--pgd_steps must be a positive integer, got 0'),
    (['--n_adv_episodes', '0'], '--n_adv_episodes must be a positive integer, got 0'),
    (['--pgd_step_scale', '0'], '--pgd_step_scale must be positive and finite, got 0.0'),
    (['--pgd_l1_frac', '1.5'], '--pgd_l1_frac must be in (0, 1], got 1.5'),
])
def test_bad_attack_flags_are_usage_errors(argv, message, tmp_path):
    with pytest.raises(app.UsageError) as e:
        main.parse_config(['--savedir', str(tmp_path), '--mode', 'adv_test', *argv])
    assert message in str(e.value)


# ---- --mode adv_test end to end ----------------------------------------------------

TINY = ['--dataset', 'synthetic', '--way', '3', '--shot', '1', '--query', '4',
        '--metabatch', '2', '--n_steps', '1', '--n_channel', '4', '--noprogress',
        '--n_val_batches', '1', '--val_freq', '1000']


def config(savedir, *extra):
    return main.parse_config(['--savedir', str(savedir), *TINY, *extra])


def test_adv_test_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match='run --mode meta_train'):
        main.run_mode(config(tmp_path, '--mode', 'adv_test'))


def test_adv_episodes_are_meta_tests_first_episodes(tmp_path):
    r = Runner(config(tmp_path, '--mode', 'meta_test', '--metabatch', '2'))
    batches = [ep for ep, _ in adv.adv_episodes(r, 5)]
    assert [len(ep[0]) for ep in batches] == [2, 2, 1]
    sampler = r.sampler('test')
    for j, ep in enumerate(batches):   # runner.evaluate's draws
        ref = sampler.sample(episode_rng(r.cfg.seed, TEST_STREAM, j), 2)
        for got, want in zip(ep, ref):
            np.testing.assert_array_equal(got, want[:len(got)])


def test_adv_test_end_to_end(tmp_path, capsys):
    r = Runner(config(tmp_path, '--n_train_iters', '1', '--n_test_iters', '4'))
    r.meta_train()
    record = main.run_mode(config(tmp_path, '--mode', 'adv_test', '--n_adv_episodes', '4',
                                  '--pgd_steps', '2', '--eps_linf', '0.3', '--eps_l2', '2',
                                  '--eps_l1', '15'))
    saved = json.load(open(tmp_path / 'adv_test.json'))
    assert saved == json.loads(json.dumps(record))
    assert saved['n_episodes'] == 4 and saved['checkpoint'] == 'model-1'
    assert saved['batch_norm'] == 'transductive'
    assert list(saved['attacks']) == ['l1', 'l2', 'linf']
    assert saved['attacks']['linf']['eps'] == 0.3 and saved['attacks']['l2']['steps'] == 2
    assert saved['attacks']['l1']['step_size'] == pytest.approx(2.5 * 15 / 2)
    clean = saved['clean']['accuracy']
    assert 0 <= clean <= 100 and saved['clean']['ci95'] >= 0
    for norm, a in saved['attacks'].items():
        assert a['accuracy'] <= clean and a['ci95'] >= 0
        assert (np.array(saved['per_episode'][norm]) <=
                np.array(saved['per_episode']['clean'])).all()
    # Strong budgets on a barely trained network: the attacks do bite.
    assert min(a['accuracy'] for a in saved['attacks'].values()) < clean
    log = open(tmp_path / 'adv_test.log').read().splitlines()
    assert log[0] == f"clean accuracy : {clean:f} +- {saved['clean']['ci95']:f}"
    assert log[3].startswith('linf (eps=0.3, steps=2) accuracy : ')
    assert 'clean accuracy : ' in capsys.readouterr().out
    # Clean accuracy is meta_test's on the same episodes (same seed, metabatch and count).
    tested = r.meta_test()
    assert tested['n_episodes'] == 4
    assert clean == pytest.approx(tested['accuracy'], abs=1e-4)
    assert saved['clean']['ci95'] == pytest.approx(tested['ci95'], abs=1e-4)
