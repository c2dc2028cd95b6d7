"""Fault tolerance (issue 5): checkpoints that survive kills and corruption, signals, resume
determinism, non-finite steps, a savedir that cannot be written or fills up, and bad data
files. Every run is the tiny synthetic configuration of test_runner.py."""
import io
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import main
from data.datasets import DatasetError, load_dataset
from data.download import DownloadError, download, safe_extract
from model import runner as runner_module
from model.runner import Interrupted, NonFiniteError, Runner, RunError
from tests.test_download import FAST, payload, server  # noqa: F401  (local file server)
from tests.test_cli import run_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--dataset', 'synthetic', '--way', '5', '--shot', '1', '--query', '5',
        '--metabatch', '2', '--n_steps', '1', '--n_channel', '8', '--noprogress',
        '--n_val_batches', '2', '--n_test_iters', '20']


def runner(savedir, *extra):
    return Runner(main.parse_config(['--savedir', str(savedir), *TINY, *extra]),
                  log=lambda *a: None)


def state(r):
    """Everything a resumed run must reproduce: weights, Adam moments and step, iteration."""
    opt = r.optimizer
    return [v.numpy() for v in (*r.model.outer_variables, *opt.m, *opt.v, opt.step,
                                r.iteration)]


def assert_same_state(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)   # bitwise, see README "Fault tolerance"


def read_log(savedir):
    return (savedir / 'meta_train.log').read_text()


