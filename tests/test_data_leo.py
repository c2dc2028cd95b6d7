"""LEO's embedding files (data/leo.py) and `get_data.py --dataset leo`: tiny files in the real
layout <data_path>/<dataset>/<crop>/<split>_embeddings.pkl, pickled with protocol 2 as Python 2
wrote them, read back and compared with numpy."""
import io
import logging
import os
import pickle
import stat
import struct
import zipfile

import numpy as np
import pytest

from data import leo
from data.datasets import KNOWN_DATASETS, DatasetError, load_dataset
from data.episodes import ClassSplit, EpisodeSampler
from tests import test_download
from tests.test_get_data import run

server = test_download.server          # the local file-server fixture (127.0.0.1)
D = 8                                  # embedding size of the tiny files (640 in LEO's)


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (SHORT_BINSTRING / BINSTRING), the opcodes of the real
    files; loaded with encoding='latin1' they come back as str, as for LEO's pickles."""
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_str2(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256
                   else pickle.BINSTRING + struct.pack('<i', n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_str2


def py2_bytes(obj):
    """A protocol-2 pickle in Python 2's form: py2 str for bytes, numpy.core module names."""
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b'numpy._core.multiarray', b'numpy.core.multiarray')


def keys_array(keys, kind):
    if kind == 'S':
        return np.array([k.encode() for k in keys])                  # dtype 'S'
    if kind == 'object':
        return np.array(keys, dtype=object)                          # object array of str
    if kind == 'py2':
        return np.array([k.encode() for k in keys], dtype=object)    # py2 str objects (see Py2Pickler)
    return np.array(keys)                                            # 'U'


def write_pickle(path, emb, keys, kind='S'):
    path.parent.mkdir(parents=True, exist_ok=True)
    d = {'embeddings': np.asarray(emb, np.float32), 'keys': keys_array(keys, kind)}
    if kind == 'py2':
        path.write_bytes(py2_bytes({b'embeddings': d['embeddings'], b'keys': d['keys']}))
    else:
        with open(path, 'wb') as f:
            pickle.dump(d, f, protocol=2)
    return d['embeddings']


def make_split(classes, per_class, seed, interleave=True):
    """(embeddings float32 [n, D], keys) of `per_class` images for each wnid in `classes`.
    interleave: the keys alternate between classes, to test order of first appearance."""
    rng = np.random.default_rng(seed)
    counts = per_class if isinstance(per_class, (list, tuple)) else [per_class] * len(classes)
    entries = [(c, i) for c, n in zip(classes, counts) for i in range(n)]
    if interleave:
        entries.sort(key=lambda e: (e[1], classes.index(e[0])))
    keys = [f'{j}-{c}-{c}_{1000 + i}.JPEG' for j, (c, i) in enumerate(entries)]
    emb = rng.normal(size=(len(keys), D)).astype(np.float32) * rng.uniform(0.1, 5, (len(keys), 1)).astype(np.float32)
    return emb, keys


SPLIT_CLASSES = {'train': ['n01', 'n02', 'n03', 'n04', 'n05', 'n06'], 'val': ['n11', 'n12', 'n13', 'n14', 'n15'],
                 'test': ['n21', 'n22', 'n23', 'n24', 'n25']}


def write_dataset(folder, kind='S', per_class=7, seed=0):
    """Writes {train,val,test}_embeddings.pkl into folder; returns {split: (emb, keys)}."""
    out = {}
    for k, (split, classes) in enumerate(SPLIT_CLASSES.items()):
        emb, keys = make_split(classes, per_class, seed + k)
        write_pickle(folder / f'{split}_embeddings.pkl', emb, keys, kind)
        out[split] = (emb, keys)
    return out


def mini_dir(root, crop='center'):
    return root / 'leo' / 'embeddings' / 'miniImageNet' / crop


def np_l2(x):
    x = np.asarray(x, np.float32)
    return x / np.sqrt(np.maximum(np.square(x).sum(axis=1, keepdims=True), np.float32(1e-12)))


def expected_classes(emb, keys):
    """{class label: normalised rows in file order}, and the labels in order of first appearance."""
    order, rows = [], {}
    for x, k in zip(np_l2(emb), keys):
        label = k.split('-')[1]
        if label not in rows:
            order.append(label)
            rows[label] = []
        rows[label].append(x)
    return order, {c: np.stack(r) for c, r in rows.items()}


def all_rows(split, c):
    return split.images(c, np.arange(split.counts[c]))


# ----------------------------------------------------------------------------- reading

@pytest.mark.parametrize('kind', ['S', 'object', 'py2'])
def test_reads_py2_pickles_class_order_and_exact_l2_normalisation(tmp_path, kind):
    files = write_dataset(mini_dir(tmp_path), kind)
    ds = load_dataset('leo_mini', str(tmp_path))
    assert ds.name == 'leo_mini' and ds.image_shape == (D,) and ds.val_is_test is False
    assert 'miniImageNet center' in ds.description and f'{D}-d' in ds.description
    assert 'train 6 classes' in ds.description and 'test 5 classes' in ds.description
    for split in ('train', 'val', 'test'):
        s = ds.split(split)
        order, rows = expected_classes(*files[split])
        assert order == SPLIT_CLASSES[split]
        assert [s.class_name(c) for c in range(s.n_classes)] == order
        assert s.image_shape == (D,) and (s.counts == 7).all()
        for c, label in enumerate(order):
            got = all_rows(s, c)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, rows[label])
            np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, rtol=1e-6)


