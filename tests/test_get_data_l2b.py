"""get_data.py end to end for Bayesian TAML's datasets (CIFAR-FS, SVHN, CUB, l2b's miniImageNet):
tiny files in the real formats, served by the local HTTP server (127.0.0.1 only), then read
back with load_dataset and compared with the source pixels."""
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import scipy.io
from PIL import Image

from data import cifar, get_data, mimgnet
from data.datasets import DatasetError, load_dataset
from tests import test_download
from tests.test_get_data import npy_bytes, run

server = test_download.server          # the local file-server fixture (127.0.0.1)
FINE_NAMES = sorted(n for names in cifar.CLASS_NAMES.values() for n in names)   # CIFAR-100's order


def float_images(split, c):
    return split.images(c, np.arange(split.counts[c]))


def as_read(uint8_images):
    """What ClassSplit returns for uint8 storage: x / 255 in float32."""
    return uint8_images.astype(np.float32) / np.float32(255)


def tar_gz(members):
    """members: [(name, bytes)] -> the bytes of a .tar.gz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# ----------------------------------------------------------------------------- CIFAR-FS

def cifar_archive(train_per_class=3, test_per_class=1, seed=0, extra=()):
    """A cifar-100-python.tar.gz with the real pickle structure: dicts with bytes keys, data
    uint8 [N, 3072] (R, G, B planes), fine_labels, filenames; meta with the 100 fine names."""
    rng = np.random.default_rng(seed)
    batches = {}
    for batch, per in (('train', train_per_class), ('test', test_per_class)):
        labels = np.tile(np.arange(100), per)
        rng.shuffle(labels)
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        batches[batch] = (data, labels)
        batches[batch + '_pickle'] = pickle.dumps({
            b'filenames': [f'{FINE_NAMES[lab]}_s_{i:06d}.png'.encode() for i, lab in enumerate(labels)],
            b'batch_label': f'{batch}ing batch 1 of 1'.encode(),
            b'fine_labels': labels.tolist(), b'coarse_labels': (labels // 5).tolist(),
            b'data': data}, protocol=2)
    meta = pickle.dumps({b'fine_label_names': [n.encode() for n in FINE_NAMES],
                         b'coarse_label_names': [f'super{i}'.encode() for i in range(20)]}, protocol=2)
    archive = tar_gz([('cifar-100-python/meta', meta), ('cifar-100-python/train', batches['train_pickle']),
                      ('cifar-100-python/test', batches['test_pickle'])] + list(extra))
    return archive, batches


def l2b_image(row):
    """l2b's own conversion of a CIFAR row: reshape((32, 32, 3), order='F').swapaxes(0, 1)."""
    return row.reshape((32, 32, 3), order='F').swapaxes(0, 1)


def cifar_expected(batches, name):
    c = FINE_NAMES.index(name)
    rows = [row for batch in ('train', 'test') for row, lab in zip(*batches[batch]) if lab == c]
    return np.stack([l2b_image(r) for r in rows])


def test_cifar_end_to_end_exact_then_jpeg(server, tmp_path, capsys):
    archive, batches = cifar_archive()
    server.add('/m/cifar-100-python.tar.gz', archive)
    argv = ['--dataset', 'cifar', '--data_root', str(tmp_path), '--base_url', server.url + '/m', '--no_verify']
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert 'pixels exact' in out
    d = tmp_path / 'cifar'
    assert sorted(p.name for p in d.iterdir()) == ['cifar-100-python.tar.gz', 'info.json', 'test.npy',
                                                  'train.npy', 'valid.npy']   # staging removed
    assert np.load(d / 'train.npy', mmap_mode='r').shape == (64, 4, 32, 32, 3)   # dense uint8
    ds = load_dataset('cifar', str(tmp_path))
    assert ds.val_is_test is False and ds.image_shape == (32, 32, 3)
    for field, stem in (('train', 'train'), ('val', 'valid'), ('test', 'test')):
        split = ds.split(field)
        assert split.n_classes == cifar.SPLIT_SIZES[stem] and (split.counts == 4).all()
        for c, name in enumerate(cifar.CLASS_NAMES[stem]):
            assert split.class_name(c) == name                  # membership by name
            np.testing.assert_array_equal(float_images(split, c), as_read(cifar_expected(batches, name)))

    # Unchanged archive and options: nothing is rebuilt.
    code, out, _ = run(argv, capsys)
    assert code == 0 and 'up to date' in out
    # --jpeg_roundtrip changes the options, so the splits are rebuilt (no --force needed).
    code, out, err = run(argv + ['--jpeg_roundtrip'], capsys)
    assert code == 0, err
    assert 'JPEG round trip' in out
    ds = load_dataset('cifar', str(tmp_path))
    exact = cifar_expected(batches, 'otter')
    lossy = np.empty_like(exact)
    for i, im in enumerate(exact):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format='JPEG')              # PIL's default quality, as l2b
        lossy[i] = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    got = float_images(ds.val, cifar.CLASS_NAMES['valid'].index('otter'))
    np.testing.assert_array_equal(got, as_read(lossy))
    assert not np.array_equal(got, as_read(exact))


