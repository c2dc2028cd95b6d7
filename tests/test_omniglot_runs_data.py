"""Lake et al.'s 20 one-shot runs (data/omniglot_runs.py) on tiny files in the official layout
(1-bit 105x105 PNGs, class_labels.txt), and their get_data entry against a local HTTP server."""
import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from data import get_data, omniglot_runs
from data.datasets import DatasetError, dataset_spec, load_dataset
from data.episodes import ClassSplit
from tests.test_download import server  # noqa: F401  (the local file-server fixture)


def png(bits):
    out = io.BytesIO()
    Image.fromarray(bits).convert('1').save(out, format='PNG')
    return out.getvalue()


@pytest.fixture(scope='module')
def layout():
    """{path inside the run folder: bytes} of 20 runs, and each run's answer per query. Every
    query is a copy of its class's training image, so a correct pairing is visible in the pixels;
    class_labels.txt lists the queries in a shuffled order."""
    rng = np.random.default_rng(0)
    files, answers = {}, {}
    for run in omniglot_runs.RUN_NAMES:
        classes = [png(rng.random((105, 105)) > 0.2) for _ in range(20)]
        answer = rng.permutation(20)          # item i+1 belongs to class answer[i]+1
        answers[run] = answer
        for c, data in enumerate(classes):
            files[f'{run}/training/class{c + 1:02d}.png'] = data
        lines = []
        for i, c in enumerate(answer):
            files[f'{run}/test/item{i + 1:02d}.png'] = classes[c]
            lines.append(f'{run}/test/item{i + 1:02d}.png {run}/training/class{c + 1:02d}.png')
        files[f'{run}/class_labels.txt'] = '\n'.join(rng.permutation(lines)).encode() + b'\n'
    return files, answers


def zip_bytes(files, prefix=''):
    out = io.BytesIO()
    with zipfile.ZipFile(out, 'w') as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return out.getvalue()


def write_zip(root, files, prefix=''):
    (root / 'omniglot_runs').mkdir(parents=True, exist_ok=True)
    (root / 'omniglot_runs' / 'all_runs.zip').write_bytes(zip_bytes(files, prefix))


def write_folder(folder, files):
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def as_read(png_bytes, resize=Image.NEAREST, mode=None):
    """What the reader should make of one PNG, computed here independently: 28x28, inverted, /255."""
    im = Image.open(io.BytesIO(png_bytes))
    if mode:
        im = im.convert(mode)
    grey = np.asarray(im.resize((28, 28), resample=resize).convert('L'), np.float64)
    return (1.0 - grey / 255.0).astype(np.float32)[..., None]


def test_reads_the_twenty_runs_from_the_zip(layout, tmp_path):
    files, answers = layout
    write_zip(tmp_path, files, prefix='all_runs/')
    runs = omniglot_runs.load_runs(str(tmp_path), progress=False)
    assert [r.name for r in runs] == [f'run{i:02d}' for i in range(1, 21)]
    for run in runs:
        assert run.support_x.shape == run.query_x.shape == (20, 28, 28, 1)
        assert run.support_x.dtype == run.query_x.dtype == np.float32
        assert run.support_y.dtype == run.query_y.dtype == np.int32
        np.testing.assert_array_equal(run.support_y, np.arange(20))
        np.testing.assert_array_equal(run.query_y, answers[run.name])
        # Each query is its class's training image: the labels point at the right support.
        np.testing.assert_array_equal(run.query_x, run.support_x[run.query_y])
    first = runs[0]
    np.testing.assert_allclose(first.support_x[6], as_read(files['run01/training/class07.png']), atol=1e-7)
    assert set(np.unique(first.support_x)) <= {0.0, 1.0}        # nearest on 1-bit images: no grey
    episode = first.episode()
    assert episode.xs.shape == (1, 20, 28, 28, 1) and episode.yq.shape == (1, 20)


def test_preprocessing_is_the_omniglot_readers(layout, tmp_path):
    """The same uint8 decoding as data/omniglot.py and the same float conversion as ClassSplit."""
    files, _ = layout
    write_zip(tmp_path, files)
    run = omniglot_runs.load_runs(str(tmp_path), progress=False)[3]
    u8 = np.stack([omniglot_runs.decode_png(io.BytesIO(files[f'run04/training/class{c:02d}.png']), 'x')
                   for c in range(1, 21)])
    stored = ClassSplit(u8[:, None, :, :, None])
    np.testing.assert_array_equal(run.support_x, stored.gather(np.arange(20), np.zeros((20, 1), int))[:, 0])


def test_extracted_folders_read_as_the_zip(layout, tmp_path):
    files, _ = layout
    # Folders directly in omniglot_runs/ here; one subfolder down (all_runs/, as get_data
    # extracts them) in test_get_data_downloads_extracts_and_verifies.
    write_zip(tmp_path / 'z', files)
    write_folder(tmp_path / 'f' / 'omniglot_runs', files)
    from_zip = omniglot_runs.load_runs(str(tmp_path / 'z'), progress=False)
    runs = load_dataset('omniglot_runs', str(tmp_path / 'f'), progress=False)
    for a, b in zip(from_zip, runs, strict=True):
        assert a.name == b.name
        for x, y in zip(a[1:], b[1:]):
            np.testing.assert_array_equal(x, y)


