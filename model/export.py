"""`--mode export`: what metadrop main.py `export` writes, for the decision-boundary plots.

Ten 2-way episodes from the meta-test split with the fixed class pairs (c, c+5),
c = 0..9; images drawn at random; shot and query from the flags. The head is restricted to
its first two columns (the original's comment says "random"; they are the first two). Before
each of the n_steps inner steps and once after the last (n_steps + 1 snapshots) it records
the flattened features of the support (`htr`) and query (`hte`) sets and the head (`w`, `b`),
and for Meta-Dropout 10 noisy support feature sets (`htr_sample`).

Features are computed with batch statistics of the set itself (the originals' transductive
batch norm) whatever --bn_mode is; --frozen is honoured; inner momentum / weight decay are
refused (the steps are replayed one by one without their buffers).

Written to `<savedir>/export.pkl` (a list of 10 dicts, the original's layout, which its
plot.py reads) and `<savedir>/export.npz` (the same arrays stacked over episodes, which
loads without executing code; this project's plot.py reads it):
  htr [S+1, 2*shot, F], hte [S+1, 2*query, F], w [S+1, F, 2], b [S+1, 2],
  ytr [2*shot], yte [2*query] (int labels), and for Meta-Dropout
  htr_sample [S+1, 10, 2*shot, F]; the npz adds classes [10, 2].

Meta-Dropout also writes `<savedir>/stochastic.npz` for the stochastic-feature pictures
(which the original shows but no code of it produces): `images` [n, H, W, C] (the first
episode's support images), `layers` [1, 2, 3], and per layer l `layer{l}`
[n, 20, H_l, W_l, C] (20 noisy samples of the perturbed pre-batch-norm activation) and
`layer{l}_mean` [n, H_l, W_l, C] (the noise-free z = alpha one).
"""
import os
import pickle

import numpy as np
import tensorflow as tf

from data.episodes import EpisodeSampler
from model import inner_loop
from model.runner import RunError, episode_rng

N_EPISODES = 10
N_EXPORT_SAMPLES = 10     # export: noisy support feature sets per snapshot (Meta-Dropout)
EXPORT_STREAM = 3
N_FEATURE_SAMPLES = 20    # stochastic.npz: noisy samples per image
FEATURE_LAYERS = (1, 2, 3)  # stochastic.npz: the lower conv layers
N_FEATURE_IMAGES = 4      # stochastic.npz: images (from the first episode's support set)


def two_way(params):
    """theta with the head cut to its first two columns."""
    out = dict(params)
    out['dense_w'] = params['dense_w'][:, :2]
    out['dense_b'] = params['dense_b'][:2]
    return out


def trajectory(model, xs, ys, xq, n_steps):
    """Features and head before every inner step and after the last one.

    The inner steps are the meta-test ones (n_test_mc_samp MC samples with full noise for
    Meta-Dropout); features are the deterministic forward (for Meta-Dropout: no sampling,
    convs still scaled by softplus(alpha)), plus, for Meta-Dropout, N_EXPORT_SAMPLES noisy
    (sampled) support feature sets per snapshot."""
    fast = two_way({k: tf.convert_to_tensor(v) for k, v in model.net.initial_params().items()})
    stochastic = getattr(model, 'phi', None) is not None and not getattr(model, 'maml', True)
    step_size = model.step_size()
    record = {'htr': [], 'hte': [], 'w': [], 'b': []}
    if stochastic:
        record['htr_sample'] = []
    for s in range(n_steps + 1):
        record['htr'].append(model.features(fast, xs).numpy())
        record['hte'].append(model.features(fast, xq).numpy())
        record['w'].append(fast['dense_w'].numpy())
        record['b'].append(fast['dense_b'].numpy())
        if stochastic:
            record['htr_sample'].append(np.stack([
                model.features(fast, xs, sample=True).numpy()
                for _ in range(N_EXPORT_SAMPLES)]))
        if s < n_steps:
            fast, _ = inner_loop.gradient_step(
                lambda p: model.inner_loss(p, xs, ys, training=False), fast, step_size,
                first_order=True, frozen=model.frozen)
    return {k: np.stack(v) for k, v in record.items()}


