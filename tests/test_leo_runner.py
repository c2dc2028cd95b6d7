"""LEO through main.py and the runner (model/leo_runner.py) on tiny embeddings in LEO's file
layout: the original's defaults and flag names, its log lines, validation before the step
(step 0 included), best_checkpoint/ kept across a resume, the meta-test protocol (all other
images of a class as queries, the plain mean and a 95% interval), usage errors, and a slow
run that learns above chance."""
import json
import math
import pickle

import numpy as np
import pytest
from absl import app

import main
from benchmarks import leo_gaussian
from data.episodes import EpisodeSizeError
from model.leo_runner import BEST_DIR, LeoRunner

PER_CLASS = 12


@pytest.fixture(scope='module')
def embeddings(tmp_path_factory):
    """<dir>/{train,val,test}_embeddings.pkl: 8 / 5 / 6 classes x 12 Gaussian examples in 16
    dimensions, class information in a 4-dim subspace (benchmarks/leo_gaussian.py)."""
    d = tmp_path_factory.mktemp('leo_embeddings')
    data, _ = leo_gaussian.generate(seed=0, dim=16, subspace=4, tau=2.0, sigma=1.0,
                                    per_class=PER_CLASS, splits=dict(train=8, val=5, test=6))
    leo_gaussian.write_leo_pickles(d, data)
    return d


def tiny(path, *extra):
    return ['--model', 'leo', '--dataset', 'leo_custom', '--data_path', str(path), '--noprogress',
            '--num_latents', '4', '--total_examples_per_class', str(PER_CLASS), '--query', '3',
            '--metabatch', '2', '--n_steps', '2', '--finetuning_unroll_length', '2',
            '--metavalid_batch_size', '4', '--n_val_batches', '2', '--metatest_batch_size', '5',
            '--n_test_iters', '12', '--eval_chunk', '3', '--nouse_64bits_dtype', *extra]


def runner(savedir, data, *extra, log=print):
    return LeoRunner(main.parse_config(['--savedir', str(savedir), *tiny(data, *extra)]), log=log)


def test_leo_takes_the_originals_defaults_and_flag_names():
    cfg = main.parse_config(['--model', 'leo', '--savedir', '/tmp/x'])
    assert (cfg.dataset, cfg.way, cfg.shot, cfg.query, cfg.metabatch, cfg.meta_lr) == \
        ('leo_mini', 5, 1, 15, 12, 1e-4)
    assert (cfg.n_train_iters, cfg.n_steps, cfg.finetuning_unroll_length, cfg.val_freq,
            cfg.save_freq, cfg.print_freq, cfg.n_val_batches, cfg.n_test_iters) == \
        (100000, 5, 5, 1000, 1000, 500, 10, 10000)
    assert (cfg.num_latents, cfg.inner_lr_init, cfg.finetuning_lr_init, cfg.dropout_rate,
            cfg.kl_weight, cfg.encoder_penalty_weight, cfg.l2_penalty_weight,
            cfg.orthogonality_penalty_weight, cfg.gradient_threshold,
            cfg.gradient_norm_threshold) == (64, 1.0, 0.001, 0.5, 1e-3, 1e-9, 1e-8, 1e-3, 0.1, 0.1)
    assert (cfg.metavalid_batch_size, cfg.metatest_batch_size, cfg.total_examples_per_class,
            cfg.use_64bits_dtype, cfg.original_nan_guard) == (200, 200, 600, True, False)
    # The original's spellings.
    cfg = main.parse_config(['--model', 'leo', '--checkpoint_path', '/tmp/y',
                             '--dataset_name=tieredImageNet', '--num_tr_examples_per_class=5',
                             '--num_classes=5', '--outer_lr=6.1e-4', '--num_steps_limit=7',
                             '--inner_unroll_length=3', '--metatrain_batch_size=4',
                             '--num_val_examples_per_class=9', '--checkpoint_steps=40'])
    assert (cfg.savedir, cfg.dataset, cfg.shot, cfg.meta_lr, cfg.n_train_iters, cfg.n_steps,
            cfg.metabatch, cfg.query) == ('/tmp/y', 'leo_tiered', 5, 6.1e-4, 7, 3, 4, 9)
    assert (cfg.val_freq, cfg.save_freq, cfg.print_freq) == (40, 40, 20)
    assert main.parse_config(['--model', 'leo', '--savedir', '/tmp/x',
                              '--evaluation_mode']).mode == 'meta_test'
    # The MAML family keeps its own defaults.
    assert main.parse_config(['--savedir', '/tmp/x']).metabatch != 12


