"""Backbones by flag value: metadrop's and cbfinn/maml's Conv4 (model/nets.py), PyTorch-MAML's
ConvNet4 and ResNets (model/nets.py, model/resnets.py).

The one place that knows every backbone, so that nets.py (the shared layers and Conv4) and
resnets.py (built on those layers) import in one direction only.
"""
import tensorflow as tf

from data.augment import parse_normalization
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


def input_normalization(cfg):
    """--normalization -> None or (means, stds) (data/augment.py parse_normalization)."""
    return parse_normalization(getattr(cfg, 'normalization', 'none'), getattr(cfg, 'dataset', None))


def backbone_of(cfg, way, image_shape, dtype=tf.float32):
    """The backbone the flags choose (--backbone, --n_channel, --zero_head, --normalization)."""
    return build_backbone(cfg.backbone, way, image_shape, cfg.n_channel, dtype=dtype,
                          zero_head=getattr(cfg, 'zero_head', False),
                          input_norm=input_normalization(cfg))


FROZEN_ALIASES = {'encoder': lambda k: k not in nets.HEAD_KEYS,
                  'classifier': lambda k: k in nets.HEAD_KEYS,
                  'head': lambda k: k in nets.HEAD_KEYS}


def resolve_frozen(patterns, names):
    """PyTorch-MAML's `frozen` list: each entry selects the parameters whose name contains
    it ('bn', 'conv1', 'layer2'); 'encoder' is everything but the head, 'classifier' (or
    'head') the head. An entry that selects nothing is an error (a typo would otherwise
    silently freeze nothing)."""
    frozen = []
    for pattern in patterns:
        match = FROZEN_ALIASES.get(pattern, lambda k, p=pattern: p in k)
        hits = [k for k in names if match(k)]
        if not hits:
            raise ValueError(f'--frozen {pattern!r} matches no parameter; the parameters are '
                             f'{", ".join(names)} (or use encoder / classifier)')
        frozen += [k for k in hits if k not in frozen]
    return tuple(frozen)
