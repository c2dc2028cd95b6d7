"""ResNet-12 and ResNet-18 encoders of PyTorch-MAML (models/encoders/resnet12.py,
resnet18.py), with the functional forward of model/nets.py.

Both use torch's BatchNorm2d semantics (scale gamma and shift beta as fast weights in theta,
epsilon 1e-5), convolutions without bias initialised kaiming-normal (fan_out, gain sqrt(2)),
gamma 1 and beta 0, and a torch-default-initialised dense head. 3x3 convolutions pad one
pixel on each side as torch does (TF's 'SAME' pads a stride-2 convolution on an even input
on the right only, which would shift the sampling grid against the shortcut's).

ResNet-12 (widths [64, 128, 256, 512], wide: [64, 160, 320, 640]): four blocks of
  conv3x3-BN-LeakyReLU(0.1), conv3x3-BN-LeakyReLU(0.1), conv3x3-BN, plus a 1x1 conv-BN
  shortcut, added, LeakyReLU(0.1), 2x2 max-pool; then a global average pool.
  84 -> 42 -> 21 -> 10 -> 5 -> mean.
ResNet-18 (PyTorch-MAML's: a stem and ONE basic block per stage, so 9 convolutions, not a
  true 18-layer network): stem conv3x3-BN-ReLU at stride 1 without pooling; stages of one
  basic block (conv3x3(stride)-BN-ReLU-conv3x3-BN, plus shortcut, added, ReLU) with strides
  1, 2, 2, 2; then a global average pool. The original creates the stride-2 stages'
  1x1 shortcut convolution WITHOUT the stride, so the residual sum has mismatched sizes and
  the network cannot run; here the shortcut has the block's stride (the evident intent), and
  it is also used when the channel count changes.

Parameter names: layer{i}_conv{j}_w, layer{i}_bn{j}_gamma / _beta, layer{i}_sc_conv_w,
layer{i}_sc_bn_gamma / _beta (ResNet-18's stem is layer0), dense_w, dense_b. `--frozen bn`
or `--frozen layer1` select them by substring, as PyTorch-MAML's `frozen` list does.

WideResNet (WRN-28-10 of Zagoruyko & Komodakis, BMVC 2016; LEO's feature extractor): a 3x3
stem conv to 16 channels, three groups of (28 - 4) / 6 = 4 pre-activation basic blocks of
widths 16k, 32k, 64k (k = 10: 160, 320, 640) at strides 1, 2, 2, each block
BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3 plus the input (a 1x1 conv of the
activated input, with the stride, where the width changes), then BN-ReLU and a global
average pool: the 640-d penultimate features LEO's embeddings are. Convs without bias,
kaiming-normal (fan_out) as the other torch-style backbones here; BN gamma 1, beta 0,
epsilon 1e-5. With a 10-way head it has 36,479,194 parameters, the paper's 36.5M for CIFAR-10.
"""
import tensorflow as tf

from model.nets import (Backbone, TORCH_BN_EPSILON, batch_norm, kaiming_normal_fan_out, ones,
                        torch_default_uniform, zeros)

WIDTHS = {'resnet12': (64, 128, 256, 512), 'wide_resnet12': (64, 160, 320, 640),
          'resnet18': (64, 128, 256, 512), 'wide_resnet18': (64, 160, 320, 640)}
TORCH_PAD = [[0, 0], [1, 1], [1, 1], [0, 0]]


def leaky_relu_01(t):
    """torch's LeakyReLU(0.1). tf.nn.leaky_relu keeps its alpha as a float32 attribute, so in
    float64 its slope is 0.1 (1 + 1.5e-8), which the float64 golden tests see; float32 keeps
    the fused op (the same float32 slope as torch's)."""
    if t.dtype == tf.float64:
        return tf.where(t > 0., t, 0.1 * t)
    return tf.nn.leaky_relu(t, 0.1)


