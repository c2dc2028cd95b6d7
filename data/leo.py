"""LEO's pre-computed image embeddings (deepmind/leo data.py), as FewShotDatasets of feature vectors.

LEO does not meta-learn on pixels: it reads 640-d features of a WRN-28-10 that its authors
pre-trained (the pre-training code is not released) from the `embeddings.zip` its README
links. `python data/get_data.py --dataset leo` downloads and unpacks it into
<data_root>/leo/embeddings/, the default `data_path` here:

  <data_path>/<dataset_name>/<embedding_crop>/<split>_embeddings.pkl
    dataset_name   miniImageNet | tieredImageNet      (leo_mini, leo_tiered)
    embedding_crop center | multiview                  (multiview exists for miniImageNet only)
    split          train | val | test

Each pickle (written by Python 2) is a dict; only two entries are used, as in the original:
  embeddings  float32 [n, D] (D = 640), one row per image;
  keys        n strings '<ignored>-<class_label>-<image_file>' with image_file.split('_')[0]
              == class_label (e.g. '...-n01532829-n01532829_1234.JPEG'); bytes ('S'), str or
              object arrays are all accepted.
They are checked as the original asserts (and nothing more): exactly three '-'-separated
fields, the image file starts with its class label, image files are unique within a split
(with train_on_val: within train + val), every class has at least one image. A failure is a
DatasetError naming the file, the key and the expected form.

Classes are numbered in order of first appearance in the file and keep their images in file
order (the original's ordered dict); ClassSplit class names are the class labels (wnids).
The episode sampler then draws classes and images at random; there are no per-class counts
to fix, classes may differ in size.

Preprocessing: every embedding row is L2-normalised, x / sqrt(max(sum(x^2), 1e-12)) in
float32, which is what the original applies (tf.nn.l2_normalize) to every sampled episode.
It is a per-row function, so doing it once at load time gives the same episodes for less
work. There is no other normalisation.

train_on_val=True reproduces the original's flag: the train split is the train file followed
by the val file (every entry concatenated), so training sees the classes of both; the val
split is still the val file alone.

leo_custom reads embeddings you computed yourself from <data_path>/<split>_embeddings.pkl
(or .npz with the arrays `embeddings` and `keys`), with no dataset/crop sub-folders, in the
same format (keys '<anything>-<class>-<class>_<image>').

Safety and speed: unpickling a file can run arbitrary code, so pickles are never read with
plain pickle.load but with data.storage.load_plain_pickle, a restricted unpickler that only
builds numpy arrays and builtin containers and refuses anything else (os.system, classes of
other modules) before it is created. That narrows the risk; it is not a sandbox for hostile
input (a crafted file can still exhaust memory), so only load embedding files from a source
you trust. To unpickle each file only once, the first load of <split>_embeddings.pkl writes
<split>_embeddings.npz beside it (see `convert`); later loads read the npz with
allow_pickle=False and never unpickle again. get_data.py converts all nine files right after
unpacking, so training never unpickles at all.
"""
import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from .base import DatasetError, DatasetSpec, Download, FewShotDataset, RemoteFile, Source
from .episodes import ClassSplit
from .storage import load_plain_pickle, writable

log = logging.getLogger(__name__)

DATASET_NAMES = ('miniImageNet', 'tieredImageNet')   # the original's enum values (case-sensitive)
CUSTOM = 'custom'
CROPS = ('center', 'multiview')
CROPS_OF = {'miniImageNet': ('center', 'multiview'), 'tieredImageNet': ('center',)}
SPLITS = ('train', 'val', 'test')
REGISTRY_NAMES = {'miniImageNet': 'leo_mini', 'tieredImageNet': 'leo_tiered', CUSTOM: 'leo_custom'}
# Standard facts (not in LEO's code): class counts of the published splits.
EXPECTED_CLASSES = {'miniImageNet': {'train': 64, 'val': 16, 'test': 20},
                    'tieredImageNet': {'train': 351, 'val': 97, 'test': 160}}
