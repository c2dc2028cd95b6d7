"""Meta-training and meta-testing of LEO as deepmind/leo runner.py runs them.

On top of the shared engine (checkpoints with the optimiser state, resume, signals,
prefetched seeded episodes, TensorBoard):
- episodes of N-way K-shot tasks on embedding vectors; meta-train tasks have --query (15)
  query examples per class, validation and test tasks all the other images of each class:
  --total_examples_per_class (600, hard-coded in the original) - K;
- steps 0..n_train_iters-1 (the original runs while global_step < num_steps_limit), each
  on --metabatch (12) tasks; the outer step is LEO's: NaN guard (fixed by default, see
  model/leo.py make_outer_update), per-tensor clipping by value then by norm, TF1 Adam;
- before the step of every iteration i with i % val_freq == 0 (step 0 included), the
  meta-validation accuracy averaged over n_val_batches (10) batches of
  metavalid_batch_size (200) episodes, logged as `Step: <i> meta-valid accuracy: <acc>`;
  when it beats the best so far, the model is copied to <savedir>/best_checkpoint/
  (written to tmp_best_checkpoint/ first, then swapped in, as utils.copy_checkpoint does);
  every print_freq (500) steps `Step: <i> meta-train accuracy: <acc>` (the mean over those
  steps); checkpoints every save_freq (1000) steps, the last max_to_keep (5) kept;
- meta_test restores best_checkpoint/ (else the latest checkpoint, with a warning) and runs
  n_test_iters // metatest_batch_size (10000 // 200) batches of test episodes: the
  original's plain mean (`Metatest accuracy: <acc>`) and the mean with a 95% interval over
  the episodes.
Evaluation batches are computed --eval_chunk episodes at a time: every number reported is a
mean over episodes, so chunking changes nothing but memory.
"""
import json
import os
import shutil

import numpy as np
import tensorflow as tf

from data.episodes import EpisodeSampler, EpisodeSizeError
from model import leo
from model import steps
from model.runner import (CHECKPOINT_NAME, Runner, RunError, TEST_STREAM, VAL_STREAM,
                          confidence_interval, fsync_checkpoint, fsync_path, read_records,
                          write_atomically, write_record)

BEST_DIR = 'best_checkpoint'
TMP_BEST_DIR = 'tmp_best_checkpoint'
OLD_BEST_DIR = 'best_checkpoint.old'
BEST_RECORD = 'accuracy.json'
VALIDATION_RECORD = 'validation.json'