class _TorchStyleResNet(Backbone):

    def _conv(self, name, k, c_in, c_out):
        self.theta[f'{name}_w'] = tf.Variable(kaiming_normal_fan_out([k, k, c_in, c_out],
                                                                     self.dtype),
                                              name=f'{name}_w')

    def _bn(self, name, c):
        self.bn_channels[name] = c
        self.theta[f'{name}_gamma'] = tf.Variable(ones([c], self.dtype), name=f'{name}_gamma')
        self.theta[f'{name}_beta'] = tf.Variable(zeros([c], self.dtype), name=f'{name}_beta')

    @staticmethod
    def conv(h, w, stride=1):
        if w.shape[0] == 1:
            return tf.nn.conv2d(h, w, stride, 'VALID')
        return tf.nn.conv2d(h, w, stride, TORCH_PAD)

    def bn(self, h, p, name, norm):
        return batch_norm(h, p[f'{name}_beta'], TORCH_BN_EPSILON, p[f'{name}_gamma'], norm, name)

    def finish(self):
        self.add_head(torch_default_uniform(self.feature_dim),
                      torch_default_uniform(self.feature_dim))


class ResNet12(_TorchStyleResNet):

    def __init__(self, way, image_shape=(84, 84, 3), widths=WIDTHS['resnet12'],
                 dtype=tf.float32, zero_head=False, input_norm=None, name='theta'):
        super().__init__(way, image_shape, zero_head, input_norm, dtype, name)
        self.widths = tuple(widths)
        self.feature_dim = self.widths[-1]
        c_in = self.image_shape[-1]
        with self.name_scope:
            for i, c in enumerate(self.widths, start=1):
                for j in (1, 2, 3):
                    self._conv(f'layer{i}_conv{j}', 3, c_in if j == 1 else c, c)
                    self._bn(f'layer{i}_bn{j}', c)
                self._conv(f'layer{i}_sc_conv', 1, c_in, c)
                self._bn(f'layer{i}_sc_bn', c)
                c_in = c
        self.finish()

    def features(self, x, params=None, pre_bn=None, norm=None):
        if pre_bn is not None:
            raise ValueError('the ResNet backbones have no pre-BN hook (Meta-Dropout needs '
                             'conv4 or maml_conv4)')
        p = self.initial_params() if params is None else params
        h = self.prepare(x)
        lrelu = leaky_relu_01
        for i in range(1, len(self.widths) + 1):
            out = h
            for j in (1, 2, 3):
                out = self.bn(self.conv(out, p[f'layer{i}_conv{j}_w']), p,
                              f'layer{i}_bn{j}', norm)
                if j < 3:
                    out = lrelu(out)
            sc = self.bn(self.conv(h, p[f'layer{i}_sc_conv_w']), p, f'layer{i}_sc_bn', norm)
            h = tf.nn.max_pool2d(lrelu(out + sc), 2, 2, 'VALID')
        return tf.reduce_mean(h, axis=[1, 2])


class ResNet18(_TorchStyleResNet):
    STRIDES = (1, 2, 2, 2)

    def __init__(self, way, image_shape=(84, 84, 3), widths=WIDTHS['resnet18'],
                 dtype=tf.float32, zero_head=False, input_norm=None, name='theta'):
        super().__init__(way, image_shape, zero_head, input_norm, dtype, name)
        self.widths = tuple(widths)
        self.feature_dim = self.widths[-1]
        with self.name_scope:
            self._conv('layer0_conv1', 3, self.image_shape[-1], self.widths[0])
            self._bn('layer0_bn1', self.widths[0])
            c_in = self.widths[0]
            for i, (c, s) in enumerate(zip(self.widths, self.STRIDES), start=1):
                self._conv(f'layer{i}_conv1', 3, c_in, c)
                self._bn(f'layer{i}_bn1', c)
                self._conv(f'layer{i}_conv2', 3, c, c)
                self._bn(f'layer{i}_bn2', c)
                if self.has_shortcut(i, c_in):
                    self._conv(f'layer{i}_sc_conv', 1, c_in, c)
                    self._bn(f'layer{i}_sc_bn', c)
                c_in = c
        self.finish()

    def has_shortcut(self, i, c_in):
        return self.STRIDES[i - 1] > 1 or c_in != self.widths[i - 1]

    def features(self, x, params=None, pre_bn=None, norm=None):
        if pre_bn is not None:
            raise ValueError('the ResNet backbones have no pre-BN hook (Meta-Dropout needs '
                             'conv4 or maml_conv4)')
        p = self.initial_params() if params is None else params
        h = tf.nn.relu(self.bn(self.conv(self.prepare(x), p['layer0_conv1_w']), p,
                               'layer0_bn1', norm))
        for i, s in enumerate(self.STRIDES, start=1):
            out = tf.nn.relu(self.bn(self.conv(h, p[f'layer{i}_conv1_w'], s), p,
                                     f'layer{i}_bn1', norm))
            out = self.bn(self.conv(out, p[f'layer{i}_conv2_w']), p, f'layer{i}_bn2', norm)
            if f'layer{i}_sc_conv_w' in p:
                h = self.bn(self.conv(h, p[f'layer{i}_sc_conv_w'], s), p, f'layer{i}_sc_bn',
                            norm)
            h = tf.nn.relu(out + h)
        return tf.reduce_mean(h, axis=[1, 2])


