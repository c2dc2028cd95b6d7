"""Paired evaluation: meta_test scores a list of checkpoints on the very same episodes, writes
per-episode accuracies with episode fingerprints, and the paired difference with its
interval; tools/report.py --paired pairs two separate runs' per-episode files."""

import numpy as np
import pytest

import main
from model.evaluation import (confidence_interval, episode_fingerprints, paired_difference,
                              read_episodes_csv)
from model.runner import Runner, RunError
from tests.test_leo_runner import embeddings  # noqa: F401 (a fixture)
from tests.test_leo_runner import runner as leo_runner
from tools import report

TINY = ['--dataset', 'synthetic', '--shot', '1', '--query', '5', '--metabatch', '2',
        '--n_steps', '1', '--n_channel', '8', '--noprogress', '--n_train_iters', '2',
        '--save_freq', '2', '--val_freq', '2', '--print_freq', '1', '--n_val_batches', '1',
        '--n_test_iters', '20']


def run(savedir, mode, *extra, way=5):
    cfg = main.parse_config(['--savedir', str(savedir), '--mode', mode, '--way', str(way),
                             *TINY, *extra])
    r = Runner(cfg, log=lambda line: None)
    return r.meta_train() if mode == 'meta_train' else r.meta_test()


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Two 5-way runs that differ in their training seed (so in their weights) and a 3-way one."""
    root = tmp_path_factory.mktemp('paired')
    for name, extra, way in (('a', ['--seed', '0'], 5), ('b', ['--seed', '1'], 5),
                             ('way3', [], 3)):
        run(root / name, 'meta_train', *extra, way=way)
    return root


def test_listed_checkpoints_are_scored_on_the_same_episodes_with_a_paired_interval(trained, tmp_path):
    a, b = trained / 'a', trained / 'b'
    # Each run tested alone, with the same test seed: the same episodes.
    alone = {name: run(trained / name, 'meta_test', '--seed', '0') for name in 'ab'}
    record = run(tmp_path / 'both', 'meta_test', '--seed', '0',
                 '--checkpoints', f'{a},{b / "model-2"}')
    fps, cols = read_episodes_csv(tmp_path / 'both' / 'meta_test_episodes.csv')
    assert list(cols) == [str(a / 'model-2'), str(b / 'model-2')]   # a folder: its newest
    assert len(fps) == 20 and len(set(fps)) == 20
    acc_a, acc_b = 100. * cols[str(a / 'model-2')], 100. * cols[str(b / 'model-2')]
    assert not np.array_equal(acc_a, acc_b), 'two trained models, two sets of answers'
    for name, acc in (('a', acc_a), ('b', acc_b)):
        fps_alone, cols_alone = read_episodes_csv(trained / name / 'meta_test_episodes.csv')
        assert fps_alone == fps
        assert np.allclose(100. * next(iter(cols_alone.values())), acc, atol=1e-4)
        assert alone[name]['accuracy'] == pytest.approx(np.mean(acc), abs=1e-4)
    entries = {e['checkpoint']: e for e in record['checkpoints']}
    assert entries[str(b / 'model-2')]['accuracy'] == pytest.approx(np.mean(acc_b))
    assert record['accuracy'] == pytest.approx(np.mean(acc_a))   # the first one's
    (paired,) = record['paired']
    diff = acc_b - acc_a
    assert paired['difference'] == pytest.approx(diff.mean())
    assert paired['ci95'] == pytest.approx(1.96 * diff.std() / np.sqrt(20))
    # Pairing removes the episode-to-episode variance the two models share.
    assert paired['ci95'] < np.hypot(confidence_interval(acc_a)[1], confidence_interval(acc_b)[1])
    log = (tmp_path / 'both' / 'meta_test.log').read_text().splitlines()
    assert len(log) == 3 and '(paired, 20 episodes)' in log[2]
    assert f'{paired["difference"]:f} +- {paired["ci95"]:f}' in log[2]

    # tools/report.py pairs the two separate runs the same way.
    out = report.paired_text(str(a), str(b))
    assert f'{diff.mean():.2f} +- {1.96 * diff.std() / np.sqrt(20):.2f}' in out


def test_a_checkpoint_of_another_configuration_is_refused_before_anything_is_written(trained, tmp_path):
    with pytest.raises(RunError, match=r'--checkpoints: .*way3/model-2 is a checkpoint of a '
                                       r"different configuration: --way 3 \(saved\) vs 5"):
        run(tmp_path / 'out', 'meta_test', '--checkpoints', f'{trained / "a"},{trained / "way3"}')
    assert not (tmp_path / 'out').exists()
    with pytest.raises(RunError, match='neither a checkpoint'):
        run(tmp_path / 'out', 'meta_test', '--checkpoints', str(tmp_path / 'nothing'))


def test_report_refuses_to_pair_different_episodes(trained, tmp_path, capsys):
    run(trained / 'a', 'meta_test', '--seed', '0')
    other = tmp_path / 'other'
    run(other, 'meta_test', '--seed', '5', '--checkpoints', str(trained / 'b'))
    assert report.main(['--paired', str(trained / 'a'), str(other)]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and 'episode 0' in err


def test_paired_difference_and_fingerprints():
    a, b = np.array([1., .8, .6, 1.]), np.array([.8, .8, .2, .6])
    d, ci = paired_difference(a, b)
    assert d == pytest.approx(0.25) and ci == pytest.approx(1.96 * np.std(a - b) / 2)
    with pytest.raises(ValueError):
        paired_difference(a, b[:3])
    names = [['x', 'y'], ['x', 'y'], ['y', 'x']]
    ids = np.array([[[0, 1], [2, 3]], [[0, 1], [2, 4]], [[0, 1], [2, 3]]])
    fps = episode_fingerprints(names, ids)
    assert len(set(fps)) == 3, 'an image id or the class order changes the fingerprint'
    assert fps == episode_fingerprints(names, ids.copy())


def test_leo_scores_listed_checkpoints_on_the_same_episodes(tmp_path, embeddings):
    run_dir = tmp_path / 'leo'
    leo_runner(run_dir, embeddings, '--n_train_iters', '3', '--checkpoint_steps', '1',
               log=lambda s: None).meta_train()
    alone = leo_runner(run_dir, embeddings, '--mode', 'meta_test',
                       log=lambda s: None).meta_test()
    fps, cols = read_episodes_csv(run_dir / 'meta_test_episodes.csv')
    assert list(cols) == [alone['checkpoint']] and len(fps) == alone['n_episodes'] == 10
    listed = [str(run_dir / 'model-0'), str(run_dir / 'model-2')]
    record = leo_runner(tmp_path / 'both', embeddings, '--mode', 'meta_test', '--checkpoints',
                        ','.join(listed), log=lambda s: None).meta_test()
    fps2, cols2 = read_episodes_csv(tmp_path / 'both' / 'meta_test_episodes.csv')
    assert fps2 == fps and list(cols2) == listed
    (paired,) = record['paired']
    d, ci = paired_difference(100. * cols2[listed[1]], 100. * cols2[listed[0]])
    assert (paired['difference'], paired['ci95']) == (pytest.approx(d), pytest.approx(ci))
    assert record['metatest_accuracy'] == pytest.approx(np.mean(cols2[listed[0]]))


def test_taml_refuses_checkpoints_before_writing_anything(tmp_path):
    from tests.test_taml_runner import runner as taml_runner
    with pytest.raises(RunError, match='--checkpoints is not supported with --model taml'):
        taml_runner(tmp_path / 'new', '--mode', 'meta_test', '--checkpoints', str(tmp_path))
    assert not (tmp_path / 'new').exists()
