"""miniImageNet reader (metadrop npy and Ravi csv layouts, cache) and its get_data sources,
on tiny files written in the real formats."""
import csv
import os
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from data import get_data, mimgnet
from data.datasets import DatasetError, load_dataset
from data.episodes import EpisodeSampler
from tests.test_download import server  # noqa: F401  (the local file-server fixture)
from tests.test_get_data import npy_bytes, run

PIXELS = 84 * 84 * 3


def all_images(split):
    n = int(split.counts.min())
    return split.gather(np.arange(split.n_classes), np.tile(np.arange(n), (split.n_classes, 1)))


# ----------------------------------------------------------------------------- npy layout

def write_npy(root, train_shape=(5, 3, PIXELS), test_shape=(4, 3, PIXELS), dtype=np.uint8):
    d = root / 'mimgnet'
    d.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for i, (which, shape) in enumerate((('train', train_shape), ('test', test_shape))):
        n = int(np.prod(shape))
        pattern = (np.arange(1021) * (7 + i) % 256).astype(dtype)   # 1021: prime, images differ
        arr = np.resize(pattern, n).reshape(shape)
        np.save(d / f'{which}.npy', arr)
        arrays[which] = arr
    return arrays


def test_npy_layout_memmap_values_and_episodes(tmp_path):
    arrays = write_npy(tmp_path)
    ds = load_dataset('mimgnet', str(tmp_path))
    assert ds.name == 'mimgnet' and ds.image_shape == (84, 84, 3)
    assert ds.val_is_test and ds.val is ds.test
    assert 'val=test' in ds.description and 'metadrop' in ds.description
    assert (ds.train.n_classes, ds.test.n_classes) == (5, 4)
    assert (ds.train.counts == 3).all()
    stored = ds.train._stacked
    assert isinstance(stored, np.memmap) and not stored.flags.owndata
    assert stored.shape == (5, 3, 84, 84, 3)
    # uint8 storage is read as x / 255, HWC order within each flat image.
    expect = arrays['train'].reshape(5, 3, 84, 84, 3).astype(np.float32) / 255
    np.testing.assert_array_equal(all_images(ds.train), expect)
    ep = EpisodeSampler(ds.train, way=5, shot=1, query=2).sample(np.random.default_rng(0), 2)
    assert ep.xs.shape == (2, 5, 84, 84, 3) and ep.xq.shape == (2, 10, 84, 84, 3)
    assert ep.xs.dtype == np.float32 and 0 <= ep.xs.min() and ep.xs.max() <= 1