class WideResNet(_TorchStyleResNet):
    """WRN-depth-k (see the module docstring); `dropout_rate` > 0 drops between the two convs
    of every block, as the WRN paper's dropout (MTL's pre-training passes its own rate)."""
    STRIDES = (1, 2, 2)   # of the three groups

    def __init__(self, way, image_shape=(80, 80, 3), depth=28, widen=10, dtype=tf.float32,
                 zero_head=False, input_norm=None, name='theta'):
        super().__init__(way, image_shape, zero_head, input_norm, dtype, name)
        if (depth - 4) % 6:
            raise ValueError(f'a WRN has depth 6n + 4, not {depth}')
        self.n_blocks = (depth - 4) // 6
        self.widths = (16 * widen, 32 * widen, 64 * widen)
        self.feature_dim = self.widths[-1]
        with self.name_scope:
            self._conv('stem_conv', 3, self.image_shape[-1], 16)
            c_in = 16
            for g, c in enumerate(self.widths, start=1):
                for b in range(1, self.n_blocks + 1):
                    block = f'group{g}_block{b}'
                    self._bn(f'{block}_bn1', c_in)
                    self._conv(f'{block}_conv1', 3, c_in, c)
                    self._bn(f'{block}_bn2', c)
                    self._conv(f'{block}_conv2', 3, c, c)
                    if c_in != c:
                        self._conv(f'{block}_sc_conv', 1, c_in, c)
                    c_in = c
            self._bn('final_bn', c_in)
        self.finish()

    def features(self, x, params=None, pre_bn=None, norm=None, dropout_rate=0.):
        if pre_bn is not None:
            raise ValueError('wrn28_10 has no pre-BN hook (Meta-Dropout needs conv4 or '
                             'maml_conv4)')
        p = self.initial_params() if params is None else params
        h = self.conv(self.prepare(x), p['stem_conv_w'])
        for g, stride in enumerate(self.STRIDES, start=1):
            for b in range(1, self.n_blocks + 1):
                block = f'group{g}_block{b}'
                s = stride if b == 1 else 1
                act = tf.nn.relu(self.bn(h, p, f'{block}_bn1', norm))
                out = self.conv(act, p[f'{block}_conv1_w'], s)
                out = tf.nn.relu(self.bn(out, p, f'{block}_bn2', norm))
                if dropout_rate:
                    out = tf.nn.dropout(out, rate=dropout_rate)
                out = self.conv(out, p[f'{block}_conv2_w'])
                # Zagoruyko's code: the shortcut conv takes the activated input.
                sc = f'{block}_sc_conv_w'
                h = out + (self.conv(act, p[sc], s) if sc in p else h)
        h = tf.nn.relu(self.bn(h, p, 'final_bn', norm))
        return tf.reduce_mean(h, axis=[1, 2])


def build(name, way, image_shape, n_channel=None, **kwargs):
    if n_channel is not None:
        raise ValueError(f'--n_channel does not apply to --backbone {name}; its widths are '
                         f'{WIDTHS[name]} (wide_{name.replace("wide_", "")} for the wide ones)')
    cls = ResNet12 if name.endswith('resnet12') else ResNet18
    return cls(way, image_shape, WIDTHS[name], **kwargs)
