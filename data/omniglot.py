"""Omniglot reader: metadrop's npy files, our preprocessed cache, or the official zips.

Files under <data_root>/omniglot/, first found wins (option `source` forces one):
  1. metadrop layout: train.npy [4800, 20, 784] and test.npy [1692, 20, 784], flat HWC
     28x28x1, rotations already stored as separate classes, values used as stored.
  2. omniglot28.npz, written by `build_cache` from the zips below (used when it matches the
     zips present, or when the zips are gone).
  3. the official zips images_background.zip + images_evaluation.zip (1623 characters), or
     else the two subsets images_background_small1.zip + images_background_small2.zip
     (242 distinct characters of 8 alphabets). Extracted folders of the same names work too.

Preprocessing follows cbfinn/maml: PIL resize to 28x28 with LANCZOS, /255, invert (1 - x),
so strokes are 1 and the background 0. We store that as uint8 0/255 (strokes 255). The PNGs
are 1-bit (mode '1'), on which Pillow's LANCZOS is silently nearest-neighbour: that is the
original's output and our default, resize='nearest'. resize='lanczos' converts each image to
grey ('L') first, so the LANCZOS filter really applies and the strokes get antialiased grey
edges; its cache is a separate file (omniglot28_lanczos.npz). metadrop's npy files are
already 28x28, so the option applies to the PNG sources only (lanczos is refused on them).
"""
import io
import logging
import os
import random
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from .base import (DatasetError, DatasetSpec, Download, FewShotDataset, RemoteFile, Source, comma_list,
                   dropbox_npy, show_progress)
from .episodes import ClassSplit
from .storage import open_npy_memmap, writable

log = logging.getLogger(__name__)

IMAGE_SIZE = 28
IMAGES_PER_CHARACTER = 20
CACHE_NAME = 'omniglot28.npz'   # resize='nearest' (the name every earlier cache has)
CACHE_VERSION = 1
RESIZES = ('nearest', 'lanczos')
# The zip pairs, by family. Official = the full set (964 background + 659 evaluation characters).
FAMILIES = {
    'official': ('images_background', 'images_evaluation'),
    'small': ('images_background_small1', 'images_background_small2'),
}
SOURCES = ('auto', 'npy', 'official', 'small')
N_CHARACTERS_FULL = 1623
N_TRAIN_FULL = 1200   # MAML's 1100 meta-train + 100 val; metadrop's 4800 = 1200 x 4 rotations
SPLIT_SEED = 1        # MAML: random.seed(1); random.shuffle(character_folders)


def get_data_command(data_root):
    return f'python data/get_data.py --dataset omniglot --data_root {data_root}'


class _Source(NamedTuple):
    name: str   # 'images_background.zip' or 'images_background/' (an extracted folder)
    path: Path
    is_zip: bool
    size: int   # zip size in bytes; for a folder, the total size of its PNGs


class Characters(NamedTuple):
    """Decoded Omniglot characters, sorted by (alphabet, character)."""
    images: np.ndarray     # uint8 [n_chars, 20, 28, 28, 1], strokes 255, background 0
    alphabets: np.ndarray  # str [n_chars]
    characters: np.ndarray # str [n_chars], e.g. 'character07'
    family: str            # 'official' or 'small'
    source_names: tuple    # the zips (or folders) decoded
    source_sizes: tuple
    resize: str = 'nearest'  # RESIZES: how the 105x105 PNGs became 28x28


def cache_name(resize='nearest'):
    """The cache file of `resize`: omniglot28.npz for nearest, omniglot28_<resize>.npz else, so
    a cache written for one is never read for the other."""
    return CACHE_NAME if resize == 'nearest' else f'omniglot28_{resize}.npz'


def check_resize(resize):
    if resize not in RESIZES:
        raise DatasetError(f"unknown omniglot resize {resize!r}; use one of {', '.join(RESIZES)}")


# ----------------------------------------------------------------------------- sources

def _find_sources(omniglot_dir: Path, family: str):
    found = []
    for stem in FAMILIES[family]:
        zpath, dpath = omniglot_dir / f'{stem}.zip', omniglot_dir / stem
        if zpath.is_file():  # preferred over a folder, which may be a partial extraction
            found.append(_Source(zpath.name, zpath, True, zpath.stat().st_size))
        elif dpath.is_dir():
            size = sum(p.stat().st_size for p in dpath.rglob('*.png'))
            found.append(_Source(f'{stem}/', dpath, False, size))
    return found


