"""Meta-Transfer Learning (Sun, Liu, Chua, Schiele, CVPR 2019), as the TF code of
yaoyao-liu/meta-transfer-learning computes it (the fidelity sheet, ../shared/fidelity/mtl.md).

Backbones (`MtlBackbone`), as the original's models/resnet12.py and resnet18.py:
- a conv block is conv2d (stride 1, SAME) + bias -> batch norm -> leaky ReLU (slope 0.1);
- batch norm is tf.contrib's with the original's settings: no gamma, a beta that is never
  trained or saved (so always 0), epsilon 1e-3 and always the statistics of the current
  batch (support and query are embedded in separate calls, so each has its own);
- ResNet-12: four blocks of 64, 128, 256, 512 channels; each is three conv blocks (the third
  activated before the add too), plus a bare 1x1 conv shortcut (no bias, BN or activation),
  the add, no activation after it, a 2x2 stride-2 VALID max-pool and dropout (pre-training
  only); 84 -> 42 -> 21 -> 10 -> 5, then a 5x5 VALID average pool -> 512-d features;
- ResNet-18: the input resized bilinearly to 224 in the graph (TF 1.x sampling, no half-pixel
  centres); a 7x7 stride-1 stem conv block and a 3x3 stride-2 SAME max-pool; eight blocks
  of two conv blocks plus a 1x1 conv shortcut, a 2x2 SAME max-pool after the second block
  of each stage; 7x7 average pool -> 512-d;
- Glorot-uniform kernels (xavier_initializer_conv2d), zero biases.
The weights keep the original's names (block1_conv1, block1_bias1, block1_conv_res, ...;
block0_1_conv1, block1_1_conv1, ... for ResNet-18), so its released npy files map one to one.

`--img_size` (84) is the backbone's input side. Images of another size are resized to it
bilinearly inside the graph, and grey images are replicated to three channels (Omniglot).
The final average pool covers the whole remaining map: 5x5 at 84 (the original), 1x1 at 28.

`MtlPretrainNet` is the pre-training classifier: backbone + an FC head (w5 [512, classes],
Glorot; b5 zeros), dropout 1 - pretrain_dropout_keep after every block, mean softmax
cross-entropy.

`MTL` is the meta-transfer learner:
- the backbone's kernels and biases are frozen (loaded from pre-training, never updated);
- scaling: one scalar per (input channel, output channel) kernel slice, [1, 1, Cin, Cout]
  initialised to 1 and multiplied into the frozen kernel (tiled over k x k);
- shifting: a learnable copy of each conv bias [Cout] (`copy_shift_from_backbone`), used
  instead of the frozen bias. Shortcut convs have neither and stay frozen. (With the
  affine-free batch-statistics batch norm every bias cancels exactly, so the shift gets a
  zero gradient, in the original as here; the parameters are kept for fidelity.)
- the base learner, a new FC (w5 [512, way] Glorot, b5 zeros), meta-learned as an
  initialisation;
- the inner loop adapts the FC only, with plain SGD at --base_lr (1e-3) on the original's
  loss: per-example cross-entropy / shot, summed (so the step is way x that of the mean
  loss); 20 steps at meta-train and validation, second order (no stop_gradient: the
  meta-gradient reaches the FC initialisation and, through the support embeddings, the SS
  parameters); 100 steps at meta-test in a tf.while_loop, recording the query accuracy after
  every step, on the support set doubled by horizontal flips (--base_augmentation);
- the outer loss of a task is its query cross-entropy summed / shot; a metabatch's loss is
  the mean over its tasks.
"""
import collections

import numpy as np
import sonnet as snt
import tensorflow as tf

from model import nets, resnets, steps

