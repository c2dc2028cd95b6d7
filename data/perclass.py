"""The per-class array layout of Bayesian TAML's datasets (CIFAR-FS, SVHN, CUB, l2b's miniImageNet).

l2b (haebeom-lee/l2b) stores each split as one `.npy` file holding the split's classes, each
an array [n_c, H, W, 3] of float64 values in [0, 1]. Splits whose classes all have the same
size are a dense 5-D array; ragged splits (SVHN's test set, CUB) are object arrays, i.e.
pickles, which modern numpy only loads with allow_pickle=True.

Our layout, under <data_root>/<name>/, keeps the per-class arrays but stores uint8 (8x
smaller, and read as x / 255 by ClassSplit, which gives back l2b's values exactly):

  {split}.npy         uint8 [n_classes, n_per_class, H, W, 3] when all classes have the same
                      size; otherwise uint8 [N, H, W, 3] with the images sorted by class, plus
  {split}_counts.npy  int64 [n_classes], the number of images of each class.
  info.json           optional: class names, counts and how the files were built (get_data
                      uses it to tell whether a rebuild is needed).

The split files are named as in l2b: train, valid, test (FewShotDataset's train, val, test).
Everything is memory-mapped; a ragged split is cut into per-class views of the memmap, so
loading copies nothing and an episode reads only its own images.

The readers also take the original's own files: a dense float 5-D `.npy` is used as stored
(as ClassSplit does for float storage). An object-array `.npy` is never loaded with
allow_pickle (unpickling can run code); `convert_object_npy` converts it once into our
layout through the restricted unpickler of data.storage, which only hands out numpy arrays
and plain Python containers, and refuses anything else (os.system, ...) before creating it.
`python data/get_data.py --dataset X` does that for files it downloads or finds in place.

Files are written atomically: into a temporary file in the same folder, renamed into place
when complete. A ragged split has two files; its counts are renamed into place first, so
an interruption between the two renames leaves counts that do not add up to the images,
which the reader reports (with the command that rebuilds them) instead of mis-reading.
"""
import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .base import DatasetError
from .storage import load_plain_pickle, open_npy_memmap, read_npy_header, temp_path
from .episodes import ClassSplit

# FewShotDataset field -> file stem, as l2b names its files.
SPLIT_FILES = {'train': 'train', 'val': 'valid', 'test': 'test'}
INFO_FILE = 'info.json'
INFO_VERSION = 1


def counts_path(directory, stem):
    return Path(directory) / f'{stem}_counts.npy'


# ----------------------------------------------------------------------------- reading