def test_l2_normalize_matches_tf_formula_and_keeps_zero_rows():
    x = np.array([[3, 4, 0], [0, 0, 0], [1e-8, 0, 0]], np.float32)
    got = leo.l2_normalize(x.copy())
    np.testing.assert_array_equal(got, np_l2(x))
    np.testing.assert_array_equal(got[0], np.array([0.6, 0.8, 0], np.float32))
    np.testing.assert_array_equal(got[1], 0)                 # eps keeps a zero row zero, not NaN
    assert got[2, 0] == np.float32(1e-8) / np.sqrt(np.float32(1e-12))   # max(sum x^2, 1e-12)


def test_unequal_class_sizes_and_grouped_file(tmp_path):
    d = mini_dir(tmp_path)
    emb, keys = make_split(['n09', 'n01', 'n05'], [3, 5, 2], 4, interleave=False)
    write_pickle(d / 'train_embeddings.pkl', emb, keys)
    for split in ('val', 'test'):
        write_pickle(d / f'{split}_embeddings.pkl', *make_split([f'n7{split[0]}'], 2, 1))
    ds = leo.load_mini(str(tmp_path))
    assert [ds.train.class_name(c) for c in range(3)] == ['n09', 'n01', 'n05']   # not sorted
    assert ds.train.counts.tolist() == [3, 5, 2]
    np.testing.assert_array_equal(all_rows(ds.train, 1), np_l2(emb[3:8]))


def test_train_on_val_concatenates_train_then_val(tmp_path):
    files = write_dataset(mini_dir(tmp_path), 'object')
    ds = load_dataset('leo_mini', str(tmp_path), train_on_val=True)
    assert ds.train.n_classes == 11 and ds.val.n_classes == 5
    names = [ds.train.class_name(c) for c in range(11)]
    assert names == SPLIT_CLASSES['train'] + SPLIT_CLASSES['val']
    _, val_rows = expected_classes(*files['val'])
    for c, label in enumerate(SPLIT_CLASSES['val']):
        np.testing.assert_array_equal(all_rows(ds.train, 6 + c), val_rows[label])
        np.testing.assert_array_equal(all_rows(ds.val, c), val_rows[label])
    assert 'train_on_val' in ds.description
    plain = load_dataset('leo_mini', str(tmp_path))
    assert plain.train.n_classes == 6


def test_train_on_val_refuses_an_image_in_both_files(tmp_path):
    d = mini_dir(tmp_path)
    write_dataset(d)
    emb, keys = make_split(['n01'], 2, 9)     # n01_1000.JPEG is also in train
    write_pickle(d / 'val_embeddings.pkl', emb, keys)
    with pytest.raises(DatasetError) as e:
        leo.load_mini(str(tmp_path), train_on_val=True)
    msg = str(e.value)
    assert 'val_embeddings.pkl (entry 0)' in msg and 'n01_1000.JPEG' in msg and 'train_embeddings.pkl' in msg
    assert 'unique' in msg


