"""Omniglot reader: the real background subsets, the cache, metadrop's npy layout, errors."""
import random
import shutil
import zipfile

import numpy as np
import pytest

from data import omniglot
from data.datasets import DatasetError, load_dataset

SMALL_ZIPS = ('images_background_small1.zip', 'images_background_small2.zip')


def all_images(split):
    """float32 [n_classes, n_per_class, H, W, C] of a ClassSplit with equal class sizes."""
    n = int(split.counts[0])
    return split.gather(np.arange(split.n_classes), np.tile(np.arange(n), (split.n_classes, 1)))


@pytest.fixture(scope='module')
def small(shared_omniglot_dir):
    """The two real subsets, no rotations (decoded in memory; the shared folder stays untouched)."""
    before = sorted(p.name for p in shared_omniglot_dir.iterdir())
    ds = load_dataset('omniglot', str(shared_omniglot_dir.parent), rotations=False)
    assert sorted(p.name for p in shared_omniglot_dir.iterdir()) == before, 'wrote into the shared folder'
    return ds


def test_small_subsets_content(small):
    names = [small.train.class_name(c) for c in range(small.train.n_classes)] + \
            [small.test.class_name(c) for c in range(small.test.n_classes)]
    assert len(names) == len(set(names)) == 242
    assert len({n.split('/')[0] for n in names}) == 8
    assert small.image_shape == (28, 28, 1) and small.val_is_test and small.val is small.test
    for split in (small.train, small.test):
        assert (split.counts == 20).all()
        x = all_images(split)
        assert x.shape[1:] == (20, 28, 28, 1) and x.dtype == np.float32
        assert set(np.unique(x).tolist()) == {0.0, 1.0}
        assert x.mean() < 0.25  # strokes are 1 on a 0 background
    assert 'images_background_small1.zip+images_background_small2.zip' in small.description
    assert 'train 179 / val=test / test 63' in small.description


def test_default_split_is_mamls_seeded_character_split(small, shared_omniglot_dir):
    names = sorted([small.train.class_name(c) for c in range(small.train.n_classes)] +
                   [small.test.class_name(c) for c in range(small.test.n_classes)])
    order = list(range(242))
    random.Random(1).shuffle(order)
    assert [small.train.class_name(c) for c in range(179)] == [names[i] for i in order[:179]]
    assert [small.test.class_name(c) for c in range(63)] == [names[i] for i in order[179:]]
    again = load_dataset('omniglot', str(shared_omniglot_dir.parent), rotations=False)
    np.testing.assert_array_equal(all_images(again.test), all_images(small.test))


def test_rotations_give_four_classes_per_character(shared_omniglot_dir, small):
    ds = load_dataset('omniglot', str(shared_omniglot_dir.parent))
    assert ds.train.n_classes + ds.test.n_classes == 968
    assert 'train 716 / val=test / test 252' in ds.description
    c = 7
    for k in range(4):
        np.testing.assert_array_equal(ds.train.images(4 * c + k, range(20)),
                                      np.rot90(small.train.images(c, range(20)), k, axes=(1, 2)))
    assert ds.train.class_name(4 * c + 3) == small.train.class_name(c) + '@rot270'


def test_alphabet_split(shared_omniglot_dir):
    root = str(shared_omniglot_dir.parent)
    ds = load_dataset('omniglot', root, test_alphabets=['Korean', 'Tagalog'])
    alpha = lambda s: {s.class_name(c).split('/')[0] for c in range(s.n_classes)}
    assert alpha(ds.test) == {'Korean', 'Tagalog'}
    assert not alpha(ds.train) & alpha(ds.test) and len(alpha(ds.train)) == 6
    assert ds.val_is_test
    ds = load_dataset('omniglot', root, test_alphabets='Korean,Tagalog', val_alphabets=['Greek'])
    assert alpha(ds.val) == {'Greek'} and not ds.val_is_test and 'Greek' not in alpha(ds.train)
    with pytest.raises(DatasetError, match=r'unknown alphabet.*korean.*Balinese.*Tagalog'):
        load_dataset('omniglot', root, test_alphabets=['korean'])
    with pytest.raises(DatasetError, match='both'):
        load_dataset('omniglot', root, test_alphabets=['Greek'], val_alphabets=['Greek'])


