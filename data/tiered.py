"""tieredImageNet reader (Ren et al. 2018): the npz layout of MetaOptNet / PyTorch-MAML / FEAT,
or the image folders of Meta-Transfer Learning.

tieredImageNet holds 608 ImageNet classes grouped into 34 high-level categories; the split
is by category, so the 351 training, 97 validation and 160 test classes come from disjoint
groups. Two layouts are read from <data_root>/tiered/ (or <data_root>/tiered-imagenet/ when
only that folder exists, or the folder given as `tiered_dir`); the npz layout is used when
its files (or its caches) are there for every split, else the class folders when train/
and test/ exist. When both are present the npz layout is preferred, and the description
says the folders were not read. An incomplete npz layout beside the folders is ignored with
a warning.

npz layout:

  {split}_images.npz  for split in train, val, test; the member 'images' is a uint8 array
                      [N, 84, 84, 3]. Its channels are in BGR order (OpenCV's, which Ren et
                      al.'s tools use); PyTorch-MAML reverses the channel axis when reading,
                      and so do we, so images come out RGB, read as x / 255.
  {split}_labels.pkl  a pickled dict; 'label_specific' (accepted alias: 'labels') gives the
                      fine class of every image, an integer array or list [N]. The optional
                      'label_specific_str' (class names, e.g. WordNet ids) names the classes;
                      'label_general' / 'label_general_str' (the 34 categories) are not used.

`python data/get_data.py --dataset tiered` fetches and unpacks these files (see there).

Pickles are refused unless they hold plain data: unpickling can run arbitrary code, so the
labels (and, in get_data's --source ren conversion, the PNG lists) are read with a
restricted unpickler whose find_class only hands out what numpy arrays and builtin
containers need (numpy's array/dtype/scalar reconstructors, dict, list, tuple, set, str,
bytes, int, float, bool, complex, and _codecs.encode, which protocol-2 pickles use for
bytes). A pickle that asks for anything else (os.system, a class of some module, ...) is
refused with a DatasetError before that object is created. Python 2 pickles are read
with encoding='latin1', which is what numpy needs for arrays pickled by Python 2.

Memory: the training images alone are ~9.5 GB of uint8, so nothing is loaded into RAM.
The first load of a split writes cache_{split}.npy beside the files, uint8 [N, 84, 84, 3]
in RGB order with the images sorted by class (stable, so a class keeps file order). It is
written chunk by chunk into an np.lib.format.open_memmap temporary file and renamed into
place once complete. The npz member is streamed: a stored (uncompressed) member, as
np.savez writes it, is memory-mapped at its offset inside the zip; a compressed one
(np.savez_compressed) is decompressed in chunks. A small cache_{split}_index.npz records
the class ids, names, offsets and counts, and the size and mtime of both source files; a
source that changed rebuilds the cache, and `build_cache(..., force=True)` (get_data.py
--force) rebuilds it regardless. Each class is then a memory-mapped slice of the cache, so
an episode reads only its own images. Once the caches exist the npz/pkl files may be
deleted to save space: a cache whose sources are gone is used as it is.

Image folders (Meta-Transfer Learning, yaoyao-liu/meta-transfer-learning, TF; the layout its
author's tiered-imagenet-tools script writes): {train,val,test}/<class folder>/<image files>,
84x84 JPEGs. Classes are the class folders in sorted order (named by their folder, e.g. the
WordNet id), the images of a class sorted by file name; jpg/jpeg/png/bmp/gif are read. Without
val/, validation uses the test split (val_is_test). This form reuses mimgnet.py's folder
machinery rather than a copy of it: images are decoded with PIL to RGB, resized to 84x84 with
LANCZOS unless already 84x84, and read as x / 255 (no channel reversal: the files are RGB).
The first load writes cache_{split}_folders.npy (uint8 [N, 84, 84, 3], written image by image
into an open_memmap temporary file and renamed into place) with a JSON sidecar
cache_{split}_folders.json holding the class names, image counts and a signature of the split:
its class folders and their image counts. A different signature (a class or an image added or
removed) rebuilds that split's cache; later loads memory-map it (an image rewritten in place
is not noticed: delete cache_{split}_folders.* to decode it again). The names differ from the npz
layout's caches so that neither can be mistaken for the other. A read-only folder is decoded
into memory instead, every time. Once cached, the folders may be deleted: the caches are then
used as they are.

A split whose class count differs from 351 / 97 / 160 is used as found, with a warning
and a note in the description (tests use tiny splits).
"""
import functools
import io
import logging
import os
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from .base import DatasetError, DatasetSpec, Download, FewShotDataset, RemoteFile, Source, show_progress
from .episodes import ClassSplit
from .storage import (check_disjoint, current_cache, decode_now, file_signature, folder_classes,
                      folder_source, load_plain_pickle, open_cache as open_folder_cache, open_npy_memmap,
                      to_split,
                      writable)

