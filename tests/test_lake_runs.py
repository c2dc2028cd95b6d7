"""meta_test on Lake et al.'s 20 one-shot runs (--dataset omniglot_runs, issue 23 item 4):
exactly the 20 official episodes, the checkpoint's test-time inner steps, per-run and mean
error printed as the official demo prints them next to the people's 4.5%, on tiny files in the
official layout (tests/test_omniglot_runs_data.py writes them)."""
import json
import re

import numpy as np
import pytest

import main
from model.evaluation import read_episodes_csv
from model.runner import Runner, RunError
from tests.test_omniglot_runs_data import layout, write_zip  # noqa: F401 (layout: a fixture)

TRAIN = ['--dataset', 'synthetic', '--way', '20', '--shot', '1', '--query', '1',
         '--metabatch', '1', '--n_steps', '1', '--n_test_steps', '3', '--n_channel', '8',
         '--noprogress', '--n_train_iters', '1', '--save_freq', '1', '--val_freq', '10',
         '--print_freq', '1', '--n_val_batches', '1']


def run(savedir, *argv, log=None):
    cfg = main.parse_config(['--savedir', str(savedir), *argv])
    return Runner(cfg, log=log or (lambda line: None))


@pytest.fixture(scope='module')
def trained(tmp_path_factory, layout):  # noqa: F811
    root = tmp_path_factory.mktemp('lake')
    run(root / 'run', *TRAIN).meta_train()
    write_zip(root / 'data', layout[0])
    return root


def lake(root, *extra):
    return ['--mode', 'meta_test', '--dataset', 'omniglot_runs', '--data_root',
            str(root / 'data'), '--way', '20', '--n_channel', '8', '--noprogress', *extra]


def test_the_twenty_runs_with_the_demos_lines_and_the_checkpoints_inner_steps(trained):
    lines = []
    record = run(trained / 'run', *lake(trained), log=lines.append).meta_test()
    runs = [re.fullmatch(r' run (\d+) \(error (\d+\.\d+)%\)', line) for line in lines[:20]]
    assert all(runs), lines
    assert [int(m.group(1)) for m in runs] == list(range(1, 21))
    errors = [float(m.group(2)) for m in runs]
    assert all(e % 5 == 0 for e in errors), '20 queries: multiples of 5%'
    assert lines[20] == f' average error {np.mean(errors)}%'
    assert 'people: 4.5% error' in lines[21]
    assert record['n_test_steps'] == 3, 'the checkpoint\'s --n_test_steps, not the default'
    assert record['n_episodes'] == 20 and record['error'] == pytest.approx(np.mean(errors))
    assert record['human_error'] == 4.5 and record['test_dataset'] == 'omniglot_runs'
    assert list(record['run_errors'].values()) == errors
    assert record['accuracy'] == pytest.approx(100 - np.mean(errors))
    saved = json.loads((trained / 'run' / 'meta_test_omniglot_runs.json').read_text())
    assert saved['run_errors'] == record['run_errors']
    fps, cols = read_episodes_csv(trained / 'run' / 'meta_test_omniglot_runs_episodes.csv')
    assert fps == [f'run{r:02d}' for r in range(1, 21)]
    assert np.allclose(100 * (1 - next(iter(cols.values()))), errors)
    # --n_test_steps given now wins; the 20 episodes are the same, so the runs pair
    again = run(trained / 'run', *lake(trained, '--n_test_steps', '0')).meta_test()
    assert again['n_test_steps'] == 0


def test_the_way_must_be_twenty(trained):
    with pytest.raises(RunError, match='runs 20-way 1-shot episodes'):
        run(trained / 'run', *lake(trained)[:-5], '--n_channel', '8', '--way', '5').meta_test()
