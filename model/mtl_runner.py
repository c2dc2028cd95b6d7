"""Pre-training, meta-training and meta-testing of MTL as the original's trainers run them
(yaoyao-liu/meta-transfer-learning, TF: trainer/pre.py and trainer/meta.py), on the shared
engine (resumable checkpoints with the optimiser state, signals, seeded prefetched
episodes, TensorBoard, tqdm).

--mode pretrain (MtlPretrainRunner), into --pretrain_dir (default <savedir>/pretrain/):
- every image of every meta-train class, in one fixed shuffled order (seeded), cycled, in
  batches of --pretrain_batch_size (64); label = the class's index in the split;
- Adam (TF1, eps 1e-8) at --pre_lr (1e-3), halved after every --pre_lr_dropstep (5000)
  iterations (floored at --min_pre_lr only with --pre_lr_stop, as the original);
  iterations 0..pretrain_iterations-1 (20000, the runner's value); dropout keep 0.9;
- no validation (the original has none); training loss and accuracy every --pre_print_step;
- `weights-<i>`: the backbone (tf.train.Checkpoint) after iteration i for every i >= 1000
  with i % --pre_save_step == 0, as the original's weights_<i>.npy; `model-<i>` holds the
  full state for resuming.

--mode meta_train (MtlRunner), in <savedir>:
- a fresh run loads the backbone of <pretrain_dir>/weights-<pre_iter> (10000, the runner's
  PRE_ITER; -1 = the newest) and copies its biases into the shifts;
- iterations 0..n_train_iters-1 (20000) of --metabatch (2) 5-way tasks with --query (15)
  queries per class; the outer Adam at --meta_lr (1e-3) halved after every --lr_drop_step
  (1000) iterations, floored at --min_meta_lr (1e-4);
- --hard_task: the HT meta-batch of the paper (see README "Hard-task meta-batch");
- every --val_freq (100) iterations, from 0: meta-validation on the same
  --meta_intrain_val_sample (600) episodes, 20 inner steps, no flips, K queries per class
  (the original's meta-train graph); logged, no model selection;
- checkpoints every --save_freq (100) iterations from 0 and after the last one.

--mode meta_test: --n_test_iters (600) episodes, --n_test_steps (100) inner steps in a
tf.while_loop on the flip-doubled support set (--base_augmentation), K queries per class;
mean, std and 95% interval 1.96 std / sqrt(n) of the accuracy after every inner step
(meta_test.csv, the original's result csv), and `accuracy : <m> +- <ci>` after the last.
"""
import os
import re
import types

import numpy as np
import tensorflow as tf

from data.episodes import EpisodeSampler
from model import mtl
from model import steps
from model.runner import (Runner, RunError, TEST_STREAM, TRAIN_STREAM, VAL_STREAM,
                          confidence_interval, episode_rng, read_records, write_atomically,
                          write_record)

PRETRAIN_DIR = 'pretrain'
WEIGHTS_NAME = 'weights'
PRETRAIN_STREAM, HARD_STREAM = 3, 4
VALIDATION_RECORD = 'validation.json'


def weights_path(pretrain_dir, i):
    return os.path.join(pretrain_dir, f'{WEIGHTS_NAME}-{i}')


def saved_weights(pretrain_dir):
    """The iterations of the weights-<i> snapshots in pretrain_dir, sorted."""
    if not os.path.isdir(pretrain_dir):
        return []
    return sorted(int(m.group(1)) for n in os.listdir(pretrain_dir)
                  for m in [re.fullmatch(rf'{WEIGHTS_NAME}-(\d+)\.index', n)] if m)


def backbone_checkpoint(backbone):
    return tf.train.Checkpoint(backbone=backbone)


def pretrain_dir_of(cfg):
    return cfg.pretrain_dir or os.path.join(cfg.savedir, PRETRAIN_DIR)


