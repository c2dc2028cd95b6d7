"""SVHN (Netzer et al. 2011), Bayesian TAML's out-of-distribution dataset for CIFAR-FS.

Out-of-distribution only: there is no training split (FewShotDataset.train is None); use it
as --ood_dataset svhn, meta-trained on CIFAR-FS. Files, under <data_root>/svhn/
(data.perclass layout), 32x32x3 uint8 read as x / 255:

  valid.npy          [10, 600, 32, 32, 3]: 600 images per digit class from SVHN's *train* set.
  test.npy           [26032, 32, 32, 3], SVHN's whole test set sorted by class, with
  test_counts.npy    the images per class (ragged).

Classes are label - 1: digits 1..9 are classes 0..8 and digit 0, whose SVHN label is 10, is
class 9 (as l2b). Images keep their order in the .mat file within a class.

`python data/get_data.py --dataset svhn` downloads train_32x32.mat and test_32x32.mat (md5
checked) and l2b's val_idx.npy, reads the .mat files with scipy.io.loadmat (X uint8
[32, 32, 3, N], y [N, 1]) and writes the files with `build`. The validation images, as in
l2b's data/svhn/get_data.py:
  --svhn_val fixed (default; l2b's --ver 1, "the valid set our model used"): val_idx.npy,
      [10, 600], row c indexes the train images *of class c* (in file order), not the whole
      train set.
  --svhn_val random (l2b's --ver 2): np.random.seed(222), then for each class c = 0..9 in
      turn, a shuffled np.arange(n_c) (np.random.shuffle) whose first 600 entries are taken.
      A RandomState(222) drawing the same shuffles reproduces it exactly.
l2b stores float64 x / 255 (a dense valid.npy, an object array for the ragged test.npy);
we store the uint8 pixels, which read back as the same values, and convert l2b's own files
if a user has them (data.perclass).
"""
import os
from pathlib import Path

import numpy as np

from .base import DatasetError, DatasetSpec, Download, FewShotDataset, RemoteFile, Source
from .perclass import (is_up_to_date, read_split, split_summary, storage_note, write_classes,
                       write_info)
from .storage import file_signature

NAME = 'svhn'
IMAGE_SHAPE = (32, 32, 3)
N_CLASSES = 10
VAL_PER_CLASS = 600
VAL_MODES = ('fixed', 'random')
RANDOM_SEED = 222
# class c holds digit (c + 1) % 10: label 10 is digit 0.
CLASS_NAMES = [f'digit{(c + 1) % 10}' for c in range(N_CLASSES)]
STEMS = ('valid', 'test')


def get_data_command(data_root):
    return f'python data/get_data.py --dataset svhn --data_root {data_root}'


def load(data_root='./data') -> FewShotDataset:
    """Reads SVHN's valid/test splits from <data_root>/svhn/ (see the module docstring)."""
    directory = Path(data_root) / NAME
    command = get_data_command(data_root)
    if not any((directory / f'{stem}.npy').is_file() for stem in STEMS):
        raise DatasetError(f'no SVHN data in {directory} (expected valid.npy, test.npy and '
                           f'test_counts.npy). Get it with: {command}')
    va = read_split(directory, 'valid', NAME, IMAGE_SHAPE, command, names=CLASS_NAMES, field='val',
                    get_data_converts=False)
    te = read_split(directory, 'test', NAME, IMAGE_SHAPE, command, names=CLASS_NAMES, field='test',
                    get_data_converts=False)
    desc = (f'svhn (out-of-distribution only, no train split; 32x32x3, {storage_note(va, te)}, '
            f'memory-mapped): val {split_summary(va)} (SVHN train set) / test {split_summary(te)} '
            f'(SVHN test set)')
    return FewShotDataset(NAME, None, va, te, IMAGE_SHAPE, False, desc)


# ----------------------------------------------------------------------------- building