def test_cifar_archive_md5_is_known(server, tmp_path, capsys):
    assert get_data.DATASETS['cifar'].sources['official'].files[0].md5 == 'eb9058c3a382ffc7106e4002c42a8d85'
    server.add('/cifar-100-python.tar.gz', cifar_archive(1, 0)[0])
    code, _, err = run(['--dataset', 'cifar', '--data_root', str(tmp_path), '--base_url', server.url], capsys)
    assert code == 1 and 'eb9058c3a382ffc7106e4002c42a8d85' in err and '--no_verify' in err


@pytest.mark.parametrize('evil', ['../evil.txt', 'ABSOLUTE'])
def test_cifar_archive_member_escaping_the_folder_is_refused(server, tmp_path, capsys, evil):
    outside = tmp_path / 'abs_evil.txt'
    name = str(outside) if evil == 'ABSOLUTE' else evil
    archive, _ = cifar_archive(1, 0, extra=[(name, b'oops')])
    server.add('/cifar-100-python.tar.gz', archive)
    root = tmp_path / 'root'
    code, _, err = run(['--dataset', 'cifar', '--data_root', str(root), '--base_url', server.url,
                        '--no_verify'], capsys)
    assert code == 1 and 'Refusing to extract' in err and 'Nothing was extracted' in err
    assert 'Traceback' not in err
    assert not outside.exists() and not (root / 'evil.txt').exists() and not (tmp_path / 'evil.txt').exists()
    assert sorted(os.listdir(root / 'cifar')) == ['cifar-100-python.tar.gz']   # staging removed


def test_cifar_pickle_asking_for_code_is_refused(server, tmp_path, capsys):
    marker = tmp_path / 'it-ran'
    evil = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    archive, _ = cifar_archive(1, 0)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]
    members = [(n, evil if n.endswith('/meta') else b) for n, b in members]
    server.add('/cifar-100-python.tar.gz', tar_gz(members))
    code, _, err = run(['--dataset', 'cifar', '--data_root', str(tmp_path), '--base_url', server.url,
                        '--no_verify'], capsys)
    assert code == 1 and 'is refused' in err and 'os.system' in err
    assert not marker.exists()


def test_option_flags_belong_to_their_dataset(tmp_path, capsys):
    for argv, says in ((['--dataset', 'svhn', '--jpeg_roundtrip'], '--jpeg_roundtrip only applies'),
                       (['--dataset', 'cifar', '--svhn_val', 'random'], '--svhn_val only applies')):
        with pytest.raises(SystemExit) as exc:
            get_data.main(argv + ['--data_root', str(tmp_path)])
        assert exc.value.code == 2 and says in capsys.readouterr().err


# ----------------------------------------------------------------------------- SVHN

def svhn_mat(labels, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {'X': x, 'y': np.asarray(labels, np.uint8).reshape(-1, 1)})   # MATLAB v5
    return buf.getvalue(), x.transpose(3, 0, 1, 2), np.asarray(labels)


def serve_svhn(server, val_idx):
    rng = np.random.default_rng(5)
    train_labels = rng.permutation(np.repeat(np.arange(1, 11), 6))          # 6 per digit, shuffled
    test_labels = rng.permutation(np.concatenate([np.full(c % 3 + 1, c) for c in range(1, 11)]))
    train, train_x, _ = svhn_mat(train_labels, 1)
    test, test_x, _ = svhn_mat(test_labels, 2)
    server.add('/s/train_32x32.mat', train)
    server.add('/s/test_32x32.mat', test)
    server.add('/s/val_idx.npy', npy_bytes(val_idx))
    return (train_x, train_labels), (test_x, test_labels)


