"""Stand-ins, with TF 1.x semantics, for the few TF 1.x names the originals call that TF 2.x lost.

The originals' ``import tensorflow as tf`` gets a :class:`TF1Namespace`: ``tf.compat.v1`` for every
name TF 2.x still has, and these for the rest. Each reproduces the TF 1.15 function of the same
name at the arguments the originals pass (stated per function); anything else raises, so a silent
difference cannot hide behind a stand-in. tests/golden/test_tf1_standins.py checks them against
closed forms.
"""
import types

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1


def batch_norm(inputs, decay=0.999, center=True, scale=False, epsilon=0.001, activation_fn=None,
               is_training=True, reuse=None, scope=None, fused=None, **unsupported):
    """tf.contrib.layers.batch_norm (TF 1.15) in training mode.

    Variables under ``scope`` (default 'BatchNorm'): ``beta`` (zeros) when center, ``gamma`` (ones)
    when scale, and non-trainable ``moving_mean`` / ``moving_variance`` (zeros / ones) in the global
    and moving-average collections. With is_training=True it normalises with the batch statistics
    over every axis but the last (biased variance), as contrib did; its moving-average updates go to
    UPDATE_OPS, which none of the originals run, so they are not built here. contrib's default
    fused=None took the fused kernel for 2-D and 4-D inputs; so does this stand-in in float32
    (FusedBatchNormV3 in TF 2.x, whose first and second derivatives are TensorFlow's registered
    ones, as in TF 1.x). That kernel has no float64 form, so in float64 (where golden tests compare
    to 1e-9) the same function is computed directly: mean, then the mean squared deviation from
    it. Not tf.nn.moments, whose stop_gradient on the mean inside the variance drops a
    second-derivative term the fused kernel keeps. Then ``activation_fn``.
    """
    if unsupported:
        raise NotImplementedError(f'batch_norm stand-in: unsupported arguments {sorted(unsupported)}')
    if not is_training:
        raise NotImplementedError('batch_norm stand-in: only is_training=True (what the originals use)')
    inputs = tf.convert_to_tensor(inputs)
    channels = inputs.shape[-1]
    dtype = inputs.dtype.base_dtype
    rank = inputs.shape.rank
    with v1.variable_scope(scope, 'BatchNorm', [inputs], reuse=reuse):
        beta = (v1.get_variable('beta', [channels], dtype, v1.zeros_initializer(), trainable=True)
                if center else tf.zeros([channels], dtype))
        gamma = (v1.get_variable('gamma', [channels], dtype, v1.ones_initializer(), trainable=True)
                 if scale else tf.ones([channels], dtype))
        moving = [v1.GraphKeys.GLOBAL_VARIABLES, v1.GraphKeys.MOVING_AVERAGE_VARIABLES]
        v1.get_variable('moving_mean', [channels], dtype, v1.zeros_initializer(), trainable=False,
                        collections=moving)
        v1.get_variable('moving_variance', [channels], dtype, v1.ones_initializer(),
                        trainable=False, collections=moving)
        fusable = rank in (2, 4) and dtype in (tf.float16, tf.bfloat16, tf.float32)
        if (fused is None or fused) and fusable:
            as_4d = inputs if rank == 4 else tf.reshape(inputs, [-1, 1, 1, channels])
            outputs, _, _ = v1.nn.fused_batch_norm(as_4d, gamma, beta, epsilon=epsilon,
                                                   is_training=True)
            outputs = tf.reshape(outputs, tf.shape(inputs)) if rank != 4 else outputs
        else:
            axes = list(range(rank - 1))
            mean = tf.reduce_mean(inputs, axes)
            variance = tf.reduce_mean(tf.square(inputs - mean), axes)
            outputs = (inputs - mean) * tf.math.rsqrt(variance + epsilon) * gamma + beta
        if activation_fn is not None:
            outputs = activation_fn(outputs)
    return outputs


def flatten(inputs, name=None):
    """tf.layers.flatten: [batch, ...] -> [batch, prod(...)], the batch size kept dynamic."""
    inputs = tf.convert_to_tensor(inputs)
    return tf.reshape(inputs, [tf.shape(inputs)[0], int(np.prod(inputs.shape[1:]))], name=name)