ORIGINAL_ARCHS = ('resnet12', 'resnet18')
# wrn28_10: not the original's; LEO's feature extractor, for --mode pretrain and embed only.
ARCHS = ORIGINAL_ARCHS + ('wrn28_10',)
ACTIVATIONS = ('leaky_relu', 'relu', 'None')
NORMS = ('batch_norm', 'layer_norm', 'None')
LEAKY_SLOPE = 0.1          # utils/misc.py leaky_relu: max(x, 0.1 x)
BN_EPSILON = 1e-3          # tf.contrib.layers.batch_norm
LN_EPSILON = 1e-12         # tf.contrib.layers.layer_norm (tf.nn.batch_normalization's)
RESNET12_CHANNELS = (64, 128, 256, 512)
RESNET18_BLOCKS = ((64, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256),
                   (256, 512), (512, 512))   # block{1..4}_{1,2}: (Cin, C)
RESNET18_INPUT = 224
FEATURE_DIM = 512


def activation_fn(name):
    if name == 'leaky_relu':
        return lambda x: tf.maximum(x, LEAKY_SLOPE * x)
    if name == 'relu':
        return tf.nn.relu
    if name == 'None':
        return tf.identity
    raise ValueError(f'activation {name!r} is not one of {", ".join(ACTIVATIONS)}')


def normalize(x, norm, stats=None, name=None):
    """The original's `normalize`: batch norm with the current batch's statistics and no
    affine part (gamma absent, beta always 0), layer norm over all but the batch axis (its
    gamma 1 and beta 0 are never trained), or nothing. `stats` (a nets norm callable, with
    the layer `name`) replaces the batch's statistics (--mode embed's population ones)."""
    if norm == 'batch_norm':   # (the fused kernel where it applies: nets.batch_norm)
        return nets.batch_norm(x, tf.zeros([x.shape[-1]], x.dtype), BN_EPSILON, norm=stats,
                               name=name)
    if norm == 'layer_norm':
        axes = list(range(1, x.shape.rank))
        mean = tf.reduce_mean(x, axes, keepdims=True)
        var = tf.reduce_mean(tf.square(x - mean), axes, keepdims=True)
        return (x - mean) * tf.math.rsqrt(var + LN_EPSILON)
    if norm == 'None':
        return x
    raise ValueError(f'norm {norm!r} is not one of {", ".join(NORMS)}')


def conv(x, kernel):
    return tf.nn.conv2d(x, kernel, 1, 'SAME')


def final_pool_size(arch, img_size):
    """Side of the last feature map (the average pool's window): 5 for ResNet-12 at 84."""
    if arch == 'resnet18':
        return 7
    side = img_size
    for _ in RESNET12_CHANNELS:
        side //= 2   # 2x2 stride-2 VALID max-pool floors
    return side


def resize_bilinear_tf1(images, size):
    """TF 1.x's resize_images BILINEAR (no aligned corners, no half-pixel centres) computed in
    the images' own dtype: the kernel's sampling grid (source position out * (in / out) in
    float32, as the kernel computes it; lower = floor, upper = ceil clipped to the edge) and
    its interpolation order (along x on the two rows, then along y)."""
    def grid(n_in, n_out):
        position = np.arange(n_out, dtype=np.float32) * (np.float32(n_in) / np.float32(n_out))
        lower = np.floor(position)
        upper = np.minimum(np.ceil(position), n_in - 1)
        return lower.astype(np.int32), upper.astype(np.int32), position - lower

    (top, bottom, y_lerp), (left, right, x_lerp) = (
        grid(n_in, n_out) for n_in, n_out in zip(images.shape[1:3], size))
    x_lerp = tf.constant(x_lerp.reshape(1, 1, -1, 1), images.dtype)
    y_lerp = tf.constant(y_lerp.reshape(1, -1, 1, 1), images.dtype)

    def along_x(rows):
        lo, hi = tf.gather(rows, left, axis=2), tf.gather(rows, right, axis=2)
        return lo + (hi - lo) * x_lerp
    upper_row = along_x(tf.gather(images, top, axis=1))
    lower_row = along_x(tf.gather(images, bottom, axis=1))
    return upper_row + (lower_row - upper_row) * y_lerp