@pytest.mark.parametrize('argv,says', [
    (['--dataset', 'omniglot'], 'works on embeddings'),
    (['--dataset', 'leo_tiered', '--embedding_crop', 'multiview'], 'miniImageNet only'),
    (['--total_examples_per_class', '1'], 'must be larger than --shot 1'),
    (['--backbone', 'resnet12'], '--backbone does not apply to --model leo'),
    (['--dropout_rate', '1'], '--dropout_rate must be in [0, 1)'),
    (['--kl_weight', '-1'], '--kl_weight must be >= 0'),
    (['--mode', 'export'], 'runs --mode meta_train, meta_test; not export'),
])
def test_usage_errors(argv, says):
    with pytest.raises(app.UsageError, match=says.replace('[', r'\[').replace(')', r'\)')):
        main.parse_config(['--model', 'leo', '--savedir', '/tmp/x', *argv])
    with pytest.raises(app.UsageError, match='holds embedding vectors'):
        main.parse_config(['--model', 'maml', '--dataset', 'leo_mini', '--savedir', '/tmp/x'])


def test_missing_embeddings_name_the_download_command(tmp_path):
    cfg = main.parse_config(['--model', 'leo', '--savedir', str(tmp_path / 's'),
                             '--data_root', str(tmp_path / 'nothing'), '--noprogress'])
    with pytest.raises(Exception, match=r'python data/get_data.py --dataset leo --data_root'):
        LeoRunner(cfg)
    assert not (tmp_path / 's' / 'train.log').exists()


def test_meta_train_logs_validates_before_the_step_and_keeps_the_best(tmp_path, embeddings):
    r = runner(tmp_path, embeddings, '--n_train_iters', '5', '--checkpoint_steps', '2')
    r.meta_train()
    log = (tmp_path / 'meta_train.log').read_text()
    lines = [l for l in log.splitlines() if l.startswith('Step:')]
    # Validation at steps 0, 2, 4 (before that step), training accuracy every 1 step
    # (--checkpoint_steps 2 sets --print_freq 1).
    valid = [l for l in lines if 'meta-valid accuracy:' in l]
    assert [int(l.split()[1]) for l in valid] == [0, 2, 4]
    assert lines[0].startswith('Step: 0 meta-valid accuracy: ')
    assert lines[1] == f'Step: 0 new best meta-valid accuracy, copied to {BEST_DIR}/'
    train = [l for l in lines if 'meta-train accuracy:' in l]
    assert [int(l.split()[1]) for l in train] == [0, 1, 2, 3, 4]
    records = json.loads((tmp_path / 'validation.json').read_text())
    assert [x['step'] for x in records] == [0, 2, 4]
    assert all(x['n_episodes'] == 8 for x in records)   # 2 batches x 4 episodes
    best = json.loads((tmp_path / BEST_DIR / 'accuracy.json').read_text())
    top = max(records, key=lambda x: x['accuracy'])
    first_top = next(x for x in records if x['accuracy'] == top['accuracy'])
    assert best['step'] == first_top['step'] and best['accuracy'] == top['accuracy']
    assert (tmp_path / BEST_DIR / f'{best["checkpoint"]}.index').exists()
    # Checkpoints every 2 steps and at the last one (4), the optimiser state with them.
    assert sorted(p.name for p in tmp_path.glob('model-*.index')) == \
        ['model-0.index', 'model-2.index', 'model-4.index']
    assert list((tmp_path / 'tensorboard').iterdir())
    assert not (tmp_path / 'tmp_best_checkpoint').exists()


