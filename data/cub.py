"""CUB-200-2011 birds (Wah et al. 2011), Bayesian TAML's out-of-distribution dataset for miniImageNet.

Out-of-distribution only: there is no training split (FewShotDataset.train is None); use it
as --ood_dataset cub, meta-trained on miniImageNet. Files, under <data_root>/cub/
(data.perclass layout), 84x84x3 uint8 read as x / 255:

  valid.npy + valid_counts.npy   50 classes, all their images (ragged, ~41..60 per class)
  test.npy  + test_counts.npy    50 other classes

`python data/get_data.py --dataset cub` (source l2b, the default) downloads l2b's current
files from Dropbox (valid.npy, test.npy: per-class lists of [n_c, 84, 84, 3] float arrays in
[0, 1], stored by np.save as pickled object arrays). They are never unpickled with
allow_pickle: `data.perclass.convert_object_npy` reads them through a restricted unpickler
(numpy arrays only) and rewrites them in place as uint8, round(x * 255), refusing values
outside [0, 1]. How l2b built them is not published; class names are then unknown.

`--source caltech` builds the same kind of files from the official CUB_200_2011.tgz as l2b's
earlier data/cub/get_data.py did (its address, www.vision.caltech.edu/visipedia-data/
CUB-200-2011/CUB_200_2011.tgz, no longer answers; the archive, md5 unchanged, is now at
data.caltech.edu). From CUB_200_2011/images/<NNN>.<name>/*.jpg: valid = the 50 classes with
id = 2 mod 4 (002, 006, ..., 198), test = the 50 with id = 0 mod 4 (004, ..., 200); all images
of each class, files sorted by name (l2b listed them in glob order, in its val_cls.pkl /
test_cls.pkl); the whole image (no bounding-box crop) resized to 84x84 by PIL's resize with
its default filter (l2b passed none either; which filter that is depends on the Pillow
version: BICUBIC since 7.0, NEAREST before), and images that do not come out as 84x84x3 (e.g.
greyscale) dropped, as l2b did. Class names are the folder names.
"""
import logging
import os
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .base import DatasetError, DatasetSpec, Download, FewShotDataset, RemoteFile, Source, dropbox_npy
from .perclass import (convert_object_npy, is_up_to_date, read_info, read_split, split_summary,
                       storage_note, write_classes, write_info)
from .storage import file_signature, read_npy_header

NAME = 'cub'
IMAGE_SIZE = 84
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)
STEMS = ('valid', 'test')
SOURCES = ('l2b', 'caltech')
# class id -> split, as l2b's old script (val_cls.pkl / test_cls.pkl).
SPLIT_OF_ID_MOD_4 = {2: 'valid', 0: 'test'}
CLASS_FOLDER = re.compile(r'^(\d{3})\.(.+)$')


def get_data_command(data_root, source=None):
    extra = f' --source {source}' if source else ''
    return f'python data/get_data.py --dataset cub{extra} --data_root {data_root}'


def load(data_root='./data') -> FewShotDataset:
    """Reads CUB's valid/test splits from <data_root>/cub/ (see the module docstring)."""
    directory = Path(data_root) / NAME
    command = get_data_command(data_root)
    if not any((directory / f'{stem}.npy').is_file() for stem in STEMS):
        raise DatasetError(f'no CUB data in {directory} (expected valid.npy, test.npy and their '
                           f'_counts.npy). Get it with: {command} (l2b\'s Dropbox files) or '
                           f'{get_data_command(data_root, "caltech")} (built from CUB_200_2011.tgz)')
    va = read_split(directory, 'valid', NAME, IMAGE_SHAPE, command, field='val')
    te = read_split(directory, 'test', NAME, IMAGE_SHAPE, command, field='test')
    origin = {'caltech': 'built from CUB_200_2011.tgz', 'l2b': "l2b's Dropbox files"}.get(
        _built_from(directory), 'origin unrecorded')
    desc = (f'cub (out-of-distribution only, no train split; {origin}; 84x84x3, {storage_note(va, te)}, '
            f'memory-mapped): val {split_summary(va)} / test {split_summary(te)}')
    return FewShotDataset(NAME, None, va, te, IMAGE_SHAPE, False, desc)


