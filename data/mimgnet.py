"""miniImageNet reader: metadrop's or l2b's npy files, or the Ravi & Larochelle csv split of JPEGs.

Files under <data_root>/mimgnet/ (option `mimgnet_layout`; 'auto' takes npy when train.npy
exists, else the csv layout):

  npy (metadrop, l2b): train.npy and test.npy, which metadrop's data.py reshapes to
    [64, 600, 21168] and [20, 600, 21168]; 21168 = 84*84*3 values per image in HWC order.
    Any stored shape with that many values per image is accepted: [C, n, 21168] and
    [C, n, 84, 84, 3] give the class and per-class counts; a flat [N, 21168], [N, 84, 84, 3]
    or 1-D array is cut into classes of 600 images as metadrop does. The files are memory-
    mapped (np.load(mmap_mode='r')) and reshaped as a view, never copied; an episode reads
    only its own images. metadrop has no validation split: without valid.npy, validation
    uses the meta-test split, exactly as metadrop did (val_is_test=True). l2b (Bayesian
    TAML; get_data.py --source l2b) also has valid.npy, the 16 validation classes, which is
    then used for validation (val_is_test=False). l2b's files are per-class arrays
    [C, 600, 84, 84, 3] whose dtype is not documented: numeric files are read as below;
    pickled object arrays are never loaded here, get_data.py converts them once into uint8
    [C, 600, 84, 84, 3] through a restricted unpickler (data.perclass).
    Values: the dtype of the Dropbox files is not documented (fidelity notes 4.1). A float
    file is used as stored, as metadrop does. A uint8 file is read as x / 255 (ClassSplit's
    rule for uint8 storage, the [0, 1] range cbfinn/maml feeds): metadrop would have fed 0..255
    unscaled, so this is a deliberate difference that only applies if the files are uint8.

  csv (Ravi & Larochelle, as cbfinn/maml's proc_images.py and most code): images/<filename>
    plus train.csv, val.csv and test.csv, each with the header `filename,label` (64/16/20
    classes x 600 images); or the already-split folders train/<wnid>/*.jpg, val/<wnid>/*,
    test/<wnid>/* that proc_images.py leaves behind (used when images/ is empty or absent).
    Images are converted to RGB and resized to 84x84 with PIL LANCZOS unless already 84x84
    (proc_images.py resizes in the file's own mode; so do we for L/RGB/CMYK images). They are
    read back as x / 255, as cbfinn/maml does. Classes are sorted by label; the images of a
    class keep csv order (folder form: sorted by file name). The 16 validation classes are
    used for validation (val_is_test=False); without val.csv / val/, validation uses test.

Cache (csv layout): decoding 60000 JPEGs takes minutes, so the first load writes each split
to <data_root>/mimgnet/cache_{train,val,test}.npy, uint8 [n_images, 84, 84, 3], built image
by image into an np.lib.format.open_memmap temporary file (the data set is never held in RAM)
and renamed into place, with a sidecar cache_{split}.json (class names, images per class,
and the signature of its source). Later loads memory-map the .npy. The signature is cheap
to check: the size and mtime of the split's csv (csv form; the JPEGs themselves are not
checked, so a cache stays usable after images/ is deleted), or the class folders and their
image counts (folder form). A different signature rebuilds the cache; `build_cache(...,
force=True)` (get_data.py --force) rebuilds it regardless. A read-only folder is decoded
into memory instead, every time. tiered.py's class-folder form uses the same listing,
decoding and cache code (with its own cache file names).
"""
import csv
import functools
import logging
import os
from pathlib import Path

import numpy as np

from .base import DatasetError, DatasetSpec, Download, FewShotDataset, RemoteFile, Source, dropbox_npy
from .episodes import ClassSplit
from .storage import (FolderSource, cache_paths, check_disjoint, current_cache,
                      decode_now, decode_split, file_signature, folder_classes, folder_source,
                      open_cache, open_npy_memmap, to_split, writable)

log = logging.getLogger(__name__)

