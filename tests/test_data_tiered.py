"""tieredImageNet reader (npz layout, class-sorted cache, restricted unpickling; Meta-Transfer
Learning's image folders and their cache) and its get_data sources, on tiny splits written in
the real formats."""
import io
import json
import logging
import mmap
import os
import pickle
import shutil
import tarfile
import tracemalloc
import zipfile

import numpy as np
import pytest
from PIL import Image

from data import storage, tiered
from data.datasets import DatasetError, load_dataset
from data.episodes import EpisodeSampler
from tests.test_download import server  # noqa: F401  (the local file-server fixture)
from tests.test_get_data import run

# Per split: images per class (classes of different sizes), and the first label id.
SIZES = {'train': (3, 4, 5, 6), 'val': (3, 7, 4), 'test': (4, 3, 5, 3, 6)}
OFFSETS = {'train': 0, 'val': 100, 'test': 200}
BLUE = 200


def make_split(which, seed=0):
    """(labels [N] in shuffled order, RGB images [N, 84, 84, 3]): red = 10 * (class index + 1),
    green = the image's rank within its class in file order, blue = 200, and one bright
    pixel at a per-image spot so that no two images are alike."""
    rng = np.random.default_rng(seed + OFFSETS[which])
    sizes = SIZES[which]
    labels = rng.permutation(np.repeat(OFFSETS[which] + np.arange(len(sizes)), sizes))
    rgb = np.zeros((len(labels), 84, 84, 3), np.uint8)
    rank = {}
    for i, label in enumerate(labels):
        k = rank[label] = rank.get(label, -1) + 1
        rgb[i, ..., 0] = 10 * (label - OFFSETS[which] + 1)
        rgb[i, ..., 1] = k
        rgb[i, ..., 2] = BLUE
        rgb[i, i % 84, (3 * i) % 84] = 255
    return labels, rgb


def write_split(d, which, compressed=False, labels_key='label_specific', seed=0, protocol=4):
    """Writes {which}_images.npz (BGR, as the published files) and {which}_labels.pkl."""
    d.mkdir(parents=True, exist_ok=True)
    labels, rgb = make_split(which, seed)
    save = np.savez_compressed if compressed else np.savez
    save(d / f'{which}_images.npz', images=rgb[..., ::-1])
    names = [f'n{c:08d}' for c in range(OFFSETS[which] + len(SIZES[which]))]   # indexed by class id
    with open(d / f'{which}_labels.pkl', 'wb') as f:
        pickle.dump({labels_key: labels, 'label_general': labels // 2,
                     'label_specific_str': names, 'label_general_str': ['a', 'b']}, f, protocol=protocol)
    return labels, rgb


def write_all(d, compressed=('val',), **kw):
    return {w: write_split(d, w, compressed=w in compressed, **kw) for w in tiered.SPLITS}


def mapped(arr):
    """Whether `arr` is a view of a memory-mapped file."""
    while isinstance(arr, np.ndarray):
        arr = arr.base
    return isinstance(arr, mmap.mmap)


def class_images(split, c):
    return split.images(c, np.arange(split.counts[c]))


# ----------------------------------------------------------------------------- reader

@pytest.mark.parametrize('compressed', [(), tiered.SPLITS], ids=['stored', 'deflated'])
def test_classes_values_and_channel_order(tmp_path, compressed):
    data = write_all(tmp_path / 'tiered', compressed=compressed)
    ds = load_dataset('tiered', str(tmp_path))
    assert ds.name == 'tiered' and ds.image_shape == (84, 84, 3) and not ds.val_is_test
    for which in tiered.SPLITS:
        split = ds.split(which)
        labels, rgb = data[which]
        assert split.n_classes == len(SIZES[which])
        assert split.counts.tolist() == list(SIZES[which])
        for c in range(split.n_classes):
            label = OFFSETS[which] + c
            assert split.class_name(c) == f'n{label:08d}'        # label_specific_str, by class id
            x = class_images(split, c)
            assert x.dtype == np.float32
            # Class c holds exactly the images labelled c, in file order, as RGB / 255.
            np.testing.assert_array_equal(x, rgb[labels == label].astype(np.float32) / 255)
            # The files store BGR: blue (200) comes last after the reversal, red is the class.
            pixel = np.round(x[:, 40, 60] * 255).astype(int)
            assert (pixel[:, 0] == 10 * (c + 1)).all() and (pixel[:, 2] == BLUE).all()
            assert pixel[:, 1].tolist() == list(range(len(x)))                         # file order