def test_npy_load_makes_no_copy(tmp_path):
    write_npy(tmp_path, train_shape=(8, 4, PIXELS), test_shape=(4, 4, PIXELS))  # ~700 KB + 350 KB
    tracemalloc.start()
    try:
        ds = mimgnet.load(str(tmp_path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200_000, f'loading allocated {peak} bytes: the files were copied'
    stored = ds.train._stacked
    assert isinstance(stored, np.memmap) and not stored.flags.owndata
    assert os.path.samefile(stored.filename, tmp_path / 'mimgnet' / 'train.npy')
    base = np.load(tmp_path / 'mimgnet' / 'train.npy', mmap_mode='r')
    np.testing.assert_array_equal(np.asarray(stored).reshape(base.shape), base)


@pytest.mark.parametrize('train_shape, expect, dtype', [
    ((2 * 600, PIXELS), (2, 600), np.uint8),    # flat images: 600 per class, as metadrop
    ((3, 2, 84, 84, 3), (3, 2), np.float32),
    ((3, 2 * PIXELS), (3, 2), np.float32),
])
def test_npy_accepts_other_shapes(tmp_path, train_shape, expect, dtype):
    arrays = write_npy(tmp_path, train_shape=train_shape, test_shape=(2, 2, 84, 84, 3), dtype=dtype)
    ds = mimgnet.load(str(tmp_path), mimgnet_layout='npy')
    assert (ds.train.n_classes, int(ds.train.counts[0])) == expect
    assert isinstance(ds.train._stacked, np.memmap)
    scale = 255 if dtype == np.uint8 else 1     # float: values as stored
    np.testing.assert_array_equal(ds.train.images(1, [0]),
                                  arrays['train'].reshape(expect + (84, 84, 3))[1, :1] / np.float32(scale))


@pytest.mark.parametrize('shape, says', [
    ((5, 3, 84 * 84), '(5, 3, 7056)'),
    ((7, PIXELS), '7 images, not a multiple of the 600'),
])
def test_npy_wrong_shape(tmp_path, shape, says):
    write_npy(tmp_path)
    np.save(tmp_path / 'mimgnet' / 'test.npy', np.zeros(shape, np.uint8))
    with pytest.raises(DatasetError, match='test.npy') as e:
        mimgnet.load(str(tmp_path))
    assert says in str(e.value)


def test_npy_refuses_pickles_and_half_pairs(tmp_path):
    write_npy(tmp_path)
    np.save(tmp_path / 'mimgnet' / 'test.npy', np.array([{'a': 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match='never loaded'):
        mimgnet.load(str(tmp_path))
    os.remove(tmp_path / 'mimgnet' / 'test.npy')
    with pytest.raises(DatasetError, match=r'test\.npy.*python data/get_data.py --dataset mimgnet'):
        mimgnet.load(str(tmp_path))


# ----------------------------------------------------------------------------- csv layout

CLASSES = {'train': ['n01', 'n02', 'n03'], 'val': ['n11', 'n12'], 'test': ['n21', 'n22']}
SIZES = [(90, 100), (84, 84), (120, 84), (84, 90), (100, 100), (60, 70)]


def jpeg(path, size, seed, mode='RGB'):
    rng = np.random.default_rng(seed)
    w, h = size
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path, format='JPEG', quality=90)


def write_csv_layout(root, per_class=6):
    d = root / 'mimgnet'
    (d / 'images').mkdir(parents=True)
    seed = 0
    for which, labels in CLASSES.items():
        with open(d / f'{which}.csv', 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(['filename', 'label'])
            for label in labels:
                for i in range(per_class):
                    name = f'{label}{i + 1:08d}.jpg'
                    jpeg(d / 'images' / name, SIZES[i % len(SIZES)], seed, mode='L' if i == 5 else 'RGB')
                    seed += 1
                    w.writerow([name, label])
    return d


def expected_image(path):
    with Image.open(path) as im:
        if im.size != (84, 84):
            im = im.resize((84, 84), resample=Image.LANCZOS)
        return np.asarray(im.convert('RGB'), np.float32) / 255


def test_csv_layout_builds_then_reuses_the_cache(tmp_path):
    d = write_csv_layout(tmp_path)
    ds = load_dataset('mimgnet', str(tmp_path), mimgnet_layout='auto')
    assert not ds.val_is_test and ds.val is not ds.test
    assert [s.n_classes for s in (ds.train, ds.val, ds.test)] == [3, 2, 2]
    assert [ds.val.class_name(c) for c in range(2)] == ['n11', 'n12']
    assert ds.image_shape == (84, 84, 3) and 'val 2' in ds.description
    for which in ('train', 'val', 'test'):
        assert (d / f'cache_{which}.npy').is_file() and (d / f'cache_{which}.json').is_file()
    assert not [p for p in os.listdir(d) if p.endswith('.tmp')]
    x = ds.train.images(0, range(6))
    assert x.shape == (6, 84, 84, 3)
    for i in range(6):   # resized 84x84 RGB (a grey JPEG too), read as x / 255
        np.testing.assert_array_equal(x[i], expected_image(d / 'images' / f'n01{i + 1:08d}.jpg'))
    ep = EpisodeSampler(ds.train, way=3, shot=1, query=5).sample(np.random.default_rng(1), 1)
    assert ep.xq.shape == (1, 15, 84, 84, 3)

    # Second load: memory-maps the cache; the JPEGs are not read (one is now garbage).
    mtimes = {p: os.stat(d / p).st_mtime_ns for p in os.listdir(d) if p.startswith('cache_')}
    (d / 'images' / 'n0100000001.jpg').write_bytes(b'not a jpeg')
    again = load_dataset('mimgnet', str(tmp_path))
    assert isinstance(again.train._stacked, np.memmap)
    np.testing.assert_array_equal(again.train.images(0, range(6)), x)
    assert {p: os.stat(d / p).st_mtime_ns for p in mtimes} == mtimes
    assert 'cache_train.npy' in again.description and 'built now' not in again.description

    # The cache even survives images/ being removed (the csvs still match).
    for p in (d / 'images').iterdir():
        p.unlink()
    (d / 'images').rmdir()
    np.testing.assert_array_equal(load_dataset('mimgnet', str(tmp_path)).val.images(1, [0]),
                                  again.val.images(1, [0]))


def test_changed_csv_rebuilds_and_missing_image_is_named(tmp_path):
    d = write_csv_layout(tmp_path)
    mimgnet.load(str(tmp_path))
    # test.csv now lists one class only: its cache is rebuilt, the others are kept.
    kept = os.stat(d / 'cache_train.npy').st_mtime_ns
    lines = (d / 'test.csv').read_text().splitlines()
    (d / 'test.csv').write_text('\n'.join(lines[:7]) + '\n')
    ds = mimgnet.load(str(tmp_path))
    assert ds.test.n_classes == 1 and os.stat(d / 'cache_train.npy').st_mtime_ns == kept
    # A row pointing at a missing image.
    with open(d / 'val.csv', 'a') as f:
        f.write('n1200000099.jpg,n12\n')
    with pytest.raises(DatasetError, match=r'val\.csv names 1 image.*n1200000099\.jpg'):
        mimgnet.load(str(tmp_path))


def test_folder_form_with_uneven_classes(tmp_path):
    d = tmp_path / 'mimgnet'
    seed = 0
    for which, labels in CLASSES.items():
        for j, label in enumerate(labels):
            (d / which / label).mkdir(parents=True)
            for i in range(4 + j):
                jpeg(d / which / label / f'{label}_{i}.jpg', SIZES[i], seed)
                seed += 1
    ds = mimgnet.load(str(tmp_path), mimgnet_layout='csv')
    assert [s.n_classes for s in (ds.train, ds.val, ds.test)] == [3, 2, 2]
    assert ds.train.counts.tolist() == [4, 5, 6] and not ds.val_is_test
    np.testing.assert_array_equal(ds.train.images(2, [5])[0],
                                  expected_image(d / 'train' / 'n03' / 'n03_5.jpg'))
    assert 'class folders' in ds.description
    # A new image in a class folder changes the signature: rebuilt.
    jpeg(d / 'test' / 'n21' / 'n21_9.jpg', (84, 84), 99)
    assert mimgnet.load(str(tmp_path)).test.counts.tolist() == [5, 5]


def test_missing_data_and_bad_csv(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset('mimgnet', str(tmp_path))
    msg = str(e.value)
    assert 'python data/get_data.py --dataset mimgnet' in msg and 'train.npy' in msg
    assert 'images' in msg and 'train.csv' in msg and 'cannot be redistributed' in msg
    with pytest.raises(DatasetError, match='train.npy'):
        load_dataset('mimgnet', str(tmp_path), mimgnet_layout='npy')
    with pytest.raises(DatasetError, match='unknown mimgnet_layout'):
        load_dataset('mimgnet', str(tmp_path), mimgnet_layout='pickle')
    d = tmp_path / 'mimgnet'
    d.mkdir()
    (d / 'train.csv').write_text('filename,label\na.jpg,n01\n')
    (d / 'test.csv').write_text('file,class\na.jpg,n01\n')
    with pytest.raises(DatasetError, match=r'images.*does not exist.*cannot be redistributed'):
        load_dataset('mimgnet', str(tmp_path))
    (d / 'images').mkdir()
    jpeg(d / 'images' / 'a.jpg', (84, 84), 0)
    with pytest.raises(DatasetError, match=r'test\.csv must start with the header'):
        load_dataset('mimgnet', str(tmp_path))
    (d / 'test.csv').write_text('filename,label\na.jpg,n01\n')
    with pytest.raises(DatasetError, match='class n01 is in both the train and the test split'):
        load_dataset('mimgnet', str(tmp_path))


# ----------------------------------------------------------------------------- get_data

def _full_npy(n_classes, dtype=np.uint8):
    # [n_classes, 2, 21168]: the real files hold 600 images per class (1.6 GB); the tests
    # patch the expected per-class count to 2.
    return npy_bytes(np.zeros((n_classes, 2, PIXELS), dtype))


def test_get_data_metadrop_npy(server, tmp_path, capsys, monkeypatch):  # noqa: F811
    # Real files hold 600 images per class (1.6 GB); serve 2 per class and expect 2.
    monkeypatch.setattr(mimgnet, 'METADROP_PER_CLASS', 2)
    server.add('/dl/train.npy', _full_npy(64))
    server.add('/dl/test.npy', _full_npy(20, np.float32))
    code, out, err = run(['--dataset', 'mimgnet', '--data_root', str(tmp_path), '--url_override',
                          f'train={server.url}/dl/train.npy?dl=1', '--url_override',
                          f'test={server.url}/dl/test.npy?dl=1'], capsys)
    assert code == 0, err
    assert 'ready' in out
    ds = mimgnet.load(str(tmp_path))
    assert (ds.train.n_classes, ds.test.n_classes) == (64, 20) and ds.val_is_test
    # The default addresses are metadrop's Dropbox files.
    files = {f.name: f.url for f in get_data.DATASETS['mimgnet'].sources['metadrop'].files}
    assert files == {'train': 'https://www.dropbox.com/s/ir54llgjfjv3naa/train.npy?dl=1',
                     'test': 'https://www.dropbox.com/s/i40h3wyjlpxeesr/test.npy?dl=1'}


def test_get_data_rejects_wrongly_shaped_npy(server, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setattr(mimgnet, 'METADROP_PER_CLASS', 2)
    server.add('/train.npy', _full_npy(20))           # the test split served as train
    server.add('/test.npy', _full_npy(20))
    code, _, err = run(['--dataset', 'mimgnet', '--data_root', str(tmp_path), '--base_url',
                        server.url], capsys)
    assert code == 1
    assert '(20, 2, 21168)' in err and '[64, 2, 21168]' in err and 'deleted' in err
    assert 'Traceback' not in err
    assert os.listdir(tmp_path / 'mimgnet') == []


def ravi_csv(labels, per_class=600):
    rows = ['filename,label'] + [f'{lab}{i:08d}.jpg,{lab}' for lab in labels for i in range(1, per_class + 1)]
    return ('\n'.join(rows) + '\n').encode()


def test_get_data_csv_source(server, tmp_path, capsys):  # noqa: F811
    labels = {'train': [f'n{i:08d}' for i in range(64)], 'val': [f'n1{i:07d}' for i in range(16)],
              'test': [f'n2{i:07d}' for i in range(20)]}
    for which, labs in labels.items():
        server.add(f'/ravi/{which}.csv', ravi_csv(labs))
    argv = ['--dataset', 'mimgnet', '--source', 'csv', '--data_root', str(tmp_path),
            '--base_url', server.url + '/ravi']
    code, _, err = run(argv, capsys)
    d = tmp_path / 'mimgnet'
    assert code == 1   # csvs fetched, but the images must be supplied by the user
    assert 'cannot be redistributed' in err and str(d / 'images') in err and '--images_dir' in err
    assert sorted(os.listdir(d)) == ['test.csv', 'train.csv', 'val.csv']
    code, _, _ = run(argv + ['--no_preprocess'], capsys)
    assert code == 0
    # A csv with the wrong number of classes is refused and deleted.
    (d / 'val.csv').unlink()
    server.add('/ravi/val.csv', ravi_csv(labels['val'][:3]))
    code, _, err = run(argv + ['--no_preprocess'], capsys)
    assert code == 1 and 'lists 3 classes' in err and 'deleted' in err
    assert not (d / 'val.csv').exists()
    urls = {f.name: f.url for f in get_data.DATASETS['mimgnet'].sources['csv'].files}
    assert urls['val'] == ('https://raw.githubusercontent.com/twitter/meta-learning-lstm/master/'
                           'data/miniImagenet/val.csv')


def test_get_data_csv_builds_cache_from_images_dir(tmp_path, capsys):
    src = write_csv_layout(tmp_path / 'src')
    d = tmp_path / 'root' / 'mimgnet'
    d.mkdir(parents=True)
    for which in ('train', 'val', 'test'):
        (d / f'{which}.csv').write_bytes((src / f'{which}.csv').read_bytes())
    paths = mimgnet.preprocess_mimgnet_csv(str(d), [], False, images_dir=str(src / 'images'))
    assert paths == 'cache_train.npy, cache_val.npy, cache_test.npy'
    ds = mimgnet.load(str(tmp_path / 'root'))       # no images/ here: the cache serves
    np.testing.assert_array_equal(ds.test.images(0, [0])[0],
                                  expected_image(src / 'images' / 'n2100000001.jpg'))
    with pytest.raises(SystemExit):
        get_data.main(['--dataset', 'omniglot', '--images_dir', str(src)])
    assert '--images_dir only applies' in capsys.readouterr().err