def _pick_family(omniglot_dir: Path, source: str):
    """(family, sources) of the zips to decode; (None, []) when none are present."""
    for family in (('official', 'small') if source in ('auto', 'npy') else (source,)):
        sources = _find_sources(omniglot_dir, family)
        if sources:
            return family, sources
    return None, []


def _list_characters(src: _Source):
    """{(alphabet, character): [(file name, member or path), ...]} of one zip or folder."""
    chars = {}
    if src.is_zip:
        try:
            with zipfile.ZipFile(src.path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise DatasetError(f'{src.path} is not a readable zip ({e}); delete it and download it again') from None
        for member in names:
            parts = member.split('/')
            if len(parts) < 3 or '__MACOSX' in parts or not parts[-1].lower().endswith('.png'):
                continue
            chars.setdefault((parts[-3], parts[-2]), []).append((parts[-1], member))
    else:
        for p in src.path.glob('*/*/*.png'):
            chars.setdefault((p.parent.parent.name, p.parent.name), []).append((p.name, p))
    for files in chars.values():
        files.sort()
    return chars


def decode_png(fileobj, what, resize='nearest'):
    """One Omniglot PNG (a path or file object) as uint8 [28, 28], strokes 255, background 0.
    `what` names it in the DatasetError raised for a damaged file."""
    try:
        with Image.open(fileobj) as im:
            if resize == 'lanczos':
                # On the grey image, so the filter really applies (antialiased edges).
                im = im.convert('L')
            # As cbfinn/maml's resize_images.py: LANCZOS requested. The Omniglot PNGs are 1-bit
            # (mode '1'), for which Pillow silently uses NEAREST; that is what the original
            # produced, so 'nearest' keeps the call as it is.
            im = im.resize((IMAGE_SIZE, IMAGE_SIZE), resample=Image.LANCZOS)
            grey = np.asarray(im.convert('L'), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f'cannot decode {what} ({e}); the file is damaged: delete it and download again') \
            from None
    # maml: x / 255 then 1 - x; stored as uint8 so strokes are 255 and the background 0.
    return 255 - grey


def decode_characters(sources, family, resize='nearest') -> Characters:
    """Decodes the PNGs of the given zips/folders (a character present in several is read once)."""
    chosen = {}
    for src in sources:
        for key, files in _list_characters(src).items():
            chosen.setdefault(key, (src, files))  # small1 and small2 both hold Greek and Latin
    if not chosen:
        raise DatasetError(f'no character PNGs (<alphabet>/<character>/*.png) found in '
                           f'{", ".join(str(s.path) for s in sources)}; delete and download again')
    keys = sorted(chosen)
    for key in keys:
        n = len(chosen[key][1])
        if n != IMAGES_PER_CHARACTER:
            raise DatasetError(f'{key[0]}/{key[1]} in {chosen[key][0].path} has {n} images instead of '
                               f'{IMAGES_PER_CHARACTER}; the archive or folder is incomplete: '
                               f'delete it and download it again')
    images = np.empty((len(keys), IMAGES_PER_CHARACTER, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8)
    open_zips = {}
    try:
        with tqdm(total=len(keys) * IMAGES_PER_CHARACTER, desc='decoding Omniglot', unit='img',
                  disable=not show_progress()) as bar:
            for i, key in enumerate(keys):
                src, files = chosen[key]
                for j, (_, member) in enumerate(files):
                    if src.is_zip:
                        zf = open_zips.get(src.path)
                        if zf is None:
                            zf = open_zips[src.path] = zipfile.ZipFile(src.path)
                        what = f'{member} in {src.path}'
                        try:
                            fileobj = io.BytesIO(zf.read(member))
                        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
                            raise DatasetError(f'cannot read {what} ({type(e).__name__}: {e}); the zip is '
                                               f'damaged: delete it and download it again') from None
                    else:
                        fileobj, what = member, str(member)
                    images[i, j, :, :, 0] = decode_png(fileobj, what, resize)
                bar.update(len(files))
    finally:
        for zf in open_zips.values():
            zf.close()
    return Characters(images, np.array([k[0] for k in keys]), np.array([k[1] for k in keys]), family,
                      tuple(s.name for s in sources), tuple(int(s.size) for s in sources), resize)


# ----------------------------------------------------------------------------- cache

def _read_cache(path: Path, resize='nearest'):
    """The cached Characters, or None when the file is missing, damaged, of another version or
    resized otherwise (a cache without the field is from before the option: nearest)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z['version']) != CACHE_VERSION:
                return None
            stored = str(z['resize']) if 'resize' in z.files else 'nearest'
            if stored != resize:
                return None
            chars = Characters(z['images'], z['alphabets'], z['characters'], str(z['family']),
                               tuple(str(n) for n in z['source_names']),
                               tuple(int(s) for s in z['source_sizes']), stored)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None
    if chars.images.ndim != 5 or chars.images.shape[1:] != (IMAGES_PER_CHARACTER, IMAGE_SIZE, IMAGE_SIZE, 1) \
            or len(chars.alphabets) != len(chars.images):
        return None
    return chars


def _is_fresh(chars: Characters, family, sources):
    return (chars.family == family and chars.source_names == tuple(s.name for s in sources)
            and chars.source_sizes == tuple(int(s.size) for s in sources))


def _write_cache(path: Path, chars: Characters):
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            np.savez_compressed(
                f, version=np.array(CACHE_VERSION), images=chars.images, alphabets=chars.alphabets,
                characters=chars.characters, family=np.array(chars.family),
                source_names=np.array(chars.source_names), source_sizes=np.array(chars.source_sizes, np.int64),
                resize=np.array(chars.resize))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build_cache(omniglot_dir, force=False, source='auto', resize='nearest') -> Path:
    """Decodes the official (else the small) zips in `omniglot_dir` into omniglot28.npz
    (omniglot28_lanczos.npz for resize='lanczos').

    Returns the cache path. An up-to-date cache (same zip names and sizes) is kept unless
    `force`. The file is written atomically (temporary file, then os.replace).
    """
    omniglot_dir = Path(omniglot_dir)
    if source not in ('auto', 'official', 'small'):
        raise DatasetError(f"build_cache source must be 'auto', 'official' or 'small', not {source!r}")
    check_resize(resize)
    family, sources = _pick_family(omniglot_dir, source)
    if not sources:
        raise DatasetError(f'no Omniglot zips in {omniglot_dir}: expected images_background.zip + '
                           f'images_evaluation.zip (or images_background_small1.zip + '
                           f'images_background_small2.zip). Get them with: '
                           f'{get_data_command(omniglot_dir.parent)}')
    path = omniglot_dir / cache_name(resize)
    if not force:
        cached = _read_cache(path, resize)
        if cached is not None and _is_fresh(cached, family, sources):
            return path
    chars = decode_characters(sources, family, resize)
    try:
        _write_cache(path, chars)
    except OSError as e:
        raise DatasetError(f'cannot write {path} ({e}); make the folder writable or use another --data_root') \
            from None
    return path


_MEMO = {}  # the last decode, so a process that loads Omniglot twice decodes once


def _characters(omniglot_dir: Path, source: str, write_cache: bool, resize='nearest'):
    """(Characters, text saying where they came from), or None when there is nothing to read."""
    family, sources = _pick_family(omniglot_dir, source)
    cache_path = omniglot_dir / cache_name(resize)
    cached = _read_cache(cache_path, resize)
    if sources:
        used = '+'.join(s.name for s in sources)
        present = {s.path.name.removesuffix('.zip') for s in sources}
        missing = [f'{stem}.zip' for stem in FAMILIES[family] if stem not in present]
        what = ('official zips ' if family == 'official' else 'background subsets ') + used
        if missing:
            what += f' ({", ".join(missing)} absent)'
        if cached is not None and _is_fresh(cached, family, sources):
            return cached, f'{what} via {cache_path.name}'
        key = (family, resize) + tuple((str(s.path), s.size, s.path.stat().st_mtime_ns) for s in sources)
        if key not in _MEMO:
            _MEMO.clear()
            _MEMO[key] = decode_characters(sources, family, resize)
        chars = _MEMO[key]
        if write_cache and writable(omniglot_dir):
            try:
                _write_cache(cache_path, chars)
            except OSError:
                pass  # a cache is a convenience; decoding again next time is fine
        return chars, what
    if cached is not None and (source in ('auto', 'npy') or cached.family == source):
        return cached, f'{cache_path.name} built from {"+".join(cached.source_names)} (zips no longer present)'
    return None


# ----------------------------------------------------------------------------- splits

def character_split(n_characters):
    """MAML's character split: indices shuffled with random.Random(1); the first 1200 of the
    full 1623 characters are meta-train. A smaller set keeps the ratio: round(n * 1200 / 1623).

    MAML shuffled os.listdir order, which is not portable; we shuffle the sorted order.
    """
    order = list(range(n_characters))
    random.Random(SPLIT_SEED).shuffle(order)
    n_train = N_TRAIN_FULL if n_characters == N_CHARACTERS_FULL else \
        int(round(n_characters * N_TRAIN_FULL / N_CHARACTERS_FULL))
    return order[:n_train], order[n_train:]


def _alphabet_list(value, option, available):
    if value is None:
        return []
    names = [s.strip() for s in value.split(',')] if isinstance(value, str) else [str(s) for s in value]
    names = [s for s in names if s]
    unknown = [s for s in names if s not in available]
    if unknown:
        raise DatasetError(f'{option}: unknown alphabet(s) {", ".join(unknown)} (names are case-sensitive); '
                           f'available alphabets: {", ".join(available)}')
    return list(dict.fromkeys(names))


def _split_characters(chars: Characters, test_alphabets, val_alphabets):
    """(train idx, val idx or None, test idx, text) for the requested split."""
    available = sorted(set(chars.alphabets.tolist()))
    test_names = _alphabet_list(test_alphabets, 'test_alphabets', available)
    val_names = _alphabet_list(val_alphabets, 'val_alphabets', available)
    n = len(chars.images)
    if not test_names:
        if val_names:
            raise DatasetError('val_alphabets needs test_alphabets too (an alphabet split names the '
                               'meta-test alphabets); give test_alphabets or drop val_alphabets')
        train, test = character_split(n)
        rule = f'{N_TRAIN_FULL}/{n - N_TRAIN_FULL}' if n == N_CHARACTERS_FULL else \
            f'{len(train)}/{len(test)} = round({n}*1200/1623)'
        return train, None, test, f'character split {rule}, random.Random({SPLIT_SEED})'
    both = sorted(set(test_names) & set(val_names))
    if both:
        raise DatasetError(f'alphabet(s) {", ".join(both)} are in both test_alphabets and val_alphabets')
    alphabets = chars.alphabets.tolist()
    test = [i for i, a in enumerate(alphabets) if a in test_names]
    val = [i for i, a in enumerate(alphabets) if a in val_names]
    train = [i for i, a in enumerate(alphabets) if a not in test_names and a not in val_names]
    if not train:
        raise DatasetError(f'test_alphabets/val_alphabets take all {len(available)} alphabets, none is left '
                           f'for meta-training; available alphabets: {", ".join(available)}')
    text = f'alphabet split, test: {",".join(test_names)}'
    if val_names:
        text += f'; val: {",".join(val_names)}'
    return train, (val or None), test, text


# ----------------------------------------------------------------------------- npy (metadrop)

def _load_npy(path: Path):
    arr = open_npy_memmap(path)   # never unpickles
    per_class = IMAGES_PER_CHARACTER * IMAGE_SIZE * IMAGE_SIZE
    if not isinstance(arr, np.ndarray) or arr.size == 0 or arr.size % per_class:
        raise DatasetError(f'{path} has shape {getattr(arr, "shape", "?")}, which does not reshape to '
                           f'[n_classes, 20, 784] (metadrop expects [4800, 20, 784] / [1692, 20, 784])')
    n = arr.size // per_class
    if n % 4:
        raise DatasetError(f'{path} holds {n} classes, not a multiple of 4 (metadrop stores each character '
                           f'at 4 rotations); the file is not in metadrop layout')
    return arr.reshape(n, IMAGES_PER_CHARACTER, IMAGE_SIZE, IMAGE_SIZE, 1)


def _npy_dataset(omniglot_dir: Path, rotations, test_alphabets, val_alphabets):
    if test_alphabets or val_alphabets:
        raise DatasetError("test_alphabets/val_alphabets cannot be used with metadrop's train.npy/test.npy: "
                           'their class split is fixed by the files and they carry no alphabet names. '
                           "Use the official zips with source='official' (or 'small')")
    if not rotations:
        raise DatasetError("rotations=False cannot be used with metadrop's train.npy/test.npy: the 4 "
                           'rotations are stored in the files as separate classes. Use the official zips '
                           "with source='official' (or 'small')")
    splits = {}
    for which in ('train', 'test'):
        arr = _load_npy(omniglot_dir / f"{which}.npy")
        # Values as stored (metadrop does no scaling), whatever the dtype.
        splits[which] = ClassSplit(arr, names=[f'{which}.npy/class{c:04d}' for c in range(len(arr))],
                                   rotations=False, scale=1.0, name=which, dataset='omniglot')
    tr, te = splits['train'], splits['test']
    desc = (f'omniglot (metadrop npy train.npy [{tr.n_classes}, 20, 784] + test.npy [{te.n_classes}, 20, 784], '
            f'rotations stored as classes, values as stored): train {tr.n_classes} / val=test / '
            f'test {te.n_classes} classes')
    return FewShotDataset('omniglot', tr, te, te, (IMAGE_SIZE, IMAGE_SIZE, 1), True, desc)


# ----------------------------------------------------------------------------- entry point

def load(data_root='./data', source='auto', rotations=True, test_alphabets=None, val_alphabets=None,
         cache=True, resize='nearest') -> FewShotDataset:
    """Reads Omniglot from <data_root>/omniglot.

    Args:
      source: 'auto' (npy, then cache, then zips), 'npy', 'official' (the full zips) or 'small'.
      rotations: 4 classes per character (0/90/180/270 degrees). The npy files already store
        the rotations as classes, so there only True is accepted.
      test_alphabets, val_alphabets: alphabet names (list or comma-separated string) for an
        alphabet-disjoint split; by default MAML's character split with val = test.
      cache: write omniglot28.npz after decoding zips when the folder is writable.
      resize: how the 105x105 PNGs become 28x28: 'nearest' (the originals': Pillow's LANCZOS
        on the 1-bit images) or 'lanczos' (LANCZOS on the grey image; cached apart, in
        omniglot28_lanczos.npz). The npy files are 28x28 already: only 'nearest' is accepted.
    """
    omniglot_dir = Path(data_root) / 'omniglot'
    if source not in SOURCES:
        raise DatasetError(f'unknown omniglot source {source!r}; use one of {", ".join(SOURCES)}')
    check_resize(resize)
    npy = [omniglot_dir / 'train.npy', omniglot_dir / 'test.npy']
    if source in ('auto', 'npy') and all(p.is_file() for p in npy):
        if resize != 'nearest':
            raise DatasetError(f"resize={resize!r} cannot be used with metadrop's train.npy/test.npy: they hold "
                               '28x28 images already, resized by metadrop. Use the official zips with '
                               "source='official' (or 'small'; --omniglot_source)")
        return _npy_dataset(omniglot_dir, rotations, test_alphabets, val_alphabets)
    found = None if source == 'npy' else _characters(omniglot_dir, source, cache, resize)
    if found is None:
        wanted = {
            'npy': 'train.npy + test.npy (metadrop layout)',
            'official': 'images_background.zip + images_evaluation.zip (or their extracted folders)',
            'small': 'images_background_small1.zip + images_background_small2.zip (or their extracted folders)',
        }.get(source, f'train.npy + test.npy (metadrop layout), {CACHE_NAME}, or the official zips '
                      f'images_background.zip + images_evaluation.zip (or images_background_small1.zip + '
                      f'images_background_small2.zip)')
        half = [p.name for p in npy if p.is_file()]
        note = f' (found {half[0]} but not its partner)' if len(half) == 1 else ''
        raise DatasetError(f'no Omniglot data in {omniglot_dir}{note}: expected {wanted}. '
                           f'Get it with: {get_data_command(data_root)}')
    chars, source_text = found
    train_idx, val_idx, test_idx, split_text = _split_characters(chars, test_alphabets, val_alphabets)

    def make(idx, name):
        idx = np.asarray(idx, dtype=np.int64)
        names = [f'{a}/{c}' for a, c in zip(chars.alphabets[idx], chars.characters[idx])]
        return ClassSplit(chars.images[idx], names=names, rotations=rotations, name=name, dataset='omniglot')

    train, test = make(train_idx, 'train'), make(test_idx, 'test')
    val = test if val_idx is None else make(val_idx, 'val')
    n = len(chars.images)
    resized = '' if resize == 'nearest' else f', {resize} resize'
    desc = (f'omniglot ({source_text}, {n} chars{" x 4 rotations" if rotations else ""}{resized}, {split_text}): '
            f'train {train.n_classes} / {"val=test" if val_idx is None else f"val {val.n_classes}"} / '
            f'test {test.n_classes} classes')
    return FewShotDataset('omniglot', train, val, test, (IMAGE_SIZE, IMAGE_SIZE, 1), val_idx is None, desc)


# ----------------------------------------------------------------------------- declaration

OMNIGLOT_BASE_URL = 'https://github.com/brendenlake/omniglot/raw/master/python'

# metadrop's data.py reshapes these to [4800, 20, 784] and [1692, 20, 784]: characters x
# 4 rotations, 20 drawers, 28*28 pixels (fidelity notes 4.1).
METADROP_DRAWERS, METADROP_PIXELS, METADROP_ROTATIONS = 20, 28 * 28, 4


def check_metadrop_npy(path):
    """Deletes `path` and raises DownloadError unless it reads as [N, 20, 784], N % 4 == 0.

    The stored shape of the Dropbox files is not documented (metadrop reshapes after
    loading), so any shape with that many elements per class is accepted."""
    from .download import check_npy
    per_class = METADROP_DRAWERS * METADROP_PIXELS
    found = {}

    def problem_of(arr):
        n = arr.size // per_class if arr.size % per_class == 0 else None
        if n is None or n == 0 or n % METADROP_ROTATIONS:
            return (f'it holds an array of shape {arr.shape}, which cannot be read as '
                    f'[N, {METADROP_DRAWERS}, {METADROP_PIXELS}] with N a positive multiple '
                    f'of {METADROP_ROTATIONS} (classes x rotations)')
        found['n'] = n
        return None

    check_npy(path, 'metadrop data file', problem_of)
    log.info('%s: %d classes x %d drawers x %d pixels.', path, found['n'], METADROP_DRAWERS,
             METADROP_PIXELS)


def preprocess_zips(dataset_dir, paths, force):
    """get_data's step after the official zips: decodes them into omniglot28.npz."""
    from .download import DownloadError
    try:
        return build_cache(dataset_dir, force=force)
    except (DatasetError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DownloadError(
            f'Preprocessing the Omniglot zips in {dataset_dir} failed: {type(exc).__name__}: '
            f'{exc}. If a zip is damaged, delete it and download it again.') from None


DOWNLOAD = Download(
    name='omniglot',
    default_source='official',
    sources={
        'official': Source(
            description='the official Omniglot zips (Lake et al.), decoded by '
                        'data.omniglot into omniglot28.npz',
            preprocess=preprocess_zips,
            files=tuple(
                RemoteFile(name, name + '.zip', f'{OMNIGLOT_BASE_URL}/{name}.zip', md5,
                           extra=extra)
                for name, md5, extra in (
                    ('images_background', '68d2efa1b9178cc56df9314c21c6e718', None),
                    ('images_evaluation', '6b91aef0f799c5bb55b94e3f2daec811', None),
                    ('images_background_small1', 'e704a628b5459e08445c13499850abc4', 'small'),
                    ('images_background_small2', 'b75a71a51d3b13f821f212756fe481fd', 'small'),
                ))),
        'metadrop': Source(
            description="Meta-Dropout's preprocessed train.npy/test.npy (Dropbox; no "
                        'published checksum, so the size and array shape are checked)',
            preprocess=None,
            files=(dropbox_npy('train', 'h13g4b2awd7xdr6', check_metadrop_npy),
                   dropbox_npy('test', 'w313ybz6rls1e83', check_metadrop_npy))),
    })


def options(cfg):
    """The reader options from main.py's flags."""
    return dict(source=cfg.omniglot_source, test_alphabets=comma_list(cfg.test_alphabets),
                val_alphabets=comma_list(cfg.val_alphabets),
                resize=getattr(cfg, 'omniglot_resize', 'nearest'))   # configs from before the flag


SPECS = (DatasetSpec(
    name='omniglot', loader=load, kind='images',
    flags=('omniglot_source', 'test_alphabets', 'val_alphabets', 'omniglot_resize'), options=options,
    description='Omniglot (Lake et al.): 28x28 grey characters, 4 rotations per character; '
                "metadrop's npy files, the official zips or their small subsets",
    download=DOWNLOAD),)