# ----------------------------------------------------------------------------- npz conversion

def test_npz_written_once_then_read_without_unpickling(tmp_path, monkeypatch, caplog):
    d = mini_dir(tmp_path)
    files = write_dataset(d)
    with caplog.at_level(logging.INFO, logger='data.leo'):
        first = leo.load_mini(str(tmp_path))
    assert sum('Converted' in r.getMessage() for r in caplog.records) == 3
    for split in ('train', 'val', 'test'):
        pkl, npz = d / f'{split}_embeddings.pkl', d / f'{split}_embeddings.npz'
        with np.load(npz, allow_pickle=False) as z:
            assert sorted(z.files) == ['embeddings', 'keys', 'source_mtime_ns', 'source_size', 'version']
            np.testing.assert_array_equal(z['embeddings'], files[split][0])    # as stored, not normalised
            assert z['embeddings'].dtype == np.float32 and z['keys'].dtype.kind == 'U'
            assert z['keys'].tolist() == files[split][1]
            assert int(z['source_size']) == pkl.stat().st_size
            assert int(z['source_mtime_ns']) == pkl.stat().st_mtime_ns
    assert not list(d.glob('*.tmp'))

    # Later loads never unpickle.
    def no_unpickling(*a, **k):
        raise AssertionError('unpickled although the npz is up to date')
    monkeypatch.setattr(leo, 'load_plain_pickle', no_unpickling)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='data.leo'):
        again = leo.load_mini(str(tmp_path))
    assert not any('Converted' in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(all_rows(again.train, 2), all_rows(first.train, 2))

    # Only the npz left: still read.
    (d / 'test_embeddings.pkl').unlink()
    np.testing.assert_array_equal(all_rows(leo.load_mini(str(tmp_path)).test, 0), all_rows(first.test, 0))
    monkeypatch.undo()

    # A replaced pickle (new size and mtime) is converted again.
    emb, keys = make_split(['n31', 'n32'], 4, 11)
    write_pickle(d / 'val_embeddings.pkl', emb, keys)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='data.leo'):
        ds = leo.load_mini(str(tmp_path))
    assert [r.getMessage() for r in caplog.records if 'Converted' in r.getMessage()][0].count('val_embeddings') == 2
    assert [ds.val.class_name(c) for c in range(2)] == ['n31', 'n32']
    np.testing.assert_array_equal(all_rows(ds.val, 1), np_l2(emb)[1::2])
    with np.load(d / 'val_embeddings.npz') as z:
        assert z['keys'].tolist() == keys


def test_same_size_pickle_with_new_mtime_is_converted_again(tmp_path):
    d = mini_dir(tmp_path)
    write_dataset(d, 'py2')
    leo.load_mini(str(tmp_path))
    emb, keys = make_split(SPLIT_CLASSES['test'], 7, 99)           # same shapes, so the same size
    pkl = d / 'test_embeddings.pkl'
    old = pkl.stat()
    write_pickle(pkl, emb, keys, 'py2')
    assert pkl.stat().st_size == old.st_size
    os.utime(pkl, ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))
    ds = leo.load_mini(str(tmp_path))
    np.testing.assert_array_equal(all_rows(ds.test, 0), expected_classes(emb, keys)[1]['n21'])


