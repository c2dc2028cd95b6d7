"""ANIL (model/methods/anil.py), the worked example of docs/extending.md: its inner loop moves
the head only, its meta-gradient reaches every parameter and matches finite differences
(float64), and main.py treats it as a registered method."""
import numpy as np
import pytest
import tensorflow as tf
from absl import app

import main
from model import methods
from model.nets import HEAD_KEYS
from tests.test_maml import query_loss_at as query_loss

F64 = tf.float64
WAY, SHOT, QUERY, SIDE = 3, 2, 3, 16


def anil(seed=0, n_steps=2):
    cfg = main.parse_config(['--model', 'anil', '--savedir', '/tmp/anil', '--n_channel', '8',
                             '--n_steps', str(n_steps), '--inner_lr', '0.5'])
    tf.random.set_seed(seed)
    model = methods.get('anil').build(cfg, WAY, (SIDE, SIDE, 1), dtype=F64)
    # Non-zero BN shifts so that ReLUs are not all at their kink at initialisation.
    for b in model.net.bn_beta.values():
        b.assign(tf.random.normal(b.shape, stddev=0.5, dtype=F64))
    return model


def episode(seed=1):
    rng = np.random.default_rng(seed)
    xs = tf.constant(rng.random((WAY * SHOT, SIDE, SIDE, 1)), F64)
    xq = tf.constant(rng.random((WAY * QUERY, SIDE, SIDE, 1)), F64)
    ys = tf.constant(np.repeat(np.arange(WAY), SHOT), tf.int32)
    yq = tf.constant(np.repeat(np.arange(WAY), QUERY), tf.int32)
    return xs, ys, xq, yq


def test_the_inner_loop_moves_the_head_only():
    model = anil()
    xs, ys, _, _ = episode()
    before = {k: tf.convert_to_tensor(v).numpy() for k, v in model.net.initial_params().items()}
    after = model.adapt(xs, ys, training=True).params
    assert set(after) == set(before)
    for key, value in after.items():
        if key in HEAD_KEYS:
            assert np.abs(value.numpy() - before[key]).max() > 1e-3, key
        else:
            np.testing.assert_array_equal(value.numpy(), before[key], err_msg=key)


def test_meta_gradient_reaches_the_encoder_and_matches_finite_differences():
    model, ep = anil(), episode()
    with tf.GradientTape() as tape:
        loss, _ = model.task_loss(*ep, training=True)
    grads = tape.gradient(loss, model.outer_variables)
    names = [v.name for v in model.outer_variables]
    encoder = [g for g, n in zip(grads, names) if not any(k in n for k in HEAD_KEYS)]
    assert encoder and all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0
                           for g in encoder)
    base = [v.numpy() for v in model.outer_variables]
    rng, eps = np.random.default_rng(2), 1e-7   # small: ReLU / max-pool kinks are near
    for _ in range(3):
        direction = [rng.standard_normal(b.shape) for b in base]
        analytic = sum(float(tf.reduce_sum(g * d)) for g, d in zip(grads, direction))
        plus = query_loss(model, ep, [b + eps * d for b, d in zip(base, direction)])
        minus = query_loss(model, ep, [b - eps * d for b, d in zip(base, direction)])
        assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-8)


def test_anil_is_maml_with_the_encoder_frozen_and_differs_from_maml():
    """The same weights give MAML --frozen encoder's loss exactly, and not MAML's."""
    ep = episode()
    model = anil()
    loss, _ = model.task_loss(*ep, training=True)
    cfg = main.parse_config(['--savedir', '/tmp/anil', '--n_channel', '8', '--n_steps', '2',
                             '--inner_lr', '0.5', '--frozen', 'encoder'])
    frozen = methods.get('maml').build(cfg, WAY, (SIDE, SIDE, 1))
    free = methods.get('maml').build(main.parse_config(
        ['--savedir', '/tmp/anil', '--n_channel', '8', '--n_steps', '2', '--inner_lr', '0.5']),
        WAY, (SIDE, SIDE, 1))
    for other in (frozen, free):
        for v, w in zip(other.outer_variables, model.outer_variables):
            v.assign(tf.cast(w, v.dtype))
    frozen_loss = float(frozen.task_loss(*[tf.cast(t, tf.float32) if t.dtype == F64 else t
                                          for t in ep], training=True)[0])
    free_loss = float(free.task_loss(*[tf.cast(t, tf.float32) if t.dtype == F64 else t
                                      for t in ep], training=True)[0])
    assert frozen_loss == pytest.approx(float(loss), rel=1e-5)
    assert abs(free_loss - float(loss)) > 1e-4


def test_anil_fixes_what_its_inner_loop_adapts():
    with pytest.raises(app.UsageError, match=r'--frozen does not apply to --model anil'):
        main.parse_config(['--model', 'anil', '--savedir', '/tmp/x', '--frozen', 'conv1'])