# The nine files of embeddings.zip, relative to its top-level embeddings/ folder.
EXPECTED_FILES = tuple(f'{name}/{crop}/{split}_embeddings.pkl'
                       for name in DATASET_NAMES for crop in CROPS_OF[name] for split in SPLITS)
EMBEDDINGS_DIR = os.path.join('leo', 'embeddings')   # under data_root, where get_data.py unpacks
L2_EPSILON = 1e-12          # tf.nn.l2_normalize's default, on the sum of squares
NPZ_VERSION = 1
_CHUNK = 16384              # rows normalised at a time (bounds the temporary memory: ~40 MB at D=640)


def get_data_command(data_root):
    """The command that downloads, unpacks and converts LEO's embeddings under data_root."""
    return f'python data/get_data.py --dataset leo --data_root {data_root}'


def default_data_path(data_root):
    return os.path.join(data_root, EMBEDDINGS_DIR)


class Embeddings(NamedTuple):
    """One embedding file as stored: float32 [n, D] rows and their n keys (str)."""
    embeddings: np.ndarray
    keys: np.ndarray       # unicode [n]
    path: Path             # the file it came from (for messages)


# ----------------------------------------------------------------------------- reading one file

def _decode(key):
    if isinstance(key, (bytes, np.bytes_)):
        try:
            return key.decode('utf-8')
        except UnicodeDecodeError:
            return key.decode('latin1')
    return str(key)


def _as_keys(raw, path):
    """keys as a unicode array [n], from an 'S', 'U' or object array (or a list) of strings."""
    try:
        arr = np.asarray(raw)
    except (TypeError, ValueError) as e:
        raise DatasetError(f'{path}: "keys" is not an array of strings ({e})') from None
    if arr.ndim != 1:
        raise DatasetError(f'{path}: "keys" must be a 1-D array of n strings, got shape {arr.shape}')
    if arr.dtype.kind == 'U':
        return arr
    if arr.dtype.kind == 'S' or arr.dtype.kind == 'O':
        if arr.dtype.kind == 'O' and not all(isinstance(k, (str, bytes, np.str_, np.bytes_)) for k in arr):
            bad = next(k for k in arr if not isinstance(k, (str, bytes, np.str_, np.bytes_)))
            raise DatasetError(f'{path}: "keys" must hold strings, but one is {type(bad).__name__} {bad!r}')
        return np.array([_decode(k) for k in arr.tolist()], dtype=str) if len(arr) else np.array([], dtype='U1')
    raise DatasetError(f'{path}: "keys" must hold strings, got an array of {arr.dtype}')


def _as_embeddings(raw, n_keys, path):
    try:
        arr = np.asarray(raw)
    except (TypeError, ValueError) as e:
        raise DatasetError(f'{path}: "embeddings" is not a numeric array ({e})') from None
    if arr.dtype.kind not in 'fiu' or arr.ndim != 2:
        raise DatasetError(f'{path}: "embeddings" must be a float32 array [n, D], got {arr.dtype} of shape '
                           f'{arr.shape}')
    if arr.shape[0] != n_keys:
        raise DatasetError(f'{path}: {arr.shape[0]} embedding rows but {n_keys} keys; there must be one key '
                           f'per row')
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DatasetError(f'{path} holds no embeddings (shape {arr.shape})')
    if arr.dtype != np.float32:
        # The original feeds them through a float32 py_func; other dtypes can only be custom files.
        log.info('%s: embeddings stored as %s are used as float32.', path, arr.dtype)
        arr = arr.astype(np.float32)
    return arr