def test_lanczos_differs_and_has_grey_levels(layout, tmp_path):
    files, _ = layout
    write_zip(tmp_path, files)
    nearest = omniglot_runs.load_runs(str(tmp_path), progress=False)[0]
    lanczos = load_dataset('omniglot_runs', str(tmp_path), progress=False, resize='lanczos')[0]
    assert not np.array_equal(nearest.support_x, lanczos.support_x)
    grey = lanczos.support_x[(lanczos.support_x > 0) & (lanczos.support_x < 1)]
    assert grey.size > 1000
    np.testing.assert_allclose(lanczos.support_x[0], as_read(files['run01/training/class01.png'],
                                                             Image.LANCZOS, mode='L'), atol=1e-6)
    np.testing.assert_array_equal(lanczos.query_y, nearest.query_y)
    with pytest.raises(DatasetError, match='unknown omniglot resize'):
        omniglot_runs.load_runs(str(tmp_path), resize='bicubic')


def test_missing_and_malformed_files(layout, tmp_path):
    files, _ = layout
    with pytest.raises(DatasetError, match=r'no Omniglot one-shot runs .*all_runs\.zip.*'
                                           r'python data/get_data\.py --dataset omniglot_runs'):
        omniglot_runs.load_runs(str(tmp_path))
    cases = {
        'no_run': ({k: v for k, v in files.items() if not k.startswith('run20/')}, '1 of the 20 runs are missing'),
        'no_image': ({k: v for k, v in files.items() if k != 'run05/test/item03.png'},
                     'run05 holds 20 training and 19 test images'),
        'bad_line': ({**files, 'run02/class_labels.txt': b'run02/test/item01.png\n'}, 'line 1'),
        'same_class_twice': ({**files, 'run03/class_labels.txt': b''.join(
            f'run03/test/item{i:02d}.png run03/training/class01.png\n'.encode() for i in range(1, 21))},
            'not 20 with 20'),
        'damaged_png': ({**files, 'run07/training/class02.png': b'not a png'}, 'cannot decode'),
    }
    for name, (broken, says) in cases.items():
        write_zip(tmp_path / name, broken)
        with pytest.raises(DatasetError, match=says) as err:
            omniglot_runs.load_runs(str(tmp_path / name), progress=False)
        assert '\n' not in str(err.value), name
    (tmp_path / 'nozip' / 'omniglot_runs').mkdir(parents=True)
    (tmp_path / 'nozip' / 'omniglot_runs' / 'all_runs.zip').write_bytes(b'<html>')
    with pytest.raises(DatasetError, match='not a readable zip'):
        omniglot_runs.load_runs(str(tmp_path / 'nozip'))


def test_declaration():
    spec = dataset_spec('omniglot_runs')
    assert spec.fixed_episodes and not spec.has_train and spec.kind == 'images'
    assert spec.loader is omniglot_runs.load_runs and 'omniglot_resize' in spec.flags
    url = get_data.DATASETS['omniglot_runs'].sources['official'].files[0].url
    assert url == ('https://github.com/brendenlake/omniglot/raw/master/python/one-shot-classification/'
                   'all_runs.zip')


def run_get_data(argv, capsys):
    code = get_data.main(argv + ['--no_progress'])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize('prefix', ['all_runs/', ''])
def test_get_data_downloads_extracts_and_verifies(layout, server, tmp_path, capsys, prefix):  # noqa: F811
    files, answers = layout
    server.add('/m/all_runs.zip', zip_bytes(files, prefix))
    code, out, err = run_get_data(['--dataset', 'omniglot_runs', '--data_root', str(tmp_path),
                                   '--base_url', server.url + '/m'], capsys)
    assert code == 0, err
    assert 'omniglot_runs (official) is ready' in out and '20 runs of 20-way 1-shot' in out
    folder = tmp_path / 'omniglot_runs' / 'all_runs'
    assert (folder / 'run20' / 'class_labels.txt').read_bytes() == files['run20/class_labels.txt']
    os.remove(tmp_path / 'omniglot_runs' / 'all_runs.zip')      # the extracted folders alone
    runs = omniglot_runs.load_runs(str(tmp_path), progress=False)
    np.testing.assert_array_equal(runs[19].query_y, answers['run20'])


def test_get_data_deletes_what_is_not_the_runs(layout, server, tmp_path, capsys):  # noqa: F811
    files, _ = layout
    server.add('/all_runs.zip', zip_bytes({k: v for k, v in files.items() if not k.startswith('run01/')}))
    code, _, err = run_get_data(['--dataset', 'omniglot_runs', '--data_root', str(tmp_path),
                                 '--base_url', server.url], capsys)
    assert code == 1 and err.startswith('error: ') and 'run01' in err and 'deleted' in err
    assert 'Traceback' not in err
    assert os.listdir(tmp_path / 'omniglot_runs') == []