IMAGE_SIZE = 84
CHANNELS = 3
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
PIXELS = IMAGE_SIZE * IMAGE_SIZE * CHANNELS       # 21168, metadrop's flat image
METADROP_PER_CLASS = 600
METADROP_CLASSES = {'train': 64, 'test': 20}
RAVI_CLASSES = {'train': 64, 'val': 16, 'test': 20}
SPLITS = ('train', 'val', 'test')
LAYOUTS = ('auto', 'npy', 'csv')
CSV_HEADER = ['filename', 'label']


def get_data_command(data_root, source=None):
    extra = f' --source {source}' if source else ''
    return f'python data/get_data.py --dataset mimgnet{extra} --data_root {data_root}'


def _where_images(mimgnet_dir, data_root):
    return (f'miniImageNet images cannot be redistributed (ImageNet terms), so they must be '
            f'obtained separately (e.g. the Ravi & Larochelle images.zip, or cut from ImageNet with '
            f'the csvs) and placed as {mimgnet_dir / "images"}/<filename>.jpg beside '
            f'{mimgnet_dir}/train.csv, val.csv, test.csv (header filename,label; '
            f'`{get_data_command(data_root, "csv")}` fetches the csvs, and with --images_dir DIR '
            f'builds the cache from images kept elsewhere), or as {mimgnet_dir}/{{train,val,test}}'
            f'/<wnid>/*.jpg')


# ----------------------------------------------------------------------------- npy (metadrop)

def npy_geometry(shape, per_class=METADROP_PER_CLASS):
    """(n_classes, n_per_class) of an array of `shape` holding 84x84x3 images, or a string
    saying why it cannot be read that way. [C, n, 21168] and [C, n, 84, 84, 3] carry both
    counts, [C, n*21168] too; other shapes are cut into classes of `per_class` images."""
    shape = tuple(int(s) for s in shape)
    size = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if size == 0 or size % PIXELS:
        return (f'{size} values, not a positive multiple of 84*84*3 = {PIXELS} '
                f'(one flat 84x84x3 image)')
    if len(shape) == 3 and shape[2] == PIXELS or len(shape) == 5 and shape[2:] == IMAGE_SHAPE:
        return shape[0], shape[1]
    if len(shape) == 2 and shape[1] != PIXELS and shape[1] % PIXELS == 0:
        return shape[0], shape[1] // PIXELS
    images = size // PIXELS
    if images % per_class:
        return (f'{images} images, not a multiple of the {per_class} images per class metadrop '
                f'assumes for a flat array')
    return images // per_class, per_class


def _load_npy(path: Path, data_root=None):
    """The memory-mapped array of `path`, reshaped (a view) to [C, n, 84, 84, 3]."""
    from .perclass import read_npy_header
    if read_npy_header(path).dtype.hasobject:
        # l2b's files, if they are object arrays (their dtype is not documented).
        raise DatasetError(
            f'{path} holds Python objects (a pickled object array); they are never loaded with '
            f'allow_pickle because unpickling can run code. If these are l2b\'s files, convert them '
            f'once through a restricted unpickler with: '
            f'{get_data_command(path.parent.parent if data_root is None else data_root, "l2b")} '
            f'(files already there are kept and converted); otherwise delete it and download it again')
    arr = open_npy_memmap(path)   # never unpickles
    if arr.dtype.kind not in 'uif':
        raise DatasetError(f'{path} holds {arr.dtype} values; expected uint8 or float images')
    geometry = npy_geometry(arr.shape)
    if isinstance(geometry, str):
        raise DatasetError(f'{path} has shape {arr.shape} ({geometry}), which does not reshape to '
                           f'[n_classes, n_per_class, 21168] (metadrop: train [64, 600, 21168], '
                           f'test [20, 600, 21168])')
    if not arr.flags.c_contiguous:
        # Reshaping a Fortran-ordered file would copy all of it into memory.
        raise DatasetError(f'{path} is stored in Fortran order, which cannot be reshaped to '
                           f'[n_classes, n_per_class, 84, 84, 3] without copying it into memory; '
                           f'rewrite it once in C order (np.save(path, np.ascontiguousarray(a)))')
    return arr.reshape(geometry + IMAGE_SHAPE)   # a view of the memmap, not a copy