def read_mat(path):
    """(images uint8 [N, 32, 32, 3], classes int64 [N]) of an SVHN *_32x32.mat file."""
    import scipy.io
    try:
        mat = scipy.io.loadmat(path)
    except Exception as e:   # loadmat raises many kinds (MatReadError, ValueError, IndexError, ...) on bad bytes
        raise DatasetError(f'{path} is not a readable MATLAB file ({type(e).__name__}: {e}); it is '
                           f'truncated or damaged: delete it and download it again') from None
    x, y = mat.get('X'), mat.get('y')
    if x is None or y is None:
        raise DatasetError(f'{path} has no X / y variables; it is not an SVHN *_32x32.mat file')
    x, y = np.asarray(x), np.asarray(y).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DatasetError(f'{path}: X must be uint8 [32, 32, 3, N] with N labels y; got {x.dtype} '
                           f'{x.shape} and {len(y)} labels')
    if y.dtype.kind not in 'iuf' or len(y) == 0 or y.min() < 1 or y.max() > 10 or (y != np.round(y)).any():
        raise DatasetError(f'{path}: labels y must be the integers 1..10 (10 for digit 0)')
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y.astype(np.int64) - 1


def _per_class(labels):
    return [np.flatnonzero(labels == c) for c in range(N_CLASSES)]


def validation_indices(class_sizes, svhn_val='fixed', val_idx=None):
    """Per class c, the positions (within class c's train images) of its validation images."""
    if svhn_val == 'random':
        rs = np.random.RandomState(RANDOM_SEED)   # l2b: np.random.seed(222) + np.random.shuffle
        out = []
        for n in class_sizes:
            idx = np.arange(n)
            rs.shuffle(idx)
            out.append(idx[:VAL_PER_CLASS])
        return out
    if svhn_val != 'fixed':
        raise DatasetError(f'unknown svhn_val {svhn_val!r}; use one of {", ".join(VAL_MODES)}')
    vi = np.asarray(val_idx)
    if vi.ndim != 2 or vi.shape[0] != N_CLASSES or vi.shape[1] == 0 or vi.dtype.kind not in 'iu':
        raise DatasetError(f'val_idx.npy must be integer indices [10, n] (l2b: [10, 600]); got {vi.dtype} '
                           f'{vi.shape}')
    for c, n in enumerate(class_sizes):
        if vi[c].min() < 0 or vi[c].max() >= n:
            raise DatasetError(f'val_idx.npy row {c} indexes image {int(vi[c].max())} of class {c}, which '
                               f'has {n} train images (indices are per class, 0..{n - 1})')
    return [vi[c].astype(np.int64) for c in range(N_CLASSES)]


