"""Image-folder reader: DIR/<class>/<image>, or DIR/{train,val,test}/<class>/<image>.

Any image size and mode; each image is converted to 'L' (channels=1) or 'RGB' (channels=3),
resized to image_size x image_size with LANCZOS and stored as uint8 (read back as x / 255).
Without split subfolders, the classes (sorted by name) are shuffled with random.Random(0)
and cut by the fractions `folder_split` (train, val, test).
"""
import random
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .base import DatasetError, DatasetSpec, FewShotDataset, show_progress
from .episodes import ClassSplit

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')
SPLIT_SEED = 0

LAYOUT = ('expected layout: DIR/<class>/<image> (png/jpg/jpeg/bmp/gif), one folder per class, '
          'or DIR/train/<class>/<image> + DIR/test/<class>/<image> (+ optional DIR/val/<class>/<image>)')


def _visible_dirs(path: Path):
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith('.'))


def _class_files(class_dir: Path):
    files = sorted(p for p in class_dir.iterdir()
                   if p.is_file() and not p.name.startswith('.') and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DatasetError(f'class folder {class_dir} holds no images (png/jpg/jpeg/bmp/gif); '
                           f'remove it or add images. {LAYOUT}')
    return files


def _read_image(path: Path, size: int, mode: str):
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ('P', 'PA', 'LA', 'RGBA') or 'transparency' in im.info:
                # Composite transparency onto white instead of keeping whatever colour it hides.
                rgba = im.convert('RGBA')
                im = Image.alpha_composite(Image.new('RGBA', rgba.size, (255, 255, 255, 255)), rgba)
            im = im.convert(mode).resize((size, size), resample=Image.LANCZOS)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(f'cannot read image {path} ({type(e).__name__}: {e}); fix or delete the file') \
            from None
    return arr.reshape(size, size, -1)


def _read_classes(class_dirs, size, channels, what):
    files = [_class_files(d) for d in class_dirs]
    mode = 'L' if channels == 1 else 'RGB'
    classes = []
    with tqdm(total=sum(map(len, files)), desc=f'reading {what}', unit='img',
              disable=not show_progress()) as bar:
        for paths in files:
            arr = np.empty((len(paths), size, size, channels), dtype=np.uint8)
            for i, p in enumerate(paths):
                arr[i] = _read_image(p, size, mode)
            classes.append(arr)
            bar.update(len(paths))
    return classes


def _fraction_split(n, fractions):
    try:
        fr = [float(f) for f in fractions]
    except (TypeError, ValueError):
        fr = []
    if len(fr) != 3 or min(fr) < 0 or sum(fr) <= 0 or fr[0] <= 0 or fr[2] <= 0:
        raise DatasetError(f'folder_split must be three fractions (train, val, test), train and test > 0, '
                           f'e.g. (0.64, 0.16, 0.20); got {fractions!r}')
    total = sum(fr)
    n_train = int(round(n * fr[0] / total))
    n_val = int(round(n * fr[1] / total))
    n_test = n - n_train - n_val
    return n_train, n_val, n_test


def load(data_root='./data', folder_dir=None, image_size=84, channels=3,
         folder_split=(0.64, 0.16, 0.20)) -> FewShotDataset:
    """Reads an image-folder dataset (default folder <data_root>/folder)."""
    root = Path(folder_dir) if folder_dir is not None else Path(data_root) / 'folder'
    if channels not in (1, 3):
        raise DatasetError(f'channels must be 1 (grey) or 3 (RGB), got {channels!r}')
    if not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise DatasetError(f'image_size must be a positive integer, got {image_size!r}')
    if not root.is_dir():
        raise DatasetError(f'folder dataset {root} does not exist; {LAYOUT}. Point folder_dir at it '
                           f'(default <data_root>/folder)')
    top = _visible_dirs(root)
    names = {p.name for p in top}
    shape = (image_size, image_size, channels)
    if {'train', 'test'} <= names:
        splits = {}
        for which in ('train', 'val', 'test'):
            if which not in names:
                continue
            class_dirs = _visible_dirs(root / which)
            if not class_dirs:
                raise DatasetError(f'{root / which} has no class folders; {LAYOUT}')
            images = _read_classes(class_dirs, image_size, channels, f'{root.name}/{which}')
            splits[which] = ClassSplit(images, names=[d.name for d in class_dirs], name=which, dataset=root.name)
        how = 'split folders train/' + ('val/' if 'val' in splits else '') + 'test/'
    else:
        if not top:
            raise DatasetError(f'folder dataset {root} is empty (no class folders); {LAYOUT}')
        order = list(top)  # sorted by name
        random.Random(SPLIT_SEED).shuffle(order)
        n_train, n_val, n_test = _fraction_split(len(order), folder_split)
        if n_train < 1 or n_test < 1 or (n_val < 1 and float(folder_split[1]) > 0):
            raise DatasetError(f'{root} has {len(order)} classes; folder_split {tuple(folder_split)} leaves '
                               f'train/val/test = {n_train}/{n_val}/{n_test} classes. Add classes, change '
                               f'folder_split, or use train/ and test/ subfolders')
        parts = {'train': order[:n_train], 'val': order[n_train:n_train + n_val], 'test': order[n_train + n_val:]}
        splits = {}
        for which, class_dirs in parts.items():
            if class_dirs:
                images = _read_classes(class_dirs, image_size, channels, f'{root.name}/{which}')
                splits[which] = ClassSplit(images, names=[d.name for d in class_dirs], name=which,
                                           dataset=root.name)
        how = f'{len(order)} classes split {n_train}/{n_val}/{n_test} with random.Random({SPLIT_SEED})'
    val_is_test = 'val' not in splits
    train, test = splits['train'], splits['test']
    val = test if val_is_test else splits['val']
    desc = (f'folder {root} ({how}, {image_size}x{image_size}x{channels}): train {train.n_classes} / '
            f'{"val=test" if val_is_test else f"val {val.n_classes}"} / test {test.n_classes} classes')
    return FewShotDataset('folder', train, val, test, shape, val_is_test, desc)


# ----------------------------------------------------------------------------- declaration

def options(cfg):
    """The reader options from main.py's flags (an unset flag: the reader's default)."""
    return dict(folder_dir=cfg.folder_dir or None, image_size=cfg.image_size or 84,
                channels=cfg.channels or 3)


SPECS = (DatasetSpec(
    name='folder', loader=load, kind='images', flags=('folder_dir', 'image_size', 'channels'),
    options=options,
    description='your own images: DIR/<class>/<image> (split by class) or DIR/{train,val,test}/<class>/<image>'),)
