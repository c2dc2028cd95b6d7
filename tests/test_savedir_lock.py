"""One run per savedir (issue 22): a second process on a savedir in use is refused at once,
naming the holder; a lock left by a process killed with SIGKILL never blocks the next run."""
import fcntl
import os
import re
import signal
import subprocess
import sys
import time
import types

import pytest

from model.runner import LOCK_FILE, RunError, lock_savedir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--dataset', 'synthetic', '--way', '5', '--shot', '1', '--query', '5',
        '--metabatch', '2', '--n_steps', '1', '--n_channel', '8', '--noprogress',
        '--n_val_batches', '1', '--n_test_iters', '4', '--print_freq', '1',
        '--val_freq', '100000', '--save_freq', '5', '--n_train_iters', '100000']


def main_py(savedir, mode='meta_train'):
    return [sys.executable, 'main.py', '--mode', mode, '--savedir', str(savedir), *TINY]


def wait_for(predicate, proc, timeout=300):
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - t0 < timeout
        time.sleep(0.05)


def log_text(savedir):
    try:
        return (savedir / 'meta_train.log').read_text()
    except OSError:
        return ''


@pytest.mark.slow
def test_second_run_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path):
    savedir = tmp_path / 'run'
    first = subprocess.Popen(main_py(savedir), cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: re.search(r'^Iter 1 start', log_text(savedir), re.M), first)
        # The same command again, and a meta_test, while the first one trains.
        seconds = [subprocess.Popen(main_py(savedir, mode), cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
                   for mode in ('meta_train', 'meta_test')]
        for proc in seconds:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 1, err[-3000:]
            errors = [l for l in err.splitlines() if l.startswith('error')]
            assert len(errors) == 1 and f'in use by process {first.pid}' in errors[0], err
            assert f'kill {first.pid}' in errors[0] and 'Traceback' not in err
        assert first.poll() is None   # the holder was not disturbed
        log = log_text(savedir)
        assert log.count('\nalpha_init: ') + log.startswith('alpha_init: ') == 1   # one header
        assert 'resumed' not in log
    finally:
        first.kill()    # SIGKILL: no handler runs, the lock file stays with its pid
        first.wait()
    assert (savedir / LOCK_FILE).read_text().split()[0] == str(first.pid)
    third = subprocess.Popen(main_py(savedir), cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: 'resumed from model-' in log_text(savedir), third)
        assert (savedir / LOCK_FILE).read_text().split()[0] == str(third.pid)
    finally:
        third.send_signal(signal.SIGTERM)   # saves and exits 143
        _, err = third.communicate(timeout=300)
    assert third.returncode == 128 + signal.SIGTERM, err[-3000:]


def test_lock_is_released_when_the_run_ends_and_names_its_holder(tmp_path):
    cfg = types.SimpleNamespace(mode='meta_train', savedir=str(tmp_path / 'run'))
    with lock_savedir(cfg):
        assert (tmp_path / 'run' / LOCK_FILE).read_text().split()[0] == str(os.getpid())
        # Another open file description of the same file: what a second process gets.
        fd = os.open(tmp_path / 'run' / LOCK_FILE, os.O_RDWR)
        try:
            with pytest.raises(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    with lock_savedir(cfg):   # released on exit: the next run of this process locks again
        pass


def test_meta_test_on_a_missing_savedir_creates_nothing(tmp_path):
    cfg = types.SimpleNamespace(mode='meta_test', savedir=str(tmp_path / 'none'))
    with lock_savedir(cfg):
        pass
    assert not (tmp_path / 'none').exists()


def test_refusal_names_the_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import fcntl, os, sys, time; fd = os.open(sys.argv[1], '
         'os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, '
         'f"{os.getpid()}\\n".encode()); print("locked", flush=True); time.sleep(60)',
         str(tmp_path / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        cfg = types.SimpleNamespace(mode='export', savedir=str(tmp_path))
        with pytest.raises(RunError, match=f'in use by process {holder.pid} '):
            with lock_savedir(cfg):
                pass
    finally:
        holder.kill()
        holder.wait()
    with lock_savedir(cfg):   # its holder is gone
        pass
