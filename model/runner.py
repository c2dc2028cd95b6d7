"""The engine shared by every method: compiled steps, meta-train loop with logging,
validation, checkpoints and resume, and meta-test with 95% intervals.

Logs follow metadrop main.py: `<savedir>/meta_train.log` opens with one `key: value` line
per flag and a blank line; every `print_freq` (50) iterations
    Iter <i> start, learning rate <lr>
    meta_train: episode <i*metabatch>, (<secs> secs), cent <loss>, acc <acc>
and every `val_freq` (1000, including iteration 0) a validation over `n_val_batches` (50)
metabatches with the test pipeline,
    meta_test : episode <i*metabatch>, (<secs> secs), cent <loss>, acc <acc>
Iterations run i = 0..n_train_iters inclusive (n_train_iters + 1 updates), as the original.
meta_test writes `accuracy : <mean> +- <1.96 std / sqrt(n)>` to `<savedir>/meta_test.log`.

Differences from the original, all deliberate: checkpoints hold the optimiser state, the
iteration and the configuration, so rerunning the same command resumes; episodes are drawn
from seeded generators (iteration i always sees the same episodes), so a resumed run sees
the same data as an uninterrupted one; the interval divides by the number of episodes
actually run (the original divides by n_test_iters, the same number whenever metabatch
divides n_test_iters).

Fault tolerance. A checkpoint counts only once tf.train.CheckpointManager has listed it in
`<savedir>/checkpoint` (TF writes the tensors to a temporary folder, renames them into
place, then rewrites that list atomically), so a save killed half-way is never taken for a
good one; its files and folder are flushed to the disk (fsync) before it is listed, and
the list after, so a power loss cannot list a checkpoint whose data never reached the disk
(config.json, validation records and test logs are written the same way, through
write_atomically). One run per savedir: main.py holds an fcntl lock on <savedir>/.lock
(lock_savedir). At restart the newest listed checkpoint that reads back completely (TF checks
every tensor's CRC) is used, falling back to the previous ones with a log line. Each
checkpoint also stores the flags it was trained with (`run/config`), checked before
restoring. SIGINT/SIGTERM finish the current iteration, save, log and exit 130/143. A step
whose loss or meta-gradient is not finite is skipped inside the compiled step (weights and
Adam state untouched), logged, and `--max_bad_steps` of them in a row stop the run
(`--noskip_nonfinite_steps` applies them, as the originals did). A full disk while saving
leaves the previous checkpoint usable and says so.
"""
import contextlib
import errno
import json
import os
import queue
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import types

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from data.augment import DATASET_NORMALIZATION, EpisodeAugmenter, parse_augment
from data.datasets import load_dataset
from data.episodes import EpisodeSampler
from model import build_model
from model import nets, optim
from model import steps
from model.evaluation import (confidence_interval, episode_fingerprints, episodes_csv,
                              paired_difference)

# Flags that change the model's variables or the method: a checkpoint is only valid for
# the values it was trained with.
STRUCTURAL_FLAGS = ('model', 'maml', 'backbone', 'n_channel', 'dataset', 'way', 'image_size',
                    'channels', 'zero_head', 'normalization', 'alpha_on', 'omega_on',
                    'gamma_on', 'z_on', 'num_latents', 'use_64bits_dtype',
                    'backbone_arch', 'img_size', 'activation', 'norm')
# ... and for resuming meta_train only (the optimiser state is not restored at test).
TRAIN_STRUCTURAL_FLAGS = ('optimizer',)
# Structural flags that describe the data rather than the network: the modes that only use a
# trained network (TEST_MODES) compare the input shape recorded with the checkpoint instead
# (`input_shape` in its config), so a checkpoint can be tested on any dataset of that shape.
DATA_FLAGS = ('dataset', 'image_size', 'channels')
TEST_MODES = ('meta_test', 'adv_test', 'export', 'embed')
# --dataset omniglot_runs: Lake et al.'s 20 fixed one-shot runs (lake_runs_test).
LAKE_RUNS = 'omniglot_runs'


CHECKPOINT_NAME = 'model'
CONFIG_KEY = 'run/config/.ATTRIBUTES/VARIABLE_VALUE'
BAD_STEPS_KEY = 'run/bad_steps/.ATTRIBUTES/VARIABLE_VALUE'


class RunError(Exception):
    """A user-facing problem with the run (flags, savedir, checkpoints, disk)."""


class Interrupted(RunError):
    """SIGINT/SIGTERM stopped meta_train after saving a checkpoint; exit with `exit_code`."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteError(RunError):
    """--max_bad_steps consecutive steps had a non-finite loss or meta-gradient."""


def configure_cpu_devices(n):
    """Splits the host CPU into n logical devices (before TensorFlow initialises them)."""
    if n <= 1:
        return
    cpus = tf.config.list_physical_devices('CPU')
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError:  # devices already initialised in this process
        have = len(tf.config.list_logical_devices('CPU'))
        if have != n:
            raise RunError(f'--n_cpu_devices {n}: TensorFlow already runs with {have} CPU '
                           'device(s) in this process; set it before anything else uses '
                           'TensorFlow') from None


def make_strategy(cfg):
    """The tf.distribute strategy of --distribute (None: plain single-device code)."""
    kind = getattr(cfg, 'distribute', 'none')
    configure_cpu_devices(getattr(cfg, 'n_cpu_devices', 0))
    if kind == 'none':
        return None
    if kind == 'mirrored':
        if tf.config.list_logical_devices('GPU'):
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy(
            [d.name for d in tf.config.list_logical_devices('CPU')])
    if kind == 'multi_worker':
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise RunError(f'unknown --distribute {kind!r}; use none, mirrored or multi_worker')


def worker_role(strategy):
    """(is_chief, task id) of this process under MultiWorkerMirroredStrategy."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True, 0
    kind, task = resolver.task_type, resolver.task_id or 0
    return is_chief_task(resolver.cluster_spec().as_dict(), kind, task), task


def episode_rng(seed, stream, *index):
    """Independent generator per (seed, stream, index...): iteration i of a run always sees
    the same episodes, whether or not the run was interrupted before i."""
    return np.random.default_rng([int(seed), int(stream), *[int(i) for i in index]])


TRAIN_STREAM, VAL_STREAM, TEST_STREAM = 0, 1, 2
PROCESS_START = time.time()   # --time_budget counts from here (this import, ~3 s into a run)


def dataset_options(cfg):
    """The reader options of the chosen dataset, from the flags (as its declaration in data/
    maps them; data.datasets.dataset_options)."""
    from data.datasets import dataset_options as declared_options
    return declared_options(cfg.dataset, cfg)