def test_read_only_folder_loads_from_the_pickle_and_warns(tmp_path, caplog):
    d = mini_dir(tmp_path)
    files = write_dataset(d)
    os.chmod(d, stat.S_IRUSR | stat.S_IXUSR)
    try:
        with caplog.at_level(logging.WARNING, logger='data.leo'):
            ds = leo.load_mini(str(tmp_path))
    finally:
        os.chmod(d, stat.S_IRWXU)
    assert not list(d.glob('*.npz'))
    assert any('could not be saved' in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(all_rows(ds.val, 0), expected_classes(*files['val'])[1]['n11'])


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_pickle_that_would_run_code_is_refused(tmp_path):
    d = mini_dir(tmp_path)
    write_dataset(d)
    marker = tmp_path / 'it-ran'
    with open(d / 'train_embeddings.pkl', 'wb') as f:
        pickle.dump({'embeddings': np.zeros((1, D), np.float32), 'keys': _RunsCode(marker)}, f, protocol=2)
    with pytest.raises(DatasetError) as e:
        leo.load_mini(str(tmp_path))
    assert 'is refused' in str(e.value) and 'system' in str(e.value)
    assert 'get_data.py --dataset leo' in str(e.value)
    assert not marker.exists()
    assert not (d / 'train_embeddings.npz').exists()


# ----------------------------------------------------------------------------- key format errors

@pytest.mark.parametrize('bad, says', [
    ('n01-n01_5.JPEG', "has 2 '-'-separated fields, expected exactly 3"),
    ('0-n01-n01_5-x.JPEG', "has 4 '-'-separated fields, expected exactly 3"),
    ('0-n01-n02_5.JPEG', "names class 'n01' but image file 'n02_5.JPEG'"),
    ('0-n21-n21_1000.JPEG', "repeats image file 'n21_1000.JPEG'"),
])
def test_key_format_errors_name_file_key_and_expected_form(tmp_path, bad, says):
    d = mini_dir(tmp_path)
    write_dataset(d)
    emb, keys = make_split(SPLIT_CLASSES['test'], 3, 5)
    keys[4] = bad
    write_pickle(d / 'test_embeddings.pkl', emb, keys)
    with pytest.raises(DatasetError) as e:
        leo.load_mini(str(tmp_path))
    msg = str(e.value)
    assert str(d / 'test_embeddings.pkl') in msg and '(entry 4)' in msg and repr(bad) in msg and says in msg
    if 'repeats' in says:
        assert 'unique' in msg
    else:
        assert "'<ignored>-<class_label>-<image_file>'" in msg
    assert not (d / 'test_embeddings.npz').exists()        # nothing is saved for a refused file


def test_structural_errors(tmp_path):
    d = mini_dir(tmp_path)
    write_dataset(d)
    emb, keys = make_split(['n21'], 3, 5)
    with open(d / 'test_embeddings.pkl', 'wb') as f:
        pickle.dump({'embeddings': emb[:2], 'keys': np.array(keys)}, f, protocol=2)
    with pytest.raises(DatasetError, match='2 embedding rows but 3 keys'):
        leo.load_mini(str(tmp_path))
    with open(d / 'test_embeddings.pkl', 'wb') as f:
        pickle.dump({'embeddings': emb}, f, protocol=2)
    with pytest.raises(DatasetError, match="no 'keys' entry"):
        leo.load_mini(str(tmp_path))


# ----------------------------------------------------------------------------- missing files, options

def test_missing_files_give_the_exact_get_data_command(tmp_path):
    root = tmp_path / 'root'
    with pytest.raises(DatasetError) as e:
        load_dataset('leo_mini', str(root))
    msg = str(e.value)
    assert f'python data/get_data.py --dataset leo --data_root {root}' in msg
    assert str(root / 'leo' / 'embeddings' / 'miniImageNet' / 'center' / 'train_embeddings.pkl') in msg
    assert leo.get_data_command(str(root)) == f'python data/get_data.py --dataset leo --data_root {root}'
    # A data_path one level too high is pointed out.
    write_dataset(tmp_path / 'x' / 'embeddings' / 'tieredImageNet' / 'center')
    with pytest.raises(DatasetError) as e:
        load_dataset('leo_tiered', str(root), data_path=str(tmp_path / 'x'))
    assert f'pass data_path {tmp_path / "x" / "embeddings"}' in str(e.value)
    assert load_dataset('leo_tiered', str(root), data_path=str(tmp_path / 'x' / 'embeddings')).test.n_classes == 5


def test_tiered_multiview_and_unknown_names_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="tieredImageNet has only center-crop embeddings.*'center'"):
        load_dataset('leo_tiered', str(tmp_path), embedding_crop='multiview')
    with pytest.raises(DatasetError, match='unknown embedding_crop'):
        load_dataset('leo_mini', str(tmp_path), embedding_crop='centre')
    with pytest.raises(DatasetError, match='case-sensitive'):
        leo.load(str(tmp_path), leo_name='miniimagenet')
    with pytest.raises(DatasetError, match='it accepts: embedding_crop, data_path, train_on_val'):
        load_dataset('leo_mini', str(tmp_path), crop='center')
    assert {'leo_mini', 'leo_tiered', 'leo_custom'} <= set(KNOWN_DATASETS)


