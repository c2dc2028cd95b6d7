"""Methods by name. Each builder takes the run configuration (flags), the number of classes
per task and the image shape, and returns a method module with `outer_variables` and
`task_loss(xs, ys, xq, yq, training) -> (loss, acc)`."""
import os

# TensorFlow turns its oneDNN kernels on only for some CPUs; on the AMD EPYC machines this
# project is developed on they make the second-order MAML step 1.8x faster (benchmarks/).
# Takes effect only if TensorFlow is not imported yet; export TF_ENABLE_ONEDNN_OPTS=0 to
# turn it off.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')

from data.augment import parse_normalization
from model import maml as _maml
from model import metadrop as _metadrop
from model import backbones as _backbones
from model import nets as _nets


def input_normalization(cfg):
    """--normalization -> None or (means, stds) (data/augment.py parse_normalization)."""
    return parse_normalization(getattr(cfg, 'normalization', 'none'), getattr(cfg, 'dataset', None))


FROZEN_ALIASES = {'encoder': lambda k: k not in _nets.HEAD_KEYS,
                  'classifier': lambda k: k in _nets.HEAD_KEYS,
                  'head': lambda k: k in _nets.HEAD_KEYS}


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


def _split(value):
    return [v.strip() for v in (value or '').split(',') if v.strip()]


def _backbone(cfg, way, image_shape):
    return _backbones.build_backbone(cfg.backbone, way, image_shape, cfg.n_channel,
                                zero_head=getattr(cfg, 'zero_head', False),
                                input_norm=input_normalization(cfg))


def _options(cfg, net):
    """The inner-loop and batch-norm options every MAML-family method takes."""
    return dict(inner_loss=cfg.inner_loss,
                outer_loss=getattr(cfg, 'outer_loss', 'mean'),
                bn_mode=getattr(cfg, 'bn_mode', 'transductive'),
                bn_momentum=getattr(cfg, 'bn_momentum', 0.1),
                frozen=resolve_frozen(_split(getattr(cfg, 'frozen', '')), list(net.param_shapes())),
                inner_momentum=getattr(cfg, 'inner_momentum', 0.),
                inner_weight_decay=getattr(cfg, 'inner_weight_decay', 0.),
                efficient=getattr(cfg, 'efficient', False))


def _build_maml_family(cfg, way, image_shape, first_order=False, meta_sgd=False):
    net = _backbone(cfg, way, image_shape)
    return _maml.MAML(net, inner_lr=cfg.inner_lr, n_steps=cfg.n_steps,
                      n_test_steps=cfg.n_test_steps, first_order=first_order,
                      meta_sgd=meta_sgd, alpha_init=cfg.alpha_init, **_options(cfg, net))


def _build_metadrop(cfg, way, image_shape):
    net = _backbone(cfg, way, image_shape)
    return _metadrop.MetaDropout(net, inner_lr=cfg.inner_lr, n_steps=cfg.n_steps,
                                 n_test_steps=cfg.n_test_steps,
                                 n_test_mc_samp=cfg.n_test_mc_samp, maml=cfg.maml,
                                 **_options(cfg, net))


def _build_taml(cfg, way, image_shape):
    from model import taml as _taml
    # l2b's Conv4: 32 channels whatever the input, and a constant zero head.
    net = _nets.Conv4(way, cfg.n_channel or 32, image_shape, 'metadrop', zero_head=True,
                      input_norm=input_normalization(cfg))
    return _taml.TAML(net, max_shot=cfg.max_shot, inner_lr=cfg.inner_lr, n_steps=cfg.n_steps,
                      n_test_steps=cfg.n_test_steps, alpha_on=cfg.alpha_on,
                      omega_on=cfg.omega_on, gamma_on=cfg.gamma_on, z_on=cfg.z_on,
                      alpha_init=0.01 if cfg.alpha_init is None else cfg.alpha_init,
                      n_mc_samples=cfg.n_mc_samples, l2b_padding=cfg.l2b_padding)


def _build_leo(cfg, way, image_shape):
    from model import leo as _leo
    if len(image_shape) != 1:
        raise ValueError(f'--model leo works on embedding vectors; --dataset {cfg.dataset} has '
                         f'images of shape {tuple(image_shape)} (use leo_mini, leo_tiered or '
                         'leo_custom)')
    return _leo.LEO(way, cfg.shot, image_shape[0], num_latents=cfg.num_latents,
                    inner_unroll_length=cfg.n_steps,
                    finetuning_unroll_length=cfg.finetuning_unroll_length,
                    inner_lr_init=cfg.inner_lr_init, finetuning_lr_init=cfg.finetuning_lr_init,
                    dropout_rate=cfg.dropout_rate, kl_weight=cfg.kl_weight,
                    encoder_penalty_weight=cfg.encoder_penalty_weight,
                    l2_penalty_weight=cfg.l2_penalty_weight,
                    orthogonality_penalty_weight=cfg.orthogonality_penalty_weight,
                    use_64bits_dtype=cfg.use_64bits_dtype,
                    original_kl_estimate=getattr(cfg, 'original_kl_estimate', False))


def _build_mtl(cfg, way, image_shape):
    from model import mtl as _mtl
    if len(image_shape) != 3:
        raise ValueError(f'--model mtl works on images; --dataset {cfg.dataset} has inputs '
                         f'of shape {tuple(image_shape)}')
    return _mtl.MTL(way, cfg.shot, image_shape, cfg.backbone_arch, cfg.img_size,
                    base_lr=cfg.inner_lr, n_steps=cfg.n_steps, n_test_steps=cfg.n_test_steps,
                    base_augmentation=cfg.base_augmentation, activation=cfg.activation,
                    norm=cfg.norm)


MODELS = {
    'maml': lambda cfg, way, shape: _build_maml_family(cfg, way, shape),
    'fomaml': lambda cfg, way, shape: _build_maml_family(cfg, way, shape, first_order=True),
    'metasgd': lambda cfg, way, shape: _build_maml_family(cfg, way, shape, meta_sgd=True),
    'metadrop': _build_metadrop,
    'taml': _build_taml,
    'leo': _build_leo,
    'mtl': _build_mtl,
}


def build_model(cfg, way, image_shape):
    if cfg.model not in MODELS:
        raise ValueError(f'unknown --model {cfg.model!r}; choose one of {", ".join(MODELS)}')
    return MODELS[cfg.model](cfg, way, image_shape)
