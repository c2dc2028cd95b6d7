"""Downloads (and preprocesses) the few-shot datasets into <data_root>/<dataset>/.

    python data/get_data.py --dataset omniglot                     # official zips + cache
    python data/get_data.py --dataset omniglot --source metadrop   # metadrop's train/test.npy
    python -m data.get_data --dataset omniglot --small
    python data/get_data.py --dataset mimgnet                      # metadrop's train/test.npy
    python data/get_data.py --dataset mimgnet --source csv [--images_dir DIR]  # Ravi csvs + cache
    python data/get_data.py --dataset tiered                       # MetaOptNet's npz tar + cache
    python data/get_data.py --dataset tiered --source ren          # Ren et al.'s PNG pickles
    python data/get_data.py --dataset cifar [--jpeg_roundtrip]     # CIFAR-FS from CIFAR-100
    python data/get_data.py --dataset fc100                        # FC100 (MTL): 84x84 JPEG folders + cache
    python data/get_data.py --dataset svhn [--svhn_val fixed|random]  # SVHN (OOD): valid + test
    python data/get_data.py --dataset cub [--source caltech]       # CUB (OOD): l2b's files, or built
    python data/get_data.py --dataset mimgnet --source l2b         # l2b's train/valid/test.npy
    python data/get_data.py --dataset leo                          # LEO's embeddings.zip -> npz

Like metadrop's get_data.py the files land in ./data/<dataset>/ by default and transfers
show a tqdm bar; unlike it, transfers resume after an interruption, are retried, and are
checked (md5 where known) before they get their final name. Run with --help for every flag.
"""
import argparse
import collections
import functools
import logging
import os
import sys
import zipfile

if __package__ in (None, ''):
    # Run as `python data/get_data.py`: Python put data/ itself first on sys.path, where our
    # modules (datasets.py, ...) would shadow installed packages of the same name. Put the
    # repository root there instead, so `data.*` imports as a package.
    _here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != _here]
    sys.path.insert(0, os.path.dirname(_here))

from data.download import DownloadError, download, safe_extract  # noqa: E402

log = logging.getLogger(__name__)

# A file of a dataset source. `name` is the key --url_override uses; `extra` names the flag
# that asks for an optional file (None: always fetched); `check` validates the file's
# content after download and raises DownloadError (having deleted it) when it is unusable.
RemoteFile = collections.namedtuple(
    'RemoteFile', 'name filename url md5 size extra check', defaults=(None, None, None, None))

# files: RemoteFiles; preprocess(dataset_dir, paths, force, **options) -> a summary to report,
# or None; options: the command-line options (argparse dest names) passed on to preprocess as
# keywords ('progress' is `not --no_progress`); prepare(dataset_dir): runs before the downloads.
Source = collections.namedtuple('Source', 'description files preprocess options prepare',
                                defaults=((), None))
Dataset = collections.namedtuple('Dataset', 'sources default_source')

OMNIGLOT_BASE_URL = 'https://github.com/brendenlake/omniglot/raw/master/python'

# metadrop's data.py reshapes these to [4800, 20, 784] and [1692, 20, 784]: characters x
# 4 rotations, 20 drawers, 28*28 pixels (fidelity notes 4.1).
METADROP_DRAWERS, METADROP_PIXELS, METADROP_ROTATIONS = 20, 28 * 28, 4


def _check_npy(path, what, problem_of):
    """Deletes `path` and raises DownloadError unless it is a plain npy array for which
    problem_of(array) returns None (else the reason); the array is only memory-mapped."""
    import numpy as np
    try:
        arr = np.load(path, mmap_mode='r', allow_pickle=False)
        if not isinstance(arr, np.ndarray):  # an .npz archive
            arr.close()
            raise ValueError('it is an .npz archive, not a single array')
        problem = problem_of(arr)
        del arr
    except (ValueError, OSError, EOFError) as exc:
        problem = f'numpy cannot read it as an array ({exc})'
    if problem is not None:
        os.remove(path)
        raise DownloadError(f'{path} is not a usable {what}: {problem}. It was deleted; rerun '
                            'to download it again, and if this repeats the source is serving a '
                            'different file.')


def check_metadrop_npy(path):
    """Deletes `path` and raises DownloadError unless it reads as [N, 20, 784], N % 4 == 0.

    The stored shape of the Dropbox files is not documented (metadrop reshapes after
    loading), so any shape with that many elements per class is accepted."""
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

    _check_npy(path, 'metadrop data file', problem_of)
    log.info('%s: %d classes x %d drawers x %d pixels.', path, found['n'], METADROP_DRAWERS,
             METADROP_PIXELS)


