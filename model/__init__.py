"""Methods by name. Each builder takes the run configuration (flags), the number of classes
per task and the image shape, and returns a method module with `outer_variables` and
`task_loss(xs, ys, xq, yq, training) -> (loss, acc)`."""
import os

# TensorFlow turns its oneDNN kernels on only for some CPUs; on the AMD EPYC machines this
# project is developed on they make the second-order MAML step 1.8x faster (benchmarks/).
# Takes effect only if TensorFlow is not imported yet; export TF_ENABLE_ONEDNN_OPTS=0 to
# turn it off.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')

from model import maml as _maml
from model import metadrop as _metadrop
from model import nets as _nets


def _build_maml_family(cfg, way, image_shape, first_order=False, meta_sgd=False):
    net = _nets.build_backbone(cfg.backbone, way, image_shape, cfg.n_channel)
    return _maml.MAML(net, inner_lr=cfg.inner_lr, n_steps=cfg.n_steps,
                      n_test_steps=cfg.n_test_steps, first_order=first_order,
                      meta_sgd=meta_sgd, alpha_init=cfg.alpha_init, inner_loss=cfg.inner_loss)


def _build_metadrop(cfg, way, image_shape):
    net = _nets.build_backbone(cfg.backbone, way, image_shape, cfg.n_channel)
    return _metadrop.MetaDropout(net, inner_lr=cfg.inner_lr, n_steps=cfg.n_steps,
                                 n_test_steps=cfg.n_test_steps,
                                 n_test_mc_samp=cfg.n_test_mc_samp, maml=cfg.maml,
                                 inner_loss=cfg.inner_loss)


MODELS = {
    'maml': lambda cfg, way, shape: _build_maml_family(cfg, way, shape),
    'fomaml': lambda cfg, way, shape: _build_maml_family(cfg, way, shape, first_order=True),
    'metasgd': lambda cfg, way, shape: _build_maml_family(cfg, way, shape, meta_sgd=True),
    'metadrop': _build_metadrop,
}


def build_model(cfg, way, image_shape):
    if cfg.model not in MODELS:
        raise ValueError(f'unknown --model {cfg.model!r}; choose one of {", ".join(MODELS)}')
    return MODELS[cfg.model](cfg, way, image_shape)
