"""Meta-training and meta-testing of Bayesian TAML as haebeom-lee/l2b main.py runs them.

On top of the shared engine (checkpoints, resume, signals, non-finite guard, prefetching):
- episodes from the imbalanced sampler (data/episodes.py ImbalancedSampler), support sets
  zero-padded within a metabatch (label -1), 15 queries per class; the compiled step takes
  any padded length (the support dimension of its signature is free), so it traces once;
- an in-distribution dataset (--id_dataset) and an optional out-of-distribution one
  (--ood_dataset, e.g. svhn or cub);
- iterations 1..n_train_iters; `train.log` opens with one `key: value` line per flag; every
  print_freq (the runfiles: 100) iterations a blank line, `Iter <i> start, learning rate
  <lr>` and `train: cent <x>, kl <x>, id_acc <x>` (4 decimals, means since the last line,
  accuracy as a fraction); every val_freq (10000) a validation on n_val_batches metabatches
  of the ID validation split, and of the OOD one, with the posterior means:
  `val  : cent <x>, kl <x>, id_acc <x>, ood_acc <x>`; a checkpoint model-<i> at every
  validation (and every save_freq); every balance_freq (1000) iterations, with omega or
  gamma on, the balancing variables of 10 validation tasks (ID, then OOD) in l2b's tables;
- the validation results are also kept in `validation.json` (iteration, checkpoint, cent,
  kl, id_acc, ood_acc, score = id_acc + ood_acc), from which meta_test picks the checkpoint
  with the best score (the first one on ties), as l2b does by parsing its log;
- meta_test runs n_test_iters // metabatch metabatches of test episodes of the ID dataset,
  then of the OOD dataset, with n_test_steps inner steps and n_mc_samples sampled passes
  (0: the posterior mean), and writes `test_step<steps>_mc<S>.log`: `Meta-test model-<i>`,
  then `id /<dataset> acc: <mean> +- <1.96 std / sqrt(n)>` and `ood/<dataset> acc: ...`
  (percent), plus the same as JSON.
"""
import json
import os
import time
import types

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from data.datasets import DatasetError, load_dataset
from data.episodes import ImbalancedSampler, support_counts
from model import steps
from model.evaluation import episodes_csv
from model.runner import (CHECKPOINT_NAME, Runner, RunError, confidence_interval,
                          dataset_options, draw_with_fingerprints, episode_rng, prefetch,
                          write_atomically, write_record, VAL_STREAM, TEST_STREAM)

BALANCE_STREAM = 3
OOD_OFFSET = 1000   # OOD episodes come from streams of their own
VALIDATION_RECORD = 'validation.json'
N_BALANCE_TASKS = 10


def gamma_table(counts, gamma):
    """l2b's printout of exp(gamma) per layer, tasks sorted by support size."""
    n = counts.sum(1)
    lines = ['', '*** Gamma for task imbalance ***',
             ' ' * 13 + ''.join(f' conv{i}' for i in range(1, gamma.shape[1])) + ' dense']
    for t in np.argsort(n, kind='stable'):
        lines.append(f'task {t}: N={n[t]:3d} ' + ''.join(f'{g:.3f} ' for g in gamma[t]))
    return lines


def omega_table(counts, omega):
    """l2b's printout of softmax(omega), tasks sorted by support size and classes by
    their number of examples (l2b's header always says C1..C5; here one per class)."""
    way = counts.shape[1]
    lines = ['', '*** Omega for class imbalance ***',
             ' ' * 7 + ''.join(f'  C{c}' for c in range(1, way + 1)) + '    ' +
             ''.join(f'    C{c}' for c in range(1, way + 1))]
    for t in np.argsort(counts.sum(1), kind='stable'):
        order = np.argsort(counts[t], kind='stable')
        lines.append(f'task {t}: ' + ''.join(f'{c:3d} ' for c in counts[t][order]) + '--> ' +
                     ''.join(f'{o:.3f} ' for o in omega[t][order]))
    return lines


