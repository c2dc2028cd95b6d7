"""Readers of Bayesian TAML's datasets (cifar, svhn, cub; l2b's mimgnet valid.npy) and the
per-class layout of data/perclass.py, on tiny files written in place."""
import os
import pickle
import tracemalloc

import numpy as np
import pytest

from data import cifar, cub, perclass, svhn
from data.datasets import KNOWN_DATASETS, DatasetError, load_dataset
from data.episodes import EpisodeSampler
from tests.test_data_mimgnet import write_npy


class RunsACommand:
    """Unpickling this calls os.system(command)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def images(n, shape, seed):
    return np.random.default_rng(seed).integers(0, 256, (n,) + shape, dtype=np.uint8)


def write_object_npy(path, classes):
    arr = np.empty(len(classes), dtype=object)
    for i, c in enumerate(classes):
        arr[i] = c
    np.save(path, arr, allow_pickle=True)


def all_of(split, c):
    return split.images(c, np.arange(split.counts[c]))


def test_registry_knows_the_l2b_datasets():
    assert {'cifar', 'svhn', 'cub'} <= set(KNOWN_DATASETS)


# ----------------------------------------------------------------------------- layout

def test_dense_and_ragged_splits_round_trip_memory_mapped(tmp_path):
    d = tmp_path / 'svhn'
    valid = [images(3, (32, 32, 3), c) for c in range(10)]
    test = [images(2 + c % 4, (32, 32, 3), 10 + c) for c in range(10)]
    assert perclass.write_classes(d, 'valid', valid) == [d / 'valid.npy']
    assert perclass.write_classes(d, 'test', test) == [d / 'test.npy', d / 'test_counts.npy']
    assert not [p for p in os.listdir(d) if p.endswith('.tmp')]
    tracemalloc.start()
    try:
        ds = svhn.load(str(tmp_path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000, f'loading allocated {peak} bytes: the files were copied'
    assert isinstance(ds.val._stacked, np.memmap) and ds.val._stacked.shape == (10, 3, 32, 32, 3)
    assert ds.test._stacked is None and not any(a.flags.owndata for a in ds.test._classes)  # views
    for c in range(10):
        np.testing.assert_array_equal(all_of(ds.val, c), valid[c] / np.float32(255))
        np.testing.assert_array_equal(all_of(ds.test, c), test[c] / np.float32(255))
    assert ds.val.class_name(9) == 'digit0' and ds.val.class_name(0) == 'digit1'
    ep = EpisodeSampler(ds.test, way=5, shot=1, query=1).sample(np.random.default_rng(0), 2)
    assert ep.xs.shape == (2, 5, 32, 32, 3)
    # A dense rewrite removes the old counts file.
    perclass.write_classes(d, 'test', [images(2, (32, 32, 3), 0)] * 10)
    assert not (d / 'test_counts.npy').exists()
    assert (svhn.load(str(tmp_path)).test.counts == 2).all()


def test_counts_that_do_not_fit_are_reported(tmp_path):
    d = tmp_path / 'cub'
    perclass.write_classes(d, 'valid', [images(2, (84, 84, 3), 0), images(3, (84, 84, 3), 1)])
    perclass.write_classes(d, 'test', [images(1, (84, 84, 3), 2), images(2, (84, 84, 3), 3)])
    np.save(d / 'test_counts.npy', np.array([1, 1]))
    with pytest.raises(DatasetError, match=r'test_counts.npy does not fit.*--dataset cub.*--force'):
        cub.load(str(tmp_path))
    os.remove(d / 'test_counts.npy')
    with pytest.raises(DatasetError, match=r'test_counts.npy.*is missing.*--force'):
        cub.load(str(tmp_path))


def test_names_come_from_info_json_when_the_counts_match(tmp_path):
    d = tmp_path / 'cub'
    for stem in ('valid', 'test'):
        perclass.write_classes(d, stem, [images(2, (84, 84, 3), 0), images(1, (84, 84, 3), 1)])
    perclass.write_info(d, {'build': {'source_name': 'caltech'}, 'splits': {
        'valid': {'classes': ['002.A', '006.B'], 'counts': [2, 1]},
        'test': {'classes': ['004.C', '008.D'], 'counts': [5, 5]}}})      # stale: not used
    ds = cub.load(str(tmp_path))
    assert [ds.val.class_name(c) for c in range(2)] == ['002.A', '006.B']
    assert ds.test.class_name(0) == 'test.npy/class000'


# ----------------------------------------------------------------------------- missing data, OOD

@pytest.mark.parametrize('name', ['cifar', 'svhn', 'cub'])
def test_missing_data_names_the_get_data_command(tmp_path, name):
    with pytest.raises(DatasetError) as e:
        load_dataset(name, str(tmp_path))
    assert f'python data/get_data.py --dataset {name} --data_root {tmp_path}' in str(e.value)


def test_one_missing_split_is_named(tmp_path):
    d = tmp_path / 'cifar'
    for stem in ('train', 'test'):
        perclass.write_classes(d, stem, [images(2, (32, 32, 3), c) for c in range(3)])
    with pytest.raises(DatasetError, match=r'valid\.npy is missing \(the val split of cifar\). Get it with: '
                                            r'python data/get_data.py --dataset cifar'):
        load_dataset('cifar', str(tmp_path))


def test_ood_datasets_have_no_train_split(tmp_path):
    d = tmp_path / 'svhn'
    for stem in ('valid', 'test'):
        perclass.write_classes(d, stem, [images(2, (32, 32, 3), c) for c in range(10)])
    ds = load_dataset('svhn', str(tmp_path))
    assert ds.train is None and ds.split('val') is ds.val and ds.split('test') is ds.test
    with pytest.raises(DatasetError) as e:
        ds.split('train')
    msg = str(e.value)
    assert 'svhn is an out-of-distribution dataset with no training split' in msg
    assert '--ood_dataset svhn' in msg
    assert 'no train split' in ds.description


# ----------------------------------------------------------------------------- the original's files

def test_original_dense_float_files_are_used_as_stored(tmp_path):
    d = tmp_path / 'cifar'
    d.mkdir()
    arrays = {}
    for stem, n in cifar.SPLIT_SIZES.items():
        arrays[stem] = np.random.default_rng(n).integers(0, 256, (n, 2, 32, 32, 3)) / 255.0   # float64
        np.save(d / f'{stem}.npy', arrays[stem])
    ds = load_dataset('cifar', str(tmp_path))
    assert 'float64 used as stored' in ds.description
    assert ds.val.class_name(0) == 'otter' and ds.test.class_name(19) == 'worm'
    np.testing.assert_array_equal(ds.val.images(3, [0, 1]), arrays['valid'][3].astype(np.float32))


def test_object_array_is_never_unpickled_by_the_reader_and_converts_once(tmp_path):
    d = tmp_path / 'cub'
    d.mkdir()
    valid = [images(2, (84, 84, 3), 0), images(3, (84, 84, 3), 1)]
    write_object_npy(d / 'valid.npy', [v / 255.0 for v in valid])
    perclass.write_classes(d, 'test', [images(1, (84, 84, 3), 2)])
    with pytest.raises(DatasetError) as e:
        cub.load(str(tmp_path))
    msg = str(e.value)
    assert 'pickled object array' in msg and 'never loaded with allow_pickle' in msg
    assert f'python data/get_data.py --dataset cub --data_root {tmp_path}' in msg
    assert 'convert_object_npy' in msg
    summary = perclass.convert_object_npy(d / 'valid.npy', (84, 84, 3))
    assert '2 classes x 2..3 images converted' in summary
    assert perclass.convert_object_npy(d / 'valid.npy', (84, 84, 3)) is None     # already converted
    ds = cub.load(str(tmp_path))
    for c in range(2):
        np.testing.assert_array_equal(all_of(ds.val, c), valid[c] / np.float32(255))


def test_object_array_pickle_asking_for_os_system_is_refused(tmp_path):
    marker = tmp_path / 'it-ran'
    path = tmp_path / 'cub' / 'valid.npy'
    path.parent.mkdir()
    with open(path, 'wb') as f:      # an object-array npy header, then a pickle that runs a command
        np.lib.format.write_array_header_1_0(f, {'descr': '|O', 'fortran_order': False, 'shape': (1,)})
        pickle.dump([RunsACommand(f'touch {marker}')], f, protocol=2)
    before = path.read_bytes()
    with pytest.raises(DatasetError) as e:
        perclass.convert_object_npy(path, (84, 84, 3))
    assert 'is refused' in str(e.value) and 'system' in str(e.value) and 'could run code' in str(e.value)
    assert not marker.exists()                                  # nothing was executed
    assert path.read_bytes() == before and sorted(os.listdir(path.parent)) == ['valid.npy']
    with pytest.raises(DatasetError, match='never loaded'):      # the reader does not even try
        perclass.read_split(path.parent, 'valid', 'cub', (84, 84, 3), 'CMD')
    assert not marker.exists()


def test_object_array_written_by_old_numpy_converts(tmp_path):
    """Pickles from numpy 1.x (l2b's era) name numpy.core.multiarray, not numpy._core."""
    classes = [images(1, (84, 84, 3), 5), images(2, (84, 84, 3), 6)]
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = classes[0] / 255.0, classes[1] / 255.0
    # numpy 1.x's np.save: pickle protocol 3, whose GLOBAL opcodes name modules as text.
    body = pickle.dumps(arr, protocol=3).replace(b'numpy._core.multiarray\n', b'numpy.core.multiarray\n')
    assert b'numpy.core.multiarray' in body
    path = tmp_path / 'test.npy'
    with open(path, 'wb') as f:
        np.lib.format.write_array_header_1_0(f, {'descr': '|O', 'fortran_order': False, 'shape': (2,)})
        f.write(body)
    perclass.convert_object_npy(path, (84, 84, 3))
    split = perclass.read_split(tmp_path, 'test', 'cub', (84, 84, 3), 'CMD')
    np.testing.assert_array_equal(all_of(split, 1), classes[1] / np.float32(255))


@pytest.mark.parametrize('bad, says', [
    ([np.zeros((1, 32, 32, 3))], 'not a non-empty array [n, 84, 84, 3]'),
    ([np.full((1, 84, 84, 3), np.nan)], 'outside [0, 1]'),
    ([np.full((1, 84, 84, 3), -0.5)], 'outside [0, 1]'),
    ([np.zeros((1, 84, 84, 3), np.int32)], 'int32 values'),
], ids=['shape', 'nan', 'negative', 'int'])
def test_conversion_refuses_what_is_not_l2b_images(tmp_path, bad, says):
    path = tmp_path / 'valid.npy'
    write_object_npy(path, bad)
    with pytest.raises(DatasetError) as e:
        perclass.convert_object_npy(path, (84, 84, 3))
    assert says in str(e.value)
    assert not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]