def _from_mapping(data, path):
    if not isinstance(data, dict):
        raise DatasetError(f'{path} holds a {type(data).__name__}, not the dict of an embedding file '
                           f'(with "embeddings" and "keys")')
    # A Python 2 pickle read with encoding='latin1' gives str keys; accept bytes keys too.
    get = {(k.decode('latin1') if isinstance(k, bytes) else k): v for k, v in data.items()}
    missing = [k for k in ('embeddings', 'keys') if k not in get]
    if missing:
        raise DatasetError(f'{path} has no {" or ".join(repr(m) for m in missing)} entry (it has '
                           f'{", ".join(sorted(map(repr, get)))[:200]}); an embedding file is a dict with '
                           f'"embeddings" float32 [n, D] and "keys" [n] strings')
    keys = _as_keys(get['keys'], path)
    return Embeddings(_as_embeddings(get['embeddings'], len(keys), path), keys, Path(path))


def _stat(path: Path):
    st = path.stat()
    return int(st.st_size), int(st.st_mtime_ns)


def _read_pickle(pkl: Path, remedy):
    return _from_mapping(load_plain_pickle(pkl, remedy=remedy), pkl)


def _npz_signature(npz: Path):
    """(size, mtime_ns) of the pickle `npz` was converted from; None if it records none (an npz
    written by someone else); False if it cannot be read."""
    try:
        with np.load(npz, allow_pickle=False) as z:
            if 'source_size' not in z.files or 'source_mtime_ns' not in z.files:
                return None
            return int(z['source_size']), int(z['source_mtime_ns'])
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        log.warning('%s cannot be read (%s: %s); it is rebuilt from the pickle.', npz, type(e).__name__, e)
        return False


def _read_npz(npz: Path, remedy):
    try:
        with np.load(npz, allow_pickle=False) as z:
            if not hasattr(z, 'files'):
                raise DatasetError(f'{npz} is a single .npy array, not an npz archive with "embeddings" and '
                                   f'"keys". {remedy}')
            return _from_mapping({k: z[k] for k in ('embeddings', 'keys') if k in z.files}, npz)
    except DatasetError:
        raise
    except ValueError as e:
        if 'pickle' in str(e) or 'object' in str(e):
            raise DatasetError(f'{npz} stores Python objects (allow_pickle would be needed: {e}), which are '
                               f'never loaded; save the keys as a str array, e.g. np.array(keys, dtype=str). '
                               f'{remedy}') from None
        raise DatasetError(f'{npz} is not a readable npz ({e}). {remedy}') from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise DatasetError(f'{npz} is not a readable npz ({type(e).__name__}: {e}). {remedy}') from None