def _layer_scope(name, default, reuse):
    return v1.variable_scope(name, default_name=None if name else default, reuse=reuse)


def dense(inputs, units, activation=None, use_bias=True, kernel_initializer=None,
          bias_initializer=v1.zeros_initializer(), name=None, reuse=None):
    """tf.layers.dense: variables ``<name>/kernel`` [in, units], ``<name>/bias``. A 2-D input is
    a matmul; a higher-rank one (l2b's encoder passes [way, 64, 3] and [1, 32, 3]) is contracted
    on its last axis with tensordot, as TF 1.x's Dense.call did, so [..., in] -> [..., units]."""
    inputs = tf.convert_to_tensor(inputs)
    with _layer_scope(name, 'dense', reuse):
        kernel = v1.get_variable('kernel', [inputs.shape[-1], units], inputs.dtype,
                                 kernel_initializer or v1.glorot_uniform_initializer())
        if inputs.shape.rank > 2:
            outputs = tf.tensordot(inputs, kernel, [[inputs.shape.rank - 1], [0]])
        else:
            outputs = tf.matmul(inputs, kernel)
        if use_bias:
            outputs += v1.get_variable('bias', [units], inputs.dtype, bias_initializer)
    return activation(outputs) if activation is not None else outputs


def conv2d(inputs, filters, kernel_size, strides=(1, 1), padding='valid', activation=None,
           use_bias=True, kernel_initializer=None, bias_initializer=v1.zeros_initializer(),
           name=None, reuse=None):
    """tf.layers.conv2d, NHWC: variables ``<name>/kernel`` [kh, kw, in, filters], ``<name>/bias``."""
    inputs = tf.convert_to_tensor(inputs)
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    sh, sw = (strides, strides) if isinstance(strides, int) else strides
    with _layer_scope(name, 'conv2d', reuse):
        kernel = v1.get_variable('kernel', [kh, kw, inputs.shape[-1], filters], inputs.dtype,
                                 kernel_initializer or v1.glorot_uniform_initializer())
        outputs = tf.nn.conv2d(inputs, kernel, [1, sh, sw, 1], padding.upper())
        if use_bias:
            outputs += v1.get_variable('bias', [filters], inputs.dtype, bias_initializer)
    return activation(outputs) if activation is not None else outputs


def max_pooling2d(inputs, pool_size, strides, padding='valid', name=None):
    """tf.layers.max_pooling2d, NHWC (no variables)."""
    ph, pw = (pool_size, pool_size) if isinstance(pool_size, int) else pool_size
    sh, sw = (strides, strides) if isinstance(strides, int) else strides
    return tf.nn.max_pool2d(inputs, [ph, pw], [sh, sw], padding.upper(), name=name)


def layer_norm(*args, **kwargs):
    raise NotImplementedError('layer_norm stand-in: no golden test uses the layer-norm option')


def xavier_initializer(uniform=True, seed=None, dtype=tf.float32):
    """tf.contrib.layers.xavier_initializer: Glorot (fan_avg), uniform or truncated normal."""
    return v1.variance_scaling_initializer(
        1.0, 'fan_avg', 'uniform' if uniform else 'truncated_normal', seed=seed, dtype=dtype)


def l2_regularizer(scale, scope=None):
    """tf.contrib.layers.l2_regularizer: scale * sum(w^2) / 2, the scale converted straight to
    the weights' dtype as contrib did (tf.cast of a Python float would round it to float32 first,
    2e-8 off in float64)."""
    def regularizer(weights):
        return tf.multiply(tf.convert_to_tensor(scale, dtype=weights.dtype.base_dtype),
                           tf.nn.l2_loss(weights), name=scope or 'l2_regularizer')
    return regularizer


def accuracy(predictions, labels, weights=None, name=None):
    """tf.contrib.metrics.accuracy: mean of predictions == labels, as float32."""
    if weights is not None:
        raise NotImplementedError('accuracy stand-in: unweighted only')
    return tf.reduce_mean(tf.cast(tf.equal(predictions, labels), tf.float32), name=name)