def preprocess_omniglot(dataset_dir, paths, force):
    try:
        from data.omniglot import build_cache
    except ImportError as exc:
        raise DownloadError(
            f'The zips are in {dataset_dir}, but they cannot be preprocessed because '
            f'data.omniglot.build_cache is not available ({exc}). Reinstall the project, or '
            'pass --no_preprocess to only download.') from None
    try:
        from data.datasets import DatasetError  # the readers' user-facing error
    except ImportError:
        DatasetError = ValueError
    try:
        return build_cache(dataset_dir, force=force)
    except (DatasetError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DownloadError(
            f'Preprocessing the Omniglot zips in {dataset_dir} failed: {type(exc).__name__}: '
            f'{exc}. If a zip is damaged, delete it and rerun to download it again.') from None


# miniImageNet (fidelity notes 4.1): metadrop reshapes train.npy to [64, 600, 21168] and
# test.npy to [20, 600, 21168] (84*84*3 HWC values per image).
MIMGNET_PER_CLASS, MIMGNET_PIXELS = 600, 84 * 84 * 3
MIMGNET_NPY_CLASSES = {'train': 64, 'test': 20}
# The Ravi & Larochelle split (64/16/20 classes x 600 images), as published with their code.
RAVI_CSV_BASE_URL = 'https://raw.githubusercontent.com/twitter/meta-learning-lstm/master/data/miniImagenet'
RAVI_CSV_CLASSES = {'train': 64, 'val': 16, 'test': 20}


def check_mimgnet_npy(path, n_classes):
    """Deletes `path` and raises DownloadError unless it reads as [n_classes, 600, 21168].

    As for Omniglot the stored shape is undocumented; any shape the reader (data.mimgnet)
    understands is accepted if it gives n_classes classes of 600 images of 84*84*3 values."""
    from data.mimgnet import npy_geometry
    found = {}

    def problem_of(arr):
        found['dtype'] = arr.dtype
        if arr.dtype.kind not in 'uif':
            return f'it holds {arr.dtype} values, not images'
        geometry = npy_geometry(arr.shape)
        if isinstance(geometry, str) or geometry != (n_classes, MIMGNET_PER_CLASS):
            why = geometry if isinstance(geometry, str) else f'{geometry[0]} classes x {geometry[1]} images'
            return (f'it holds an array of shape {arr.shape} ({why}), which cannot be read as '
                    f'[{n_classes}, {MIMGNET_PER_CLASS}, {MIMGNET_PIXELS}] (classes x images x '
                    '84*84*3 values) as metadrop reads it')
        return None

    _check_npy(path, 'metadrop miniImageNet file', problem_of)
    log.info('%s: %d classes x %d images x %d values (%s).', path, n_classes, MIMGNET_PER_CLASS,
             MIMGNET_PIXELS, found['dtype'])


def check_ravi_csv(path, n_classes):
    """Deletes `path` and raises DownloadError unless it is a Ravi & Larochelle split csv:
    header filename,label and n_classes labels of 600 rows each."""
    import csv
    problem = None
    try:
        with open(path, newline='', encoding='utf-8-sig') as fh:
            rows = list(csv.reader(fh))
        if not rows or [c.strip() for c in rows[0]] != ['filename', 'label']:
            problem = f'its first line is {",".join(rows[0]) if rows else "(empty)"!r}, not "filename,label"'
        else:
            counts = collections.Counter(r[1].strip() for r in rows[1:] if len(r) == 2)
            bad = [r for r in rows[1:] if r and len(r) != 2]
            if bad:
                problem = f'{len(bad)} rows are not "filename,label" (e.g. {",".join(bad[0])!r})'
            elif len(counts) != n_classes or set(counts.values()) != {MIMGNET_PER_CLASS}:
                problem = (f'it lists {len(counts)} classes with {min(counts.values(), default=0)}..'
                           f'{max(counts.values(), default=0)} images each, not {n_classes} x '
                           f'{MIMGNET_PER_CLASS}')
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problem = f'it cannot be read as csv ({exc})'
    if problem is not None:
        os.remove(path)
        raise DownloadError(f'{path} is not a Ravi & Larochelle miniImageNet split file: {problem}. '
                            'It was deleted; rerun to download it again.')


def preprocess_mimgnet_csv(dataset_dir, paths, force, images_dir=None):
    """Builds data.mimgnet's cache_{split}.npy from the images, or explains where they go."""
    from data.datasets import DatasetError
    from data.mimgnet import build_cache
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
    try:
        built = build_cache(dataset_dir, images_dir=images_dir, force=force)
    except (DatasetError, OSError) as exc:
        raise DownloadError(f'Preprocessing miniImageNet in {dataset_dir} failed: {exc}') from None
    return ', '.join(os.path.basename(p) for p in built)


# tieredImageNet (Ren et al. 2018): 351/97/160 classes of 84x84 images. Both archives are only
# published on Google Drive. The drive.usercontent.google.com address with confirm=t is meant
# to skip the page Drive shows instead of files too large for its virus scan; if Drive serves
# a web page anyway, check_tiered_archive says how to fetch the tar by hand.
TIERED_SPLITS = ('train', 'val', 'test')
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
                      check=functools.partial(check_tiered_archive, drive_id=drive_id))