def stochastic_features(model, x, n_samples=N_FEATURE_SAMPLES, layers=FEATURE_LAYERS):
    """Meta-Dropout's perturbed feature maps: for the images x (normalised together, as a
    support set is), the pre-batch-norm activation mu * softplus(z) of the given conv
    layers, n_samples times with z ~ N(alpha, 1), and once with z = alpha (noise-free),
    under the meta-learned initialisation theta."""
    theta = {k: tf.convert_to_tensor(v) for k, v in model.net.theta.items()}
    out = {'images': x.numpy(), 'layers': np.array(layers)}
    samples = {l: [] for l in layers}
    for _ in range(n_samples):
        rec = {}
        model.net.features(x, theta, pre_bn=model.noise_hook(True, rec))
        for l in layers:
            samples[l].append(rec[l].numpy())
    rec = {}
    model.net.features(x, theta, pre_bn=model.noise_hook(False, rec))
    for l in layers:
        out[f'layer{l}'] = np.stack(samples[l], axis=1)   # [n_img, n_samples, H, W, C]
        out[f'layer{l}_mean'] = rec[l].numpy()           # [n_img, H, W, C]
    return out


def _save_npz(path, arrays):
    with open(path + '.tmp', 'wb') as f:
        np.savez(f, **arrays)
    os.replace(path + '.tmp', path)


def export(runner):
    cfg = runner.cfg
    runner.restore_for_test()
    if cfg.way < 2:
        raise RunError('export draws 2-way episodes and needs a model trained with --way 2 '
                       f'or more (this one has --way {cfg.way})')
    test = runner.dataset.test
    if test.n_classes < 15:
        raise RunError(f'export uses the class pairs (c, c+5) for c = 0..9, i.e. 15 classes, but '
                       f'the meta-test split has only {test.n_classes}')
    if runner.model.inner_momentum or runner.model.inner_weight_decay:
        raise RunError('export replays the inner loop step by step without momentum or weight '
                       'decay; run it with --inner_momentum 0 --inner_weight_decay 0')
    sampler = EpisodeSampler(test, 2, cfg.shot, cfg.query)
    n_steps = runner.model.n_test_steps
    outs = []
    for c in range(N_EPISODES):
        ep = sampler.sample(episode_rng(cfg.seed, EXPORT_STREAM, c), 1, classes=[c, c + 5])
        out = trajectory(runner.model, tf.constant(ep.xs[0]), tf.constant(ep.ys[0]),
                         tf.constant(ep.xq[0]), n_steps)
        out['ytr'] = ep.ys[0].astype(np.int64)
        out['yte'] = ep.yq[0].astype(np.int64)
        outs.append(out)
    path = os.path.join(cfg.savedir, 'export.pkl')
    with open(path + '.tmp', 'wb') as f:
        pickle.dump(outs, f)
    os.replace(path + '.tmp', path)
    npz = os.path.join(cfg.savedir, 'export.npz')
    _save_npz(npz, dict({k: np.stack([o[k] for o in outs]) for k in outs[0]},
                        classes=np.array([[c, c + 5] for c in range(N_EPISODES)])))
    runner.log(f'exported {N_EPISODES} 2-way episodes ({n_steps + 1} snapshots each) to '
               f'{path} and {npz}')
    if 'htr_sample' in outs[0]:
        first = sampler.sample(episode_rng(cfg.seed, EXPORT_STREAM, 0), 1, classes=[0, 5])
        feats = stochastic_features(runner.model, tf.constant(first.xs[0][:N_FEATURE_IMAGES]))
        _save_npz(os.path.join(cfg.savedir, 'stochastic.npz'), feats)
        runner.log(f'exported the perturbed feature maps of conv layers '
                   f'{", ".join(map(str, FEATURE_LAYERS))} ({N_FEATURE_SAMPLES} samples of '
                   f'{len(feats["images"])} images) to '
                   f'{os.path.join(cfg.savedir, "stochastic.npz")}')
    return outs
