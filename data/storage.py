"""What the dataset readers share: memory-mapped npy files, uint8 image caches and their
signatures, class-folder listing, atomic writes and the restricted unpickler.

- `open_npy_memmap`, `read_npy_header`: npy files read without ever unpickling (a pickle renamed
  .npy, an object array) and memory-mapped, so an episode reads only its own images.
- `file_signature`: the cheap fingerprint (name, size, mtime) a cache stores of its source, so a
  changed source rebuilds the cache and an unchanged one is never decoded again.
- `writable`, `temp_path`, `atomic_write_text`: a file is written beside its destination and
  renamed into place when complete, so a reader never sees half a file.
- `load_plain_pickle`: the only unpickler of the project. It hands out numpy arrays and plain
  Python data and refuses any other global (os.system, a class of some module) before creating
  it; the published pickles of tieredImageNet, LEO, CIFAR and l2b are read through it.
- class folders `<split>/<class>/<image>` of 84x84x3 images (miniImageNet's csv and folder forms,
  tieredImageNet's and FC100's folders): `folder_classes` lists them, `decode_split` decodes a
  split image by image into a memory-mapped uint8 cache `<stem>.npy` with a sidecar `<stem>.json`
  (class names, images per class, the source's signature), `current_cache` returns it while the
  signature matches, `to_split` turns it into a ClassSplit of views.
Nothing here knows a particular dataset; the readers pass their names, stems and hints.
"""
import json
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from .base import DatasetError, show_progress
from .episodes import ClassSplit

log = logging.getLogger(__name__)

IMAGE_SIZE = 84
CHANNELS = 3
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
CACHE_VERSION = 1
CACHE_STEM = 'cache_{which}'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')


# ----------------------------------------------------------------------------- npy files

def open_npy_memmap(path):
    """The array of the .npy file `path`, memory-mapped read-only.

    Pickled content (a pickle renamed .npy, an object array) is never loaded: unpickling a
    file can run arbitrary code. Anything that is not a plain npy array is refused with a
    DatasetError that says to download the file again."""
    try:
        with open(path, 'rb') as f:
            magic = f.read(6)
        if magic != b'\x93NUMPY':
            raise DatasetError(
                f'{path} is not an .npy array file ({"it is empty" if not magic else "no npy signature"}: '
                f'a truncated download, an HTML error page or a pickle, which is never loaded because '
                f'unpickling can run code). Delete it and download it again') from None
        return np.load(path, mmap_mode='r', allow_pickle=False)
    except ValueError as e:
        if 'pickle' in str(e) or 'Python objects' in str(e):
            raise DatasetError(f'{path} holds Python objects that would need allow_pickle ({e}); they '
                               f'are never loaded because unpickling can run code. Delete it and '
                               f'download it again') from None
        raise DatasetError(f'{path} is truncated or damaged ({e}); delete it and download it again') \
            from None
    except (OSError, EOFError) as e:
        raise DatasetError(f'{path} is not a readable .npy file ({e}); delete it and download it '
                           f'again') from None


class NpyHeader(NamedTuple):
    shape: tuple
    fortran: bool
    dtype: np.dtype
    offset: int      # where the data (or, for an object array, the pickle) starts


def read_npy_header(path):
    """The header of the .npy file `path`, read without touching its data (never unpickles)."""
    path = Path(path)
    try:
        with open(path, 'rb') as f:
            try:
                version = np.lib.format.read_magic(f)
            except ValueError:
                raise DatasetError(
                    f'{path} is not an .npy array file (no npy signature: a truncated download, an '
                    f'HTML error page or some other file). Delete it and download it again') from None
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise DatasetError(f'{path} is an .npy file of format version {version}, which this '
                                   f'reader does not know; delete it and download it again')
            return NpyHeader(tuple(int(s) for s in shape), bool(fortran), dtype, f.tell())
    except ValueError as e:
        raise DatasetError(f'{path} has a damaged .npy header ({e}); delete it and download it '
                           f'again') from None
    except OSError as e:
        raise DatasetError(f'cannot read {path} ({e})') from None


# ----------------------------------------------------------------------------- files and signatures

def file_signature(path):
    """Cheap fingerprint of a source file: name, size, mtime."""
    st = os.stat(path)
    return {'file': os.path.basename(path), 'size': st.st_size, 'mtime_ns': st.st_mtime_ns}


def writable(directory: Path):
    # Honour the permission bits too: as root os.access says yes even for a 'read-only' folder.
    try:
        return os.access(directory, os.W_OK) and bool(directory.stat().st_mode & 0o222)
    except OSError:
        return False