def test_svhn_fixed_validation_and_ragged_test(server, tmp_path, capsys):
    val_idx = np.array([[(3 * c + k) % 6 for k in range(4)] for c in range(10)], dtype=np.int64)
    (train_x, train_y), (test_x, test_y) = serve_svhn(server, val_idx)
    code, out, err = run(['--dataset', 'svhn', '--data_root', str(tmp_path), '--base_url',
                          server.url + '/s', '--no_verify'], capsys)
    assert code == 0, err
    d = tmp_path / 'svhn'
    assert {'valid.npy', 'test.npy', 'test_counts.npy'} <= {p.name for p in d.iterdir()}
    ds = load_dataset('svhn', str(tmp_path))
    assert ds.train is None and not ds.val_is_test
    with pytest.raises(DatasetError, match='out-of-distribution dataset with no training split'):
        ds.split('train')
    assert ds.val.n_classes == 10 and (ds.val.counts == 4).all()
    for c in range(10):
        label = c + 1                                            # class 9 holds label 10 (digit 0)
        assert ds.val.class_name(c) == f'digit{label % 10}'
        of_class = train_x[train_y == label]                    # this class's train images, file order
        np.testing.assert_array_equal(float_images(ds.val, c), as_read(of_class[val_idx[c]]))
        np.testing.assert_array_equal(float_images(ds.test, c), as_read(test_x[test_y == label]))
    assert list(ds.test.counts) == [c % 3 + 1 for c in range(1, 11)]   # ragged


def test_svhn_random_validation_is_l2b_ver2(server, tmp_path, capsys):
    (train_x, train_y), _ = serve_svhn(server, np.zeros((10, 1), np.int64))
    code, out, err = run(['--dataset', 'svhn', '--data_root', str(tmp_path), '--base_url',
                          server.url + '/s', '--no_verify', '--svhn_val', 'random'], capsys)
    assert code == 0, err
    ds = load_dataset('svhn', str(tmp_path))
    state = np.random.get_state()
    try:
        np.random.seed(222)                                     # l2b's --ver 2, verbatim in spirit
        for c in range(10):
            of_class = train_x[train_y == c + 1]
            idx = np.arange(len(of_class))
            np.random.shuffle(idx)
            np.testing.assert_array_equal(float_images(ds.val, c), as_read(of_class[idx[:600]]))
    finally:
        np.random.set_state(state)


def test_svhn_registry_and_bad_val_idx(server, tmp_path, capsys):
    files = {f.filename: f for f in get_data.DATASETS['svhn'].sources['official'].files}
    assert files['train_32x32.mat'].md5 == 'e26dedcc434d2e4c54c9b2d4a06d8373'
    assert files['val_idx.npy'].url.endswith('haebeom-lee/l2b/master/data/svhn/val_idx.npy')
    serve_svhn(server, np.full((10, 2), 7, np.int64))            # classes have 6 train images
    code, _, err = run(['--dataset', 'svhn', '--data_root', str(tmp_path), '--base_url',
                        server.url + '/s', '--no_verify'], capsys)
    assert code == 1 and 'val_idx.npy row 0 indexes image 7' in err and 'per class' in err


# ----------------------------------------------------------------------------- CUB

def jpeg_bytes(rng, size, mode='RGB'):
    w, h = size
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode).save(buf, format='JPEG')
    return buf.getvalue()


def cub_archive():
    """CUB_200_2011/images/<NNN>.<name>/*.jpg for ids 1..8 (2, 6 -> valid; 4, 8 -> test)."""
    rng = np.random.default_rng(3)
    members, images = [('CUB_200_2011/classes.txt', b'1 001.A\n')], {}
    for cid in range(1, 9):
        folder = f'{cid:03d}.Bird_{cid}'
        n = 2 + cid % 3
        names = [f'Bird_{cid}_{k:04d}_{100 + k}.jpg' for k in range(n)][::-1]   # stored out of order
        for k, name in enumerate(names):
            mode = 'L' if (cid, k) == (2, 1) else 'RGB'          # one greyscale JPEG, to be dropped
            data = jpeg_bytes(rng, (90 + 7 * k, 70 + 5 * cid), mode)
            members.append((f'CUB_200_2011/images/{folder}/{name}', data))
            images[(folder, name)] = (data, mode)
    return tar_gz(members), images


