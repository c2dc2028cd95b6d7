"""Dataset registry: `load_dataset(name, data_root, **options)` -> FewShotDataset.

Readers live in one module per dataset (omniglot.py, mimgnet.py, folder.py, synthetic.py) and are
imported lazily, so loading one dataset never pays for the others.
"""
import importlib
import inspect
from typing import NamedTuple

from .episodes import ClassSplit


class DatasetError(Exception):
    """A user-facing problem with the data: says what is missing or wrong and the exact fix."""


class FewShotDataset(NamedTuple):
    name: str
    train: ClassSplit
    val: ClassSplit
    test: ClassSplit
    image_shape: tuple   # (H, W, C)
    val_is_test: bool    # True when validation uses the meta-test split (metadrop's behaviour)
    description: str     # one line for logs

    def split(self, which):
        """The ClassSplit called 'train', 'val' or 'test'."""
        if which not in ('train', 'val', 'test'):
            raise DatasetError(f"unknown split {which!r}; use 'train', 'val' or 'test'")
        return getattr(self, which)


# name -> (module, loader function); each loader takes (data_root, **options).
_READERS = {
    'omniglot': ('omniglot', 'load'),
    'folder': ('folder', 'load'),
    'synthetic': ('synthetic', 'load'),
    'mimgnet': ('mimgnet', 'load'),
}

KNOWN_DATASETS = tuple(_READERS)


def load_dataset(name, data_root='./data', **options) -> FewShotDataset:
    """Loads dataset `name` from `data_root` (files of dataset X under <data_root>/X/).

    Options are passed to the reader; an option the reader does not know raises DatasetError
    listing the ones it accepts (so a typo never silently falls back to a default).
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
    return loader(data_root, **options)