def _npy_dataset(mimgnet_dir: Path, data_root=None):
    splits = {}
    for which, stem in (('train', 'train'), ('val', 'valid'), ('test', 'test')):
        path = mimgnet_dir / f'{stem}.npy'
        if which == 'val' and not path.is_file():
            continue
        arr = _load_npy(path, data_root)
        splits[which] = ClassSplit(arr, names=[f'{stem}.npy/class{c:03d}' for c in range(len(arr))],
                                   name=which, dataset='mimgnet')
    tr, te = splits['train'], splits['test']
    val_is_test = 'val' not in splits
    va = te if val_is_test else splits['val']
    if len({tr.image_shape, va.image_shape, te.image_shape}) != 1:  # pragma: no cover - IMAGE_SHAPE
        raise DatasetError(f'the npy files of {mimgnet_dir} hold images of different shapes')
    dtypes = {s._stacked.dtype for s in (tr, va, te)}
    values = ', '.join(sorted(f'{d} {"read as x/255" if d == np.uint8 else "used as stored"}'
                              for d in dtypes))
    if val_is_test:
        desc = (f'mimgnet (metadrop npy train.npy [{tr.n_classes}, {tr.counts[0]}, {PIXELS}] + test.npy '
                f'[{te.n_classes}, {te.counts[0]}, {PIXELS}], memory-mapped, {values}; no validation '
                f'split, validation uses the meta-test split as metadrop): train {tr.n_classes} / val=test / '
                f'test {te.n_classes} classes')
    else:
        desc = (f'mimgnet (npy train.npy / valid.npy / test.npy as l2b, memory-mapped, {values}): '
                f'train {tr.n_classes} / val {va.n_classes} / test {te.n_classes} classes x '
                f'{tr.counts[0]}/{va.counts[0]}/{te.counts[0]} images')
    return FewShotDataset('mimgnet', tr, va, te, IMAGE_SHAPE, val_is_test, desc)


# ----------------------------------------------------------------------------- csv / folder sources


def _read_csv(path: Path, images_dir: Path):
    """[(label, [image paths in csv order])], sorted by label."""
    try:
        with open(path, newline='', encoding='utf-8-sig') as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f'cannot read {path} ({type(e).__name__}: {e}); fetch it again with '
                           f'{get_data_command(path.parent.parent, "csv")}') from None
    if not rows or [c.strip() for c in rows[0]] != CSV_HEADER:
        raise DatasetError(f'{path} must start with the header line "filename,label" (Ravi & Larochelle '
                           f'format); its first line is {",".join(rows[0]) if rows else "(empty file)"!r}')
    classes, seen = {}, set()
    for line, row in enumerate(rows[1:], start=2):
        if not row or not ''.join(row).strip():
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DatasetError(f'{path} line {line}: expected "filename,label", got {",".join(row)!r}')
        name, label = row[0].strip(), row[1].strip()
        if name in seen:
            raise DatasetError(f'{path} line {line}: {name} is listed twice')
        if '/' in name or '\\' in name or name in ('.', '..'):
            raise DatasetError(f'{path} line {line}: {name!r} is not a plain file name (the csv names '
                               f'files inside images/)')
        seen.add(name)
        classes.setdefault(label, []).append(images_dir / name)
    if not classes:
        raise DatasetError(f'{path} lists no images (only the header)')
    return sorted(classes.items())


def _detect_form(mimgnet_dir: Path):
    """'csv' (images/ + csvs), 'folders' (train/, test/ class folders) or None."""
    images = mimgnet_dir / 'images'
    has_csv = (mimgnet_dir / 'train.csv').is_file() and (mimgnet_dir / 'test.csv').is_file()
    has_images = False
    if images.is_dir():
        with os.scandir(images) as entries:
            has_images = next(entries, None) is not None
    has_folders = (mimgnet_dir / 'train').is_dir() and (mimgnet_dir / 'test').is_dir()
    if has_csv and (has_images or not has_folders):
        return 'csv'
    if has_folders:
        return 'folders'
    return None