class PretrainStream:
    """The original's pre-training input: every (class, image) of the split shuffled once,
    then streamed in that order, cycling; batch i is positions i*B .. i*B+B-1 (mod N)."""

    def __init__(self, split, batch_size, seed):
        self.split = split
        self.batch_size = int(batch_size)
        counts = np.asarray(split.counts, np.int64)
        self.labels = np.repeat(np.arange(len(counts)), counts)
        self.index = np.concatenate([np.arange(c) for c in counts])
        self.order = np.random.default_rng([seed, PRETRAIN_STREAM]).permutation(len(self.labels))

    def __len__(self):
        return len(self.labels)

    def batch(self, i):
        pos = self.order[(i * self.batch_size + np.arange(self.batch_size)) % len(self)]
        classes, idx = self.labels[pos], self.index[pos]
        x = self.split.gather(classes, idx[:, None])[:, 0]
        return np.ascontiguousarray(x), classes.astype(np.int32)


class MtlPretrainRunner(Runner):
    TRAIN_LOG = 'pretrain.log'

    def __init__(self, cfg, log=print, dataset=None):
        cfg = types.SimpleNamespace(**vars(cfg))
        cfg.savedir = pretrain_dir_of(cfg)
        cfg.save_freq = cfg.pre_save_step
        cfg.print_freq = cfg.pre_print_step
        cfg.n_train_iters = cfg.pretrain_iterations
        super().__init__(cfg, log, dataset)

    def build_model(self):
        cfg = self.cfg
        n = self.dataset.split('train').n_classes
        if cfg.pretrain_class_num is not None and cfg.pretrain_class_num < n:
            raise RunError(
                f'--pretrain_class_num {cfg.pretrain_class_num} is smaller than the '
                f'{n} meta-train classes of {self.dataset.name}: the original would silently '
                'train the classes beyond it on all-zero labels (tf.one_hot out of range). '
                f'Leave the flag out (it defaults to the number of classes, {n})')
        return mtl.MtlPretrainNet(cfg.pretrain_class_num or n, cfg.backbone_arch,
                                  self.dataset.image_shape, cfg.img_size,
                                  cfg.pretrain_dropout_keep, cfg.activation, cfg.norm)

    def last_iteration(self):
        return self.cfg.pretrain_iterations - 1

    def learning_rate(self, i):
        cfg = self.cfg
        return mtl.halving_schedule(cfg.pre_lr, i, cfg.pre_lr_dropstep, 0.5,
                                    cfg.min_pre_lr if cfg.pre_lr_stop else None)

    def sampler(self, split):
        if split == 'val':
            return None   # no validation during pre-training
        return PretrainStream(self.dataset.split('train'), self.cfg.pretrain_batch_size,
                              self.cfg.seed)

    def train_episode(self, stream, i):
        return stream.batch(i)

    @property
    def train_step(self):
        if self._train_step is None:
            spec = [tf.TensorSpec([self.cfg.pretrain_batch_size, *self.dataset.image_shape],
                                  tf.float32),
                    tf.TensorSpec([self.cfg.pretrain_batch_size], tf.int32)]
            self._train_step = mtl.make_pretrain_step(self.model, self.optimizer, spec)
        return self._train_step

    def log_training(self, write, i, lr, means, secs):
        write(f'Pretrain Iter {i}, lr {lr:g}, ({secs:.3f} secs), loss {means["loss"]:f}, '
              f'acc {means["acc"]:f}')
        tf.summary.scalar('pretrain/loss', means['loss'], step=i)
        tf.summary.scalar('pretrain/acc', means['acc'], step=i)

    def validate(self, write, i, secs):
        """The original does not validate during pre-training."""

    def after_iteration(self, write, i):
        """weights-<i> as the original's weights_<i>.npy: i > 0, i % pre_save_step == 0 (and
        i >= 1000 when pre_save_step >= 1000, so never 0); also when a signal stops the run,
        or by --time_budget, so that meta-training can start from where it stopped
        (--pre_iter -1)."""
        cfg = self.cfg
        due = i > 0 and i % cfg.pre_save_step == 0
        if due or self.stopping:
            with self.disk_errors():
                backbone_checkpoint(self.model.backbone).write(weights_path(cfg.savedir, i))
            if not due:
                write(f'stopped: wrote the backbone snapshot {WEIGHTS_NAME}-{i}')

    def should_save(self, i):
        return i % self.cfg.save_freq == 0 or i == self.last_iteration()

    def meta_test(self):
        raise RunError('--mode pretrain has no meta-test; run --mode meta_train, then meta_test')


