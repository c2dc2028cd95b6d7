"""What every dataset module declares and returns, kept apart from the readers so that the
registry (data/datasets.py) can import every reader without an import circle.

- `DatasetError`, `FewShotDataset`: a reader's user-facing error and its result.
- `DatasetSpec`: one dataset's declaration (name, loader, kind, which methods and main.py flags
  it takes, how the flags become reader options, how get_data fetches it). Each reader module
  declares `SPECS = (DatasetSpec(...), ...)` next to its loader; data/datasets.py collects them.
- `RemoteFile`, `Source`, `Download`: what `python -m data.get_data` fetches and how it is
  checked and preprocessed, declared by the reader module beside its spec.
- `show_progress`: whether readers draw progress bars (load_dataset's `progress`).
Light on purpose: numpy only (through data.episodes), no TensorFlow, no network library.
"""
import collections
import contextlib
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

from .episodes import ClassSplit

KINDS = ('images', 'embeddings')


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


# A file of a download source. `name` is the key get_data's --url_override uses; `extra` names
# the get_data flag that asks for an optional file (None: always fetched); `check(path)`
# validates the file's content after download and raises DownloadError (having deleted it)
# when it is unusable; `sha256` is checked as `md5` is, where one is published or recorded.
RemoteFile = collections.namedtuple(
    'RemoteFile', 'name filename url md5 size extra check sha256',
    defaults=(None, None, None, None, None))

# files: RemoteFiles; preprocess(dataset_dir, paths, force, **options) -> a summary to report,
# or None; options: get_data's command-line options (argparse dest names) passed on to
# preprocess as keywords ('progress' is `not --no_progress`); prepare(dataset_dir): runs
# before the downloads.
Source = collections.namedtuple('Source', 'description files preprocess options prepare',
                                defaults=((), None))

# What `python -m data.get_data --dataset <name>` offers: its sources by name and the default
# one. Files land in <data_root>/<name>/.
Download = collections.namedtuple('Download', 'name sources default_source')


def dropbox_npy(name, file_id, check):
    """The RemoteFile of <name>.npy shared on Dropbox as /s/<file_id>/ (metadrop's and l2b's
    files; no checksum is published, so `check` looks at the content)."""
    return RemoteFile(name, f'{name}.npy', f'https://www.dropbox.com/s/{file_id}/{name}.npy?dl=1',
                      check=check)


def no_options(cfg):
    """The options of a dataset that reads no flag."""
    return {}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset as the rest of the project sees it.

    name: the --dataset value. loader(data_root, **options): the reader, returning a
    FewShotDataset (a list of fixed episodes when fixed_episodes). kind: 'images' or
    'embeddings' (LEO's feature vectors); a method takes one kind. has_train: False for the
    out-of-distribution datasets (svhn, cub) and the fixed test episodes (omniglot_runs).
    methods: None = every method that takes `kind`, else the only methods that may use it.
    flags: the main.py flags the dataset reads (all through `options`). options(cfg): the
    reader options from a parsed config. download: what get_data fetches for it (None:
    nothing to fetch, e.g. a folder of your own images). fixed_episodes: the dataset is a
    fixed list of test episodes rather than classes to sample from.
    """
    name: str
    loader: Callable
    kind: str = 'images'
    has_train: bool = True
    methods: Optional[tuple] = None
    flags: tuple = ()
    options: Callable = no_options
    description: str = ''
    download: Optional[Download] = None
    fixed_episodes: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f'dataset {self.name}: kind must be one of {KINDS}, not {self.kind!r}')
        if self.methods is not None and not isinstance(self.methods, tuple):
            raise ValueError(f'dataset {self.name}: methods must be None or a tuple')

    def takes(self, method, kind=None):
        """Whether `method` (which reads datasets of `kind`) may use this dataset."""
        if kind is not None and kind != self.kind:
            return False
        return self.methods is None or method in self.methods


def comma_list(value):
    """'Korean, Tagalog' -> ['Korean', 'Tagalog']; '' or None -> None (a flag left empty)."""
    return [a.strip() for a in value.split(',') if a.strip()] if value else None


_SHOW_PROGRESS = [True]


def show_progress():
    """Whether a reader draws progress bars while it decodes or caches a dataset (False
    inside load_dataset(..., progress=False), main.py's --noprogress)."""
    return _SHOW_PROGRESS[0]


@contextlib.contextmanager
def progress_shown(flag):
    """Readers called inside draw progress bars only if `flag` (restored afterwards)."""
    previous, _SHOW_PROGRESS[0] = _SHOW_PROGRESS[0], bool(flag)
    try:
        yield
    finally:
        _SHOW_PROGRESS[0] = previous