def cub_expected(images, folder):
    rows = []
    for (f, name), (data, mode) in sorted(images.items()):
        if f == folder and mode == 'RGB':
            rows.append(np.array(Image.open(io.BytesIO(data)).resize((84, 84))))
    return np.stack(rows)


def test_cub_caltech_source(server, tmp_path, capsys):
    archive, images = cub_archive()
    server.add('/CUB_200_2011.tgz', archive)
    code, out, err = run(['--dataset', 'cub', '--source', 'caltech', '--data_root', str(tmp_path),
                          '--base_url', server.url, '--no_verify'], capsys)
    assert code == 0, err
    assert '1 non-RGB dropped' in out
    ds = load_dataset('cub', str(tmp_path))
    assert ds.train is None and 'CUB_200_2011.tgz' in ds.description
    with pytest.raises(DatasetError, match='--ood_dataset cub'):
        ds.split('train')
    want = {'val': ['002.Bird_2', '006.Bird_6'], 'test': ['004.Bird_4', '008.Bird_8']}   # id mod 4
    for field, folders in want.items():
        split = ds.split(field)
        assert [split.class_name(c) for c in range(split.n_classes)] == folders
        for c, folder in enumerate(folders):
            np.testing.assert_array_equal(float_images(split, c), as_read(cub_expected(images, folder)))
    assert list(ds.val.counts) == [2 + 2 % 3 - 1, 2 + 6 % 3]     # class 002 lost its greyscale image
    files = {f.filename: f for f in get_data.DATASETS['cub'].sources['caltech'].files}
    assert files['CUB_200_2011.tgz'].md5 == '97eceeb196236b17998738112f37df78'


def object_npy_bytes(classes):
    arr = np.empty(len(classes), dtype=object)
    for i, c in enumerate(classes):
        arr[i] = c
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def l2b_classes(counts, shape=(84, 84, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (n,) + shape, dtype=np.uint8) for n in counts]


def test_cub_l2b_dropbox_object_arrays_are_converted(server, tmp_path, capsys):
    valid, test = l2b_classes([2, 3, 1], seed=1), l2b_classes([1, 2], seed=2)
    server.add('/dl/valid.npy', object_npy_bytes([c / 255.0 for c in valid]))   # float64, as l2b
    server.add('/dl/test.npy', object_npy_bytes([c / 255.0 for c in test]))
    argv = ['--dataset', 'cub', '--data_root', str(tmp_path), '--url_override',
            f'valid={server.url}/dl/valid.npy?dl=1', '--url_override', f'test.npy={server.url}/dl/test.npy?dl=1']
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert 'converted to uint8' in out
    d = tmp_path / 'cub'
    assert np.load(d / 'valid.npy', mmap_mode='r').dtype == np.uint8
    ds = load_dataset('cub', str(tmp_path))
    for split, classes in ((ds.val, valid), (ds.test, test)):
        assert list(split.counts) == [len(c) for c in classes]
        for c, images in enumerate(classes):
            np.testing.assert_array_equal(float_images(split, c), as_read(images))
    # A rerun keeps the converted files (no download, no conversion).
    server.log.clear()
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert server.log == [] and 'already usable' in out
    defaults = {f.name: f.url for f in get_data.DATASETS['cub'].sources['l2b'].files}
    assert defaults == {'valid': 'https://www.dropbox.com/s/2cv4lfdmaja0wq6/valid.npy?dl=1',
                        'test': 'https://www.dropbox.com/s/1oxiehzuqvuil60/test.npy?dl=1'}


def test_cub_switching_from_caltech_to_l2b_replaces_the_files(server, tmp_path, capsys):
    archive, _ = cub_archive()
    server.add('/CUB_200_2011.tgz', archive)
    valid, test = l2b_classes([2, 1], seed=4), l2b_classes([1], seed=5)
    server.add('/valid.npy', object_npy_bytes([c / 255.0 for c in valid]))
    server.add('/test.npy', object_npy_bytes([c / 255.0 for c in test]))
    base = ['--data_root', str(tmp_path), '--base_url', server.url, '--no_verify', '--dataset', 'cub']
    assert run(base + ['--source', 'caltech'], capsys)[0] == 0
    code, _, err = run(base, capsys)
    assert code == 0, err
    ds = load_dataset('cub', str(tmp_path))
    assert list(ds.val.counts) == [2, 1] and "l2b's Dropbox files" in ds.description
    np.testing.assert_array_equal(float_images(ds.test, 0), as_read(test[0]))