class TamlRunner(Runner):
    TRAIN_LOG = 'train.log'
    FIRST_ITERATION = 1   # l2b counts 1..n_train_iters

    def __init__(self, cfg, log=print, dataset=None):
        if getattr(cfg, 'checkpoints', ''):
            # meta_test chooses TAML's checkpoint by validation score and tests it on the ID
            # and OOD datasets; pairing runs goes through their per-episode files instead.
            raise RunError('--checkpoints is not supported with --model taml: meta_test one run '
                           'at a time (same --seed) and pair their test_step<n>_mc<S>_id_'
                           'episodes.csv files with python -m tools.report --paired A B')
        super().__init__(cfg, log, dataset)
        self.ood = None
        if cfg.ood_dataset:
            self.ood = load_dataset(cfg.ood_dataset, cfg.data_root,
                                    **dataset_options(_with_dataset(cfg, cfg.ood_dataset)))
            if tuple(self.ood.image_shape) != tuple(self.dataset.image_shape):
                raise RunError(f'--ood_dataset {cfg.ood_dataset} has images of shape '
                               f'{self.ood.image_shape} but --id_dataset {cfg.dataset} has '
                               f'{self.dataset.image_shape}; pair datasets of one image size '
                               '(cifar with svhn, mimgnet with cub)')
        self._eval_steps = {}
        self._balancing = None
        if getattr(cfg, 'mode', 'meta_train') == 'meta_train':
            self.refuse_validation_on_test_split()

    def refuse_validation_on_test_split(self):
        """meta_test tests the checkpoint with the best validation score; a dataset with no
        validation split (metadrop's miniImageNet, Omniglot without --val_alphabets) would
        validate on its meta-test classes, so that choice would be made on the test set."""
        for which, dataset in (('--id_dataset', self.dataset), ('--ood_dataset', self.ood)):
            if dataset is None or not dataset.val_is_test:
                continue
            hint = {'mimgnet': "l2b's miniImageNet, which has 16 validation classes: python "
                               'data/get_data.py --dataset mimgnet --source l2b',
                    'omniglot': 'validation alphabets of their own: --val_alphabets'}.get(
                dataset.name, 'a dataset with a validation split')
            raise RunError(f'{which} {dataset.name} has no validation split ({dataset.description}), '
                           'so --model taml would choose its meta-test checkpoint on the meta-test '
                           f'classes; use {hint}')

    def check_config(self, saved=None, subject=None):
        """The runner's structural flags, and --max_shot where the inference network is on:
        its set-size input (n_c - 1) / (max_shot - 1) is normalised by it."""
        super().check_config(saved, subject)
        saved = self.saved_config() if saved is None else saved
        cfg = self.cfg
        encoder = any(getattr(cfg, f'{n}_on', False) for n in ('omega', 'gamma', 'z'))
        if encoder and saved and 'max_shot' in saved and saved['max_shot'] != cfg.max_shot:
            raise RunError(f'{cfg.savedir} holds a checkpoint of a different configuration: '
                           f'--max_shot {saved["max_shot"]!r} (saved) vs {cfg.max_shot!r} (now), '
                           'which normalises the inference network\'s set-size input. Use the '
                           'saved value, or another --savedir for a new run.')

    # ---- episodes ------------------------------------------------------------------
    def sampler(self, split, ood=False):
        dataset = self.ood if ood else self.dataset
        return ImbalancedSampler(dataset.split(split), self.cfg.way, self.cfg.max_shot,
                                 self.cfg.query, imbalance=self.cfg.imbalance)

    def ood_split(self, which):
        """The OOD split used for validation / test, or None (no OOD dataset, or one
        without that split: then only ID numbers are reported)."""
        if self.ood is None:
            return None
        try:
            split = self.ood.split(which)
        except DatasetError:
            return None
        return split

    # ---- compiled steps ------------------------------------------------------------
    @property
    def train_step(self):
        if self._train_step is None:
            cfg = self.cfg
            spec = steps.episode_spec(cfg.metabatch, None, cfg.way * cfg.query,
                                      self.dataset.image_shape)
            self._train_step = self.compile_train_step(spec)
        return self._train_step

    def eval_step_for(self, n_mc):
        """(xs, ys, xq, yq) -> per-task (cent, kl, acc) with n_mc sampled passes (0: the
        posterior mean)."""
        if n_mc not in self._eval_steps:
            spec = steps.episode_spec(None, None, None, self.dataset.image_shape)
            model = self.model

            @tf.function(input_signature=spec)
            def eval_step(xs, ys, xq, yq):
                return tf.map_fn(lambda e: model.evaluate(*e, n_mc=n_mc), (xs, ys, xq, yq),
                                 fn_output_signature=(tf.float32,) * 3)
            self._eval_steps[n_mc] = eval_step
        return self._eval_steps[n_mc]

    def evaluate_split(self, split, ood, n_batches, stream, n_mc, desc):
        """(mean cent, mean kl, per-episode accuracies) over n_batches metabatches."""
        sampler = self.sampler(split, ood)
        cfg = self.cfg
        stream = stream + (OOD_OFFSET if ood else 0)
        episodes = (draw_with_fingerprints(sampler, episode_rng(cfg.seed, stream, j),
                                           cfg.metabatch)
                    for j in range(n_batches))
        cents, kls, accs, fingerprints = [], [], [], []
        step = self.eval_step_for(n_mc)
        for ep, fps in tqdm(prefetch(episodes), total=n_batches, desc=desc, leave=False,
                            disable=not cfg.progress):
            cent, kl, acc = step(*ep)
            cents.append(cent.numpy())
            kls.append(kl.numpy())
            accs.append(acc.numpy())
            fingerprints += fps
        self.fingerprints = fingerprints   # of the episodes just run (per-episode files)
        return (float(np.mean(np.concatenate(cents))), float(np.mean(np.concatenate(kls))),
                np.concatenate(accs))

    # ---- the training loop's hooks -------------------------------------------------
    def log_training(self, write, i, lr, means, secs):
        write(f'Iter {i} start, learning rate {lr:f}', leading_blank=True)
        cent, kl = means.get('cent', means['loss']), means.get('kl', 0.)
        write(f'train: cent {cent:.4f}, kl {kl:.4f}, id_acc {means["acc"]:.4f}')
        tf.summary.scalar('train/cent', cent, step=i)
        tf.summary.scalar('train/kl', kl, step=i)
        tf.summary.scalar('train/id_acc', means['acc'], step=i)

    def validate(self, write, i, secs):
        cfg = self.cfg
        cent, kl, acc = self.evaluate_split('val', False, cfg.n_val_batches, VAL_STREAM, 0,
                                            'validation (ID)')
        record = dict(iteration=i, checkpoint=f'{CHECKPOINT_NAME}-{i}', cent=cent, kl=kl,
                      id_acc=float(np.mean(acc)))
        line = f'val  : cent {cent:.4f}, kl {kl:.4f}, id_acc {np.mean(acc):.4f}'
        if self.ood_split('val') is not None:
            _, _, ood_acc = self.evaluate_split('val', True, cfg.n_val_batches, VAL_STREAM, 0,
                                                'validation (OOD)')
            record['ood_acc'] = float(np.mean(ood_acc))
            line += f', ood_acc {np.mean(ood_acc):.4f}'
            tf.summary.scalar('val/ood_acc', record['ood_acc'], step=i)
        record['score'] = record['id_acc'] + record.get('ood_acc', 0.)
        write(line)
        tf.summary.scalar('val/cent', cent, step=i)
        tf.summary.scalar('val/kl', kl, step=i)
        tf.summary.scalar('val/id_acc', record['id_acc'], step=i)
        write_record(os.path.join(cfg.savedir, VALIDATION_RECORD), self.validation_records(),
                     record, 'iteration')

    def should_save(self, i):
        # Every validated iteration has its checkpoint (l2b validated at 10000 whatever
        # save_freq was, so its meta_test could look for a checkpoint never written).
        return super().should_save(i) or i % self.cfg.val_freq == 0

    def after_iteration(self, write, i):
        cfg = self.cfg
        model = self.model
        if not (model.on['omega'] or model.on['gamma']) or i % cfg.balance_freq:
            return
        for flag, ood in (('ID', False), ('OOD', True)):
            if ood and self.ood_split('val') is None:
                continue
            ep = self.sampler('val', ood).sample(
                episode_rng(cfg.seed, BALANCE_STREAM + (OOD_OFFSET if ood else 0), i),
                N_BALANCE_TASKS)
            omega, gamma = self.balancing_step(ep.xs, ep.ys)
            counts = support_counts(ep.ys, cfg.way)
            lines = ['', f'{flag} ']
            if model.on['gamma']:
                lines += gamma_table(counts, gamma.numpy())
            if model.on['omega']:
                lines += omega_table(counts, omega.numpy())
            for line in lines:
                write(line)

    @property
    def balancing_step(self):
        if self._balancing is None:
            spec = steps.episode_spec(None, None, None, self.dataset.image_shape)[:2]
            model = self.model

            @tf.function(input_signature=spec)
            def balancing(xs, ys):
                return tf.map_fn(lambda e: model.balancing(*e), (xs, ys),
                                 fn_output_signature=(tf.float32, tf.float32))
            self._balancing = balancing
        return self._balancing

    # ---- model selection and meta-test ----------------------------------------------
    def validation_records(self):
        path = os.path.join(self.cfg.savedir, VALIDATION_RECORD)
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise RunError(f'{path} cannot be read ({e}); it lists the validation results '
                           'meta_test chooses the checkpoint from. Restore it, or delete it '
                           'to test the newest checkpoint') from None

    def checkpoint_candidates(self):
        """meta_test: checkpoints by validation score, best first (l2b's selection; ties:
        the earliest), those never validated after; meta_train: newest first."""
        paths, notes = super().checkpoint_candidates()
        if getattr(self.cfg, 'mode', 'meta_train') == 'meta_train':
            return paths, notes
        records = self.validation_records()
        order = {}
        for rank, r in enumerate(sorted(records, key=lambda r: (-r['score'], r['iteration']))):
            order.setdefault(r['checkpoint'], rank)
        present = {os.path.basename(p) for p in paths}
        missing = [r['checkpoint'] for r in records if r['checkpoint'] not in present]
        best = min(order, key=order.get) if order else None
        if best in missing:
            notes.append(f'the best validated checkpoint, {best}, is no longer in '
                         f'{self.cfg.savedir} (--max_to_keep); using the best one kept')
        if not records and paths:
            notes.append(f'no {VALIDATION_RECORD} in {self.cfg.savedir}: testing the newest '
                         'checkpoint')
        return sorted(paths, key=lambda p: order.get(os.path.basename(p), len(order))), notes

    def meta_test(self):
        cfg = self.cfg
        ckpt = self.restore_for_test()
        n_batches = self.test_batches()
        name = os.path.basename(ckpt)
        n_mc = self.model.n_mc_samples
        lines = [f'Meta-test {name}']
        self.log(lines[0])
        record = dict(checkpoint=name, n_test_steps=self.model.n_test_steps, n_mc_samples=n_mc,
                      way=cfg.way, max_shot=cfg.max_shot, query=cfg.query,
                      imbalance=cfg.imbalance, model=cfg.model, results={})
        record.update(test_dataset=cfg.dataset, trained_dataset=self.trained_dataset)
        stem = f'test_step{self.model.n_test_steps}_mc{n_mc}'
        episodes = {}
        t0 = time.time()
        for flag, ood, dataset in (('id ', False, self.dataset), ('ood', True, self.ood)):
            if ood and self.ood_split('test') is None:
                continue
            _, _, acc = self.evaluate_split('test', ood, n_batches, TEST_STREAM, n_mc,
                                            f'meta_test {dataset.name}')
            mean, ci = confidence_interval(100. * acc)
            line = f'{flag}/{dataset.name} acc: {mean:.2f} +- {ci:.2f}'
            lines.append(line)
            self.log(line)
            # one per-episode file per dataset: ID and OOD episodes are not the same ones
            file = f'{stem}_{flag.strip()}_episodes.csv'
            episodes[file] = episodes_csv(self.fingerprints, {name: acc})
            record['results'][f'{flag.strip()}/{dataset.name}'] = dict(
                accuracy=mean, ci95=ci, n_episodes=int(len(acc)),
                dataset=dataset.description, episodes_file=file)
        self.log(f'({n_batches * cfg.metabatch} episodes per dataset, {cfg.way}-way, 1..'
                 f'{cfg.max_shot} shots ({cfg.imbalance} imbalance), {cfg.query} queries per '
                 f'class, {self.model.n_test_steps} inner steps, '
                 f'{f"{n_mc} sampled passes" if n_mc else "posterior mean"}, {name}, '
                 f'{time.time() - t0:.1f} secs)')
        with self.disk_errors():
            for file, text in episodes.items():
                write_atomically(os.path.join(cfg.savedir, file), text)
            write_atomically(os.path.join(cfg.savedir, f'{stem}.log'), '\n'.join(lines) + '\n')
            write_atomically(os.path.join(cfg.savedir, f'{stem}.json'),
                             json.dumps(record, indent=1))
        return record


def _with_dataset(cfg, name):
    other = types.SimpleNamespace(**vars(cfg))
    other.dataset = name
    return other
