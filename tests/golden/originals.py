"""Loading the originals' own code beside ours, for the golden tests.

The originals are TF 1.x (and Sonnet 1) programs. They are never copied into this project: each
golden test imports their files from the folder named by ``METALEARN_ORIGINALS`` (a user's own
clones of the six repositories, side by side) or, by default, ``../shared/originals`` beside the
checkout. Where neither exists the golden tests skip with one line saying how to get them.

Two things stand between a TF 1.x file and TF 2.x:
- names that TF 2.x no longer has (``tf.contrib``, ``tf.layers``, Sonnet 1). The original's
  ``import tensorflow as tf`` is answered with :class:`TF1Namespace`, ``tf.compat.v1`` plus the
  stand-ins of :mod:`tests.golden.tf1_standins`; everything else is TensorFlow's own;
- bare sibling imports (``from utils import ...``, ``import data``, ``from layers import *``) whose
  names collide with this project's own ``model`` and ``data`` packages. :func:`load_original`
  resolves them to the original's folder while it executes the files and restores ``sys.modules``
  afterwards, so the rest of the test run sees the project's modules again.

Graph code must then run inside ``tf.Graph().as_default()`` with a ``tf.compat.v1.Session``; nothing
here calls ``disable_v2_behavior()``, which is process-wide.
"""
import contextlib
import importlib.abc
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

REPOSITORIES = {
    'maml': ('cbfinn/maml', 'a7f45f1bcd7457fe97b227a21e89b8a82cc5fa49'),
    'metadrop': ('haebeom-lee/metadrop', '41a97e705b27f122ed79c7e0fa3110774142cb41'),
    'l2b': ('haebeom-lee/l2b', '27680db889cf76019e25108f6463c5283575a873'),
    'leo': ('deepmind/leo', 'de9a0c2a77dd7a42c1986b1eef18d184a86e294a'),
    'meta-transfer-learning': ('yaoyao-liu/meta-transfer-learning',
                               '7f71fdd4b78b6c8d2e2fc1e0faa60a4aaaabae88'),
    'PyTorch-MAML': ('fmu2/PyTorch-MAML', '19246a1ff9a1f47470dce80ed9e9332042f9e151'),
}

DEFAULT_ROOT = Path(__file__).resolve().parents[3] / 'shared' / 'originals'


def originals_root():
    """The folder holding the originals: $METALEARN_ORIGINALS, else ../shared/originals."""
    return Path(os.environ.get('METALEARN_ORIGINALS') or DEFAULT_ROOT)


def original_dir(name):
    """The folder of one original (a key of REPOSITORIES), or skip the calling test."""
    folder = originals_root() / name
    if not folder.is_dir():
        repo, commit = REPOSITORIES[name]
        pytest.skip(f'golden tests need the original {repo}: clone it at {commit} into '
                    f'{originals_root()}/{name}, or set METALEARN_ORIGINALS to a folder holding '
                    f'clones named {", ".join(REPOSITORIES)}')
    return folder


class _FolderFinder(importlib.abc.MetaPathFinder):
    """Resolves top-level imports to an original's folder while its files execute."""

    def __init__(self, folder, names):
        self.folder, self.names = folder, names

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.split('.')[0]
        if top not in self.names:
            return None
        parts = fullname.split('.')
        base = self.folder.joinpath(*parts)
        if (base / '__init__.py').is_file():
            return importlib.util.spec_from_file_location(
                fullname, base / '__init__.py', submodule_search_locations=[str(base)])
        if base.with_suffix('.py').is_file():
            return importlib.util.spec_from_file_location(fullname, base.with_suffix('.py'))
        if base.is_dir():  # a namespace folder such as MTL's tensorflow/models without __init__
            spec = importlib.machinery.ModuleSpec(fullname, None, is_package=True)
            spec.submodule_search_locations = [str(base)]
            return spec
        return None


@contextlib.contextmanager
def _patched_modules(replacements):
    """Puts modules into sys.modules for the duration, then restores what was there."""
    saved = {name: sys.modules.get(name) for name in replacements}
    sys.modules.update(replacements)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def load_original(folder, modules, substitutes=None, preload=()):
    """Executes an original's files and returns them as a namespace of modules.

    folder: the original's folder (or a subfolder such as MTL's ``tensorflow``), whose top-level
      ``*.py`` files and packages answer the bare imports of the files loaded.
    modules: dotted names to load, relative to ``folder`` (``'model'``, ``'models.resnet12'``).
    substitutes: module name -> module object answering that import instead of the real one
      (``'sonnet'`` -> a Sonnet 1 stand-in, ``'cv2'`` -> an empty module). ``tensorflow`` and
      ``tensorflow.contrib...`` are always answered with the TF 1.x namespace.
    preload: third-party modules to import for real before the substitutes are in place (for
      example ``tensorflow_probability``, which itself imports ``tensorflow``).
    Returns a SimpleNamespace mapping each loaded name's last component (and its dotted name with
    '.' -> '_') to the module object.
    """
    from tests.golden import tf1_standins  # imports TensorFlow; kept out of collection time
    for name in preload:
        importlib.import_module(name)
    folder = Path(folder)
    own = {p.stem for p in folder.glob('*.py')} | {p.name for p in folder.iterdir() if p.is_dir()}
    own.discard('__pycache__')
    replacements = dict(tf1_standins.tensorflow_modules())
    replacements.update(substitutes or {})
    # The original's own names shadow ours (utils, data, model, layers, config...) only while
    # its files run.
    shadowed = {name: sys.modules.pop(name) for name in list(sys.modules)
                if name.split('.')[0] in own}
    finder = _FolderFinder(folder, own)
    sys.meta_path.insert(0, finder)
    loaded = types.SimpleNamespace()
    try:
        with _patched_modules(replacements):
            for dotted in modules:
                module = importlib.import_module(dotted)
                setattr(loaded, dotted.split('.')[-1], module)
                setattr(loaded, dotted.replace('.', '_'), module)
    finally:
        sys.meta_path.remove(finder)
        for name in list(sys.modules):
            if name.split('.')[0] in own:
                del sys.modules[name]
        sys.modules.update(shadowed)
    return loaded
