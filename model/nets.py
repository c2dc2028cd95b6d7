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
TORCH_BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d default (PyTorch-MAML backbones)


def moments(x):
    """Per-channel mean and biased variance over all axes but the last.

    Not tf.nn.moments: it stops the gradient of the mean inside the variance, which is
    harmless for first derivatives but drops a term of the second derivative that
    second-order MAML differentiates through."""
    axes = list(range(x.shape.rank - 1))
    mean = tf.reduce_mean(x, axes)
    var = tf.reduce_mean(tf.square(x - mean), axes)
    return mean, var


# ---- where a batch-norm layer takes its statistics from ----------------------------------
# A forward takes `norm`, a callable (x, layer name) -> (mean, var). None means the
# statistics of the batch itself, the originals' behaviour everywhere (transductive).

class BatchStats:
    """The statistics of the current batch; optionally recorded per layer as
    (mean, biased var, number of values per channel), for running averages."""

    def __init__(self, record=None):
        self.record = record

    def __call__(self, x, name):
        mean, var = moments(x)
        if self.record is not None:
            n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), x.dtype)
            self.record[name] = (mean, var, n)
        return mean, var


class GivenStats:
    """Fixed statistics per layer (per-episode running statistics): each image is
    normalised independently of the others in its batch (inductive)."""

    def __init__(self, stats):
        self.stats = stats

    def __call__(self, x, name):
        return self.stats[name]


class ReferenceStats:
    """The statistics of the first `n` rows of the batch (the support set, when the
    forward runs on support and query images stacked): the query rows are normalised
    without using each other (inductive)."""

    def __init__(self, n):
        self.n = n

    def __call__(self, x, name):
        return moments(x[:self.n])


# The batch's own statistics through TensorFlow's fused kernel (FusedBatchNormV3, oneDNN
# on CPU, cuDNN on GPU): the same function, its gradient one fused op, and the gradient of
# that gradient (second-order MAML) TensorFlow's closed form (nn_fused_batch_norm_grad.py).
# The kernel refuses epsilon below 1.001e-5 (torch's 1e-5 stays on the plain path).
# tests/test_fast_paths.py compares both paths to second order; off: the plain arithmetic.
FUSED_BATCH_NORM = True
FUSED_MIN_EPSILON = 1.001e-5


def fused_applies(x, epsilon):
    return (FUSED_BATCH_NORM and x.shape.rank == 4 and epsilon >= FUSED_MIN_EPSILON
            and x.dtype in (tf.float32, tf.float16, tf.bfloat16))


def batch_norm(x, beta, epsilon=BN_EPSILON, gamma=None, norm=None, name=None):
    """Batch norm with learned shift beta (and scale gamma where the backbone has one).

    Default (norm None): the statistics of the current batch, biased variance, as
    tf.contrib's batch_norm in training mode (the TF originals) and torch's BatchNorm2d in
    training mode or with track_running_stats=False (PyTorch-MAML's reproduce configs)."""
    if norm is None and fused_applies(x, epsilon):
        scale = tf.ones_like(beta) if gamma is None else gamma
        return tf.compat.v1.nn.fused_batch_norm(x, scale, beta, epsilon=epsilon,
                                                is_training=True)[0]
    if norm is None:
        mean, var = moments(x)
    else:
        mean, var = norm(x, name)
    y = (x - mean) * tf.math.rsqrt(var + epsilon)
    if gamma is not None:
        y = y * gamma
    return y + beta


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


def ones(shape, dtype):
    return tf.ones(shape, dtype)