def test_multiview_crop_reads_its_own_folder(tmp_path):
    write_dataset(mini_dir(tmp_path, 'center'), seed=0)
    files = write_dataset(mini_dir(tmp_path, 'multiview'), seed=50)
    ds = load_dataset('leo_mini', str(tmp_path), embedding_crop='multiview')
    assert 'multiview' in ds.description
    np.testing.assert_array_equal(all_rows(ds.train, 0), expected_classes(*files['train'])[1]['n01'])


def test_custom_embeddings_pickle_or_npz(tmp_path):
    custom = tmp_path / 'mine'
    with pytest.raises(DatasetError) as e:
        load_dataset('leo_custom', str(tmp_path), data_path=str(custom))
    assert str(custom / 'train_embeddings.pkl') in str(e.value) and '"embeddings" float32 [n, D]' in str(e.value)
    files = write_dataset(custom, 'object')
    (custom / 'val_embeddings.pkl').unlink()          # val as the user's own npz (float64, str keys)
    emb, keys = make_split(['n41', 'n42', 'n43', 'n44', 'n45'], 6, 3)
    np.savez(custom / 'val_embeddings.npz', embeddings=emb.astype(np.float64), keys=np.array(keys))
    ds = load_dataset('leo_custom', str(tmp_path), data_path=str(custom), embedding_crop='multiview')
    assert ds.name == 'leo_custom' and ds.val.counts.tolist() == [6] * 5
    np.testing.assert_array_equal(all_rows(ds.val, 4), expected_classes(emb, keys)[1]['n45'])
    np.testing.assert_array_equal(all_rows(ds.train, 0), expected_classes(*files['train'])[1]['n01'])
    # An npz of Python objects is never unpickled.
    np.savez(custom / 'val_embeddings.npz', embeddings=emb, keys=np.array(keys, dtype=object))
    with pytest.raises(DatasetError, match='never loaded; save the keys as a str array'):
        load_dataset('leo_custom', str(tmp_path), data_path=str(custom))


# ----------------------------------------------------------------------------- ClassSplit / sampler

def test_class_split_of_feature_vectors():
    s = ClassSplit([np.ones((3, 4), np.float32), np.zeros((5, 4), np.float32)], name='train', dataset='x')
    assert s.image_shape == (4,) and s.counts.tolist() == [3, 5]
    assert s.gather([1, 0], [[0, 4], [2, 1]]).shape == (2, 2, 4)
    with pytest.raises(ValueError, match='rotations need square images'):
        ClassSplit([np.ones((3, 4), np.float32)], rotations=True)
    with pytest.raises(ValueError, match='one image shape'):
        ClassSplit([np.ones((3, 4), np.float32), np.ones((3, 5), np.float32)])


def test_episode_sampler_uses_all_images_with_query_count_minus_shot(tmp_path):
    files = write_dataset(mini_dir(tmp_path), per_class=7)
    ds = load_dataset('leo_mini', str(tmp_path))
    way, shot = 3, 2
    sampler = EpisodeSampler(ds.test, way, shot, 7 - shot)    # LEO's eval: query = 600 - shot
    classes, ids = sampler.draw_ids(np.random.default_rng(0), 4)
    ep = sampler.episode(classes, ids)
    assert ep.xs.shape == (4, way * shot, D) and ep.xq.shape == (4, way * (7 - shot), D)
    assert ep.ys.tolist() == [[0, 0, 1, 1, 2, 2]] * 4
    assert ep.yq.tolist() == [[0] * 5 + [1] * 5 + [2] * 5] * 4
    _, rows = expected_classes(*files['test'])
    for t in range(4):
        for j, c in enumerate(classes[t]):
            got = np.concatenate([ep.xs[t, j * shot:(j + 1) * shot], ep.xq[t, j * 5:(j + 1) * 5]])
            want = rows[ds.test.class_name(c)]
            np.testing.assert_array_equal(got, want[ids[t, j]])               # support first, then query
            assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, want.tolist()))   # every image


# ----------------------------------------------------------------------------- get_data.py --dataset leo