def _sources(mimgnet_dir: Path, form):
    """{split: FolderSource} of the splits present in `form`."""
    out = {}
    for which in SPLITS:
        if form == 'csv':
            path = mimgnet_dir / f'{which}.csv'
            if path.is_file():
                out[which] = FolderSource(which, f'{which}.csv + images/',
                                     {'form': 'csv', **file_signature(path)})
        elif form == 'folders':
            if (mimgnet_dir / which).is_dir():
                out[which] = folder_source(mimgnet_dir, which)
    return out


def class_files(mimgnet_dir: Path, src: FolderSource, images_dir: Path):
    if src.signature['form'] == 'csv':
        return _read_csv(mimgnet_dir / f'{src.which}.csv', images_dir)
    return folder_classes(mimgnet_dir / src.which)


# ----------------------------------------------------------------------------- decoding and cache
#
# Shared with tiered.py's class-folder form: `stem` names the cache files (stem.format(which=...)
# + .npy / .json) and `label` the data set in progress bars and messages.


def build_cache(mimgnet_dir, images_dir=None, force=False):
    """Writes cache_{train,val,test}.npy (+ .json) from the csv layout in `mimgnet_dir`.

    images_dir: where the JPEGs named in the csvs are (default mimgnet_dir/images); the
    csvs stay in mimgnet_dir. Up-to-date caches are kept unless `force`. Returns the paths.
    """
    mimgnet_dir = Path(mimgnet_dir)
    images_dir = Path(images_dir) if images_dir is not None else mimgnet_dir / 'images'
    form = 'csv' if images_dir != mimgnet_dir / 'images' else _detect_form(mimgnet_dir)
    if form is None or (form == 'csv' and not images_dir.is_dir()):
        raise DatasetError(f'no miniImageNet images to preprocess in {mimgnet_dir} '
                           f'({images_dir} is missing or empty and there are no train/ test/ class '
                           f'folders). {_where_images(mimgnet_dir, mimgnet_dir.parent)}')
    sources = _sources(mimgnet_dir, form)
    if 'train' not in sources or 'test' not in sources:
        raise DatasetError(f'{mimgnet_dir} needs train.csv and test.csv (or train/ and test/ folders)')
    if not writable(mimgnet_dir):
        raise DatasetError(f'cannot write the cache into {mimgnet_dir}: the folder is not writable')
    paths = []
    for which, src in sources.items():
        cached = None if force else open_cache(mimgnet_dir, which)
        if cached is None or cached[1].get('source') != src.signature:
            decode_split(mimgnet_dir, src, class_files(mimgnet_dir, src, images_dir), write=True,
                         missing_hint=_where_images(mimgnet_dir, mimgnet_dir.parent))
        paths.append(cache_paths(mimgnet_dir, which)[0])
    return paths


