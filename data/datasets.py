"""Dataset registry: `load_dataset(name, data_root, **options)` -> FewShotDataset.

Readers live in one module per dataset (omniglot.py, mimgnet.py, tiered.py, cifar.py, fc100.py,
svhn.py, cub.py, folder.py, synthetic.py, leo.py) and are imported lazily, so loading one dataset never pays
for the others. The leo_* datasets are LEO's pre-computed feature vectors, not images: their
image_shape is (D,).
"""
import importlib
import inspect
from typing import NamedTuple, Optional

from .episodes import ClassSplit


class DatasetError(Exception):
    """A user-facing problem with the data: says what is missing or wrong and the exact fix."""


class FewShotDataset(NamedTuple):
    name: str
    train: Optional[ClassSplit]   # None for out-of-distribution datasets (svhn, cub)
    val: ClassSplit
    test: ClassSplit
    image_shape: tuple   # (H, W, C); (D,) for feature vectors (leo_*)
    val_is_test: bool    # True when validation uses the meta-test split (metadrop's behaviour)
    description: str     # one line for logs

    def split(self, which):
        """The ClassSplit called 'train', 'val' or 'test'."""
        if which not in ('train', 'val', 'test'):
            raise DatasetError(f"unknown split {which!r}; use 'train', 'val' or 'test'")
        if which == 'train' and self.train is None:
            raise DatasetError(
                f'{self.name} is an out-of-distribution dataset with no training split (Bayesian TAML '
                f'only meta-validates and meta-tests on it): meta-train on an in-distribution dataset '
                f'and pass --ood_dataset {self.name}')
        return getattr(self, which)


# name -> (module, loader function); each loader takes (data_root, **options).
_READERS = {
    'omniglot': ('omniglot', 'load'),
    'folder': ('folder', 'load'),
    'synthetic': ('synthetic', 'load'),
    'mimgnet': ('mimgnet', 'load'),
    'tiered': ('tiered', 'load'),
    'cifar': ('cifar', 'load'),
    'fc100': ('fc100', 'load'),              # FC100 (Fewshot-CIFAR100) as MTL reads it: JPEG folders
    'svhn': ('svhn', 'load'),
    'cub': ('cub', 'load'),
    'leo_mini': ('leo', 'load_mini'),        # LEO's miniImageNet embeddings (center / multiview)
    'leo_tiered': ('leo', 'load_tiered'),    # LEO's tieredImageNet embeddings (center)
    'leo_custom': ('leo', 'load_custom'),    # your own embeddings in LEO's file format
}

KNOWN_DATASETS = tuple(_READERS)


_SHOW_PROGRESS = [True]


def show_progress():
    """Whether a reader draws progress bars while it decodes or caches a dataset (False
    inside load_dataset(..., progress=False), main.py's --noprogress)."""
    return _SHOW_PROGRESS[0]


def load_dataset(name, data_root='./data', progress=True, **options) -> FewShotDataset:
    """Loads dataset `name` from `data_root` (files of dataset X under <data_root>/X/).

    Options are passed to the reader; an option the reader does not know raises DatasetError
    listing the ones it accepts (so a typo never silently falls back to a default).
    progress=False silences the readers' progress bars.
    """
    if name not in _READERS:
        raise DatasetError(f'unknown dataset {name!r}; known datasets: {", ".join(KNOWN_DATASETS)}')
    module_name, fn_name = _READERS[name]
    loader = getattr(importlib.import_module(f'{__package__}.{module_name}'), fn_name)
    accepted = [p for p in inspect.signature(loader).parameters if p != 'data_root']
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(f'unknown option(s) {", ".join(unknown)} for dataset {name!r}; '
                           f'it accepts: {", ".join(accepted)}')
    previous, _SHOW_PROGRESS[0] = _SHOW_PROGRESS[0], bool(progress)
    try:
        return loader(data_root, **options)
    finally:
        _SHOW_PROGRESS[0] = previous
