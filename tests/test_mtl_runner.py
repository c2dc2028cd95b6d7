"""MTL's phases end to end (model/mtl_runner.py): flags and defaults of the original runner,
usage errors, pre-training into weights-<i> snapshots, meta-training from a snapshot with the
backbone frozen, the meta-test protocol and its per-step record, the hard-task meta-batch,
and the converter of the original's released npy weights."""
import json
import os
import re

import numpy as np
import pytest
from absl import app

import main
from data.episodes import ClassSplit, EpisodeSampler
from model import mtl_convert
from model.mtl_runner import (MtlPretrainRunner, MtlRunner, PretrainStream, saved_weights,
                              weights_path)
from model.runner import RunError

TINY = ['--model', 'mtl', '--dataset', 'synthetic', '--img_size', '16', '--noprogress',
        '--n_steps', '2', '--n_test_steps', '3', '--meta_intrain_val_sample', '4',
        '--n_test_iters', '6', '--eval_chunk', '3', '--pretrain_batch_size', '8',
        '--pretrain_iterations', '3', '--pre_save_step', '1', '--pre_print_step', '1',
        '--query', '2', '--n_train_iters', '3', '--val_freq', '2', '--save_freq', '2',
        '--print_freq', '1']


def cfg(savedir, *extra):
    return main.parse_config(['--savedir', str(savedir), *TINY, *extra])


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    d = tmp_path_factory.mktemp('mtl')
    r = MtlPretrainRunner(cfg(d, '--mode', 'pretrain'))
    r.meta_train()
    return d, r


def test_defaults_and_flag_names_of_the_original():
    c = main.parse_config(['--model', 'mtl', '--savedir', '/tmp/x'])
    assert (c.dataset, c.way, c.shot, c.query, c.metabatch) == ('mimgnet', 5, 1, 15, 2)
    assert (c.inner_lr, c.meta_lr, c.n_steps, c.n_test_steps) == (1e-3, 1e-3, 20, 100)
    assert (c.n_train_iters, c.val_freq, c.save_freq, c.n_test_iters) == (20000, 100, 100, 600)
    assert (c.lr_drop_step, c.lr_drop_rate, c.min_meta_lr, c.clip_value) == (1000, .5, 1e-4, 0)
    assert (c.pretrain_iterations, c.pretrain_batch_size, c.pre_lr, c.pre_lr_dropstep) == \
        (20000, 64, 1e-3, 5000)
    assert (c.pre_iter, c.pretrain_dropout_keep, c.img_size, c.backbone_arch) == \
        (10000, 0.9, 84, 'resnet12')
    assert c.base_augmentation and not c.hard_task and c.metatest_epite_sample_num == 0
    c = main.parse_config(['--model', 'mtl', '--savedir', '/tmp/x', '--shot_num', '5',
                           '--way_num', '4', '--base_lr', '0.01', '--meta_batch_size', '4',
                           '--train_base_epoch_num', '10', '--test_base_epoch_num', '50',
                           '--metatrain_iterations', '7', '--metatrain_epite_sample_num', '9',
                           '--meta_save_step', '3', '--meta_val_print_step', '6'])
    assert (c.shot, c.way, c.inner_lr, c.metabatch, c.n_steps, c.n_test_steps) == \
        (5, 4, 0.01, 4, 10, 50)
    assert (c.n_train_iters, c.query, c.save_freq, c.val_freq) == (7, 9, 3, 6)
    # another model keeps its own defaults
    assert main.parse_config(['--savedir', '/tmp/x']).metabatch == 16