def tb_scalars(savedir, tag):
    """(step, value) of a TensorBoard scalar, from every events file of the run."""
    out = []
    for path in sorted((savedir / 'tensorboard').iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                if v.tag == tag:
                    out.append((event.step, float(tf.make_ndarray(v.tensor))))
    return out


# ---------------------------------------------------------------------------- checkpoints

def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    runner(tmp_path, '--n_train_iters', '4', '--save_freq', '2').meta_train()
    data = tmp_path / 'model-4.data-00000-of-00001'
    data.write_bytes(data.read_bytes()[:len(data.read_bytes()) // 2])   # truncated
    r = runner(tmp_path, '--n_train_iters', '4')
    path, notes = r.restore()
    assert os.path.basename(path) == 'model-2' and int(r.iteration.numpy()) == 3
    assert len(notes) == 1 and 'model-4 cannot be read' in notes[0] and 'model-2' in notes[0]
    # meta_test says which checkpoint it used and why.
    said = []
    r = Runner(r.cfg, log=said.append)
    assert os.path.basename(r.restore_for_test()) == 'model-2'
    assert any('warning: checkpoint model-4 cannot be read' in s for s in said)
    # Bytes flipped inside the tensors: TF's CRC check refuses them too.
    good = tmp_path / 'model-2.data-00000-of-00001'
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    good.write_bytes(bytes(raw))
    (tmp_path / 'model-0.index').write_bytes(b'')
    with pytest.raises(RunError, match=r'none of the checkpoints in .* can be read .*model-4.*'
                                       r'model-2.*Checksum does not match.*model-0'):
        runner(tmp_path).restore()


def test_a_save_killed_half_way_is_not_taken_for_a_checkpoint(tmp_path):
    runner(tmp_path, '--n_train_iters', '2', '--save_freq', '2').meta_train()
    # What a save of model-6 killed before TF listed it can leave: its temporary folder and
    # some of its final files.
    (tmp_path / 'model-6_temp').mkdir()
    part = 'part-00000-of-00001.data-00000-of-00001.tempstate1'
    (tmp_path / 'model-6_temp' / part).write_bytes(b'x')
    shutil.copy(tmp_path / 'model-2.index', tmp_path / 'model-6.index')
    (tmp_path / 'model-6.data-00000-of-00001').write_bytes(b'half')
    r = runner(tmp_path, '--n_train_iters', '2')
    path, notes = r.restore()
    assert os.path.basename(path) == 'model-2' and notes == []   # model-6 was never listed
    r.meta_train()   # already trained; clears TF's leftover temporary folder
    assert not (tmp_path / 'model-6_temp').exists()
    # Without the checkpoint list, the index files are tried, newest first, and verified.
    os.remove(tmp_path / 'checkpoint')
    path, notes = runner(tmp_path).restore()
    assert os.path.basename(path) == 'model-2'
    assert 'checkpoint list' in notes[0] and 'missing' in notes[0]
    assert 'model-6 cannot be read' in notes[1]


def test_a_checkpoint_is_flushed_to_disk_before_it_is_listed(tmp_path, monkeypatch):
    """Power-loss safety: every file of model-<i> and the savedir are fsync'ed while the
    checkpoint list still names the previous checkpoint; the list is fsync'ed after."""
    events, real_fsync = [], os.fsync

    def fsync(fd):
        listed = tf.train.latest_checkpoint(str(tmp_path))
        events.append((os.path.basename(os.readlink(f'/proc/self/fd/{fd}')),
                       listed and os.path.basename(listed)))
        return real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', fsync)
    runner(tmp_path, '--n_train_iters', '1', '--save_freq', '1', '--print_freq', '1',
           '--val_freq', '1000').meta_train()
    for i, before in ((0, None), (1, 'model-0')):
        files = [e for e in events if e[0].startswith(f'model-{i}.')]
        assert {f for f, _ in files} == {f'model-{i}.index', f'model-{i}.data-00000-of-00001'}
        assert all(listed == before for _, listed in files)
        last_file = max(events.index(e) for e in files)
        # then the folder (the renames of TF's temporary files), still unlisted
        assert (tmp_path.name, before) in events[last_file + 1:]
        # and the list once it names model-<i>
        assert ('checkpoint', f'model-{i}') in events
    assert ('config.json.tmp', None) in events   # atomic JSON: flushed before the rename
    assert (tmp_path / 'config.json').read_text().endswith('}\n')


def test_atomic_text_files_end_with_a_newline(tmp_path):
    path = str(tmp_path / 'meta_test.log')
    runner_module.write_atomically(path, 'accuracy : 50.000000 +- 1.000000')
    assert open(path).read() == 'accuracy : 50.000000 +- 1.000000\n'
    runner_module.write_atomically(path, 'a\nb\n')
    assert open(path).read() == 'a\nb\n' and not os.path.exists(path + '.tmp')


def test_log_is_appended_and_a_cut_line_stays_apart(tmp_path):
    runner(tmp_path, '--n_train_iters', '1').meta_train()
    before = read_log(tmp_path)
    with open(tmp_path / 'meta_train.log', 'a') as f:
        f.write('meta_train: episo')   # a kill in the middle of a line
    runner(tmp_path, '--n_train_iters', '1').meta_train()
    after = read_log(tmp_path)
    assert after.startswith(before + 'meta_train: episo\n\nresumed from model-1 at iteration 2\n')
    assert 'already trained' in after


def test_config_is_stored_in_every_checkpoint(tmp_path):
    r = runner(tmp_path, '--n_train_iters', '0')
    r.meta_train()
    reader = tf.train.load_checkpoint(str(tmp_path / 'model-0'))
    saved = r.saved_config(reader)
    assert saved['way'] == 5 and saved['model'] == 'maml' and saved['n_channel'] == 8
    os.remove(tmp_path / 'config.json')
    way10 = [a if a != '5' or TINY[i - 1] != '--way' else '10' for i, a in enumerate(TINY)]
    with pytest.raises(RunError, match=r"--way 5 \(saved\) vs 10 \(now\)"):
        Runner(main.parse_config(['--savedir', str(tmp_path), *way10])).restore()
    with pytest.raises(RunError, match=r"--model 'maml' \(saved\) vs 'metasgd' \(now\); "
                                       r"--n_channel 8 \(saved\) vs 16 \(now\)"):
        runner(tmp_path, '--model', 'metasgd', '--n_channel', '16').restore()
    path, _ = runner(tmp_path, '--n_train_iters', '9', '--shot', '2').restore()   # allowed
    assert os.path.basename(path) == 'model-0'


# ---------------------------------------------------------------------- signals, determinism

def test_sigterm_saves_and_the_resumed_run_is_bitwise_the_uninterrupted_one(tmp_path):
    full = runner(tmp_path / 'full', '--n_train_iters', '5', '--save_freq', '1000')
    full.meta_train()

    r = runner(tmp_path / 'part', '--n_train_iters', '5', '--save_freq', '1000')
    step, calls = r.train_step, []

    def step_then_signal(*ep):
        out = step(*ep)
        calls.append(1)
        if len(calls) == 3:   # during iteration 2
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    r._train_step = step_then_signal
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as stop:
        r.meta_train()
    assert stop.value.exit_code == 143 and len(calls) == 3
    assert signal.getsignal(signal.SIGTERM) is handler   # restored
    assert 'stopped by SIGTERM after iteration 2; saved checkpoint model-2' in str(stop.value)
    assert 'stopped by SIGTERM after iteration 2' in read_log(tmp_path / 'part')
    assert (tmp_path / 'part' / 'model-2.index').exists()

    resumed = runner(tmp_path / 'part', '--n_train_iters', '5', '--save_freq', '1000')
    resumed.meta_train()
    assert 'resumed from model-2 at iteration 3' in read_log(tmp_path / 'part')
    assert_same_state(state(full), state(resumed))


def test_sigint_through_main_saves_and_exits_130(tmp_path):
    cmd = [sys.executable, os.path.join(REPO, 'main.py'), '--mode', 'meta_train',
           '--savedir', str(tmp_path), *TINY, '--n_train_iters', '100000',
           '--save_freq', '1000', '--print_freq', '1', '--val_freq', '100000']
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 180
        while 'Iter 3 start' not in (read_log(tmp_path) if (tmp_path / 'meta_train.log').exists()
                                     else ''):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.time() < deadline, 'no progress within 180 s'
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert 'Traceback' not in err
    m = re.search(r'stopped by SIGINT after iteration (\d+); saved checkpoint model-(\d+)', err)
    assert m and m.group(1) == m.group(2), err[-2000:]
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith(f'model-{m.group(1)}')


# ------------------------------------------------------------------------- numerical faults

def test_a_non_finite_step_changes_neither_weights_nor_adam_state(tmp_path):
    r = runner(tmp_path)
    sampler = r.sampler('train')
    ep = sampler.sample(np.random.default_rng(0), 2)
    r.train_step(*ep)                     # one good step, so the Adam moments are non-zero
    before = state(r)
    for poison in (np.nan, np.inf):
        bad = ep._replace(xs=ep.xs.copy())
        bad.xs[1, 0, 3, 3, 0] = poison
        loss, _, applied = r.train_step(*bad)
        # Skipped. The loss itself may stay finite (a NaN does not always propagate through
        # oneDNN's kernels, and ReLU's gradient is 0 at a NaN); the meta-gradient is not,
        # and the guard checks both.
        assert not bool(applied)
        assert_same_state(before, state(r))
    loss, _, applied = r.train_step(*ep)
    assert bool(applied) and np.isfinite(float(loss))
    assert int(r.optimizer.step.numpy()) == 2
    assert r.train_step.experimental_get_tracing_count() == 1   # the guard did not retrace


def test_without_the_guard_a_poisoned_step_is_applied_as_the_originals_did(tmp_path):
    """--noskip_nonfinite_steps: a good step is bitwise the guarded one; a poisoned step is
    applied (Adam steps, the NaN reaches the weights), as in the originals, which had no
    guard."""
    guarded, plain = runner(tmp_path / 'a'), runner(tmp_path / 'b', '--noskip_nonfinite_steps')
    ep = guarded.sampler('train').sample(np.random.default_rng(0), 2)
    for r in (guarded, plain):
        loss, _, applied = r.train_step(*ep)
        assert bool(applied)
    assert_same_state(state(guarded), state(plain))
    bad = ep._replace(xs=ep.xs.copy())
    bad.xs[1, 0, 3, 3, 0] = np.nan
    assert not bool(guarded.train_step(*bad)[2])
    assert bool(plain.train_step(*bad)[2])
    assert int(plain.optimizer.step.numpy()) == 2
    assert not all(np.isfinite(w.numpy()).all() for w in plain.model.outer_variables)
    assert all(np.isfinite(w.numpy()).all() for w in guarded.model.outer_variables)


class Poisoned:
    """A sampler whose n-th call (one per iteration, in order) gets a NaN pixel if n in bad."""

    def __init__(self, sampler, bad):
        self.sampler, self.bad, self.calls = sampler, set(bad), 0

    def __getattr__(self, name):   # the rest of the sampler (draw_ids, episode, ...) as is
        return getattr(self.sampler, name)

    def sample(self, rng, n_tasks):
        ep = self.sampler.sample(rng, n_tasks)
        if self.calls in self.bad:
            ep.xs[0, 0, 0, 0, 0] = np.nan
        self.calls += 1
        return ep


def test_consecutive_non_finite_steps_stop_training_with_a_message(tmp_path):
    r = runner(tmp_path, '--n_train_iters', '20', '--max_bad_steps', '3', '--save_freq', '1000',
               '--print_freq', '1000')
    make_sampler = r.sampler
    r.sampler = lambda split: Poisoned(make_sampler(split), {1, 3, 4, 5} if split == 'train'
                                       else ())
    step, snapshots = r.train_step, []

    def recording_step(*ep):
        snapshots.append(state(r))
        return step(*ep)

    r._train_step = recording_step
    with pytest.raises(NonFiniteError) as stop:
        r.meta_train()
    msg = str(stop.value)
    assert msg.startswith('3 consecutive meta-train steps (iterations 3..5) had a non-finite '
                          'loss or meta-gradient, so training stopped (--max_bad_steps 3)')
    assert '--inner_lr' in msg and 'checkpoint model-5' in msg
    log = read_log(tmp_path)
    skipped = [l for l in log.splitlines() if ' skipped: non-finite' in l]
    assert [int(l.split()[2]) for l in skipped] == [1, 3, 4, 5]
    assert '(1 in a row, 1 skipped in total)' in skipped[0]
    assert '(3 in a row, 4 skipped in total)' in skipped[-1]
    assert 'stopped: 3 consecutive' in log
    # Iterations 3..5 changed nothing: the state is the one before iteration 3; iterations
    # 0 and 2 were the only Adam steps.
    after = state(r)
    assert_same_state(snapshots[3][:-1], after[:-1])
    assert int(r.optimizer.step.numpy()) == 2 and int(r.iteration.numpy()) == 6
    assert all(np.isfinite(w).all() for w in after)
    assert [s for s, _ in tb_scalars(tmp_path, 'meta_train/skipped_steps')] == [1, 3, 4, 5]
    # The count survives in the checkpoint.
    reader = tf.train.load_checkpoint(str(tmp_path / 'model-5'))
    assert int(reader.get_tensor(runner_module.BAD_STEPS_KEY)) == 4


# ------------------------------------------------------------------ savedir and disk errors

def test_savedir_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / 'afile').write_text('x')
    code, err = run_main(capsys, '--savedir', str(tmp_path / 'afile' / 'run'), *TINY)
    assert code == 1
    assert f'error: cannot create --savedir {tmp_path / "afile" / "run"}: a part of that path ' \
           'is a file, not a folder' in err


@pytest.fixture
def tmpfs(tmp_path):
    """mount(path, options): a tmpfs we can make read-only or tiny (needs root; skipped
    otherwise). Unmounted afterwards."""
    mounted = []

    def mount(path, options):
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(path)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f'cannot mount a tmpfs here: {done.stderr.strip()}')
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(['umount', str(path)], capture_output=True)


def test_read_only_savedir_is_refused(tmp_path, tmpfs, capsys):
    # Permission bits do not stop root; a read-only mount stops everyone.
    ro = tmpfs(tmp_path / 'ro', 'ro,size=64k')
    code, err = run_main(capsys, '--savedir', str(ro), *TINY)
    assert code == 1
    assert f'error: --savedir {ro} is not writable: the file system is mounted read-only ' \
           '(EROFS)' in err


def _used_bytes(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, tmpfs, capsys):
    disk = tmpfs(tmp_path / 'disk', 'size=1m')
    savedir = disk / 'run'
    runner(savedir, '--n_train_iters', '0').meta_train()
    checkpoint_bytes = sum(os.path.getsize(savedir / n) for n in os.listdir(savedir)
                           if n.startswith('model-0.'))
    # Room for the log lines and a new events file, not for another checkpoint.
    size = _used_bytes(disk) + 3 * 4096 + checkpoint_bytes // 2
    subprocess.run(['mount', '-o', f'remount,size={size}', str(disk)], check=True)
    code, err = run_main(capsys, '--savedir', str(savedir), *TINY, '--n_train_iters', '3',
                         '--save_freq', '1')
    assert code == 1
    assert 'No space left on device' in err and f'the disk holding {savedir} is full' in err
    assert 'The last complete checkpoint, model-0, is intact: rerunning the same command ' \
           'resumes from it' in err
    assert 'Traceback' not in err
    assert not any(n.startswith('model-1') for n in os.listdir(savedir))   # partial removed
    path, notes = runner(savedir).restore()
    assert os.path.basename(path) == 'model-0' and notes == []


def test_disk_full_in_the_middle_of_a_save(tmp_path, monkeypatch):
    """The same without root: the save fails after writing part of model-1's files."""
    original = tf.train.CheckpointManager.save

    def save(self, checkpoint_number=None, **kw):
        if checkpoint_number == 1:
            os.makedirs(os.path.join(self.directory, 'model-1_temp'))
            with open(os.path.join(self.directory, 'model-1.data-00000-of-00001'), 'wb') as f:
                f.write(b'partial')
            raise tf.errors.ResourceExhaustedError(
                None, None, f'{self.directory}/model-1_temp/part-00000-of-00001.data-00000-of-'
                            '00001.tempstate1; No space left on device [Op:SaveV2]')
        return original(self, checkpoint_number=checkpoint_number, **kw)

    monkeypatch.setattr(tf.train.CheckpointManager, 'save', save)
    with pytest.raises(RunError) as err:
        runner(tmp_path, '--n_train_iters', '3', '--save_freq', '1').meta_train()
    assert str(err.value).startswith(f'saving checkpoint model-1 failed: the disk holding '
                                     f'{tmp_path} is full: No space left on device.')
    assert 'model-0, is intact' in str(err.value)
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith('model-')) == \
        ['model-0.data-00000-of-00001', 'model-0.index']
    monkeypatch.undo()
    path, _ = runner(tmp_path).restore()
    assert os.path.basename(path) == 'model-0'