log = logging.getLogger(__name__)

SPLITS = ('train', 'val', 'test')
EXPECTED_CLASSES = {'train': 351, 'val': 97, 'test': 160}
IMAGE_SHAPE = (84, 84, 3)
IMAGE_BYTES = 84 * 84 * 3
DIR_NAMES = ('tiered', 'tiered-imagenet')
IMAGES_MEMBER = 'images.npy'
CACHE_VERSION = 1
CHUNK = 1024        # images per read/write while building a cache (~21 MB)
FOLDER_CACHE_STEM = 'cache_{which}_folders'    # + .npy / .json: the image-folder form's caches
FOLDER_SPLITS_NEEDED = ('train', 'test')

# module -> names a plain-data pickle may refer to. Both numpy 1 (numpy.core) and numpy 2
# (numpy._core) spellings; _frombuffer is what protocol 5 uses for arrays.


def get_data_command(data_root, source=None):
    extra = f' --source {source}' if source else ''
    return f'python data/get_data.py --dataset tiered{extra} --data_root {data_root}'


# ----------------------------------------------------------------------------- restricted pickles


# ----------------------------------------------------------------------------- labels

class Labels(NamedTuple):
    labels: np.ndarray   # int64 [N], the fine class of each image
    names: dict          # class id -> name, when the file names the classes


def read_labels(path):
    """The per-image fine classes of a {split}_labels.pkl (restricted unpickling)."""
    path = Path(path)
    obj = load_plain_pickle(path)
    if not isinstance(obj, dict):
        raise DatasetError(f'{path} holds a {type(obj).__name__}, not the dict with '
                           f"'label_specific' (or 'labels') that tieredImageNet label files hold")
    key = next((k for k in ('label_specific', 'labels') if k in obj), None)
    if key is None:
        raise DatasetError(f"{path} has no 'label_specific' (or 'labels') entry; its keys are "
                           f'{", ".join(sorted(map(str, obj))) or "(none)"}')
    try:
        labels = np.asarray(obj[key])
    except (ValueError, TypeError) as e:
        raise DatasetError(f'{path}: {key!r} is not an array of class ids ({e})') from None
    if labels.ndim != 1 or labels.size == 0 or labels.dtype.kind not in 'iu':
        raise DatasetError(f'{path}: {key!r} must be a non-empty 1-D list of integer class ids, '
                           f'got {labels.dtype} values of shape {labels.shape}')
    labels = labels.astype(np.int64)
    return Labels(labels, _class_names(obj.get('label_specific_str'), labels))


def _class_names(strs, labels):
    """{class id: name} from label_specific_str: one name per class id (indexed by id, as Ren
    et al.'s files) or one per image; {} when it is absent or fits neither."""
    if strs is None:
        return {}
    strs = [s.decode('latin1') if isinstance(s, bytes) else str(s) for s in np.asarray(strs).ravel()]
    classes, first = np.unique(labels, return_index=True)
    if len(strs) == len(labels):
        return {int(c): strs[i] for c, i in zip(classes, first)}
    if classes.min() >= 0 and len(strs) > classes.max():
        return {int(c): strs[c] for c in classes}
    log.info('label_specific_str has %d entries for %d images / %d classes; classes are unnamed',
             len(strs), len(labels), len(classes))
    return {}


# ----------------------------------------------------------------------------- npz images

