"""FC100 (Fewshot-CIFAR100; Oreshkin et al., TADAM, NeurIPS 2018), as Meta-Transfer Learning reads it.

FC100 is CIFAR-100 split by superclass (coarse label) rather than by fine class, so that no
superclass is shared between splits: 60 meta-train classes from 12 superclasses, 20
meta-validation classes from 4 and 20 meta-test classes from 4, each class holding its 600
CIFAR images (the 500 train and the 100 test images pooled).

The split, by CIFAR-100 coarse-label index (the order of `coarse_label_names` in the
archive's meta pickle, COARSE_LABEL_NAMES below):
    train {1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19}, val {8, 11, 13, 16}, test {0, 7, 12, 14}.
Source: the `class_split` of ServiceNow/TADAM (formerly ElementAI/TADAM),
datasets/create_dataset_cifar100.py (checked at commit da45344471862327921039e3976fc8bf00f95913),
the authors' own script; the same superclass lists are used by MetaOptNet, FEAT and
learn2learn's FC100, and MTL (yaoyao-liu/meta-transfer-learning) evaluates on this split.
The fine classes of each superclass are CIFAR-100's fixed hierarchy (SUPERCLASSES below).

Layout, under <data_root>/fc100/ (what MTL's TensorFlow code reads through its
--metatrain_dir / --metaval_dir / --metatest_dir and --pretrain_folders flags):

    train/<fine class name>/<nnnn>.jpg     60 folders
    val/<fine class name>/<nnnn>.jpg       20 folders
    test/<fine class name>/<nnnn>.jpg      20 folders

MTL decodes each file with tf.image.decode_jpeg and fixes its shape to 84x84x3 (img_size 84
and the 5x5 final pooling of its ResNet-12 are hard-wired), then divides by 255, so every
image must be an 84x84 RGB JPEG. The authors do not describe how they resized their own
FC100 files, so `build` makes a documented choice: each 32x32 CIFAR image is upsampled to
84x84 with PIL BICUBIC and saved as JPEG quality 95 (PIL's baseline encoder, 4:2:0 chroma
subsampling, set explicitly). nnnn counts from 0000 within a class; the images of a class
are its CIFAR train images then its test images, each in file order. The build unpacks
cifar-100-python.tar.gz, reads its pickles with data.cifar.read_cifar100 (restricted
unpickler), checks the archive's coarse labels against COARSE_OF_FINE, writes everything
into <data_root>/fc100/.building/ and only then renames the three split folders into place
and writes build_info.json, so an interrupted build never leaves a partial split under a
final name (and without build_info.json the next get_data run rebuilds).

Reading (`load`): the class folders of each split, sorted by name (MTL lists them with
os.listdir and samples at random, so the order carries no meaning), must number 60 / 20 /
20; any other count is an error naming the folder. Images (.jpg/.jpeg/.png, sorted by file
name) are decoded with PIL as RGB and must be 84x84, as MTL requires. Values are read as
x / 255, as MTL does.

Cache: decoding 60000 JPEGs takes a while, so the first load stores each split, decoded, as
<data_root>/fc100/cache_{train,val,test}.npy in data.perclass's layout (uint8
[n_classes, n_per_class, 84, 84, 3], or [N, 84, 84, 3] + cache_{split}_counts.npy when the
classes differ in size), written atomically, with a sidecar cache_{split}.json holding the
class names, the image counts and a signature of the split's folder: a digest of every
class folder name, image file name, size and mtime. Later loads memory-map the cache when
the signature still matches; adding, removing, renaming or rewriting any image (e.g. a
rebuild) changes it, and the cache of that split is decoded again. MTL ignores these files
(it only reads the split folders). A read-only folder is decoded into memory every time.
"""
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .base import DatasetError, DatasetSpec, Download, FewShotDataset, Source, show_progress
from .cifar import CIFAR100_FILE
from .storage import atomic_write_text, file_signature, writable

log = logging.getLogger(__name__)

NAME = 'fc100'
IMAGE_SIZE = 84
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)
JPEG_QUALITY = 95
JPEG_SUBSAMPLING = '4:2:0'
SPLITS = ('train', 'val', 'test')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
BUILD_INFO = 'build_info.json'
BUILD_VERSION = 1
CACHE_VERSION = 1