def check_tiered_archive(path, drive_id):
    """Deletes `path` and raises DownloadError unless it is a tar archive. Google Drive answers
    with a web page (quota exceeded, sign-in or confirmation) when it will not serve the file."""
    import tarfile
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


def _unpack_tiered(dataset_dir, archive, names):
    """Extracts `archive` (refusing unsafe members) into a staging folder of dataset_dir and
    moves the files `names` (found anywhere in it) into dataset_dir; returns their paths.
    The staging folder, with anything else the archive held, is removed."""
    import shutil
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


def _tiered_caches(dataset_dir, force):
    from data.datasets import DatasetError
    from data.tiered import build_cache
    try:
        built = build_cache(dataset_dir, force=force)
    except (DatasetError, OSError) as exc:
        raise DownloadError(f'Preprocessing tieredImageNet in {dataset_dir} failed: {exc}') from None
    return ', '.join(os.path.basename(p) for p in built)


def preprocess_tiered(dataset_dir, paths, force):
    """Unpacks {split}_images.npz + {split}_labels.pkl from the tar, then builds the caches."""
    names = [f'{w}_{kind}' for w in TIERED_SPLITS for kind in ('images.npz', 'labels.pkl')]
    if force or not all(os.path.isfile(os.path.join(dataset_dir, n)) for n in names):
        _unpack_tiered(dataset_dir, paths[0], names)
    return _tiered_caches(dataset_dir, force)


def preprocess_tiered_ren(dataset_dir, paths, force):
    """Unpacks Ren et al.'s {split}_images_png.pkl + {split}_labels.pkl, decodes the PNGs into
    the npz layout ({split}_images.npz, BGR as the published npz), then builds the caches."""
    from data.datasets import DatasetError
    from data.tiered import png_pickle_to_npz
    targets = [os.path.join(dataset_dir, f'{w}_{kind}') for w in TIERED_SPLITS
               for kind in ('images.npz', 'labels.pkl')]
    if force or not all(os.path.isfile(p) for p in targets):
        names = [f'{w}_{kind}' for w in TIERED_SPLITS for kind in ('images_png.pkl', 'labels.pkl')]
        _unpack_tiered(dataset_dir, paths[0], names)
        for w in TIERED_SPLITS:
            png = os.path.join(dataset_dir, f'{w}_images_png.pkl')
            try:
                png_pickle_to_npz(png, os.path.join(dataset_dir, f'{w}_images.npz'))
            except DatasetError as exc:
                raise DownloadError(f'Converting {png} failed: {exc}') from None
            os.remove(png)
    return _tiered_caches(dataset_dir, force)


# ---------------------------------------------------------------------------------------------
# Bayesian TAML's datasets (haebeom-lee/l2b): CIFAR-FS, SVHN, CUB, and l2b's miniImageNet files,
# stored in data.perclass's layout ({split}.npy uint8 per-class arrays, + {split}_counts.npy).

CIFAR100_URL = 'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz'   # l2b: http://
CIFAR100_MD5 = 'eb9058c3a382ffc7106e4002c42a8d85'
SVHN_BASE_URL = 'http://ufldl.stanford.edu/housenumbers'
SVHN_MD5 = {'train_32x32.mat': 'e26dedcc434d2e4c54c9b2d4a06d8373',
            'test_32x32.mat': 'eb5a983be6a315427106f1b164d9cef3'}
SVHN_VAL_IDX_URL = 'https://raw.githubusercontent.com/haebeom-lee/l2b/master/data/svhn/val_idx.npy'
# l2b's data/cub/get_data.py used http://www.vision.caltech.edu/visipedia-data/CUB-200-2011/
# CUB_200_2011.tgz, which no longer answers; CaltechDATA serves the same archive (same md5).
CUB_CALTECH_URL = 'https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz'
CUB_CALTECH_MD5 = '97eceeb196236b17998738112f37df78'
CUB_IMAGE_SHAPE = (84, 84, 3)
# l2b's miniImageNet: 64 / 16 / 20 classes x 600 images of 84x84x3 (dtype undocumented).
MIMGNET_L2B_CLASSES = {'train': 64, 'valid': 16, 'test': 20}


def _l2b_npy_problem(path, image_shape, n_classes=None):
    """None if `path` is a usable per-class npy (l2b's object array, a dense [C, n, *shape]
    array, or our ragged [N, *shape] + _counts.npy), else the reason. Reads the header only."""
    from data.datasets import DatasetError
    from data.perclass import counts_path
    from data.storage import read_npy_header
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
    problem = _l2b_npy_problem(path, image_shape, n_classes)
    if problem is not None:
        os.remove(path)
        raise DownloadError(f'{path} is not a usable l2b data file: {problem}. It was deleted; rerun to '
                            'download it again, and if this repeats the source is serving a different '
                            'file.')