def _built_from(directory):
    return read_info(directory).get('build', {}).get('source_name')


# ----------------------------------------------------------------------------- building

def convert_l2b_files(dataset_dir, paths, progress=True):
    """Converts l2b's object-array valid.npy / test.npy in place (see the module docstring).
    Files already in our layout are left as they are. Returns a summary."""
    done = []
    for path in paths:
        path = Path(path)
        result = convert_object_npy(path, IMAGE_SHAPE, progress=progress)
        if result is None:
            header = read_npy_header(path)
            done.append(f'{path.name} ({header.dtype}, already usable)')
        else:
            done.append(result)
    info_build = {'source_name': 'l2b'}
    if read_info(dataset_dir).get('build') != info_build:
        write_info(dataset_dir, {'dataset': NAME, 'build': info_build, 'splits': {}})
    return '; '.join(done)


def _images_dir(root: Path):
    candidates = [root / 'CUB_200_2011' / 'images'] + sorted(root.rglob('images'))
    for d in candidates:
        if d.is_dir() and any(CLASS_FOLDER.match(p.name) for p in d.iterdir() if p.is_dir()):
            return d
    raise DatasetError('the archive has no CUB_200_2011/images/<NNN>.<name>/ class folders; it is not '
                       'CUB_200_2011.tgz: delete it and download it again')


def read_class(folder: Path):
    """uint8 [n, 84, 84, 3]: the class's JPEGs, sorted by name, resized as l2b did; images
    that do not come out as 84x84x3 (greyscale, CMYK, ...) are dropped. Also the dropped names."""
    from PIL import Image
    kept, dropped = [], []
    for p in sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() == '.jpg'):
        try:
            with Image.open(p) as im:
                arr = np.array(im.resize((IMAGE_SIZE, IMAGE_SIZE)))   # PIL's default filter, as l2b
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DatasetError(f'cannot decode image {p} ({type(e).__name__}: {e}); the archive is '
                               f'damaged: delete it and download it again') from None
        if arr.shape == IMAGE_SHAPE and arr.dtype == np.uint8:
            kept.append(arr)
        else:
            dropped.append(p.name)
    if not kept:
        raise DatasetError(f'class folder {folder} has no RGB JPEG image')
    return np.stack(kept), dropped


def build_from_caltech(archive, dataset_dir, force=False, progress=True):
    """Writes valid/test.npy + _counts.npy (+ info.json) from CUB_200_2011.tgz. Skipped when
    info.json records the same archive, unless `force`. Returns a summary."""
    import shutil
    from .download import safe_extract
    dataset_dir = Path(dataset_dir)
    build_info = {'source_name': 'caltech', 'source': file_signature(archive)}
    if not force and is_up_to_date(dataset_dir, STEMS, build_info):
        return 'valid.npy, test.npy (up to date)'
    staging = dataset_dir / '.unpacking'
    shutil.rmtree(staging, ignore_errors=True)
    info = {'dataset': NAME, 'build': build_info, 'splits': {}}
    summary = []
    try:
        safe_extract(archive, staging)
        images = _images_dir(staging)
        folders = {}
        for d in sorted(p for p in images.iterdir() if p.is_dir()):
            m = CLASS_FOLDER.match(d.name)
            if m and int(m.group(1)) % 4 in SPLIT_OF_ID_MOD_4:
                folders.setdefault(SPLIT_OF_ID_MOD_4[int(m.group(1)) % 4], []).append(d)
        for stem in STEMS:
            if not folders.get(stem):
                raise DatasetError(f'{archive} has no class folder for the {stem} split (class ids '
                                   f'{"2" if stem == "valid" else "0"} mod 4)')
            classes, dropped = [], []
            for d in tqdm(folders[stem], desc=f'CUB {stem}', unit='class', disable=not progress):
                arr, lost = read_class(d)
                classes.append(arr)
                dropped += [f'{d.name}/{n}' for n in lost]
            write_classes(dataset_dir, stem, classes)
            info['splits'][stem] = {'classes': [d.name for d in folders[stem]],
                                    'counts': [len(a) for a in classes], 'dropped_non_rgb': dropped}
            summary.append(f'{stem}.npy: {len(classes)} classes, {sum(len(a) for a in classes)} images '
                           f'({len(dropped)} non-RGB dropped)')
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_info(dataset_dir, info)
    return '; '.join(summary)


