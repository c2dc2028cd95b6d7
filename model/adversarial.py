"""`--mode adv_test`: white-box PGD attacks on the query set after inner-loop adaptation.

Each meta-test task is adapted on its clean support set exactly as in meta_test
(`model.adapt(xs, ys, training=False)`), then the adapted weights are frozen (constants) and
the query images are attacked to maximise the mean query cross-entropy of
`model.query_logits(adapted, x)` (with the run's --bn_mode). Clean and adversarial query accuracies are reported per attack.

What is attacked. With the default --bn_mode transductive, batch norm normalises the query
batch with its own statistics (as the originals), so every prediction depends on the whole
query batch: the attack perturbs the query batch jointly (one PGD per task, all query images at once), with
a separate budget per image.

PGD (Madry et al. 2018) under three norms, with per-example budgets `eps`:
  - linf: sign-gradient steps, projection = clipping each coordinate to [-eps, eps];
  - l2:   steps along the L2-normalised gradient, projection onto the L2 ball (rescaling);
  - l1:   sparse steepest-ascent steps in the spirit of Tramer & Boneh (2019, "SLIDE"):
          only the `l1_frac` fraction of coordinates with the largest |gradient| moves (by
          the sign of its gradient, the step split equally between them), skipping
          coordinates stuck at the pixel box in the direction of their gradient; projection
          onto the L1 ball is the exact sort-based Euclidean projection of Duchi et al. (2008).
Every step has length `step_size` in its own norm. The start is a uniformly random point
of the ball (`rand_init`) or the clean image. After every projection the image is clipped to
the valid pixel box; since the clean image is inside the box, clipping only moves each
coordinate of the perturbation towards zero, so the perturbation stays inside the ball.

The returned batch is the candidate with the fewest correct predictions (ties: the larger
loss) among the clean batch, the start and every iterate (`keep_best`; a joint choice for
the whole batch, as the batch statistics couple the examples). The clean batch is a member
of every ball, so adversarial accuracy can never exceed clean accuracy.

Step sizes: `step_size = pgd_step_scale * eps / pgd_steps` (2.5 eps / steps, Madry et al.),
so the iterates can cross the whole ball and come back.

Default budgets (ours: the Meta-Dropout paper's attack settings could not be found; see
README "Adversarial robustness"), on images in [0, 1]: grey images (Omniglot-like)
linf 0.1, l2 1.0, l1 10; colour images (miniImageNet-like) linf 0.03, l2 1.0, l1 20.

Episodes: the same meta-test episodes as `--mode meta_test` (same seed, stream and
metabatch): the first `--n_adv_episodes` of them. Writes `<savedir>/adv_test.log` (the
printed accuracy lines) and `<savedir>/adv_test.json`.
"""
import json
import math
import os
import time
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from model import steps
from model.maml import accuracy, cross_entropy
from model.runner import (RunError, TEST_STREAM, confidence_interval, episode_rng, prefetch,
                          write_atomically)

NORMS = ('l1', 'l2', 'linf')
# The readers give images in [0, 1] (uint8 read back as x / 255); adv_test checks it.
PIXEL_RANGE = (0., 1.)
ADV_STREAM = 4  # random starts of the attacks (0-2: runner, 3: export)
TINY = 1e-12

# Our default budgets (not the paper's): grey (Omniglot-like) and colour (miniImageNet-like).
DEFAULT_EPS = {'grey': {'linf': 0.1, 'l2': 1.0, 'l1': 10.0},
               'colour': {'linf': 0.03, 'l2': 1.0, 'l1': 20.0}}


class Attack(NamedTuple):
    norm: str
    eps: float
    n_iter: int
    step_size: float
    l1_frac: float = 0.01

    @property
    def label(self):
        return f'{self.norm} (eps={self.eps:g}, steps={self.n_iter})'


# ---- norms and projections on flattened perturbations [B, D] ------------------------

def norms(delta, norm):
    """Per-example norm of flattened perturbations [B, D] -> [B]."""
    if norm == 'linf':
        return tf.reduce_max(tf.abs(delta), axis=1)
    if norm == 'l2':
        return tf.sqrt(tf.reduce_sum(tf.square(delta), axis=1))
    if norm == 'l1':
        return tf.reduce_sum(tf.abs(delta), axis=1)
    raise ValueError(f'unknown norm {norm!r}; use one of {", ".join(NORMS)}')


