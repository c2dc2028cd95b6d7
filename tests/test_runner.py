"""The engine end to end on the embedded synthetic dataset: learning, checkpoints, resume
(also after SIGKILL), configuration checks and the meta-test protocol."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import main
from model.runner import Runner, RunError, confidence_interval, TEST_STREAM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--dataset', 'synthetic', '--way', '5', '--shot', '1', '--query', '5',
        '--metabatch', '2', '--n_steps', '1', '--n_channel', '8', '--noprogress',
        '--n_val_batches', '2', '--n_test_iters', '20']


def runner(savedir, *extra):
    return Runner(main.parse_config(['--savedir', str(savedir), *TINY, *extra]))


def weights(r):
    return [v.numpy() for v in r.model.outer_variables]


def test_confidence_interval_is_the_originals_normal_interval():
    acc = np.array([50., 70., 90., 60.])
    mean, ci = confidence_interval(acc)
    assert mean == pytest.approx(67.5)
    assert ci == pytest.approx(1.96 * acc.std(ddof=0) / 2.)


@pytest.mark.slow
def test_short_synthetic_maml_run_learns_far_above_chance(tmp_path):
    r = Runner(main.parse_config([
        '--savedir', str(tmp_path), '--dataset', 'synthetic', '--way', '5', '--shot', '1',
        '--query', '15', '--metabatch', '2', '--n_steps', '2', '--n_channel', '32',
        '--n_train_iters', '150', '--save_freq', '1000', '--val_freq', '1000',
        '--n_val_batches', '5', '--n_test_iters', '200', '--noprogress']))
    before = 100 * np.mean(r.evaluate('test', 50, TEST_STREAM, 'untrained')[1])
    r.meta_train()
    result = r.meta_test()
    # Measured: 45% untrained -> 77% after 150 iterations (chance 20%).
    assert result['accuracy'] > 65, result
    assert result['accuracy'] > before + 15, (before, result)
    assert result['n_episodes'] == 200
    log = open(tmp_path / 'meta_test.log').read()
    assert log.startswith('accuracy : ') and ' +- ' in log
    assert json.load(open(tmp_path / 'meta_test.json'))['accuracy'] == result['accuracy']
    assert os.listdir(tmp_path / 'tensorboard')


def test_time_budget_stops_after_an_iteration_with_a_checkpoint_and_continues(tmp_path):
    r = runner(tmp_path, '--n_train_iters', '5', '--save_freq', '100', '--time_budget', '1e-6')
    r.meta_train()
    log = open(tmp_path / 'meta_train.log').read()
    assert 'the time budget of 1e-06 s' in log and 'after iteration 0' in log
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith('model-0')
    r = runner(tmp_path, '--n_train_iters', '5', '--save_freq', '100')
    r.meta_train()   # no budget: runs to the end from iteration 1
    assert int(r.iteration.numpy()) == 6
    assert 'resumed from model-0 at iteration 1' in open(tmp_path / 'meta_train.log').read()


def test_meta_train_writes_the_originals_log_and_checkpoints(tmp_path):
    r = runner(tmp_path, '--n_train_iters', '4', '--save_freq', '2', '--print_freq', '2',
               '--val_freq', '4')
    r.meta_train()
    log = open(tmp_path / 'meta_train.log').read().splitlines()
    assert 'way: 5' in log and 'model: maml' in log
    assert log[log.index('way: 5') + 1:].count('') >= 1
    assert 'Iter 2 start, learning rate 0.001000' in log
    assert any(l.startswith('meta_train: episode 4, (') and ' cent ' in l and ' acc ' in l
               for l in log)
    assert sum(l.startswith('meta_test : episode ') for l in log) == 2  # iterations 0 and 4
    names = os.listdir(tmp_path)
    assert {'model-2.index', 'model-4.index', 'checkpoint', 'config.json'} <= set(names)
    assert int(r.iteration.numpy()) == 5  # iterations 0..4 ran


def test_resumed_run_reaches_the_uninterrupted_weights(tmp_path):
    full = runner(tmp_path / 'full', '--n_train_iters', '5', '--save_freq', '2')
    full.meta_train()
    part = runner(tmp_path / 'part', '--n_train_iters', '2', '--save_freq', '2')
    part.meta_train()
    assert int(part.iteration.numpy()) == 3
    resumed = runner(tmp_path / 'part', '--n_train_iters', '5', '--save_freq', '2')
    resumed.meta_train()
    for a, b in zip(weights(full), weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    log = open(tmp_path / 'part' / 'meta_train.log').read()
    assert 'resumed from model-2 at iteration 3' in log
    assert log.count('way: 5') == 1  # appended, not rewritten
    # Nothing left to do: a rerun says so and leaves the weights alone.
    again = runner(tmp_path / 'part', '--n_train_iters', '5')
    again.meta_train()
    assert 'already trained' in open(tmp_path / 'part' / 'meta_train.log').read()


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    runner(tmp_path, '--n_train_iters', '0').meta_train()
    with pytest.raises(RunError, match=r"--way 5 \(saved\) vs 10 \(now\)"):
        r = Runner(main.parse_config(['--savedir', str(tmp_path),
                                      *TINY[:TINY.index('--way')], '--way', '10',
                                      *TINY[TINY.index('--way') + 2:]]))
        r.meta_test()
    with pytest.raises(RunError, match='--model'):
        runner(tmp_path, '--model', 'metasgd', '--n_train_iters', '3').meta_train()
    # Flags that do not change the model may differ.
    runner(tmp_path, '--shot', '2', '--n_test_steps', '3').meta_test()


def test_meta_test_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match='run --mode meta_train'):
        runner(tmp_path).meta_test()


def test_meta_test_is_reproducible(tmp_path):
    runner(tmp_path, '--n_train_iters', '0').meta_train()
    a = runner(tmp_path).meta_test()
    b = runner(tmp_path).meta_test()
    assert a['accuracy'] == b['accuracy'] and a['n_episodes'] == 20


def test_sigkilled_run_resumes_from_its_last_checkpoint(tmp_path):
    cmd = [sys.executable, os.path.join(REPO, 'main.py'), '--mode', 'meta_train',
           '--savedir', str(tmp_path), *TINY, '--n_train_iters', '400', '--save_freq', '5',
           '--val_freq', '1000']
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not os.path.exists(tmp_path / 'model-10.index'):
            assert proc.poll() is None, 'training exited before its second checkpoint'
            assert time.time() < deadline, 'no checkpoint within 120 s'
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = max(int(n[len('model-'):-len('.index')]) for n in os.listdir(tmp_path)
                    if n.startswith('model-') and n.endswith('.index'))
    assert killed_at < 400
    done = subprocess.run(cmd[:-4] + ['--n_train_iters', str(killed_at + 3), '--save_freq', '5'],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    log = open(tmp_path / 'meta_train.log').read()
    assert f'resumed from model-{killed_at} at iteration {killed_at + 1}' in log
    assert os.path.exists(tmp_path / f'model-{killed_at + 3}.index')


def test_export_writes_the_originals_layout(tmp_path):
    import pickle
    runner(tmp_path, '--n_train_iters', '0').meta_train()
    r = runner(tmp_path, '--shot', '2', '--query', '3', '--n_test_steps', '4')
    outs = __import__('model.export', fromlist=['export']).export(r)
    with open(tmp_path / 'export.pkl', 'rb') as f:
        saved = pickle.load(f)
    assert len(saved) == 10
    npz = np.load(tmp_path / 'export.npz')
    F = r.model.net.feature_dim
    for i, o in enumerate(saved):
        assert o['htr'].shape == (5, 4, F) and o['hte'].shape == (5, 6, F)
        assert o['w'].shape == (5, F, 2) and o['b'].shape == (5, 2)
        assert o['ytr'].tolist() == [0, 0, 1, 1] and o['yte'].tolist() == [0, 0, 0, 1, 1, 1]
        np.testing.assert_array_equal(npz['htr'][i], o['htr'])
        # The recorded head is the inner loop's: support loss falls from first to last snapshot.
        def support_ce(s):
            logits = o['htr'][s] @ o['w'][s] + o['b'][s]
            logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
            return -logp[np.arange(4), o['ytr']].mean()
        assert support_ce(4) < support_ce(0)
    assert npz['classes'].tolist()[:2] == [[0, 5], [1, 6]]
    # The initial head is theta's first two columns.
    np.testing.assert_allclose(saved[0]['w'][0], r.model.net.theta['dense_w'].numpy()[:, :2])


def test_relative_savedir_resumes_and_tests(tmp_path, monkeypatch):
    """The quick start passes a relative --savedir; TF lists its checkpoints relative to the
    working directory."""
    monkeypatch.chdir(tmp_path)
    runner('./results/run', '--n_train_iters', '1', '--save_freq', '1').meta_train()
    r = runner('./results/run', '--n_train_iters', '2', '--save_freq', '1')
    r.meta_train()
    assert 'resumed from model-1 at iteration 2' in open('results/run/meta_train.log').read()
    assert runner('./results/run').meta_test()['checkpoint'] == 'model-2'
