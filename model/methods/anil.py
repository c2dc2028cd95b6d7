"""ANIL, "Almost No Inner Loop" (Raghu et al., ICLR 2020): MAML whose inner loop adapts the
classifier head only, while the outer loop meta-learns every parameter.

The worked example of docs/extending.md: a method written against the engine in one file.
The engine's MAML (model/maml.py) already takes the names of the parameters its inner loop
leaves alone (PyTorch-MAML's `frozen`), so ANIL is MAML with every parameter but the head
frozen: the encoder's features change only between meta-iterations, and the meta-gradient
of the encoder flows through the adapted head (second order, as in the paper's ANIL)."""
from model.methods import Method, register
from model.methods.maml import FAMILY_FLAGS, FAMILY_MODES, family_runner, maml_options


def build(cfg, way, image_shape, dtype=None):
    """dtype: the backbone's (float32 when None; the tests use float64)."""
    import tensorflow as tf
    from model.backbones import backbone_of
    from model.maml import MAML
    from model.nets import HEAD_KEYS
    net = backbone_of(cfg, way, image_shape, dtype or tf.float32)
    encoder = tuple(k for k in net.param_shapes() if k not in HEAD_KEYS)
    return MAML(net, inner_lr=cfg.inner_lr, n_steps=cfg.n_steps, n_test_steps=cfg.n_test_steps,
                **maml_options(cfg, net, frozen=encoder), name='anil')


register(Method(
    'anil', 'ANIL (Raghu et al. 2020): the inner loop adapts the head only, the outer loop '
    'trains everything', FAMILY_MODES, build, family_runner,
    # Everything MAML takes except --frozen, which ANIL fixes to the encoder.
    shared=tuple(n for n in FAMILY_FLAGS if n != 'frozen')))