class NpzImages:
    """The 'images' member of an npz file, read in order without loading it whole.

    A stored member is memory-mapped at its offset in the zip; a deflated one is
    decompressed as a stream. `read(i0, i1)` returns images i0..i1-1 (uint8, as stored);
    with a deflated member, calls must go forward without gaps."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as e:
            raise DatasetError(f'{self.path} is not a readable npz (zip) file ({e}); it is truncated '
                               f'or damaged: delete it and download it again') from None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self):
        try:
            info = self._zip.getinfo(IMAGES_MEMBER)
        except KeyError:
            keys = [n[:-4] if n.endswith('.npy') else n for n in self._zip.namelist()]
            raise DatasetError(f"{self.path} has no 'images' array (it holds: "
                               f'{", ".join(keys) or "nothing"})') from None
        self.stored = info.compress_type == zipfile.ZIP_STORED
        stream = self._zip.open(info)
        try:
            shape, header_len = self._header(stream)
        except BaseException:
            stream.close()
            raise
        self.shape = shape
        self.n = shape[0]
        if self.stored:
            stream.close()
            self._stream = None
            with open(self.path, 'rb') as f:        # the member's data start after its local header
                f.seek(info.header_offset)
                local = f.read(30)
            if len(local) != 30 or local[:4] != b'PK\x03\x04':
                raise DatasetError(f'{self.path} is damaged (no zip entry where its directory says '
                                   f"'images' is); delete it and download it again")
            name_len, extra_len = struct.unpack('<HH', local[26:30])
            offset = info.header_offset + 30 + name_len + extra_len + header_len
            if offset + self.n * IMAGE_BYTES > self.path.stat().st_size:
                raise DatasetError(f'{self.path} is truncated (its images end past the end of the '
                                   f'file); delete it and download it again')
            self._array = np.memmap(self.path, dtype=np.uint8, mode='r', offset=offset,
                                    shape=shape) if self.n else np.zeros(shape, np.uint8)
        else:
            self._stream = stream
            self._array = None
        self._next = 0

    def _header(self, stream):
        fmt = np.lib.format
        try:
            version = fmt.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(stream)
            else:
                raise ValueError(f'npy format version {version} is not supported')
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise DatasetError(f"the 'images' array of {self.path} is not a readable npy array ({e}); "
                               f'delete the file and download it again') from None
        header_len = stream.tell()
        if dtype.hasobject:
            raise DatasetError(f"the 'images' array of {self.path} holds Python objects, which are "
                               f'never loaded (unpickling can run code); expected uint8 images')
        if dtype != np.uint8 or len(shape) != 4 or tuple(shape[1:]) != IMAGE_SHAPE:
            raise DatasetError(f"the 'images' array of {self.path} is {dtype} {tuple(shape)}; "
                               f'tieredImageNet images must be uint8 [N, 84, 84, 3]')
        if fortran and shape[0] > 1:
            raise DatasetError(f"the 'images' array of {self.path} is stored in Fortran order, which "
                               f'cannot be read image by image; rewrite it in C order '
                               f'(np.savez(path, images=np.ascontiguousarray(images)))')
        return tuple(int(s) for s in shape), header_len

    def read(self, i0, i1):
        if self._array is not None:
            return np.asarray(self._array[i0:i1])
        if i0 != self._next:
            raise ValueError(f'a compressed member is read in order: expected {self._next}, got {i0}')
        want = (i1 - i0) * IMAGE_BYTES
        try:
            data = self._stream.read(want)      # ZipExtFile.read(n) returns n bytes unless at the end
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:   # CRC, zlib errors
            raise DatasetError(f'{self.path} is damaged ({type(e).__name__}: {e}); delete it and '
                               f'download it again') from None
        if len(data) < want:
            raise DatasetError(f'{self.path} is truncated: its images end after '
                               f'{i0 + len(data) // IMAGE_BYTES} of {self.n}; delete it and download it again')
        self._next = i1
        return np.frombuffer(data, np.uint8).reshape((i1 - i0,) + IMAGE_SHAPE)

    def close(self):
        stream = getattr(self, '_stream', None)
        if stream is not None:
            stream.close()
        self._array = None
        self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- cache

def resolve_dir(data_root, tiered_dir=None) -> Path:
    """The folder holding the files: `tiered_dir`, else <data_root>/tiered, else
    <data_root>/tiered-imagenet when only that exists."""
    if tiered_dir is not None:
        return Path(tiered_dir)
    candidates = [Path(data_root) / name for name in DIR_NAMES]
    return next((d for d in candidates if d.is_dir()), candidates[0])


def source_paths(tiered_dir, which):
    d = Path(tiered_dir)
    return d / f'{which}_images.npz', d / f'{which}_labels.pkl'


def cache_paths(tiered_dir, which):
    d = Path(tiered_dir)
    return d / f'cache_{which}.npy', d / f'cache_{which}_index.npz'


def _signature(which, tiered_dir):
    """[sizes], [mtimes] of the split's two source files."""
    stats = [file_signature(p) for p in source_paths(tiered_dir, which)]
    return [s['size'] for s in stats], [s['mtime_ns'] for s in stats]