def softmax_cross_entropy_in_input_dtype(onehot_labels, logits, weights=1.0, label_smoothing=0,
                                         scope=None, **unsupported):
    """tf.losses.softmax_cross_entropy (TF 1.15) at the arguments metadrop passes (weights 1, no
    label smoothing, reduction SUM_BY_NONZERO_WEIGHTS): softmax_cross_entropy_with_logits_v2 per
    example, the labels cast to the logits' dtype with their gradient stopped, summed and divided
    by the number of examples (div_no_nan), added to the LOSSES collection. TF's
    compute_weighted_loss casts the per-example losses to float32 for that mean and the result
    back, whatever the input's dtype: for float32 input this is the same computation; for float64
    it stays in float64 where TF's would round the loss and its gradient through float32 (1.5e-8
    relative), which a float64 golden run of an original in float32 must not pick up. Not in
    TF1Namespace: a float64 golden test puts it in its own namespace."""
    if unsupported or not (isinstance(weights, float) and weights == 1.0) or label_smoothing:
        raise NotImplementedError('softmax_cross_entropy stand-in: only weights=1.0 and no label '
                                  f'smoothing (got weights={weights!r}, label_smoothing='
                                  f'{label_smoothing!r}, {sorted(unsupported)})')
    with v1.name_scope(scope, 'softmax_cross_entropy_loss', (logits, onehot_labels)):
        logits = tf.convert_to_tensor(logits)
        onehot_labels = tf.stop_gradient(tf.cast(onehot_labels, logits.dtype))
        losses = tf.nn.softmax_cross_entropy_with_logits(labels=onehot_labels, logits=logits)
        loss = tf.math.divide_no_nan(tf.reduce_sum(losses), tf.cast(tf.size(losses), logits.dtype))
        v1.losses.add_loss(loss)
    return loss


contrib_layers = types.SimpleNamespace(
    batch_norm=batch_norm, layer_norm=layer_norm, xavier_initializer=xavier_initializer,
    xavier_initializer_conv2d=xavier_initializer, l2_regularizer=l2_regularizer, flatten=flatten)
contrib = types.SimpleNamespace(layers=contrib_layers,
                                metrics=types.SimpleNamespace(accuracy=accuracy))
layers = types.SimpleNamespace(flatten=flatten, dense=dense, conv2d=conv2d,
                               max_pooling2d=max_pooling2d)


class TF1Namespace(types.ModuleType):
    """What ``import tensorflow as tf`` gives an original: tf.compat.v1 plus the stand-ins."""

    def __init__(self):
        super().__init__('tensorflow')
        self.contrib = contrib
        self.layers = layers
        self.__path__ = []  # a package, so 'tensorflow.python...' submodules resolve via sys.modules

    def __getattr__(self, name):
        return getattr(v1, name)


def tensorflow_modules():
    """sys.modules entries answering an original's TensorFlow imports while its files execute."""
    namespace = TF1Namespace()
    contrib_module = types.ModuleType('tensorflow.contrib')
    contrib_module.__dict__.update(vars(contrib))
    contrib_module.__path__ = []
    layers_package = types.ModuleType('tensorflow.contrib.layers')
    layers_package.__dict__.update(vars(contrib_layers))
    layers_package.__path__ = []
    python_package = types.ModuleType('tensorflow.contrib.layers.python')
    python_package.layers = layers_package  # `from tensorflow.contrib.layers.python import layers`
    python_package.__path__ = []
    entries = {'tensorflow': namespace, 'tensorflow.contrib': contrib_module,
               'tensorflow.contrib.layers': layers_package,
               'tensorflow.contrib.layers.python': python_package,
               'tensorflow.contrib.layers.python.layers': layers_package}
    # Every other 'tensorflow.*' module (tensorflow.python.platform.flags, ...) stays TensorFlow's
    # own: it is already in sys.modules, so the import system never asks the namespace for it.
    return entries