def test_resume_keeps_a_better_best_checkpoint_on_disk(tmp_path, embeddings):
    runner(tmp_path, embeddings, '--n_train_iters', '3', '--checkpoint_steps', '2').meta_train()
    record_path = tmp_path / BEST_DIR / 'accuracy.json'
    record = json.loads(record_path.read_text())
    record['accuracy'] = 1.0   # as if the best so far were perfect
    record_path.write_text(json.dumps(record))
    runner(tmp_path, embeddings, '--n_train_iters', '5', '--checkpoint_steps', '2').meta_train()
    log = (tmp_path / 'meta_train.log').read_text()
    assert 'resumed from model-2 at iteration 3' in log
    assert 'Step: 4 meta-valid accuracy:' in log
    assert json.loads(record_path.read_text()) == record   # not overwritten by a worse one


def test_meta_test_uses_best_checkpoint_all_other_images_and_reports_both_means(
        tmp_path, embeddings):
    runner(tmp_path, embeddings, '--n_train_iters', '3', '--checkpoint_steps', '2').meta_train()
    best = json.loads((tmp_path / BEST_DIR / 'accuracy.json').read_text())
    lines = []
    r = runner(tmp_path, embeddings, '--mode', 'meta_test', log=lines.append)
    result = r.meta_test()
    # 12 // 5 = 2 batches of 5 episodes, 12 - 1 = 11 queries per class.
    assert result['n_episodes'] == 10 and result['query'] == PER_CLASS - 1
    assert result['checkpoint'] == f'{BEST_DIR}/{best["checkpoint"]}'
    assert result['best_step'] == best['step']
    assert not [l for l in lines if l.startswith('warning')], lines
    assert result['metatest_accuracy'] == pytest.approx(result['accuracy'] / 100.)
    assert lines[0] == f'Metatest accuracy: {result["metatest_accuracy"]:f}'
    assert lines[1] == f'accuracy : {result["accuracy"]:f} +- {result["ci95"]:f}'
    assert 0 < result['ci95'] < 50
    assert (tmp_path / 'meta_test.log').read_text().splitlines() == lines[:2]
    assert json.loads((tmp_path / 'meta_test.json').read_text()) == result
    # The deterministic model on seeded episodes: a second run gives the same numbers; chunking
    # the batches differently changes nothing.
    again = runner(tmp_path, embeddings, '--mode', 'meta_test', '--eval_chunk', '5',
                   log=lambda s: None).meta_test()
    assert again['accuracy'] == pytest.approx(result['accuracy'], abs=1e-9)
    assert again['loss'] == pytest.approx(result['loss'], rel=1e-5)


def test_meta_test_without_best_checkpoint_falls_back_to_the_latest(tmp_path, embeddings):
    runner(tmp_path, embeddings, '--n_train_iters', '2', '--checkpoint_steps', '2').meta_train()
    import shutil
    shutil.rmtree(tmp_path / BEST_DIR)
    notes = []
    result = runner(tmp_path, embeddings, '--mode', 'meta_test', log=notes.append).meta_test()
    assert result['checkpoint'] == 'model-1'
    assert any(f'no {BEST_DIR}/' in n for n in notes)


def test_too_few_images_for_the_evaluation_queries_says_which_flag(tmp_path, embeddings):
    r = runner(tmp_path, embeddings, '--total_examples_per_class', '40')
    with pytest.raises(EpisodeSizeError, match='--total_examples_per_class 40'):
        r.meta_train()
    assert not (tmp_path / 'model-0.index').exists()