def read_info(directory):
    """The info.json of `directory` as a dict, or {} when it is absent or unreadable."""
    try:
        info = json.loads((Path(directory) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) and info.get('version') == INFO_VERSION else {}


def _object_array_error(path, command, image_shape, get_data_converts):
    python = (f'python -c "from data.perclass import convert_object_npy; '
              f'convert_object_npy({str(path)!r}, {tuple(image_shape)})"')
    how = (f'{command} (the files already there are kept, not downloaded again, and converted), '
           f'or: {python}' if get_data_converts else
           f'{python}, or rebuild the splits from the original source with: {command}')
    return DatasetError(
        f'{path} is a pickled object array (the original l2b file format for a split whose '
        f'classes differ in size). It is never loaded with allow_pickle, because unpickling can '
        f'run code. Convert it once into the uint8 layout, through a restricted unpickler that '
        f'accepts only numpy arrays, with: {how}')


def read_split(directory, stem, dataset, image_shape, command, names=None, field=None,
               get_data_converts=True):
    """The ClassSplit stored as <directory>/{stem}.npy (+ {stem}_counts.npy when ragged).

    names: class names to use if they fit; otherwise info.json's names when its counts match
    the file, else '{stem}.npy/classNNN'. command: the get_data command that fetches the files,
    quoted in errors. get_data_converts: whether that command converts l2b's object arrays
    found in place (sources that download l2b's files) or rebuilds the splits from elsewhere."""
    directory = Path(directory)
    path = directory / f'{stem}.npy'
    field = field or stem
    if not path.is_file():
        raise DatasetError(f'{path} is missing (the {field} split of {dataset}). Get it with: {command}')
    header = read_npy_header(path)
    if header.dtype.hasobject:
        raise _object_array_error(path, command, image_shape, get_data_converts)
    arr = open_npy_memmap(path)
    if arr.dtype != np.uint8 and arr.dtype.kind != 'f':
        raise DatasetError(f'{path} holds {arr.dtype} values; expected uint8 images (read as x/255) '
                           f'or float images in [0, 1] (used as stored). Rebuild it with: {command} --force')
    image_shape = tuple(image_shape)
    if arr.ndim == 5 and arr.shape[2:] == image_shape and arr.shape[0] > 0 and arr.shape[1] > 0:
        images = arr
        counts = [int(arr.shape[1])] * int(arr.shape[0])
    elif arr.ndim == 4 and arr.shape[1:] == image_shape:
        cpath = counts_path(directory, stem)
        if not cpath.is_file():
            raise DatasetError(f'{path} holds {arr.shape[0]} images [N, {", ".join(map(str, image_shape))}] '
                               f'but {cpath.name}, which says how many belong to each class, is missing. '
                               f'Rebuild both with: {command} --force')
        try:
            counts = np.load(cpath, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DatasetError(f'{cpath} is not a readable .npy file ({e}); rebuild it with: '
                               f'{command} --force') from None
        if (not isinstance(counts, np.ndarray) or counts.ndim != 1 or counts.size == 0
                or counts.dtype.kind not in 'iu' or counts.min() <= 0 or int(counts.sum()) != arr.shape[0]):
            raise DatasetError(f'{cpath} does not fit {path.name}: it must list one positive image count '
                               f'per class adding up to the {arr.shape[0]} images of {path.name} '
                               f'(an interrupted rebuild?). Rebuild both with: {command} --force')
        counts = [int(c) for c in counts]
        ends = np.cumsum(counts)
        images = [arr[e - c:e] for c, e in zip(counts, ends)]     # views of the memmap
    else:
        raise DatasetError(f'{path} has shape {arr.shape}; expected [n_classes, n_per_class, '
                           f'{", ".join(map(str, image_shape))}] or [N, {", ".join(map(str, image_shape))}] '
                           f'with {counts_path(directory, stem).name}. Rebuild it with: {command} --force')
    if names is None or len(names) != len(counts):
        entry = read_info(directory).get('splits', {}).get(stem, {})
        names = entry.get('classes') if entry.get('counts') == counts else None
        if names is None or len(names) != len(counts):
            names = [f'{stem}.npy/class{c:03d}' for c in range(len(counts))]
    return ClassSplit(images, names=names, name=field, dataset=dataset)


def split_summary(split):
    """'N classes x K images' or 'N classes x K1..K2 images', and the storage, for descriptions."""
    lo, hi = int(split.counts.min()), int(split.counts.max())
    per = str(lo) if lo == hi else f'{lo}..{hi}'
    return f'{split.n_classes} classes x {per} images'


def storage_note(*splits):
    """How values are read, e.g. 'uint8 read as x/255' (for descriptions)."""
    dtypes = set()
    for s in splits:
        if s is not None:
            dtypes.add((s._stacked if s._stacked is not None else s._classes[0]).dtype)
    return ', '.join(sorted(f'{d} {"read as x/255" if d == np.uint8 else "used as stored"}'
                            for d in dtypes))


# ----------------------------------------------------------------------------- writing


def write_split(directory, stem, counts, image_shape, get_class, progress=False, desc=None):
    """Writes the split `stem` into `directory` in our layout; returns the written paths.

    counts: images per class; get_class(c) returns class c as uint8 [counts[c], *image_shape]
    (called once per class, in order, so a caller can free or decode classes one at a time).
    The images go straight into a memory-mapped temporary file, renamed into place when
    complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    counts = [int(c) for c in counts]
    if not counts or min(counts) <= 0:
        raise DatasetError(f'the {stem} split to write into {directory} has an empty class or no class '
                           f'(images per class: {counts})')
    image_shape = tuple(int(s) for s in image_shape)
    dense = len(set(counts)) == 1
    shape = ((len(counts), counts[0]) if dense else (sum(counts),)) + image_shape
    path, cpath = directory / f'{stem}.npy', counts_path(directory, stem)
    tmp = temp_path(directory, path.name)
    ctmp = None
    try:
        out = np.lib.format.open_memmap(tmp, mode='w+', dtype=np.uint8, shape=shape)
        flat = out.reshape((sum(counts),) + image_shape)
        k = 0
        with tqdm(total=len(counts), desc=desc or f'writing {stem}.npy', unit='class',
                  disable=not progress) as bar:
            for c, n in enumerate(counts):
                images = np.asarray(get_class(c))
                if images.dtype != np.uint8 or images.shape != (n,) + image_shape:
                    raise DatasetError(f'class {c} of the {stem} split has {images.dtype} images of shape '
                                       f'{images.shape}, expected uint8 {(n,) + image_shape}')
                flat[k:k + n] = images
                k += n
                bar.update(1)
        out.flush()
        del out, flat
        if not dense:
            ctmp = temp_path(directory, cpath.name)
            with open(ctmp, 'wb') as f:
                np.save(f, np.asarray(counts, dtype=np.int64))
            os.replace(ctmp, cpath)
            ctmp = None
        os.replace(tmp, path)
        tmp = None
        if dense and cpath.exists():
            cpath.unlink()            # left over from an earlier ragged build
    finally:
        for t in (tmp, ctmp):
            if t is not None and os.path.exists(t):
                os.unlink(t)
    return [path] if dense else [path, cpath]


def write_classes(directory, stem, classes, progress=False):
    """write_split for a list of uint8 arrays [n_c, H, W, C] already in memory."""
    if not classes:
        raise DatasetError(f'the {stem} split to write into {directory} has no classes')
    shape = classes[0].shape[1:]
    return write_split(directory, stem, [len(a) for a in classes], shape, lambda c: classes[c],
                       progress=progress)


def write_info(directory, info):
    """Writes info.json (adding the format version) atomically."""
    directory = Path(directory)
    tmp = temp_path(directory, INFO_FILE)
    try:
        with open(tmp, 'w') as f:
            json.dump(dict(info, version=INFO_VERSION), f, indent=1)
        os.replace(tmp, directory / INFO_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def is_up_to_date(directory, stems, build):
    """True when info.json records `build` (sources and options) and all split files exist."""
    directory = Path(directory)
    if read_info(directory).get('build') != build:
        return False
    for stem in stems:
        try:
            header = read_npy_header(directory / f'{stem}.npy')
        except DatasetError:
            return False
        if header.dtype != np.uint8 or (len(header.shape) == 4 and not counts_path(directory, stem).is_file()):
            return False
    return True


# ----------------------------------------------------------------------------- values

def to_uint8(x, where):
    """uint8 images from l2b's float values in [0, 1] (round(x * 255)) or from uint8 as is.

    Values outside [0, 1] (or NaN) are refused: they are not images divided by 255."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind != 'f':
        raise DatasetError(f'{where} holds {x.dtype} values; expected float images in [0, 1] or uint8')
    if x.size:
        lo, hi = float(np.min(x)), float(np.max(x))
        if not (0.0 <= lo and hi <= 1.0):      # also false for NaN
            raise DatasetError(f'{where} holds values from {lo} to {hi}, outside [0, 1], so they are not '
                               f'images divided by 255 as l2b stores them; the file is not what it should '
                               f'be: delete it and download it again')
    return np.rint(x * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------- object arrays

def load_pickle(path, offset=0):
    """The object pickled in `path` (from byte `offset` on), unpickled by data.storage's
    restricted unpickler: numpy arrays and plain Python data only; a pickle that asks for
    anything else (os.system, a class of some module) is refused with a DatasetError before
    that object is created. Python 2 pickles are read with encoding='latin1'."""
    return load_plain_pickle(path, offset,
                             remedy='Delete it and download the published file again')


def load_object_npy(path):
    """The object array pickled in the .npy file `path`, through `load_pickle`."""
    header = read_npy_header(path)
    if not header.dtype.hasobject:
        raise DatasetError(f'{path} is a plain {header.dtype} array, not an object array')
    return load_pickle(path, header.offset)


def convert_object_npy(path, image_shape, dense_only=False, progress=False):
    """Converts l2b's object-array `path` ({stem}.npy: one [n_c, *image_shape] float array in
    [0, 1] per class) into our uint8 layout under the same name, in place. Returns a one-line
    summary, or None when `path` is not an object array (nothing to do).

    Values become round(x * 255); values outside [0, 1] are refused. dense_only: refuse classes
    of different sizes (miniImageNet's 600 per class). The whole file is unpickled into memory
    once (the float64 data, e.g. ~0.5 GB for CUB's valid.npy); classes are then converted and
    written one at a time."""
    path = Path(path)
    if not read_npy_header(path).dtype.hasobject:
        return None
    obj = load_object_npy(path)
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.ndim == 1:
        classes = list(obj)
    elif isinstance(obj, (list, tuple)):
        classes = list(obj)
    else:
        what = f'a {obj.dtype} array of shape {obj.shape}' if isinstance(obj, np.ndarray) else type(obj).__name__
        raise DatasetError(f'{path} holds {what}, not the per-class list of image arrays l2b stores')
    del obj
    image_shape = tuple(image_shape)
    for c, a in enumerate(classes):
        if not isinstance(a, np.ndarray) or a.ndim != 4 or a.shape[1:] != image_shape or not len(a):
            what = f'an array of shape {a.shape}' if isinstance(a, np.ndarray) else f'a {type(a).__name__}'
            raise DatasetError(f'{path}: class {c} is {what}, not a non-empty array [n, '
                               f'{", ".join(map(str, image_shape))}] of images')
    if not classes:
        raise DatasetError(f'{path} holds no classes')
    counts = [len(a) for a in classes]
    if dense_only and len(set(counts)) != 1:
        raise DatasetError(f'{path}: classes hold {min(counts)}..{max(counts)} images; expected the same '
                           f'number in every class')
    stem = path.name[:-len('.npy')] if path.name.endswith('.npy') else path.stem

    def get_class(c):
        out = to_uint8(classes[c], f'{path} (class {c})')
        classes[c] = None                      # free the float copy as we go
        return out

    write_split(path.parent, stem, counts, image_shape, get_class, progress=progress,
                desc=f'converting {path.name}')
    return f'{path.name}: {len(counts)} classes x {min(counts)}..{max(counts)} images converted to uint8'


# ----------------------------------------------------------------------------- get_data checks

def l2b_npy_problem(path, image_shape, n_classes=None):
    """None if `path` is a usable per-class npy (l2b's object array, a dense [C, n, *shape]
    array, or our ragged [N, *shape] + _counts.npy), else the reason. Reads the header only."""
    try:
        header = read_npy_header(path)
    except DatasetError:
        return ('it is not a readable .npy array (an HTML page, as Dropbox serves when a link is '
                'gone, a truncated download or some other file)')
    shape = header.shape
    if header.dtype.hasobject:
        if len(shape) != 1 or (n_classes is not None and shape[0] != n_classes):
            return (f'it is an object array of shape {shape}, not a list of '
                    f'{n_classes if n_classes is not None else "the"} classes')
        return None   # the content is checked when it is converted
    if header.dtype != 'uint8' and header.dtype.kind != 'f':
        return f'it holds {header.dtype} values, not images'
    stem = os.path.basename(path)[:-len('.npy')]
    if len(shape) == 5 and shape[2:] == tuple(image_shape):
        if n_classes is not None and shape[0] != n_classes:
            return f'it holds {shape[0]} classes, not {n_classes}'
        return None
    if len(shape) == 4 and shape[1:] == tuple(image_shape) and os.path.isfile(counts_path(
            os.path.dirname(path), stem)):
        return None
    return (f'it holds an array of shape {shape}, not per-class images [n_classes, n, '
            f'{", ".join(map(str, image_shape))}]')


def check_l2b_npy(path, image_shape, n_classes=None):
    """Deletes `path` and raises DownloadError unless it is a per-class npy of l2b's (or ours)."""
    from .download import DownloadError
    problem = l2b_npy_problem(path, image_shape, n_classes)
    if problem is not None:
        os.remove(path)
        raise DownloadError(f'{path} is not a usable l2b data file: {problem}. It was deleted; rerun to '
                            'download it again, and if this repeats the source is serving a different '
                            'file.')
