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
"""
import json
import os
import queue
import sys
import threading
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from data.datasets import load_dataset
from data.episodes import EpisodeSampler
from model import build_model
from model import optim
from model import steps

# Flags that change the model's variables or the method: a checkpoint is only valid for
# the values it was trained with.
STRUCTURAL_FLAGS = ('model', 'backbone', 'n_channel', 'dataset', 'way', 'image_size',
                    'channels')


class RunError(Exception):
    """A user-facing problem with the run (flags, savedir, checkpoints)."""


def episode_rng(seed, stream, *index):
    """Independent generator per (seed, stream, index...): iteration i of a run always sees
    the same episodes, whether or not the run was interrupted before i."""
    return np.random.default_rng([int(seed), int(stream), *[int(i) for i in index]])


TRAIN_STREAM, VAL_STREAM, TEST_STREAM = 0, 1, 2


def dataset_options(cfg):
    """The reader options of the chosen dataset, from the flags."""
    def alphabets(value):
        return [a.strip() for a in value.split(',') if a.strip()] if value else None

    if cfg.dataset == 'omniglot':
        return dict(source=cfg.omniglot_source, test_alphabets=alphabets(cfg.test_alphabets),
                    val_alphabets=alphabets(cfg.val_alphabets))
    if cfg.dataset == 'folder':
        return dict(folder_dir=cfg.folder_dir or None, image_size=cfg.image_size or 84,
                    channels=cfg.channels or 3)
    if cfg.dataset == 'synthetic':
        return dict(seed=cfg.data_seed)
    return {}


def prefetch(iterable, size=3):
    """Runs `iterable` in a background thread, `size` items ahead (episode sampling
    overlaps the compiled step)."""
    q = queue.Queue(maxsize=size)
    done = object()
    error = []

    def work():
        try:
            for item in iterable:
                q.put(item)
        except BaseException as e:  # surfaced in the consumer
            error.append(e)
        q.put(done)

    threading.Thread(target=work, daemon=True).start()
    while True:
        item = q.get()
        if item is done:
            if error:
                raise error[0]
            return
        yield item


def confidence_interval(acc):
    """Mean and 95% half-width 1.96 * std / sqrt(n) of per-episode accuracies (metadrop
    and maml use this normal interval, with the population std)."""
    acc = np.asarray(acc, np.float64)
    return float(acc.mean()), float(1.96 * acc.std() / np.sqrt(len(acc)))


class Runner:
    def __init__(self, cfg, log=print):
        self.cfg = cfg
        self.log = log
        if not cfg.savedir:
            raise RunError('--savedir is required: the folder for checkpoints and logs, '
                           'e.g. --savedir ./results/maml/omni_1shot')
        if os.path.exists(cfg.savedir) and not os.path.isdir(cfg.savedir):
            raise RunError(f'--savedir {cfg.savedir} is a file, not a folder; '
                           'choose another path')
        self.dataset = load_dataset(cfg.dataset, cfg.data_root, **dataset_options(cfg))
        tf.random.set_seed(cfg.seed)
        self.model = build_model(cfg, cfg.way, self.dataset.image_shape)
        self.iteration = tf.Variable(0, dtype=tf.int64, trainable=False, name='iteration')
        self.optimizer = optim.Adam(self.model.outer_variables, cfg.meta_lr)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                              iteration=self.iteration)
        self._train_step = None
        self._eval_step = None

    # ---- configuration -------------------------------------------------------------
    @property
    def config_path(self):
        return os.path.join(self.cfg.savedir, 'config.json')

    def config_dict(self):
        return {k: getattr(self.cfg, k) for k in sorted(vars(self.cfg))}

    def check_config(self):
        """A checkpoint may only be resumed or tested with the flags it was built with."""
        if not os.path.exists(self.config_path):
            return
        with open(self.config_path) as f:
            saved = json.load(f)
        diff = [f'--{k} {saved[k]!r} (saved) vs {getattr(self.cfg, k)!r} (now)'
                for k in STRUCTURAL_FLAGS if k in saved and saved[k] != getattr(self.cfg, k)]
        if diff:
            raise RunError(f'{self.cfg.savedir} holds a checkpoint of a different '
                           f'configuration: {"; ".join(diff)}. Use the saved values, or '
                           'another --savedir for a new run.')

    def write_config(self):
        tmp = self.config_path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.config_dict(), f, indent=1, sort_keys=True)
        os.replace(tmp, self.config_path)

    def manager(self):
        return tf.train.CheckpointManager(self.checkpoint, self.cfg.savedir,
                                          max_to_keep=self.cfg.max_to_keep,
                                          checkpoint_name='model')

    # ---- compiled steps ----------------------------------------------------------
    @property
    def train_step(self):
        if self._train_step is None:
            cfg = self.cfg
            spec = steps.episode_spec(cfg.metabatch, cfg.way * cfg.shot, cfg.way * cfg.query,
                                      self.dataset.image_shape)
            self._train_step = steps.make_train_step(self.model, self.optimizer,
                                                     cfg.clip_value, spec)
        return self._train_step

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
    def evaluate(self, split, n_batches, stream, desc):
        """Mean query loss and per-episode accuracies over n_batches metabatches."""
        sampler = self.sampler(split)
        cfg = self.cfg
        episodes = (sampler.sample(episode_rng(cfg.seed, stream, j), cfg.metabatch)
                    for j in range(n_batches))
        losses, accs = [], []
        for ep in tqdm(prefetch(episodes), total=n_batches, desc=desc, leave=False,
                       disable=not cfg.progress):
            loss, acc = self.eval_step(*ep)
            losses.append(loss.numpy())
            accs.append(acc.numpy())
        return float(np.mean(np.concatenate(losses))), np.concatenate(accs)

    def meta_train(self):
        cfg = self.cfg
        os.makedirs(cfg.savedir, exist_ok=True)
        manager = self.manager()
        resumed = manager.latest_checkpoint
        if resumed:
            self.check_config()
            self.checkpoint.restore(resumed).assert_existing_objects_matched()
        else:
            self.write_config()
        start = int(self.iteration.numpy())
        train_sampler = self.sampler('train')
        self.sampler('val')  # fails now, not at the first validation, if sizes are impossible

        logfile = open(os.path.join(cfg.savedir, 'meta_train.log'), 'a' if resumed else 'w')
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
        write(f'dataset: {self.dataset.description}')
        if start > cfg.n_train_iters:
            write(f'already trained: the checkpoint is at iteration {start - 1} and '
                  f'--n_train_iters is {cfg.n_train_iters}; nothing to do')
            logfile.close()
            return

        episodes = ((i, train_sampler.sample(episode_rng(cfg.seed, TRAIN_STREAM, i),
                                             cfg.metabatch))
                    for i in range(start, cfg.n_train_iters + 1))
        t0 = time.time()
        run_loss, run_acc, run_n = 0., 0., 0
        bar = tqdm(total=cfg.n_train_iters + 1, initial=start, desc='meta_train',
                   disable=not cfg.progress, dynamic_ncols=True)
        with writer.as_default():
            for i, ep in prefetch(episodes):
                loss, acc = self.train_step(*ep)
                run_loss += float(loss)
                run_acc += float(np.mean(acc))
                run_n += 1
                bar.update(1)
                if i % cfg.print_freq == 0:
                    write(f'Iter {i} start, learning rate {cfg.meta_lr:f}', leading_blank=True)
                    write(f'meta_train: episode {i * cfg.metabatch}, ({time.time() - t0:.3f} '
                          f'secs), cent {run_loss / run_n:f}, acc {run_acc / run_n:f}')
                    tf.summary.scalar('meta_train/cent', run_loss / run_n, step=i)
                    tf.summary.scalar('meta_train/acc', run_acc / run_n, step=i)
                    run_loss, run_acc, run_n = 0., 0., 0
                if i % cfg.val_freq == 0:
                    vloss, vacc = self.evaluate('val', cfg.n_val_batches, VAL_STREAM,
                                                'validation')
                    write(f'meta_test : episode {i * cfg.metabatch}, ({time.time() - t0:.3f} '
                          f'secs), cent {vloss:f}, acc {np.mean(vacc):f}')
                    tf.summary.scalar('meta_val/cent', vloss, step=i)
                    tf.summary.scalar('meta_val/acc', float(np.mean(vacc)), step=i)
                if i % cfg.save_freq == 0 or i == cfg.n_train_iters:
                    self.iteration.assign(i + 1)
                    manager.save(checkpoint_number=i)
                    writer.flush()
        bar.close()
        logfile.close()

    # ---- meta-test -----------------------------------------------------------------
    def restore_for_test(self):
        manager = self.manager()
        if not manager.latest_checkpoint:
            raise RunError(f'no checkpoint in {self.cfg.savedir}; run --mode meta_train with '
                           'this --savedir first')
        self.check_config()
        self.checkpoint.restore(manager.latest_checkpoint).expect_partial()
        return manager.latest_checkpoint

    def meta_test(self):
        cfg = self.cfg
        ckpt = self.restore_for_test()
        n_batches = cfg.n_test_iters // cfg.metabatch
        if n_batches < 1:
            raise RunError(f'--n_test_iters {cfg.n_test_iters} is smaller than --metabatch '
                           f'{cfg.metabatch}: no episode to run')
        t0 = time.time()
        loss, acc = self.evaluate('test', n_batches, TEST_STREAM, 'meta_test')
        mean, ci = confidence_interval(100. * acc)
        result = f'accuracy : {mean:f} +- {ci:f}'
        self.log(result)
        self.log(f'({len(acc)} episodes of {cfg.way}-way {cfg.shot}-shot, {cfg.query} queries '
                 f'per class, {self.model.n_test_steps} inner steps, checkpoint '
                 f'{os.path.basename(ckpt)}, {time.time() - t0:.1f} secs)')
        with open(os.path.join(cfg.savedir, 'meta_test.log'), 'w') as f:
            f.write(result)
        record = dict(accuracy=mean, ci95=ci, n_episodes=int(len(acc)), cent=loss,
                      checkpoint=os.path.basename(ckpt), way=cfg.way, shot=cfg.shot,
                      query=cfg.query, n_test_steps=self.model.n_test_steps,
                      dataset=self.dataset.description, batch_norm='transductive')
        tmp = os.path.join(cfg.savedir, 'meta_test.json.tmp')
        with open(tmp, 'w') as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, os.path.join(cfg.savedir, 'meta_test.json'))
        return record
