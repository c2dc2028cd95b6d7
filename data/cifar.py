"""CIFAR-FS (Bertinetto et al. 2019), Bayesian TAML's in-distribution dataset for CIFAR / SVHN.

CIFAR-FS is CIFAR-100 with its train and test images pooled (600 per fine class) and the
100 fine classes split 64 / 16 / 20 into meta-train / meta-validation / meta-test by name.
Files, under <data_root>/cifar/ (data.perclass layout): train.npy, valid.npy, test.npy,
uint8 [n_classes, 600, 32, 32, 3], read as x / 255; l2b's own float64 files of the same
names (dense 5-D arrays) are read as stored.

`python data/get_data.py --dataset cifar` downloads cifar-100-python.tar.gz (md5 checked),
unpacks it safely, reads its pickles (meta, train, test) with the restricted unpickler of
data.tiered (they hold only dicts, lists, bytes and numpy arrays) and writes the three
splits with `build`. Each image is a row of 3072 bytes: the red, green and blue 32x32
planes, row-major; it becomes a 32x32x3 HWC image. Classes are in the order of
CLASS_NAMES (l2b's lists); the images of a class are its CIFAR train images, then its
test images, each in file order.

Differences from l2b's data/cifar/get_data.py (adapted from Devos's maml-cifar-fs):
  * l2b writes every image to a JPEG file (PIL's default quality, 75) and reads it back, so
    its images carry JPEG artifacts. We keep the pixels exactly; `jpeg_roundtrip=True`
    (get_data.py --jpeg_roundtrip) encodes and decodes each image the same way in memory,
    reproducing the original's lossy values.
  * l2b's extraction loop pairs the i-th file name with the i-th image and label, but when a
    JPEG of that name already exists (a rerun after an interrupted run, or a second image of
    the same file name in a class folder) it `continue`s without advancing i, so every later
    image of that batch is written under another image's name and class. We take images,
    labels and classes by position, with no such index bug.
  * l2b globs each class folder, so the image order within a class depends on the file
    system; ours is fixed (see above). Episodes draw images at random either way.
"""
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .base import DatasetError, DatasetSpec, Download, FewShotDataset, RemoteFile, Source
from .perclass import (SPLIT_FILES, is_up_to_date, load_pickle, read_split, split_summary,
                       storage_note, write_classes, write_info)
from .storage import file_signature

NAME = 'cifar'
IMAGE_SHAPE = (32, 32, 3)
PER_CLASS = 600

# Bertinetto et al.'s CIFAR-FS split, hard-coded as (and in the order of) l2b's
# data/cifar/get_data.py. 'train' in the first list is the CIFAR-100 class "train" (a
# vehicle), not a split name.
CLASS_NAMES = {
    'train': [
        'train', 'skyscraper', 'turtle', 'raccoon', 'spider', 'orange', 'castle', 'keyboard',
        'clock', 'pear', 'girl', 'seal', 'elephant', 'apple', 'aquarium_fish', 'bus',
        'mushroom', 'possum', 'squirrel', 'chair', 'tank', 'plate', 'wolf', 'road', 'mouse',
        'boy', 'shrew', 'couch', 'sunflower', 'tiger', 'caterpillar', 'lion', 'streetcar',
        'lawn_mower', 'tulip', 'forest', 'dolphin', 'cockroach', 'bear', 'porcupine', 'bee',
        'hamster', 'lobster', 'bowl', 'can', 'bottle', 'trout', 'snake', 'bridge',
        'pine_tree', 'skunk', 'lizard', 'cup', 'kangaroo', 'oak_tree', 'dinosaur', 'rabbit',
        'orchid', 'willow_tree', 'ray', 'palm_tree', 'mountain', 'house', 'cloud'],
    'valid': [
        'otter', 'motorcycle', 'television', 'lamp', 'crocodile', 'shark', 'butterfly', 'sea',
        'beaver', 'beetle', 'tractor', 'flatfish', 'maple_tree', 'camel', 'crab', 'cattle'],
    'test': [
        'baby', 'bed', 'bicycle', 'chimpanzee', 'fox', 'leopard', 'man', 'pickup_truck',
        'plain', 'poppy', 'rocket', 'rose', 'snail', 'sweet_pepper', 'table', 'telephone',
        'wardrobe', 'whale', 'woman', 'worm'],
}
SPLIT_SIZES = {'train': 64, 'valid': 16, 'test': 20}
assert {k: len(v) for k, v in CLASS_NAMES.items()} == SPLIT_SIZES
assert len({n for names in CLASS_NAMES.values() for n in names}) == 100, 'CIFAR-FS splits overlap'

