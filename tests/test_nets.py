"""Backbones: shapes, the originals' initialisers, batch norm, and the functional forward."""
import numpy as np
import pytest
import tensorflow as tf

from model import backbones, nets


@pytest.mark.parametrize('name,shape,channels,feature_dim', [
    ('conv4', (28, 28, 1), 64, 64),         # metadrop Omniglot: 28->14->7->3->1
    ('conv4', (84, 84, 3), 32, 800),        # metadrop miniImageNet: 84->42->21->10->5
    ('maml_conv4', (28, 28, 1), 64, 64),    # cbfinn/maml Omniglot: strided, spatial mean
    ('maml_conv4', (84, 84, 3), 32, 800),   # cbfinn/maml miniImageNet: max-pool
])
def test_shapes_and_widths(name, shape, channels, feature_dim):
    net = backbones.build_backbone(name, 5, shape)
    assert net.n_channel == channels
    assert net.feature_dim == feature_dim
    x = tf.random.uniform([6, *shape])
    assert net.features(x).shape == (6, feature_dim)
    assert net(x).shape == (6, 5)
    assert list(net.theta) == ['conv1_w', 'conv1_b', 'conv2_w', 'conv2_b', 'conv3_w',
                               'conv3_b', 'conv4_w', 'conv4_b', 'dense_w', 'dense_b']


def test_maml_omniglot_variant_is_strided_without_pooling():
    net = backbones.build_backbone('maml_conv4', 5, (28, 28, 1))
    assert not net.max_pool and net.conv_stride == 2
    h = tf.random.uniform([2, 28, 28, 1])
    sizes = []
    for l in range(1, 5):
        h = net.conv_block(h, l, net.theta)
        sizes.append(h.shape[1])
    assert sizes == [14, 7, 4, 2]


def test_initialisers_follow_the_originals():
    tf.random.set_seed(0)
    md = backbones.build_backbone('conv4', 20, (28, 28, 1))
    w = md.theta['conv2_w'].numpy()
    assert np.abs(w).max() <= 2 * 0.02 + 1e-7          # truncated at two stddev
    assert w.std() == pytest.approx(0.02 * 0.88, rel=0.05)  # truncated normal's std
    assert md.theta['dense_w'].numpy().std() == pytest.approx(0.02, rel=0.1)
    assert np.abs(md.theta['dense_w'].numpy()).max() > 2 * 0.02  # not truncated
    for k, v in md.theta.items():
        if k.endswith('_b'):
            assert not v.numpy().any()
    mm = backbones.build_backbone('maml_conv4', 20, (28, 28, 1))
    limit = np.sqrt(6. / (9 * 64 + 9 * 64))
    w = mm.theta['conv2_w'].numpy()
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit
    assert mm.theta['dense_w'].numpy().std() == pytest.approx(1.0, rel=0.1)  # normal(1.0)
    mi = backbones.build_backbone('maml_conv4', 5, (84, 84, 3))
    assert np.abs(mi.theta['dense_w'].numpy()).max() <= np.sqrt(6. / (800 + 5))


def test_batch_norm_uses_batch_statistics_and_shift_only():
    x = tf.random.normal([8, 5, 5, 4], mean=3., stddev=2.)
    beta = tf.constant([0., 1., -1., 2.])
    y = nets.batch_norm(x, beta).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), beta.numpy(), atol=1e-5)
    var = x.numpy().var(axis=(0, 1, 2))
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), var / (var + 1e-3), rtol=1e-4)


def test_batch_statistics_make_predictions_depend_on_the_batch():
    """Transductive: an example's logits change when the rest of its batch changes."""
    net = backbones.build_backbone('conv4', 5, (28, 28, 1))
    x = tf.random.uniform([4, 28, 28, 1])
    alone = net(x[:2])
    together = net(x)
    assert not np.allclose(alone.numpy(), together.numpy()[:2], atol=1e-6)


def test_functional_forward_uses_given_params_not_variables():
    net = backbones.build_backbone('conv4', 5, (28, 28, 1))
    x = tf.random.uniform([3, 28, 28, 1])
    params = {k: tf.identity(v) for k, v in net.theta.items()}
    np.testing.assert_allclose(net(x, params).numpy(), net(x).numpy(), rtol=1e-6)
    params['dense_b'] = params['dense_b'] + tf.constant([1., 0., 0., 0., 0.])
    diff = net(x, params).numpy() - net(x).numpy()
    np.testing.assert_allclose(diff[:, 0], 1., rtol=1e-5)
    np.testing.assert_allclose(diff[:, 1:], 0., atol=1e-5)
