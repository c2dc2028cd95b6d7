"""Bad input through main.py: a clear message and a non-zero exit, never a traceback."""
import os
import subprocess
import sys

import pytest
from absl import app

import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYN = ['--dataset', 'synthetic', '--way', '5', '--query', '5', '--metabatch', '2',
       '--n_steps', '1', '--n_channel', '8', '--noprogress', '--n_train_iters', '0']


def run_main(capsys, *argv):
    """Runs main in-process; returns (exit code, stderr)."""
    try:
        main.parse_config(list(argv))
        main.main(['main.py'])
    except SystemExit as e:
        return e.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


@pytest.mark.parametrize('argv,message', [
    (['--mode', 'train'], "--mode 'train' is not one of meta_train, meta_test, export"),
    (['--model', 'reptile'], "--model 'reptile' is not one of maml, fomaml, metasgd"),
    (['--dataset', 'cifar10'], "--dataset 'cifar10' is not one of omniglot, folder, synthetic"),
    (['--meta_lr', '-1'], '--meta_lr must be positive, got -1.0'),
    (['--way', '0'], '--way must be a positive integer, got 0'),
    ([], '--savedir is required'),
    (['--shot', '0'], '--shot must be a positive integer, got 0'),
    (['--query', '-1'], '--query must be a positive integer, got -1'),
    (['--metabatch', '0'], '--metabatch must be a positive integer, got 0'),
    (['--n_steps', '0'], '--n_steps must be a positive integer, got 0'),
    (['--n_channel', '0'], '--n_channel must be a positive integer, got 0'),
    (['--image_size', '-28'], '--image_size must be a positive integer, got -28'),
    (['--max_bad_steps', '0'], '--max_bad_steps must be a positive integer, got 0'),
    (['--inner_lr', '0'], '--inner_lr must be positive, got 0.0'),
    (['--inner_lr', 'nan'], '--inner_lr must be positive, got nan'),
    (['--meta_lr', 'inf'], '--meta_lr must be finite, got inf'),
    (['--alpha_init', '-0.1'], '--alpha_init must be positive, got -0.1'),
    (['--clip_value', '-1'], '--clip_value must be >= 0 (0 disables clipping), got -1.0'),
    (['--channels', '2'], '--channels must be 1 (grey) or 3 (RGB), got 2'),
])
def test_bad_flags_are_usage_errors(argv, message):
    with pytest.raises(app.UsageError, match=message.replace('(', r'\(').replace(')', r'\)')):
        main.parse_config(argv)


def test_way_larger_than_the_number_of_classes(tmp_path, capsys):
    code, err = run_main(capsys, '--savedir', str(tmp_path), *SYN, '--way', '700')
    assert code == 1
    assert 'way 700' in err and '600' in err


def test_shot_plus_query_larger_than_the_examples_per_class(tmp_path, capsys):
    code, err = run_main(capsys, '--savedir', str(tmp_path), *SYN, '--shot', '10',
                         '--query', '15')
    assert code == 1
    assert '25' in err and '20' in err


def test_missing_dataset_prints_the_download_command(tmp_path, capsys):
    code, err = run_main(capsys, '--savedir', str(tmp_path / 'run'), '--dataset', 'omniglot',
                         '--data_root', str(tmp_path / 'nodata'), '--noprogress')
    assert code == 1
    assert f'python data/get_data.py --dataset omniglot --data_root {tmp_path / "nodata"}' in err


def test_savedir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / 'file'
    path.write_text('not a folder')
    code, err = run_main(capsys, '--savedir', str(path), *SYN)
    assert code == 1 and 'is a file' in err
    assert path.read_text() == 'not a folder'


def test_command_line_errors_have_no_traceback(tmp_path):
    out = subprocess.run([sys.executable, 'main.py', '--savedir', str(tmp_path), *SYN,
                          '--way', '700'], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1
    assert 'Traceback' not in out.stderr
    assert 'error: way 700' in out.stderr


def test_usage_errors_are_one_paragraph_without_the_flag_listing(tmp_path):
    out = subprocess.run([sys.executable, 'main.py', '--savedir', str(tmp_path), '--mode',
                          'train', '--way', '0'], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1
    assert out.stderr == ("error: --mode 'train' is not one of meta_train, meta_test, export, adv_test, pretrain, embed; "
                          '--way must be a positive integer, got 0. `python main.py --helpfull` '
                          'lists every flag.\n')
    assert out.stdout == ''


def test_helpfull_documents_every_flag():
    out = subprocess.run([sys.executable, 'main.py', '--helpfull'], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    for flag in ('--mode', '--savedir', '--dataset', '--way', '--shot', '--query',
                 '--metabatch', '--n_steps', '--inner_lr', '--meta_lr', '--n_train_iters',
                 '--n_test_iters', '--save_freq', '--gpu_id', '--maml', '--n_test_mc_samp',
                 '--model', '--seed', '--data_root', '--reuse_task_classes',
                 '--test_alphabets', '--clip_value', '--max_bad_steps'):
        assert flag + ':' in out.stdout or f'--[no]{flag[2:]}:' in out.stdout, flag


def test_noprogress_silences_the_dataset_readers(tmp_path, capfd):
    """--noprogress reaches the readers' bars (the folder reader decoding its images)."""
    from data.datasets import load_dataset
    from tests.test_data_folder import write_tree
    write_tree(tmp_path / 'folder', 5, 3)
    load_dataset('folder', str(tmp_path), image_size=8, progress=False)
    assert 'reading' not in capfd.readouterr().err
    load_dataset('folder', str(tmp_path), image_size=8)
    assert 'reading' in capfd.readouterr().err   # the bar the flag silences