def temp_path(directory, name):
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}.', suffix='.tmp', dir=directory)
    os.close(fd)
    return tmp


def atomic_write_text(path: Path, text):
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- restricted pickles

_BUILTINS = frozenset({'dict', 'list', 'tuple', 'set', 'frozenset', 'str', 'bytes', 'bytearray',
                       'int', 'float', 'bool', 'complex'})
_NUMPY_MULTIARRAY = frozenset({'_reconstruct', 'scalar'})
SAFE_GLOBALS = {
    'builtins': _BUILTINS,
    '__builtin__': _BUILTINS,                 # Python 2 pickles
    'numpy': frozenset({'ndarray', 'dtype'}),
    'numpy.core.multiarray': _NUMPY_MULTIARRAY,
    'numpy._core.multiarray': _NUMPY_MULTIARRAY,
    'numpy.core.numeric': frozenset({'_frombuffer'}),
    'numpy._core.numeric': frozenset({'_frombuffer'}),
    '_codecs': frozenset({'encode'}),         # bytes in protocol-2 pickles written by Python 3
}


class _Refused(Exception):
    pass


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if name in SAFE_GLOBALS.get(module, ()):
            return super().find_class(module, name)
        raise _Refused(f'{module}.{name}')


def load_plain_pickle(path, offset=0, remedy='Use the published tieredImageNet files; delete '
                      'this one and download it again'):
    """The object pickled in `path`, if it is made only of numpy arrays and builtin data.

    Raises DatasetError, having created nothing else, when the pickle refers to any other
    global (a function such as os.system, a class of some module): such a file could run
    code when unpickled, so it is refused. Also for unreadable or truncated files."""
    path = Path(path)
    try:
        with open(path, 'rb') as f:
            f.seek(offset)
            return _PlainDataUnpickler(f, encoding='latin1').load()
    except _Refused as e:
        raise DatasetError(
            f'{path} is refused: the pickle holds objects other than numpy arrays and plain '
            f'Python data (it asks for {e}), and unpickling it could run code. {remedy}') from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, MemoryError) as e:
        raise DatasetError(f'{path} is not a readable pickle ({type(e).__name__}: {e}); it is '
                           f'truncated or damaged: delete it and download it again') from None
    except OSError as e:
        raise DatasetError(f'cannot read {path} ({e})') from None


# ----------------------------------------------------------------------------- class folders and uint8 caches

class FolderSource(NamedTuple):
    """Where one split's images come from."""
    which: str
    origin: str        # for messages, e.g. 'train.csv + images/' or 'train/'
    signature: dict    # cheap fingerprint stored beside the cache


def folder_classes(split_dir: Path, layout_hint='<wnid>/*.jpg'):
    """[(class name, sorted image paths)] of split_dir/<class>/<image>."""
    classes = []
    for d in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith('.')):
        files = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith('.')
                       and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DatasetError(f'class folder {d} holds no images (jpg/jpeg/png/bmp/gif); remove it or '
                               f'add its images')
        classes.append((d.name, files))
    if not classes:
        raise DatasetError(f'{split_dir} has no class folders; expected {split_dir}/{layout_hint}')
    return classes


def folder_source(directory: Path, which):
    """The FolderSource of the class folders directory/which/<class>/<image>; its signature is the
    class names and their image counts."""
    classes = folder_classes(directory / which)
    return FolderSource(which, f'{which}/', {
        'form': 'folders', 'classes': [[name, len(files)] for name, files in classes]})