def test_conversion_rounds_l2b_values_back_to_the_pixels(tmp_path):
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 1, 256, 1).repeat(84, 1)[:, :, :84].repeat(3, 3)
    path = tmp_path / 'valid.npy'
    write_object_npy(path, [pixels / 255.0, np.flip(pixels, 2) / 255.0])
    perclass.convert_object_npy(path, (84, 84, 3))
    stored = np.load(path)
    np.testing.assert_array_equal(stored, np.stack([pixels, np.flip(pixels, 2)]))   # equal sizes: dense


# ----------------------------------------------------------------------------- miniImageNet valid.npy

def test_mimgnet_uses_valid_npy_when_present(tmp_path):
    write_npy(tmp_path)                                   # metadrop pair: validation = test
    assert load_dataset('mimgnet', str(tmp_path)).val_is_test
    val = images(6, (84, 84, 3), 9).reshape(2, 3, 84, 84, 3)
    np.save(tmp_path / 'mimgnet' / 'valid.npy', val)
    ds = load_dataset('mimgnet', str(tmp_path))
    assert not ds.val_is_test and ds.val is not ds.test and ds.val.n_classes == 2
    assert isinstance(ds.val._stacked, np.memmap)
    np.testing.assert_array_equal(ds.val.images(1, [2]), val[1, 2:3] / np.float32(255))
    assert 'val 2' in ds.description