# CIFAR-100's 20 superclasses, in coarse-label order (meta's coarse_label_names), each with
# its 5 fine classes (meta's fine_label_names spelling).
SUPERCLASSES = {
    'aquatic_mammals': ('beaver', 'dolphin', 'otter', 'seal', 'whale'),
    'fish': ('aquarium_fish', 'flatfish', 'ray', 'shark', 'trout'),
    'flowers': ('orchid', 'poppy', 'rose', 'sunflower', 'tulip'),
    'food_containers': ('bottle', 'bowl', 'can', 'cup', 'plate'),
    'fruit_and_vegetables': ('apple', 'mushroom', 'orange', 'pear', 'sweet_pepper'),
    'household_electrical_devices': ('clock', 'keyboard', 'lamp', 'telephone', 'television'),
    'household_furniture': ('bed', 'chair', 'couch', 'table', 'wardrobe'),
    'insects': ('bee', 'beetle', 'butterfly', 'caterpillar', 'cockroach'),
    'large_carnivores': ('bear', 'leopard', 'lion', 'tiger', 'wolf'),
    'large_man-made_outdoor_things': ('bridge', 'castle', 'house', 'road', 'skyscraper'),
    'large_natural_outdoor_scenes': ('cloud', 'forest', 'mountain', 'plain', 'sea'),
    'large_omnivores_and_herbivores': ('camel', 'cattle', 'chimpanzee', 'elephant', 'kangaroo'),
    'medium_mammals': ('fox', 'porcupine', 'possum', 'raccoon', 'skunk'),
    'non-insect_invertebrates': ('crab', 'lobster', 'snail', 'spider', 'worm'),
    'people': ('baby', 'boy', 'girl', 'man', 'woman'),
    'reptiles': ('crocodile', 'dinosaur', 'lizard', 'snake', 'turtle'),
    'small_mammals': ('hamster', 'mouse', 'rabbit', 'shrew', 'squirrel'),
    'trees': ('maple_tree', 'oak_tree', 'palm_tree', 'pine_tree', 'willow_tree'),
    'vehicles_1': ('bicycle', 'bus', 'motorcycle', 'pickup_truck', 'train'),
    'vehicles_2': ('lawn_mower', 'rocket', 'streetcar', 'tank', 'tractor'),
}
COARSE_LABEL_NAMES = tuple(SUPERCLASSES)
FINE_LABEL_NAMES = tuple(sorted(n for names in SUPERCLASSES.values() for n in names))  # CIFAR's order
COARSE_OF_FINE = {fine: c for c, names in enumerate(SUPERCLASSES.values()) for fine in names}

# TADAM's class_split (see the module docstring), by coarse-label index.
SPLIT_SUPERCLASSES = {
    'train': (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19),
    'val': (8, 11, 13, 16),
    'test': (0, 7, 12, 14),
}
# The fine classes of each split, sorted by name (the order `load` reads the folders in).
CLASS_NAMES = {split: tuple(sorted(fine for c in ids for fine in SUPERCLASSES[COARSE_LABEL_NAMES[c]]))
               for split, ids in SPLIT_SUPERCLASSES.items()}
SPLIT_SIZES = {'train': 60, 'val': 20, 'test': 20}

assert len(COARSE_LABEL_NAMES) == 20 and len(FINE_LABEL_NAMES) == 100 == len(COARSE_OF_FINE)
assert {k: len(v) for k, v in CLASS_NAMES.items()} == SPLIT_SIZES
assert sorted(c for ids in SPLIT_SUPERCLASSES.values() for c in ids) == list(range(20)), 'FC100 splits overlap'


def get_data_command(data_root):
    return f'python data/get_data.py --dataset fc100 --data_root {data_root}'


# ----------------------------------------------------------------------------- helpers


def _read_json(path: Path):
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _image_name(i, n):
    return f'{i:0{max(4, len(str(n - 1)))}d}.jpg'


# ----------------------------------------------------------------------------- building