# ------------------------------------------------------------------------------ bad data

def _npy_dir(tmp_path):
    odir = tmp_path / 'omniglot'
    odir.mkdir(parents=True)
    np.save(odir / 'train.npy', np.zeros((8, 20, 784), np.float32))
    np.save(odir / 'test.npy', np.zeros((4, 20, 784), np.float32))
    return odir


def test_partial_dataset_half_of_the_npy_pair(tmp_path, capsys):
    os.remove(_npy_dir(tmp_path) / 'test.npy')
    code, err = run_main(capsys, '--savedir', str(tmp_path / 'run'), '--dataset', 'omniglot',
                         '--data_root', str(tmp_path), '--noprogress')
    assert code == 1
    assert '(found train.npy but not its partner)' in err
    assert f'python data/get_data.py --dataset omniglot --data_root {tmp_path}' in err


def test_partial_dataset_extracted_folder_missing_images(tmp_path):
    char = tmp_path / 'omniglot' / 'images_background_small1' / 'Greek' / 'character01'
    char.mkdir(parents=True)
    for k in range(19):   # 20 drawers in Omniglot
        Image.new('1', (105, 105), 1).save(char / f'0001_{k:02d}.png')
    with pytest.raises(DatasetError, match=r'Greek/character01 .* has 19 images instead of 20; '
                                           r'the archive or folder is incomplete'):
        load_dataset('omniglot', str(tmp_path), source='small', cache=False)