class LeoRunner(Runner):
    FIRST_ITERATION = 0
    BAD_STEPS_EFFECT = ("Each applied the fallback gradient of LEO's NaN guard instead of the "
                        'meta-gradient')

    def __init__(self, cfg, log=print, dataset=None):
        super().__init__(cfg, log, dataset)
        self._leo_eval_step = None
        self.best_accuracy = None

    # ---- episodes ------------------------------------------------------------------
    def last_iteration(self):
        return self.cfg.n_train_iters - 1

    def query_for(self, split):
        """Query examples per class: --query at meta-train, all the others at evaluation."""
        cfg = self.cfg
        return cfg.query if split == 'train' else cfg.total_examples_per_class - cfg.shot

    def sampler(self, split):
        cfg = self.cfg
        query = self.query_for(split)
        if query < 1:
            raise RunError(f'--total_examples_per_class {cfg.total_examples_per_class} leaves '
                           f'no query example after --shot {cfg.shot}; it must be larger '
                           'than the shot')
        try:
            return EpisodeSampler(self.dataset.split(split), cfg.way, cfg.shot, query)
        except EpisodeSizeError as e:
            if split == 'train':
                raise
            raise EpisodeSizeError(
                f'{e}. LEO evaluates on all the images of each class: --total_examples_per_'
                f'class {cfg.total_examples_per_class} - --shot {cfg.shot} = {query} queries '
                'per class; set --total_examples_per_class to at most the smallest class size '
                'of your embeddings') from None

    # ---- compiled steps ------------------------------------------------------------
    @property
    def train_step(self):
        if self._train_step is None:
            cfg = self.cfg
            spec = steps.episode_spec(cfg.metabatch, cfg.way * cfg.shot, cfg.way * cfg.query,
                                      self.dataset.image_shape)
            update = leo.make_outer_update(self.model, self.optimizer, cfg.gradient_threshold,
                                           cfg.gradient_norm_threshold, cfg.original_nan_guard)
            self._train_step = steps.make_train_step(self.model, self.optimizer, 0., spec,
                                                     strategy=self.strategy, update=update)
        return self._train_step

    @property
    def eval_step(self):
        """(xs, ys, xq, yq) -> per-episode (loss, accuracy) of the deterministic model."""
        if self._leo_eval_step is None:
            cfg = self.cfg
            spec = steps.episode_spec(None, cfg.way * cfg.shot, None, self.dataset.image_shape)
            model = self.model

            @tf.function(input_signature=spec)
            def eval_step(xs, ys, xq, yq):
                loss, acc, _ = model.episode_losses(xs, ys, xq, yq, training=False)
                return tf.cast(loss, tf.float32), acc
            self._leo_eval_step = eval_step
        return self._leo_eval_step

    # ---- meta-train ----------------------------------------------------------------
    def bad_step_message(self, i, loss, bad_in_a_row, total):
        kind = 'NaN' if self.cfg.original_nan_guard else 'non-finite'
        fallback = ('each variable\'s own value (the original\'s swapped-name bug, '
                    '--original_nan_guard)' if self.cfg.original_nan_guard else
                    '1e-4 * W for the weight matrices and 0 for the step sizes')
        return (f'Step: {i} {kind} loss or meta-gradient (loss {loss:f}): the update used '
                f'the fallback gradient, {fallback} ({bad_in_a_row} in a row, {total} in '
                'total)')

    def log_training(self, write, i, lr, means, secs):
        write(f'Step: {i} meta-train accuracy: {means["acc"]}')
        for k in ('loss', 'acc', 'cent', 'kl'):
            if k in means:
                tf.summary.scalar(f'metatrain_{k}', means[k], step=i)

    def validate(self, write, i, secs):
        """Validation runs before the step (before_step), as the original's."""

    def before_step(self, write, i, secs):
        cfg = self.cfg
        if i % cfg.val_freq:
            return
        loss, acc = self.evaluate('val', cfg.n_val_batches, VAL_STREAM, 'meta-valid',
                                  cfg.metavalid_batch_size, cfg.eval_chunk)
        accuracy = float(np.mean(acc))
        write(f'Step: {i} meta-valid accuracy: {accuracy}')
        tf.summary.scalar('metavalid_loss', loss, step=i)
        tf.summary.scalar('metavalid_accuracy', accuracy, step=i)
        with self.disk_errors():
            self.record_validation(i, loss, accuracy, len(acc))
            if self.best_accuracy is None:
                self.best_accuracy = self.saved_best_accuracy()
            if accuracy > self.best_accuracy:
                self.copy_to_best(i, accuracy)
                self.best_accuracy = accuracy
                write(f'Step: {i} new best meta-valid accuracy, copied to {BEST_DIR}/')

    def record_validation(self, i, loss, accuracy, n):
        path = os.path.join(self.cfg.savedir, VALIDATION_RECORD)
        # a log of validations only: model selection reads best_checkpoint/
        write_record(path, read_records(path), dict(step=i, accuracy=accuracy, loss=loss,
                                         n_episodes=int(n)), 'step')

    # ---- the best checkpoint -------------------------------------------------------
    def best_dir(self):
        """best_checkpoint/, or the previous one if a swap was cut between its renames."""
        for name in (BEST_DIR, OLD_BEST_DIR):
            d = os.path.join(self.cfg.savedir, name)
            if os.path.isfile(os.path.join(d, BEST_RECORD)):
                return d
        return None

    def best_record(self):
        d = self.best_dir()
        if d is None:
            return None
        try:
            with open(os.path.join(d, BEST_RECORD)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def saved_best_accuracy(self):
        """The accuracy of the best checkpoint on disk (a resumed run keeps it unless beaten;
        the original's copy_checkpoint refuses to overwrite a better one), else 0."""
        record = self.best_record()
        return float(record['accuracy']) if record else 0.

    def copy_to_best(self, i, accuracy):
        """The current model (after i updates) as best_checkpoint/model-<i>, written beside it
        first and swapped in with renames, so a kill never leaves no best checkpoint."""
        d = self.cfg.savedir
        tmp, best, old = (os.path.join(d, n) for n in (TMP_BEST_DIR, BEST_DIR, OLD_BEST_DIR))
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        self.iteration.assign(i)   # resuming from it would run step i next
        # write() saves save_counter only if it exists; the manager's first save creates it,
        # and a best copy at step 0 comes before that: create it now, or the restore at
        # meta_test finds a variable the file lacks.
        _ = self.saved.save_counter
        self.saved.write(os.path.join(tmp, f'{CHECKPOINT_NAME}-{i}'))
        record = dict(step=i, accuracy=accuracy, checkpoint=f'{CHECKPOINT_NAME}-{i}',
                      config=self.config_dict())
        write_atomically(os.path.join(tmp, BEST_RECORD), json.dumps(record, indent=1))
        # On the disk before it is swapped in: a power loss after the renames must not find
        # a best_checkpoint/ whose files never reached the disk.
        fsync_checkpoint(os.path.join(tmp, f'{CHECKPOINT_NAME}-{i}'))
        shutil.rmtree(old, ignore_errors=True)
        if os.path.isdir(best):
            os.rename(best, old)
        os.rename(tmp, best)
        fsync_path(d)
        shutil.rmtree(old, ignore_errors=True)

    def checkpoint_candidates(self):
        """At meta_test the best checkpoint first (the original tests best_checkpoint/),
        then the savedir's own checkpoints, newest first."""
        paths, notes = super().checkpoint_candidates()
        if getattr(self.cfg, 'mode', 'meta_train') != 'meta_test':
            return paths, notes
        record = self.best_record()
        if record is None:
            if paths:
                notes.append(f'no {BEST_DIR}/ in {self.cfg.savedir} (it is written at the '
                             'first validation): testing the latest checkpoint instead')
            return paths, notes
        return [os.path.join(self.best_dir(), record['checkpoint'])] + paths, notes

    # ---- meta-test -----------------------------------------------------------------
    def meta_test(self):
        cfg = self.cfg
        n_batches = cfg.n_test_iters // cfg.metatest_batch_size

        def score(label):
            if n_batches < 1:
                raise RunError(f'--n_test_iters {cfg.n_test_iters} is smaller than '
                               f'--metatest_batch_size {cfg.metatest_batch_size}: no batch '
                               'to run')
            return self.evaluate('test', n_batches, TEST_STREAM, f'meta_test {label}',
                                 cfg.metatest_batch_size, cfg.eval_chunk)

        scored, fingerprints = self.score_checkpoints(score)
        lines, fields, episodes = self.checkpoint_results(scored, fingerprints, 'meta_test')
        first = scored[0]
        acc = first['acc']
        plain = float(np.mean(acc))   # = the mean of the equal-sized batch means
        mean, ci = confidence_interval(100. * acc)
        lines = [f'Metatest accuracy: {plain:f}'] + lines
        for line in lines:
            self.log(line)
        self.log(f'({len(acc)} episodes of {cfg.way}-way {cfg.shot}-shot, '
                 f'{self.query_for("test")} queries per class, checkpoint'
                 f'{"s" if len(scored) > 1 else ""} '
                 f'{", ".join(s["label"] for s in scored)}, '
                 f'{sum(s["secs"] for s in scored):.1f} secs)')
        record = dict(accuracy=mean, ci95=ci, metatest_accuracy=plain,
                      n_episodes=int(len(acc)), loss=first['loss'], checkpoint=first['label'],
                      way=cfg.way, shot=cfg.shot, query=self.query_for('test'),
                      dataset=self.dataset.description, model='leo', **fields)
        best = self.best_record()
        if best and first['path'].startswith(self.best_dir() or '\0'):
            record['best_step'], record['best_valid_accuracy'] = best['step'], best['accuracy']
        self.write_test_files('meta_test', lines, record, episodes)
        return record