def _coarse_labels(folder: Path, fine_names):
    """{fine name: coarse index} from the archive's train and test pickles, checked against
    CIFAR-100's hierarchy (COARSE_OF_FINE) and meta's coarse_label_names."""
    from .cifar import as_text, read_pickle
    meta = read_pickle(folder / 'meta')
    coarse_names = [as_text(n) for n in meta.get('coarse_label_names', [])]
    if coarse_names and tuple(coarse_names) != COARSE_LABEL_NAMES:
        raise DatasetError(f'{folder / "meta"} lists the coarse_label_names {coarse_names[:4]}..., not '
                           f'CIFAR-100\'s 20 superclasses in their usual order; the FC100 split is defined '
                           f'by those indices, so this archive cannot be used')
    seen = {}
    for batch in ('train', 'test'):
        d = read_pickle(folder / batch)
        if 'coarse_labels' not in d:
            raise DatasetError(f'{folder / batch} has no coarse_labels entry; FC100 needs CIFAR-100\'s '
                               f'superclass labels (is this the CIFAR-100 archive?)')
        fine = np.asarray(d['fine_labels'])
        coarse = np.asarray(d['coarse_labels'])
        if coarse.shape != fine.shape:
            raise DatasetError(f'{folder / batch}: {coarse.shape[0]} coarse_labels for {fine.shape[0]} images')
        for f, c in set(zip(fine.tolist(), coarse.tolist())):
            seen.setdefault(fine_names[f], set()).add(int(c))
    for name, cs in sorted(seen.items()):
        if cs != {COARSE_OF_FINE[name]}:
            raise DatasetError(f'the archive puts class {name} in superclass(es) {sorted(cs)}; CIFAR-100 '
                               f'puts it in {COARSE_OF_FINE[name]} ({COARSE_LABEL_NAMES[COARSE_OF_FINE[name]]}). '
                               f'It is not the CIFAR-100 archive: delete it and download it again')
    return {name: next(iter(cs)) for name, cs in seen.items()}


def upsample(image):
    """One 32x32x3 uint8 CIFAR image as the 84x84 PIL image `build` saves (BICUBIC)."""
    from PIL import Image
    return Image.fromarray(np.asarray(image, dtype=np.uint8), 'RGB').resize(
        (IMAGE_SIZE, IMAGE_SIZE), resample=Image.BICUBIC)


def _save_jpeg(image, path):
    upsample(image).save(path, format='JPEG', quality=JPEG_QUALITY, subsampling=JPEG_SUBSAMPLING)


def _build_options():
    return {'version': BUILD_VERSION, 'image_size': IMAGE_SIZE, 'resample': 'PIL BICUBIC',
            'jpeg_quality': JPEG_QUALITY, 'jpeg_subsampling': JPEG_SUBSAMPLING}


def _is_built(dataset_dir: Path, build):
    """True when build_info.json records `build` and the folders hold what it lists."""
    info = _read_json(dataset_dir / BUILD_INFO)
    if not info or info.get('build') != build:
        return False
    for split in SPLITS:
        entry = info.get('splits', {}).get(split, {})
        split_dir = dataset_dir / split
        try:
            for name, count in zip(entry['classes'], entry['counts']):
                with os.scandir(split_dir / name) as it:
                    if sum(1 for e in it if e.is_file()) != count:
                        return False
            if sorted(p.name for p in split_dir.iterdir() if p.is_dir()) != sorted(entry['classes']):
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


