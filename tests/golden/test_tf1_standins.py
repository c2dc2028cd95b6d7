"""The TF 1.x stand-ins and the loader, on their own, against closed forms."""
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.golden import tf1_standins as tf1
from tests.golden.originals import load_original, original_dir, originals_root

v1 = tf.compat.v1


def run_graph(build, names=False):
    """Builds `build()` in a fresh graph, initialises its variables and returns its value (and
    the names of the graph's global and trainable variables when `names`)."""
    with tf.Graph().as_default():
        outputs = build()
        variables = ([v.name for v in v1.global_variables()],
                     [v.name for v in v1.trainable_variables()])
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            values = session.run(outputs)
    return (values, *variables) if names else values


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
@pytest.mark.parametrize('shape', [(4, 5, 6, 3), (7, 3)])
def test_batch_norm_is_contribs_training_mode(shape, dtype):
    """Batch statistics over all axes but the last, biased variance, eps 1e-3, shift beta, no gamma."""
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, shape).astype(dtype)
    beta = rng.normal(size=shape[-1]).astype(dtype)

    def build():
        tf1.batch_norm(tf.constant(x), activation_fn=tf.nn.relu, scope='bn')
        with v1.variable_scope('bn', reuse=True):
            assign = v1.get_variable('beta', dtype=dtype).assign(beta)
        with tf.control_dependencies([assign]):
            y = tf1.batch_norm(tf.constant(x), activation_fn=tf.nn.relu, scope='bn',
                               reuse=True)
        return y

    y, names, trainable = run_graph(build, names=True)
    axes = tuple(range(len(shape) - 1))
    expected = np.maximum((x - x.mean(axes)) / np.sqrt(x.var(axes) + 1e-3) + beta, 0)
    tolerance = 1e-9 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(y, expected, rtol=tolerance, atol=tolerance)
    assert names == ['bn/beta:0', 'bn/moving_mean:0', 'bn/moving_variance:0']
    assert trainable == ['bn/beta:0']