@pytest.mark.parametrize('argv, message', [
    (['--model', 'maml', '--hard_task'], '--hard_task does not apply to --model maml'),
    (['--model', 'maml', '--mode', 'pretrain'], 'adv_test, embed; not pretrain'),
    (['--model', 'mtl', '--clip_value', '3'], '--clip_value does not apply to --model mtl'),
    (['--model', 'mtl', '--backbone', 'resnet12'], '--backbone_arch'),
    (['--model', 'mtl', '--img_size', '8'], 'too small'),
    (['--model', 'mtl', '--mode', 'export'], 'runs --mode pretrain, meta_train, meta_test, embed; not export'),
    (['--model', 'mtl', '--distribute', 'mirrored'], '--distribute does not apply to --model mtl'),
    (['--model', 'mtl', '--pretrain_dropout_keep', '0'], 'pretrain_dropout_keep'),
    (['--model', 'mtl', '--dataset', 'leo_mini'], 'works on images'),
])
def test_usage_errors(argv, message):
    with pytest.raises(app.UsageError, match=message):
        main.parse_config(['--savedir', '/tmp/x', *argv])


def test_pretrain_stream_is_a_fixed_shuffle_cycled():
    images = np.arange(3 * 4, dtype=np.float32).reshape(3, 4, 1, 1, 1)
    split = ClassSplit(images, scale=1.)
    s = PretrainStream(split, 5, seed=0)
    seen = np.concatenate([s.batch(i)[0].ravel() for i in range(12)])  # 60 = 5 epochs
    for epoch in seen.reshape(5, 12):
        assert sorted(epoch.tolist()) == list(range(12))
    np.testing.assert_array_equal(seen[:12], seen[12:24])   # the same order every epoch
    x, y = s.batch(3)
    np.testing.assert_array_equal(y, x.ravel() // 4)        # label = the class index
    np.testing.assert_array_equal(PretrainStream(split, 5, 0).batch(3)[0], x)
    assert not np.array_equal(PretrainStream(split, 5, 1).batch(0)[0], s.batch(0)[0])


def test_pretrain_writes_snapshots_log_and_learning_rate(pretrained):
    d, r = pretrained
    pre = d / 'pretrain'
    assert saved_weights(str(pre)) == [1, 2]
    log = open(pre / 'pretrain.log').read()
    assert 'Pretrain Iter 0, lr 0.001' in log and 'Pretrain Iter 2' in log
    assert r.model.fc['w5'].shape == (512, 600)   # the synthetic dataset's 600 train classes
    assert r.learning_rate(5000) == 1e-3 and r.learning_rate(5001) == pytest.approx(5e-4)
    assert (pre / 'model-2.index').exists()


def test_pretrain_stopped_by_its_time_budget_leaves_a_snapshot(tmp_path):
    r = MtlPretrainRunner(cfg(tmp_path, '--mode', 'pretrain', '--pre_save_step', '1000',
                              '--time_budget', '1e-6'))
    r.meta_train()
    assert saved_weights(str(tmp_path / 'pretrain')) == [0]   # the iteration it stopped after
    assert 'stopped: wrote the backbone snapshot weights-0' in \
        open(tmp_path / 'pretrain' / 'pretrain.log').read()


def test_pretrain_class_num_below_the_classes_is_refused(tmp_path):
    with pytest.raises(RunError, match='pretrain_class_num 10 is smaller than the 600'):
        MtlPretrainRunner(cfg(tmp_path, '--mode', 'pretrain', '--pretrain_class_num', '10'))


def test_meta_train_needs_a_snapshot_and_says_how_to_make_one(tmp_path):
    r = MtlRunner(cfg(tmp_path, '--mode', 'meta_train'))
    with pytest.raises(RunError, match='--mode pretrain'):
        r.meta_train()


def test_pretrain_meta_train_meta_test_end_to_end(pretrained, tmp_path):
    d, pre = pretrained
    frozen = {k: v.numpy() for k, v in pre.model.backbone.weights.items()}  # = weights-2
    r = MtlRunner(cfg(tmp_path, '--mode', 'meta_train', '--pretrain_dir', str(d / 'pretrain'),
                      '--pre_iter', '-1'))
    r.meta_train()
    for k, v in r.model.backbone.weights.items():
        np.testing.assert_array_equal(v.numpy(), frozen[k])   # loaded, then never updated
    log = open(tmp_path / 'meta_train.log').read()
    assert 'loaded the pre-trained backbone' in log and 'weights-2' in log
    assert 'warning: loaded' not in log
    assert 'Iter 0, meta-val acc' in log and 'Iter 2, meta-val acc' in log
    records = json.load(open(tmp_path / 'validation.json'))
    assert [x['iteration'] for x in records] == [0, 2] and records[0]['n_episodes'] == 4
    assert r.optimizer.step.numpy() == 3
    assert r.learning_rate(1001) == pytest.approx(5e-4)

    t = MtlRunner(cfg(tmp_path, '--mode', 'meta_test'))
    result = t.meta_test()
    assert result['n_episodes'] == 6 and result['query'] == 1 and result['n_test_steps'] == 3
    assert result['checkpoint'] == 'model-2'
    lines = open(tmp_path / 'meta_test.csv').read().splitlines()
    assert lines[0] == 'step,1,2,3' and [x.split(',')[0] for x in lines[1:]] == \
        ['mean', 'std', 'ci95']
    assert float(lines[1].split(',')[-1]) == pytest.approx(result['accuracy'], abs=1e-3)
    assert open(tmp_path / 'meta_test.log').read().startswith('accuracy : ')
    # --test_iter picks a checkpoint; a missing one is named
    t0 = MtlRunner(cfg(tmp_path, '--mode', 'meta_test', '--test_iter', '0'))
    assert t0.meta_test()['checkpoint'] == 'model-0'
    with pytest.raises(RunError, match='model-0, model-2'):
        MtlRunner(cfg(tmp_path, '--mode', 'meta_test', '--test_iter', '1')).meta_test()


def labelled_split(n_classes=8, per_class=6):
    """Images whose every pixel is their class id."""
    images = np.repeat(np.arange(n_classes, dtype=np.float32), per_class * 16 * 16 * 3)
    return ClassSplit(images.reshape(n_classes, per_class, 16, 16, 3), scale=1.)


def test_hard_task_meta_batch_reuses_the_hardest_classes(pretrained, tmp_path):
    d, _ = pretrained
    r = MtlRunner(cfg(tmp_path, '--mode', 'meta_train', '--hard_task',
                      '--pretrain_dir', str(d / 'pretrain'), '--pre_iter', '1'))
    sampler = EpisodeSampler(labelled_split(), 5, 1, 2)
    classes = np.array([[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]])
    class_acc = np.array([[.9, .5, .8, 1., 1.], [1., 1., 1., 0., .75]])
    xs, ys, xq, yq = r.hard_tasks(sampler, classes, class_acc, 7)
    assert r.last_hard_classes.tolist() == [6, 1, 7, 2, 0]   # failures 6, 1; then .75, .8, .9
    for t in range(2):
        support = {int(xs[t, j, 0, 0, 0]): int(ys[t, j]) for j in range(5)}
        assert set(support) == {6, 1, 7, 2, 0}
        for j in range(10):
            assert support[int(xq[t, j, 0, 0, 0])] == int(yq[t, j])  # labels consistent
    # the runner's step: one extra update on the hard tasks per iteration
    r.meta_train()
    assert r.optimizer.step.numpy() == 2 * 3
    log = open(tmp_path / 'meta_train.log').read()
    assert 'hard-task loss' in log


def original_npy(path, arrays):
    np.save(path, arrays, allow_pickle=True)   # how the original saves its dicts


def test_converter_reads_the_released_npy_layout(tmp_path):
    from model import mtl
    rng = np.random.default_rng(0)
    net = mtl.MtlBackbone('resnet12')
    weights = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in net.weights.items()}
    weights['w5'] = np.zeros((512, 64), np.float32)   # the original's unused dummy head
    weights['b5'] = np.zeros(64, np.float32)
    model = mtl.MTL(5, 1)
    ss = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in model.ss.items()}
    fc = {'w5': rng.normal(size=(512, 5)).astype(np.float32), 'b5': np.ones(5, np.float32)}
    npy = tmp_path / 'download_weights'
    npy.mkdir()
    original_npy(npy / 'weights.npy', weights)
    original_npy(npy / 'ss_weights.npy', ss)
    original_npy(npy / 'fc_weights.npy', fc)
    out = tmp_path / 'run'
    flags = ['--dataset', 'synthetic', '--img_size', '16', '--noprogress']
    assert mtl_convert.main(['--npy_dir', str(npy), '--savedir', str(out), *flags]) == 0
    assert saved_weights(str(out / 'pretrain')) == [10000]
    t = MtlRunner(main.parse_config(['--model', 'mtl', '--mode', 'meta_test', '--savedir',
                                     str(out), *flags]))
    assert t.restore_for_test().endswith('model-0')
    for k, v in t.model.backbone.weights.items():
        np.testing.assert_array_equal(v.numpy(), weights[k])
    for k, v in t.model.ss.items():
        np.testing.assert_array_equal(v.numpy(), ss[k])
    np.testing.assert_array_equal(t.model.fc['w5'].numpy(), fc['w5'])
    # META_LOAD: meta_train starts from the converted backbone
    m = MtlRunner(main.parse_config(['--model', 'mtl', '--mode', 'meta_train', '--savedir',
                                     str(tmp_path / 'meta'), '--pretrain_dir',
                                     str(out / 'pretrain'), *flags]))
    m.load_pretrained()
    np.testing.assert_array_equal(m.model.ss['block2_bias1'].numpy(), weights['block2_bias1'])