class Cache(NamedTuple):
    images: np.ndarray   # uint8 memmap [N, 84, 84, 3], RGB, class-sorted
    classes: np.ndarray  # int64 [C] class ids (label_specific values)
    offsets: np.ndarray  # int64 [C]
    counts: np.ndarray   # int64 [C]
    names: list          # C class names
    sizes: list          # source sizes and mtimes when the cache was built
    mtimes: list


def open_cache(tiered_dir, which):
    """The Cache of a split if cache_{split}.npy and its index are complete and agree, else None."""
    npy, index = cache_paths(tiered_dir, which)
    if not (npy.is_file() and index.is_file()):
        return None
    try:
        with np.load(index, allow_pickle=False) as z:
            meta = {k: z[k] for k in z.files}
        arr = open_npy_memmap(npy)
        counts, offsets = meta['counts'].astype(np.int64), meta['offsets'].astype(np.int64)
        ok = (int(meta['version']) == CACHE_VERSION and arr.dtype == np.uint8
              and arr.shape == (int(counts.sum()),) + IMAGE_SHAPE and arr.flags.c_contiguous
              and len(counts) == len(offsets) == len(meta['classes']) == len(meta['names'])
              and len(counts) > 0 and counts.min() > 0
              and (offsets == np.concatenate([[0], np.cumsum(counts)[:-1]])).all())
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, DatasetError):
        return None
    if not ok:
        return None
    return Cache(arr, meta['classes'].astype(np.int64), offsets, counts,
                 [str(n) for n in meta['names']], meta['sizes'].tolist(), meta['mtimes'].tolist())


def _atomic_savez(path: Path, **arrays):
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _build(tiered_dir, which, progress=True):
    """Writes cache_{split}.npy (class-sorted, RGB) and its index from the split's files."""
    tiered_dir = Path(tiered_dir)
    images_path, labels_path = source_paths(tiered_dir, which)
    sizes, mtimes = _signature(which, tiered_dir)     # before reading: a change meanwhile rebuilds
    labels, names = read_labels(labels_path)
    npy, index = cache_paths(tiered_dir, which)
    tmp = None
    with NpzImages(images_path) as src:
        if src.n != len(labels):
            raise DatasetError(f'{images_path} holds {src.n} images but {labels_path} labels '
                               f'{len(labels)}; the two files must belong together (download both again)')
        classes, counts = np.unique(labels, return_counts=True)
        order = np.argsort(labels, kind='stable')    # class-sorted position -> source index
        dest = np.empty_like(order)
        dest[order] = np.arange(len(order))            # source index -> class-sorted position
        try:
            fd, tmp = tempfile.mkstemp(prefix=f'.{npy.name}.', suffix='.tmp', dir=tiered_dir)
            os.close(fd)
            out = np.lib.format.open_memmap(tmp, mode='w+', dtype=np.uint8, shape=(src.n,) + IMAGE_SHAPE)
            with tqdm(total=src.n, desc=f'tieredImageNet {which}: writing {npy.name}', unit='img',
                      disable=not progress, dynamic_ncols=True) as bar:
                for i0 in range(0, src.n, CHUNK):
                    i1 = min(src.n, i0 + CHUNK)
                    rgb = src.read(i0, i1)[..., ::-1]     # BGR files -> RGB, as PyTorch-MAML reads them
                    d = dest[i0:i1]
                    if d[-1] - d[0] == i1 - i0 - 1 and (np.diff(d) == 1).all():
                        out[d[0]:d[-1] + 1] = rgb         # already in class order: one slice
                    else:
                        out[d] = rgb
                    bar.update(i1 - i0)
            out.flush()
            del out
            if index.exists():
                index.unlink()        # never an old index vouching for a new array
            os.replace(tmp, npy)
            tmp = None
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    _atomic_savez(index, version=np.int64(CACHE_VERSION), classes=classes.astype(np.int64),
                  offsets=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
                  counts=counts.astype(np.int64),
                  names=np.array([names.get(int(c), f'{which}/class{int(c):03d}') for c in classes]),
                  sizes=np.array(sizes, np.int64), mtimes=np.array(mtimes, np.int64))
    cache = open_cache(tiered_dir, which)
    if cache is None:  # pragma: no cover - just written
        raise DatasetError(f'the cache {npy} could not be read back after writing it; delete it and retry')
    return cache


def _up_to_date(cache, which, tiered_dir):
    return cache is not None and [cache.sizes, cache.mtimes] == list(_signature(which, tiered_dir))


