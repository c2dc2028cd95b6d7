"""Meta-Dropout (model/metadrop.py): the MAML family's flags plus the original's --maml switch
and its number of MC samples at test."""
from absl import flags

from model.methods import Method, register
from model.methods.maml import FAMILY_FLAGS, FAMILY_MODES, check_frozen, family_runner, maml_options

OWN_FLAGS = ('n_test_mc_samp', 'maml')
flags.DEFINE_integer('n_test_mc_samp', 1, 'MC samples of the inner-step loss at validation '
                     'and meta-test (--model metadrop; the runfiles use 30 at meta-test); 1 '
                     'at meta-train.')
flags.DEFINE_boolean('maml', False, "metadrop's switch back to plain MAML on the "
                     'Meta-Dropout code path: --model metadrop --maml has no noise and does '
                     'not train phi (a no-op with --model maml).')


def build(cfg, way, image_shape):
    from model.backbones import backbone_of
    from model.metadrop import MetaDropout
    net = backbone_of(cfg, way, image_shape)
    return MetaDropout(net, inner_lr=cfg.inner_lr, n_steps=cfg.n_steps,
                       n_test_steps=cfg.n_test_steps, n_test_mc_samp=cfg.n_test_mc_samp,
                       maml=cfg.maml, **maml_options(cfg, net))


def validate(cfg):
    errors = []
    if cfg.n_test_mc_samp < 1:
        errors.append(f'--n_test_mc_samp must be a positive integer, got {cfg.n_test_mc_samp}')
    if cfg.backbone not in ('conv4', 'maml_conv4'):
        errors.append(f'--model metadrop perturbs the blocks of conv4 / maml_conv4; '
                      f'--backbone {cfg.backbone} has no such blocks')
    if cfg.efficient and not cfg.maml:
        errors.append('--efficient recomputes each inner step in the backward pass, which '
                      "would redraw Meta-Dropout's noise; use it with the deterministic "
                      'models (maml, fomaml, metasgd, or metadrop --maml)')
    return errors


register(Method('metadrop', 'Meta-Dropout (Lee et al. 2020): learned multiplicative noise on '
                'the support features', FAMILY_MODES, build, family_runner,
                flags=OWN_FLAGS, shared=FAMILY_FLAGS, validate=validate,
                preflight=check_frozen))
