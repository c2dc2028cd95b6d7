"""FC100 (data/fc100.py): the TADAM superclass split, the JPEG folders MTL reads, the decoded cache,
and get_data.py --dataset fc100 against a local HTTP server (127.0.0.1 only). The CIFAR-100
archive is a tiny one in the real format (meta/train/test pickles, all 100 classes)."""
import io
import os
import pickle
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from data import fc100, get_data
from data.datasets import DatasetError, load_dataset
from tests import test_download
from tests.test_get_data import run

server = test_download.server          # the local file-server fixture (127.0.0.1)

TRAIN_PER_CLASS, TEST_PER_CLASS = 2, 1
PER_CLASS = TRAIN_PER_CLASS + TEST_PER_CLASS


def smooth_images(rng, n):
    """n distinct, smooth 32x32x3 uint8 images (JPEG-friendly): random 4x4 colour grids upsampled."""
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        grid = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        out[i] = np.asarray(Image.fromarray(grid, 'RGB').resize((32, 32), Image.BILINEAR))
    return out


def tar_gz(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def cifar100_archive(seed=0, coarse_of=None):
    """(bytes of a cifar-100-python.tar.gz, {batch: (HWC images, fine labels)}) in the real format:
    dicts with bytes keys, data uint8 [N, 3072] (R, G, B planes, row-major), fine_labels,
    coarse_labels; meta with fine_label_names and coarse_label_names."""
    rng = np.random.default_rng(seed)
    fine_names = list(fc100.FINE_LABEL_NAMES)
    coarse_of = coarse_of or (lambda label: fc100.COARSE_OF_FINE[fine_names[label]])
    batches, members = {}, []
    for batch, per in (('train', TRAIN_PER_CLASS), ('test', TEST_PER_CLASS)):
        labels = np.tile(np.arange(100), per)
        rng.shuffle(labels)
        images = smooth_images(rng, len(labels))
        data = images.transpose(0, 3, 1, 2).reshape(len(labels), 3072)   # HWC -> R, G, B planes
        batches[batch] = (images, labels)
        members.append((f'cifar-100-python/{batch}', pickle.dumps({
            b'filenames': [f'{fine_names[lab]}_s_{i:06d}.png'.encode() for i, lab in enumerate(labels)],
            b'batch_label': f'{batch}ing batch 1 of 1'.encode(),
            b'fine_labels': labels.tolist(), b'coarse_labels': [coarse_of(int(lab)) for lab in labels],
            b'data': data}, protocol=2)))
    meta = pickle.dumps({b'fine_label_names': [n.encode() for n in fine_names],
                         b'coarse_label_names': [n.encode() for n in fc100.COARSE_LABEL_NAMES]}, protocol=2)
    return tar_gz([('cifar-100-python/meta', meta)] + members), batches


def source_images(batches, name):
    """The class's images in FC100's order: its CIFAR train images, then its test images."""
    c = fc100.FINE_LABEL_NAMES.index(name)
    return np.concatenate([batches[b][0][batches[b][1] == c] for b in ('train', 'test')])


@pytest.fixture(scope='module')
def archive_bytes():
    return cifar100_archive()


@pytest.fixture
def built(tmp_path, archive_bytes):
    """(data_root, batches) with FC100 built into data_root/fc100/."""
    archive = tmp_path / 'cifar-100-python.tar.gz'
    archive.write_bytes(archive_bytes[0])
    fc100.build(archive, tmp_path / 'fc100', progress=False)
    return tmp_path, archive_bytes[1]


def all_images(split, c):
    return split.images(c, np.arange(split.counts[c]))


# ----------------------------------------------------------------------------- the split

def test_split_is_tadam_superclasses_60_20_20_disjoint():
    assert fc100.SPLIT_SUPERCLASSES == {'train': (1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19),
                                        'val': (8, 11, 13, 16), 'test': (0, 7, 12, 14)}
    assert {s: len(n) for s, n in fc100.CLASS_NAMES.items()} == {'train': 60, 'val': 20, 'test': 20}
    names = [n for s in fc100.SPLITS for n in fc100.CLASS_NAMES[s]]
    assert sorted(names) == sorted(fc100.FINE_LABEL_NAMES) and len(set(names)) == 100   # disjoint, all 100
    supers = {s: {fc100.COARSE_LABEL_NAMES[fc100.COARSE_OF_FINE[n]] for n in fc100.CLASS_NAMES[s]}
              for s in fc100.SPLITS}
    assert supers['val'] == {'large_carnivores', 'large_omnivores_and_herbivores', 'non-insect_invertebrates',
                             'small_mammals'}
    assert supers['test'] == {'aquatic_mammals', 'insects', 'medium_mammals', 'people'}
    assert len(supers['train']) == 12 and {'fish', 'trees', 'vehicles_2', 'reptiles'} <= supers['train']
    # CIFAR-100's label orders: fine names alphabetical, coarse names as in meta.
    assert fc100.FINE_LABEL_NAMES[:3] == ('apple', 'aquarium_fish', 'baby') and fc100.FINE_LABEL_NAMES[-1] == 'worm'
    assert fc100.COARSE_LABEL_NAMES[0] == 'aquatic_mammals' and fc100.COARSE_LABEL_NAMES[19] == 'vehicles_2'
    assert {'beaver', 'bee', 'fox', 'baby'} <= set(fc100.CLASS_NAMES['test'])
    assert {'bear', 'camel', 'crab', 'hamster'} <= set(fc100.CLASS_NAMES['val'])


# ----------------------------------------------------------------------------- build and load

def test_build_writes_mtl_layout_and_loads(built):
    root, batches = built
    d = root / 'fc100'
    assert sorted(p.name for p in d.iterdir()) == ['build_info.json', 'test', 'train', 'val']   # no staging
    for split in fc100.SPLITS:
        assert sorted(p.name for p in (d / split).iterdir()) == sorted(fc100.CLASS_NAMES[split])
    files = sorted(p.name for p in (d / 'val' / 'bear').iterdir())
    assert files == ['0000.jpg', '0001.jpg', '0002.jpg']
    with Image.open(d / 'val' / 'bear' / '0000.jpg') as im:
        assert (im.format, im.mode, im.size) == ('JPEG', 'RGB', (84, 84))

    ds = load_dataset('fc100', str(root))
    assert ds.name == 'fc100' and ds.image_shape == (84, 84, 3) and ds.val_is_test is False
    assert (ds.train.n_classes, ds.val.n_classes, ds.test.n_classes) == (60, 20, 20)
    assert 'TADAM superclass split' in ds.description
    for field in fc100.SPLITS:
        split = ds.split(field)
        assert [split.class_name(c) for c in range(split.n_classes)] == list(fc100.CLASS_NAMES[field])
        assert (split.counts == PER_CLASS).all()
        x = all_images(split, 0)
        assert x.shape == (PER_CLASS, 84, 84, 3) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0

    # An image round trip: close to the bicubic upsampling of its source, in FC100's order
    # (train images then test images), and exactly what decoding the JPEG gives.
    c = fc100.CLASS_NAMES['val'].index('bear')
    got = all_images(ds.val, c)
    want = np.stack([np.asarray(fc100.upsample(im), dtype=np.float32) / 255 for im in source_images(batches, 'bear')])
    err = np.abs(got[:, None] - want[None]).mean(axis=(2, 3, 4))        # [got image, source image]
    assert (err.argmin(axis=1) == np.arange(PER_CLASS)).all()
    assert np.diag(err).max() < 2.5 / 255 and np.abs(got - want).max() < 40 / 255
    with Image.open(d / 'val' / 'bear' / '0002.jpg') as im:
        np.testing.assert_array_equal(got[2], np.asarray(im.convert('RGB'), dtype=np.float32) / 255)


def test_rebuild_skipped_when_up_to_date_and_forced(built):
    root, _ = built
    archive = root / 'cifar-100-python.tar.gz'
    mtime = (root / 'fc100' / 'train' / 'apple' / '0000.jpg').stat().st_mtime_ns
    assert 'up to date' in fc100.build(archive, root / 'fc100', progress=False)
    assert 'up to date' not in fc100.build(archive, root / 'fc100', force=True, progress=False)
    assert (root / 'fc100' / 'train' / 'apple' / '0000.jpg').stat().st_mtime_ns != mtime
    shutil.rmtree(root / 'fc100' / 'test' / 'whale')                  # a damaged tree is rebuilt
    assert 'up to date' not in fc100.build(archive, root / 'fc100', progress=False)
    assert (root / 'fc100' / 'test' / 'whale' / '0000.jpg').is_file()


def test_interrupted_build_leaves_no_dataset(tmp_path, archive_bytes, monkeypatch):
    archive = tmp_path / 'cifar-100-python.tar.gz'
    archive.write_bytes(archive_bytes[0])
    real, calls = fc100._save_jpeg, []

    def failing(image, path):
        calls.append(path)
        if len(calls) > 50:
            raise KeyboardInterrupt
        real(image, path)

    monkeypatch.setattr(fc100, '_save_jpeg', failing)
    with pytest.raises(KeyboardInterrupt):
        fc100.build(archive, tmp_path / 'fc100', progress=False)
    assert sorted(p.name for p in (tmp_path / 'fc100').iterdir()) == []     # no split, no staging
    with pytest.raises(DatasetError, match='Get it with'):
        load_dataset('fc100', str(tmp_path))

    # Interrupting a rebuild keeps the previous complete dataset.
    monkeypatch.setattr(fc100, '_save_jpeg', real)
    fc100.build(archive, tmp_path / 'fc100', progress=False)
    calls.clear()
    monkeypatch.setattr(fc100, '_save_jpeg', failing)
    with pytest.raises(KeyboardInterrupt):
        fc100.build(archive, tmp_path / 'fc100', force=True, progress=False)
    assert (tmp_path / 'fc100' / 'build_info.json').is_file()
    assert load_dataset('fc100', str(tmp_path)).train.n_classes == 60


def test_archive_with_other_superclasses_is_refused(tmp_path):
    data, _ = cifar100_archive(coarse_of=lambda label: label // 5)    # not CIFAR-100's hierarchy
    archive = tmp_path / 'cifar-100-python.tar.gz'
    archive.write_bytes(data)
    with pytest.raises(DatasetError, match='puts class .* in superclass'):
        fc100.build(archive, tmp_path / 'fc100', progress=False)
    assert not (tmp_path / 'fc100' / 'train').exists()


# ----------------------------------------------------------------------------- cache

def test_cache_used_on_second_load_and_rebuilt_when_files_change(built, monkeypatch):
    root, _ = built
    d = root / 'fc100'
    first = load_dataset('fc100', str(root))
    assert first.description.count('(built now)') == 3
    for split in fc100.SPLITS:
        assert (d / f'cache_{split}.npy').is_file() and (d / f'cache_{split}.json').is_file()
    c = fc100.CLASS_NAMES['val'].index('bear')
    before = all_images(first.val, c)

    def no_decoding(path, command):
        raise AssertionError(f'decoded {path} although the cache is up to date')

    with monkeypatch.context() as m:
        m.setattr(fc100, '_decode', no_decoding)
        second = load_dataset('fc100', str(root))
    assert 'built now' not in second.description
    assert isinstance(second.train._stacked, np.memmap) or isinstance(second.train._stacked.base, np.memmap)
    np.testing.assert_array_equal(all_images(second.val, c), before)

    # Rewriting an image changes the signature of its split: only that cache is decoded again.
    Image.new('RGB', (84, 84), (128, 128, 128)).save(d / 'val' / 'bear' / '0001.jpg', quality=95)
    os.utime(d / 'val' / 'bear' / '0001.jpg', ns=(1, 1))     # even with an unchanged-looking mtime
    third = load_dataset('fc100', str(root))
    assert 'cache_val.npy (built now)' in third.description and 'cache_train.npy (built now)' not in third.description
    now = all_images(third.val, c)
    np.testing.assert_allclose(now[1], 128 / 255, atol=2 / 255)
    np.testing.assert_array_equal(now[[0, 2]], before[[0, 2]])

    # Removing an image: the class shrinks, the cache becomes ragged (data.perclass layout).
    (d / 'test' / 'whale' / '0002.jpg').unlink()
    fourth = load_dataset('fc100', str(root))
    assert 'cache_test.npy (built now)' in fourth.description
    assert (d / 'cache_test_counts.npy').is_file()
    assert fourth.test.counts[fc100.CLASS_NAMES['test'].index('whale')] == 2 and fourth.test.counts.sum() == 59


def test_damaged_cache_is_decoded_again(built):
    root, _ = built
    load_dataset('fc100', str(root))
    (root / 'fc100' / 'cache_train.npy').write_bytes(b'not an npy')
    ds = load_dataset('fc100', str(root))
    assert 'cache_train.npy (built now)' in ds.description and ds.train.n_classes == 60


# ----------------------------------------------------------------------------- errors

def test_missing_data_names_the_get_data_command(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset('fc100', str(tmp_path))
    assert f'python data/get_data.py --dataset fc100 --data_root {tmp_path}' in str(e.value)


def test_missing_split_and_wrong_class_counts(built):
    root, _ = built
    d = root / 'fc100'
    shutil.move(d / 'val' / 'bear', root / 'bear')
    with pytest.raises(DatasetError) as e:
        load_dataset('fc100', str(root))
    assert f'{d / "val"} has 19 class folders' in str(e.value) and 'has 20' in str(e.value)
    assert f'python data/get_data.py --dataset fc100 --data_root {root} --force' in str(e.value)
    shutil.move(root / 'bear', d / 'val' / 'bear')
    (d / 'train' / 'extra').mkdir()
    with pytest.raises(DatasetError, match=r'train has 61 class folders; FC100\'s train split has 60'):
        load_dataset('fc100', str(root))
    (d / 'train' / 'extra').rmdir()
    shutil.rmtree(d / 'test')
    with pytest.raises(DatasetError, match='test missing'):
        load_dataset('fc100', str(root))


def test_overlapping_splits_and_wrong_image_size(built):
    root, _ = built
    d = root / 'fc100'
    (d / 'test' / 'baby').rename(d / 'test' / 'apple')              # apple is a train class
    with pytest.raises(DatasetError, match='class apple is in both'):
        load_dataset('fc100', str(root))
    (d / 'test' / 'apple').rename(d / 'test' / 'baby')
    Image.new('RGB', (32, 32)).save(d / 'val' / 'bear' / '0000.jpg')
    with pytest.raises(DatasetError, match=r'0000\.jpg is 32x32; FC100 images must be 84x84'):
        load_dataset('fc100', str(root))


# ----------------------------------------------------------------------------- get_data.py

def test_get_data_fc100_end_to_end(server, tmp_path, capsys, archive_bytes):  # noqa: F811
    server.add('/m/cifar-100-python.tar.gz', archive_bytes[0])
    argv = ['--dataset', 'fc100', '--data_root', str(tmp_path), '--base_url', server.url + '/m', '--no_verify']
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert 'fc100 (official) is ready' in out and 'JPEG' in out and 'decoded' in out
    assert [e['path'] for e in server.log] == ['/m/cifar-100-python.tar.gz']
    d = tmp_path / 'fc100'
    assert {'cifar-100-python.tar.gz', 'train', 'val', 'test', 'cache_train.npy'} <= {p.name for p in d.iterdir()}
    ds = load_dataset('fc100', str(tmp_path))
    assert 'built now' not in ds.description                      # get_data built the cache
    assert (ds.train.n_classes, ds.val.n_classes, ds.test.n_classes) == (60, 20, 20)

    # A second run fetches nothing and rebuilds nothing.
    server.log.clear()
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert server.log == [] and 'up to date' in out and 'cache_*.npy (up to date)' in out


def test_get_data_fc100_reuses_the_cifar_archive(server, tmp_path, capsys, archive_bytes):  # noqa: F811
    assert get_data.DATASETS['fc100'].sources['official'].files == get_data.DATASETS['cifar'].sources['official'].files
    assert get_data.DATASETS['fc100'].sources['official'].files[0].md5 == 'eb9058c3a382ffc7106e4002c42a8d85'
    (tmp_path / 'cifar').mkdir()
    (tmp_path / 'cifar' / 'cifar-100-python.tar.gz').write_bytes(archive_bytes[0])
    code, out, err = run(['--dataset', 'fc100', '--data_root', str(tmp_path), '--base_url', server.url,
                          '--no_verify'], capsys)
    assert code == 0, err
    assert server.log == []                                       # nothing downloaded
    assert os.path.samefile(tmp_path / 'cifar' / 'cifar-100-python.tar.gz',
                            tmp_path / 'fc100' / 'cifar-100-python.tar.gz')
    assert load_dataset('fc100', str(tmp_path)).test.n_classes == 20


def test_get_data_fc100_rejects_cifar_only_options(tmp_path, capsys):
    with pytest.raises(SystemExit):
        get_data.main(['--dataset', 'fc100', '--data_root', str(tmp_path), '--jpeg_roundtrip'])
    assert '--jpeg_roundtrip only applies to --dataset cifar' in capsys.readouterr().err