def make_augmenter(cfg):
    """--augment: the transformation of meta-train episodes (identity when empty)."""
    return EpisodeAugmenter(parse_augment(getattr(cfg, 'augment', '')),
                            pad=getattr(cfg, 'augment_pad', 8),
                            jitter=getattr(cfg, 'augment_jitter', 0.4),
                            query=getattr(cfg, 'augment_query', False))


def prefetch(iterable, size=3):
    """Runs `iterable` in a background thread, `size` items ahead (episode sampling
    overlaps the compiled step). The thread stops when the consumer does."""
    q = queue.Queue(maxsize=size)
    done = object()
    error = []
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def work():
        try:
            for item in iterable:
                if not put(item):
                    return
        except BaseException as e:  # surfaced in the consumer
            error.append(e)
        put(done)

    threading.Thread(target=work, daemon=True).start()
    try:
        while True:
            item = q.get()
            if item is done:
                if error:
                    raise error[0]
                return
            yield item
    finally:
        stop.set()


def read_records(path):
    """The records a validation log (write_record's JSON list) holds; [] when it is missing
    or unreadable (it is a log only, nothing is chosen from it)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


def write_record(path, records, record, key):
    """Writes `records` with `record` replacing any entry of the same `key` (a resumed run
    validating a step again), sorted by `key`, as indented JSON, atomically."""
    records = [r for r in records if r[key] != record[key]] + [record]
    write_atomically(path, json.dumps(sorted(records, key=lambda r: r[key]), indent=1))


def checkpoint_number(path):
    m = re.search(r'-(\d+)$', path)
    return int(m.group(1)) if m else -1


def short_error(e):
    """One line of an exception, without TF's '{{function_node ...}}' prefix."""
    text = re.sub(r'\{\{.*?\}\}\s*', '', str(e)).strip().splitlines()
    text = text[0] if text else ''
    if len(text) > 200:
        text = text[:200] + '...'
    return f'{type(e).__name__}: {text}' if text else type(e).__name__


def is_disk_full(e):
    return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or \
        'No space left on device' in str(e)