def check_l2b_mimgnet_npy(path, split):
    """l2b's miniImageNet file `split`: a pickled object array of MIMGNET_L2B_CLASSES[split]
    classes (converted later), or a numeric array as check_mimgnet_npy accepts."""
    from data.datasets import DatasetError
    from data.storage import read_npy_header
    n_classes = MIMGNET_L2B_CLASSES[split]
    try:
        is_object = read_npy_header(path).dtype.hasobject
    except DatasetError:   # not an npy at all: check_mimgnet_npy says so and deletes it
        is_object = False
    if is_object:
        check_l2b_npy(path, (84, 84, 3), n_classes)
    else:
        check_mimgnet_npy(path, n_classes)


def check_val_idx(path):
    """Deletes `path` and raises DownloadError unless it is an integer array [10, n]."""
    def problem_of(arr):
        if arr.dtype.kind not in 'iu' or arr.ndim != 2 or arr.shape[0] != 10 or arr.shape[1] == 0:
            return f'it holds {arr.dtype} values of shape {arr.shape}, not integer indices [10, n]'
        return None
    _check_npy(path, "l2b's SVHN val_idx.npy", problem_of)


def _preprocessing_failed(what, dataset_dir, exc):
    return DownloadError(f'Preprocessing {what} in {dataset_dir} failed: {exc}')


def preprocess_cifar(dataset_dir, paths, force, jpeg_roundtrip=False, progress=True):
    """Builds CIFAR-FS's train/valid/test.npy from cifar-100-python.tar.gz (data.cifar.build)."""
    from data.cifar import build
    from data.datasets import DatasetError
    try:
        return build(paths[0], dataset_dir, jpeg_roundtrip=jpeg_roundtrip, force=force,
                     progress=progress)
    except (DatasetError, OSError) as exc:
        raise _preprocessing_failed('CIFAR-FS', dataset_dir, exc) from None


def prepare_fc100(dataset_dir):
    """Reuses the CIFAR-100 archive that `--dataset cifar` fetched into <data_root>/cifar/ (hard
    link, else copy), so FC100 does not download the same 161 MB again; the download step then
    checks it (md5, unless --no_verify) as it checks any file already in place."""
    import shutil
    dest = os.path.join(dataset_dir, 'cifar-100-python.tar.gz')
    src = os.path.join(os.path.dirname(os.path.normpath(dataset_dir)), 'cifar', 'cifar-100-python.tar.gz')
    if os.path.exists(dest) or not os.path.isfile(src):
        return
    os.makedirs(dataset_dir, exist_ok=True)
    try:
        os.link(src, dest)
        log.info('Reusing %s (hard link) as %s.', src, dest)
    except OSError:
        tmp = dest + '.copying'
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
            log.info('Reusing %s (copied) as %s.', src, dest)
        except OSError as exc:
            log.warning('Could not reuse %s (%s); downloading the archive instead.', src, exc)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def preprocess_fc100(dataset_dir, paths, force, progress=True):
    """Builds FC100's train/val/test JPEG folders from cifar-100-python.tar.gz and decodes them
    into the cache_*.npy the reader uses (data.fc100.build, build_cache)."""
    from data.datasets import DatasetError
    from data.fc100 import build, build_cache
    try:
        folders = build(paths[0], dataset_dir, force=force, progress=progress)
        return f'{folders}; {build_cache(dataset_dir, force=force, progress=progress)}'
    except (DatasetError, OSError) as exc:
        raise _preprocessing_failed('FC100', dataset_dir, exc) from None


def preprocess_svhn(dataset_dir, paths, force, svhn_val=None, progress=True):
    """Builds SVHN's valid.npy and test.npy from the .mat files (data.svhn.build)."""
    from data.datasets import DatasetError
    from data.svhn import build
    files = {os.path.basename(p): p for p in paths}
    try:
        return build(dataset_dir, files['train_32x32.mat'], files['test_32x32.mat'],
                     files.get('val_idx.npy'), svhn_val=svhn_val or 'fixed', force=force,
                     progress=progress)
    except (DatasetError, OSError) as exc:
        raise _preprocessing_failed('SVHN', dataset_dir, exc) from None


def _npy_files(dataset_dir, stems):
    return [os.path.join(dataset_dir, f'{stem}{ext}') for stem in stems
            for ext in ('.npy', '_counts.npy')]


def prepare_cub_l2b(dataset_dir):
    """Files built from CUB_200_2011.tgz (--source caltech) would be taken for l2b's, as a
    download skips files that exist: remove them first (the tgz stays and rebuilds them)."""
    from data.perclass import INFO_FILE, read_info
    if read_info(dataset_dir).get('build', {}).get('source_name') == 'caltech':
        log.info('Replacing the CUB files built from CUB_200_2011.tgz (--source caltech) by l2b\'s.')
        for path in _npy_files(dataset_dir, ('valid', 'test')) + [os.path.join(dataset_dir, INFO_FILE)]:
            if os.path.exists(path):
                os.remove(path)