def build_cache(tiered_dir, force=False, progress=True):
    """Writes cache_{train,val,test}.npy (+ index) from the npz/pkl files in `tiered_dir`;
    up-to-date caches are kept unless `force`. Returns the cache paths."""
    tiered_dir = Path(tiered_dir)
    missing = [str(p) for w in SPLITS for p in source_paths(tiered_dir, w) if not p.is_file()]
    if missing:
        raise DatasetError(f'tieredImageNet files missing: {", ".join(missing)}')
    if not writable(tiered_dir):
        raise DatasetError(f'cannot write the caches into {tiered_dir}: the folder is not writable')
    paths = []
    for which in SPLITS:
        if force or not _up_to_date(open_cache(tiered_dir, which), which, tiered_dir):
            _build(tiered_dir, which, progress)
        paths.append(cache_paths(tiered_dir, which)[0])
    return paths


# ----------------------------------------------------------------------------- Ren et al.'s PNG pickles

def _png_bytes(item, index, path):
    if isinstance(item, str):          # a Python 2 str, read back through latin1
        return item.encode('latin1')
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()          # cv2.imencode's output
    raise DatasetError(f'{path}: entry {index} is a {type(item).__name__}, not PNG-encoded bytes')


def png_pickle_to_npz(png_pkl, npz_path, progress=True):
    """Converts Ren et al.'s {split}_images_png.pkl (a pickled list of PNG-encoded images,
    read with the restricted unpickler) into {split}_images.npz, uncompressed as np.savez.

    The npz layout stores BGR (readers reverse the channels); PIL decodes PNGs to RGB, so
    the channels are reversed when writing and the reader's reversal gives the original
    RGB back. Images are decoded and written in chunks straight into the zip member; the
    PNG list itself must fit in memory (the training list is most of the 12.9 GB archive).
    Returns the number of images."""
    png_pkl, npz_path = Path(png_pkl), Path(npz_path)
    pngs = load_plain_pickle(png_pkl)
    if not isinstance(pngs, (list, tuple)) or not pngs:
        raise DatasetError(f'{png_pkl} holds a {type(pngs).__name__}, not the non-empty list of '
                           f'PNG images of Ren et al.\'s tieredImageNet files')
    n = len(pngs)
    fd, tmp = tempfile.mkstemp(prefix=f'.{npz_path.name}.', suffix='.tmp', dir=npz_path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, 'w', compression=zipfile.ZIP_STORED, allowZip64=True) as zf, \
                zf.open(IMAGES_MEMBER, 'w', force_zip64=True) as member, \
                tqdm(total=n, desc=f'decoding {png_pkl.name}', unit='img', disable=not progress,
                     dynamic_ncols=True) as bar:
            np.lib.format.write_array_header_1_0(
                member, {'descr': np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                         'fortran_order': False, 'shape': (n,) + IMAGE_SHAPE})
            chunk = np.empty((CHUNK,) + IMAGE_SHAPE, np.uint8)
            for i0 in range(0, n, CHUNK):
                i1 = min(n, i0 + CHUNK)
                for k in range(i0, i1):
                    chunk[k - i0] = _decode_png(_png_bytes(pngs[k], k, png_pkl), k, png_pkl)
                member.write(chunk[:i1 - i0, :, :, ::-1].tobytes())   # RGB -> BGR (the npz layout)
                bar.update(i1 - i0)
        os.replace(tmp, npz_path)
        tmp = None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return n


def _decode_png(data, index, path):
    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert('RGB'), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(f'{path}: image {index} cannot be decoded ({type(e).__name__}: {e}); '
                           f'the file is damaged: download it again') from None
    if arr.shape != IMAGE_SHAPE:
        raise DatasetError(f'{path}: image {index} is {arr.shape[1]}x{arr.shape[0]}, not 84x84 as in '
                           f"Ren et al.'s tieredImageNet")
    return arr


# ----------------------------------------------------------------------------- image folders

def _has_folders(d: Path):
    """Whether d holds the image-folder form (train/ and test/)."""
    return all((d / which).is_dir() for which in FOLDER_SPLITS_NEEDED)


def _folder_caches_only(d: Path):
    """Whether the folder form's caches for train and test exist although its folders do not."""
    return all(open_folder_cache(d, which, FOLDER_CACHE_STEM) is not None for which in FOLDER_SPLITS_NEEDED)