def project_l1_ball(v, eps):
    """Euclidean projection of each row of v [B, D] onto the L1 ball of radius eps.

    Duchi et al. (2008): with u = |v| sorted decreasingly and the largest rho such that
    u_rho > (sum_{j<=rho} u_j - eps) / rho, the projection is the soft threshold
    sign(v) * max(|v| - theta, 0), theta = (sum_{j<=rho} u_j - eps) / rho. Rows already
    inside the ball are returned unchanged."""
    v = tf.convert_to_tensor(v)
    eps = tf.cast(eps, v.dtype)
    a = tf.abs(v)
    u = tf.sort(a, axis=1, direction='DESCENDING')
    css = tf.cumsum(u, axis=1)
    j = tf.cast(tf.range(1, tf.shape(v)[1] + 1), v.dtype)
    # The condition holds for a prefix of j; its length is rho (at least 1).
    rho = tf.maximum(tf.reduce_sum(tf.cast(u - (css - eps) / j > 0, tf.int32), axis=1), 1)
    theta = (tf.gather(css, rho - 1, batch_dims=1) - eps) / tf.cast(rho, v.dtype)
    theta = tf.maximum(theta, 0.)[:, None]
    projected = tf.sign(v) * tf.maximum(a - theta, 0.)
    inside = tf.reduce_sum(a, axis=1, keepdims=True) <= eps
    return tf.where(inside, v, projected)


def project(delta, norm, eps):
    """Projection of each row of delta [B, D] onto the `norm` ball of radius eps."""
    eps = tf.cast(eps, delta.dtype)
    if norm == 'linf':
        return tf.clip_by_value(delta, -eps, eps)
    if norm == 'l2':
        n = norms(delta, 'l2')[:, None]
        return delta * tf.minimum(1., eps / tf.maximum(n, TINY))
    if norm == 'l1':
        return project_l1_ball(delta, eps)
    raise ValueError(f'unknown norm {norm!r}; use one of {", ".join(NORMS)}')


def clip_to_box(x, delta, clip):
    """The perturbation that keeps x + delta inside the pixel box [lo, hi]."""
    lo, hi = clip
    return tf.clip_by_value(x + delta, lo, hi) - x


# ---- random starts ---------------------------------------------------------------

def _uniform(shape, seed, salt, dtype):
    if seed is None:
        return tf.random.uniform(shape, dtype=dtype)
    return tf.random.stateless_uniform(
        shape, seed=tf.random.experimental.stateless_fold_in(seed, salt), dtype=dtype)


def _normal(shape, seed, salt, dtype):
    if seed is None:
        return tf.random.normal(shape, dtype=dtype)
    return tf.random.stateless_normal(
        shape, seed=tf.random.experimental.stateless_fold_in(seed, salt), dtype=dtype)


def random_in_ball(shape, norm, eps, seed=None, dtype=tf.float32):
    """Points drawn uniformly from the `norm` ball of radius eps, one per row of [B, D]."""
    b, d = shape[0], shape[1]
    eps = tf.cast(eps, dtype)
    if norm == 'linf':
        return (2. * _uniform([b, d], seed, 0, dtype) - 1.) * eps
    if norm == 'l2':
        g = _normal([b, d], seed, 1, dtype)
        g = g / tf.maximum(norms(g, 'l2')[:, None], TINY)
        r = _uniform([b, 1], seed, 2, dtype) ** (1. / tf.cast(d, dtype))
        return g * r * eps
    if norm == 'l1':
        # D + 1 standard exponentials, normalised by their sum, with random signs: uniform
        # in the L1 ball.
        e = -tf.math.log(1. - _uniform([b, d + 1], seed, 3, dtype))
        signs = tf.where(_uniform([b, d], seed, 4, dtype) < 0.5, -1., 1.)
        signs = tf.cast(signs, dtype)
        return signs * e[:, :d] / tf.reduce_sum(e, axis=1, keepdims=True) * eps
    raise ValueError(f'unknown norm {norm!r}; use one of {", ".join(NORMS)}')


# ---- steepest-ascent directions -------------------------------------------------

