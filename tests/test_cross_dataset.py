"""Cross-dataset meta-test (issue 23 item 5): the test modes accept any dataset of the
checkpoint's input shape (recorded as `input_shape` with the run) and record both datasets;
another shape is refused naming both shapes; meta_train resume still refuses a dataset change;
a checkpoint saved before input shapes were recorded keeps its own dataset."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import main
from model.runner import Runner, RunError

TINY = ['--shot', '1', '--query', '2', '--metabatch', '2', '--n_steps', '1', '--n_channel', '8',
        '--noprogress', '--n_train_iters', '1', '--save_freq', '1', '--val_freq', '10',
        '--print_freq', '1', '--n_val_batches', '1', '--n_test_iters', '6', '--way', '3']
OLD = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'old_checkpoints')


def runner(savedir, *extra):
    return Runner(main.parse_config(['--savedir', str(savedir), *TINY, *extra]),
                  log=lambda line: None)


def folder_dataset(root, size=28):
    """train/ and test/ with 4 classes of 5 grey size x size PNGs each (bright strokes)."""
    rng = np.random.default_rng(0)
    for split in ('train', 'test'):
        for c in range(4):
            d = root / split / f'char{c}'
            d.mkdir(parents=True)
            proto = rng.random((size, size)) > 0.8
            for i in range(5):
                img = proto ^ (rng.random((size, size)) > 0.97)
                Image.fromarray((img * 255).astype(np.uint8), 'L').save(d / f'{i}.png')
    return ['--dataset', 'folder', '--folder_dir', str(root), '--channels', '1']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('cross')
    runner(root / 'run', '--dataset', 'synthetic').meta_train()
    return root


def test_the_input_shape_is_recorded_and_another_dataset_of_that_shape_is_tested(trained):
    run = trained / 'run'
    assert json.loads((run / 'config.json').read_text())['input_shape'] == [28, 28, 1]
    folder = folder_dataset(trained / 'chars')
    record = runner(run, '--mode', 'meta_test', *folder, '--image_size', '28').meta_test()
    assert (record['trained_dataset'], record['test_dataset']) == ('synthetic', 'folder')
    assert record['n_episodes'] == 6 and 0 <= record['accuracy'] <= 100
    assert json.loads((run / 'meta_test.json').read_text())['trained_dataset'] == 'synthetic'


def test_another_shape_is_refused_with_both_shapes(trained, capsys):
    folder = folder_dataset(trained / 'chars32', size=32)
    with pytest.raises(SystemExit) as e:
        main.cli(['main.py', '--savedir', str(trained / 'run'), '--mode', 'meta_test', *TINY,
                  *folder, '--image_size', '32'])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ')
    assert 'inputs of shape 28x28x1' in err[0] and "'folder' gives 32x32x1" in err[0]


def test_resuming_meta_train_on_another_dataset_is_still_refused(trained):
    folder = folder_dataset(trained / 'chars_resume')
    r = runner(trained / 'run', *folder, '--image_size', '28', '--n_train_iters', '2')
    with pytest.raises(RunError, match=r"--dataset 'synthetic' \(saved\) vs 'folder' \(now\)"):
        r.meta_train()


def test_a_checkpoint_without_a_recorded_shape_keeps_its_dataset(tmp_path):
    run = tmp_path / 'maml'
    shutil.copytree(os.path.join(OLD, 'maml'), run)
    with open(run / 'argv.json') as f:
        argv = json.load(f)['argv']
    assert 'input_shape' not in json.loads((run / 'config.json').read_text())
    folder = folder_dataset(tmp_path / 'chars')
    argv = argv[2:] if argv[0] == '--dataset' else argv
    r = Runner(main.parse_config(['--savedir', str(run), '--mode', 'meta_test', *argv,
                                  *folder, '--image_size', '28']), log=lambda line: None)
    with pytest.raises(RunError, match='saved before checkpoints recorded their input shape'):
        r.meta_test()