# ----------------------------------------------------------------------------- declaration

# l2b's data/cub/get_data.py used http://www.vision.caltech.edu/visipedia-data/CUB-200-2011/
# CUB_200_2011.tgz, which no longer answers; CaltechDATA serves the same archive (same md5).
CUB_CALTECH_URL = 'https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz'
CUB_CALTECH_MD5 = '97eceeb196236b17998738112f37df78'


def prepare_l2b(dataset_dir):
    """Files built from CUB_200_2011.tgz (--source caltech) would be taken for l2b's, as a
    download skips files that exist: remove them first (the tgz stays and rebuilds them)."""
    from .perclass import INFO_FILE, counts_path
    directory = Path(dataset_dir)
    if read_info(dataset_dir).get('build', {}).get('source_name') == 'caltech':
        logging.getLogger(__name__).info(
            'Replacing the CUB files built from CUB_200_2011.tgz (--source caltech) by l2b\'s.')
        for path in [directory / f'{stem}.npy' for stem in ('valid', 'test')] + \
                [counts_path(directory, stem) for stem in ('valid', 'test')] + [directory / INFO_FILE]:
            if os.path.exists(path):
                os.remove(path)


def preprocess_l2b(dataset_dir, paths, force, progress=True):
    """get_data's step: converts l2b's object-array valid.npy / test.npy into uint8 in place."""
    from .download import preprocessing
    with preprocessing('CUB', dataset_dir):
        return convert_l2b_files(dataset_dir, paths, progress=progress)


def preprocess_caltech(dataset_dir, paths, force, progress=True):
    """get_data's step: builds CUB's valid/test.npy from CUB_200_2011.tgz as l2b's old script."""
    from .download import preprocessing
    with preprocessing('CUB', dataset_dir):
        return build_from_caltech(paths[0], dataset_dir, force=force, progress=progress)


def _check_l2b_file(path):
    from .perclass import check_l2b_npy
    check_l2b_npy(path, IMAGE_SHAPE)


DOWNLOAD = Download(
    name='cub',
    default_source='l2b',
    sources={
        'l2b': Source(
            description="l2b's CUB valid.npy/test.npy (Dropbox; no published checksum; pickled "
                        'object arrays, converted to uint8 through a restricted unpickler); '
                        'out-of-distribution only',
            preprocess=preprocess_l2b, options=('progress',), prepare=prepare_l2b,
            files=tuple(dropbox_npy(name, file_id, _check_l2b_file)
                        for name, file_id in (('valid', '2cv4lfdmaja0wq6'), ('test', '1oxiehzuqvuil60')))),
        'caltech': Source(
            description='CUB_200_2011.tgz (CaltechDATA, md5 checked) built as l2b\'s earlier script: '
                        'classes 2 mod 4 -> valid, 0 mod 4 -> test, 84x84, non-RGB images dropped',
            preprocess=preprocess_caltech, options=('progress',),
            files=(RemoteFile('CUB_200_2011', 'CUB_200_2011.tgz', CUB_CALTECH_URL, CUB_CALTECH_MD5),)),
    })

SPECS = (DatasetSpec(
    name='cub', loader=load, kind='images', has_train=False,
    description="CUB-200-2011 birds, 84x84x3, out-of-distribution only (l2b's validation and test splits)",
    download=DOWNLOAD),)
