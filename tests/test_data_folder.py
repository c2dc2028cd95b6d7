"""Image-folder reader on tiny PNG/JPEG trees with mixed sizes and modes."""
import numpy as np
import pytest
from PIL import Image

from data.datasets import DatasetError, load_dataset
from data.episodes import EpisodeSampler

MODES = ('L', 'RGB', 'RGBA', 'P', '1')


def write_image(path, mode, size, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = Image.new('RGB', size, (value, 255 - value, (3 * value) % 256))
    if mode == 'P':
        im = rgb.convert('P', palette=Image.ADAPTIVE)
    elif mode == 'RGBA':
        im = rgb.convert('RGBA')
    else:
        im = rgb.convert(mode)
    im.save(path)


def write_tree(root, n_classes, per_class, start=0):
    rng = np.random.default_rng(start)
    for c in range(start, start + n_classes):
        for i in range(per_class[c - start] if isinstance(per_class, list) else per_class):
            mode = MODES[(c + i) % len(MODES)]
            ext = '.jpg' if mode in ('L', 'RGB') and i % 2 else '.png'
            size = tuple(int(s) for s in rng.integers(10, 60, size=2))
            write_image(root / f'class{c:02d}' / f'img{i}{ext}', mode, size, (40 * c + i) % 256)


def test_flat_tree_resized_and_split(tmp_path):
    write_tree(tmp_path / 'folder', 10, [3, 4, 5, 3, 4, 5, 3, 4, 5, 6])
    (tmp_path / 'folder' / 'class00' / 'notes.txt').write_text('not an image')
    ds = load_dataset('folder', str(tmp_path), image_size=16)
    assert ds.image_shape == (16, 16, 3) and not ds.val_is_test
    assert (ds.train.n_classes, ds.val.n_classes, ds.test.n_classes) == (6, 2, 2)
    names = [s.class_name(c) for s in (ds.train, ds.val, ds.test) for c in range(s.n_classes)]
    assert sorted(names) == [f'class{c:02d}' for c in range(10)]
    assert sum(int(s.counts.sum()) for s in (ds.train, ds.val, ds.test)) == 42
    x = ds.train.images(0, [0])
    assert x.shape == (1, 16, 16, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    ep = EpisodeSampler(ds.train, 3, 1, 2).sample(np.random.default_rng(0), 2)
    assert ep.xs.shape == (2, 3, 16, 16, 3)
    again = load_dataset('folder', str(tmp_path), image_size=16)
    assert [again.test.class_name(c) for c in range(2)] == [ds.test.class_name(c) for c in range(2)]


def test_grey_channels_and_split_subfolders(tmp_path):
    root = tmp_path / 'mine'
    write_tree(root / 'train', 4, 3)
    write_tree(root / 'test', 3, 2, start=10)
    ds = load_dataset('folder', str(tmp_path), folder_dir=str(root), image_size=12, channels=1)
    assert ds.image_shape == (12, 12, 1) and ds.val_is_test and ds.val is ds.test
    assert (ds.train.n_classes, ds.test.n_classes) == (4, 3)
    assert ds.test.class_name(0) == 'class10'
    assert ds.train.images(1, [0, 2]).shape == (2, 12, 12, 1)
    write_tree(root / 'val', 2, 2, start=20)
    ds = load_dataset('folder', str(tmp_path), folder_dir=str(root), image_size=12, channels=1)
    assert not ds.val_is_test and ds.val.n_classes == 2


def test_corrupt_image_is_named(tmp_path):
    write_tree(tmp_path / 'folder', 5, 2)
    bad = tmp_path / 'folder' / 'class03' / 'broken.png'
    bad.write_bytes(b'\x89PNG\r\n\x1a\n this is not a png')
    with pytest.raises(DatasetError, match='broken.png'):
        load_dataset('folder', str(tmp_path), image_size=8)


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(DatasetError, match='does not exist.*DIR/<class>/<image>'):
        load_dataset('folder', str(tmp_path))
    (tmp_path / 'folder').mkdir()
    with pytest.raises(DatasetError, match='empty'):
        load_dataset('folder', str(tmp_path))
    write_tree(tmp_path / 'folder', 5, 2)
    (tmp_path / 'folder' / 'class09').mkdir()
    with pytest.raises(DatasetError, match='class09 holds no images'):
        load_dataset('folder', str(tmp_path), image_size=8)


def test_bad_options(tmp_path):
    write_tree(tmp_path / 'folder', 2, 2)
    with pytest.raises(DatasetError, match='channels'):
        load_dataset('folder', str(tmp_path), channels=4)
    with pytest.raises(DatasetError, match='2 classes'):
        load_dataset('folder', str(tmp_path), image_size=8)