class MtlBackbone(snt.Module):
    """The original's ResNet-12 / ResNet-18 with its weights dict (`self.weights`, ordered,
    the original's key names) and a functional forward that can scale and shift."""
    feature_dim = FEATURE_DIM

    def __init__(self, arch='resnet12', image_shape=(84, 84, 3), img_size=84,
                 activation='leaky_relu', norm='batch_norm', trainable=True, name='backbone'):
        super().__init__(name=name)
        if arch not in ORIGINAL_ARCHS:
            raise ValueError(f'backbone {arch!r} is not one of {", ".join(ORIGINAL_ARCHS)} '
                             '(make_backbone builds wrn28_10)')
        self.arch = arch
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) != 3 or self.image_shape[-1] not in (1, 3):
            raise ValueError(f'MTL needs images of shape (H, W, 1 or 3), got {self.image_shape}')
        self.img_size = int(img_size)
        if arch == 'resnet12' and final_pool_size(arch, self.img_size) < 1:
            raise ValueError(f'--img_size {self.img_size} is too small for ResNet-12\'s four '
                             '2x2 VALID max-pools: use at least 16 (the original: 84)')
        self.activation = activation
        self.act = activation_fn(activation)
        self.norm = norm
        normalize(tf.zeros([1, 1, 1, 1]), norm)   # validates the name
        self.weights = collections.OrderedDict()
        self.conv_keys = []   # the kernels that carry scaling (and their bias a shift)
        with self.name_scope:
            if arch == 'resnet12':
                cin = 3
                for b, c in enumerate(RESNET12_CHANNELS, 1):
                    for j in (1, 2, 3):
                        self._conv_weights(f'block{b}_conv{j}', f'block{b}_bias{j}', 3,
                                           cin if j == 1 else c, c, trainable)
                    self._add(f'block{b}_conv_res', [1, 1, cin, c], nets.glorot_uniform,
                              trainable)
                    cin = c
            else:
                self._conv_weights('block0_1_conv1', 'block0_1_bias1', 7, 3, 64, trainable)
                for i, (cin, c) in enumerate(RESNET18_BLOCKS):
                    block = f'block{i // 2 + 1}_{i % 2 + 1}'
                    self._conv_weights(f'{block}_conv1', f'{block}_bias1', 3, cin, c, trainable)
                    self._conv_weights(f'{block}_conv2', f'{block}_bias2', 3, c, c, trainable)
                    self._add(f'{block}_conv_res', [1, 1, cin, c], nets.glorot_uniform,
                              trainable)

    def _add(self, key, shape, init, trainable):
        self.weights[key] = tf.Variable(init(shape, tf.float32), name=key, trainable=trainable)

    def _conv_weights(self, kernel, bias, k, cin, cout, trainable):
        self._add(kernel, [k, k, cin, cout], nets.glorot_uniform, trainable)
        self._add(bias, [cout], nets.zeros, trainable)
        self.conv_keys.append(kernel)

    @staticmethod
    def bias_key(kernel_key):
        """block1_conv2 -> block1_bias2 (the original's pairing)."""
        head, j = kernel_key.rsplit('_conv', 1)
        return f'{head}_bias{j}'

    def ss_shapes(self):
        """Shapes of the scaling ([1, 1, Cin, Cout] per kernel) and shift ([Cout]) parameters."""
        out = collections.OrderedDict()
        for k in self.conv_keys:
            shape = self.weights[k].shape.as_list()
            out[k] = [1, 1, shape[2], shape[3]]
            out[self.bias_key(k)] = [shape[3]]
        return out

    def prepare(self, x):
        """Images (flat or NHWC, any size, grey or RGB) -> [B, img_size, img_size, 3]."""
        h = tf.reshape(x, [-1, *self.image_shape])
        if self.image_shape[-1] == 1:
            h = tf.tile(h, [1, 1, 1, 3])
        if self.image_shape[:2] != (self.img_size, self.img_size):
            h = tf.image.resize(h, [self.img_size, self.img_size], method='bilinear')
        if self.arch == 'resnet18':
            # The original's tf.image.resize_images (TF 1.x): bilinear without half-pixel
            # centres. TF 2's tf.image.resize uses them, which shifts the sampling grid and
            # changed the features by ~7% of their scale (tests/golden/test_mtl.py).
            size = [RESNET18_INPUT, RESNET18_INPUT]
            if h.dtype == tf.float64:
                # TF's resize kernel returns float32 whatever its input; the float64 twin of
                # tests/test_fused_batch_norm.py needs the same resize in float64.
                return resize_bilinear_tf1(h, size)
            h = tf.compat.v1.image.resize_images(h, size,
                                                 tf.compat.v1.image.ResizeMethod.BILINEAR)
        return h

    @property
    def bn_layers(self):
        """The batch-norm layers in forward order (named by their kernel), for statistics."""
        return list(self.conv_keys) if self.norm == 'batch_norm' else []

    def conv_block(self, h, kernel_key, ss, weights, stats=None):
        kernel = weights[kernel_key]
        bias = weights[self.bias_key(kernel_key)]
        if ss is not None:
            kernel = kernel * ss[kernel_key]        # broadcasts over the k x k taps
            bias = ss[self.bias_key(kernel_key)]    # the shift replaces the frozen bias
        return self.act(normalize(conv(h, kernel) + bias, self.norm, stats, kernel_key))

    def features(self, x, ss=None, dropout_rate=0., weights=None, shapes=None, stats=None):
        """[B, 512] features. `ss` (mapping of scales and shifts) turns on meta-transfer;
        `dropout_rate` > 0 drops after every block (pre-training); `weights` replaces the
        variables (tests); `shapes`, a list, receives the input's and every block's output
        shape."""
        w = self.weights if weights is None else weights
        h = self.prepare(x)
        record = shapes.append if shapes is not None else (lambda _: None)
        record(h.shape.as_list())

        def dropout(h):
            record(h.shape.as_list())
            return tf.nn.dropout(h, rate=dropout_rate) if dropout_rate else h

        if self.arch == 'resnet12':
            for b in range(1, len(RESNET12_CHANNELS) + 1):
                inp = h
                for j in (1, 2, 3):
                    h = self.conv_block(h, f'block{b}_conv{j}', ss, w, stats)
                h = h + conv(inp, w[f'block{b}_conv_res'])
                h = tf.nn.max_pool2d(h, 2, 2, 'VALID')
                h = dropout(h)
            side = h.shape[1]
            h = tf.nn.avg_pool2d(h, side, side, 'VALID')
        else:
            h = self.conv_block(h, 'block0_1_conv1', ss, w, stats)
            h = tf.nn.max_pool2d(h, 3, 2, 'SAME')
            h = dropout(h)
            for i in range(len(RESNET18_BLOCKS)):
                block = f'block{i // 2 + 1}_{i % 2 + 1}'
                inp = h
                h = self.conv_block(h, f'{block}_conv1', ss, w, stats)
                h = self.conv_block(h, f'{block}_conv2', ss, w, stats)
                h = h + conv(inp, w[f'{block}_conv_res'])
                if i % 2 == 1:
                    h = tf.nn.max_pool2d(h, 2, 2, 'SAME')
                h = dropout(h)
            h = tf.nn.avg_pool2d(h, 7, 7, 'SAME')
        return tf.reshape(h, [-1, FEATURE_DIM])


