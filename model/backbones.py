"""Backbones by flag value: metadrop's and cbfinn/maml's Conv4 (model/nets.py), PyTorch-MAML's
ConvNet4 and ResNets (model/nets.py, model/resnets.py).

The one place that knows every backbone, so that nets.py (the shared layers and Conv4) and
resnets.py (built on those layers) import in one direction only.
"""
import tensorflow as tf

from model import nets, resnets


BACKBONES = ('conv4', 'maml_conv4', 'convnet4', 'wide_convnet4', 'resnet12', 'wide_resnet12',
             'resnet18', 'wide_resnet18')


def build_backbone(name, way, image_shape, n_channel=None, dataset=None, dtype=tf.float32,
                   zero_head=False, input_norm=None):
    """Backbone by flag value. n_channel None -> the original's width (conv4 / maml_conv4:
    64 on 28x28 grey Omniglot-like inputs, 32 otherwise; convnet4 32, wide_convnet4 64).
    The ResNets have fixed widths and refuse n_channel."""
    omniglot_like = tuple(image_shape) == (28, 28, 1)
    extra = dict(dtype=dtype, zero_head=zero_head, input_norm=input_norm)
    if name in ('conv4', 'maml_conv4'):
        if n_channel is None:
            n_channel = 64 if omniglot_like else 32
        if name == 'conv4':
            return nets.Conv4(way, n_channel, image_shape, 'metadrop', **extra)
        return nets.Conv4(way, n_channel, image_shape, 'maml', max_pool=not omniglot_like, **extra)
    if name in ('convnet4', 'wide_convnet4'):
        if n_channel is None:
            n_channel = 64 if name.startswith('wide') else 32
        return nets.Conv4(way, n_channel, image_shape, 'pytorch', **extra)
    if name in ('resnet12', 'wide_resnet12', 'resnet18', 'wide_resnet18'):
        return resnets.build(name, way, image_shape, n_channel, **extra)
    raise ValueError(f'unknown backbone {name!r}; choose one of {", ".join(BACKBONES)}')