def test_cache_is_class_sorted_and_memory_mapped(tmp_path):
    data = write_all(tmp_path / 'tiered')
    ds = tiered.load(str(tmp_path))
    d = tmp_path / 'tiered'
    cache = np.load(d / 'cache_train.npy', mmap_mode='r')
    labels, rgb = data['train']
    np.testing.assert_array_equal(cache, rgb[np.argsort(labels, kind='stable')])
    with np.load(d / 'cache_train_index.npz', allow_pickle=False) as idx:
        assert idx['counts'].tolist() == list(SIZES['train'])
        assert idx['offsets'].tolist() == [0, 3, 7, 12]
        assert idx['classes'].tolist() == [0, 1, 2, 3]
    # Every class is a read-only view of the memory-mapped cache, not a copy.
    for arr in ds.train._classes:
        assert mapped(arr) and not arr.flags.writeable
    assert not any(p.name.endswith('.tmp') for p in d.iterdir())


@pytest.mark.parametrize('compressed', [False, True], ids=['stored', 'deflated'])
def test_cache_is_built_chunk_by_chunk(tmp_path, monkeypatch, compressed):
    d = tmp_path / 'tiered'
    d.mkdir()
    n = 480                                                     # 10 MB, 60 chunks of 8 images
    labels = np.arange(n) % 6                                   # interleaved classes
    rgb = (np.arange(n)[:, None, None, None] * 7 + np.arange(84)[:, None, None]
           + np.arange(3)).astype(np.uint8) * np.ones((1, 1, 84, 1), np.uint8)
    (np.savez_compressed if compressed else np.savez)(d / 'train_images.npz', images=rgb)
    (d / 'train_labels.pkl').write_bytes(pickle.dumps({'label_specific': labels}))
    monkeypatch.setattr(tiered, 'CHUNK', 8)
    tracemalloc.start()
    try:
        cache = tiered._build(d, 'train', progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < rgb.nbytes / 8, f'building allocated {peak} bytes for {rgb.nbytes} bytes of images'
    np.testing.assert_array_equal(cache.images, rgb[np.argsort(labels, kind='stable'), :, :, ::-1])
    assert cache.counts.tolist() == [80] * 6


def test_cache_reused_then_rebuilt_when_a_source_changes(tmp_path):
    d = tmp_path / 'tiered'
    write_all(d)
    tiered.load(str(tmp_path))
    caches = {w: d / f'cache_{w}.npy' for w in tiered.SPLITS}
    first = {w: p.stat().st_mtime_ns for w, p in caches.items()}
    ds = tiered.load(str(tmp_path))                           # nothing changed: nothing rebuilt
    assert {w: p.stat().st_mtime_ns for w, p in caches.items()} == first
    assert 'built now' not in ds.description

    labels, rgb = write_split(d, 'train', seed=7)             # new content for train only
    st = (d / 'train_labels.pkl').stat()
    os.utime(d / 'train_labels.pkl', ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    ds = tiered.load(str(tmp_path))
    assert caches['train'].stat().st_mtime_ns != first['train']
    assert all(caches[w].stat().st_mtime_ns == first[w] for w in ('val', 'test'))
    assert 'built now for train' in ds.description
    np.testing.assert_array_equal(class_images(ds.train, 2), rgb[labels == 2].astype(np.float32) / 255)


def test_cache_used_after_the_sources_are_deleted(tmp_path):
    d = tmp_path / 'tiered'
    data = write_all(d)
    tiered.load(str(tmp_path))
    for which in tiered.SPLITS:
        (d / f'{which}_images.npz').unlink()
    ds = tiered.load(str(tmp_path))
    labels, rgb = data['test']
    np.testing.assert_array_equal(class_images(ds.test, 4), rgb[labels == 204].astype(np.float32) / 255)


def test_labels_alias_list_and_other_folder_names(tmp_path):
    d = tmp_path / 'tiered-imagenet'
    data = write_all(d, labels_key='labels', protocol=2)
    with open(d / 'test_labels.pkl', 'wb') as f:             # a plain list of ints, no names
        pickle.dump({'labels': data['test'][0].tolist()}, f, protocol=0)
    ds = load_dataset('tiered', str(tmp_path))                # found under tiered-imagenet/
    assert ds.test.counts.tolist() == list(SIZES['test'])
    assert ds.test.class_name(0) == 'test/class200'
    other = tmp_path / 'elsewhere'
    d.rename(other)
    ds = load_dataset('tiered', str(tmp_path / 'nothing-here'), tiered_dir=str(other))
    assert ds.val.counts.tolist() == list(SIZES['val'])


def test_episode_from_the_test_split(tmp_path):
    write_all(tmp_path / 'tiered')
    ds = tiered.load(str(tmp_path))
    ep = EpisodeSampler(ds.test, way=5, shot=1, query=2).sample(np.random.default_rng(0), 1)
    assert ep.xs.shape == (1, 5, 84, 84, 3) and ep.xq.shape == (1, 10, 84, 84, 3)
    assert ep.ys.tolist() == [[0, 1, 2, 3, 4]] and ep.yq.tolist() == [[0, 0, 1, 1, 2, 2, 3, 3, 4, 4]]
    assert ep.xs.dtype == np.float32 and 0 <= ep.xs.min() and ep.xs.max() <= 1
    # Support and query images of one way come from one class (same red value).
    reds = np.round(np.concatenate([ep.xs[0, :, 1, 1, 0, None], ep.xq[0, :, 1, 1, 0].reshape(5, 2)], 1) * 255)
    assert (reds == reds[:, :1]).all() and len(set(reds[:, 0])) == 5


def test_nonstandard_class_counts_are_reported(tmp_path, caplog):
    write_all(tmp_path / 'tiered')
    with caplog.at_level(logging.WARNING, logger='data.tiered'):
        ds = tiered.load(str(tmp_path))
    msg = ' '.join(r.getMessage() for r in caplog.records)
    assert 'train 4 / val 3 / test 5 classes' in msg and 'train 351 / val 97 / test 160' in msg
    assert 'not the standard 351/97/160 classes' in ds.description


# ----------------------------------------------------------------------------- bad input

class RunsACommand:
    """Unpickling this calls os.system(command)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    d = tmp_path / 'tiered'
    write_all(d)
    marker = tmp_path / 'it-ran'
    with open(d / 'val_labels.pkl', 'wb') as f:
        pickle.dump({'label_specific': RunsACommand(f'touch {marker}')}, f)
    with pytest.raises(DatasetError) as err:
        tiered.load(str(tmp_path))
    assert 'val_labels.pkl is refused' in str(err.value)
    assert 'system' in str(err.value) and 'could run code' in str(err.value)
    assert not marker.exists()                       # nothing was executed
    with open(tmp_path / 'eval.pkl', 'wb') as f:     # a builtin that is not plain data
        f.write(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(DatasetError, match=r'builtins\.eval'):
        tiered.load_plain_pickle(tmp_path / 'eval.pkl')


@pytest.mark.parametrize('protocol', range(pickle.HIGHEST_PROTOCOL + 1))
def test_plain_pickles_of_every_protocol_load(tmp_path, protocol):
    obj = {'a': np.arange(6, dtype=np.int32).reshape(2, 3), 'b': [np.int64(3), 'x', b'\x00\xff'],
           'c': (1.5, True, None)}
    path = tmp_path / 'x.pkl'
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    got = tiered.load_plain_pickle(path)
    np.testing.assert_array_equal(got['a'], obj['a'])
    assert got['b'] == obj['b'] and got['c'] == obj['c']


def test_missing_files_name_the_path_and_the_command(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset('tiered', str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / 'tiered' / 'train_images.npz') in msg
    assert 'python data/get_data.py --dataset tiered' in msg
    write_all(tmp_path / 'tiered')
    (tmp_path / 'tiered' / 'test_labels.pkl').unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset('tiered', str(tmp_path))
    assert 'missing: ' + str(tmp_path / 'tiered' / 'test_labels.pkl') + '.' in str(err.value)


def _npz(path, **arrays):
    np.savez(path, **arrays)


@pytest.mark.parametrize('change, says', [
    (lambda d: _npz(d / 'train_images.npz', images=np.zeros((17, 84, 84, 3), np.uint8)),
     'holds 17 images but'),
    (lambda d: _npz(d / 'train_images.npz', images=np.zeros((18, 32, 32, 3), np.uint8)),
     'must be uint8 [N, 84, 84, 3]'),
    (lambda d: _npz(d / 'train_images.npz', data=np.zeros((18, 84, 84, 3), np.uint8)),
     "no 'images' array (it holds: data)"),
    (lambda d: (d / 'train_images.npz').write_bytes(b'<html>quota exceeded</html>'),
     'not a readable npz'),
    (lambda d: (d / 'train_labels.pkl').write_bytes(pickle.dumps({'other': [1]})),
     "no 'label_specific' (or 'labels') entry; its keys are other"),
    (lambda d: (d / 'train_labels.pkl').write_bytes(pickle.dumps({'labels': [0.5, 1.5]})),
     'integer class ids'),
    (lambda d: (d / 'train_labels.pkl').write_bytes(pickle.dumps({'labels': [1, 2]})[:-5]),
     'truncated or damaged'),
], ids=['count', 'shape', 'key', 'html', 'labels-key', 'float-labels', 'truncated-pkl'])
def test_bad_files_say_what_is_wrong(tmp_path, change, says):
    d = tmp_path / 'tiered'
    write_all(d)
    change(d)
    with pytest.raises(DatasetError) as err:
        tiered.load(str(tmp_path))
    assert says in str(err.value)
    assert not (d / 'cache_train.npy').exists()


def test_truncated_compressed_member_is_reported(tmp_path):
    d = tmp_path / 'tiered'
    write_all(d, compressed=('train',))
    raw = (d / 'train_images.npz').read_bytes()
    (d / 'train_images.npz').write_bytes(raw[:len(raw) // 2] + raw[len(raw) // 2:][::-1])
    with pytest.raises(DatasetError, match='train_images.npz'):
        tiered.load(str(tmp_path))
    assert not any(p.name.startswith('cache_train') for p in d.iterdir())


# ----------------------------------------------------------------------------- image folders (MTL)

# Per split: class folder -> image files, each (name, (width, height), mode). Created in an
# unsorted order: classes come out in sorted folder order, images in sorted file-name order.
FOLDERS = {
    'train': {'n03': [('b.jpg', (84, 84), 'RGB'), ('a.png', (84, 84), 'RGB')],
              'n01': [('img_2.jpg', (90, 100), 'RGB'), ('img_1.jpg', (84, 84), 'L'),
                      ('img_3.png', (60, 70), 'RGB')],
              'n02': [('x.JPEG', (120, 84), 'RGB'), ('y.jpg', (84, 84), 'RGB'), ('z.png', (84, 84), 'RGB'),
                      ('w.jpg', (100, 100), 'RGB')]},
    'val': {'n12': [('a.jpg', (84, 84), 'RGB'), ('b.png', (84, 84), 'RGB')],
            'n11': [('a.jpg', (84, 90), 'RGB'), ('b.jpg', (84, 84), 'RGB'), ('c.jpg', (84, 84), 'RGB')]},
    'test': {'n22': [('1.png', (84, 84), 'RGB'), ('2.png', (84, 84), 'RGB'), ('3.jpg', (84, 84), 'RGB')],
             'n21': [('1.jpg', (84, 84), 'RGB'), ('2.jpg', (96, 84), 'RGB')]},
}


def image_file(path, size, mode, seed):
    """A small noisy image (PNG lossless, JPEG q90); returns the array written."""
    w, h = size
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode)
    im.save(path, format='PNG' if path.suffix.lower() == '.png' else 'JPEG', quality=90)
    return np.asarray(im)


def write_folders(d, folders=FOLDERS, seed=0):
    """Writes the image folders; returns {path: the pixels written}."""
    written = {}
    for which, classes in folders.items():
        for name, files in classes.items():
            (d / which / name).mkdir(parents=True, exist_ok=True)
            for file, size, mode in files:
                path = d / which / name / file
                written[path] = image_file(path, size, mode, seed)
                seed += 1
    return written


def expected_image(path):
    """What MTL's reader sees: RGB, LANCZOS-resized to 84x84 unless already 84x84, / 255."""
    with Image.open(path) as im:
        if im.size != (84, 84):
            im = im.resize((84, 84), resample=Image.LANCZOS)
        return np.asarray(im.convert('RGB'), np.float32) / 255


def folder_files(d, which, name):
    return sorted((d / which / name).iterdir())


def no_decoding(path):
    raise AssertionError(f'decoded {path} although the cache is up to date')


def test_image_folders_classes_shapes_values_and_order(tmp_path, caplog):
    d = tmp_path / 'tiered'
    written = write_folders(d)
    with caplog.at_level(logging.WARNING, logger='data.tiered'):
        ds = load_dataset('tiered', str(tmp_path))
    assert ds.name == 'tiered' and ds.image_shape == (84, 84, 3) and not ds.val_is_test
    for which, classes in FOLDERS.items():
        split = ds.split(which)
        names = sorted(classes)                                   # folder listing order
        assert [split.class_name(c) for c in range(split.n_classes)] == names
        assert split.counts.tolist() == [len(classes[n]) for n in names]
        for c, name in enumerate(names):
            x = class_images(split, c)
            assert x.dtype == np.float32 and x.shape == (len(classes[name]), 84, 84, 3)
            files = folder_files(d, which, name)                  # sorted by file name
            np.testing.assert_array_equal(x, np.stack([expected_image(p) for p in files]))
    # An 84x84 PNG is read exactly as its pixels / 255 (RGB, no channel reversal, no resize).
    png = written[d / 'train' / 'n03' / 'a.png']
    np.testing.assert_array_equal(class_images(ds.train, 2)[0], png.astype(np.float32) / 255)
    # A grey JPEG comes out as three equal channels.
    grey = class_images(ds.train, 0)[0]                           # n01/img_1.jpg, mode L
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()

    for which in tiered.SPLITS:                                  # caches written, npz names untouched
        assert (d / f'cache_{which}_folders.npy').is_file() and (d / f'cache_{which}_folders.json').is_file()
        assert not (d / f'cache_{which}.npy').exists()
    assert not any(p.name.endswith('.tmp') for p in d.iterdir())
    meta = json.loads((d / 'cache_val_folders.json').read_text())
    assert meta['classes'] == ['n11', 'n12'] and meta['counts'] == [3, 2]
    assert meta['source'] == {'form': 'folders', 'classes': [['n11', 3], ['n12', 2]]}
    assert 'class folders' in ds.description and 'cache_train_folders.npy (built now)' in ds.description
    assert 'not the standard 351/97/160 classes' in ds.description
    msg = ' '.join(r.getMessage() for r in caplog.records)
    assert 'train 3 / val 2 / test 2 classes' in msg and 'train 351 / val 97 / test 160' in msg
    ep = EpisodeSampler(ds.train, way=3, shot=1, query=1).sample(np.random.default_rng(0), 1)
    assert ep.xs.shape == (1, 3, 84, 84, 3) and ep.xq.shape == (1, 3, 84, 84, 3)


def test_image_folder_cache_reused_then_rebuilt_when_a_file_is_added(tmp_path, monkeypatch):
    d = tmp_path / 'tiered'
    write_folders(d)
    first = tiered.load(str(tmp_path))
    caches = {w: d / f'cache_{w}_folders.npy' for w in tiered.SPLITS}
    mtimes = {w: p.stat().st_mtime_ns for w, p in caches.items()}
    before = class_images(first.test, 1)

    with monkeypatch.context() as m:                             # second load: nothing decoded
        m.setattr(storage, 'decode_image', no_decoding)
        second = tiered.load(str(tmp_path))
    assert 'built now' not in second.description and 'cache_test_folders.npy' in second.description
    assert {w: p.stat().st_mtime_ns for w, p in caches.items()} == mtimes
    for which in tiered.SPLITS:                                  # memory-mapped views of the cache
        split = second.split(which)
        arrays = [split._stacked] if split._stacked is not None else split._classes
        assert all(mapped(a) for a in arrays)
    np.testing.assert_array_equal(class_images(second.test, 1), before)

    # One more image in test/n22: only the test cache is rebuilt, and holds it.
    image_file(d / 'test' / 'n22' / '4.png', (84, 84), 'RGB', 99)
    third = tiered.load(str(tmp_path))
    assert 'cache_test_folders.npy (built now)' in third.description
    assert 'cache_train_folders.npy (built now)' not in third.description
    assert caches['test'].stat().st_mtime_ns != mtimes['test']
    assert all(caches[w].stat().st_mtime_ns == mtimes[w] for w in ('train', 'val'))
    assert third.test.counts.tolist() == [2, 4]
    np.testing.assert_array_equal(class_images(third.test, 1),
                                  np.stack([expected_image(p) for p in folder_files(d, 'test', 'n22')]))
    assert json.loads((d / 'cache_test_folders.json').read_text())['counts'] == [2, 4]

    # A new class folder changes the signature too.
    write_folders(d, {'val': {'n13': [('a.jpg', (84, 84), 'RGB')]}}, seed=50)
    assert tiered.load(str(tmp_path)).val.n_classes == 3


def test_npz_layout_preferred_when_both_exist(tmp_path, monkeypatch, caplog):
    d = tmp_path / 'tiered'
    data = write_all(d)
    write_folders(d)
    monkeypatch.setattr(storage, 'decode_image', no_decoding)        # the folders are never read
    with caplog.at_level(logging.INFO, logger='data.tiered'):
        ds = load_dataset('tiered', str(tmp_path))
    assert 'npz layout' in ds.description and 'npz preferred' in ds.description
    assert ds.train.counts.tolist() == list(SIZES['train']) and ds.train.class_name(0) == 'n00000000'
    labels, rgb = data['test']
    np.testing.assert_array_equal(class_images(ds.test, 4), rgb[labels == 204].astype(np.float32) / 255)
    assert not any(p.name.endswith('_folders.npy') for p in d.iterdir())
    assert 'reading the npz files' in caplog.text
    # The npz caches alone (sources deleted) still count as the npz layout.
    for which in tiered.SPLITS:
        (d / f'{which}_images.npz').unlink()
    assert 'npz preferred' in tiered.load(str(tmp_path)).description


def test_image_folders_without_val_and_beside_an_incomplete_npz(tmp_path, caplog):
    d = tmp_path / 'tiered-imagenet'                              # the other folder name
    write_folders(d, {w: FOLDERS[w] for w in ('train', 'test')})
    write_split(d, 'train')                                      # npz for train only
    with caplog.at_level(logging.WARNING, logger='data.tiered'):
        ds = load_dataset('tiered', str(tmp_path))
    assert ds.val_is_test and ds.val is ds.test
    assert 'val=test (no val split)' in ds.description and 'npz layout incomplete' in ds.description
    assert 'npz layout is incomplete (val_images.npz' in caplog.text and 'val none (val=test)' in caplog.text
    assert ds.train.class_name(0) == 'n01' and not (d / 'cache_train.npy').exists()


def test_image_folder_caches_used_after_the_folders_are_deleted(tmp_path):
    d = tmp_path / 'tiered'
    write_folders(d)
    first = tiered.load(str(tmp_path))
    for which in tiered.SPLITS:
        shutil.rmtree(d / which)
    ds = tiered.load(str(tmp_path))
    assert 'no longer present' in ds.description
    np.testing.assert_array_equal(class_images(ds.val, 0), class_images(first.val, 0))


def test_read_only_image_folders_are_decoded_into_memory(tmp_path, caplog):
    d = tmp_path / 'tiered'
    write_folders(d)
    mode = d.stat().st_mode
    d.chmod(0o555)
    try:
        with caplog.at_level(logging.WARNING, logger='data.storage'):
            ds = tiered.load(str(tmp_path))
        assert sorted(p.name for p in d.iterdir()) == ['test', 'train', 'val']   # nothing written
    finally:
        d.chmod(mode)
    assert 'not writable' in caplog.text and 'train/ (decoded, no cache)' in ds.description
    assert not any(mapped(a) for a in ds.train._classes)
    np.testing.assert_array_equal(class_images(ds.train, 1)[3],
                                  expected_image(d / 'train' / 'n02' / 'z.png'))


def test_bad_image_folders_say_what_is_wrong(tmp_path):
    d = tmp_path / 'tiered'
    write_folders(d)
    (d / 'val' / 'n99').mkdir()
    with pytest.raises(DatasetError, match=r'class folder .*n99 holds no images'):
        tiered.load(str(tmp_path))
    (d / 'val' / 'n99').rmdir()
    (d / 'val' / 'n21').mkdir()                                  # also a test class
    image_file(d / 'val' / 'n21' / 'a.jpg', (84, 84), 'RGB', 7)
    with pytest.raises(DatasetError, match='class n21 is in both the val and the test split'):
        tiered.load(str(tmp_path))
    shutil.rmtree(d / 'val' / 'n21')
    (d / 'test' / 'n21' / '3.jpg').write_bytes(b'not a jpeg')    # a new file: test is decoded again
    with pytest.raises(DatasetError, match=r'cannot decode image .*3\.jpg'):
        tiered.load(str(tmp_path))
    assert not any(p.name.endswith('.tmp') for p in d.iterdir())


def test_missing_data_mentions_the_image_folders(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset('tiered', str(tmp_path))
    msg = str(err.value)
    assert 'python data/get_data.py --dataset tiered' in msg
    assert str(tmp_path / 'tiered') + '/{train,val,test}/<class>/*.jpg' in msg and '84x84 JPEGs' in msg
    write_folders(tmp_path / 'tiered', {'train': FOLDERS['train']})   # train/ without test/
    with pytest.raises(DatasetError) as err:
        load_dataset('tiered', str(tmp_path))
    assert 'train_images.npz' in str(err.value) and '(found train/ but no test/)' in str(err.value)


# ----------------------------------------------------------------------------- get_data

def tar_bytes(files, folder):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(f'{folder}/{name}')
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_get_data_metaoptnet_tar_end_to_end(server, tmp_path, capsys):  # noqa: F811
    src = tmp_path / 'src'
    data = write_all(src)
    files = {p.name: p.read_bytes() for p in src.iterdir()}
    files['README.txt'] = b'not needed'
    tar = tar_bytes(files, 'tiered_imagenet')
    server.add('/drive/tiered.tar', tar)
    (tmp_path / 'probe.tar').write_bytes(tar)
    assert zipfile.is_zipfile(tmp_path / 'probe.tar')   # the npz inside make it look like a zip too
    root = tmp_path / 'root'
    argv = ['--dataset', 'tiered', '--data_root', str(root), '--url_override',
            f'tiered_imagenet={server.url}/drive/tiered.tar?id=1']
    code, out, err = run(argv, capsys)
    assert code == 0, err
    d = root / 'tiered'
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ['tiered_imagenet.tar'] + [f'{w}_{k}' for w in tiered.SPLITS for k in ('images.npz', 'labels.pkl')]
        + [f'cache_{w}{k}' for w in tiered.SPLITS for k in ('.npy', '_index.npz')])
    assert 'cache_train.npy' in out
    ds = load_dataset('tiered', str(root))
    labels, rgb = data['val']
    np.testing.assert_array_equal(class_images(ds.val, 1), rgb[labels == 101].astype(np.float32) / 255)

    # A rerun finds the tar, the files and the caches in place: nothing is fetched or rewritten.
    server.log.clear()
    mtime = (d / 'cache_val.npy').stat().st_mtime_ns
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert server.log == [] and (d / 'cache_val.npy').stat().st_mtime_ns == mtime


def test_get_data_web_page_instead_of_tar(server, tmp_path, capsys):  # noqa: F811
    server.add('/drive/tiered.tar', b'<!DOCTYPE html><html>Google Drive - Quota exceeded</html>')
    code, _, err = run(['--dataset', 'tiered', '--data_root', str(tmp_path), '--url_override',
                        f'tiered_imagenet={server.url}/drive/tiered.tar'], capsys)
    assert code == 1 and 'Traceback' not in err
    assert 'is a web page' in err and 'deleted' in err
    assert f'https://drive.google.com/file/d/{tiered_id()}/view' in err
    assert str(tmp_path / 'tiered' / 'tiered_imagenet.tar') in err
    assert os.listdir(tmp_path / 'tiered') == []


def tiered_id():
    from data.tiered import TIERED_METAOPTNET_DRIVE_ID
    return TIERED_METAOPTNET_DRIVE_ID


def test_get_data_tar_without_the_files(server, tmp_path, capsys):  # noqa: F811
    server.add('/t.tar', tar_bytes({'train_images.npz': b'x'}, 'tiered_imagenet'))
    code, _, err = run(['--dataset', 'tiered', '--data_root', str(tmp_path), '--url_override',
                        f'tiered_imagenet={server.url}/t.tar'], capsys)
    assert code == 1
    assert 'missing train_labels.pkl, val_images.npz' in err and '--source' in err
    assert sorted(os.listdir(tmp_path / 'tiered')) == ['tiered_imagenet.tar']   # staging removed


def test_get_data_refuses_a_tar_member_escaping_the_folder(server, tmp_path, capsys):  # noqa: F811
    src = tmp_path / 'src'
    write_all(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tf:
        info = tarfile.TarInfo('../../escaped.txt')
        info.size = 4
        tf.addfile(info, io.BytesIO(b'oops'))
        tf.add(src / 'val_images.npz', 'tiered_imagenet/val_images.npz')   # last: looks like a zip
    server.add('/evil.tar', buf.getvalue())
    code, _, err = run(['--dataset', 'tiered', '--data_root', str(tmp_path / 'root'), '--url_override',
                        f'tiered_imagenet={server.url}/evil.tar'], capsys)
    assert code == 1 and 'Refusing to extract' in err and "'..'" in err
    assert not (tmp_path / 'escaped.txt').exists() and not (tmp_path / 'root' / 'escaped.txt').exists()
    assert sorted(os.listdir(tmp_path / 'root' / 'tiered')) == ['tiered_imagenet.tar']


def png_bytes(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format='PNG')
    return buf.getvalue()


def test_get_data_ren_png_pickles_are_converted(server, tmp_path, capsys):  # noqa: F811
    files, data = {}, {}
    for which in tiered.SPLITS:
        labels, rgb = make_split(which)
        data[which] = labels, rgb
        pngs = [png_bytes(im) for im in rgb]
        if which == 'val':                     # cv2.imencode's output: uint8 arrays
            pngs = [np.frombuffer(p, np.uint8) for p in pngs]
        files[f'{which}_images_png.pkl'] = pickle.dumps(pngs, protocol=2)
        files[f'{which}_labels.pkl'] = pickle.dumps({'label_specific': labels}, protocol=2)
    server.add('/ren.tar', tar_bytes(files, 'tiered-imagenet'))
    code, _, err = run(['--dataset', 'tiered', '--source', 'ren', '--data_root', str(tmp_path),
                        '--url_override', f'tiered-imagenet={server.url}/ren.tar'], capsys)
    assert code == 0, err
    d = tmp_path / 'tiered'
    assert not any(p.name.endswith('_png.pkl') for p in d.iterdir())
    with zipfile.ZipFile(d / 'train_images.npz') as zf:       # np.savez's uncompressed layout
        assert zf.getinfo('images.npy').compress_type == zipfile.ZIP_STORED
    with np.load(d / 'train_images.npz') as z:                # BGR, as the published npz files
        np.testing.assert_array_equal(z['images'], data['train'][1][..., ::-1])
    ds = load_dataset('tiered', str(tmp_path))
    for which in tiered.SPLITS:
        labels, rgb = data[which]
        split = ds.split(which)
        for c in range(split.n_classes):
            np.testing.assert_array_equal(class_images(split, c),
                                          rgb[labels == OFFSETS[which] + c].astype(np.float32) / 255)


def test_ren_png_pickle_with_code_is_refused(tmp_path):
    png = tmp_path / 'train_images_png.pkl'
    png.write_bytes(pickle.dumps([png_bytes(np.zeros((84, 84, 3), np.uint8)),
                                  RunsACommand(f'touch {tmp_path / "ran"}')]))
    with pytest.raises(DatasetError, match='is refused'):
        tiered.png_pickle_to_npz(png, tmp_path / 'train_images.npz', progress=False)
    assert not (tmp_path / 'ran').exists() and not (tmp_path / 'train_images.npz').exists()