def l1_direction(g, x_adv, clip, k):
    """Unit-L1 ascent direction: the sign of the gradient on the k coordinates with the
    largest |gradient| among those that can still move in that direction inside the box,
    split equally between them (zero where the gradient is zero)."""
    lo, hi = clip
    movable = tf.logical_or(tf.logical_and(g > 0, x_adv < hi), tf.logical_and(g < 0, x_adv > lo))
    score = tf.where(movable, tf.abs(g), tf.zeros_like(g))
    _, idx = tf.math.top_k(score, k=k)                              # [B, k]
    b = tf.shape(g)[0]
    rows = tf.tile(tf.range(b)[:, None], [1, k])
    where = tf.reshape(tf.stack([rows, idx], axis=-1), [-1, 2])
    mask = tf.scatter_nd(where, tf.ones([b * k], g.dtype), tf.shape(g))
    e = tf.sign(g) * mask * tf.cast(score > 0, g.dtype)
    return e / tf.maximum(tf.reduce_sum(tf.abs(e), axis=1, keepdims=True), 1.)


def direction(g, norm, x_adv, clip, l1_k):
    """Steepest-ascent direction of unit `norm` for the flattened gradient g [B, D]."""
    if norm == 'linf':
        return tf.sign(g)
    if norm == 'l2':
        return g / tf.maximum(norms(g, 'l2')[:, None], TINY)
    if norm == 'l1':
        return l1_direction(g, x_adv, clip, l1_k)
    raise ValueError(f'unknown norm {norm!r}; use one of {", ".join(NORMS)}')


# ---- PGD ------------------------------------------------------------------------

def pgd(logits_fn, x, y, norm, eps, n_iter, step_size, rand_init=True, clip=PIXEL_RANGE,
        seed=None, l1_frac=0.01, keep_best=True):
    """Adversarial version of the batch x [B, H, W, C] (labels y [B]) for `logits_fn`.

    Maximises the mean cross-entropy of logits_fn(x + delta) with ||delta_b||_norm <= eps
    for every example b and x + delta inside the box `clip`. Gradients are taken w.r.t. the
    input only. `seed` (shape [2] int tensor) makes the random start reproducible. With
    `keep_best`, returns the candidate (clean batch, start, iterates) with the fewest
    correct predictions, ties broken by the larger loss; otherwise the last iterate.
    Usable eagerly and inside a tf.function (the iterations run in a tf.while_loop)."""
    if norm not in NORMS:
        raise ValueError(f'unknown norm {norm!r}; use one of {", ".join(NORMS)}')
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y)
    dtype = x.dtype
    shape = tf.shape(x)
    dim = int(np.prod(x.shape[1:]))
    l1_k = max(1, min(dim, int(round(l1_frac * dim))))
    clip = (tf.cast(clip[0], dtype), tf.cast(clip[1], dtype))
    eps = tf.cast(eps, dtype)
    step_size = tf.cast(step_size, dtype)
    x_flat = tf.reshape(x, [-1, dim])

    def evaluate(delta, with_grad):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(delta)
            logits = logits_fn(tf.reshape(x_flat + delta, shape))
            loss = cross_entropy(logits, y)
        correct = tf.reduce_sum(tf.cast(
            tf.equal(tf.argmax(logits, -1, output_type=y.dtype), y), tf.int32))
        grad = tape.gradient(loss, delta) if with_grad else None
        return loss, correct, grad

    def better(loss, correct, best_loss, best_correct):
        return tf.logical_or(correct < best_correct,
                             tf.logical_and(tf.equal(correct, best_correct), loss > best_loss))

    delta0 = tf.zeros_like(x_flat)
    if keep_best:
        best_loss, best_correct, _ = evaluate(delta0, with_grad=False)
    else:
        best_loss, best_correct = tf.constant(-np.inf, dtype), tf.constant(2 ** 30)
    best = delta0
    if rand_init:
        start = random_in_ball(tf.shape(x_flat), norm, eps, seed, dtype)
        delta0 = clip_to_box(x_flat, project(start, norm, eps), clip)

    def body(i, delta, best, best_loss, best_correct):
        loss, correct, g = evaluate(delta, with_grad=True)
        if keep_best:
            take = better(loss, correct, best_loss, best_correct)
            best = tf.where(take, delta, best)
            best_loss = tf.where(take, loss, best_loss)
            best_correct = tf.where(take, correct, best_correct)
        step = step_size * direction(g, norm, x_flat + delta, clip, l1_k)
        delta = clip_to_box(x_flat, project(delta + step, norm, eps), clip)
        return i + 1, delta, best, best_loss, best_correct

    _, delta, best, best_loss, best_correct = tf.while_loop(
        lambda i, *_: i < n_iter, body,
        (tf.constant(0), delta0, best, best_loss, best_correct))
    if keep_best:
        loss, correct, _ = evaluate(delta, with_grad=False)
        delta = tf.where(better(loss, correct, best_loss, best_correct), delta, best)
    return tf.reshape(x_flat + delta, shape)


