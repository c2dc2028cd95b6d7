"""PyTorch-MAML's extras through the runner and the command line: outer optimisers and
schedules, zero head with a different test way, batch-norm modes at meta-test,
augmentation, input normalisation, ResNet backbones and tieredImageNet."""
import json
import math
import re

import numpy as np
import pytest
import tensorflow as tf
from absl import app

import main
from model import optim
from model.runner import Runner, RunError
from tests.test_data_tiered import write_all

TINY = ['--dataset', 'synthetic', '--way', '5', '--shot', '1', '--query', '5',
        '--metabatch', '2', '--n_steps', '1', '--n_channel', '8', '--noprogress',
        '--n_val_batches', '1', '--n_test_iters', '6', '--val_freq', '1000']


def runner(savedir, *extra, args=TINY):
    return Runner(main.parse_config(['--savedir', str(savedir), *args, *extra]))


# ---- outer optimisers ---------------------------------------------------------------------
def test_sgd_follows_torch_semantics():
    v = tf.Variable([1.0, -2.0])
    opt = optim.SGD([v], learning_rate=0.1, momentum=0.9, weight_decay=0.01)
    g1, g2 = np.array([0.5, 1.0]), np.array([-1.0, 0.25])
    opt.apply([tf.constant(g1, tf.float32)])
    d1 = g1 + 0.01 * np.array([1.0, -2.0])               # buf starts at the first gradient
    w1 = np.array([1.0, -2.0]) - 0.1 * d1
    np.testing.assert_allclose(v.numpy(), w1, rtol=1e-6)
    opt.apply([tf.constant(g2, tf.float32)])
    d2 = 0.9 * d1 + g2 + 0.01 * w1
    np.testing.assert_allclose(v.numpy(), w1 - 0.1 * d2, rtol=1e-6)


def test_adam_weight_decay_is_added_to_the_gradient():
    a, b = tf.Variable([2.0]), tf.Variable([2.0])
    optim.Adam([a], 0.1, weight_decay=0.5).apply([tf.constant([0.0])])
    optim.Adam([b], 0.1).apply([tf.constant([1.0])])      # 0 + 0.5 * 2
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-7)


def test_learning_rate_schedules():
    assert optim.learning_rate('constant', 0.1, 500) == 0.1
    steps = [optim.learning_rate('step', 1.0, i, (10, 20), 0.1) for i in (0, 9, 10, 19, 20, 99)]
    np.testing.assert_allclose(steps, [1, 1, 0.1, 0.1, 0.01, 0.01])
    assert optim.learning_rate('cosine', 2.0, 0, (), total=100) == 2.0
    assert optim.learning_rate('cosine', 2.0, 50, (), total=100) == pytest.approx(1.0)
    assert optim.learning_rate('cosine', 2.0, 100, (40, 100)) == pytest.approx(0.0)
    assert optim.learning_rate('cosine', 2.0, 25, (), total=100) == \
        pytest.approx(1 + math.cos(math.pi / 4))