def decode_image(path: Path):
    try:
        with Image.open(path) as im:
            im.load()
            if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                if im.mode not in ('L', 'RGB', 'CMYK'):
                    im = im.convert('RGB')
                im = im.resize((IMAGE_SIZE, IMAGE_SIZE), resample=Image.LANCZOS)
            arr = np.asarray(im.convert('RGB'), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(f'cannot decode image {path} ({type(e).__name__}: {e}); the file is damaged: '
                           f'replace or delete it') from None
    return arr


def cache_paths(directory: Path, which, stem=CACHE_STEM):
    name = stem.format(which=which)
    return directory / f'{name}.npy', directory / f'{name}.json'


def open_cache(directory: Path, which, stem=CACHE_STEM):
    """(memmap [n, 84, 84, 3], meta dict) of a complete cache, or None."""
    npy, meta_path = cache_paths(directory, which, stem)
    if not (npy.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arr = np.load(npy, mmap_mode='r', allow_pickle=False)
        counts = [int(c) for c in meta['counts']]
        ok = (meta.get('version') == CACHE_VERSION and isinstance(arr, np.ndarray)
              and arr.dtype == np.uint8 and arr.shape == (sum(counts),) + IMAGE_SHAPE
              and len(meta['classes']) == len(counts) and min(counts) > 0 and arr.flags.c_contiguous)
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    return (arr, meta) if ok else None


def decode_split(directory: Path, src: FolderSource, classes, write: bool, stem=CACHE_STEM,
                 label='miniImageNet', missing_hint=''):
    """Decodes one split, `classes` = [(class name, image paths)]. write=True: into
    <stem>.npy (returned memory-mapped) + .json in `directory`; else into memory. Returns
    (array [n, 84, 84, 3], meta). missing_hint ends the message about missing images."""
    missing = [p for _, files in classes for p in files if not p.is_file()]
    if missing:
        shown = ', '.join(str(p) for p in missing[:3])
        more = f' and {len(missing) - 3} more' if len(missing) > 3 else ''
        raise DatasetError(f'{src.which}.csv names {len(missing)} image(s) that do not exist: {shown}{more}. '
                           f'{missing_hint}')
    counts = [len(files) for _, files in classes]
    meta = {'version': CACHE_VERSION, 'split': src.which, 'origin': src.origin,
            'classes': [name for name, _ in classes], 'counts': counts, 'source': src.signature}
    shape = (sum(counts),) + IMAGE_SHAPE
    npy, meta_path = cache_paths(directory, src.which, stem)
    tmp = None
    try:
        if write:
            fd, tmp = tempfile.mkstemp(prefix=f'.{npy.name}.', suffix='.tmp', dir=directory)
            os.close(fd)
            arr = np.lib.format.open_memmap(tmp, mode='w+', dtype=np.uint8, shape=shape)
        else:
            arr = np.empty(shape, dtype=np.uint8)
        k = 0
        with tqdm(total=shape[0], desc=f'decoding {label} {src.which}', unit='img',
                  disable=not show_progress()) as bar:
            for _, files in classes:     # class by class, straight into the (memory-mapped) array
                for p in files:
                    arr[k] = decode_image(p)
                    k += 1
                bar.update(len(files))
        if not write:
            return arr, meta
        arr.flush()
        del arr
        if meta_path.exists():
            meta_path.unlink()           # no moment where an old sidecar vouches for a new array
        os.replace(tmp, npy)
        tmp = None
        atomic_write_text(meta_path, json.dumps(meta))
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    cached = open_cache(directory, src.which, stem)
    if cached is None:  # pragma: no cover - just written
        raise DatasetError(f'the cache {npy} could not be read back after writing it; delete it and retry')
    return cached


def current_cache(directory: Path, src: FolderSource, stem=CACHE_STEM):
    """The (array, meta) of src's cache when it exists and its signature matches, else None."""
    cached = open_cache(directory, src.which, stem)
    return cached if cached is not None and cached[1].get('source') == src.signature else None


def decode_now(directory: Path, src: FolderSource, classes, write: bool, stem=CACHE_STEM,
               label='miniImageNet', missing_hint=''):
    """(array, meta, what was used, for the description) of src decoded now: into its cache
    when `write`, else (a read-only folder) into memory, with a warning."""
    if not write:
        log.warning('%s is not writable: decoding %s into memory without writing a cache.',
                    directory, src.origin)
    arr, meta = decode_split(directory, src, classes, write, stem, label, missing_hint)
    npy = cache_paths(directory, src.which, stem)[0].name
    return arr, meta, f'{npy} (built now)' if write else f'{src.origin} (decoded, no cache)'


def to_split(arr, meta, which, dataset='mimgnet'):
    counts = [int(c) for c in meta['counts']]
    if len(set(counts)) == 1:
        images = arr.reshape((len(counts), counts[0]) + IMAGE_SHAPE)   # a view of the memmap
    else:
        ends = np.cumsum(counts)
        images = [arr[e - c:e] for c, e in zip(counts, ends)]           # views too
    return ClassSplit(images, names=meta['classes'], name=which, dataset=dataset)


def check_disjoint(splits, directory):
    """Raises when a class name is in two of the {which: ClassSplit} splits."""
    names = {}
    for which, split in splits.items():
        for c in range(split.n_classes):
            other = names.setdefault(split.class_name(c), which)
            if other != which:
                raise DatasetError(f'class {split.class_name(c)} is in both the {other} and the {which} '
                                   f'split of {directory}; the splits must be disjoint')