@pytest.mark.parametrize('cut,message', [
    (0.5, r'is truncated or damaged \(mmap length is greater than file size\)'),
    (0.2, r'is truncated or damaged \(EOF: reading array header'),   # 40 of the 128 header bytes
    (0.0, r'is not an \.npy array file \(it is empty'),
])
def test_truncated_npy(tmp_path, capsys, cut, message):
    path = _npy_dir(tmp_path) / 'test.npy'
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * cut)] if cut != 0.2 else raw[:40])
    code, err = run_main(capsys, '--savedir', str(tmp_path / 'run'), '--dataset', 'omniglot',
                         '--data_root', str(tmp_path), '--noprogress')
    assert code == 1 and re.search(message, err), err
    assert 'delete it and download it again' in err.lower()


class _Payload:
    """Unpickling this creates a file: proof that a loader ran code from the data folder."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_pickles_in_the_data_folder_are_never_loaded(tmp_path):
    odir = _npy_dir(tmp_path)
    marker = str(tmp_path / 'code-ran')
    (odir / 'test.npy').write_bytes(pickle.dumps(_Payload(marker)))   # a pickle named .npy
    with pytest.raises(DatasetError, match=r'not an \.npy array file .* a pickle, which is '
                                           r'never loaded because unpickling can run code'):
        load_dataset('omniglot', str(tmp_path))
    np.save(odir / 'test.npy', np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match=r'holds Python objects that would need allow_pickle'
                                           r'.* never loaded because unpickling can run code'):
        load_dataset('omniglot', str(tmp_path))
    assert not os.path.exists(marker)


def _omniglot_zip(path, stem='images_background_small1'):
    with zipfile.ZipFile(path, 'w') as zf:
        for c in range(3):
            for k in range(20):
                buf = io.BytesIO()
                Image.new('1', (105, 105), 1).save(buf, 'PNG')
                zf.writestr(f'{stem}/Greek/character{c:02d}/{c:04d}_{k:02d}.png', buf.getvalue())
    return path


def test_truncated_zip(tmp_path):
    odir = tmp_path / 'omniglot'
    odir.mkdir()
    path = _omniglot_zip(odir / 'images_background_small1.zip')
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(DatasetError, match=r'images_background_small1\.zip is not a readable zip '
                                           r'\(File is not a zip file\); delete it and download'):
        load_dataset('omniglot', str(tmp_path), cache=False)


def test_zip_with_a_corrupted_member(tmp_path):
    odir = tmp_path / 'omniglot'
    odir.mkdir()
    path = _omniglot_zip(odir / 'images_background_small1.zip')
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo('images_background_small1/Greek/character01/0001_05.png')
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + 10:start + 20] = b'\0' * 10   # inside that member's compressed bytes
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r'cannot read images_background_small1/Greek/'
                                           r'character01/0001_05\.png in .*\(BadZipFile: Bad '
                                           r'CRC-32.*the zip is damaged: delete it and download'):
        load_dataset('omniglot', str(tmp_path), cache=False)


def test_truncated_tar(tmp_path):
    path = tmp_path / 'data.tar.gz'
    with tarfile.open(path, 'w:gz') as tf_:
        for k in range(3):
            data = payload(50_000, seed=k)
            info = tarfile.TarInfo(f'pkg/file{k}.bin')
            info.size = len(data)
            tf_.addfile(info, io.BytesIO(data))
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(DownloadError, match=r'data\.tar\.gz is corrupted \(.*\); delete it and '
                                            r'download it again'):
        safe_extract(str(path), str(tmp_path / 'out'))
    assert not (tmp_path / 'out' / 'pkg').exists()   # nothing half-extracted under its name


def test_retries_back_off_exponentially(server, tmp_path, monkeypatch):  # noqa: F811
    import data.download as download_module
    waits = []
    monkeypatch.setattr(download_module.time, 'sleep', waits.append)
    data = payload(10_000)
    url = server.add('/f.bin', data, fail_status=502, fail_times=3)
    download(url, str(tmp_path / 'f.bin'), **dict(FAST, backoff=0.5))
    assert waits == [0.5, 1.0, 2.0]
    assert (tmp_path / 'f.bin').read_bytes() == data


def test_folder_images_of_mixed_sizes_and_modes_are_converted(tmp_path):
    root = tmp_path / 'folder'
    kinds = {
        'rgb': lambda: Image.new('RGB', (30, 20), (255, 0, 0)),
        'grey': lambda: Image.new('L', (7, 41), 128),
        'transparent': lambda: Image.new('RGBA', (16, 16), (0, 0, 255, 0)),
        'palette': lambda: Image.new('RGB', (50, 50), (0, 255, 0)).convert('P'),
        'bilevel': lambda: Image.new('1', (9, 9), 1),
        'grey16': lambda: Image.new('I;16', (12, 13), 0),
    }
    expected_rgb = {'rgb': (255, 0, 0), 'grey': (128, 128, 128), 'transparent': (255, 255, 255),
                    'palette': (0, 255, 0), 'bilevel': (255, 255, 255), 'grey16': (0, 0, 0)}
    for c in range(6):
        d = root / f'class{c}'
        d.mkdir(parents=True)
        for name, make in kinds.items():
            make().save(d / f'{name}.png')
        Image.new('L', (60, 30), 200).save(d / 'grey.jpg')   # and a jpeg
    ds = load_dataset('folder', str(tmp_path), image_size=8, channels=3)
    split = ds.train
    assert ds.image_shape == (8, 8, 3) and split.counts.min() == 7
    files = sorted(p.name for p in (root / 'class0').iterdir())
    for j, f in enumerate(files):
        img = split.images(0, [j])[0]
        if f.endswith('.png'):
            want = np.array(expected_rgb[f[:-4]], np.float32) / 255
            np.testing.assert_allclose(img, np.broadcast_to(want, img.shape), atol=1 / 255)
    grey = load_dataset('folder', str(tmp_path), image_size=8, channels=1)
    assert grey.image_shape == (8, 8, 1)
    red = grey.train.images(0, [files.index('rgb.png')])[0]
    np.testing.assert_allclose(red, 76 / 255, atol=1 / 255)   # ITU-R 601 luma of pure red


def test_folder_class_with_fewer_images_than_shot_plus_query(tmp_path, capsys):
    root = tmp_path / 'folder'
    for split, n_classes in (('train', 6), ('test', 6)):
        for c in range(n_classes):
            d = root / split / f'c{c}'
            d.mkdir(parents=True)
            for k in range(1 if (split, c) == ('train', 4) else 3):
                Image.new('L', (8, 8), 10 * k).save(d / f'{k}.png')
    code, err = run_main(capsys, '--savedir', str(tmp_path / 'run'), '--dataset', 'folder',
                         '--folder_dir', str(root), '--image_size', '8', '--channels', '1',
                         '--way', '2', '--shot', '1', '--query', '1', '--noprogress')
    assert code == 1
    assert "error: shot 1 + query 1 = 2 images per class, but the smallest class of the " \
           "'train' split of folder has 1 images; use shot + query <= 1" in err