@pytest.mark.parametrize('body, says', [
    (b'<html>Dropbox: this link is gone</html>', 'not a readable .npy array'),
    (npy_bytes(np.zeros((2, 3, 32, 32, 3), np.uint8)), 'not per-class images'),
], ids=['html', 'shape'])
def test_cub_unusable_download_is_deleted(server, tmp_path, capsys, body, says):
    server.add('/valid.npy', body)
    code, _, err = run(['--dataset', 'cub', '--data_root', str(tmp_path), '--base_url', server.url], capsys)
    assert code == 1 and says in err and 'deleted' in err and 'Traceback' not in err
    assert os.listdir(tmp_path / 'cub') == []


def test_cub_values_outside_0_1_are_refused(server, tmp_path, capsys):
    server.add('/valid.npy', object_npy_bytes([np.full((1, 84, 84, 3), 2.0)]))
    server.add('/test.npy', object_npy_bytes([np.zeros((1, 84, 84, 3))]))
    code, _, err = run(['--dataset', 'cub', '--data_root', str(tmp_path), '--base_url', server.url], capsys)
    assert code == 1 and 'outside [0, 1]' in err


# ----------------------------------------------------------------------------- miniImageNet (l2b)

def test_mimgnet_l2b_source(server, tmp_path, capsys, monkeypatch):
    # The real files hold 64/16/20 classes x 600 images; serve 3/2/2 x 2 and expect those.
    monkeypatch.setattr(mimgnet, 'METADROP_PER_CLASS', 2)
    monkeypatch.setattr(mimgnet, 'L2B_CLASSES', {'train': 3, 'valid': 2, 'test': 2})
    train = l2b_classes([2, 2, 2], seed=6)
    valid = l2b_classes([2, 2], seed=7)
    test = np.stack(l2b_classes([2, 2], seed=8)).astype(np.float32) / 255      # dense float
    server.add('/train.npy', npy_bytes(np.stack(train)))                        # dense uint8
    server.add('/valid.npy', object_npy_bytes([c / 255.0 for c in valid]))      # object array
    server.add('/test.npy', npy_bytes(test))
    code, out, err = run(['--dataset', 'mimgnet', '--source', 'l2b', '--data_root', str(tmp_path),
                          '--base_url', server.url], capsys)
    assert code == 0, err
    ds = load_dataset('mimgnet', str(tmp_path))
    assert not ds.val_is_test and ds.val is not ds.test and 'valid.npy' in ds.description
    assert (ds.train.n_classes, ds.val.n_classes, ds.test.n_classes) == (3, 2, 2)
    np.testing.assert_array_equal(float_images(ds.train, 1), as_read(train[1]))
    np.testing.assert_array_equal(float_images(ds.val, 1), as_read(valid[1]))
    np.testing.assert_array_equal(float_images(ds.test, 0), test[0])          # float: used as stored
    urls = {f.name: f.url for f in get_data.DATASETS['mimgnet'].sources['l2b'].files}
    assert urls == {'train': 'https://www.dropbox.com/s/llfp5p6vymiabzl/train.npy?dl=1',
                    'valid': 'https://www.dropbox.com/s/f1jz6valn6j42jk/valid.npy?dl=1',
                    'test': 'https://www.dropbox.com/s/o0mg0b83978yu5y/test.npy?dl=1'}


def test_mimgnet_l2b_wrong_class_count_is_deleted(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mimgnet, 'METADROP_PER_CLASS', 2)
    monkeypatch.setattr(mimgnet, 'L2B_CLASSES', {'train': 3, 'valid': 2, 'test': 2})
    server.add('/train.npy', object_npy_bytes([c / 255.0 for c in l2b_classes([2, 2])]))  # 2, not 3
    code, _, err = run(['--dataset', 'mimgnet', '--source', 'l2b', '--data_root', str(tmp_path),
                        '--base_url', server.url], capsys)
    assert code == 1 and 'not a list of 3 classes' in err and 'deleted' in err
    assert os.listdir(tmp_path / 'mimgnet') == []
    assert mimgnet.get_data_command('R', 'l2b') == 'python data/get_data.py --dataset mimgnet --source l2b --data_root R'