def preprocess_cub_l2b(dataset_dir, paths, force, progress=True):
    """Converts l2b's object-array valid.npy / test.npy into uint8 in place (data.perclass)."""
    from data.cub import convert_l2b_files
    from data.datasets import DatasetError
    try:
        return convert_l2b_files(dataset_dir, paths, progress=progress)
    except (DatasetError, OSError) as exc:
        raise _preprocessing_failed('CUB', dataset_dir, exc) from None


def preprocess_cub_caltech(dataset_dir, paths, force, progress=True):
    """Builds CUB's valid/test.npy from CUB_200_2011.tgz as l2b's old script (data.cub)."""
    from data.cub import build_from_caltech
    from data.datasets import DatasetError
    try:
        return build_from_caltech(paths[0], dataset_dir, force=force, progress=progress)
    except (DatasetError, OSError) as exc:
        raise _preprocessing_failed('CUB', dataset_dir, exc) from None


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
    from data.datasets import DatasetError
    from data.perclass import convert_object_npy
    from data.storage import read_npy_header
    done = []
    try:
        for path in paths:
            result = convert_object_npy(path, (84, 84, 3), dense_only=True, progress=progress)
            done.append(result or f'{os.path.basename(path)} ({read_npy_header(path).dtype}, used as is)')
    except (DatasetError, OSError) as exc:
        raise _preprocessing_failed('miniImageNet', dataset_dir, exc) from None
    return '; '.join(done)


# ---------------------------------------------------------------------------------------------
# LEO (deepmind/leo): the authors' pre-computed WRN-28-10 embeddings, linked from its README.
# No checksum is published, so the zip is checked to be readable and to hold the nine files.

LEO_EMBEDDINGS_URL = 'http://storage.googleapis.com/leo-embeddings/embeddings.zip'


def _leo_members(zf):
    """{relative path in data.leo.EXPECTED_FILES: zip member} of `zf`, and the list of
    expected files it lacks. The files may sit under any one top folder (embeddings/ in the
    published zip); member names are only matched, never used as output paths."""
    from data.leo import EXPECTED_FILES
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


def check_leo_zip(path):
    """Deletes `path` and raises DownloadError unless it is a readable zip holding LEO's nine
    embedding pickles ({mini,tiered}ImageNet/{center,multiview}/{train,val,test}_embeddings.pkl)."""
    problem = None
    try:
        with zipfile.ZipFile(path) as zf:
            _, missing = _leo_members(zf)
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


def _unpack_leo(archive, out_dir, wanted, progress):
    """Writes the members of `archive` for the relative paths `wanted` to out_dir/<path>, each
    through a temporary file renamed when complete, with a byte progress bar. The whole
    archive is refused (nothing written) if any member is unsafe (absolute, '..', links)."""
    from tqdm import tqdm
    from data.download import check_members, zip_members
    try:
        with zipfile.ZipFile(archive) as zf:
            check_members(zip_members(zf), archive)
            found, missing = _leo_members(zf)
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


def preprocess_leo(dataset_dir, paths, force, progress=True):
    """Unpacks the nine embedding pickles into <dataset_dir>/embeddings/ (data.leo's default
    data_path) and converts each into the npz beside it, so training never unpickles."""
    from tqdm import tqdm
    from data.datasets import DatasetError
    from data.leo import EXPECTED_FILES, convert, get_data_command, npz_path
    out_dir = os.path.join(dataset_dir, 'embeddings')
    pkls = {rel: os.path.join(out_dir, *rel.split('/')) for rel in EXPECTED_FILES}
    wanted = [rel for rel, p in pkls.items()
              if force or not (os.path.isfile(p) or os.path.isfile(npz_path(p)))]
    if wanted:
        _unpack_leo(paths[0], out_dir, wanted, progress)
    converted = 0
    remedy = (f'Delete {paths[0]} and rerun {get_data_command(os.path.dirname(dataset_dir) or ".")} '
              '--force to download and unpack it again')
    try:
        for rel in tqdm(EXPECTED_FILES, desc='converting to npz', unit='file', disable=not progress):
            if os.path.isfile(pkls[rel]):
                converted += convert(pkls[rel], force=force, remedy=remedy)[1]
    except (DatasetError, OSError) as exc:
        raise _preprocessing_failed('LEO\'s embeddings', dataset_dir, exc) from None
    return (f'{len(EXPECTED_FILES)} embedding files in {out_dir} ({converted} converted to npz now, '
            f'{len(EXPECTED_FILES) - converted} already were); the .pkl files may be deleted')


def _dropbox(name, file_id, check):
    return RemoteFile(name, f'{name}.npy', f'https://www.dropbox.com/s/{file_id}/{name}.npy?dl=1',
                      check=check)