class MtlWideResNet(snt.Module):
    """--backbone_arch wrn28_10: resnets.WideResNet (WRN-28-10, LEO's feature extractor)
    behind MtlBackbone's interface, for MTL's pre-training (a plain classifier on the
    meta-train classes, which is what LEO's paper describes) and --mode embed. Its input
    goes through MtlBackbone's preparation (grey replicated to RGB, resized to --img_size);
    pre-training's dropout falls between the two convs of every block (the WRN paper's
    place). It has no scaling and shifting: meta-transfer is defined on the original's
    ResNets, so MtlRunner refuses meta_train and meta_test with it."""
    feature_dim = 640

    def __init__(self, image_shape=(84, 84, 3), img_size=84, name='backbone'):
        super().__init__(name=name)
        self.arch = 'wrn28_10'
        self.image_shape = tuple(int(s) for s in image_shape)
        self.img_size = int(img_size)
        with self.name_scope:
            self.net = resnets.WideResNet(1, (self.img_size, self.img_size, 3), zero_head=True)
        self.weights = self.net.theta
        self.conv_keys = []

    prepare = MtlBackbone.prepare

    @property
    def bn_layers(self):
        return list(self.net.bn_channels)

    def ss_shapes(self):
        return collections.OrderedDict()

    def features(self, x, ss=None, dropout_rate=0., weights=None, shapes=None, stats=None):
        if ss:
            raise ValueError('wrn28_10 has no scaling and shifting (meta-transfer)')
        return self.net.features(self.prepare(x), weights, norm=stats, dropout_rate=dropout_rate)