def embeddings_zip(extra=(), drop=(), seed=0):
    """A tiny embeddings.zip in the published structure: embeddings/<dataset>/<crop>/<split>_embeddings.pkl."""
    buf, files = io.BytesIO(), {}
    with zipfile.ZipFile(buf, 'w') as zf:
        zf.writestr('embeddings/', b'')
        for k, rel in enumerate(leo.EXPECTED_FILES):
            if rel in drop:
                continue
            split = rel.rsplit('/', 1)[1].split('_')[0]
            emb, keys = make_split(SPLIT_CLASSES[split], 6, seed + k)
            files[rel] = (emb, keys)
            zf.writestr(f'embeddings/{rel}', py2_bytes({b'embeddings': emb, b'keys': keys_array(keys, 'py2')}))
        for name, data in extra:
            zf.writestr(name, data)
    return buf.getvalue(), files


def test_get_data_leo_end_to_end(server, tmp_path, capsys):
    assert get_data_url() == 'http://storage.googleapis.com/leo-embeddings/embeddings.zip'
    archive, files = embeddings_zip()
    server.add('/leo/embeddings.zip', archive)
    argv = ['--dataset', 'leo', '--data_root', str(tmp_path), '--base_url', server.url + '/leo']
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert '9 converted to npz now' in out
    out_dir = tmp_path / 'leo' / 'embeddings'
    for rel in leo.EXPECTED_FILES:
        assert (out_dir / rel).is_file() and leo.npz_path(out_dir / rel).is_file()
    assert not list(out_dir.rglob('*.unpacking'))
    ds = load_dataset('leo_mini', str(tmp_path))
    order, rows = expected_classes(*files['miniImageNet/center/val_embeddings.pkl'])
    assert [ds.val.class_name(c) for c in range(5)] == order
    np.testing.assert_array_equal(all_rows(ds.val, 3), rows[order[3]])
    mv = load_dataset('leo_mini', str(tmp_path), embedding_crop='multiview')
    np.testing.assert_array_equal(all_rows(mv.test, 0),
                                  expected_classes(*files['miniImageNet/multiview/test_embeddings.pkl'])[1]['n21'])
    tiered = load_dataset('leo_tiered', str(tmp_path))
    np.testing.assert_array_equal(all_rows(tiered.train, 5),
                                  expected_classes(*files['tieredImageNet/center/train_embeddings.pkl'])[1]['n06'])
    # A second run downloads and converts nothing.
    code, out, err = run(argv, capsys)
    assert code == 0 and '0 converted to npz now' in out
    assert len(server.requests_for('/leo/embeddings.zip')) == 1


def get_data_url():
    from data import get_data
    return get_data.DATASETS['leo'].sources['deepmind'].files[0].url


def test_get_data_leo_refuses_member_escaping_the_folder(server, tmp_path, capsys):
    archive, _ = embeddings_zip(extra=[('../evil.txt', b'oops')])
    server.add('/embeddings.zip', archive)
    root = tmp_path / 'root'
    code, _, err = run(['--dataset', 'leo', '--data_root', str(root), '--base_url', server.url], capsys)
    assert code == 1 and 'Refusing to extract' in err and 'Traceback' not in err
    assert not (tmp_path / 'evil.txt').exists() and not (root / 'evil.txt').exists()
    assert sorted(os.listdir(root / 'leo')) == ['embeddings.zip']      # nothing unpacked


def test_get_data_leo_deletes_a_zip_without_the_embedding_files(server, tmp_path, capsys):
    archive, _ = embeddings_zip(drop=('tieredImageNet/center/test_embeddings.pkl',))
    server.add('/embeddings.zip', archive)
    code, _, err = run(['--dataset', 'leo', '--data_root', str(tmp_path), '--base_url', server.url], capsys)
    assert code == 1 and "not LEO's embeddings.zip" in err
    assert 'tieredImageNet/center/test_embeddings.pkl' in err and 'deleted' in err
    assert not (tmp_path / 'leo' / 'embeddings.zip').exists()
    server.add('/embeddings.zip', b'<!DOCTYPE html><html>gone</html>')
    code, _, err = run(['--dataset', 'leo', '--data_root', str(tmp_path), '--base_url', server.url], capsys)
    assert code == 1 and 'web page' in err