def _csv_dataset(mimgnet_dir: Path, data_root):
    form = _detect_form(mimgnet_dir)
    sources = _sources(mimgnet_dir, form) if form else {}
    write = writable(mimgnet_dir)
    loaded, used = {}, []
    for which in SPLITS:
        src = sources.get(which)
        current = None if src is None else current_cache(mimgnet_dir, src)
        if current is not None:
            loaded[which] = current
            used.append(f'cache_{which}.npy')
        elif src is not None:
            if form == 'csv' and not (mimgnet_dir / 'images').is_dir():
                raise DatasetError(f'{mimgnet_dir / "images"} does not exist and there is no up-to-date '
                                   f'cache_{which}.npy for {which}.csv. '
                                   f'{_where_images(mimgnet_dir, data_root)}')
            arr, meta, note = decode_now(
                mimgnet_dir, src, class_files(mimgnet_dir, src, mimgnet_dir / 'images'), write,
                missing_hint=_where_images(mimgnet_dir, data_root))
            loaded[which] = (arr, meta)
            used.append(note)
        elif form is None and (cached := open_cache(mimgnet_dir, which)) is not None:
            loaded[which] = cached      # the sources were removed after caching
            used.append(f'cache_{which}.npy (its {cached[1].get("origin", "source")} no longer present)')
    if 'train' not in loaded or 'test' not in loaded:
        found = sorted(p.name for p in mimgnet_dir.iterdir()) if mimgnet_dir.is_dir() else []
        raise DatasetError(
            f'no miniImageNet data in {mimgnet_dir}: looked for train.npy + test.npy (metadrop layout), '
            f'train.csv + val.csv + test.csv with images/, train/ val/ test/ class folders, or '
            f'cache_train.npy + cache_test.npy (found: {", ".join(found) or "nothing"}). Get metadrop\'s '
            f'files with: {get_data_command(data_root)}. For the csv layout: '
            f'{_where_images(mimgnet_dir, data_root)}')
    splits = {which: to_split(*loaded[which], which) for which in loaded}
    check_disjoint(splits, mimgnet_dir)
    train, test = splits['train'], splits['test']
    val_is_test = 'val' not in splits
    val = test if val_is_test else splits['val']

    def per_class(s):
        lo, hi = int(s.counts.min()), int(s.counts.max())
        return str(lo) if lo == hi else f'{lo}..{hi}'

    standard = (train.n_classes, 0 if val_is_test else val.n_classes, test.n_classes) == (64, 16, 20)
    kind = {'csv': 'Ravi & Larochelle csv split', 'folders': 'class folders'}.get(form, 'cache')
    desc = (f'mimgnet ({kind}{"" if standard else " (not the standard 64/16/20 classes)"}, 84x84x3 uint8 read as x/255, '
            f'{"; ".join(used)}, memory-mapped where cached): train {train.n_classes} / '
            f'{"val=test (no val split)" if val_is_test else f"val {val.n_classes}"} / test {test.n_classes} '
            f'classes, {per_class(train)}/{per_class(val)}/{per_class(test)} images per class')
    return FewShotDataset('mimgnet', train, val, test, IMAGE_SHAPE, val_is_test, desc)


# ----------------------------------------------------------------------------- entry point

def load(data_root='./data', mimgnet_layout='auto') -> FewShotDataset:
    """Reads miniImageNet from <data_root>/mimgnet.

    Args:
      mimgnet_layout: 'auto' (npy when train.npy exists, else csv), 'npy' (metadrop's
        train.npy/test.npy, val = test; l2b's also have valid.npy, used for validation) or
        'csv' (images/ + train/val/test.csv, or train/ val/ test/ class folders, cached as
        cache_{split}.npy).
    """
    mimgnet_dir = Path(data_root) / 'mimgnet'
    if mimgnet_layout not in LAYOUTS:
        raise DatasetError(f'unknown mimgnet_layout {mimgnet_layout!r}; use one of {", ".join(LAYOUTS)}')
    npy = [mimgnet_dir / 'train.npy', mimgnet_dir / 'test.npy']
    if mimgnet_layout == 'npy' or (mimgnet_layout == 'auto' and npy[0].is_file()):
        missing = [str(p) for p in npy if not p.is_file()]
        if missing:
            raise DatasetError(f'metadrop miniImageNet files missing: {", ".join(missing)} (the npy layout '
                               f'needs train.npy and test.npy in {mimgnet_dir}). Get them with: '
                               f'{get_data_command(data_root)} (or l2b\'s train/valid/test.npy with: '
                               f'{get_data_command(data_root, "l2b")})')
        return _npy_dataset(mimgnet_dir, data_root)
    return _csv_dataset(mimgnet_dir, data_root)


# ----------------------------------------------------------------------------- declaration

# The Ravi & Larochelle split (64/16/20 classes x 600 images), as published with their code.
RAVI_CSV_BASE_URL = 'https://raw.githubusercontent.com/twitter/meta-learning-lstm/master/data/miniImagenet'
# l2b's miniImageNet: 64 / 16 / 20 classes x 600 images of 84x84x3 (dtype undocumented).
L2B_CLASSES = {'train': 64, 'valid': 16, 'test': 20}