def fsync_path(path):
    """Flushes a file, or a folder's entries, to the disk (a rename is durable only once
    the folder holding it is flushed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_checkpoint(prefix):
    """Flushes the files of checkpoint `prefix` (model-<i>.index, .data-*) and its folder
    to the disk: called before the checkpoint is listed, so a listed checkpoint survives a
    power loss (a rename may otherwise reach the disk before the data it names)."""
    d, stem = os.path.split(prefix)
    d = d or '.'
    for n in os.listdir(d):
        if n == stem + '.index' or n.startswith(stem + '.data-'):
            fsync_path(os.path.join(d, n))
    fsync_path(d)


def write_atomically(path, text):
    """Writes a small text file under a temporary name, flushes it to the disk, renames it
    into place and flushes the folder: a power loss leaves the old file or the new one,
    never an empty one. Text ends with a newline (a POSIX text file; `cat` and `tail`
    expect it)."""
    if not text.endswith('\n'):
        text += '\n'
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(os.path.dirname(path) or '.')


LOCK_FILE = '.lock'


def is_chief_task(cluster, kind, index):
    """Whether task (kind, index) of a TF_CONFIG cluster is the chief: the 'chief' task, or
    worker 0 when the cluster names no chief."""
    return kind == 'chief' or (kind == 'worker' and (index or 0) == 0 and
                               'chief' not in cluster)


def locked_dir(cfg, folder=None):
    """(folder this run writes, whether the run creates it): `folder` when the method's runner
    writes elsewhere (MTL's pre-training: --pretrain_dir), else the savedir; a worker of
    --distribute multi_worker other than the chief writes <savedir>/worker<i>."""
    mode = getattr(cfg, 'mode', 'meta_train')
    if folder:
        return folder, True
    d = cfg.savedir
    if getattr(cfg, 'distribute', 'none') == 'multi_worker':
        try:
            tf_config = json.loads(os.environ.get('TF_CONFIG') or '{}')
            task = tf_config.get('task', {})
            if tf_config.get('cluster') and not is_chief_task(
                    tf_config['cluster'], task.get('type'), task.get('index')):
                d = os.path.join(d, f'worker{task.get("index") or 0}')
        except (ValueError, AttributeError, TypeError):
            pass   # the strategy reports a bad TF_CONFIG
    return d, mode == 'meta_train'


def read_lock_holder(path, wait=1.0):
    """The process id written in a lock file (its holder writes it right after locking:
    wait a moment for it), or None."""
    deadline = time.time() + wait
    while True:
        try:
            with open(path) as f:
                first = f.readline().strip()
            if first.isdigit():
                return int(first)
        except OSError:
            pass
        if time.time() >= deadline:
            return None
        time.sleep(0.02)


@contextlib.contextmanager
def lock_savedir(cfg, folder=None):
    """One run per savedir (or per `folder`, see locked_dir): an exclusive fcntl.flock on <savedir>/.lock for the run's whole
    life, refused at once (RunError naming the holder's process id) while another live
    process holds it. The OS drops the lock when its holder dies, kill -9 included, so a
    stale .lock file never blocks the next run; the file itself stays (deleting it could
    let two runs lock two different files). Where the folder cannot be created or written,
    nothing is locked and the runner's own checks say why."""
    import fcntl
    d, create = locked_dir(cfg, folder)
    fd = None
    if d and (create or os.path.isdir(d)):
        path = os.path.join(d, LOCK_FILE)
        try:
            if create:
                os.makedirs(d, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            fd = None
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                fd = None   # a file system without locks: run unlocked, as before
            else:
                pid = read_lock_holder(path)
                who = f'process {pid}' if pid else 'another process'
                raise RunError(f'{d} is in use by {who} (another run writing this folder: two '
                               'runs in one savedir would interleave their checkpoints and '
                               f'logs). Wait for it to finish or stop it'
                               f'{f" (kill {pid})" if pid else ""}, or use another --savedir.'
                               ) from None
    if fd is not None:
        os.ftruncate(fd, 0)
        os.write(fd, f'{os.getpid()}\n{" ".join(sys.argv)}\n'.encode())
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)   # releases the lock


def checkpoints_in(d):
    """The checkpoints of folder d, newest first, and notes for the log.

    Only checkpoints listed in <d>/checkpoint count: TF lists one after all its files are in
    place. If that list is missing or unreadable, the model-<i>.index files are used instead
    (each is still verified when restored)."""
    notes = []
    if not os.path.isdir(d):
        return [], notes
    state = tf.train.get_checkpoint_state(d)
    listed = []
    if state is not None:
        listed = list(state.all_model_checkpoint_paths) or \
            ([state.model_checkpoint_path] if state.model_checkpoint_path else [])
    # The list holds paths as TF was given them (relative to the working directory of
    # the run that saved them); the files always sit in the savedir itself.
    paths = [os.path.join(d, os.path.basename(p)) for p in listed]
    if not paths:
        paths = [os.path.join(d, n[:-len('.index')]) for n in os.listdir(d)
                 if re.fullmatch(rf'{CHECKPOINT_NAME}-\d+\.index', n)]
        if paths:
            state_file = os.path.join(d, 'checkpoint')
            notes.append(f'the checkpoint list {state_file} is '
                         f'{"unreadable" if os.path.exists(state_file) else "missing"}; '
                         f'trying the {CHECKPOINT_NAME}-<i>.index files found')
    return sorted(set(paths), key=checkpoint_number, reverse=True), notes


def draw_with_fingerprints(sampler, rng, n_tasks):
    """(episode, fingerprints) of n_tasks tasks, the very episode sampler.sample(rng, n_tasks)
    draws: the fingerprint of a task hashes its class names and image ids (and, for the
    imbalanced sampler's EpisodeIds, its shots)."""
    ids = sampler.draw_ids(rng, n_tasks)
    if hasattr(ids, '_fields'):   # EpisodeIds (data/episodes.py ImbalancedSampler)
        classes, drawn = ids.classes, [getattr(ids, f) for f in ids._fields if f != 'classes']
        episode = sampler.episode(ids)
    else:                         # (class ids, image ids)
        (classes, *drawn), episode = ids, sampler.episode(*ids)
    names = [[sampler.split.class_name(c) for c in row] for row in classes]
    return episode, episode_fingerprints(names, *drawn)


class FixedEpisodes:
    """A dataset of fixed test episodes (data/base.py DatasetSpec.fixed_episodes: Lake's 20
    one-shot runs) as the runner holds a dataset: its input shape and description; it has no
    class splits to sample from."""

    def __init__(self, name, runs):
        from data.datasets import dataset_spec
        self.name = name
        self.runs = list(runs)
        self.image_shape = tuple(int(d) for d in self.runs[0].support_x.shape[1:])
        self.description = dataset_spec(name).description
        self.val_is_test = False

    def split(self, which):
        raise RunError(f'--dataset {self.name} holds {len(self.runs)} fixed test episodes and no '
                       f'{which} split to sample from: only --mode meta_test reads it')


class Runner:
    TRAIN_LOG = 'meta_train.log'
    FIRST_ITERATION = 0   # metadrop counts 0..n_train_iters
    trained_dataset = None   # the --dataset of the checkpoint restored (check_config)
    restored_config = None   # ... and all its flags

    def __init__(self, cfg, log=print, dataset=None):
        """dataset: a FewShotDataset to use instead of loading --dataset (model/api.py's
        in-memory arrays)."""
        self.strategy = make_strategy(cfg)
        self.is_chief = True
        if self.strategy is not None and getattr(cfg, 'distribute', '') == 'multi_worker':
            self.is_chief, task = worker_role(self.strategy)
            if not self.is_chief:
                # Every worker saves (the checkpoint of a distributed run is written by
                # all of them); the others keep theirs beside the chief's.
                cfg = types.SimpleNamespace(**vars(cfg))
                cfg.savedir = os.path.join(cfg.savedir, f'worker{task}')
                cfg.progress = False
        replicas = self.strategy.num_replicas_in_sync if self.strategy is not None else 1
        if getattr(cfg, 'mode', 'meta_train') == 'meta_train' and cfg.metabatch % replicas:
            # main.py's preflight predicts this; the strategy itself has the last word.
            raise RunError(f'--metabatch {cfg.metabatch} cannot be split evenly across the '
                           f'{replicas} replicas of --distribute {cfg.distribute}; use a '
                           f'multiple of {replicas}')
        self.cfg = cfg
        self.log = log
        self.check_savedir()
        self.dataset = dataset if dataset is not None else load_dataset(
            cfg.dataset, cfg.data_root, progress=getattr(cfg, 'progress', True),
            **dataset_options(cfg))
        self.augmenter = make_augmenter(cfg)
        self.lr_milestones = [int(m) for m in getattr(cfg, 'lr_milestones', '').split(',')
                              if m.strip()]
        tf.random.set_seed(cfg.seed)
        # --[no]fused_batch_norm: read when the steps are traced (model/nets.py)
        nets.FUSED_BATCH_NORM = bool(getattr(cfg, 'fused_batch_norm', True))
        with (self.strategy.scope() if self.strategy else contextlib.nullcontext()):
            self.model = self.build_model()
            self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False, name='iteration')
            self.optimizer = optim.make_optimizer(
                getattr(cfg, 'optimizer', 'adam'), self.model.outer_variables,
                self.learning_rate(0),
                momentum=getattr(cfg, 'momentum', 0.9),
                weight_decay=getattr(cfg, 'weight_decay', 0.))
        # What is written: model, optimiser, iteration, plus the flags and the count of
        # skipped steps, read back through tf.train.load_checkpoint (older checkpoints lack
        # them). Host-local, outside the strategy: collectives cannot broadcast strings.
        self.run_state = tf.Module(name='run')
        self.run_state.config = tf.Variable(json.dumps(self.config_dict(), sort_keys=True),
                                            dtype=tf.string, trainable=False, name='config')
        self.run_state.bad_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                               name='bad_steps')
        # What a run needs to continue, restored with every object matched: meta_train
        # needs the optimiser state too; the other modes only the model.
        if getattr(cfg, 'mode', 'meta_train') == 'meta_train':
            self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                                  iteration=self.iteration)
        else:
            self.checkpoint = tf.train.Checkpoint(model=self.model, iteration=self.iteration)
        self.saved = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                         iteration=self.iteration, run=self.run_state)
        self.last_checkpoint = None
        self._train_step = None
        self._eval_step = None
        self._stop_signal = None

    @property
    def dataset(self):
        return self._dataset

    @dataset.setter
    def dataset(self, loaded):
        # load_dataset gives a list of episodes for a dataset of fixed episodes (Lake's runs):
        # held as FixedEpisodes, which has the image_shape the model is built for.
        self._dataset = FixedEpisodes(self.cfg.dataset, loaded) if isinstance(loaded, list) \
            else loaded

    def build_model(self):
        """The method's module (MTL's pre-training builds its own classifier instead)."""
        return build_model(self.cfg, self.cfg.way, self.dataset.image_shape)

    # ---- savedir -------------------------------------------------------------------
    def check_savedir(self):
        """Fails early, with the reason, if --savedir cannot hold this run's files.

        Writability is tested by writing a file: permission bits say nothing for root, and
        a read-only mount or a full disk refuse everyone."""
        d = self.cfg.savedir
        if not d:
            raise RunError('--savedir is required: the folder for checkpoints and logs, '
                           'e.g. --savedir ./results/maml/omni_1shot')
        if os.path.exists(d) and not os.path.isdir(d):
            raise RunError(f'--savedir {d} is a file, not a folder; choose another path')
        if getattr(self.cfg, 'mode', 'meta_train') == 'meta_train':
            try:
                os.makedirs(d, exist_ok=True)
            except OSError as e:
                why = ('a part of that path is a file, not a folder' if e.errno == errno.ENOTDIR
                       else e.strerror)
                where = f' ({e.filename})' if e.filename and e.filename != d else ''
                raise RunError(f'cannot create --savedir {d}: {why}{where}. Choose a folder '
                               'you can write to.') from None
        if os.path.isdir(d):
            try:
                fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=d)
                try:
                    os.write(fd, b'ok')
                finally:
                    os.close(fd)
                    os.remove(probe)
            except OSError as e:
                why = ('the disk is full' if e.errno == errno.ENOSPC else
                       'the file system is mounted read-only' if e.errno == errno.EROFS else
                       e.strerror)
                code = errno.errorcode.get(e.errno, e.errno)
                raise RunError(f'--savedir {d} is not writable: {why} ({code}). Choose another '
                               'folder, or free space / fix its permissions.') from None

    @contextlib.contextmanager
    def disk_errors(self):
        """Turns a failed write in the savedir into a RunError saying what survived."""
        try:
            yield
        except (OSError, tf.errors.OpError) as e:
            if isinstance(e, tf.errors.OpError) and not is_disk_full(e):
                raise
            raise RunError(self.write_failure(e, getattr(e, 'filename', None))) from None

    def write_failure(self, e, what=None):
        d = self.cfg.savedir
        kept = (f'The last complete checkpoint, {os.path.basename(self.last_checkpoint)}, is '
                'intact: rerunning the same command resumes from it.' if self.last_checkpoint
                else 'No checkpoint had been saved yet.')
        where = f' ({what})' if what else ''
        if is_disk_full(e):
            return (f'the disk holding {d} is full: No space left on device{where}. {kept} '
                    'Free some space (or use a --savedir on another disk) and rerun.')
        return f'cannot write in {d}{where}: {short_error(e)}. {kept}'

    # ---- configuration -------------------------------------------------------------
    @property
    def config_path(self):
        return os.path.join(self.cfg.savedir, 'config.json')

    def config_dict(self):
        config = {k: getattr(self.cfg, k) for k in sorted(vars(self.cfg))}
        # What the network takes, whatever dataset gave it: the test modes check this, not
        # the dataset's name (older checkpoints lack it).
        config['input_shape'] = [int(d) for d in self.dataset.image_shape]
        return config

    def saved_config(self, reader=None, folder=None):
        """The flags a checkpoint was trained with: stored in the checkpoint itself, else
        (checkpoints of older versions) the config.json of `folder` (default the savedir);
        None if neither is there."""
        if reader is not None and reader.has_tensor(CONFIG_KEY):
            return json.loads(reader.get_tensor(CONFIG_KEY).decode('utf-8'))
        path = os.path.join(folder, 'config.json') if folder else self.config_path
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def check_config(self, saved=None, subject=None):
        """A checkpoint may only be resumed or tested with the flags it was built with.

        The test modes (TEST_MODES) accept another dataset of the checkpoint's input shape
        (recorded as `input_shape`); meta_train, resuming, keeps refusing a dataset change.
        `subject` starts the error message (default: '<savedir> holds a checkpoint')."""
        if saved is None:
            saved = self.saved_config()
        if not saved:
            return
        subject = subject or f'{self.cfg.savedir} holds a checkpoint'
        mode = getattr(self.cfg, 'mode', 'meta_train')
        names = list(STRUCTURAL_FLAGS)
        if mode == 'meta_train':
            names += TRAIN_STRUCTURAL_FLAGS
        if mode in TEST_MODES and saved.get('input_shape') is not None:
            names = [k for k in names if k not in DATA_FLAGS]
            self.check_input_shape(saved, subject)
        if saved.get('zero_head') and getattr(self.cfg, 'zero_head', False):
            names.remove('way')   # a zero head has no way-sized variables
        diff = [f'--{k} {saved[k]!r} (saved) vs {getattr(self.cfg, k, None)!r} (now)'
                for k in names if k in saved and saved[k] != getattr(self.cfg, k, None)]
        if diff:
            old = (' (it was saved before checkpoints recorded their input shape, so the '
                   'test modes keep it to its own --dataset)'
                   if mode in TEST_MODES and 'input_shape' not in saved else '')
            raise RunError(f'{subject} of a different configuration: {"; ".join(diff)}{old}. '
                           'Use the saved values, or another --savedir for a new run.')
        self.trained_dataset = saved.get('dataset')
        self.restored_config = saved

    def check_input_shape(self, saved, subject):
        """A test mode on another dataset: the same input shape, and --normalization
        'dataset' (the constants of the dataset's name) must not silently change meaning."""
        cfg = self.cfg
        shape = [int(d) for d in saved['input_shape']]
        now = [int(d) for d in self.dataset.image_shape]
        was = saved.get('dataset')
        if shape != now:
            raise RunError(f'{subject} for inputs of shape {"x".join(map(str, shape))} '
                           f'(--dataset {was!r}), but --dataset {cfg.dataset!r} gives '
                           f'{"x".join(map(str, now))}; test it on a dataset of its input shape')
        if was != cfg.dataset and saved.get('normalization') == 'dataset' and \
                getattr(cfg, 'normalization', 'none') == 'dataset':
            mean, std = DATASET_NORMALIZATION.get(was, (None, None))
            given = (f': give --normalization {",".join(map(str, mean))}/'
                     f'{",".join(map(str, std))}' if mean else '')
            raise RunError(f'{subject} trained with --normalization dataset on {was!r}, whose '
                           f'constants are part of the network; on --dataset {cfg.dataset!r} '
                           f'give them explicitly{given}')

    def write_config(self):
        write_atomically(self.config_path,
                         json.dumps(self.config_dict(), indent=1, sort_keys=True))

    def manager(self):
        return tf.train.CheckpointManager(self.saved, self.cfg.savedir,
                                          max_to_keep=self.cfg.max_to_keep,
                                          checkpoint_name=CHECKPOINT_NAME)

    # ---- checkpoints ---------------------------------------------------------------
    def checkpoint_candidates(self):
        """Checkpoints to try, newest first, and notes for the log (checkpoints_in)."""
        return checkpoints_in(self.cfg.savedir)

    def restore(self):
        """Restores the newest complete checkpoint; returns (path or None, notes).

        A checkpoint that cannot be read back in full (truncated, corrupted, missing files)
        is skipped for the previous one, and the notes say so. Raises RunError if the flags
        differ from the checkpoint's, or if checkpoints exist but none can be read."""
        paths, notes = self.checkpoint_candidates()
        failures = []
        for path in paths:
            try:
                reader = tf.train.load_checkpoint(path)
                saved = self.saved_config(reader)
            except Exception as e:  # any failure to read means: not a usable checkpoint
                failures.append((path, e))
                continue
            self.check_config(saved)
            try:
                status = self.checkpoint.restore(path)
                # `run` (flags, skipped-step count) is read above, not restored: no warning.
                status.expect_partial()
                status.assert_existing_objects_matched()
            except Exception as e:
                failures.append((path, e))
                continue
            self.run_state.bad_steps.assign(
                int(reader.get_tensor(BAD_STEPS_KEY)) if reader.has_tensor(BAD_STEPS_KEY) else 0)
            for bad, e in failures:
                notes.append(f'checkpoint {os.path.basename(bad)} cannot be read '
                             f'({short_error(e)}); using the previous complete checkpoint '
                             f'{os.path.basename(path)} instead')
            self.last_checkpoint = path
            return path, notes
        if failures:
            listing = '; '.join(f'{os.path.basename(p)}: {short_error(e)}' for p, e in failures)
            raise RunError(f'none of the checkpoints in {self.cfg.savedir} can be read '
                           f'({listing}). Move them away, or use another --savedir, to start '
                           'a new run.')
        return None, notes

    def remove_partial_checkpoint(self, number):
        """Deletes what a failed save of model-<number> left behind (it was never listed)."""
        d = self.cfg.savedir
        stem = f'{CHECKPOINT_NAME}-{number}'
        shutil.rmtree(os.path.join(d, stem + '_temp'), ignore_errors=True)
        for n in os.listdir(d):
            if n == stem + '.index' or n.startswith(stem + '.data-'):
                try:
                    os.remove(os.path.join(d, n))
                except OSError:
                    pass

    def save(self, manager, i):
        """Saves the state after iteration i as model-<i>; a failure leaves the previous
        checkpoint as the latest and raises RunError."""
        self.iteration.assign(i + 1)
        try:
            # The write callback runs after TF renamed the files into place and before the
            # manager lists them: flushed first, listed after.
            path = manager.save(checkpoint_number=i, options=tf.train.CheckpointOptions(
                experimental_write_callbacks=[fsync_checkpoint]))
            fsync_path(os.path.join(self.cfg.savedir, 'checkpoint'))
            fsync_path(self.cfg.savedir)
        except Exception as e:
            listed = tf.train.latest_checkpoint(self.cfg.savedir)
            if listed is None or checkpoint_number(listed) != i:
                self.remove_partial_checkpoint(i)   # never listed: not a checkpoint
            raise RunError(f'saving checkpoint {CHECKPOINT_NAME}-{i} failed: '
                           + self.write_failure(e)) from None
        self.last_checkpoint = path
        return path

    # ---- signals -------------------------------------------------------------------
    @contextlib.contextmanager
    def stop_on_signals(self):
        """SIGINT/SIGTERM set a flag that the training loop checks after each iteration
        (a second one exits at once: checkpoints are crash-safe anyway)."""
        self._stop_signal = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._stop_signal is not None:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            self._stop_signal = signum  # no printing here: the handler may interrupt a write

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    # ---- compiled steps ----------------------------------------------------------
    @property
    def train_step(self):
        """(xs, ys, xq, yq) -> (loss, per-task acc, applied): one compiled meta-train step;
        the update is skipped unless the loss and meta-gradient are finite."""
        if self._train_step is None:
            cfg = self.cfg
            spec = steps.episode_spec(cfg.metabatch, cfg.way * cfg.shot, cfg.way * cfg.query,
                                      self.dataset.image_shape)
            self._train_step = self.compile_train_step(spec)
        return self._train_step

    def task_loop_options(self):
        """--task_loop and --parallel_tasks, as the compiled meta-train steps take them."""
        return dict(task_loop=getattr(self.cfg, 'task_loop', 'while'),
                    parallel_tasks=getattr(self.cfg, 'parallel_tasks', 1))

    def compile_train_step(self, spec):
        """The shared compiled meta-train step (model/steps.py) for episodes of `spec`, with
        the run's clipping, non-finite guard (--noskip_nonfinite_steps: none, as the
        originals), strategy and task-loop options."""
        cfg = self.cfg
        return steps.make_train_step(
            self.model, self.optimizer, cfg.clip_value, spec,
            skip_nonfinite=getattr(cfg, 'skip_nonfinite_steps', True),
            clip_norm=getattr(cfg, 'clip_norm', 0.), strategy=self.strategy,
            **self.task_loop_options())

    @property
    def eval_step(self):
        if self._eval_step is None:
            spec = steps.episode_spec(None, None, None, self.dataset.image_shape)
            self._eval_step = steps.make_eval_step(self.model, spec)
        return self._eval_step

    def sampler(self, split):
        return EpisodeSampler(self.dataset.split(split), self.cfg.way, self.cfg.shot,
                              self.cfg.query, reuse_classes=self.cfg.reuse_task_classes)

    # ---- meta-train ----------------------------------------------------------------
    def learning_rate(self, i):
        """The outer learning rate of iteration i under --lr_schedule."""
        cfg = self.cfg
        return optim.learning_rate(getattr(cfg, 'lr_schedule', 'constant'), cfg.meta_lr, i,
                                   self.lr_milestones, getattr(cfg, 'lr_decay', 0.1),
                                   cfg.n_train_iters)

    def evaluate(self, split, n_batches, stream, desc, batch_size=None, chunk=None, step=None):
        """Mean query loss and per-episode accuracies over n_batches batches of batch_size
        (default --metabatch) episodes; batch j's episodes come from the generator of (seed,
        stream, j), drawn and run `chunk` (default: all) episodes at a time, which changes
        memory only. `step` (episodes -> (losses, accuracies)) replaces eval_step. The
        episodes' fingerprints are left in self.fingerprints (per-episode files)."""
        sampler = self.sampler(split)
        cfg = self.cfg
        batch_size = batch_size or cfg.metabatch
        chunk = max(1, min(chunk or batch_size, batch_size))

        def episodes():
            for j in range(n_batches):
                rng = episode_rng(cfg.seed, stream, j)
                for start in range(0, batch_size, chunk):
                    yield draw_with_fingerprints(sampler, rng, min(chunk, batch_size - start))

        losses, accs, fingerprints = [], [], []
        for ep, fps in tqdm(prefetch(episodes()), total=n_batches * -(-batch_size // chunk),
                            desc=desc, leave=False, disable=not cfg.progress):
            loss, acc = (step or self.eval_step)(*ep)
            losses.append(loss.numpy())
            accs.append(acc.numpy())
            fingerprints += fps
        self.fingerprints = fingerprints
        return float(np.mean(np.concatenate(losses))), np.concatenate(accs)

    def meta_train(self):
        cfg = self.cfg
        d = cfg.savedir
        os.makedirs(d, exist_ok=True)
        # Leftovers of a save that was killed half-way (TF's own temporary folders).
        for n in os.listdir(d):
            if re.fullmatch(rf'{CHECKPOINT_NAME}-\d+_temp', n):
                shutil.rmtree(os.path.join(d, n), ignore_errors=True)
        resumed, notes = self.restore()
        with self.disk_errors():
            if not resumed:
                self.write_config()
            start = int(self.iteration.numpy())
            train_sampler = self.sampler('train')
            self.sampler('val')  # fails now, not at the first validation, if sizes are impossible
            self.max_bad_steps = cfg.max_bad_steps

            logpath = os.path.join(d, self.TRAIN_LOG)
            # A kill can cut only the line being written (each line is one flushed write,
            # appended): end that line before appending.
            partial_line = False
            if resumed and os.path.exists(logpath) and os.path.getsize(logpath):
                with open(logpath, 'rb') as f:
                    f.seek(-1, os.SEEK_END)
                    partial_line = f.read(1) != b'\n'
            logfile = open(logpath, 'a' if resumed else 'w')
            if partial_line:
                logfile.write('\n')
            try:
                self._train_loop(manager=self.manager(), logfile=logfile, start=start,
                                 resumed=resumed, notes=notes, train_sampler=train_sampler)
            finally:
                try:
                    logfile.close()
                except OSError:
                    pass

    def _train_loop(self, manager, logfile, start, resumed, notes, train_sampler):
        cfg = self.cfg
        writer = tf.summary.create_file_writer(os.path.join(cfg.savedir, 'tensorboard'))

        def write(line, leading_blank=False):
            tqdm.write(('\n' if leading_blank else '') + line)
            logfile.write(('\n' if leading_blank else '') + line + '\n')
            logfile.flush()

        if resumed:
            write(f'resumed from {os.path.basename(resumed)} at iteration {start}',
                  leading_blank=True)
        else:
            for k, v in self.config_dict().items():
                logfile.write(f'{k}: {v}\n')
            logfile.write('\n')
        for note in notes:   # 'info: ...' notes are not warnings
            write(note[len('info: '):] if note.startswith('info: ') else f'warning: {note}')
        write(f'dataset: {self.dataset.description}')
        last = self.last_iteration()
        if start > last:
            write(f'already trained: the checkpoint is at iteration {start - 1} and '
                  f'--n_train_iters is {cfg.n_train_iters}; nothing to do')
            return

        first = max(start, self.FIRST_ITERATION)
        episodes = ((i, self.train_episode(train_sampler, i))
                    for i in range(first, last + 1))
        t0 = time.time()
        running = {}   # sums since the last log line: loss, acc and a method's own metrics
        run_n = 0
        bad_in_a_row = 0
        last_lr = None
        bar = tqdm(total=last + 1, initial=start, desc='meta_train',
                   disable=not cfg.progress, dynamic_ncols=True)
        try:
            with writer.as_default(), self.stop_on_signals():
                for i, ep in prefetch(episodes):
                    lr = self.learning_rate(i)
                    if lr != last_lr:   # an eager assign only when the schedule moves
                        self.optimizer.learning_rate.assign(lr)
                        last_lr = lr
                    if self._stop_signal is None:
                        self.before_step(write, i, time.time() - t0)
                    loss, acc, applied, *extras = self.train_step(*ep)
                    bar.update(1)
                    if bool(applied):
                        bad_in_a_row = 0
                        values = dict(loss=float(loss), acc=float(np.mean(acc)),
                                      **{k: float(v) for k, v in (extras[0] if extras else
                                                                  {}).items()})
                        for k, v in values.items():
                            running[k] = running.get(k, 0.) + v
                        run_n += 1
                    else:
                        bad_in_a_row += 1
                        total = int(self.run_state.bad_steps.assign_add(1))
                        write(self.bad_step_message(i, float(loss), bad_in_a_row, total))
                        tf.summary.scalar('meta_train/skipped_steps', total, step=i)
                        if bad_in_a_row >= self.max_bad_steps:
                            self.save(manager, i)
                            message = (
                                f'{bad_in_a_row} consecutive meta-train steps (iterations '
                                f'{i - bad_in_a_row + 1}..{i}) had a non-finite loss or '
                                f'meta-gradient, so training stopped (--max_bad_steps '
                                f'{self.max_bad_steps}). {self.BAD_STEPS_EFFECT}; checkpoint '
                                f'{CHECKPOINT_NAME}-{i} holds the weights after them. '
                                'Usual causes: a learning rate too high (--inner_lr, '
                                '--meta_lr), no clipping (--clip_value 0), or NaN/Inf in the '
                                'data. Rerunning resumes after these iterations; the learning '
                                'rates may be changed on resume.')
                            write(f'stopped: {message}')
                            raise NonFiniteError(message)
                    if i % cfg.print_freq == 0:
                        means = {k: (v / run_n if run_n else float('nan'))
                                 for k, v in running.items()} if running else \
                            dict(loss=float('nan'), acc=float('nan'))
                        self.log_training(write, i, lr, means, time.time() - t0)
                        tf.summary.scalar('meta_train/learning_rate', lr, step=i)
                        running, run_n = {}, 0
                    if i % cfg.val_freq == 0 and self._stop_signal is None:
                        self.validate(write, i, time.time() - t0)
                    budget = getattr(cfg, 'time_budget', 0)
                    out_of_time = bool(budget) and i < last and \
                        time.time() - PROCESS_START >= budget
                    self.stopping = self._stop_signal is not None or out_of_time
                    self.after_iteration(write, i)
                    if self.should_save(i) or self.stopping:
                        self.save(manager, i)
                        writer.flush()
                    if out_of_time and self._stop_signal is None:
                        write(f'stopped: the time budget of {budget:g} s (--time_budget, '
                              f'counted from the start of the process) is used up after '
                              f'iteration {i}; saved checkpoint {CHECKPOINT_NAME}-{i}. The '
                              f'same command continues from iteration {i + 1} for another '
                              'budget.')
                        return
                    if self._stop_signal is not None:
                        name = signal.Signals(self._stop_signal).name
                        message = (f'stopped by {name} after iteration {i}; saved checkpoint '
                                   f'{CHECKPOINT_NAME}-{i}. Rerun the same command to resume '
                                   f'from iteration {i + 1}.')
                        write(message)
                        raise Interrupted(message, 128 + self._stop_signal)
        finally:
            bar.close()
            try:
                writer.flush()
            except Exception:
                pass

    # ---- what a method may change in the training loop ----------------------------
    BAD_STEPS_EFFECT = 'None of them changed the weights'

    def last_iteration(self):
        """The last iteration meta_train runs (metadrop: n_train_iters inclusive)."""
        return self.cfg.n_train_iters

    def bad_step_message(self, i, loss, bad_in_a_row, total):
        return (f'meta_train: iteration {i} skipped: non-finite loss or meta-gradient (cent '
                f'{loss:f}); weights and Adam state unchanged ({bad_in_a_row} in a row, '
                f'{total} skipped in total)')

    def before_step(self, write, i, secs):
        """Anything a method runs before the step of iteration i (LEO validates there)."""

    def train_episode(self, sampler, i):
        """The metabatch of iteration i (seeded by i, so a resumed run sees the same)."""
        rng = episode_rng(self.cfg.seed, TRAIN_STREAM, i)
        return self.augmenter(sampler.sample(rng, self.cfg.metabatch), rng)

    def log_training(self, write, i, lr, means, secs):
        """metadrop's two lines every --print_freq iterations (means over them)."""
        write(f'Iter {i} start, learning rate {lr:f}', leading_blank=True)
        write(f'meta_train: episode {i * self.cfg.metabatch}, ({secs:.3f} secs), cent '
              f'{means["loss"]:f}, acc {means["acc"]:f}')
        tf.summary.scalar('meta_train/cent', means['loss'], step=i)
        tf.summary.scalar('meta_train/acc', means['acc'], step=i)

    def validate(self, write, i, secs):
        vloss, vacc = self.evaluate('val', self.cfg.n_val_batches, VAL_STREAM, 'validation')
        write(f'meta_test : episode {i * self.cfg.metabatch}, ({secs:.3f} secs), cent '
              f'{vloss:f}, acc {np.mean(vacc):f}')
        tf.summary.scalar('meta_val/cent', vloss, step=i)
        tf.summary.scalar('meta_val/acc', float(np.mean(vacc)), step=i)

    def after_iteration(self, write, i):
        """Anything a method logs on its own cadence (TAML's balancing variables)."""

    def should_save(self, i):
        return i % self.cfg.save_freq == 0 or i == self.last_iteration()

    # ---- meta-test -----------------------------------------------------------------
    def restore_for_test(self):
        ckpt, notes = self.restore()
        if not ckpt:
            raise RunError(f'no checkpoint in {self.cfg.savedir}; run --mode meta_train with '
                           'this --savedir first')
        for note in notes:
            self.log(f'warning: {note}')
        return ckpt

    def test_batches(self):
        """How many metabatches meta_test runs (n_test_iters // metabatch, at least 1)."""
        n_batches = self.cfg.n_test_iters // self.cfg.metabatch
        if n_batches < 1:
            raise RunError(f'--n_test_iters {self.cfg.n_test_iters} is smaller than --metabatch '
                           f'{self.cfg.metabatch}: no episode to run')
        return n_batches

    def listed_checkpoints(self):
        """--checkpoints as [(label, path, saved flags)], every one readable and of this
        command's structural flags (checked before anything is scored or written): a
        model-<i> prefix, or a run folder for its newest checkpoint (labelled by its path)."""
        entries = [e.strip() for e in getattr(self.cfg, 'checkpoints', '').split(',')
                   if e.strip()]
        out = []
        for entry in entries:
            path = entry.rstrip(os.sep)
            if os.path.isdir(path):
                paths, _ = checkpoints_in(path)
                if not paths:
                    raise RunError(f'--checkpoints: the folder {entry} holds no checkpoint '
                                   f'({CHECKPOINT_NAME}-<i>.index)')
                path = paths[0]
            elif not os.path.exists(path + '.index'):
                raise RunError(f'--checkpoints: {entry} is neither a checkpoint (no '
                               f'{path}.index) nor a folder holding checkpoints')
            if path in [p for _, p, _ in out]:
                raise RunError(f'--checkpoints: {path} is listed twice')
            try:
                reader = tf.train.load_checkpoint(path)
            except Exception as e:   # any failure to read means: not a usable checkpoint
                raise RunError(f'--checkpoints: {path} cannot be read ({short_error(e)})') \
                    from None
            saved = self.saved_config(reader, os.path.dirname(path))
            self.check_config(saved, subject=f'--checkpoints: {path} is a checkpoint')
            out.append((path, path, saved))
        return out

    def restore_listed(self, path):
        try:
            status = self.checkpoint.restore(path)
            status.expect_partial()
            status.assert_existing_objects_matched()
        except Exception as e:
            raise RunError(f'--checkpoints: {path} cannot be restored into this model '
                           f'({short_error(e)})') from None

    def score_checkpoints(self, score):
        """Runs score() -> (loss, per-episode accuracies) once per checkpoint tested (the
        savedir's own, or every one of --checkpoints), all on the same episodes; returns
        [dict(label, path, trained_dataset, loss, acc)] and the episodes' fingerprints. While
        score runs, self.restored_config holds the flags of the checkpoint it scores."""
        if getattr(self.cfg, 'checkpoints', ''):
            targets = self.listed_checkpoints()
            os.makedirs(self.cfg.savedir, exist_ok=True)
        else:
            ckpt = self.restore_for_test()
            targets = [(os.path.relpath(ckpt, self.cfg.savedir), ckpt, self.restored_config)]
        scored, fingerprints = [], None
        for label, path, saved in targets:
            if getattr(self.cfg, 'checkpoints', ''):
                self.restore_listed(path)
            self.restored_config = saved
            trained = (saved or {}).get('dataset')
            t0 = time.time()
            loss, acc = score(label)
            if fingerprints is None:
                fingerprints = list(self.fingerprints)
            elif fingerprints != self.fingerprints:   # the episodes are seeded: never
                raise RunError(f'{label} was scored on other episodes than {scored[0]["label"]}')
            scored.append(dict(label=label, path=path, trained_dataset=trained, loss=loss,
                               acc=np.asarray(acc), secs=time.time() - t0))
        return scored, fingerprints

    def checkpoint_results(self, scored, fingerprints, stem):
        """The lines for <stem>.log, the record fields and the text of the per-episode file
        (<stem>_episodes.csv, accuracies as fractions) of scored checkpoints; with 2+, each
        one's paired difference to the first (per-episode differences, 95% interval)."""
        episodes = episodes_csv(fingerprints, {s['label']: s['acc'] for s in scored})
        fields = dict(episodes_file=f'{stem}_episodes.csv', test_dataset=self.cfg.dataset,
                      trained_dataset=scored[0]['trained_dataset'])
        if len(scored) == 1:
            mean, ci = confidence_interval(100. * scored[0]['acc'])
            return [f'accuracy : {mean:f} +- {ci:f}'], fields, episodes
        lines, entries, paired = [], [], []
        first = scored[0]
        for s in scored:
            mean, ci = confidence_interval(100. * s['acc'])
            lines.append(f'{s["label"]} accuracy : {mean:f} +- {ci:f}')
            entries.append(dict(checkpoint=s['label'], accuracy=mean, ci95=ci,
                                n_episodes=int(len(s['acc'])), loss=s['loss'],
                                trained_dataset=s['trained_dataset'], secs=s['secs']))
        for s in scored[1:]:
            d, ci = paired_difference(100. * s['acc'], 100. * first['acc'])
            lines.append(f'{s["label"]} - {first["label"]} : {d:f} +- {ci:f} (paired, '
                         f'{len(s["acc"])} episodes)')
            paired.append(dict(checkpoint=s['label'], reference=first['label'],
                               difference=d, ci95=ci, n_episodes=int(len(s['acc']))))
        fields.update(checkpoints=entries, paired=paired)
        return lines, fields, episodes

    def write_test_files(self, stem, lines, record, episodes):
        with self.disk_errors():
            write_atomically(os.path.join(self.cfg.savedir, f'{stem}.log'),
                             '\n'.join(lines))
            write_atomically(os.path.join(self.cfg.savedir, f'{stem}_episodes.csv'), episodes)
            write_atomically(os.path.join(self.cfg.savedir, f'{stem}.json'),
                             json.dumps(record, indent=1))

    def meta_test(self):
        cfg = self.cfg
        if cfg.dataset == LAKE_RUNS:
            return self.lake_runs_test()
        n_batches = None

        def score(label):
            nonlocal n_batches
            n_batches = n_batches or self.test_batches()
            return self.evaluate('test', n_batches, TEST_STREAM, f'meta_test {label}')

        scored, fingerprints = self.score_checkpoints(score)
        stem = 'meta_test' if self.model.bn_mode == 'transductive' else \
            f'meta_test_{self.model.bn_mode}'
        lines, fields, episodes = self.checkpoint_results(scored, fingerprints, stem)
        for line in lines:
            self.log(line)
        mc = None if getattr(self.model, 'maml', True) else self.model.n_test_mc_samp
        first = scored[0]
        acc = first['acc']
        mean, ci = confidence_interval(100. * acc)
        self.log(f'({len(acc)} episodes of {cfg.way}-way {cfg.shot}-shot, {cfg.query} queries '
                 f'per class, {self.model.n_test_steps} inner steps'
                 f'{f", {mc} MC samples per inner step" if mc else ""}, batch norm '
                 f'{self.model.bn_mode}, checkpoint'
                 f'{"s" if len(scored) > 1 else ""} '
                 f'{", ".join(os.path.basename(s["path"]) for s in scored)}, '
                 f'{sum(s["secs"] for s in scored):.1f} secs)')
        record = dict(accuracy=mean, ci95=ci, n_episodes=int(len(acc)), cent=first['loss'],
                      checkpoint=os.path.basename(first['path']), way=cfg.way, shot=cfg.shot,
                      query=cfg.query, n_test_steps=self.model.n_test_steps,
                      dataset=self.dataset.description, batch_norm=self.model.bn_mode,
                      model=cfg.model, **fields)
        if mc:
            record['n_test_mc_samp'] = mc
        # The original's file names for the original's (transductive) batch norm; another
        # --bn_mode gets its own files, so both results of one checkpoint are kept.
        self.write_test_files(stem, lines, record, episodes)
        return record

    def lake_runs_test(self):
        """meta_test on Lake et al.'s 20 official one-shot runs (--dataset omniglot_runs):
        each run is one 20-way 1-shot episode with 20 queries, adapted with the checkpoint's
        test-time inner steps (its --n_test_steps, else its --n_steps, unless --n_test_steps
        is given now); logs the per-run and the mean error as the official demo
        (demo_classification.py) prints them, next to the people's 4.5%."""
        from data.omniglot_runs import HUMAN_ERROR_PERCENT, WAY
        cfg = self.cfg
        if cfg.way != WAY:
            raise RunError(f'--dataset {LAKE_RUNS} runs {WAY}-way 1-shot episodes: test a '
                           f'checkpoint trained with --way {WAY} (and pass --way {WAY})')
        runs = self.dataset.runs
        n_test_steps = None

        def score(label):
            nonlocal n_test_steps
            saved = self.restored_config or {}
            steps_then = saved.get('n_test_steps')
            steps_then = saved.get('n_steps') if steps_then is None else steps_then
            if cfg.n_test_steps is None and steps_then is not None:
                if n_test_steps is not None and int(steps_then) != n_test_steps:
                    raise RunError(f'the checkpoints were tested with different inner steps '
                                   f'({n_test_steps} and {steps_then}); give --n_test_steps')
                # read when eval_step is traced (at the first run)
                self.model.n_test_steps = int(steps_then)
            n_test_steps = self.model.n_test_steps
            losses, accs = [], []
            for run in runs:
                loss, acc = self.eval_step(*run.episode())
                losses.append(loss.numpy())
                accs.append(acc.numpy())
            self.fingerprints = [run.name for run in runs]   # the runs are fixed: their names
            return float(np.mean(np.concatenate(losses))), np.concatenate(accs)

        scored, fingerprints = self.score_checkpoints(score)
        stem = 'meta_test_omniglot_runs' + ('' if self.model.bn_mode == 'transductive' else
                                            f'_{self.model.bn_mode}')
        lines, fields, episodes = self.checkpoint_results(scored, fingerprints, stem)
        first = scored[0]
        n_queries = len(runs[0].query_y)
        # the demo's arithmetic and printing: perror = 100 - 100 * correct / ntest, str()
        errors = [100 - 100 * float(round(a * n_queries)) / n_queries for a in first['acc']]
        total = float(np.mean(errors))
        demo = [f' run {r + 1} (error {e}%)' for r, e in enumerate(errors)]
        demo.append(f' average error {total}%')
        demo.append(f' (people: {HUMAN_ERROR_PERCENT}% error, Lake et al. 2015; '
                    f'{os.path.basename(first["path"])}, {n_test_steps} inner steps)')
        for line in demo + lines:
            self.log(line)
        mean, ci = confidence_interval(100. * first['acc'])
        record = dict(accuracy=mean, ci95=ci, n_episodes=len(runs), cent=first['loss'],
                      checkpoint=os.path.basename(first['path']), way=WAY, shot=1,
                      query=n_queries // WAY, n_test_steps=n_test_steps,
                      dataset=self.dataset.description, batch_norm=self.model.bn_mode,
                      model=cfg.model, error=total, human_error=HUMAN_ERROR_PERCENT,
                      run_errors={run.name: e for run, e in zip(runs, errors)}, **fields)
        self.write_test_files(stem, demo + lines, record, episodes)
        return record
