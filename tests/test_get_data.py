"""End-to-end tests of the data/get_data.py CLI against a local HTTP server (127.0.0.1 only)."""
import hashlib
import importlib
import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from data import get_data
from tests.test_download import server  # noqa: F401  (the local file-server fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _has_build_cache():
    try:
        return hasattr(importlib.import_module('data.omniglot'), 'build_cache')
    except ImportError:
        return False


def omniglot_zip(stem, alphabets=('Greek', 'Latin'), characters=2, drawers=20, seed=0):
    """A tiny zip in the official layout: <stem>/<Alphabet>/characterNN/XXXX_YY.png, 1-bit."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w') as zf:
        number = 1
        for alphabet in alphabets:
            for c in range(1, characters + 1):
                for d in range(1, drawers + 1):
                    img = Image.fromarray(rng.random((105, 105)) > 0.1).convert('1')
                    png = io.BytesIO()
                    img.save(png, format='PNG')
                    zf.writestr(f'{stem}/{alphabet}/character{c:02d}/{number:04d}_{d:02d}.png',
                                png.getvalue())
                number += 1
    return buf.getvalue()


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def run(argv, capsys):
    code = get_data.main(argv + ['--no_progress'])
    out, err = capsys.readouterr()
    return code, out, err


def test_official_end_to_end(server, tmp_path, capsys):  # noqa: F811
    zips = {'images_background': omniglot_zip('images_background', ('Greek', 'Latin'), seed=0),
            'images_evaluation': omniglot_zip('images_evaluation', ('Korean', 'Mongolian'),
                                              seed=1)}
    for stem, data in zips.items():
        server.add(f'/mirror/{stem}.zip', data)
    preprocess = _has_build_cache()
    argv = ['--dataset', 'omniglot', '--data_root', str(tmp_path), '--base_url',
            server.url + '/mirror/', '--no_verify'] + ([] if preprocess else ['--no_preprocess'])
    code, out, err = run(argv, capsys)
    assert code == 0, err
    folder = tmp_path / 'omniglot'
    for stem, data in zips.items():
        assert (folder / f'{stem}.zip').read_bytes() == data
    assert sorted(e['path'] for e in server.log) == ['/mirror/images_background.zip',
                                                     '/mirror/images_evaluation.zip']
    assert 'ready' in out
    if preprocess:
        cache = folder / 'omniglot28.npz'
        assert cache.is_file()
        with np.load(cache) as npz:
            assert npz['images'].shape[:2] == (8, 20)   # 4 alphabets x 2 characters

    # A second run finds everything verified and fetches nothing.
    server.log.clear()
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert server.log == []


def test_small_and_url_override(server, tmp_path, capsys):  # noqa: F811
    stems = ('images_background', 'images_evaluation', 'images_background_small1',
             'images_background_small2')
    for stem in stems:
        server.add(f'/base/{stem}.zip', omniglot_zip(stem, characters=1, drawers=2))
    other = omniglot_zip('images_evaluation', alphabets=('Korean',), characters=1, drawers=2)
    server.add('/elsewhere/eval.zip', other)
    code, _, err = run(['--dataset', 'omniglot', '--data_root', str(tmp_path), '--small',
                        '--base_url', server.url + '/base', '--no_verify', '--no_preprocess',
                        '--url_override', f'images_evaluation.zip={server.url}/elsewhere/'
                                          'eval.zip?token=1'], capsys)
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / 'omniglot')) == sorted(f'{s}.zip' for s in stems)
    assert (tmp_path / 'omniglot' / 'images_evaluation.zip').read_bytes() == other
    assert '/elsewhere/eval.zip?token=1' in [e['path'] for e in server.log]
    assert '/base/images_evaluation.zip' not in [e['path'] for e in server.log]


def test_known_md5_is_enforced_without_no_verify(server, tmp_path, capsys):  # noqa: F811
    server.add('/images_background.zip', omniglot_zip('images_background', characters=1))
    code, _, err = run(['--dataset', 'omniglot', '--data_root', str(tmp_path), '--base_url',
                        server.url, '--no_preprocess'], capsys)
    assert code != 0
    assert 'md5' in err and '68d2efa1b9178cc56df9314c21c6e718' in err
    assert '--no_verify' in err   # the hint for deliberate mirrors / fixtures
    assert 'Traceback' not in err
    assert os.listdir(tmp_path / 'omniglot') == []   # the bad file and its .part are gone


def test_registry_md5_matches_real_small_zips(shared_omniglot_dir):
    files = {f.filename: f.md5 for f in get_data.DATASETS['omniglot'].sources['official'].files}
    for name in ('images_background_small1.zip', 'images_background_small2.zip'):
        with open(shared_omniglot_dir / name, 'rb') as fh:
            assert hashlib.md5(fh.read()).hexdigest() == files[name]


def test_metadrop_source(server, tmp_path, capsys):  # noqa: F811
    train = np.arange(8 * 20 * 784, dtype=np.uint8).reshape(8, 20, 784)
    test = np.zeros((4, 20, 784), np.float32)
    server.add('/dl/train.npy', npy_bytes(train))
    server.add('/dl/test.npy', npy_bytes(test))
    code, out, err = run(['--dataset', 'omniglot', '--source', 'metadrop', '--data_root',
                          str(tmp_path), '--url_override', f'train={server.url}/dl/train.npy?dl=1',
                          '--url_override', f'test={server.url}/dl/test.npy?dl=1'], capsys)
    assert code == 0, err
    folder = tmp_path / 'omniglot'
    np.testing.assert_array_equal(np.load(folder / 'train.npy'), train)
    np.testing.assert_array_equal(np.load(folder / 'test.npy'), test)
    assert sorted(os.listdir(folder)) == ['test.npy', 'train.npy']


def _npz_bytes():
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((4, 20, 784), np.uint8))
    return buf.getvalue()


@pytest.mark.parametrize('body, says', [
    (npy_bytes(np.zeros((3, 20, 784), np.uint8)), '(3, 20, 784)'),   # 3 classes: not x4
    (npy_bytes(np.zeros((4, 20, 28, 27), np.uint8)), '(4, 20, 28, 27)'),
    (npy_bytes(np.array([{'a': 1}], dtype=object)), 'numpy cannot read it'),
    (_npz_bytes(), 'npz'),
    (b'<html>Dropbox error page</html>', 'numpy cannot read it'),
], ids=['classes', 'pixels', 'pickle', 'npz', 'html'])
def test_metadrop_unusable_file_is_deleted(server, tmp_path, capsys, body, says):  # noqa: F811
    server.add('/train.npy', body)
    server.add('/test.npy', npy_bytes(np.zeros((4, 20, 784), np.uint8)))
    code, _, err = run(['--dataset', 'omniglot', '--source', 'metadrop', '--data_root',
                        str(tmp_path), '--base_url', server.url], capsys)
    assert code == 1
    assert says in err and 'deleted' in err and 'Traceback' not in err
    assert os.listdir(tmp_path / 'omniglot') == []


def test_failure_exit_code_and_message(server, tmp_path, capsys):  # noqa: F811
    code, _, err = run(['--dataset', 'omniglot', '--data_root', str(tmp_path), '--base_url',
                        server.url + '/nothing', '--no_verify', '--retries', '0'], capsys)
    assert code == 1
    assert err.startswith('error: ') and '404' in err
    assert server.url + '/nothing/images_background.zip' in err
    assert 'Traceback' not in err


def test_bad_override_name_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        get_data.main(['--dataset', 'omniglot', '--data_root', str(tmp_path),
                       '--url_override', 'nonsense=http://127.0.0.1:1/x'])
    assert exc.value.code == 2
    assert 'images_background' in capsys.readouterr().err


def test_runs_as_script_and_as_module(server, tmp_path):  # noqa: F811
    env = dict(os.environ, PYTHONPATH='')   # the script must find the repo on its own
    for cmd in ([sys.executable, 'data/get_data.py'], [sys.executable, '-m', 'data.get_data']):
        helped = subprocess.run(cmd + ['--help'], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=60)
        assert helped.returncode == 0, helped.stderr
        assert '--url_override' in helped.stdout and '--no_verify' in helped.stdout
    failed = subprocess.run(
        [sys.executable, 'data/get_data.py', '--dataset', 'omniglot', '--data_root',
         str(tmp_path), '--base_url', server.url + '/gone', '--retries', '0', '--no_progress'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1
    assert 'error:' in failed.stderr and '404' in failed.stderr
    assert 'Traceback' not in failed.stderr
