"""tools/report.py on runs this test makes: the table, the seed groups, CSV and the curves."""
import csv
import io
import json
import math

import numpy as np
import pytest
from scipy import stats

import main
from model.runner import Runner
from tools import report

TINY = ['--dataset', 'synthetic', '--way', '5', '--shot', '1', '--query', '5',
        '--metabatch', '2', '--n_steps', '1', '--n_channel', '8', '--noprogress',
        '--n_train_iters', '2', '--save_freq', '2', '--val_freq', '1', '--print_freq', '1',
        '--n_val_batches', '2', '--n_test_iters', '20']


def make_run(savedir, *extra):
    """meta_train then meta_test of a tiny synthetic MAML, as main.py runs them."""
    cfg = main.parse_config(['--savedir', str(savedir), *TINY, *extra])
    Runner(cfg).meta_train()
    cfg = main.parse_config(['--savedir', str(savedir), '--mode', 'meta_test', *TINY, *extra])
    return Runner(cfg).meta_test()


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('runs')
    results = {name: make_run(root / name, *extra) for name, extra in (
        ('seed0', ['--seed', '0']), ('seed1', ['--seed', '1']),
        ('way3', ['--way', '3', '--seed', '0']))}
    return root, results


def test_table_groups_seeds_with_a_t_interval(runs, capsys):
    root, results = runs
    rows = report.grouped(report.rows_of(report.find_runs([str(root)])))
    singles = [r for r in rows if r['seeds'] == 1]
    assert sorted(r['run'].rsplit('/', 1)[1] for r in singles) == ['seed0', 'seed1', 'way3']
    for row in singles:
        expected = results[row['run'].rsplit('/', 1)[1]]
        assert row['accuracy'] == pytest.approx(expected['accuracy'])
        assert row['ci95'] == pytest.approx(expected['ci95'])
        assert row['episodes'] == 20 and row['iterations'] == 2 and row['method'] == 'maml'
    groups = [r for r in rows if r['seeds'] > 1]
    assert len(groups) == 1, 'only the two seeds of one configuration form a group'
    accs = np.array([results[f'seed{s}']['accuracy'] for s in range(2)])
    assert accs[0] != accs[1]
    assert groups[0]['accuracy'] == pytest.approx(accs.mean())
    assert groups[0]['ci95'] == pytest.approx(
        stats.t.ppf(0.975, 1) * accs.std(ddof=1) / math.sqrt(2))
    assert groups[0]['per_seed'].count('seed') == 2

    assert report.main([str(root)]) == 0
    text = capsys.readouterr().out
    assert text.count('\n') == 2 + 4 and '(across 2 seeds)' in text and '| 3/1 |' in text


def test_csv_and_markdown_files(runs, tmp_path):
    root, results = runs
    assert report.main([str(root), '--csv', str(tmp_path / 't.csv'),
                        '--markdown', str(tmp_path / 't.md')]) == 0
    table = list(csv.DictReader(io.StringIO((tmp_path / 't.csv').read_text())))
    assert len(table) == 4 and set(table[0]) == set(report.COLUMNS)
    seed1 = next(r for r in table if r['run'].endswith('seed1'))
    assert float(seed1['accuracy']) == pytest.approx(results['seed1']['accuracy'], abs=1e-4)
    assert (tmp_path / 't.md').read_text().startswith('| run | method |')


def test_curves_png_overlays_the_runs(runs, tmp_path):
    root, _ = runs
    pytest.importorskip('matplotlib')
    series = report.scalars(str(root / 'seed0'))
    # iterations 0..2, logged and validated at every one
    assert [s for s, _ in series['meta_train/acc']] == [0, 1, 2]
    assert [s for s, _ in series['meta_val/acc']] == [0, 1, 2]
    assert all(0 <= v <= 1 for _, v in series['meta_val/acc'])
    out = tmp_path / 'curves.png'
    assert report.main([str(root), '--curves', str(out)]) == 0
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and out.stat().st_size > 20000
    assert report.curves([str(root / 'seed0'), str(root / 'way3')], str(out)) == 8


def test_other_result_files_become_rows(runs, tmp_path):
    """TAML's per-dataset test records and adv_test's attacks are rows too (files laid out as
    their runners write them, next to a real run's config.json)."""
    root, _ = runs
    run = tmp_path / 'taml'
    run.mkdir()
    (run / 'config.json').write_text((root / 'seed0' / 'config.json').read_text()
                                     .replace('"maml"', '"taml"'))
    (run / 'test_step10_mc10.json').write_text(json.dumps(dict(
        checkpoint='model-800', way=5, shot=1, results={
            'ID/cifar': dict(accuracy=70.0, ci95=1.0, n_episodes=1000),
            'OOD/svhn': dict(accuracy=40.0, ci95=2.0, n_episodes=1000)})))
    (run / 'adv_test.json').write_text(json.dumps(dict(
        clean=dict(accuracy=80.0, ci95=1.5), n_episodes=50, checkpoint='model-2', way=5, shot=1,
        attacks={'linf': dict(accuracy=20.0, ci95=3.0, eps=0.1)},
        per_episode={'clean': [0.8] * 50})))
    rows = report.rows_of([str(run)])
    assert [(r['result'], r['accuracy'], r['iterations']) for r in rows] == [
        ('test_step10_mc10 ID/cifar', 70.0, 800), ('test_step10_mc10 OOD/svhn', 40.0, 800),
        ('adv_test clean', 80.0, 2), ('adv_test linf', 20.0, 2)]
    assert all(r['method'] == 'taml' for r in rows)


def test_bad_input_is_one_error_line(tmp_path, capsys):
    assert report.main([str(tmp_path / 'missing')]) == 1
    assert report.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f'error: {tmp_path / "missing"} is not a folder',
                   f'error: no run (a folder with config.json) under {tmp_path}']
    (tmp_path / 'r').mkdir()
    (tmp_path / 'r' / 'config.json').write_text('{not json')
    assert report.main([str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith('error: cannot read ')


def test_a_meta_test_of_several_checkpoints_gives_a_row_each(tmp_path, capsys):
    run = tmp_path / 'paired'
    run.mkdir()
    (run / 'config.json').write_text(json.dumps(dict(model='maml', dataset='omniglot', way=5,
                                                     shot=1, seed=0)))
    entries = [dict(checkpoint='a/model-100', accuracy=90., ci95=1., n_episodes=600),
               dict(checkpoint='b/model-100', accuracy=92., ci95=1.1, n_episodes=600)]
    (run / 'meta_test.json').write_text(json.dumps(dict(
        accuracy=90., ci95=1., n_episodes=600, way=5, shot=1, checkpoint='model-100',
        test_dataset='folder', model='maml', checkpoints=entries,
        paired=[dict(checkpoint='b/model-100', reference='a/model-100', difference=2.,
                     ci95=0.5)])))
    rows = report.rows_of([str(run)])
    assert [(r['result'], r['accuracy']) for r in rows] == [
        ('meta_test a/model-100', 90.), ('meta_test b/model-100', 92.)]
    assert all(r['dataset'] == 'folder' for r in rows), 'the dataset tested on'
    # a meta_test of --checkpoints into a new folder writes no config.json: still a run
    (run / 'config.json').unlink()
    assert report.find_runs([str(tmp_path)]) == [str(run)]
    assert [r['method'] for r in report.rows_of([str(run)])] == ['maml', 'maml']
    # --paired needs the per-episode files meta_test writes
    assert report.main(['--paired', str(run), str(run)]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'no per-episode file' in err and err.count('\n') == 1