def build(archive, dataset_dir, force=False, progress=True):
    """Writes <dataset_dir>/{train,val,test}/<fine class>/<nnnn>.jpg (+ build_info.json) from
    cifar-100-python.tar.gz (see the module docstring). Skipped when build_info.json records
    the same archive and options and the folders are intact, unless `force`. Returns a summary."""
    from .cifar import find_archive_dir, read_cifar100
    from .download import safe_extract
    dataset_dir = Path(dataset_dir)
    build_opts = dict(_build_options(), source=file_signature(archive))
    if not force and _is_built(dataset_dir, build_opts):
        return 'train/ val/ test/ JPEG folders (up to date)'
    dataset_dir.mkdir(parents=True, exist_ok=True)
    staging = dataset_dir / '.unpacking'
    shutil.rmtree(staging, ignore_errors=True)
    try:
        safe_extract(archive, staging)
        folder = find_archive_dir(staging)
        names, per_class = read_cifar100(folder)
        _coarse_labels(folder, names)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    missing = sorted(set(FINE_LABEL_NAMES) - set(per_class))
    if missing:
        raise DatasetError(f'{archive} has no CIFAR-100 class named {", ".join(missing)}; it is not the '
                           f'CIFAR-100 archive: delete it and download it again')
    empty = sorted(n for n in FINE_LABEL_NAMES if not len(per_class[n]))
    if empty:
        raise DatasetError(f'{archive} has no images of class(es) {", ".join(empty)}; it is not the '
                           f'CIFAR-100 archive: delete it and download it again')

    building = dataset_dir / '.building'
    replaced = dataset_dir / '.replaced'
    shutil.rmtree(building, ignore_errors=True)
    info = {'dataset': NAME, 'build': build_opts, 'split_superclasses': SPLIT_SUPERCLASSES, 'splits': {}}
    total = sum(len(per_class[n]) for split in SPLITS for n in CLASS_NAMES[split])
    try:
        with tqdm(total=total, desc='FC100: writing 84x84 JPEGs', unit='img', disable=not progress) as bar:
            for split in SPLITS:
                for name in CLASS_NAMES[split]:
                    class_dir = building / split / name
                    class_dir.mkdir(parents=True)
                    images = per_class[name]
                    for i, im in enumerate(images):
                        _save_jpeg(im, class_dir / _image_name(i, len(images)))
                    bar.update(len(images))
                info['splits'][split] = {'classes': list(CLASS_NAMES[split]),
                                         'counts': [len(per_class[n]) for n in CLASS_NAMES[split]]}
        # Swap the complete new folders in. build_info.json goes first and comes back last, so
        # an interruption in between leaves a tree that the next run rebuilds.
        (dataset_dir / BUILD_INFO).unlink(missing_ok=True)
        shutil.rmtree(replaced, ignore_errors=True)
        replaced.mkdir()
        for split in SPLITS:
            if (dataset_dir / split).exists():
                os.replace(dataset_dir / split, replaced / split)
            os.replace(building / split, dataset_dir / split)
        atomic_write_text(dataset_dir / BUILD_INFO, json.dumps(info, indent=1))
    finally:
        shutil.rmtree(building, ignore_errors=True)
        shutil.rmtree(replaced, ignore_errors=True)
    per = sorted({c for s in info['splits'].values() for c in s['counts']})
    return (f'train/ val/ test/: 60/20/20 class folders x {per[0] if len(per) == 1 else f"{per[0]}..{per[-1]}"} '
            f'images, {IMAGE_SIZE}x{IMAGE_SIZE} JPEG (CIFAR 32x32 upsampled with PIL BICUBIC, quality {JPEG_QUALITY})')


# ----------------------------------------------------------------------------- reading

def _list_split(split_dir: Path, split, command):
    """[(class name, [image paths sorted by name])] of a split folder, and its signature."""
    try:
        class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith('.'))
    except OSError as e:
        raise DatasetError(f'cannot read {split_dir} ({e})') from None
    if len(class_dirs) != SPLIT_SIZES[split]:
        raise DatasetError(
            f'{split_dir} has {len(class_dirs)} class folders; FC100\'s {split} split has '
            f'{SPLIT_SIZES[split]} (60/20/20 classes from 12/4/4 CIFAR-100 superclasses). Rebuild it with: '
            f'{command} --force')
    digest = hashlib.sha256()
    classes = []
    for d in class_dirs:
        with os.scandir(d) as it:
            entries = sorted((e for e in it if e.is_file() and not e.name.startswith('.')
                              and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS),
                             key=lambda e: e.name)
        if not entries:
            raise DatasetError(f'class folder {d} holds no images (.jpg/.jpeg/.png); remove it or rebuild '
                               f'the data with: {command} --force')
        for e in entries:
            st = e.stat()
            digest.update(f'{d.name}/{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n'.encode('utf-8', 'surrogateescape'))
        classes.append((d.name, [Path(e.path) for e in entries]))
    return classes, digest.hexdigest()


