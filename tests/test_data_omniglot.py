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


# ----------------------------------------------------------------------------- --omniglot_resize

# sha256 of the uint8 images the reader made of the first 40 PNGs (sorted names: Balinese
# character01 and character02) of images_background_small1.zip before the resize option
# existed (commit dffe981's _decode_png). nearest must keep producing exactly these bytes.
FIRST_40_SHA256 = 'c216cea4588b19dd35924827b2c0ff011f5d0bc02af368edbd6bf2f456923778'


def first_pngs(shared_omniglot_dir, n=40):
    with zipfile.ZipFile(shared_omniglot_dir / SMALL_ZIPS[0]) as zf:
        names = sorted(m for m in zf.namelist() if m.endswith('.png') and '__MACOSX' not in m)[:n]
        return [zf.read(m) for m in names]


def test_nearest_is_todays_output_and_lanczos_is_grey(shared_omniglot_dir):
    import hashlib
    import io
    from PIL import Image
    pngs = first_pngs(shared_omniglot_dir)
    nearest = np.stack([omniglot.decode_png(io.BytesIO(p), 'x') for p in pngs])
    assert hashlib.sha256(nearest.tobytes()).hexdigest() == FIRST_40_SHA256
    # ... which is a nearest-neighbour downsample of the 1-bit images (Pillow's LANCZOS on mode 1).
    explicit = np.stack([255 - np.asarray(Image.open(io.BytesIO(p)).resize((28, 28), Image.NEAREST)
                                          .convert('L')) for p in pngs])
    np.testing.assert_array_equal(nearest, explicit)
    assert set(np.unique(nearest)) == {0, 255}
    lanczos = np.stack([omniglot.decode_png(io.BytesIO(p), 'x', 'lanczos') for p in pngs])
    assert (lanczos != nearest).mean() > 0.05
    assert len(np.unique(lanczos)) > 100                       # antialiased: grey edges
    assert abs(lanczos.astype(float).mean() - nearest.astype(float).mean()) < 5   # same ink, roughly


def test_lanczos_has_its_own_cache(shared_omniglot_dir, tmp_path):
    odir = tmp_path / 'omniglot'
    odir.mkdir()
    # Three characters of two of the real alphabets (decoding the whole subset twice is slow).
    with zipfile.ZipFile(shared_omniglot_dir / SMALL_ZIPS[0]) as zin, \
            zipfile.ZipFile(odir / SMALL_ZIPS[0], 'w') as zout:
        for info in zin.infolist():
            parts = info.filename.split('/')
            if len(parts) == 4 and parts[1] in ('Balinese', 'Korean') and parts[2] <= 'character03':
                zout.writestr(info, zin.read(info))
    kw = dict(rotations=False, progress=False, test_alphabets=['Korean'])
    nearest = load_dataset('omniglot', str(tmp_path), **kw)
    assert (odir / 'omniglot28.npz').is_file() and not (odir / 'omniglot28_lanczos.npz').exists()
    # A cache made for nearest, put where lanczos's cache goes, is not taken for lanczos.
    shutil.copy(odir / 'omniglot28.npz', odir / 'omniglot28_lanczos.npz')
    lanczos = load_dataset('omniglot', str(tmp_path), resize='lanczos', **kw)
    assert 'lanczos resize' in lanczos.description and 'lanczos resize' not in nearest.description
    images = all_images(lanczos.train)
    assert ((images > 0) & (images < 1)).any()
    with np.load(odir / 'omniglot28_lanczos.npz') as z:
        assert str(z['resize']) == 'lanczos'
    # Each resize then reads its own cache, even with the zip gone.
    (odir / SMALL_ZIPS[0]).unlink()
    again = load_dataset('omniglot', str(tmp_path), resize='lanczos', **kw)
    assert 'omniglot28_lanczos.npz built from' in again.description
    np.testing.assert_array_equal(all_images(again.train), images)
    np.testing.assert_array_equal(all_images(load_dataset('omniglot', str(tmp_path), **kw).train),
                                  all_images(nearest.train))
    # A cache from before the option (no resize field) is a nearest cache.
    with np.load(odir / 'omniglot28.npz') as z:
        fields = {k: z[k] for k in z.files if k != 'resize'}
    np.savez_compressed(odir / 'omniglot28.npz', **fields)
    old = load_dataset('omniglot', str(tmp_path), **kw)
    np.testing.assert_array_equal(all_images(old.train), all_images(nearest.train))
    with pytest.raises(DatasetError, match='no Omniglot data'):
        (odir / 'omniglot28_lanczos.npz').unlink()
        load_dataset('omniglot', str(tmp_path), resize='lanczos', **kw)


def test_resize_option_checks(tmp_path):
    odir = tmp_path / 'omniglot'
    odir.mkdir()
    np.save(odir / 'train.npy', np.zeros((4, 20, 784), np.float32))
    np.save(odir / 'test.npy', np.zeros((4, 20, 784), np.float32))
    load_dataset('omniglot', str(tmp_path), resize='nearest')
    with pytest.raises(DatasetError, match="resize='lanczos' cannot be used with metadrop's .*28x28"):
        load_dataset('omniglot', str(tmp_path), resize='lanczos')
    with pytest.raises(DatasetError, match='unknown omniglot resize'):
        load_dataset('omniglot', str(tmp_path), resize='area')