def _write_npz(npz: Path, data: Embeddings, signature):
    """Writes `npz` atomically: a temporary file in the same folder, renamed when complete."""
    fd, tmp = tempfile.mkstemp(prefix=f'.{npz.name}.', suffix='.tmp', dir=npz.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            # A file object, so np.savez does not append '.npz' to the temporary name.
            np.savez(f, embeddings=data.embeddings, keys=data.keys.astype(str),
                     source_size=np.int64(signature[0]), source_mtime_ns=np.int64(signature[1]),
                     version=np.int64(NPZ_VERSION))
        os.replace(tmp, npz)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def npz_path(pkl):
    pkl = Path(pkl)
    return pkl.with_name(pkl.name[:-len('.pkl')] + '.npz') if pkl.name.endswith('.pkl') else \
        pkl.with_suffix('.npz')


def convert(pkl, force=False, remedy=None):
    """Converts `pkl` into the npz beside it (<split>_embeddings.npz) unless that npz is up to date.

    The npz holds `embeddings` (float32 [n, D] exactly as stored, before L2 normalisation),
    `keys` (unicode [n]), `source_size` and `source_mtime_ns` (the pickle's size and mtime when
    it was converted: a replaced pickle is converted again) and `version`. It is written to a
    temporary file in the same folder and renamed into place. The content is validated (the
    checks of `class_index`) before anything is written. Returns (npz path, converted: bool).
    Raises DatasetError for an unreadable or refused pickle, OSError if the folder is not
    writable."""
    pkl = Path(pkl)
    npz = npz_path(pkl)
    remedy = remedy or f'Delete {pkl} and unpack it again'
    signature = _stat(pkl)
    if not force and npz.is_file() and _npz_signature(npz) == signature:
        return npz, False
    data = _read_pickle(pkl, remedy)
    class_index(data.keys, pkl)
    _write_npz(npz, data, signature)
    log.info('Converted %s to %s (%d embeddings of %d values); later loads read the npz and never unpickle.',
             pkl, npz.name, *data.embeddings.shape)
    return npz, True


def read_embeddings(pkl, remedy) -> Optional[Embeddings]:
    """The embedding file <stem>.pkl, read through its npz conversion (<stem>.npz).

    - pkl and an npz converted from this very pickle (same size and mtime): the npz is read.
    - pkl only, or an npz of an older pickle: the pickle is unpickled (restricted) and converted
      into the npz (with a log line); if its folder is not writable the pickle is used and a
      warning says the conversion could not be saved.
    - npz only (e.g. the pickles were deleted, or your own embeddings): the npz is read.
    - an npz that records no source pickle, with a pickle beside it: the npz is read, with a
      warning (delete it to read the pickle).
    Returns None when neither file exists."""
    pkl = Path(pkl)
    npz = npz_path(pkl)
    if not pkl.is_file():
        return _read_npz(npz, remedy) if npz.is_file() else None
    signature = _stat(pkl)
    if npz.is_file():
        recorded = _npz_signature(npz)
        if recorded == signature:
            return _read_npz(npz, remedy)
        if recorded is None:
            log.warning('%s records no source pickle, so it is used and %s beside it is ignored; delete '
                        'the npz to read the pickle instead.', npz, pkl.name)
            return _read_npz(npz, remedy)
        if recorded is not False:
            log.info('%s changed since it was converted; converting it again.', pkl)
    data = _read_pickle(pkl, remedy)
    if not writable(pkl.parent):
        log.warning('%s is not writable, so the conversion of %s to %s could not be saved: the pickle is '
                    'unpickled at every load. Make the folder writable to convert it once.',
                    pkl.parent, pkl.name, npz.name)
        return data
    class_index(data.keys, pkl)   # never save an npz of a file the loader would refuse
    try:
        _write_npz(npz, data, signature)
    except OSError as e:
        log.warning('The conversion of %s to %s could not be saved (%s); the pickle is unpickled at '
                    'every load.', pkl, npz.name, e)
        return data
    log.info('Converted %s to %s (%d embeddings of %d values); later loads read the npz and never unpickle.',
             pkl, npz.name, *data.embeddings.shape)
    return data


# ----------------------------------------------------------------------------- keys -> classes

_KEY_FORM = ("'<ignored>-<class_label>-<image_file>' with image_file.split('_')[0] == class_label, "
             "e.g. '0-n01532829-n01532829_1234.JPEG'")


def class_index(keys, path, other=None):
    """Class of each key: (class labels in order of first appearance, int64 [n] class ids).

    Applies the original's checks: exactly three '-'-separated fields; the image file (third
    field) starts with the class label (second field) followed by '_' or nothing else; image
    files unique within the split; every class has at least one image. `path` (and `other`,
    for the second file of a train + val concatenation: (path, index of its first key)) name
    the file in messages."""
    labels, ids = {}, np.empty(len(keys), dtype=np.int64)
    seen = {}

    def where(i):
        if other is not None and i >= other[1]:
            return f'{other[0]} (entry {i - other[1]})'
        return f'{path} (entry {i})'

    for i, key in enumerate(keys.tolist() if isinstance(keys, np.ndarray) else keys):
        parts = key.split('-')
        if len(parts) != 3:
            raise DatasetError(f'{where(i)}: key {key!r} has {len(parts)} \'-\'-separated field'
                               f'{"s" if len(parts) != 1 else ""}, expected exactly 3: {_KEY_FORM}')
        _, label, image = parts
        if image.split('_')[0] != label:
            raise DatasetError(f'{where(i)}: key {key!r} names class {label!r} but image file {image!r}, '
                               f'whose prefix before the first \'_\' is {image.split("_")[0]!r}; expected '
                               f'{_KEY_FORM}')
        if image in seen:
            raise DatasetError(f'{where(i)}: key {key!r} repeats image file {image!r} of '
                               f'{where(seen[image])}; every image file must be unique within a split')
        seen[image] = i
        ids[i] = labels.setdefault(label, len(labels))
    counts = np.bincount(ids, minlength=len(labels))
    if (counts < 1).any() or not labels:   # cannot happen with classes taken from keys; kept as LEO checks it
        raise DatasetError(f'{path}: every class must have at least one image')
    return list(labels), ids


def l2_normalize(x, epsilon=L2_EPSILON):
    """Rows of float32 x divided by sqrt(max(sum(x^2), epsilon)) in place (tf.nn.l2_normalize on
    the last axis), in chunks so the temporary arrays stay small. Returns x. All in float32, the
    sum of squares as numpy's np.square(x).sum(axis=1); TF sums in another order, so values
    may differ from the original's in the last bit."""
    eps = np.float32(epsilon)
    for start in range(0, len(x), _CHUNK):
        block = x[start:start + _CHUNK]
        sq = np.square(block).sum(axis=1, dtype=np.float32)
        block /= np.sqrt(np.maximum(sq, eps))[:, None]
    return x


def build_split(data: Embeddings, name, dataset, other: Optional[Embeddings] = None) -> ClassSplit:
    """A ClassSplit of L2-normalised per-class float32 arrays [n_c, D] from one file (or from
    `data` followed by `other`, the train_on_val concatenation). To spare a copy of a large
    split, a single file's array is normalised in place: `data.embeddings` is consumed."""
    if other is not None:
        if data.embeddings.shape[1] != other.embeddings.shape[1]:
            raise DatasetError(f'{data.path} has {data.embeddings.shape[1]}-d embeddings but {other.path} '
                               f'{other.embeddings.shape[1]}-d; train_on_val needs one dimension')
        keys = np.concatenate([data.keys, other.keys])
        x = np.concatenate([data.embeddings, other.embeddings])
        labels, ids = class_index(keys, data.path, other=(other.path, len(data.keys)))
    else:
        keys, x = data.keys, data.embeddings
        labels, ids = class_index(keys, data.path)
        x = np.array(x, dtype=np.float32, copy=True) if not x.flags.writeable else x
    order = np.argsort(ids, kind='stable')        # class by class, file order within a class
    if not np.array_equal(order, np.arange(len(ids))):
        x = x[order]
    x = np.ascontiguousarray(x, dtype=np.float32)
    l2_normalize(x)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(ids, minlength=len(labels)))])
    classes = [x[bounds[c]:bounds[c + 1]] for c in range(len(labels))]   # views of one array
    return ClassSplit(classes, names=labels, name=name, dataset=dataset)


