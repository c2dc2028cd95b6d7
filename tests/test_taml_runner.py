"""Bayesian TAML through the runner (model/taml_runner.py) on the embedded synthetic dataset:
l2b's train.log, ID/OOD validation records, best-checkpoint selection, the meta-test log
name and lines, and usage errors."""
import json
import os
import re

import numpy as np
import pytest
from absl import app

import main
from model.runner import RunError
from model.taml_runner import TamlRunner, gamma_table, omega_table

TINY = ['--model', 'taml', '--dataset', 'synthetic', '--way', '3', '--max_shot', '4',
        '--query', '2', '--metabatch', '2', '--n_steps', '1', '--n_channel', '8',
        '--noprogress', '--n_val_batches', '2', '--n_test_episodes', '6']
ALL_ON = ['--alpha_on', '--omega_on', '--gamma_on', '--z_on']


def runner(savedir, *extra):
    return TamlRunner(main.parse_config(['--savedir', str(savedir), *TINY, *extra]))


def test_train_log_validation_records_and_balancing_tables(tmp_path):
    r = runner(tmp_path, *ALL_ON, '--ood_dataset', 'synthetic', '--n_train_iters', '4',
               '--print_freq', '2', '--val_freq', '2', '--balance_freq', '4',
               '--save_freq', '100', '--max_to_keep', '10')
    r.meta_train()
    log = (tmp_path / 'train.log').read_text()
    assert log.startswith('activation: leaky_relu\nalpha_init: None\nalpha_on: True\n')
    assert re.search(r'\n\nIter 2 start, learning rate 0\.001000\n'
                     r'train: cent \d\.\d{4}, kl \d\.\d{4}, id_acc \d\.\d{4}\n'
                     r'val  : cent \d\.\d{4}, kl \d\.\d{4}, id_acc \d\.\d{4}, ood_acc \d\.\d{4}\n',
                     log), log
    assert 'Iter 1 start' not in log and 'Iter 4 start' in log
    # The balancing variables at iteration 4, for ID then OOD tasks.
    assert log.count('*** Gamma for task imbalance ***') == 2
    assert log.count('*** Omega for class imbalance ***') == 2
    assert log.index('\nID \n') < log.index('\nOOD \n')
    rows = re.findall(r'task \d: N=\s*(\d+) ((?:\d\.\d{3} ){5})\n', log)
    assert len(rows) == 20
    sizes = [int(n) for n, _ in rows[:10]]
    assert sizes == sorted(sizes) and all(1 * 3 <= n <= 4 * 3 for n in sizes)
    records = json.loads((tmp_path / 'validation.json').read_text())
    assert [r['iteration'] for r in records] == [2, 4]
    for rec in records:
        assert rec['score'] == pytest.approx(rec['id_acc'] + rec['ood_acc'])
        assert (tmp_path / f'{rec["checkpoint"]}.index').exists()   # every validated one saved
    assert os.listdir(tmp_path / 'tensorboard')


def test_meta_test_uses_the_best_validated_checkpoint_and_l2bs_log_name(tmp_path):
    r = runner(tmp_path, '--n_train_iters', '6', '--val_freq', '2', '--save_freq', '100',
               '--print_freq', '100', '--max_to_keep', '10', '--omega_on')
    r.meta_train()
    records = json.loads((tmp_path / 'validation.json').read_text())
    assert [x['iteration'] for x in records] == [2, 4, 6]
    # Make model-4 the best, with a tie at model-6: the earliest best wins, as l2b's argmax.
    for x, score in zip(records, (0.2, 0.9, 0.9)):
        x['score'] = score
    (tmp_path / 'validation.json').write_text(json.dumps(records))
    t = runner(tmp_path, '--mode', 'meta_test', '--n_steps', '2', '--omega_on')
    result = t.meta_test()
    assert result['checkpoint'] == 'model-4'
    log = (tmp_path / 'test_step2_mc0.log').read_text().splitlines()
    assert log[0] == 'Meta-test model-4'
    assert re.fullmatch(r'id /synthetic acc: \d+\.\d\d \+- \d+\.\d\d', log[1])
    assert len(log) == 2   # no OOD dataset: ID only
    res = json.loads((tmp_path / 'test_step2_mc0.json').read_text())
    assert res['results']['id/synthetic']['n_episodes'] == 6
    assert res['n_test_steps'] == 2
    # The best checkpoint deleted: the next best is used, and the run says so.
    for f in tmp_path.glob('model-4.*'):
        f.unlink()
    notes = []
    t = TamlRunner(main.parse_config(['--savedir', str(tmp_path), *TINY, '--mode', 'meta_test',
                                      '--omega_on', '--n_mc_samples', '2']), log=notes.append)
    result = t.meta_test()
    assert result['checkpoint'] == 'model-6'
    assert any('model-4' in n for n in notes), notes   # unreadable, so the next best
    assert (tmp_path / 'test_step1_mc2.log').exists()


def test_tables_match_l2bs_printout():
    counts = np.array([[1, 4, 6, 17, 29], [15, 15, 15, 15, 15]])
    gamma = np.array([[0.772, 0.775, 0.523, 0.627, 9.438], [0.807, 0.917, 0.834, 0.851, 4.897]])
    assert gamma_table(counts, gamma)[1:] == [
        '*** Gamma for task imbalance ***',
        '              conv1 conv2 conv3 conv4 dense',
        'task 0: N= 57 0.772 0.775 0.523 0.627 9.438 ',
        'task 1: N= 75 0.807 0.917 0.834 0.851 4.897 ']
    omega = np.array([[0.029, 0.444, 0.056, 0.273, 0.198], [0.2] * 5])
    counts = np.array([[29, 1, 17, 4, 6], [15] * 5])
    assert omega_table(counts, omega)[1:] == [
        '*** Omega for class imbalance ***',
        '         C1  C2  C3  C4  C5        C1    C2    C3    C4    C5',
        'task 0:   1   4   6  17  29 --> 0.444 0.273 0.198 0.056 0.029 ',
        'task 1:  15  15  15  15  15 --> 0.200 0.200 0.200 0.200 0.200 ']