def make_backbone(arch, image_shape, img_size, activation, norm, trainable=True):
    """The backbone --backbone_arch names (WRN-28-10 keeps Zagoruyko's torch-style BN with
    gamma and beta, and ReLU, whatever --activation and --norm say)."""
    if arch == 'wrn28_10':
        return MtlWideResNet(image_shape, img_size)
    return MtlBackbone(arch, image_shape, img_size, activation, norm, trainable=trainable)


def fc_weights(n_classes, name, dim=FEATURE_DIM):
    """The original's construct_fc_weights: w5 [512, n] Glorot uniform, b5 zeros (w5 [640, n]
    on wrn28_10)."""
    return collections.OrderedDict(
        w5=tf.Variable(nets.glorot_uniform([dim, n_classes], tf.float32),
                       name=f'{name}_w5'),
        b5=tf.Variable(tf.zeros([n_classes]), name=f'{name}_b5'))


def fc_forward(feats, fc):
    return tf.matmul(feats, fc['w5']) + fc['b5']


def xent(logits, labels):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def accuracy(logits, labels):
    return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32),
                                           labels), tf.float32))


class MtlPretrainNet(snt.Module):
    """Pre-training: the backbone and an n-way FC (the original's `pre` phase)."""

    def __init__(self, n_classes, arch='resnet12', image_shape=(84, 84, 3), img_size=84,
                 dropout_keep=0.9, activation='leaky_relu', norm='batch_norm',
                 name='mtl_pretrain'):
        super().__init__(name=name)
        self.n_classes = int(n_classes)
        self.dropout_rate = 1. - float(dropout_keep)
        self.backbone = make_backbone(arch, image_shape, img_size, activation, norm)
        with self.name_scope:
            self.fc = fc_weights(self.n_classes, 'fc', self.backbone.feature_dim)

    @property
    def outer_variables(self):
        return list(self.backbone.weights.values()) + list(self.fc.values())

    def batch_loss(self, x, y, training=True):
        """(mean cross-entropy, accuracy) of a batch; dropout only when training."""
        feats = self.backbone.features(x, dropout_rate=self.dropout_rate if training else 0.)
        logits = fc_forward(feats, self.fc)
        return tf.reduce_mean(xent(logits, y)), accuracy(logits, y)


