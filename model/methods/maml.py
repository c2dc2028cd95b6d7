"""MAML (second order), first-order MAML and Meta-SGD (model/maml.py) on the shared engine:
their flags are all shared ones; Meta-SGD adds the initial value of its step sizes."""
from model import shared_flags as shared
from model.methods import Method, register

FAMILY_MODES = ('meta_train', 'meta_test', 'export', 'adv_test', 'embed')
# What every MAML-family method takes (Meta-Dropout and ANIL too).
FAMILY_FLAGS = (shared.RUN_FLAGS + shared.IMAGE_DATA_FLAGS + shared.INNER_FLAGS +
                shared.OUTER_FLAGS + shared.TASK_LOOP_FLAGS + shared.DEVICE_FLAGS +
                shared.BACKBONE_FLAGS + shared.MAML_ENGINE_FLAGS + shared.ADV_TEST_FLAGS +
                shared.EMBED_FLAGS)


def split(value):
    return [v.strip() for v in (value or '').split(',') if v.strip()]


def maml_options(cfg, net, frozen=None):
    """The inner-loop and batch-norm options every MAML-family method takes from the flags;
    `frozen` overrides --frozen (a method that fixes what its inner loop adapts)."""
    from model.backbones import resolve_frozen
    if frozen is None:
        frozen = resolve_frozen(split(getattr(cfg, 'frozen', '')), list(net.param_shapes()))
    return dict(inner_loss=cfg.inner_loss,
                outer_loss=getattr(cfg, 'outer_loss', 'mean'),
                bn_mode=getattr(cfg, 'bn_mode', 'transductive'),
                bn_momentum=getattr(cfg, 'bn_momentum', 0.1),
                frozen=frozen,
                inner_momentum=getattr(cfg, 'inner_momentum', 0.),
                inner_weight_decay=getattr(cfg, 'inner_weight_decay', 0.),
                efficient=getattr(cfg, 'efficient', False))


def builder(first_order=False, meta_sgd=False):
    def build(cfg, way, image_shape):
        from model.backbones import backbone_of
        from model.maml import MAML
        net = backbone_of(cfg, way, image_shape)
        return MAML(net, inner_lr=cfg.inner_lr, n_steps=cfg.n_steps,
                    n_test_steps=cfg.n_test_steps, first_order=first_order, meta_sgd=meta_sgd,
                    alpha_init=getattr(cfg, 'alpha_init', None), **maml_options(cfg, net))
    return build


def family_runner(cfg):
    from model.runner import Runner
    return Runner


def frozen_parameter_names(cfg):
    """The parameter names --frozen selects from: the backbone's, which do not depend on
    the image size, so a small stand-in input decides without loading the dataset."""
    from model import backbones
    shape = (28, 28, 1) if cfg.backbone in ('conv4', 'maml_conv4') else (32, 32, 3)
    return list(backbones.build_backbone(cfg.backbone, cfg.way, shape, cfg.n_channel,
                                         zero_head=cfg.zero_head).param_shapes())


def check_frozen(cfg):
    """--frozen names parameters of the chosen backbone (needs TensorFlow: a preflight)."""
    if not cfg.frozen:
        return []
    from model.backbones import resolve_frozen
    try:
        resolve_frozen(split(cfg.frozen), frozen_parameter_names(cfg))
    except ValueError as e:
        return [str(e)]
    return []


register(
    Method('maml', 'MAML, second order (Finn et al. 2017; metadrop\'s MAML code path)',
           FAMILY_MODES, builder(), family_runner, shared=FAMILY_FLAGS, preflight=check_frozen),
    Method('fomaml', 'first-order MAML: the meta-gradient ignores the inner loop\'s Jacobian',
           FAMILY_MODES, builder(first_order=True), family_runner, shared=FAMILY_FLAGS,
           preflight=check_frozen),
    Method('metasgd', 'Meta-SGD (Li et al. 2017): a learned step size per parameter entry',
           FAMILY_MODES, builder(meta_sgd=True), family_runner,
           shared=FAMILY_FLAGS + ('alpha_init',), preflight=check_frozen),
)