# ---- the compiled evaluation ------------------------------------------------------

def adversarial_eval_step(model, attacks, image_shape=None, clip=PIXEL_RANGE):
    """A tf.function (xs, ys, xq, yq, seed) -> (clean query loss [T], clean accuracy [T],
    adversarial accuracy [T, len(attacks)]) over a metabatch of T tasks (any T, any set
    sizes: traced once). Each task adapts on its support set with the meta-test inner loop,
    then its query set is attacked with the adapted weights held constant. `seed` [2] int32
    seeds the random starts (folded with the task index and the attack index)."""
    attacks = list(attacks)
    if not attacks:
        raise ValueError('adversarial_eval_step needs at least one attack')
    if image_shape is None:
        image_shape = model.net.image_shape
    spec = [*steps.episode_spec(None, None, None, image_shape), tf.TensorSpec([2], tf.int32)]
    fold_in = tf.random.experimental.stateless_fold_in

    @tf.function(input_signature=spec)
    def adv_step(xs, ys, xq, yq, seed):
        def task(args):
            xs_t, ys_t, xq_t, yq_t, t = args
            adapted = model.adapt(xs_t, ys_t, training=False)
            adapted = adapted._replace(**{
                f: tf.nest.map_structure(tf.stop_gradient, getattr(adapted, f))
                for f in ('params', 'running') if getattr(adapted, f) is not None})

            def logits_fn(x):
                return model.query_logits(adapted, x)

            logits = logits_fn(xq_t)
            adv = []
            for a, attack in enumerate(attacks):
                x_adv = pgd(logits_fn, xq_t, yq_t, attack.norm, attack.eps, attack.n_iter,
                            attack.step_size, rand_init=True, clip=clip,
                            seed=fold_in(fold_in(seed, t), a), l1_frac=attack.l1_frac)
                adv.append(accuracy(logits_fn(x_adv), yq_t))
            return cross_entropy(logits, yq_t), accuracy(logits, yq_t), tf.stack(adv)

        n = tf.shape(xs)[0]
        return tf.map_fn(task, (xs, ys, xq, yq, tf.range(n)),
                         fn_output_signature=(tf.float32, tf.float32, tf.float32))

    return adv_step


# ---- the mode ---------------------------------------------------------------------

def default_eps(image_shape):
    """Our default budgets for images of this shape: grey or colour."""
    return DEFAULT_EPS['grey' if image_shape[-1] == 1 else 'colour']


def attacks_from_config(cfg, image_shape):
    """The attacks the flags ask for, in the order given in --attacks."""
    defaults = default_eps(image_shape)
    out = []
    for norm in [a.strip() for a in cfg.attacks.split(',') if a.strip()]:
        if norm not in NORMS:
            raise RunError(f'--attacks: unknown attack {norm!r}; use {", ".join(NORMS)}')
        if any(a.norm == norm for a in out):
            raise RunError(f'--attacks lists {norm} twice')
        eps = getattr(cfg, f'eps_{norm}')
        eps = defaults[norm] if eps is None else float(eps)
        out.append(Attack(norm, eps, int(cfg.pgd_steps),
                          float(cfg.pgd_step_scale) * eps / int(cfg.pgd_steps),
                          float(cfg.pgd_l1_frac)))
    if not out:
        raise RunError('--attacks is empty; give a comma-separated list of l1, l2, linf')
    return out