def check_mimgnet_npy(path, n_classes):
    """Deletes `path` and raises DownloadError unless it reads as [n_classes, 600, 21168].

    As for Omniglot the stored shape is undocumented; any shape the reader understands is
    accepted if it gives n_classes classes of 600 images of 84*84*3 values."""
    from .download import check_npy
    found = {}

    def problem_of(arr):
        found['dtype'] = arr.dtype
        if arr.dtype.kind not in 'uif':
            return f'it holds {arr.dtype} values, not images'
        geometry = npy_geometry(arr.shape)
        if isinstance(geometry, str) or geometry != (n_classes, METADROP_PER_CLASS):
            why = geometry if isinstance(geometry, str) else f'{geometry[0]} classes x {geometry[1]} images'
            return (f'it holds an array of shape {arr.shape} ({why}), which cannot be read as '
                    f'[{n_classes}, {METADROP_PER_CLASS}, {PIXELS}] (classes x images x '
                    '84*84*3 values) as metadrop reads it')
        return None

    check_npy(path, 'metadrop miniImageNet file', problem_of)
    log.info('%s: %d classes x %d images x %d values (%s).', path, n_classes, METADROP_PER_CLASS,
             PIXELS, found['dtype'])


def check_ravi_csv(path, n_classes):
    """Deletes `path` and raises DownloadError unless it is a Ravi & Larochelle split csv:
    header filename,label and n_classes labels of 600 rows each."""
    import collections
    from .download import DownloadError
    problem = None
    try:
        with open(path, newline='', encoding='utf-8-sig') as fh:
            rows = list(csv.reader(fh))
        if not rows or [c.strip() for c in rows[0]] != CSV_HEADER:
            problem = f'its first line is {",".join(rows[0]) if rows else "(empty)"!r}, not "filename,label"'
        else:
            counts = collections.Counter(r[1].strip() for r in rows[1:] if len(r) == 2)
            bad = [r for r in rows[1:] if r and len(r) != 2]
            if bad:
                problem = f'{len(bad)} rows are not "filename,label" (e.g. {",".join(bad[0])!r})'
            elif len(counts) != n_classes or set(counts.values()) != {METADROP_PER_CLASS}:
                problem = (f'it lists {len(counts)} classes with {min(counts.values(), default=0)}..'
                           f'{max(counts.values(), default=0)} images each, not {n_classes} x '
                           f'{METADROP_PER_CLASS}')
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problem = f'it cannot be read as csv ({exc})'
    if problem is not None:
        os.remove(path)
        raise DownloadError(f'{path} is not a Ravi & Larochelle miniImageNet split file: {problem}. '
                            'It was deleted; rerun to download it again.')


def preprocess_mimgnet_csv(dataset_dir, paths, force, images_dir=None):
    """Builds the cache_{split}.npy from the images, or explains where they go."""
    from .download import DownloadError, preprocessing
    images = images_dir or os.path.join(dataset_dir, 'images')
    split_folders = all(os.path.isdir(os.path.join(dataset_dir, w)) for w in ('train', 'test'))
    if images_dir is None and not split_folders and not (os.path.isdir(images) and os.listdir(images)):
        raise DownloadError(
            f'The split csvs are in {dataset_dir}, but the images are not. ImageNet images cannot be '
            'redistributed, so no source downloads them: obtain the miniImageNet images (e.g. the '
            "Ravi & Larochelle images.zip, or cut them from ImageNet with the csvs' file names), "
            f'put them in {images}/<filename>.jpg (or as {dataset_dir}/{{train,val,test}}/<wnid>/*.jpg), '
            'or pass --images_dir DIR, and rerun this command to build the cache '
            '(the csvs are not fetched again). Pass --no_preprocess to only fetch the csvs.')
    with preprocessing('miniImageNet', dataset_dir):
        built = build_cache(dataset_dir, images_dir=images_dir, force=force)
    return ', '.join(os.path.basename(p) for p in built)


def check_l2b_mimgnet_npy(path, split):
    """l2b's miniImageNet file `split`: a pickled object array of L2B_CLASSES[split] classes
    (converted later), or a numeric array as check_mimgnet_npy accepts."""
    from .perclass import check_l2b_npy
    from .storage import read_npy_header
    n_classes = L2B_CLASSES[split]
    try:
        is_object = read_npy_header(path).dtype.hasobject
    except DatasetError:   # not an npy at all: check_mimgnet_npy says so and deletes it
        is_object = False
    if is_object:
        check_l2b_npy(path, IMAGE_SHAPE, n_classes)
    else:
        check_mimgnet_npy(path, n_classes)