def test_build_cache_roundtrip_and_stale_rebuild(shared_omniglot_dir, small, tmp_path):
    odir = tmp_path / 'omniglot'
    odir.mkdir()
    for name in SMALL_ZIPS:
        shutil.copy(shared_omniglot_dir / name, odir / name)
    path = omniglot.build_cache(odir)
    assert path == odir / 'omniglot28.npz' and path.is_file()
    assert not list(odir.glob('*.tmp'))
    with np.load(path, allow_pickle=False) as z:
        assert z['images'].shape == (242, 20, 28, 28, 1) and z['images'].dtype == np.uint8
        assert list(z['source_names']) == list(SMALL_ZIPS)
    ds = load_dataset('omniglot', str(tmp_path), rotations=False)
    assert 'via omniglot28.npz' in ds.description
    np.testing.assert_array_equal(all_images(ds.train), all_images(small.train))
    np.testing.assert_array_equal(all_images(ds.test), all_images(small.test))
    # Replace small2 by a copy without one Tagalog character: a different size makes the cache stale.
    src = odir / SMALL_ZIPS[1]
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp_path / 'new.zip', 'w') as zout:
        for info in zin.infolist():
            if '/Tagalog/character01/' not in info.filename:
                zout.writestr(info, zin.read(info))
    shutil.move(tmp_path / 'new.zip', src)
    ds = load_dataset('omniglot', str(tmp_path), rotations=False)
    assert ds.train.n_classes + ds.test.n_classes == 241
    with np.load(path, allow_pickle=False) as z:
        assert len(z['images']) == 241 and int(z['source_sizes'][1]) == src.stat().st_size
    # Without the zips the cache alone is enough.
    for name in SMALL_ZIPS:
        (odir / name).unlink()
    ds = load_dataset('omniglot', str(tmp_path), rotations=False)
    assert ds.train.n_classes + ds.test.n_classes == 241 and 'zips no longer present' in ds.description


def test_extracted_folder_and_half_pair(shared_omniglot_dir, tmp_path):
    odir = tmp_path / 'omniglot'
    with zipfile.ZipFile(shared_omniglot_dir / SMALL_ZIPS[0]) as zf:
        zf.extractall(odir)
    ds = load_dataset('omniglot', str(tmp_path), rotations=False, cache=False, test_alphabets=['Korean'])
    assert ds.train.n_classes + ds.test.n_classes == 136  # small1 alone: 5 alphabets
    assert 'images_background_small1/' in ds.description and 'images_background_small2.zip absent' \
        in ds.description
    assert not (odir / 'omniglot28.npz').exists()


def test_metadrop_npy_layout(tmp_path):
    odir = tmp_path / 'omniglot'
    odir.mkdir()
    rng = np.random.default_rng(0)
    train = rng.random((8, 20, 784), dtype=np.float32)
    test = rng.random((4, 20 * 784), dtype=np.float32) * 3  # any shape that reshapes to [n, 20, 784]
    np.save(odir / 'train.npy', train)
    np.save(odir / 'test.npy', test)
    ds = load_dataset('omniglot', str(tmp_path))
    assert (ds.train.n_classes, ds.test.n_classes) == (8, 4)  # rotations already stored: no x4
    assert ds.image_shape == (28, 28, 1) and ds.val_is_test and ds.val is ds.test
    np.testing.assert_array_equal(ds.train.images(3, [0, 19]), train[3, [0, 19]].reshape(2, 28, 28, 1))
    np.testing.assert_array_equal(ds.test.images(1, [5]), test[1].reshape(20, 28, 28, 1)[[5]])
    assert 'npy' in ds.description
    with pytest.raises(DatasetError, match='alphabet'):
        load_dataset('omniglot', str(tmp_path), test_alphabets=['Korean'])
    with pytest.raises(DatasetError, match='rotations'):
        load_dataset('omniglot', str(tmp_path), rotations=False)
    np.save(odir / 'test.npy', np.zeros((3, 20, 784), np.float32))
    with pytest.raises(DatasetError, match='multiple of 4'):
        load_dataset('omniglot', str(tmp_path))
    np.save(odir / 'test.npy', np.array([{'a': 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match='allow_pickle'):
        load_dataset('omniglot', str(tmp_path))


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match=r'python data/get_data\.py --dataset omniglot --data_root '):
        load_dataset('omniglot', str(tmp_path))
    with pytest.raises(DatasetError, match='python data/get_data.py --dataset omniglot'):
        load_dataset('omniglot', str(tmp_path), source='official')
    with pytest.raises(DatasetError, match='python data/get_data.py --dataset omniglot'):
        omniglot.build_cache(tmp_path)


def test_registry_errors(tmp_path):
    with pytest.raises(DatasetError, match='omniglot, folder, synthetic'):
        load_dataset('mnist', str(tmp_path))
    with pytest.raises(DatasetError, match=r'unknown option.*rotation\b.*accepts.*rotations'):
        load_dataset('omniglot', str(tmp_path), rotation=False)
    with pytest.raises(DatasetError, match='unknown omniglot source'):
        load_dataset('omniglot', str(tmp_path), source='zip')