def test_mimgnet_object_array_points_at_the_l2b_conversion(tmp_path):
    write_npy(tmp_path)
    write_object_npy(tmp_path / 'mimgnet' / 'valid.npy', [np.zeros((1, 84, 84, 3))])
    with pytest.raises(DatasetError) as e:
        load_dataset('mimgnet', str(tmp_path))
    assert 'never loaded' in str(e.value)
    assert f'python data/get_data.py --dataset mimgnet --source l2b --data_root {tmp_path}' in str(e.value)


def test_cifar_fs_split_is_64_16_20_distinct_names():
    names = [n for stem in ('train', 'valid', 'test') for n in cifar.CLASS_NAMES[stem]]
    assert [len(cifar.CLASS_NAMES[s]) for s in ('train', 'valid', 'test')] == [64, 16, 20]
    assert len(set(names)) == 100
    assert {'otter', 'cattle', 'sea'} <= set(cifar.CLASS_NAMES['valid'])
    assert {'baby', 'worm', 'sweet_pepper'} <= set(cifar.CLASS_NAMES['test'])


def test_svhn_mat_that_is_not_matlab_is_reported(tmp_path):
    page = tmp_path / 'train_32x32.mat'
    page.write_bytes(b'<html>Service unavailable</html>')
    with pytest.raises(DatasetError, match='not a readable MATLAB file.*download it again'):
        svhn.read_mat(page)


def test_svhn_original_object_test_file_gives_a_conversion_one_liner(tmp_path):
    d = tmp_path / 'svhn'
    d.mkdir()
    valid = np.random.default_rng(0).integers(0, 256, (10, 2, 32, 32, 3)) / 255.0    # l2b: dense float64
    np.save(d / 'valid.npy', valid)
    test = [images(1 + c % 2, (32, 32, 3), c) for c in range(10)]
    write_object_npy(d / 'test.npy', [t / 255.0 for t in test])                      # l2b: object array
    with pytest.raises(DatasetError) as e:
        svhn.load(str(tmp_path))
    msg = str(e.value)
    one_liner = msg[msg.index('python -c "'):].split('"')[1]
    assert 'convert_object_npy' in one_liner and '(32, 32, 3)' in one_liner
    assert f'python data/get_data.py --dataset svhn --data_root {tmp_path}' in msg
    exec(one_liner, {})                                                     # what the user runs
    ds = svhn.load(str(tmp_path))
    np.testing.assert_array_equal(all_of(ds.test, 3), test[3] / np.float32(255))
    np.testing.assert_array_equal(ds.val.images(9, [1]), valid[9, 1:2].astype(np.float32))