DATASETS = {
    'omniglot': Dataset(
        default_source='official',
        sources={
            'official': Source(
                description='the official Omniglot zips (Lake et al.), decoded by '
                            'data.omniglot into omniglot28.npz',
                preprocess=preprocess_omniglot,
                files=tuple(
                    RemoteFile(name, name + '.zip', f'{OMNIGLOT_BASE_URL}/{name}.zip', md5,
                               extra=extra)
                    for name, md5, extra in (
                        ('images_background', '68d2efa1b9178cc56df9314c21c6e718', None),
                        ('images_evaluation', '6b91aef0f799c5bb55b94e3f2daec811', None),
                        ('images_background_small1', 'e704a628b5459e08445c13499850abc4',
                         'small'),
                        ('images_background_small2', 'b75a71a51d3b13f821f212756fe481fd',
                         'small'),
                    ))),
            'metadrop': Source(
                description="Meta-Dropout's preprocessed train.npy/test.npy (Dropbox; no "
                            'published checksum, so the size and array shape are checked)',
                preprocess=None,
                files=(
                    RemoteFile('train', 'train.npy',
                               'https://www.dropbox.com/s/h13g4b2awd7xdr6/train.npy?dl=1',
                               check=check_metadrop_npy),
                    RemoteFile('test', 'test.npy',
                               'https://www.dropbox.com/s/w313ybz6rls1e83/test.npy?dl=1',
                               check=check_metadrop_npy),
                )),
        }),
    'mimgnet': Dataset(
        default_source='metadrop',
        sources={
            'metadrop': Source(
                description="Meta-Dropout's miniImageNet train.npy/test.npy (Dropbox; no "
                            'published checksum, so the size and array shape are checked)',
                preprocess=None,
                files=(
                    RemoteFile('train', 'train.npy',
                               'https://www.dropbox.com/s/ir54llgjfjv3naa/train.npy?dl=1',
                               check=functools.partial(check_mimgnet_npy,
                                                       n_classes=MIMGNET_NPY_CLASSES['train'])),
                    RemoteFile('test', 'test.npy',
                               'https://www.dropbox.com/s/i40h3wyjlpxeesr/test.npy?dl=1',
                               check=functools.partial(check_mimgnet_npy,
                                                       n_classes=MIMGNET_NPY_CLASSES['test'])),
                )),
            'csv': Source(
                description='the Ravi & Larochelle split csvs (twitter/meta-learning-lstm); the '
                            'ImageNet images cannot be redistributed and must be supplied '
                            '(images/ or --images_dir), then they are cached as cache_*.npy',
                preprocess=preprocess_mimgnet_csv,
                files=tuple(
                    RemoteFile(which, f'{which}.csv', f'{RAVI_CSV_BASE_URL}/{which}.csv',
                               check=functools.partial(check_ravi_csv, n_classes=n))
                    for which, n in RAVI_CSV_CLASSES.items())),
            'l2b': Source(
                description="Bayesian TAML's (l2b's) miniImageNet train.npy/valid.npy/test.npy "
                            '(Dropbox; no published checksum, so the shape is checked; pickled object '
                            'arrays are converted to uint8 through a restricted unpickler); valid.npy is '
                            'used for validation',
                preprocess=preprocess_mimgnet_l2b, options=('progress',), prepare=prepare_mimgnet_l2b,
                files=tuple(_dropbox(name, file_id, functools.partial(check_l2b_mimgnet_npy, split=name))
                            for name, file_id in (('train', 'llfp5p6vymiabzl'), ('valid', 'f1jz6valn6j42jk'),
                                                  ('test', 'o0mg0b83978yu5y')))),
        }),
    'tiered': Dataset(
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
        }),
    'cifar': Dataset(
        default_source='official',
        sources={
            'official': Source(
                description='CIFAR-100 (cifar-100-python.tar.gz, md5 checked) split into CIFAR-FS '
                            "64/16/20 classes x 600 as l2b (train, valid, test.npy, uint8; exact "
                            'pixels, or --jpeg_roundtrip for l2b\'s lossy JPEG round trip)',
                preprocess=preprocess_cifar, options=('jpeg_roundtrip', 'progress'),
                files=(RemoteFile('cifar-100-python', 'cifar-100-python.tar.gz', CIFAR100_URL,
                                  CIFAR100_MD5),)),
        }),
    'fc100': Dataset(
        default_source='official',
        sources={
            'official': Source(
                description='CIFAR-100 (cifar-100-python.tar.gz, md5 checked; reused from <data_root>/cifar/ '
                            "when --dataset cifar fetched it) split by superclass as TADAM's FC100, 60/20/20 "
                            'classes x 600, written as MTL reads it: train/ val/ test/<class>/<nnnn>.jpg, '
                            '84x84 (PIL BICUBIC upsampling, JPEG quality 95), then decoded into cache_*.npy',
                preprocess=preprocess_fc100, options=('progress',), prepare=prepare_fc100,
                files=(RemoteFile('cifar-100-python', 'cifar-100-python.tar.gz', CIFAR100_URL,
                                  CIFAR100_MD5),)),
        }),
    'svhn': Dataset(
        default_source='official',
        sources={
            'official': Source(
                description='SVHN train/test_32x32.mat (md5 checked) + l2b\'s val_idx.npy: valid.npy '
                            '(10 x 600 train images; --svhn_val fixed|random) and test.npy (the test '
                            'set by class); out-of-distribution only',
                preprocess=preprocess_svhn, options=('svhn_val', 'progress'),
                files=(RemoteFile('train_32x32', 'train_32x32.mat', f'{SVHN_BASE_URL}/train_32x32.mat',
                                  SVHN_MD5['train_32x32.mat']),
                       RemoteFile('test_32x32', 'test_32x32.mat', f'{SVHN_BASE_URL}/test_32x32.mat',
                                  SVHN_MD5['test_32x32.mat']),
                       RemoteFile('val_idx', 'val_idx.npy', SVHN_VAL_IDX_URL, check=check_val_idx))),
        }),
    'leo': Dataset(
        default_source='deepmind',
        sources={
            'deepmind': Source(
                description="LEO's pre-computed 640-d WRN-28-10 embeddings (embeddings.zip from "
                            "deepmind/leo's README; no published checksum, so the zip is checked to hold "
                            'the nine {miniImageNet,tieredImageNet}/{center,multiview}/<split>_embeddings.pkl), '
                            'unpacked into embeddings/ and converted to npz',
                preprocess=preprocess_leo, options=('progress',),
                files=(RemoteFile('embeddings', 'embeddings.zip', LEO_EMBEDDINGS_URL, check=check_leo_zip),)),
        }),
    'cub': Dataset(
        default_source='l2b',
        sources={
            'l2b': Source(
                description="l2b's CUB valid.npy/test.npy (Dropbox; no published checksum; pickled "
                            'object arrays, converted to uint8 through a restricted unpickler); '
                            'out-of-distribution only',
                preprocess=preprocess_cub_l2b, options=('progress',), prepare=prepare_cub_l2b,
                files=tuple(_dropbox(name, file_id, functools.partial(
                    check_l2b_npy, image_shape=CUB_IMAGE_SHAPE))
                    for name, file_id in (('valid', '2cv4lfdmaja0wq6'), ('test', '1oxiehzuqvuil60')))),
            'caltech': Source(
                description='CUB_200_2011.tgz (CaltechDATA, md5 checked) built as l2b\'s earlier script: '
                            'classes 2 mod 4 -> valid, 0 mod 4 -> test, 84x84, non-RGB images dropped',
                preprocess=preprocess_cub_caltech, options=('progress',),
                files=(RemoteFile('CUB_200_2011', 'CUB_200_2011.tgz', CUB_CALTECH_URL,
                                  CUB_CALTECH_MD5),)),
        }),
}