def torch_default_uniform(fan_in):
    """torch's default Conv2d/Linear init (kaiming_uniform with a=sqrt(5), and the bias):
    U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)

    def init(shape, dtype):
        return tf.random.uniform(shape, -bound, bound, dtype=dtype)
    return init


def kaiming_normal_fan_out(shape, dtype):
    """torch.nn.init.kaiming_normal_(mode='fan_out', nonlinearity='relu' or 'leaky_relu'
    with the default a=0): normal with std sqrt(2 / (k*k*out))."""
    fan_out = int(np.prod(shape[:-2])) * shape[-1]
    return tf.random.normal(shape, stddev=np.sqrt(2.0 / fan_out), dtype=dtype)


HEAD_KEYS = ('dense_w', 'dense_b')


class Backbone(snt.Module):
    """What every backbone shares: theta (ordered tf.Variables, the fast weights), BN
    shifts kept outside theta where the original keeps them there (`bn_beta`), the dense
    head, an optional zero-initialised head, and an optional per-channel input
    normalisation.

    zero_head (PyTorch-MAML's reset_classifier): the head is not meta-learned; every task
    starts its adaptation from dense_w = 0, dense_b = 0, so the number of classes may differ
    between meta-training and meta-testing. theta then holds the encoder only.
    input_norm: None or (mean, std) per channel; images are (x - mean) / std before the
    first layer (PyTorch-MAML's `normalization: True`).

    Subclasses set `feature_dim`, fill `theta` / `bn_beta` and implement `features`."""

    def __init__(self, way, image_shape, zero_head=False, input_norm=None, dtype=tf.float32,
                 name='theta'):
        super().__init__(name=name)
        self.way = way
        self.image_shape = tuple(image_shape)
        self.zero_head = bool(zero_head)
        self.dtype = dtype
        self.input_norm = None
        if input_norm is not None:
            mean, std = (np.asarray(v, np.float64).reshape(-1) for v in input_norm)
            channels = self.image_shape[-1]
            if mean.size not in (1, channels) or std.size not in (1, channels):
                raise ValueError(f'input normalisation needs 1 or {channels} means and stds, '
                                 f'got {mean.size} and {std.size}')
            if np.any(std <= 0):
                raise ValueError(f'input normalisation stds must be positive, got {std.tolist()}')
            self.input_norm = (tf.constant(mean, dtype), tf.constant(std, dtype))
        self.theta = collections.OrderedDict()
        self.bn_beta = collections.OrderedDict()
        self.bn_channels = collections.OrderedDict()  # BN layer name -> channels

    def add_head(self, dense_init, bias_init=zeros):
        """The meta-learned head dense_w [F, way], dense_b [way] (none with zero_head)."""
        if not self.zero_head:
            with self.name_scope:
                self.theta['dense_w'] = tf.Variable(
                    dense_init([self.feature_dim, self.way], self.dtype), name='dense_w')
                self.theta['dense_b'] = tf.Variable(bias_init([self.way], self.dtype),
                                                    name='dense_b')

    @property
    def variables_to_meta_learn(self):
        return list(self.theta.values()) + list(self.bn_beta.values())

    def initial_params(self):
        """Where each task's adaptation starts: theta, plus a zero head with --zero_head."""
        params = collections.OrderedDict(self.theta)
        if self.zero_head:
            params['dense_w'] = tf.zeros([self.feature_dim, self.way], self.dtype)
            params['dense_b'] = tf.zeros([self.way], self.dtype)
        return params

    def param_shapes(self):
        return collections.OrderedDict((k, v.shape.as_list())
                                       for k, v in self.initial_params().items())

    def prepare(self, x):
        """Flat or NHWC images -> NHWC, input-normalised if asked."""
        h = tf.reshape(x, [-1, *self.image_shape])
        if self.input_norm is not None:
            h = (h - self.input_norm[0]) / self.input_norm[1]
        return h

    def head(self, feats, params=None):
        p = self.initial_params() if params is None else params
        return tf.matmul(feats, p['dense_w']) + p['dense_b']

    def __call__(self, x, params=None, pre_bn=None, norm=None):
        return self.head(self.features(x, params, pre_bn, norm), params)


class Conv4(Backbone):
    """The 4-block convolutional network of MAML / Meta-Dropout / PyTorch-MAML.

    variant='metadrop' (metadrop model.py / layers.py): 3x3 SAME stride-1 conv with bias ->
      BN(beta) -> ReLU -> 2x2 max-pool VALID, flattened in HWC order; conv weights truncated
      normal(0.02), dense weights normal(0.02), biases zero. 28->14->7->3->1 on Omniglot,
      84->42->21->10->5 on miniImageNet.
    variant='maml' (cbfinn/maml construct_conv_weights): Glorot-uniform convs; with
      max_pool=False (its Omniglot setting) stride-2 convs, no pooling and a spatial mean
      (28->14->7->4->2->mean); the head is normal(stddev 1.0) there and Glorot uniform with
      max-pooling (its miniImageNet setting).
    In both TF variants BN has a shift only (beta, in `bn_beta`, meta-learned, never
    adapted) and epsilon 1e-3.
    variant='pytorch' (PyTorch-MAML convnet4 / wide-convnet4): the metadrop block order,
      but torch's BatchNorm2d (scale gamma and shift beta, epsilon 1e-5) whose gamma/beta
      are fast weights in theta (`conv{l}_bn_gamma`, `conv{l}_bn_beta`: freeze them with
      --frozen bn as its reproduce configs do), and torch's default initialisers.

    Parameters (theta): conv{1..4}_w [3,3,in,C], conv{1..4}_b [C], dense_w [F,way],
    dense_b [way].
    """

    def __init__(self, way, n_channel=64, image_shape=(28, 28, 1), variant='metadrop',
                 max_pool=True, dtype=tf.float32, name='theta', zero_head=False,
                 input_norm=None):
        super().__init__(way, image_shape, zero_head, input_norm, dtype, name)
        if variant not in ('metadrop', 'maml', 'pytorch'):
            raise ValueError(f'unknown Conv4 variant {variant!r}')
        self.n_channel = n_channel
        self.variant = variant
        self.max_pool = max_pool if variant == 'maml' else True
        self.bn_epsilon = TORCH_BN_EPSILON if variant == 'pytorch' else BN_EPSILON
        size = self.image_shape[0]
        for _ in range(4):
            size = size // 2 if self.max_pool else -(-size // 2)
        self.feature_dim = n_channel * (size * size if self.max_pool else 1)

        in_ch = self.image_shape[-1]
        with self.name_scope:
            for l in range(1, 5):
                if variant == 'metadrop':
                    w_init, b_init = truncated_normal(0.02), zeros
                elif variant == 'maml':
                    w_init, b_init = glorot_uniform, zeros
                else:
                    w_init = b_init = torch_default_uniform(9 * in_ch)
                self.theta[f'conv{l}_w'] = tf.Variable(
                    w_init([3, 3, in_ch, n_channel], dtype), name=f'conv{l}_w')
                self.theta[f'conv{l}_b'] = tf.Variable(b_init([n_channel], dtype),
                                                       name=f'conv{l}_b')
                self.bn_channels[f'conv{l}'] = n_channel
                if variant == 'pytorch':
                    self.theta[f'conv{l}_bn_gamma'] = tf.Variable(
                        ones([n_channel], dtype), name=f'conv{l}_bn_gamma')
                    self.theta[f'conv{l}_bn_beta'] = tf.Variable(
                        zeros([n_channel], dtype), name=f'conv{l}_bn_beta')
                in_ch = n_channel
        if variant == 'metadrop':
            self.add_head(normal(0.02))
        elif variant == 'maml':
            self.add_head(glorot_uniform if self.max_pool else normal(1.0))
        else:  # torch.nn.Linear's default init, weight and bias
            self.add_head(torch_default_uniform(self.feature_dim),
                          torch_default_uniform(self.feature_dim))
        if variant != 'pytorch':
            for l in range(1, 5):
                with tf.name_scope(f'conv{l}_bn'):
                    self.bn_beta[f'conv{l}'] = tf.Variable(zeros([n_channel], dtype),
                                                           name='beta')

    @property
    def conv_stride(self):
        return 1 if self.max_pool else 2

    def conv_block(self, h, l, params, pre_bn=None, norm=None):
        """One block. `pre_bn(h_in, mu, l)` may transform the conv output before BN
        (Meta-Dropout multiplies it by its noise there)."""
        mu = tf.nn.conv2d(h, params[f'conv{l}_w'], self.conv_stride, 'SAME') + params[f'conv{l}_b']
        if pre_bn is not None:
            mu = pre_bn(h, mu, l)
        if self.variant == 'pytorch':
            beta, gamma = params[f'conv{l}_bn_beta'], params[f'conv{l}_bn_gamma']
        else:
            beta, gamma = self.bn_beta[f'conv{l}'], None
        h = tf.nn.relu(batch_norm(mu, beta, self.bn_epsilon, gamma, norm, f'conv{l}'))
        if self.max_pool:
            h = tf.nn.max_pool2d(h, 2, 2, 'VALID')
        return h

    def features(self, x, params=None, pre_bn=None, norm=None):
        """Flattened output of the four blocks, [batch, feature_dim]."""
        p = self.initial_params() if params is None else params
        h = self.prepare(x)
        for l in range(1, 5):
            h = self.conv_block(h, l, p, pre_bn, norm)
        if self.max_pool:
            return tf.reshape(h, [-1, self.feature_dim])
        return tf.reduce_mean(h, axis=[1, 2])