# ----------------------------------------------------------------------------- the loader

def _missing(data_root, leo_name, crop, data_path, folder: Path, split, explicit_path):
    if leo_name == CUSTOM:
        return DatasetError(
            f'custom LEO embeddings: {folder / f"{split}_embeddings.pkl"} (or .npz) not found. leo_custom '
            f'reads embeddings you computed yourself from <data_path>/{{train,val,test}}_embeddings.pkl '
            f'(a pickled dict) or .npz (np.savez), each with "embeddings" float32 [n, D] and "keys" [n] '
            f'strings {_KEY_FORM}; pass data_path (now {data_path}) pointing at that folder')
    hint = ''
    nested = Path(data_path) / 'embeddings' / leo_name
    if nested.is_dir():
        hint = f' ({nested} exists: pass data_path {Path(data_path) / "embeddings"})'
    where = (f' or pass data_path pointing at the unpacked embeddings/ folder{hint}' if explicit_path
             else hint)
    return DatasetError(
        f"LEO's {leo_name} {crop} embeddings are missing: {folder / f'{split}_embeddings.pkl'} (or .npz) not "
        f'found. Download and unpack them with: {get_data_command(data_root)}{where}')


def load(data_root='./data', leo_name='miniImageNet', embedding_crop='center', data_path=None,
         train_on_val=False) -> FewShotDataset:
    """LEO's embeddings of `leo_name` ('miniImageNet', 'tieredImageNet' or 'custom') with
    `embedding_crop` ('center' or 'multiview'; ignored for custom) from data_path (default
    <data_root>/leo/embeddings). See the module docstring."""
    if leo_name not in DATASET_NAMES + (CUSTOM,):
        raise DatasetError(f'unknown LEO dataset {leo_name!r}; use one of {", ".join(DATASET_NAMES)} '
                           f'(case-sensitive, as the original) or {CUSTOM!r}')
    if leo_name != CUSTOM:
        if embedding_crop not in CROPS:
            raise DatasetError(f'unknown embedding_crop {embedding_crop!r}; use one of {", ".join(CROPS)}')
        if embedding_crop not in CROPS_OF[leo_name]:
            raise DatasetError(f'{leo_name} has only {"/".join(CROPS_OF[leo_name])}-crop embeddings (LEO\'s '
                               f'config allows multiview for miniImageNet only); use embedding_crop '
                               f'{CROPS_OF[leo_name][0]!r}')
    explicit_path = data_path is not None
    data_path = Path(data_path) if explicit_path else Path(default_data_path(data_root))
    folder = data_path if leo_name == CUSTOM else data_path / leo_name / embedding_crop
    if leo_name == CUSTOM:
        remedy = 'Write it again in the format leo_custom reads (see data/leo.py)'
    else:
        remedy = (f'Delete it and unpack the embeddings again: {get_data_command(data_root)} --force '
                  f'(if that unpacks the same file, delete {Path(data_root) / "leo" / "embeddings.zip"} too)')
    registry = REGISTRY_NAMES[leo_name]
    what = f'{registry} ({leo_name}{"" if leo_name == CUSTOM else " " + embedding_crop})'
    files = {}
    for split in SPLITS:
        data = read_embeddings(folder / f'{split}_embeddings.pkl', remedy)
        if data is None:
            raise _missing(data_root, leo_name, embedding_crop, data_path, folder, split, explicit_path)
        files[split] = data
    dims = {s: d.embeddings.shape[1] for s, d in files.items()}
    if len(set(dims.values())) != 1:
        raise DatasetError(f'the embedding files of {what} have different dimensions '
                           f'({", ".join(f"{s}: {d}" for s, d in dims.items())}); they must match')
    dim = dims['train']
    # train first: with train_on_val it copies the val rows before 'val' normalises them in place.
    splits = {
        'train': build_split(files['train'], 'train', what, other=files['val'] if train_on_val else None),
        'val': build_split(files['val'], 'val', what),
        'test': build_split(files['test'], 'test', what),
    }
    files.clear()
    expected = EXPECTED_CLASSES.get(leo_name)
    if expected is not None:
        want = dict(expected, train=expected['train'] + expected['val'] if train_on_val else expected['train'])
        odd = {s: (splits[s].n_classes, want[s]) for s in SPLITS if splits[s].n_classes != want[s]}
        if odd:
            log.warning('%s: %s; the published files have %s. Using the files as found.', what,
                        ', '.join(f'{s} has {n} classes' for s, (n, _) in odd.items()),
                        '/'.join(str(want[s]) for s in SPLITS))
    description = (f'LEO {leo_name}{"" if leo_name == CUSTOM else " " + embedding_crop} embeddings '
                   f'({dim}-d, L2-normalised) from {folder}: '
                   + ', '.join(f'{s} {splits[s].n_classes} classes / {int(splits[s].counts.sum())} images'
                               for s in SPLITS)
                   + (' (train = train + val files, train_on_val)' if train_on_val else ''))
    return FewShotDataset(name=registry, train=splits['train'], val=splits['val'], test=splits['test'],
                          image_shape=(dim,), val_is_test=False, description=description)