def prepare_mimgnet_l2b(dataset_dir):
    """A download skips files that exist: train.npy/test.npy fetched with --source metadrop
    would be kept. Say so when train.npy is there but l2b's valid.npy is not."""
    if os.path.isfile(os.path.join(dataset_dir, 'train.npy')) and \
            not os.path.isfile(os.path.join(dataset_dir, 'valid.npy')):
        log.warning('%s/train.npy (and test.npy) already exist and are kept; if they are metadrop\'s '
                    '(--source metadrop) rather than l2b\'s, delete them and rerun to fetch l2b\'s.',
                    dataset_dir)


def preprocess_mimgnet_l2b(dataset_dir, paths, force, progress=True):
    """Converts any of l2b's miniImageNet files that is a pickled object array into uint8
    [C, 600, 84, 84, 3] in place; numeric files are used as they are."""
    from .download import preprocessing
    from .perclass import convert_object_npy
    from .storage import read_npy_header
    done = []
    with preprocessing('miniImageNet', dataset_dir):
        for path in paths:
            result = convert_object_npy(path, IMAGE_SHAPE, dense_only=True, progress=progress)
            done.append(result or f'{os.path.basename(path)} ({read_npy_header(path).dtype}, used as is)')
    return '; '.join(done)


def _metadrop_file(which, file_id):
    return dropbox_npy(which, file_id, functools.partial(check_mimgnet_npy, n_classes=METADROP_CLASSES[which]))


DOWNLOAD = Download(
    name='mimgnet',
    default_source='metadrop',
    sources={
        'metadrop': Source(
            description="Meta-Dropout's miniImageNet train.npy/test.npy (Dropbox; no "
                        'published checksum, so the size and array shape are checked)',
            preprocess=None,
            files=(_metadrop_file('train', 'ir54llgjfjv3naa'), _metadrop_file('test', 'i40h3wyjlpxeesr'))),
        'csv': Source(
            description='the Ravi & Larochelle split csvs (twitter/meta-learning-lstm); the '
                        'ImageNet images cannot be redistributed and must be supplied '
                        '(images/ or --images_dir), then they are cached as cache_*.npy',
            preprocess=preprocess_mimgnet_csv, options=('images_dir',),
            files=tuple(
                RemoteFile(which, f'{which}.csv', f'{RAVI_CSV_BASE_URL}/{which}.csv',
                           check=functools.partial(check_ravi_csv, n_classes=n))
                for which, n in RAVI_CLASSES.items())),
        'l2b': Source(
            description="Bayesian TAML's (l2b's) miniImageNet train.npy/valid.npy/test.npy "
                        '(Dropbox; no published checksum, so the shape is checked; pickled object '
                        'arrays are converted to uint8 through a restricted unpickler); valid.npy is '
                        'used for validation',
            preprocess=preprocess_mimgnet_l2b, options=('progress',), prepare=prepare_mimgnet_l2b,
            files=tuple(dropbox_npy(name, file_id, functools.partial(check_l2b_mimgnet_npy, split=name))
                        for name, file_id in (('train', 'llfp5p6vymiabzl'), ('valid', 'f1jz6valn6j42jk'),
                                              ('test', 'o0mg0b83978yu5y')))),
    })


def options(cfg):
    """The reader options from main.py's flags (configs saved before --mimgnet_layout: auto)."""
    return dict(mimgnet_layout=getattr(cfg, 'mimgnet_layout', 'auto'))


SPECS = (DatasetSpec(
    name='mimgnet', loader=load, kind='images', flags=('mimgnet_layout',), options=options,
    description='miniImageNet (Vinyals et al.; Ravi & Larochelle split), 84x84x3: metadrop\'s or '
                "l2b's npy files, or the csvs with the images cached as uint8",
    download=DOWNLOAD),)