class MTL(snt.Module):
    """The meta-transfer learner (see the module docstring)."""

    def __init__(self, way, shot, image_shape=(84, 84, 3), arch='resnet12', img_size=84,
                 base_lr=1e-3, n_steps=20, n_test_steps=100, base_augmentation=True,
                 activation='leaky_relu', norm='batch_norm', name='mtl'):
        super().__init__(name=name)
        self.way, self.shot = int(way), int(shot)
        self.base_lr = float(base_lr)
        self.n_steps, self.n_test_steps = int(n_steps), int(n_test_steps)
        self.base_augmentation = bool(base_augmentation)
        self.backbone = make_backbone(arch, image_shape, img_size, activation, norm,
                                      trainable=False)
        with self.name_scope:
            self.ss = collections.OrderedDict()
            for k, shape in self.backbone.ss_shapes().items():
                init = tf.ones if '_conv' in k else tf.zeros
                self.ss[k] = tf.Variable(init(shape), name=f'ss_{k}')
            self.fc = fc_weights(self.way, 'fc', self.backbone.feature_dim)

    @property
    def outer_variables(self):
        """What the outer Adam updates: every scale and shift, and the FC initialisation."""
        return list(self.ss.values()) + list(self.fc.values())

    def copy_shift_from_backbone(self):
        """The original's trainer/meta.py: each shift starts as the pre-trained bias."""
        for k in self.ss:
            if '_bias' in k:
                self.ss[k].assign(self.backbone.weights[k])

    def embed(self, x):
        return self.backbone.features(x, ss=self.ss)

    def inner_loss(self, feats, labels, fc):
        """The original's base-learner loss: per-example cross-entropy / shot, summed."""
        return tf.reduce_sum(xent(fc_forward(feats, fc), labels)) / self.shot

    def inner_step(self, feats, labels, fc):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(list(fc.values()))
            loss = self.inner_loss(feats, labels, fc)
        grads = tape.gradient(loss, list(fc.values()))
        return collections.OrderedDict((k, v - self.base_lr * g)
                                       for (k, v), g in zip(fc.items(), grads))

    def adapt(self, fs, ys, n_steps):
        """The FC after n_steps unrolled SGD steps from the meta-learned initialisation
        (second order: the gradients stay on any enclosing tape)."""
        fc = collections.OrderedDict((k, tf.convert_to_tensor(v)) for k, v in self.fc.items())
        for _ in range(n_steps):
            fc = self.inner_step(fs, ys, fc)
        return fc

    def class_accuracy(self, logits, labels):
        """[way] accuracy of the queries of each class (the HT meta-batch's ranking)."""
        correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels),
                          tf.float32)
        onehot = tf.one_hot(labels, self.way)
        return tf.reduce_sum(onehot * correct[:, None], 0) / tf.maximum(
            tf.reduce_sum(onehot, 0), 1.)

    def task_loss(self, xs, ys, xq, yq, training=True):
        """Meta-train forward of one task: (query xent sum / shot, query accuracy,
        {'class_acc': [way]})."""
        fs, fq = self.embed(xs), self.embed(xq)   # two calls: separate batch statistics
        fc = self.adapt(fs, ys, self.n_steps)
        logits = fc_forward(fq, fc)
        loss = tf.reduce_sum(xent(logits, yq)) / self.shot
        return loss, accuracy(logits, yq), dict(class_acc=self.class_accuracy(logits, yq))

    def augment_support(self, xs, ys):
        """The original's meta-test support set: the K*N images, then their horizontal
        flips, labels repeated."""
        x = tf.reshape(xs, [-1, *self.backbone.image_shape])
        return tf.concat([x, x[:, :, ::-1, :]], 0), tf.concat([ys, ys], 0)

    def evaluate_task(self, xs, ys, xq, yq, n_steps, augment):
        """Adaptation in a tf.while_loop; returns (query xent sum / shot after the last
        step, [n_steps] query accuracy after each step)."""
        if augment:
            xs, ys = self.augment_support(xs, ys)
        fs, fq = self.embed(xs), self.embed(xq)
        keys = list(self.fc)
        accs = tf.TensorArray(tf.float32, size=n_steps)

        def body(i, values, accs):
            fc = self.inner_step(fs, ys, collections.OrderedDict(zip(keys, values)))
            accs = accs.write(i, accuracy(fc_forward(fq, fc), yq))
            return i + 1, [fc[k] for k in keys], accs

        start = [tf.convert_to_tensor(self.fc[k]) for k in keys]
        _, values, accs = tf.while_loop(lambda i, *_: i < n_steps, body,
                                        (tf.constant(0), start, accs))
        logits = fc_forward(fq, collections.OrderedDict(zip(keys, values)))
        return tf.reduce_sum(xent(logits, yq)) / self.shot, accs.stack()