@pytest.mark.parametrize('argv,says', [
    (['--model', 'taml', '--dataset', 'svhn'], 'out-of-distribution dataset with no training'),
    (['--model', 'maml', '--omega_on'], '--omega_on does not apply to --model maml'),
    (['--model', 'taml', '--bn_mode', 'episodic'], '--bn_mode does not apply to --model taml'),
    (['--model', 'taml', '--mode', 'export'], 'runs --mode meta_train, meta_test, embed; not export'),
    (['--model', 'taml', '--backbone', 'resnet12'], '--backbone does not apply to --model taml'),
    (['--model', 'taml', '--ood_dataset', 'nope'], "--ood_dataset 'nope'"),
])
def test_usage_errors(argv, says):
    with pytest.raises(app.UsageError, match=re.escape(says)):
        main.parse_config(['--savedir', '/tmp/x', *argv])


def test_id_dataset_is_the_dataset_trained_on():
    cfg = main.parse_config(['--savedir', '/tmp/x', '--model', 'taml', '--id_dataset', 'cifar',
                             '--ood_dataset', 'svhn', '--n_test_episodes', '250'])
    assert cfg.dataset == 'cifar' and cfg.n_test_iters == 250


def test_bare_model_taml_takes_l2bs_defaults():
    """l2b main.py's argparse defaults and its fixed cadences, unless a flag is given."""
    cfg = main.parse_config(['--savedir', '/tmp/x', '--model', 'taml'])
    assert (cfg.dataset, cfg.ood_dataset, cfg.way, cfg.max_shot, cfg.query) == \
        ('cifar', 'svhn', 5, 50, 15)
    assert (cfg.metabatch, cfg.meta_lr, cfg.inner_lr, cfg.n_steps, cfg.n_test_steps) == \
        (4, 1e-3, 0.5, 5, None)
    assert (cfg.n_train_iters, cfg.save_freq, cfg.n_test_iters, cfg.clip_value) == \
        (50000, 10000, 1000, 3.0)
    assert (cfg.print_freq, cfg.val_freq, cfg.n_val_batches, cfg.max_to_keep,
            cfg.balance_freq) == (100, 10000, 750, 10, 1000)
    assert not (cfg.alpha_on or cfg.omega_on or cfg.gamma_on or cfg.z_on or cfg.l2b_padding)
    cfg = main.parse_config(['--savedir', '/tmp/x', '--model', 'taml', '--id_dataset', 'mimgnet',
                             '--metabatch', '1', '--way', '10', '--n_test_episodes', '300'])
    assert (cfg.dataset, cfg.ood_dataset, cfg.way, cfg.n_val_batches, cfg.n_test_iters) == \
        ('mimgnet', '', 10, 3000, 300)
    # The MAML family keeps metadrop's.
    cfg = main.parse_config(['--savedir', '/tmp/x', '--model', 'maml'])
    assert (cfg.dataset, cfg.way, cfg.metabatch, cfg.query) == ('omniglot', 20, 16, 5)


def test_meta_train_refuses_to_validate_on_the_meta_test_split(tmp_path, monkeypatch):
    """Without a validation split the best checkpoint would be chosen on meta-test classes."""
    from data import datasets
    from model import runner as runner_module

    def without_validation(*args, **kwargs):
        ds = datasets.load_dataset(*args, **kwargs)
        return ds._replace(val=ds.test, val_is_test=True)

    monkeypatch.setattr(runner_module, 'load_dataset', without_validation)
    with pytest.raises(RunError, match=r'--id_dataset synthetic has no validation split .*'
                                       r'choose its meta-test checkpoint on the meta-test'):
        runner(tmp_path, '--omega_on')
    assert not list(tmp_path.iterdir())   # refused before anything was written
    runner(tmp_path, '--mode', 'meta_test', '--omega_on')   # testing is not choosing


def test_max_shot_is_structural_with_the_inference_network(tmp_path):
    """A checkpoint trained with max_shot 4 (the set-size input of the inference network is
    (n_c - 1) / 3) refuses to be resumed or tested with another max_shot."""
    saved = runner(tmp_path, '--omega_on').config_dict()
    with pytest.raises(RunError, match=r"--max_shot 4 \(saved\) vs 5 \(now\)"):
        runner(tmp_path, '--omega_on', '--mode', 'meta_test', '--max_shot', '5').check_config(saved)
    runner(tmp_path, '--omega_on', '--mode', 'meta_test').check_config(saved)
    # Without omega, gamma or z there is no inference network: max_shot only shapes episodes.
    saved = runner(tmp_path).config_dict()
    runner(tmp_path, '--mode', 'meta_test', '--max_shot', '5').check_config(saved)


@pytest.mark.slow
def test_short_synthetic_taml_run_learns_above_chance(tmp_path):
    r = TamlRunner(main.parse_config([
        '--savedir', str(tmp_path), '--model', 'taml', *ALL_ON, '--dataset', 'synthetic',
        '--way', '5', '--max_shot', '5', '--query', '5', '--metabatch', '2', '--n_steps', '2',
        '--n_train_iters', '150', '--print_freq', '50', '--val_freq', '150',
        '--n_val_batches', '5', '--n_test_episodes', '100', '--noprogress']))
    r.meta_train()
    result = r.meta_test()
    acc = result['results']['id/synthetic']['accuracy']
    assert acc > 35, result     # chance is 20%; measured 43.5 +- 1.6