def adv_episodes(runner, n_episodes):
    """Yields (metabatch, attack seed [2] int32): meta_test's metabatches (as
    runner.evaluate draws them: --seed, TEST_STREAM, batch j), the last one cut so that
    exactly `n_episodes` episodes come out."""
    cfg = runner.cfg
    sampler = runner.sampler('test')
    for j in range(math.ceil(n_episodes / cfg.metabatch)):
        ep = sampler.sample(episode_rng(cfg.seed, TEST_STREAM, j), cfg.metabatch)
        take = min(cfg.metabatch, n_episodes - j * cfg.metabatch)
        seed = episode_rng(cfg.seed, ADV_STREAM, j).integers(0, 2 ** 31 - 1, size=2)
        yield [a[:take] for a in ep], seed.astype(np.int32)


def adversarial_test(runner):
    """Clean and adversarial meta-test accuracies (95% intervals) on the first
    --n_adv_episodes meta-test episodes; writes adv_test.log and adv_test.json."""
    cfg = runner.cfg
    ckpt = runner.restore_for_test()
    image_shape = runner.dataset.image_shape
    attacks = attacks_from_config(cfg, image_shape)
    n_batches = math.ceil(cfg.n_adv_episodes / cfg.metabatch)
    step = adversarial_eval_step(runner.model, attacks, image_shape, PIXEL_RANGE)
    lo, hi = PIXEL_RANGE
    t0 = time.time()
    losses, clean, adv = [], [], []
    for ep, seed in tqdm(prefetch(adv_episodes(runner, cfg.n_adv_episodes)), total=n_batches,
                         desc='adv_test', leave=False, disable=not cfg.progress,
                         dynamic_ncols=True):
        xq = ep[2]
        if xq.size and (xq.min() < lo or xq.max() > hi):
            raise RunError(f'adv_test attacks images in [{lo:g}, {hi:g}], but the test split '
                           f'has values in [{xq.min():g}, {xq.max():g}]')
        loss, acc, adv_acc = step(*ep, seed)
        losses.append(loss.numpy())
        clean.append(acc.numpy())
        adv.append(adv_acc.numpy())
    clean = np.concatenate(clean)
    adv = np.concatenate(adv)

    mean, ci = confidence_interval(100. * clean)
    lines = [f'clean accuracy : {mean:f} +- {ci:f}']
    record = dict(clean=dict(accuracy=mean, ci95=ci), attacks={},
                  n_episodes=int(len(clean)), cent=float(np.mean(np.concatenate(losses))),
                  checkpoint=os.path.basename(ckpt), way=cfg.way, shot=cfg.shot,
                  query=cfg.query, n_test_steps=runner.model.n_test_steps,
                  dataset=runner.dataset.description, batch_norm=runner.model.bn_mode,
                  test_dataset=cfg.dataset, trained_dataset=runner.trained_dataset,
                  attacked='query set after adaptation (fast weights fixed), whole query '
                           'batch jointly, per-example budgets',
                  pixel_range=list(PIXEL_RANGE), random_start=True,
                  selection='fewest correct among clean, start and iterates',
                  settings_source='ours (the paper\'s attack settings were not found)',
                  per_episode={'clean': [float(a) for a in clean]})
    for a, attack in enumerate(attacks):
        m, c = confidence_interval(100. * adv[:, a])
        lines.append(f'{attack.label} accuracy : {m:f} +- {c:f}')
        entry = dict(eps=attack.eps, steps=attack.n_iter, step_size=attack.step_size,
                     accuracy=m, ci95=c)
        if attack.norm == 'l1':
            entry['l1_frac'] = attack.l1_frac
        record['attacks'][attack.norm] = entry
        record['per_episode'][attack.norm] = [float(v) for v in adv[:, a]]
    for line in lines:
        runner.log(line)
    runner.log(f'({len(clean)} episodes of {cfg.way}-way {cfg.shot}-shot, {cfg.query} queries '
               f'per class, {runner.model.n_test_steps} inner steps, PGD step '
               f'{cfg.pgd_step_scale:g} * eps / {cfg.pgd_steps}, checkpoint '
               f'{os.path.basename(ckpt)}, {time.time() - t0:.1f} secs)')
    with runner.disk_errors():
        write_atomically(os.path.join(cfg.savedir, 'adv_test.log'), '\n'.join(lines) + '\n')
        write_atomically(os.path.join(cfg.savedir, 'adv_test.json'),
                         json.dumps(record, indent=1))
    return record