def build(dataset_dir, train_mat, test_mat, val_idx_path=None, svhn_val='fixed', force=False,
          progress=True):
    """Writes valid.npy, test.npy + test_counts.npy (+ info.json) into dataset_dir. Skipped when
    info.json records the same sources and svhn_val, unless `force`. Returns a summary."""
    dataset_dir = Path(dataset_dir)
    if svhn_val not in VAL_MODES:
        raise DatasetError(f'unknown svhn_val {svhn_val!r}; use one of {", ".join(VAL_MODES)}')
    sources = [file_signature(train_mat), file_signature(test_mat)]
    if svhn_val == 'fixed':
        if val_idx_path is None:
            raise DatasetError('svhn_val fixed needs l2b\'s val_idx.npy')
        sources.append(file_signature(val_idx_path))
    build_info = {'sources': sources, 'svhn_val': svhn_val}
    if not force and is_up_to_date(dataset_dir, STEMS, build_info):
        return 'valid.npy, test.npy (up to date)'
    val_idx = None
    if svhn_val == 'fixed':
        try:
            val_idx = np.load(val_idx_path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DatasetError(f'{val_idx_path} is not a readable .npy array ({e}); delete it and '
                               f'download it again') from None
    x, labels = read_mat(train_mat)
    members = _per_class(labels)
    chosen = validation_indices([len(m) for m in members], svhn_val, val_idx)
    valid = [x[members[c][chosen[c]]] for c in range(N_CLASSES)]
    del x
    write_classes(dataset_dir, 'valid', valid, progress=progress)
    x, labels = read_mat(test_mat)
    test = [x[m] for m in _per_class(labels)]
    if any(len(t) == 0 for t in test):
        raise DatasetError(f'{test_mat} has no image of class(es) '
                           f'{", ".join(str(c) for c, t in enumerate(test) if not len(t))}')
    del x
    write_classes(dataset_dir, 'test', test, progress=progress)
    write_info(dataset_dir, {'dataset': NAME, 'build': build_info, 'splits': {
        'valid': {'classes': CLASS_NAMES, 'counts': [len(v) for v in valid]},
        'test': {'classes': CLASS_NAMES, 'counts': [len(t) for t in test]}}})
    vc = sorted({len(v) for v in valid})
    return (f'valid.npy (10 classes x {vc[0] if len(vc) == 1 else f"{vc[0]}..{vc[-1]}"} train images, '
            f'{svhn_val} selection), test.npy ({sum(len(t) for t in test)} test images, '
            f'{min(len(t) for t in test)}..{max(len(t) for t in test)} per class)')


# ----------------------------------------------------------------------------- declaration

SVHN_BASE_URL = 'http://ufldl.stanford.edu/housenumbers'
SVHN_MD5 = {'train_32x32.mat': 'e26dedcc434d2e4c54c9b2d4a06d8373',
            'test_32x32.mat': 'eb5a983be6a315427106f1b164d9cef3'}
SVHN_VAL_IDX_URL = 'https://raw.githubusercontent.com/haebeom-lee/l2b/master/data/svhn/val_idx.npy'


def check_val_idx(path):
    """Deletes `path` and raises DownloadError unless it is an integer array [10, n]."""
    from .download import check_npy

    def problem_of(arr):
        if arr.dtype.kind not in 'iu' or arr.ndim != 2 or arr.shape[0] != 10 or arr.shape[1] == 0:
            return f'it holds {arr.dtype} values of shape {arr.shape}, not integer indices [10, n]'
        return None
    check_npy(path, "l2b's SVHN val_idx.npy", problem_of)


def preprocess(dataset_dir, paths, force, svhn_val=None, progress=True):
    """get_data's step: builds SVHN's valid.npy and test.npy from the .mat files."""
    from .download import preprocessing
    files = {os.path.basename(p): p for p in paths}
    with preprocessing('SVHN', dataset_dir):
        return build(dataset_dir, files['train_32x32.mat'], files['test_32x32.mat'],
                     files.get('val_idx.npy'), svhn_val=svhn_val or 'fixed', force=force,
                     progress=progress)


DOWNLOAD = Download(
    name='svhn',
    default_source='official',
    sources={
        'official': Source(
            description='SVHN train/test_32x32.mat (md5 checked) + l2b\'s val_idx.npy: valid.npy '
                        '(10 x 600 train images; --svhn_val fixed|random) and test.npy (the test '
                        'set by class); out-of-distribution only',
            preprocess=preprocess, options=('svhn_val', 'progress'),
            files=(RemoteFile('train_32x32', 'train_32x32.mat', f'{SVHN_BASE_URL}/train_32x32.mat',
                              SVHN_MD5['train_32x32.mat']),
                   RemoteFile('test_32x32', 'test_32x32.mat', f'{SVHN_BASE_URL}/test_32x32.mat',
                              SVHN_MD5['test_32x32.mat']),
                   RemoteFile('val_idx', 'val_idx.npy', SVHN_VAL_IDX_URL, check=check_val_idx))),
    })

SPECS = (DatasetSpec(
    name='svhn', loader=load, kind='images', has_train=False,
    description="SVHN digits, 32x32x3, out-of-distribution only (l2b's validation and test splits)",
    download=DOWNLOAD),)