def _folder_layout_hint(d: Path):
    present = [w for w in FOLDER_SPLITS_NEEDED if (d / w).is_dir()]
    absent = [w for w in FOLDER_SPLITS_NEEDED if w not in present]
    found = f' (found {present[0]}/ but no {absent[0]}/)' if len(present) == 1 else ''
    return (f'Or place the images as class folders {d}/{{train,val,test}}/<class>/*.jpg (84x84 JPEGs, the '
            f"layout Meta-Transfer Learning's tiered-imagenet-tools writes; val/ is optional){found}")


def _folder_dataset(d: Path, note=''):
    folders = _has_folders(d)
    write = writable(d)
    loaded, used = {}, []
    for which in SPLITS:
        src = folder_source(d, which) if folders and (d / which).is_dir() else None
        current = None if src is None else current_cache(d, src, FOLDER_CACHE_STEM)
        npy = f'{FOLDER_CACHE_STEM.format(which=which)}.npy'
        if current is not None:
            loaded[which] = current
            used.append(npy)
        elif src is not None:
            arr, meta, what = decode_now(d, src, folder_classes(d / which), write, FOLDER_CACHE_STEM,
                                         'tieredImageNet')
            loaded[which] = (arr, meta)
            used.append(what)
        elif not folders and (cached := open_folder_cache(d, which, FOLDER_CACHE_STEM)) is not None:
            loaded[which] = cached          # the folders were removed after caching
            used.append(f'{npy} (its {which}/ no longer present)')
    if 'train' not in loaded or 'test' not in loaded:  # pragma: no cover - the callers check
        raise DatasetError(f'no tieredImageNet class folders train/ and test/ in {d}')
    splits = {which: to_split(*loaded[which], which, dataset='tiered') for which in loaded}
    check_disjoint(splits, d)
    tr, te = splits['train'], splits['test']
    val_is_test = 'val' not in splits
    va = te if val_is_test else splits['val']
    standard = _report_class_counts(d, {w: s.n_classes for w, s in splits.items()})
    note += '' if standard else ' (not the standard 351/97/160 classes)'
    desc = (f'tiered (tieredImageNet class folders{note}, 84x84x3 uint8 RGB read as x/255, '
            f'{"; ".join(used)}, memory-mapped where cached): train {tr.n_classes} / '
            f'{"val=test (no val split)" if val_is_test else f"val {va.n_classes}"} / test {te.n_classes} '
            f'classes, {_per_class(tr)}/{_per_class(va)}/{_per_class(te)} images per class')
    return FewShotDataset('tiered', tr, va, te, IMAGE_SHAPE, val_is_test, desc)


# ----------------------------------------------------------------------------- entry point

def _split(cache, which):
    classes = [cache.images[o:o + c] for o, c in zip(cache.offsets, cache.counts)]   # views
    return ClassSplit(classes, names=cache.names, name=which, dataset='tiered')


def _per_class(s):
    lo, hi = int(s.counts.min()), int(s.counts.max())
    return str(lo) if lo == hi else f'{lo}..{hi}'


def _report_class_counts(d, found):
    """Whether {split: n_classes} is Ren et al.'s 351/97/160; warns when it is not."""
    standard = found == EXPECTED_CLASSES
    if not standard:
        log.warning('tieredImageNet in %s has %s classes, not the standard train 351 / val 97 / '
                    'test 160 of Ren et al.; using the splits as found', d,
                    ' / '.join(f'{w} {found[w]}' if w in found else f'{w} none (val=test)' for w in SPLITS))
    return standard


def _npz_plan(d: Path):
    """({split: up-to-date Cache, or None to build it}, [missing source files], whether any npz
    file or cache of the layout is there at all)."""
    plan, missing, present = {}, [], False
    for which in SPLITS:
        sources = source_paths(d, which)
        absent = [p for p in sources if not p.is_file()]
        cache = open_cache(d, which)
        present = present or len(absent) < len(sources) or cache is not None
        if not absent:
            plan[which] = cache if _up_to_date(cache, which, d) else None
        elif cache is not None:
            plan[which] = cache
        else:
            missing += absent
    return plan, missing, present