def load_mini(data_root='./data', embedding_crop='center', data_path=None, train_on_val=False):
    """leo_mini: LEO's miniImageNet embeddings (center or multiview crop)."""
    return load(data_root, 'miniImageNet', embedding_crop, data_path, train_on_val)


def load_tiered(data_root='./data', embedding_crop='center', data_path=None, train_on_val=False):
    """leo_tiered: LEO's tieredImageNet embeddings (center crop only)."""
    return load(data_root, 'tieredImageNet', embedding_crop, data_path, train_on_val)


def load_custom(data_root='./data', embedding_crop='center', data_path=None, train_on_val=False):
    """leo_custom: your own embeddings in LEO's format, <data_path>/<split>_embeddings.pkl|npz.
    embedding_crop is accepted (so every leo_* dataset takes the same options) and ignored."""
    return load(data_root, CUSTOM, embedding_crop, data_path, train_on_val)


# ----------------------------------------------------------------------------- declaration
# The authors' pre-computed WRN-28-10 embeddings, linked from deepmind/leo's README. No checksum
# is published, so the zip is checked to be readable and to hold the nine files.

LEO_EMBEDDINGS_URL = 'http://storage.googleapis.com/leo-embeddings/embeddings.zip'


def _zip_members(zf):
    """{relative path in EXPECTED_FILES: zip member} of `zf`, and the list of expected files it
    lacks. The files may sit under any one top folder (embeddings/ in the published zip);
    member names are only matched, never used as output paths."""
    names = [i.filename for i in zf.infolist() if not i.is_dir()]
    found, prefixes = {}, set()
    for want in EXPECTED_FILES:
        hits = [n for n in names if n.replace('\\', '/') == want or n.replace('\\', '/').endswith('/' + want)]
        if len(hits) == 1:
            found[want] = hits[0]
            prefixes.add(hits[0][:-len(want)])
    if len(prefixes) > 1:   # the nine files must come from one folder
        found = {}
    return found, [w for w in EXPECTED_FILES if w not in found]


