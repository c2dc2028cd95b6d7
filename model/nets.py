"""Backbones with a functional forward over "fast weights".

Every backbone owns its meta-learned initialisation theta as an ordered mapping of
tf.Variables (the originals' `theta` dicts) and exposes a pure forward
`__call__(x, params=None)`: with `params` it computes with those tensors instead of its
variables, which is how every method of this project adapts fast weights in its inner loop.

Batch norm follows tf.contrib.layers.batch_norm as the TF originals call it: learned
shift beta only (no gamma), epsilon 1e-3, and always the statistics of the current batch
(so the query set is normalised with its own statistics at meta-test: transductive). beta
lives outside theta: it is meta-learned by the outer optimiser but never adapted.
"""
import collections

import numpy as np
import sonnet as snt
import tensorflow as tf

BN_EPSILON = 1e-3  # tf.contrib.layers.batch_norm default


def batch_norm(x, beta, epsilon=BN_EPSILON):
    """Batch-statistics batch norm with shift only, over all axes but the last (biased
    variance, as tf.contrib's batch_norm in training mode).

    Not tf.nn.moments: it stops the gradient of the mean inside the variance, which is
    harmless for first derivatives but drops a term of the second derivative that
    second-order MAML differentiates through."""
    axes = list(range(x.shape.rank - 1))
    mean = tf.reduce_mean(x, axes)
    centred = x - mean
    var = tf.reduce_mean(tf.square(centred), axes)
    return centred * tf.math.rsqrt(var + epsilon) + beta


def truncated_normal(stddev):
    """TF1 truncated_normal_initializer: redraws beyond 2 stddev."""
    def init(shape, dtype):
        return tf.random.truncated_normal(shape, stddev=stddev, dtype=dtype)
    return init


def normal(stddev):
    def init(shape, dtype):
        return tf.random.normal(shape, stddev=stddev, dtype=dtype)
    return init


def glorot_uniform(shape, dtype):
    """Xavier/Glorot uniform as tf.contrib's xavier_initializer(_conv2d)."""
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return tf.random.uniform(shape, -limit, limit, dtype=dtype)


def zeros(shape, dtype):
    return tf.zeros(shape, dtype)


class Conv4(snt.Module):
    """The 4-block convolutional network of MAML / Meta-Dropout.

    variant='metadrop' (metadrop model.py / layers.py): 3x3 SAME stride-1 conv with bias ->
      BN(beta) -> ReLU -> 2x2 max-pool VALID, flattened in HWC order; conv weights truncated
      normal(0.02), dense weights normal(0.02), biases zero. 28->14->7->3->1 on Omniglot,
      84->42->21->10->5 on miniImageNet.
    variant='maml' (cbfinn/maml construct_conv_weights): Glorot-uniform convs; with
      max_pool=False (its Omniglot setting) stride-2 convs, no pooling and a spatial mean
      (28->14->7->4->2->mean); the head is normal(stddev 1.0) there and Glorot uniform with
      max-pooling (its miniImageNet setting).

    Parameters (theta): conv{1..4}_w [3,3,in,C], conv{1..4}_b [C], dense_w [F,way],
    dense_b [way]. BN shifts: bn_beta['conv{1..4}'] [C].
    """

    def __init__(self, way, n_channel=64, image_shape=(28, 28, 1), variant='metadrop',
                 max_pool=True, dtype=tf.float32, name='theta'):
        super().__init__(name=name)
        if variant not in ('metadrop', 'maml'):
            raise ValueError(f'unknown Conv4 variant {variant!r}')
        self.way = way
        self.n_channel = n_channel
        self.image_shape = tuple(image_shape)
        self.variant = variant
        self.max_pool = max_pool if variant == 'maml' else True
        self.dtype = dtype
        size = self.image_shape[0]
        for _ in range(4):
            size = size // 2 if self.max_pool else -(-size // 2)
        self.feature_dim = n_channel * (size * size if self.max_pool else 1)

        if variant == 'metadrop':
            conv_init, dense_init = truncated_normal(0.02), normal(0.02)
        else:
            conv_init = glorot_uniform
            dense_init = glorot_uniform if self.max_pool else normal(1.0)
        theta = collections.OrderedDict()
        bn_beta = collections.OrderedDict()
        with self.name_scope:
            in_ch = self.image_shape[-1]
            for l in range(1, 5):
                theta[f'conv{l}_w'] = tf.Variable(
                    conv_init([3, 3, in_ch, n_channel], dtype), name=f'conv{l}_w')
                theta[f'conv{l}_b'] = tf.Variable(zeros([n_channel], dtype), name=f'conv{l}_b')
                in_ch = n_channel
            theta['dense_w'] = tf.Variable(dense_init([self.feature_dim, way], dtype),
                                           name='dense_w')
            theta['dense_b'] = tf.Variable(zeros([way], dtype), name='dense_b')
        for l in range(1, 5):
            with tf.name_scope(f'conv{l}_bn'):
                bn_beta[f'conv{l}'] = tf.Variable(zeros([n_channel], dtype), name='beta')
        self.theta = theta
        self.bn_beta = bn_beta

    @property
    def conv_stride(self):
        return 1 if self.max_pool else 2

    def conv_block(self, h, l, params, pre_bn=None):
        """One block. `pre_bn(h_in, mu, l)` may transform the conv output before BN
        (Meta-Dropout multiplies it by its noise there)."""
        mu = tf.nn.conv2d(h, params[f'conv{l}_w'], self.conv_stride, 'SAME') + params[f'conv{l}_b']
        if pre_bn is not None:
            mu = pre_bn(h, mu, l)
        h = tf.nn.relu(batch_norm(mu, self.bn_beta[f'conv{l}']))
        if self.max_pool:
            h = tf.nn.max_pool2d(h, 2, 2, 'VALID')
        return h

    def features(self, x, params=None, pre_bn=None):
        """Flattened output of the four blocks, [batch, feature_dim]."""
        p = self.theta if params is None else params
        h = tf.reshape(x, [-1, *self.image_shape])
        for l in range(1, 5):
            h = self.conv_block(h, l, p, pre_bn)
        if self.max_pool:
            return tf.reshape(h, [-1, self.feature_dim])
        return tf.reduce_mean(h, axis=[1, 2])

    def head(self, feats, params=None):
        p = self.theta if params is None else params
        return tf.matmul(feats, p['dense_w']) + p['dense_b']

    def __call__(self, x, params=None, pre_bn=None):
        return self.head(self.features(x, params, pre_bn), params)


BACKBONES = ('conv4', 'maml_conv4')


def build_backbone(name, way, image_shape, n_channel=None, dataset=None, dtype=tf.float32):
    """Backbone by flag value. n_channel None -> the originals' width (64 on 28x28 grey
    Omniglot-like inputs, 32 otherwise)."""
    omniglot_like = tuple(image_shape) == (28, 28, 1)
    if n_channel is None:
        n_channel = 64 if omniglot_like else 32
    if name == 'conv4':
        return Conv4(way, n_channel, image_shape, 'metadrop', dtype=dtype)
    if name == 'maml_conv4':
        return Conv4(way, n_channel, image_shape, 'maml', max_pool=not omniglot_like, dtype=dtype)
    raise ValueError(f'unknown backbone {name!r}; choose one of {", ".join(BACKBONES)}')