def _decode(path: Path, command):
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
            size = im.size
            arr = np.asarray(im.convert('RGB'), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(f'cannot decode image {path} ({type(e).__name__}: {e}); the file is damaged: '
                           f'replace or delete it') from None
    if size != (IMAGE_SIZE, IMAGE_SIZE):
        raise DatasetError(f'{path} is {size[0]}x{size[1]}; FC100 images must be {IMAGE_SIZE}x{IMAGE_SIZE} '
                           f'(MTL fixes the decoded shape to 84x84x3). Resize it, or rebuild the data with: '
                           f'{command} --force')
    return arr


def _cache_paths(directory: Path, split):
    return directory / f'cache_{split}.npy', directory / f'cache_{split}.json'


def _open_cache(directory: Path, split, classes, signature, command):
    """The cached ClassSplit of `split` if its sidecar matches the folder's signature, else None."""
    from .perclass import read_split
    npy, meta_path = _cache_paths(directory, split)
    meta = _read_json(meta_path)
    names = [name for name, _ in classes]
    counts = [len(files) for _, files in classes]
    if (not meta or meta.get('version') != CACHE_VERSION or meta.get('signature') != signature
            or meta.get('classes') != names or meta.get('counts') != counts or not npy.is_file()):
        return None
    try:
        cached = read_split(directory, npy.stem, NAME, IMAGE_SHAPE, command, names=names, field=split)
    except DatasetError as e:
        log.warning('Ignoring the FC100 cache %s (%s); decoding the images again.', npy, e)
        return None
    if cached.n_classes != len(counts) or list(cached.counts) != counts:
        return None
    return cached


def _decode_split(directory: Path, split, classes, signature, write, command, progress=True):
    """Decodes a split's images; write=True stores them as the cache and returns the
    memory-mapped ClassSplit, else a ClassSplit in memory."""
    from .episodes import ClassSplit
    from .perclass import write_split
    counts = [len(files) for _, files in classes]
    names = [name for name, _ in classes]
    with tqdm(total=sum(counts), desc=f'decoding FC100 {split}', unit='img', disable=not progress) as bar:
        def get_class(c):
            out = np.empty((counts[c],) + IMAGE_SHAPE, dtype=np.uint8)
            for i, p in enumerate(classes[c][1]):
                out[i] = _decode(p, command)
            bar.update(counts[c])
            return out
        if not write:
            return ClassSplit([get_class(c) for c in range(len(classes))], names=names, name=split,
                              dataset=NAME)
        npy, meta_path = _cache_paths(directory, split)
        meta_path.unlink(missing_ok=True)       # no moment where an old sidecar vouches for a new array
        write_split(directory, npy.stem, counts, IMAGE_SHAPE, get_class)
    atomic_write_text(meta_path, json.dumps({'version': CACHE_VERSION, 'split': split, 'classes': names,
                                              'counts': counts, 'signature': signature}))
    cached = _open_cache(directory, split, classes, signature, command)
    if cached is None:  # pragma: no cover - just written
        raise DatasetError(f'the cache {npy} could not be read back after writing it; delete it and retry')
    return cached


def _check_layout(directory: Path, data_root):
    command = get_data_command(data_root)
    present = [s for s in SPLITS if (directory / s).is_dir()]
    if not present:
        raise DatasetError(f'no FC100 data in {directory} (expected the class folders {directory}/train/, '
                           f'val/ and test/). Get it with: {command}')
    missing = [s for s in SPLITS if s not in present]
    if missing:
        raise DatasetError(f'{", ".join(str(directory / s) for s in missing)} missing: FC100 needs train/, val/ '
                           f'and test/ class folders in {directory}. Rebuild them with: {command} --force')
    return command


def _splits(directory: Path, data_root, progress=True, write=None):
    """{split: (ClassSplit, how it was read)}."""
    command = _check_layout(directory, data_root)
    listings = {s: _list_split(directory / s, s, command) for s in SPLITS}
    owner = {}
    for s, (classes, _) in listings.items():
        for name, _ in classes:
            other = owner.setdefault(name, s)
            if other != s:
                raise DatasetError(f'class {name} is in both {directory / other} and {directory / s}; '
                                   f'the FC100 splits must be disjoint. Rebuild them with: {command} --force')
    if write is None:
        write = writable(directory)
        if not write:
            log.warning('%s is not writable: decoding FC100 into memory without writing a cache.', directory)
    out = {}
    for s, (classes, signature) in listings.items():
        cached = _open_cache(directory, s, classes, signature, command)
        if cached is not None:
            out[s] = (cached, f'cache_{s}.npy')
        else:
            out[s] = (_decode_split(directory, s, classes, signature, write, command, progress),
                      f'cache_{s}.npy (built now)' if write else f'{s}/ (decoded, no cache)')
    return out


def build_cache(dataset_dir, force=False, progress=True):
    """Decodes the split folders of `dataset_dir` into cache_{split}.npy (+ .json) unless the
    caches are up to date (or always, with `force`). Returns a summary."""
    dataset_dir = Path(dataset_dir)
    if force:
        for s in SPLITS:
            _cache_paths(dataset_dir, s)[1].unlink(missing_ok=True)
    if not writable(dataset_dir):
        raise DatasetError(f'cannot write the FC100 cache into {dataset_dir}: the folder is not writable')
    splits = _splits(dataset_dir, dataset_dir.parent, progress=progress, write=True)
    built = [s for s, (_, how) in splits.items() if 'built now' in how]
    return (f'cache_{{{",".join(built)}}}.npy decoded' if built else 'cache_*.npy (up to date)')


def load(data_root='./data') -> FewShotDataset:
    """Reads FC100 from <data_root>/fc100/{train,val,test}/<class>/<image> (see the module docstring)."""
    from .perclass import split_summary
    directory = Path(data_root) / NAME
    splits = _splits(directory, data_root, progress=show_progress())
    tr, va, te = (splits[s][0] for s in SPLITS)
    standard = all(tuple(sorted(splits[s][0].class_name(c) for c in range(splits[s][0].n_classes)))
                   == CLASS_NAMES[s] for s in SPLITS)
    desc = (f'fc100 (FC100, {"TADAM superclass split" if standard else "class folders other than the TADAM split"}, '
            f'84x84x3 JPEG folders, uint8 read as x/255, {"; ".join(how for _, how in splits.values())}): '
            f'train {split_summary(tr)} / val {split_summary(va)} / test {split_summary(te)}')
    return FewShotDataset(NAME, tr, va, te, IMAGE_SHAPE, False, desc)


# ----------------------------------------------------------------------------- declaration

def prepare(dataset_dir):
    """Reuses the CIFAR-100 archive that `--dataset cifar` fetched into <data_root>/cifar/ (hard
    link, else copy), so FC100 does not download the same 161 MB again; the download step then
    checks it (md5, unless --no_verify) as it checks any file already in place."""
    dest = os.path.join(dataset_dir, CIFAR100_FILE.filename)
    src = os.path.join(os.path.dirname(os.path.normpath(dataset_dir)), 'cifar', CIFAR100_FILE.filename)
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


def preprocess(dataset_dir, paths, force, progress=True):
    """get_data's step: builds FC100's train/val/test JPEG folders from cifar-100-python.tar.gz
    and decodes them into the cache_*.npy the reader uses."""
    from .download import preprocessing
    with preprocessing('FC100', dataset_dir):
        folders = build(paths[0], dataset_dir, force=force, progress=progress)
        return f'{folders}; {build_cache(dataset_dir, force=force, progress=progress)}'


DOWNLOAD = Download(
    name='fc100',
    default_source='official',
    sources={
        'official': Source(
            description='CIFAR-100 (cifar-100-python.tar.gz, md5 checked; reused from <data_root>/cifar/ '
                        "when --dataset cifar fetched it) split by superclass as TADAM's FC100, 60/20/20 "
                        'classes x 600, written as MTL reads it: train/ val/ test/<class>/<nnnn>.jpg, '
                        '84x84 (PIL BICUBIC upsampling, JPEG quality 95), then decoded into cache_*.npy',
            preprocess=preprocess, options=('progress',), prepare=prepare,
            files=(CIFAR100_FILE,)),
    })

SPECS = (DatasetSpec(
    name='fc100', loader=load, kind='images',
    description="FC100 (Oreshkin et al.) as MTL reads it: CIFAR-100 split by superclass, 84x84 JPEG folders",
    download=DOWNLOAD),)