ARCHIVE = 'cifar-100-python.tar.gz'
ARCHIVE_DIR = 'cifar-100-python'


def get_data_command(data_root):
    return f'python data/get_data.py --dataset cifar --data_root {data_root}'


def load(data_root='./data') -> FewShotDataset:
    """Reads CIFAR-FS from <data_root>/cifar/{train,valid,test}.npy (see the module docstring)."""
    directory = Path(data_root) / NAME
    command = get_data_command(data_root)
    if not any((directory / f'{stem}.npy').is_file() for stem in SPLIT_FILES.values()):
        raise DatasetError(f'no CIFAR-FS data in {directory} (expected train.npy, valid.npy, test.npy). '
                           f'Get it with: {command}')
    splits = {field: read_split(directory, stem, NAME, IMAGE_SHAPE, command, names=CLASS_NAMES[stem],
                                field=field, get_data_converts=False)
              for field, stem in SPLIT_FILES.items()}
    tr, va, te = splits['train'], splits['val'], splits['test']
    standard = (tr.n_classes, va.n_classes, te.n_classes) == (64, 16, 20)
    desc = (f'cifar (CIFAR-FS{"" if standard else ", not the standard 64/16/20 classes"}, 32x32x3, '
            f'{storage_note(tr, va, te)}, memory-mapped): train {split_summary(tr)} / '
            f'val {split_summary(va)} / test {split_summary(te)}')
    return FewShotDataset(NAME, tr, va, te, IMAGE_SHAPE, False, desc)


# ----------------------------------------------------------------------------- building

def as_text(x):
    return x.decode('latin1') if isinstance(x, bytes) else x


def read_pickle(path):
    """A CIFAR python pickle as a dict with str keys (restricted unpickling)."""
    obj = load_pickle(path)
    if not isinstance(obj, dict):
        raise DatasetError(f'{path} holds a {type(obj).__name__}, not the dict a CIFAR-100 pickle holds')
    return {as_text(k): v for k, v in obj.items()}


def find_archive_dir(root: Path):
    for d in [root / ARCHIVE_DIR] + sorted(root.rglob(ARCHIVE_DIR)):
        if all((d / n).is_file() for n in ('meta', 'train', 'test')):
            return d
    raise DatasetError(f'the archive does not hold {ARCHIVE_DIR}/meta, train and test; it is not '
                       f'{ARCHIVE}: delete it and download it again')


def read_cifar100(folder):
    """(fine class names [100], {name: uint8 [n, 32, 32, 3]}) from an unpacked cifar-100-python/,
    each class holding its train images then its test images, in file order."""
    folder = Path(folder)
    meta = read_pickle(folder / 'meta')
    names = [as_text(n) for n in meta.get('fine_label_names', [])]
    if len(names) != 100 or len(set(names)) != 100:
        raise DatasetError(f'{folder / "meta"} must list 100 distinct fine_label_names, got {len(names)}')
    per_class = {n: [] for n in names}
    for batch in ('train', 'test'):
        d = read_pickle(folder / batch)
        if 'data' not in d or 'fine_labels' not in d:
            raise DatasetError(f'{folder / batch} has no data / fine_labels entries (keys: '
                               f'{", ".join(sorted(map(str, d)))})')
        data = np.asarray(d['data'])
        labels = np.asarray(d['fine_labels'])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
            raise DatasetError(f'{folder / batch}: data must be uint8 [N, 3072] with N fine_labels; got '
                               f'{data.dtype} {data.shape} and {labels.shape} labels')
        if labels.size and (labels.min() < 0 or labels.max() >= 100):
            raise DatasetError(f'{folder / batch}: fine_labels outside 0..99')
        # Each row: the R, G and B planes of 32x32 pixels, row-major -> HWC.
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        for c, name in enumerate(names):
            per_class[name].append(images[labels == c])
    return names, {n: np.ascontiguousarray(np.concatenate(parts)) for n, parts in per_class.items()}