def check_zip(path):
    """Deletes `path` and raises DownloadError unless it is a readable zip holding LEO's nine
    embedding pickles ({mini,tiered}ImageNet/{center,multiview}/{train,val,test}_embeddings.pkl)."""
    from .download import DownloadError
    problem = None
    try:
        with zipfile.ZipFile(path) as zf:
            _, missing = _zip_members(zf)
        if missing:
            problem = (f'it lacks {len(missing)} of the 9 embedding files, e.g. embeddings/{missing[0]}'
                       if len(missing) < 9 else 'it holds none of the embedding files '
                       '(embeddings/<miniImageNet|tieredImageNet>/<center|multiview>/<split>_embeddings.pkl)')
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        with open(path, 'rb') as fh:
            head = fh.read(512).lstrip().lower()
        problem = ('it is a web page, not a zip' if head.startswith((b'<!doctype', b'<html', b'<?xml'))
                   else f'it is not a readable zip ({exc})')
    if problem is not None:
        os.remove(path)
        raise DownloadError(f'{path} is not LEO\'s embeddings.zip: {problem}. It was deleted; rerun to '
                            'download it again, and if this repeats the source is serving a different file.')


def _unpack(archive, out_dir, wanted, progress):
    """Writes the members of `archive` for the relative paths `wanted` to out_dir/<path>, each
    through a temporary file renamed when complete, with a byte progress bar. The whole
    archive is refused (nothing written) if any member is unsafe (absolute, '..', links)."""
    from tqdm import tqdm
    from .download import DownloadError, check_members, zip_members
    try:
        with zipfile.ZipFile(archive) as zf:
            check_members(zip_members(zf), archive)
            found, missing = _zip_members(zf)
            if missing:
                raise DownloadError(f'{archive} lacks embeddings/{missing[0]} (and {len(missing) - 1} more); '
                                    'delete it and download it again.', kind='archive')
            infos = [zf.getinfo(found[w]) for w in wanted]
            with tqdm(total=sum(i.file_size for i in infos), unit='B', unit_scale=True, unit_divisor=1024,
                      desc=f'unpacking {os.path.basename(archive)}', disable=not progress) as bar:
                for rel, info in zip(wanted, infos):
                    dest = os.path.join(out_dir, *rel.split('/'))
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    tmp = dest + '.unpacking'
                    try:
                        with zf.open(info) as src, open(tmp, 'wb') as dst:
                            while True:
                                chunk = src.read(1 << 20)
                                if not chunk:
                                    break
                                dst.write(chunk)
                                bar.update(len(chunk))
                        os.replace(tmp, dest)
                    finally:
                        if os.path.exists(tmp):
                            os.remove(tmp)
    except (zipfile.BadZipFile, EOFError) as exc:   # includes a CRC mismatch while reading
        raise DownloadError(f'{archive} is corrupted ({type(exc).__name__}: {exc}); delete it and download it '
                            'again.', kind='archive') from None
    except OSError as exc:
        raise DownloadError(f'Unpacking {archive} into {out_dir} failed: {exc}', kind='io') from None