def test_batch_norm_second_derivative_is_exact():
    """float64 (direct moments) has the exact 1st and 2nd derivatives, by finite differences, and
    float32 (the fused kernel contrib used) the same ones to float32 precision."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 4, 2))
    weights = rng.normal(size=(3, 4, 4, 2))
    direction = rng.normal(size=(3, 4, 4, 2))

    def derivatives(value, dtype):
        def build():
            xt = tf.constant(value.astype(dtype))
            loss = tf.reduce_sum(tf.square(tf1.batch_norm(xt, scope='bn')) * weights.astype(dtype))
            grad = tf.gradients(loss, xt)[0]
            # Hessian-vector product: what a second-order meta-gradient needs.
            hvp = tf.gradients(tf.reduce_sum(grad * direction.astype(dtype)), xt)[0]
            return loss, grad, hvp
        return run_graph(build)

    _, grad, hvp = derivatives(x, np.float64)
    h = 1e-5
    numeric_hvp = (derivatives(x + h * direction, np.float64)[1]
                   - derivatives(x - h * direction, np.float64)[1]) / (2 * h)
    np.testing.assert_allclose(hvp, numeric_hvp, rtol=1e-5, atol=1e-7 * np.abs(hvp).max())
    for index in [(0, 0, 0, 0), (1, 2, 3, 1), (2, 3, 1, 0)]:
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        numeric = (derivatives(up, np.float64)[0] - derivatives(down, np.float64)[0]) / (2 * h)
        assert grad[index] == pytest.approx(numeric, rel=1e-6, abs=1e-9)
    _, grad32, hvp32 = derivatives(x, np.float32)
    np.testing.assert_allclose(grad32, grad, rtol=0, atol=1e-4 * np.abs(grad).max())
    np.testing.assert_allclose(hvp32, hvp, rtol=0, atol=1e-4 * np.abs(hvp).max())


def test_batch_norm_refuses_what_it_does_not_reproduce():
    with tf.Graph().as_default():
        with pytest.raises(NotImplementedError):
            tf1.batch_norm(tf.zeros([2, 3]), is_training=False)
        with pytest.raises(NotImplementedError):
            tf1.batch_norm(tf.zeros([2, 3]), renorm=True)


def test_dense_conv_pool_flatten_closed_forms():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 5, 3))
    kernel = rng.normal(size=(3, 3, 3, 4))
    bias = rng.normal(size=4)

    def build():
        conv = tf1.conv2d(tf.constant(x), 4, 3, 1, padding='same', name='c')
        with v1.variable_scope('c', reuse=True):
            assigns = [v1.get_variable('kernel', dtype=tf.float64).assign(kernel),
                       v1.get_variable('bias', dtype=tf.float64).assign(bias)]
        with tf.control_dependencies(assigns):
            conv = tf1.conv2d(tf.constant(x), 4, 3, 1, padding='same', name='c', reuse=True)
        pooled = tf1.max_pooling2d(conv, 2, 2, padding='valid')
        flat = tf1.flatten(pooled)
        dense = tf1.dense(flat, 3, name='d', kernel_initializer=v1.ones_initializer())
        return conv, pooled, flat, dense

    (conv, pooled, flat, dense), names, _ = run_graph(build, names=True)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((2, 5, 5, 4))
    for i in range(5):
        for j in range(5):
            expected[:, i, j] = np.einsum('bhwc,hwco->bo', padded[:, i:i + 3, j:j + 3], kernel)
    expected += bias
    np.testing.assert_allclose(conv, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(pooled, expected[:, :4, :4].reshape(2, 2, 2, 2, 2, 4).max((2, 4)))
    assert flat.shape == (2, 16)
    np.testing.assert_allclose(dense, np.repeat(flat.sum(1, keepdims=True), 3, 1), rtol=1e-12)
    assert names == ['c/kernel:0', 'c/bias:0', 'd/kernel:0', 'd/bias:0']


def test_initializers_regularizer_accuracy():
    def build():
        conv = v1.get_variable('w', [3, 3, 16, 32], tf.float64,
                               tf1.contrib.layers.xavier_initializer_conv2d(dtype=tf.float64))
        penalty = tf1.l2_regularizer(0.5)(tf.constant([1.0, 2.0, 3.0]))
        acc = tf1.accuracy(tf.constant([1, 2, 3, 4]), tf.constant([1, 0, 3, 0]))
        return conv, penalty, acc

    conv, penalty, acc = run_graph(build)
    limit = np.sqrt(6.0 / (9 * 16 + 9 * 32))  # Glorot uniform, fan_avg over the receptive field
    assert np.abs(conv).max() <= limit and np.abs(conv).max() > 0.9 * limit
    assert abs(conv.std() - limit / np.sqrt(3)) < 0.05 * limit
    assert penalty == pytest.approx(0.5 * 14 / 2)
    assert acc == pytest.approx(0.5)


def test_softmax_cross_entropy_is_tf1s_in_the_input_dtype():
    """float32: TF's own tf.losses.softmax_cross_entropy, bitwise, value and gradient. float64:
    the closed form (mean over examples of -sum y log softmax, gradient (softmax - y) / n) to
    1e-15, where TF's rounds through float32; other arguments refused."""
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(0., 2., (6, 5)), np.eye(5)[rng.integers(0, 5, 6)]

    def build(dtype, loss_fn):
        x = tf.constant(logits, dtype)
        loss = loss_fn(onehot_labels=tf.constant(labels, dtype), logits=x)
        return loss, tf.gradients(loss, x)[0], tf.constant(len(v1.losses.get_losses()))

    ours32, theirs32 = (run_graph(lambda f=f: build(tf.float32, f))
                        for f in (tf1.softmax_cross_entropy_in_input_dtype,
                                  v1.losses.softmax_cross_entropy))
    for a, b in zip(ours32, theirs32):
        np.testing.assert_array_equal(a, b)
    assert ours32[2] == 1   # in the LOSSES collection, as TF's
    loss, grad, _ = run_graph(lambda: build(tf.float64, tf1.softmax_cross_entropy_in_input_dtype))
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    assert abs(loss - np.mean(-np.sum(labels * np.log(softmax), 1))) < 1e-15 * loss
    np.testing.assert_allclose(grad, (softmax - labels) / len(labels), rtol=0, atol=1e-16)
    tf_loss, _, _ = run_graph(lambda: build(tf.float64, v1.losses.softmax_cross_entropy))
    assert abs(tf_loss - loss) > 1e-12 * loss   # TF's float64 loss went through float32
    with tf.Graph().as_default():
        for kwargs in (dict(weights=0.5), dict(label_smoothing=0.1), dict(reduction='none')):
            with pytest.raises(NotImplementedError):
                tf1.softmax_cross_entropy_in_input_dtype(labels, logits, **kwargs)


def test_namespace_is_compat_v1_plus_standins():
    namespace = tf1.TF1Namespace()
    assert namespace.log is v1.log and namespace.placeholder is v1.placeholder
    assert namespace.contrib.layers.batch_norm is tf1.batch_norm
    assert namespace.layers.flatten is tf1.flatten


def test_loader_resolves_bare_imports_to_the_original_and_restores_ours(tmp_path):
    """An original's `import data` / `from utils import` get its own files, ours come back after."""
    import data as our_data
    (tmp_path / 'data.py').write_text('WHO = "original"\n')
    (tmp_path / 'utils.py').write_text('import tensorflow as tf\nfrom data import WHO\n'
                                       'LOG = tf.log\nBN = tf.contrib.layers.batch_norm\n')
    (tmp_path / 'pkg').mkdir()
    (tmp_path / 'pkg' / 'mod.py').write_text('from utils import WHO\n')
    loaded = load_original(tmp_path, ['utils', 'pkg.mod'])
    assert loaded.utils.WHO == 'original' and loaded.mod.WHO == 'original'
    assert loaded.utils.LOG is v1.log and loaded.utils.BN is tf1.batch_norm
    assert sys.modules['data'] is our_data
    assert 'utils' not in sys.modules and sys.modules['tensorflow'] is tf


def test_missing_originals_skip_with_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv('METALEARN_ORIGINALS', str(tmp_path))
    assert originals_root() == tmp_path
    with pytest.raises(pytest.skip.Exception) as skipped:
        original_dir('leo')
    message = str(skipped.value)
    assert 'deepmind/leo' in message and 'de9a0c2a' in message and 'METALEARN_ORIGINALS' in message