def test_clip_by_global_norm():
    grads = [tf.constant([3.0, 0.0]), None, tf.constant([4.0])]
    clipped = optim.clip_by_global_norm(grads, 1.0)
    assert clipped[1] is None
    np.testing.assert_allclose(clipped[0].numpy(), [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped[2].numpy(), [0.8], rtol=1e-6)
    assert optim.clip_by_global_norm(grads, 0.) == grads


def test_step_schedule_and_sgd_through_the_runner(tmp_path):
    r = runner(tmp_path, '--optimizer', 'sgd', '--meta_lr', '0.05', '--lr_schedule', 'step',
               '--lr_milestones', '2', '--n_train_iters', '3', '--print_freq', '1',
               '--clip_norm', '1.0')
    r.meta_train()
    log = (tmp_path / 'meta_train.log').read_text()
    rates = [float(x) for x in re.findall(r'learning rate ([0-9.e-]+)', log)]
    np.testing.assert_allclose(rates, [0.05, 0.05, 0.005, 0.005])
    assert isinstance(r.optimizer, optim.SGD)
    # Resuming with another optimiser is refused with the reason.
    with pytest.raises(RunError, match='--optimizer'):
        runner(tmp_path, '--n_train_iters', '4').meta_train()


# ---- zero head, batch-norm modes ----------------------------------------------------------
def test_zero_head_trains_5_way_and_tests_3_way(tmp_path):
    r = runner(tmp_path, '--zero_head', '--n_train_iters', '1')
    r.meta_train()
    assert not any('dense' in v.name for v in r.model.outer_variables)
    record = runner(tmp_path, '--zero_head', '--mode', 'meta_test', '--way', '3').meta_test()
    assert record['way'] == 3 and record['n_episodes'] == 6
    with pytest.raises(RunError, match='--zero_head'):
        runner(tmp_path, '--mode', 'meta_test').meta_test()


def test_meta_test_reports_the_batch_norm_mode_in_its_own_files(tmp_path):
    runner(tmp_path, '--n_train_iters', '1').meta_train()
    results = {}
    for mode in ('transductive', 'support', 'episodic'):
        record = runner(tmp_path, '--mode', 'meta_test', '--bn_mode', mode).meta_test()
        assert record['batch_norm'] == mode
        results[mode] = record['accuracy']
    saved = json.loads((tmp_path / 'meta_test_support.json').read_text())
    assert saved['batch_norm'] == 'support'
    assert json.loads((tmp_path / 'meta_test.json').read_text())['batch_norm'] == 'transductive'
    assert (tmp_path / 'meta_test_episodic.log').read_text().startswith('accuracy : ')


# ---- data options -------------------------------------------------------------------------
def test_augmentation_changes_only_the_training_support_images(tmp_path):
    plain = runner(tmp_path / 'a')
    aug = runner(tmp_path / 'b', '--augment', 'crop,flip,color', '--augment_pad', '2')
    sampler = plain.sampler('train')
    ep = sampler.sample(np.random.default_rng(0), 2)
    out = aug.augmenter(ep, np.random.default_rng(1))
    assert not np.allclose(out.xs, ep.xs)
    np.testing.assert_array_equal(out.xq, ep.xq)
    assert plain.augmenter(ep, np.random.default_rng(1)) is ep
    aug.cfg.n_train_iters = 1
    aug.meta_train()


def test_bad_extra_flags_are_usage_errors(tmp_path):
    cases = [(['--augment', 'rotate'], 'rotate'),
             (['--normalization', 'dataset'], 'no constants known for --dataset synthetic'),
             (['--normalization', '0.5/0'], 'positive'),
             (['--lr_schedule', 'step'], 'needs --lr_milestones'),
             (['--lr_milestones', '20,10'], 'increasing'),
             (['--bn_momentum', '0'], 'bn_momentum'),
             (['--backbone', 'resnet50'], 'resnet50'),
             (['--backbone', 'resnet12', '--n_channel', '8'], 'n_channel does not apply'),
             (['--model', 'metadrop', '--efficient'], 'redraw'),
             (['--model', 'metadrop', '--backbone', 'resnet12'], 'metadrop')]
    for extra, says in cases:
        with pytest.raises(app.UsageError, match=re.escape(says)):
            main.parse_config(['--savedir', str(tmp_path), *TINY, *extra])


def test_frozen_typo_is_reported(tmp_path):
    with pytest.raises(ValueError, match='matches no parameter'):
        runner(tmp_path, '--frozen', 'layer1')


def test_normalization_flag_reaches_the_network(tmp_path):
    r = runner(tmp_path, '--normalization', '0.5/0.25')
    mean, std = r.model.net.input_norm
    assert float(mean[0]) == 0.5 and float(std[0]) == 0.25


def test_resnet_backbone_trains_and_tests(tmp_path, backbone='resnet12'):
    """One meta-train iteration and a meta-test with a ResNet encoder, zero head, frozen BN
    and inductive batch norm (28x28 inputs keep it fast: 28 -> 14 -> 7 -> 3 -> 1; ResNet-18's
    forward and gradients are tested in test_pytorch_maml_extras.py)."""
    args = [*TINY[:TINY.index('--n_channel')], *TINY[TINY.index('--n_channel') + 2:],
            '--backbone', backbone, '--zero_head', '--frozen', 'bn', '--bn_mode', 'episodic',
            '--inner_lr', '0.01', '--metabatch', '1', '--n_test_iters', '2']
    runner(tmp_path, '--n_train_iters', '0', args=args).meta_train()
    record = runner(tmp_path, '--mode', 'meta_test', args=args).meta_test()
    assert record['n_episodes'] == 2 and record['batch_norm'] == 'episodic'


def test_tiered_imagenet_through_the_runner(tmp_path):
    """tieredImageNet files in the real layout (tiny), PyTorch-MAML's ConvNet4 with its
    normalisation constants: meta-train, then meta-test."""
    write_all(tmp_path / 'data' / 'tiered')
    args = ['--dataset', 'tiered', '--data_root', str(tmp_path / 'data'), '--way', '3',
            '--shot', '1', '--query', '2', '--metabatch', '1', '--n_steps', '1',
            '--noprogress', '--n_val_batches', '1', '--n_test_iters', '2',
            '--backbone', 'convnet4', '--n_channel', '4', '--normalization', 'dataset',
            '--inner_lr', '0.01']
    r = runner(tmp_path / 'run', '--n_train_iters', '0', args=args)
    assert r.dataset.image_shape == (84, 84, 3) and r.model.net.input_norm is not None
    r.meta_train()
    record = runner(tmp_path / 'run', '--mode', 'meta_test', args=args).meta_test()
    assert record['n_episodes'] == 2