def apply_if_finite(optimizer, loss, grads):
    """optimizer.apply(grads) inside a tf.cond, only when the loss and every gradient entry
    are finite; returns whether it ran (weights and Adam state untouched otherwise)."""
    finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(x))
                                     for x in [loss, *grads]]))

    def update():
        optimizer.apply(grads)
        return tf.constant(True)
    return tf.cond(finite, update, lambda: tf.constant(False))


def make_meta_train_step(model, optimizer, spec, task_loop='while', parallel_tasks=1):
    """(xs, ys, xq, yq) -> (metabatch loss, per-task accuracy [T], applied, per-class query
    accuracy [T, way]): the original's step (mean over tasks of the per-task loss, Adam on
    SS and FC, no clipping); skipped, weights and Adam state untouched, when the loss or a
    meta-gradient entry is not finite. task_loop: steps.metabatch_gradient's ('while': one
    traced task in a tf.while_loop, parallel_tasks of them in flight; 'unrolled': every
    task in the graph)."""
    n_tasks = spec[0].shape[0]
    variables = model.outer_variables

    @tf.function(input_signature=spec, autograph=False)
    def step(xs, ys, xq, yq):
        loss, acc, grads, metrics = steps.metabatch_gradient(
            lambda t: model.task_loss(xs[t], ys[t], xq[t], yq[t]), n_tasks, variables,
            ('class_acc',), task_loop, parallel_tasks)
        return loss, acc, apply_if_finite(optimizer, loss, grads), metrics['class_acc']

    return step


def make_eval_step(model, spec, n_steps, augment):
    """(xs, ys, xq, yq) of T tasks -> (query loss [T], query accuracy after each inner
    step [T, n_steps])."""
    @tf.function(input_signature=spec)
    def step(xs, ys, xq, yq):
        return tf.map_fn(lambda e: model.evaluate_task(*e, n_steps, augment),
                         (xs, ys, xq, yq), fn_output_signature=(tf.float32, tf.float32))
    return step


def make_pretrain_step(model, optimizer, spec):
    """(x, y) -> (loss, accuracy, applied): one Adam step of pre-training."""
    variables = model.outer_variables

    @tf.function(input_signature=spec)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss, acc = model.batch_loss(x, y, training=True)
        return loss, acc, apply_if_finite(optimizer, loss, tape.gradient(loss, variables))
    return step


def halving_schedule(base, iteration, drop_step, rate=0.5, floor=None):
    """The originals' learning rate at iteration i: after every iteration i > 0 with
    i % drop_step == 0 the rate is multiplied by `rate` (floored at `floor` when given), so
    iterations 0..drop_step use `base`, drop_step+1..2 drop_step base*rate, ..."""
    k = max(0, (int(iteration) - 1) // int(drop_step))
    lr = base
    for _ in range(k):   # step by step, as the original multiplies and floors
        lr = lr * rate
        if floor is not None:
            lr = max(lr, floor)
    return lr


def hard_task_classes(classes, class_acc, way, rng):
    """The HT meta-batch's class set: each task's failure class (its lowest query accuracy;
    ties broken at random), then, while fewer than `way` distinct classes, the next-hardest
    classes of the metabatch by class accuracy. classes [T, way] are dataset class ids,
    class_acc [T, way] their query accuracies. Returns `way` distinct ids, hardest first."""
    classes = np.asarray(classes)
    class_acc = np.asarray(class_acc, np.float64)
    tie = rng.random(class_acc.shape)
    order = np.lexsort((tie.ravel(), class_acc.ravel()))   # by accuracy, ties random
    chosen = []
    # failure classes first, in order of their accuracy
    failures = [int(np.lexsort((tie[t], class_acc[t]))[0]) for t in range(len(classes))]
    failure_ids = sorted(range(len(classes)), key=lambda t: (class_acc[t, failures[t]],
                                                              tie[t, failures[t]]))
    for t in failure_ids:
        c = int(classes[t, failures[t]])
        if c not in chosen:
            chosen.append(c)
    for flat in order:
        if len(chosen) >= way:
            break
        c = int(classes.ravel()[flat])
        if c not in chosen:
            chosen.append(c)
    return np.asarray(chosen[:way], np.int64)