class MtlRunner(Runner):
    BAD_STEPS_EFFECT = 'None of them changed the SS or FC parameters'

    def __init__(self, cfg, log=print, dataset=None):
        if cfg.backbone_arch not in mtl.ORIGINAL_ARCHS and cfg.mode in ('meta_train', 'meta_test'):
            raise RunError(f'--backbone_arch {cfg.backbone_arch} is LEO\'s feature extractor: '
                           'pre-train it (--mode pretrain) and write its embeddings (--mode '
                           'embed); meta-transfer\'s scaling and shifting are defined on the '
                           f'original\'s {" and ".join(mtl.ORIGINAL_ARCHS)} only')
        super().__init__(cfg, log, dataset)
        self._val_step = None
        self._test_step = None

    # ---- episodes ------------------------------------------------------------------
    def last_iteration(self):
        return self.cfg.n_train_iters - 1

    def query_for(self, split):
        """--query (15) at meta-train; K (or --metatest_epite_sample_num) at val and test."""
        cfg = self.cfg
        if split == 'train':
            return cfg.query
        return cfg.metatest_epite_sample_num or cfg.shot

    def sampler(self, split):
        return EpisodeSampler(self.dataset.split(split), self.cfg.way, self.cfg.shot,
                              self.query_for(split))

    def train_episode(self, sampler, i):
        rng = episode_rng(self.cfg.seed, TRAIN_STREAM, i)
        ids = sampler.draw_ids(rng, self.cfg.metabatch)
        return (*sampler.episode(*ids), ids[0], i)

    # ---- pre-trained weights ---------------------------------------------------------
    def restore(self):
        path, notes = super().restore()
        if path is None and self.cfg.mode == 'meta_train':
            notes = notes + [self.load_pretrained()]
        return path, notes

    def load_pretrained(self):
        cfg = self.cfg
        d = pretrain_dir_of(cfg)
        have = saved_weights(d)
        i = (have[-1] if have else None) if cfg.pre_iter < 0 else cfg.pre_iter
        if i is None or i not in have:
            found = (f'it holds weights-{", weights-".join(map(str, have))}' if have else
                     'no weights-<i> snapshot is there')
            raise RunError(
                f'--mode {cfg.mode} starts from the pre-trained backbone {weights_path(d, i if i is not None else "<i>")}, '
                f'but {found}. Pre-train first: python main.py --model mtl --mode pretrain '
                f'--savedir {cfg.savedir} (same --dataset and --backbone_arch), or pick a '
                'snapshot with --pre_iter (-1: the newest), or point --pretrain_dir at '
                'another folder (or convert the released npy weights: python -m model.mtl_convert --pretrained_only)')
        self.pretrained_path = weights_path(d, i)
        status = backbone_checkpoint(self.model.backbone).read(self.pretrained_path)
        status.assert_existing_objects_matched()
        self.model.copy_shift_from_backbone()
        return (f'info: loaded the pre-trained backbone {weights_path(d, i)}; the shifts start '
                'as its biases')

    # ---- compiled steps ------------------------------------------------------------
    @property
    def train_step(self):
        """The meta-train step the engine calls: (xs, ys, xq, yq, classes) -> (loss, acc,
        applied[, hard-task metrics]); with --hard_task it also runs the HT meta-batch."""
        if self._train_step is None:
            cfg = self.cfg
            spec = steps.episode_spec(cfg.metabatch, cfg.way * cfg.shot, cfg.way * cfg.query,
                                      self.dataset.image_shape)
            compiled = mtl.make_meta_train_step(self.model, self.optimizer, spec,
                                                **self.task_loop_options())
            sampler = self.sampler('train')

            def step(xs, ys, xq, yq, classes, i):
                loss, acc, applied, class_acc = compiled(xs, ys, xq, yq)
                if not (cfg.hard_task and bool(applied)):
                    return loss, acc, applied
                hard = self.hard_tasks(sampler, classes, class_acc.numpy(), i)
                hloss, hacc, happlied, _ = compiled(*hard)
                if not bool(happlied):   # the metabatch's own update did happen
                    self.log(f'Iter {i}: the hard-task meta-batch had a non-finite loss or '
                             'meta-gradient; its update was skipped')
                    return loss, acc, applied
                return loss, acc, applied, dict(hard_loss=hloss, hard_acc=tf.reduce_mean(hacc))
            self._train_step = step
        return self._train_step

    def hard_tasks(self, sampler, classes, class_acc, i):
        """The HT meta-batch of iteration i: --metabatch tasks over the hardest classes of
        the metabatch just run (mtl.hard_task_classes), each with its own label order and
        new images."""
        cfg = self.cfg
        rng = episode_rng(cfg.seed, HARD_STREAM, i)
        hard = mtl.hard_task_classes(classes, class_acc, cfg.way, rng)
        counts = sampler.split.counts
        task_classes = np.stack([rng.permutation(hard) for _ in range(cfg.metabatch)])
        task_images = np.stack([[rng.choice(counts[c], cfg.shot + cfg.query, replace=False)
                                 for c in row] for row in task_classes])
        self.last_hard_classes = hard
        return sampler.episode(task_classes, task_images)

    def eval_fn(self, split):
        cfg = self.cfg
        if split == 'test':
            if self._test_step is None:
                spec = steps.episode_spec(None, None, None, self.dataset.image_shape)
                self._test_step = mtl.make_eval_step(self.model, spec, cfg.n_test_steps,
                                                     cfg.base_augmentation)
            return self._test_step
        if self._val_step is None:
            spec = steps.episode_spec(None, None, None, self.dataset.image_shape)
            self._val_step = mtl.make_eval_step(self.model, spec, cfg.n_steps, False)
        return self._val_step

    def evaluate_steps(self, split, n, stream, desc):
        """(mean loss, accuracy after each inner step [n episodes, steps]) over the same n
        episodes of `stream` every time (--eval_chunk at a time)."""
        return self.evaluate(split, 1, stream, desc, n, self.cfg.eval_chunk,
                             step=self.eval_fn(split))

    # ---- meta-train ----------------------------------------------------------------
    def learning_rate(self, i):
        cfg = self.cfg
        return mtl.halving_schedule(cfg.meta_lr, i, cfg.lr_drop_step, cfg.lr_drop_rate,
                                    cfg.min_meta_lr)

    def log_training(self, write, i, lr, means, secs):
        hard = (f', hard-task loss {means["hard_loss"]:f}, acc {means["hard_acc"]:f}'
                if 'hard_loss' in means else '')
        write(f'Iter {i}, lr {lr:g}, ({secs:.3f} secs), meta-train loss {means["loss"]:f}, '
              f'acc {means["acc"]:f}{hard}')
        for k, v in means.items():
            tf.summary.scalar(f'meta_train/{k}', v, step=i)

    def validate(self, write, i, secs):
        cfg = self.cfg
        loss, acc = self.evaluate_steps('val', cfg.meta_intrain_val_sample, VAL_STREAM,
                                        'meta-val')
        final = 100. * acc[:, -1]
        mean, ci = confidence_interval(final)
        write(f'Iter {i}, meta-val acc {mean:.2f} +- {ci:.2f} % ({len(final)} episodes, '
              f'{cfg.n_steps} inner steps), loss {loss:f}')
        tf.summary.scalar('meta_val/acc', mean, step=i)
        tf.summary.scalar('meta_val/loss', loss, step=i)
        path = os.path.join(cfg.savedir, VALIDATION_RECORD)
        with self.disk_errors():
            write_record(path, read_records(path), dict(iteration=i, accuracy=mean, ci95=ci,
                                                        loss=loss, n_episodes=int(len(final))),
                         'iteration')

    # ---- meta-test -----------------------------------------------------------------
    def checkpoint_candidates(self):
        """--test_iter i (meta_test): model-<i> only, restored and checked as the engine
        restores any checkpoint (the original's run_experiment tests every saved iteration)."""
        cfg = self.cfg
        if cfg.mode != 'meta_test' or cfg.test_iter is None:
            return super().checkpoint_candidates()
        path = os.path.join(cfg.savedir, f'model-{cfg.test_iter}')
        if not os.path.exists(path + '.index'):
            have = sorted(int(m.group(1)) for n in os.listdir(cfg.savedir)
                          for m in [re.fullmatch(r'model-(\d+)\.index', n)] if m) \
                if os.path.isdir(cfg.savedir) else []
            raise RunError(f'--test_iter {cfg.test_iter}: no checkpoint {path}; the savedir '
                           f'holds model-{", model-".join(map(str, have)) or "(none)"}')
        return [path], []

    def meta_test(self):
        cfg = self.cfg
        steps_acc = {}

        def score(label):
            loss, acc = self.evaluate_steps('test', cfg.n_test_iters, TEST_STREAM,
                                            f'meta_test {label}')
            steps_acc[label] = acc
            return loss, acc[:, -1]   # the accuracy after the last inner step

        scored, fingerprints = self.score_checkpoints(score)
        lines, fields, episodes = self.checkpoint_results(scored, fingerprints, 'meta_test')
        first = scored[0]
        acc = 100. * steps_acc[first['label']]
        means, stds = acc.mean(0), acc.std(0)
        ci95 = 1.96 * stds / np.sqrt(len(acc))
        mean, ci = float(means[-1]), float(ci95[-1])
        for line in lines:
            self.log(line)
        q = self.query_for('test')
        self.log(f'({len(acc)} episodes of {cfg.way}-way {cfg.shot}-shot, {q} queries per '
                 f'class, {cfg.n_test_steps} inner steps, support '
                 f'{"doubled by flips" if cfg.base_augmentation else "not augmented"}, '
                 f'checkpoint{"s" if len(scored) > 1 else ""} '
                 f'{", ".join(os.path.basename(s["path"]) for s in scored)}, '
                 f'{sum(s["secs"] for s in scored):.1f} secs)')
        # the original's per-step result csv, of the first checkpoint
        table = ['step,' + ','.join(str(s + 1) for s in range(acc.shape[1]))]
        for name, row in (('mean', means), ('std', stds), ('ci95', ci95)):
            table.append(name + ',' + ','.join(f'{v:.4f}' for v in row))
        record = dict(accuracy=mean, ci95=ci, n_episodes=int(len(acc)), cent=first['loss'],
                      checkpoint=os.path.basename(first['path']), way=cfg.way, shot=cfg.shot,
                      query=q, n_test_steps=cfg.n_test_steps,
                      base_augmentation=cfg.base_augmentation,
                      dataset=self.dataset.description, model='mtl',
                      hard_task=cfg.hard_task, **fields)
        with self.disk_errors():
            write_atomically(os.path.join(cfg.savedir, 'meta_test.csv'), '\n'.join(table) + '\n')
        self.write_test_files('meta_test', lines, record, episodes)
        return record