def preprocess(dataset_dir, paths, force, progress=True):
    """get_data's step: unpacks the nine embedding pickles into <dataset_dir>/embeddings/ (the
    default data_path) and converts each into the npz beside it, so training never unpickles."""
    from tqdm import tqdm
    from .download import preprocessing
    out_dir = os.path.join(dataset_dir, 'embeddings')
    pkls = {rel: os.path.join(out_dir, *rel.split('/')) for rel in EXPECTED_FILES}
    wanted = [rel for rel, p in pkls.items()
              if force or not (os.path.isfile(p) or os.path.isfile(npz_path(p)))]
    if wanted:
        _unpack(paths[0], out_dir, wanted, progress)
    converted = 0
    remedy = (f'Delete {paths[0]} and rerun {get_data_command(os.path.dirname(dataset_dir) or ".")} '
              '--force to download and unpack it again')
    with preprocessing('LEO\'s embeddings', dataset_dir):
        for rel in tqdm(EXPECTED_FILES, desc='converting to npz', unit='file', disable=not progress):
            if os.path.isfile(pkls[rel]):
                converted += convert(pkls[rel], force=force, remedy=remedy)[1]
    return (f'{len(EXPECTED_FILES)} embedding files in {out_dir} ({converted} converted to npz now, '
            f'{len(EXPECTED_FILES) - converted} already were); the .pkl files may be deleted')


DOWNLOAD = Download(
    name='leo',
    default_source='deepmind',
    sources={
        'deepmind': Source(
            description="LEO's pre-computed 640-d WRN-28-10 embeddings (embeddings.zip from "
                        "deepmind/leo's README; no published checksum, so the zip is checked to hold "
                        'the nine {miniImageNet,tieredImageNet}/{center,multiview}/<split>_embeddings.pkl), '
                        'unpacked into embeddings/ and converted to npz',
            preprocess=preprocess, options=('progress',),
            files=(RemoteFile('embeddings', 'embeddings.zip', LEO_EMBEDDINGS_URL, check=check_zip),)),
    })


def options(cfg):
    """The reader options from main.py's flags (the same for every leo_* dataset)."""
    return dict(embedding_crop=cfg.embedding_crop, data_path=cfg.data_path or None,
                train_on_val=cfg.train_on_val)


_FLAGS = ('embedding_crop', 'data_path', 'train_on_val')
SPECS = (
    DatasetSpec(name='leo_mini', loader=load_mini, kind='embeddings', flags=_FLAGS, options=options,
                description="LEO's 640-d WRN-28-10 embeddings of miniImageNet (center or multiview crops)",
                download=DOWNLOAD),
    DatasetSpec(name='leo_tiered', loader=load_tiered, kind='embeddings', flags=_FLAGS, options=options,
                description="LEO's 640-d WRN-28-10 embeddings of tieredImageNet (center crops)",
                download=DOWNLOAD),
    DatasetSpec(name='leo_custom', loader=load_custom, kind='embeddings', flags=_FLAGS, options=options,
                description="your own embeddings in LEO's file format (<data_path>/<split>_embeddings.pkl|npz)"),
)
