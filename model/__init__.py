"""The engine and the methods built on it.

`build_model(cfg, way, image_shape)` builds the method `cfg.model` names: each method declares
itself in model/methods/ (docs/extending.md). The package itself imports nothing heavy, so
that main.py parses flags and reports usage errors without loading TensorFlow.
"""
import os

# TensorFlow turns its oneDNN kernels on only for some CPUs; on the AMD EPYC machines this
# project is developed on they make the second-order MAML step 1.8x faster (benchmarks/).
# Takes effect only if TensorFlow is not imported yet; export TF_ENABLE_ONEDNN_OPTS=0 to
# turn it off.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')

# Names kept here for importers that predate model/backbones.py holding them.
_BACKBONE_HELPERS = ('resolve_frozen', 'input_normalization', 'FROZEN_ALIASES')


def build_model(cfg, way, image_shape):
    """The model of method cfg.model for tasks of `way` classes on inputs of `image_shape`:
    a module with `outer_variables` and `task_loss(xs, ys, xq, yq, training)`."""
    from model import methods
    return methods.build_model(cfg, way, image_shape)


def __getattr__(name):
    """resolve_frozen, input_normalization, FROZEN_ALIASES: model/backbones.py's (which
    imports TensorFlow), on first use."""
    if name in _BACKBONE_HELPERS:
        from model import backbones
        return getattr(backbones, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
