"""Dataset registry: every dataset the project reads, by name, as its reader module declares it.

Each reader module (omniglot.py, omniglot_runs.py, folder.py, synthetic.py, mimgnet.py,
tiered.py, cifar.py, svhn.py, cub.py, leo.py, fc100.py) declares `SPECS`, its DatasetSpecs
(data/base.py): name, loader, kind ('images', or 'embeddings' for LEO's feature vectors, whose
image_shape is (D,)), the methods that may use it, the main.py flags it reads and how they
become reader options, and what `python -m data.get_data` fetches for it. This module only
collects them:

    dataset_spec(name)                       the declaration (DatasetError for an unknown name)
    dataset_names(kind=None, method=None)    the names a method may use, in registry order
    dataset_options(name, cfg)               the reader options from a parsed config
    load_dataset(name, data_root, **options) -> FewShotDataset

Importing it imports the readers (numpy, Pillow, tqdm), never TensorFlow.
"""
import inspect

from . import cifar, cub, fc100, folder, leo, mimgnet, omniglot, omniglot_runs, svhn, synthetic, tiered
from .base import DatasetError, DatasetSpec, FewShotDataset, progress_shown, show_progress  # noqa: F401 (re-exported)

# In main.py's --dataset order (its help text lists them so); new datasets go at the end.
_MODULES = (omniglot, folder, synthetic, mimgnet, tiered, cifar, svhn, cub, leo, fc100, omniglot_runs)


def _collect(modules):
    registry = {}
    for module in modules:
        for spec in module.SPECS:
            if spec.name in registry:
                raise ValueError(f'dataset {spec.name!r} is declared twice ({module.__name__})')
            registry[spec.name] = spec
    return registry


DATASETS = _collect(_MODULES)   # name -> DatasetSpec, ordered
KNOWN_DATASETS = tuple(DATASETS)


def dataset_spec(name) -> DatasetSpec:
    """The declaration of dataset `name`; DatasetError listing the known names otherwise."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise DatasetError(f'unknown dataset {name!r}; known datasets: {", ".join(KNOWN_DATASETS)}') from None


def dataset_names(kind=None, method=None):
    """The datasets of `kind` ('images' or 'embeddings'; None: both) that `method` may use
    (None: any), in registry order. Pass both for a method: its kind says which datasets it
    can read at all, and a dataset may restrict itself to some methods (spec.methods)."""
    return tuple(name for name, spec in DATASETS.items()
                 if (kind is None or spec.kind == kind) and (method is None or spec.takes(method)))


def dataset_options(name, cfg):
    """The reader options of dataset `name` from the parsed flags `cfg` (an object with the
    flags as attributes, e.g. main.py's config)."""
    return dataset_spec(name).options(cfg)


def load_dataset(name, data_root='./data', progress=True, **options):
    """Loads dataset `name` from `data_root` (files of dataset X under <data_root>/X/): a
    FewShotDataset, or for a dataset of fixed episodes (spec.fixed_episodes) its list of
    episodes (see data/omniglot_runs.py).

    Options are passed to the reader; an option the reader does not know raises DatasetError
    listing the ones it accepts (so a typo never silently falls back to a default).
    progress=False silences the readers' progress bars.
    """
    loader = dataset_spec(name).loader
    accepted = [p for p in inspect.signature(loader).parameters if p not in ('data_root', 'progress')]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(f'unknown option(s) {", ".join(unknown)} for dataset {name!r}; '
                           f'it accepts: {", ".join(accepted)}')
    with progress_shown(progress):
        return loader(data_root, **options)