def load(data_root='./data', tiered_dir=None) -> FewShotDataset:
    """Reads tieredImageNet from <data_root>/tiered (or <data_root>/tiered-imagenet), or from
    `tiered_dir` when given: the npz layout, else the class folders {train,val,test}/<class>/;
    builds the caches on first use (see the module doc)."""
    d = resolve_dir(data_root, tiered_dir)
    plan, missing, npz_present = _npz_plan(d)
    folders = _has_folders(d)
    if missing and folders:
        if npz_present:
            log.warning('tieredImageNet in %s: the npz layout is incomplete (%s missing); reading the '
                        'class folders instead', d, ', '.join(p.name for p in missing))
        return _folder_dataset(d, ', npz layout incomplete so not read' if npz_present else '')
    if missing and not npz_present and _folder_caches_only(d):
        return _folder_dataset(d)
    if missing:
        looked = '' if tiered_dir is not None or d.is_dir() else \
            f' (neither {Path(data_root) / DIR_NAMES[0]} nor {Path(data_root) / DIR_NAMES[1]} exists)'
        raise DatasetError(
            f'tieredImageNet files missing: {", ".join(str(p) for p in missing)}{looked}. Get them with: '
            f'{get_data_command(data_root)} (they land in {Path(data_root) / DIR_NAMES[0]}; pass that '
            f'folder as tiered_dir if you moved them). {_folder_layout_hint(d)}')
    for which in SPLITS:
        if not all(p.is_file() for p in source_paths(d, which)):
            log.info('tieredImageNet %s: source files missing, using cache_%s.npy as it is', which, which)
    to_build = [w for w in SPLITS if plan[w] is None]
    if to_build and not writable(d):
        raise DatasetError(f'{d} is not writable, so the caches for {", ".join(to_build)} cannot be '
                           f'written (the training images do not fit in memory); copy or link the '
                           f'files into a writable folder and pass it as tiered_dir')
    splits, built = {}, []
    for which in SPLITS:
        cache = plan[which]
        if cache is None:
            cache = _build(d, which, show_progress())
            built.append(which)
        splits[which] = _split(cache, which)
    standard = _report_class_counts(d, {w: splits[w].n_classes for w in SPLITS})
    if folders:
        log.info('tieredImageNet in %s: both the npz files and class folders train/ test/ are there; '
                 'reading the npz files', d)
    tr, va, te = (splits[w] for w in SPLITS)
    note = '' if standard else ' (not the standard 351/97/160 classes)'
    also = '; class folders train/ test/ also present, not read: npz preferred' if folders else ''
    desc = (f'tiered (tieredImageNet npz layout{note}, 84x84x3 uint8 BGR files read as RGB x/255, '
            f'class-sorted memory-mapped caches{" built now for " + ", ".join(built) if built else ""}'
            f'{also}): train {tr.n_classes} / val {va.n_classes} / test {te.n_classes} classes, '
            f'{_per_class(tr)}/{_per_class(va)}/{_per_class(te)} images per class')
    return FewShotDataset('tiered', tr, va, te, IMAGE_SHAPE, False, desc)


# ----------------------------------------------------------------------------- declaration

# Both archives are only published on Google Drive. The drive.usercontent.google.com address
# with confirm=t is meant to skip the page Drive shows instead of files too large for its virus
# scan; if Drive serves a web page anyway, check_archive says how to fetch the tar by hand.
# The tar linked from MetaOptNet's README (kjunelee/MetaOptNet) and from Meta-Baseline's, whose
# materials/tiered-imagenet folder is what PyTorch-MAML reads: {split}_images.npz + _labels.pkl.
TIERED_METAOPTNET_DRIVE_ID = '1nVGCTd9ttULRXFezh4xILQ9lUkg0WZCG'
# Ren et al.'s original tar (renmengye/few-shot-ssl-public, learn2learn): {split}_images_png.pkl.
TIERED_REN_DRIVE_ID = '1g1aIDy2Ar_MViF2gDXFYDBTR-HYecV07'


def _drive_tar(name, drive_id):
    """The RemoteFile of a tar published on Google Drive (no checksum: it is checked to be a tar)."""
    return RemoteFile(name, name + '.tar',
                      f'https://drive.usercontent.google.com/download?id={drive_id}&export=download'
                      '&confirm=t',
                      check=functools.partial(check_archive, drive_id=drive_id))


def check_archive(path, drive_id):
    """Deletes `path` and raises DownloadError unless it is a tar archive. Google Drive answers
    with a web page (quota exceeded, sign-in or confirmation) when it will not serve the file."""
    import tarfile
    from .download import DownloadError
    try:
        ok = tarfile.is_tarfile(path)
    except OSError:
        ok = False
    if not ok:
        with open(path, 'rb') as fh:
            head = fh.read(512).lstrip().lower()
        what = 'a web page' if head.startswith((b'<!doctype', b'<html')) else 'not a tar archive'
        os.remove(path)
        raise DownloadError(
            f'{path} is {what}, not the tieredImageNet tar, so it was deleted. Google Drive sometimes '
            f'refuses scripted downloads of large files (quota, sign-in). Download it in a browser from '
            f'https://drive.google.com/file/d/{drive_id}/view, save it as {path} and rerun this command '
            f'(a file already there is used as it is), or point --url_override at a mirror.')


