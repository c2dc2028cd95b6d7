"""`--mode export`: what metadrop main.py `export` writes, for the decision-boundary plots.

Ten 2-way episodes from the meta-test split with the fixed class pairs (c, c+5),
c = 0..9; images drawn at random; shot and query from the flags. The head is restricted to
its first two columns (the original's comment says "random"; they are the first two). Before
each of the n_steps inner steps and once after the last (n_steps + 1 snapshots) it records
the flattened features of the support (`htr`) and query (`hte`) sets and the head (`w`, `b`).

Written to `<savedir>/export.pkl` (a list of 10 dicts, the original's layout, which its
plot.py reads) and `<savedir>/export.npz` (the same arrays stacked over episodes, which
loads without executing code; this project's plot.py reads it):
  htr [S+1, 2*shot, F], hte [S+1, 2*query, F], w [S+1, F, 2], b [S+1, 2],
  ytr [2*shot], yte [2*query] (int labels).
"""
import os
import pickle

import numpy as np
import tensorflow as tf

from data.episodes import EpisodeSampler
from model import inner_loop
from model.runner import RunError, episode_rng

N_EPISODES = 10
EXPORT_STREAM = 3


def two_way(params):
    """theta with the head cut to its first two columns."""
    out = dict(params)
    out['dense_w'] = params['dense_w'][:, :2]
    out['dense_b'] = params['dense_b'][:2]
    return out


def trajectory(model, xs, ys, xq, n_steps):
    """Features and head before every inner step and after the last one."""
    net = model.net
    fast = two_way({k: tf.convert_to_tensor(v) for k, v in net.theta.items()})
    step_size = model.step_size()
    record = {'htr': [], 'hte': [], 'w': [], 'b': []}
    for s in range(n_steps + 1):
        record['htr'].append(net.features(xs, fast).numpy())
        record['hte'].append(net.features(xq, fast).numpy())
        record['w'].append(fast['dense_w'].numpy())
        record['b'].append(fast['dense_b'].numpy())
        if s < n_steps:
            fast, _ = inner_loop.gradient_step(lambda p: model.inner_loss(p, xs, ys), fast,
                                               step_size, first_order=True)
    return {k: np.stack(v) for k, v in record.items()}


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
    with open(npz + '.tmp', 'wb') as f:
        np.savez(f, **{k: np.stack([o[k] for o in outs]) for k in outs[0]},
                 classes=np.array([[c, c + 5] for c in range(N_EPISODES)]))
    os.replace(npz + '.tmp', npz)
    runner.log(f'exported {N_EPISODES} 2-way episodes ({n_steps + 1} snapshots each) to '
               f'{path} and {npz}')
    return outs