EXTRAS = {'small': 'also fetch images_background_small1/2.zip (the "minimal" Omniglot subsets)'}


def _parser():
    sources = sorted({name for d in DATASETS.values() for name in d.sources})
    source_help = '; '.join(
        f'{ds}: ' + '; '.join(f'{name}{" (default)" if name == d.default_source else ""} = '
                              f'{src.description}' for name, src in d.sources.items())
        for ds, d in DATASETS.items())
    addresses = '\n'.join(
        f'  {ds} {name}: ' + ('\n' + ' ' * (len(ds) + len(name) + 5)).join(
            f'{f.name}: {f.url}' for f in src.files)
        for ds, d in DATASETS.items() for name, src in d.sources.items())
    p = argparse.ArgumentParser(
        prog='get_data.py',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description='Download a few-shot dataset into <data_root>/<dataset>/ and preprocess\n'
                    'it. Finished files are verified and never fetched twice; an interrupted\n'
                    'download resumes when the same command is rerun.',
        epilog='mirrors and tests:\n'
               '  --base_url B fetches every file of the chosen source from B/<filename>.\n'
               '  --url_override NAME=URL fetches one file from URL (NAME is the file name\n'
               '  with or without extension, e.g. images_background or train.npy).\n'
               '  The known md5 checksums still apply to files fetched from a mirror; pass\n'
               '  --no_verify to skip them when you deliberately serve different files\n'
               '  (e.g. a small test fixture).\n\n'
               f'default addresses (NAME: URL):\n{addresses}')
    p.add_argument('--dataset', required=True, choices=sorted(DATASETS),
                   help='dataset to fetch')
    p.add_argument('--source', default=None, choices=sources,
                   help=f'where the data comes from. {source_help}')
    p.add_argument('--data_root', default='./data',
                   help='files go to <data_root>/<dataset>/ (default: ./data, as in the '
                        'originals)')
    for extra, text in EXTRAS.items():
        p.add_argument('--' + extra, action='store_true', help=text)
    p.add_argument('--base_url', default=None,
                   help='fetch every file of the source from <base_url>/<filename> '
                        '(a mirror; see below)')
    p.add_argument('--url_override', action='append', default=[], metavar='NAME=URL',
                   help='fetch the file NAME from URL (repeatable); wins over --base_url')
    p.add_argument('--no_verify', action='store_true',
                   help='skip the known md5 checksums (the length announced by the server '
                        'and, for metadrop, the array shape are still checked)')
    p.add_argument('--no_preprocess', action='store_true',
                   help='only download; do not build the preprocessed cache')
    p.add_argument('--force', action='store_true',
                   help='rebuild the preprocessed cache even if it is up to date')
    p.add_argument('--retries', type=int, default=5,
                   help='retries per file after network errors, HTTP 5xx or 429 (default 5)')
    p.add_argument('--no_progress', action='store_true', help='hide the progress bars')
    p.add_argument('--images_dir', default=None,
                   help='mimgnet --source csv: the folder holding the miniImageNet images named '
                        'in the csvs (default <data_root>/mimgnet/images); the cache is built '
                        'from there')
    p.add_argument('--jpeg_roundtrip', action='store_true',
                   help='cifar: save each image as JPEG (PIL default quality) and decode it again, '
                        "reproducing l2b's lossy preprocessing (default: exact pixels)")
    p.add_argument('--svhn_val', default=None, choices=('fixed', 'random'),
                   help="svhn: the validation images. fixed (default): l2b's val_idx.npy (its --ver 1, "
                        'the set its models used); random: 600 per class drawn as l2b\'s --ver 2 '
                        '(np.random.seed(222), per-class shuffles)')
    return p