@pytest.mark.slow
def test_leo_learns_above_chance_on_gaussian_embeddings(tmp_path):
    """5-way 1-shot on class-conditional Gaussians (64-d, class means in 8 dimensions):
    the Bayes rule scores about 0.70 here, the untrained model about chance (0.2)."""
    data, basis = leo_gaussian.generate(seed=1, dim=64, subspace=8, tau=1.0, sigma=1.0,
                                        per_class=40, splits=dict(train=32, val=10, test=10))
    leo_gaussian.write_leo_pickles(tmp_path / 'emb', data)
    x, _, labels = data['test']
    bayes = leo_gaussian.bayes_accuracy(x, labels, basis, 1.0, 1.0, 5, 1, 4000)
    argv = ['--model', 'leo', '--dataset', 'leo_custom', '--data_path', str(tmp_path / 'emb'),
            '--savedir', str(tmp_path / 'run'), '--noprogress', '--num_latents', '16',
            '--total_examples_per_class', '40', '--metavalid_batch_size', '50',
            '--n_val_batches', '2', '--metatest_batch_size', '100', '--n_test_iters', '400',
            '--nouse_64bits_dtype', '--outer_lr', '1e-3', '--num_steps_limit', '400',
            '--checkpoint_steps', '200']
    LeoRunner(main.parse_config(argv), log=lambda s: None).meta_train()
    result = LeoRunner(main.parse_config(argv + ['--evaluation_mode']),
                       log=lambda s: None).meta_test()
    assert result['n_episodes'] == 400
    assert result['accuracy'] / 100. > 0.35, (result, bayes)
    assert result['accuracy'] / 100. < bayes + 0.05


MINI_1SHOT = ['--outer_lr=2.739071e-4', '--l2_penalty_weight=3.623413e-10',
              '--orthogonality_penalty_weight=0.188103', '--dropout_rate=0.307651',
              '--kl_weight=0.756143', '--encoder_penalty_weight=5.756821e-6']


def test_first_steps_are_finite_on_small_custom_embeddings(tmp_path):
    """Issue 22: 32-d Gaussian class clusters, the miniImageNet 1-shot hyperparameters, float32
    as the original's runner, the compiled train step: the first 20 steps (step 0 and 1
    included, whatever the state) have finite losses and all apply the meta-gradient. The rare
    non-finite steps such runs do meet are single episodes whose latent loop diverges, in the
    original's code too (tests/golden/test_leo.py), caught by the guard."""
    data, _ = leo_gaussian.generate(seed=0, dim=32, subspace=8, tau=0.7, sigma=1.0,
                                    per_class=PER_CLASS, splits=dict(train=8, val=5, test=6))
    leo_gaussian.write_leo_pickles(tmp_path / 'emb', data)
    cfg = main.parse_config(['--model', 'leo', '--dataset', 'leo_custom', '--data_path',
                             str(tmp_path / 'emb'), '--savedir', str(tmp_path / 'run'),
                             '--total_examples_per_class', str(PER_CLASS), '--query', '5',
                             '--metabatch', '4', '--nouse_64bits_dtype', '--noprogress',
                             *MINI_1SHOT])
    r = LeoRunner(cfg, log=lambda s: None)
    sampler = r.sampler('train')
    for i in range(20):
        loss, acc, applied, *_ = r.train_step(*r.train_episode(sampler, i))
        assert math.isfinite(float(loss)) and bool(applied), (i, float(loss))


def test_best_checkpoint_reaches_the_disk_before_it_is_swapped_in(tmp_path, embeddings,
                                                                  monkeypatch):
    """The best copy's files are fsync'ed while still under their temporary name, and the
    savedir after the renames, so a power loss never finds a best_checkpoint/ whose files are
    not on the disk."""
    import os
    from model import leo_runner
    events = []
    real_rename, real_fsync = os.rename, leo_runner.fsync_checkpoint
    monkeypatch.setattr(leo_runner, 'fsync_checkpoint',
                        lambda prefix: (events.append(('fsync', prefix)), real_fsync(prefix)))
    monkeypatch.setattr(leo_runner, 'fsync_path',
                        lambda path: events.append(('fsync_dir', str(path))))
    monkeypatch.setattr(leo_runner.os, 'rename',
                        lambda a, b: (events.append(('rename', str(a), str(b))), real_rename(a, b)))
    r = runner(tmp_path, embeddings, '--n_train_iters', '1', '--checkpoint_steps', '2')
    r.meta_train()
    into_best = [k for k, e in enumerate(events) if e[0] == 'rename' and e[2].endswith(BEST_DIR)]
    assert into_best
    k = into_best[0]
    fsynced = [e for e in events[:k] if e[0] == 'fsync']
    assert fsynced[-1][1].startswith(events[k][1])     # the files under the temporary folder
    assert ('fsync_dir', str(tmp_path)) in events[k + 1:]