def _unpack(dataset_dir, archive, names):
    """Extracts `archive` (refusing unsafe members) into a staging folder of dataset_dir and
    moves the files `names` (found anywhere in it) into dataset_dir; returns their paths.
    The staging folder, with anything else the archive held, is removed."""
    import shutil
    from .download import DownloadError, safe_extract
    staging = os.path.join(dataset_dir, '.unpacking')
    shutil.rmtree(staging, ignore_errors=True)
    try:
        safe_extract(archive, staging)
        found = {}
        for top, _, files in os.walk(staging):
            for name in files:
                if name in names:
                    found.setdefault(name, []).append(os.path.join(top, name))
        missing = [n for n in names if n not in found]
        twice = [n for n, where in found.items() if len(where) > 1]
        if missing or twice:
            raise DownloadError(
                f'{archive} does not hold the expected tieredImageNet files: '
                + (f'missing {", ".join(missing)}' if missing else f'{", ".join(twice)} more than once')
                + '. Delete it and download it again, or check that --source matches the archive '
                '(metaoptnet: *_images.npz, ren: *_images_png.pkl).', kind='archive')
        for name in names:
            os.replace(found[name][0], os.path.join(dataset_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [os.path.join(dataset_dir, n) for n in names]


def _caches(dataset_dir, force):
    from .download import preprocessing
    with preprocessing('tieredImageNet', dataset_dir):
        built = build_cache(dataset_dir, force=force)
    return ', '.join(os.path.basename(p) for p in built)


def preprocess_tiered(dataset_dir, paths, force):
    """Unpacks {split}_images.npz + {split}_labels.pkl from the tar, then builds the caches."""
    names = [f'{w}_{kind}' for w in SPLITS for kind in ('images.npz', 'labels.pkl')]
    if force or not all(os.path.isfile(os.path.join(dataset_dir, n)) for n in names):
        _unpack(dataset_dir, paths[0], names)
    return _caches(dataset_dir, force)


def preprocess_tiered_ren(dataset_dir, paths, force):
    """Unpacks Ren et al.'s {split}_images_png.pkl + {split}_labels.pkl, decodes the PNGs into
    the npz layout ({split}_images.npz, BGR as the published npz), then builds the caches."""
    from .download import DownloadError
    targets = [os.path.join(dataset_dir, f'{w}_{kind}') for w in SPLITS
               for kind in ('images.npz', 'labels.pkl')]
    if force or not all(os.path.isfile(p) for p in targets):
        names = [f'{w}_{kind}' for w in SPLITS for kind in ('images_png.pkl', 'labels.pkl')]
        _unpack(dataset_dir, paths[0], names)
        for w in SPLITS:
            png = os.path.join(dataset_dir, f'{w}_images_png.pkl')
            try:
                png_pickle_to_npz(png, os.path.join(dataset_dir, f'{w}_images.npz'))
            except DatasetError as exc:
                raise DownloadError(f'Converting {png} failed: {exc}') from None
            os.remove(png)
    return _caches(dataset_dir, force)


DOWNLOAD = Download(
    name='tiered',
    default_source='metaoptnet',
    sources={
        'metaoptnet': Source(
            description="tieredImageNet as MetaOptNet/FEAT/PyTorch-MAML use it ({split}_images.npz "
                        '+ {split}_labels.pkl; Google Drive, no published checksum, so the file is '
                        'checked to be a tar), unpacked and cached as cache_*.npy',
            preprocess=preprocess_tiered,
            files=(_drive_tar('tiered_imagenet', TIERED_METAOPTNET_DRIVE_ID),)),
        'ren': Source(
            description="Ren et al.'s original tieredImageNet tar ({split}_images_png.pkl + "
                        '{split}_labels.pkl; Google Drive), PNGs decoded into the npz layout, '
                        'then cached',
            preprocess=preprocess_tiered_ren,
            files=(_drive_tar('tiered-imagenet', TIERED_REN_DRIVE_ID),)),
    })

SPECS = (DatasetSpec(
    name='tiered', loader=load, kind='images',
    description='tieredImageNet (Ren et al. 2018), 84x84x3: the npz layout of MetaOptNet / '
                'PyTorch-MAML or the class folders of MTL, cached as uint8',
    download=DOWNLOAD),)