def _find(files, key):
    for f in files:
        if key in (f.name, f.filename):
            return f
    return None


def main(argv=None):
    """Runs the CLI; returns the process exit code (0 on success)."""
    parser = _parser()
    args = parser.parse_args(argv)
    dataset = DATASETS[args.dataset]
    source_name = args.source or dataset.default_source
    if source_name not in dataset.sources:
        parser.error(f'--source for {args.dataset} must be one of: '
                     + ', '.join(dataset.sources))
    source = dataset.sources[source_name]

    overrides = {}
    for item in args.url_override:
        key, sep, url = item.partition('=')
        f = _find(source.files, key.strip())
        if not sep or not url:
            parser.error(f'--url_override expects NAME=URL, got {item!r}')
        if f is None:
            parser.error(f'--url_override: {args.dataset}/{source_name} has no file {key!r}; '
                         'known: ' + ', '.join(x.name for x in source.files))
        overrides[f.name] = url

    wanted = [f for f in source.files if f.extra is None or getattr(args, f.extra)]
    for extra in EXTRAS:
        if getattr(args, extra) and not any(f.extra == extra for f in source.files):
            log.warning('--%s has no effect for %s/%s.', extra, args.dataset, source_name)
    if args.images_dir and source.preprocess is not preprocess_mimgnet_csv:
        parser.error('--images_dir only applies to --dataset mimgnet --source csv')
    for option, where in (('jpeg_roundtrip', '--dataset cifar'), ('svhn_val', '--dataset svhn')):
        if getattr(args, option) not in (None, False) and option not in source.options:
            parser.error(f'--{option} only applies to {where}')
    for f in source.files:
        if f not in wanted and f.name in overrides:
            log.warning('--url_override for %s is ignored: pass --%s to fetch that file.',
                        f.name, f.extra)

    dataset_dir = os.path.join(args.data_root, args.dataset)
    if args.no_verify:
        log.warning('--no_verify: the known checksums are not checked.')
    try:
        if source.prepare is not None:
            source.prepare(dataset_dir)
        paths = []
        for f in wanted:
            if f.name in overrides:
                url = overrides[f.name]
            elif args.base_url:
                url = args.base_url.rstrip('/') + '/' + f.filename
            else:
                url = f.url
            try:
                path = download(url, os.path.join(dataset_dir, f.filename),
                                md5=None if args.no_verify else f.md5,
                                size=None if args.no_verify else f.size,
                                retries=args.retries, progress=not args.no_progress)
            except DownloadError as exc:
                if exc.kind == 'verify' and url != f.url:
                    raise DownloadError(f'{exc} It came from {url} instead of the original '
                                        f'{f.url}; if that is deliberately a different file, '
                                        'rerun with --no_verify.', kind=exc.kind) from None
                raise
            if f.check is not None:
                f.check(path)
            paths.append(path)
        result = None
        if source.preprocess is not None and not args.no_preprocess:
            extra = {'images_dir': args.images_dir} if args.images_dir else {}
            for option in source.options:
                extra[option] = not args.no_progress if option == 'progress' else getattr(args, option)
            result = source.preprocess(dataset_dir, paths, args.force, **extra)
    except DownloadError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('\ninterrupted: partial downloads are kept as *.part files; rerun the same '
              'command to resume.', file=sys.stderr)
        return 130
    print(f'{args.dataset} ({source_name}) is ready in {dataset_dir}'
          + (f'; preprocessed: {result}' if result else ''))
    return 0


if __name__ == '__main__':
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    sys.exit(main())