def test_converter_names_wrong_shapes_and_refuses_code(tmp_path, capsys):
    from model import mtl
    net = mtl.MtlBackbone('resnet12')
    weights = {k: np.zeros(v.shape, np.float32) for k, v in net.weights.items()}
    weights['block1_conv1'] = np.zeros((3, 3, 3, 32), np.float32)
    del weights['block4_conv_res']
    original_npy(tmp_path / 'weights.npy', weights)
    assert mtl_convert.main(['--npy_dir', str(tmp_path), '--savedir', str(tmp_path / 'o'),
                             '--pretrained_only']) == 1
    err = capsys.readouterr().err
    assert 'missing block4_conv_res' in err and 'block1_conv1: [3, 3, 3, 32]' in err

    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned > %s' % (tmp_path / 'pwned'),))
    arr = np.empty((), object)
    arr[()] = {'x': Evil()}
    with open(tmp_path / 'weights.npy', 'wb') as f:
        np.lib.format.write_array(f, arr, allow_pickle=True)
    assert mtl_convert.main(['--npy_dir', str(tmp_path), '--savedir', str(tmp_path / 'o'),
                             '--pretrained_only']) == 1
    assert 'refused' in capsys.readouterr().err
    assert not (tmp_path / 'pwned').exists()


@pytest.mark.slow
def test_pretrain_and_meta_transfer_learn_far_above_chance(tmp_path):
    """Synthetic glyphs, ResNet-12 at 16x16: pre-training, meta-training, then the original's
    meta-test (flips, 100 steps, 1 query per class) on held-out classes."""
    common = ['--model', 'mtl', '--dataset', 'synthetic', '--img_size', '16', '--noprogress',
              '--savedir', str(tmp_path), '--seed', '1']
    pre = MtlPretrainRunner(main.parse_config(
        [*common, '--mode', 'pretrain', '--pretrain_iterations', '60', '--pre_save_step', '50',
         '--pre_print_step', '10', '--pretrain_batch_size', '32']))
    pre.meta_train()
    log = open(tmp_path / 'pretrain' / 'pretrain.log').read()
    losses = [float(x) for x in re.findall(r'loss ([0-9.]+)', log)]
    assert losses[-1] < losses[0]
    m = MtlRunner(main.parse_config(
        [*common, '--mode', 'meta_train', '--pre_iter', '50', '--n_train_iters', '10',
         '--val_freq', '1000', '--meta_intrain_val_sample', '20', '--print_freq', '10']))
    m.meta_train()
    t = MtlRunner(main.parse_config([*common, '--mode', 'meta_test', '--n_test_iters', '100']))
    result = t.meta_test()
    # Measured on a busy machine: 66% after 100 pretraining and 30 meta iterations.
    assert result['accuracy'] > 45, result   # chance 20%