def jpeg_roundtrip_images(images):
    """Each HWC uint8 image saved as JPEG with PIL's defaults and decoded again, as l2b did."""
    import io
    from PIL import Image
    out = np.empty_like(images)
    for i, im in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(im, 'RGB').save(buf, format='JPEG')
        buf.seek(0)
        with Image.open(buf) as decoded:
            out[i] = np.asarray(decoded.convert('RGB'))
    return out


def build(archive, dataset_dir, jpeg_roundtrip=False, force=False, progress=True):
    """Writes train/valid/test.npy (+ info.json) into dataset_dir from cifar-100-python.tar.gz.
    Skipped when info.json records the same archive and options, unless `force`. Returns a summary."""
    import shutil
    from .download import safe_extract
    dataset_dir = Path(dataset_dir)
    build_info = {'source': file_signature(archive), 'jpeg_roundtrip': bool(jpeg_roundtrip)}
    stems = list(SPLIT_SIZES)
    if not force and is_up_to_date(dataset_dir, stems, build_info):
        return 'train.npy, valid.npy, test.npy (up to date)'
    staging = dataset_dir / '.unpacking'
    shutil.rmtree(staging, ignore_errors=True)
    try:
        safe_extract(archive, staging)
        names, per_class = read_cifar100(find_archive_dir(staging))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    missing = sorted(n for split in CLASS_NAMES.values() for n in split if n not in per_class)
    if missing:
        raise DatasetError(f'{archive} has no CIFAR-100 class named {", ".join(missing)}; it is not the '
                           f'CIFAR-100 archive: delete it and download it again')
    info = {'dataset': NAME, 'build': build_info, 'splits': {}}
    for stem in stems:
        classes = []
        for n in tqdm(CLASS_NAMES[stem], desc=f'CIFAR-FS {stem}' + (' (JPEG round trip)' if jpeg_roundtrip else ''),
                      unit='class', disable=not progress):
            classes.append(jpeg_roundtrip_images(per_class[n]) if jpeg_roundtrip else per_class[n])
        write_classes(dataset_dir, stem, classes)
        info['splits'][stem] = {'classes': CLASS_NAMES[stem], 'counts': [len(a) for a in classes]}
    write_info(dataset_dir, info)
    counts = {stem: info['splits'][stem]['counts'] for stem in stems}
    per = sorted({c for cs in counts.values() for c in cs})
    return (f'train.npy, valid.npy, test.npy: {"/".join(str(len(counts[s])) for s in stems)} classes x '
            f'{"..".join(map(str, (per[0], per[-1]))) if len(per) > 1 else per[0]} images, uint8'
            + (', JPEG round trip as l2b' if jpeg_roundtrip else ', pixels exact'))


# ----------------------------------------------------------------------------- declaration

CIFAR100_URL = 'https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz'   # l2b: http://
CIFAR100_MD5 = 'eb9058c3a382ffc7106e4002c42a8d85'
# CIFAR-FS and FC100 (data/fc100.py) are both cut from this archive.
CIFAR100_FILE = RemoteFile('cifar-100-python', ARCHIVE, CIFAR100_URL, CIFAR100_MD5)


def preprocess(dataset_dir, paths, force, jpeg_roundtrip=False, progress=True):
    """get_data's step: builds CIFAR-FS's train/valid/test.npy from cifar-100-python.tar.gz."""
    from .download import preprocessing
    with preprocessing('CIFAR-FS', dataset_dir):
        return build(paths[0], dataset_dir, jpeg_roundtrip=jpeg_roundtrip, force=force,
                     progress=progress)


DOWNLOAD = Download(
    name='cifar',
    default_source='official',
    sources={
        'official': Source(
            description='CIFAR-100 (cifar-100-python.tar.gz, md5 checked) split into CIFAR-FS '
                        "64/16/20 classes x 600 as l2b (train, valid, test.npy, uint8; exact "
                        'pixels, or --jpeg_roundtrip for l2b\'s lossy JPEG round trip)',
            preprocess=preprocess, options=('jpeg_roundtrip', 'progress'),
            files=(CIFAR100_FILE,)),
    })

SPECS = (DatasetSpec(
    name='cifar', loader=load, kind='images',
    description="CIFAR-FS (Bertinetto et al.) 64/16/20 classes of 32x32x3, l2b's files built from CIFAR-100",
    download=DOWNLOAD),)
