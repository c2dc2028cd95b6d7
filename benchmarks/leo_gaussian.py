"""A synthetic embedding benchmark for LEO with a known Bayes accuracy.

Every class c has a mean mu_c = P a_c in R^D (D = 640 like the WRN embeddings), with P a fixed
random orthonormal basis of a d-dimensional subspace (d = 16) and a_c ~ N(0, tau^2 I_d); an
example of class c is x = mu_c + sigma * eps, eps ~ N(0, I_D). Classes are drawn once per
split (64 / 16 / 20 classes of 600 examples: miniImageNet's shape), so meta-test classes are
new.

The Bayes-optimal few-shot learner knows P, tau and sigma but not the means of the new
classes: the directions outside the subspace carry no class information, and inside it the
posterior of a_c given the K support examples is Gaussian with mean m_c = sum_k P^T x_k /
sigma^2 / (1 / tau^2 + K / sigma^2) and the same covariance for every class, so it
predicts argmin_c |P^T x - m_c|^2. `bayes_accuracy` measures that rule on episodes of the
generated test split: the accuracy no learner can beat on these episodes (LEO sees the
embeddings L2-normalised, which can only lose information). With tau = 0.7, sigma = 1 the
Bayes accuracy of 5-way tasks is about 60% at 1 shot and 80% at 5 shots, close to LEO's
miniImageNet numbers. A learner must find the 16 informative directions among 640 from the
meta-training classes to get near it: nearest class mean in the raw 640 dimensions, which
cannot, stays far below (`nearest_mean_accuracy`).

    python -m benchmarks.leo_gaussian --out DIR [--dim 640 --subspace 16 --tau 0.7 --sigma 1]

writes DIR/{train,val,test}_embeddings.pkl in LEO's file layout (for --dataset leo_custom
--data_path DIR) and DIR/bayes.json with the Bayes and nearest-mean accuracies of 5-way
1-shot and 5-shot test episodes.
"""
import argparse
import json
import os
import pickle

import numpy as np

SPLITS = {'train': 64, 'val': 16, 'test': 20}


def class_label(split, c):
    """A class name of LEO's key format: no '-' and no '_'."""
    return f'g{split}{c:04d}'


def generate(seed=0, dim=640, subspace=16, tau=0.7, sigma=1.0, per_class=600, splits=None):
    """{split: (embeddings float32 [n, dim], keys [n], labels [n])} and the basis P."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, subspace)))
    out = {}
    for split, n_classes in (splits or SPLITS).items():
        a = rng.normal(0., tau, (n_classes, subspace))
        means = a @ basis.T
        x = means[:, None, :] + sigma * rng.normal(size=(n_classes, per_class, dim))
        labels = np.repeat(np.arange(n_classes), per_class)
        keys = np.array([f'{i}-{class_label(split, c)}-{class_label(split, c)}_{k:04d}.png'
                         for i, (c, k) in enumerate((c, k) for c in range(n_classes)
                                                    for k in range(per_class))])
        out[split] = (x.reshape(-1, dim).astype(np.float32), keys, labels)
    return out, basis


def write_leo_pickles(out_dir, data):
    """<out_dir>/<split>_embeddings.pkl: dicts with 'embeddings' and 'keys' (protocol 2, as
    the original's Python 2 files)."""
    os.makedirs(out_dir, exist_ok=True)
    for split, (x, keys, _) in data.items():
        with open(os.path.join(out_dir, f'{split}_embeddings.pkl'), 'wb') as f:
            pickle.dump({'embeddings': x, 'keys': keys}, f, protocol=2)


def _episodes(x, labels, way, shot, n_episodes, rng):
    """Support [E, way, shot, D] and one query per class [E, way, D]."""
    classes = np.unique(labels)
    index = {c: np.flatnonzero(labels == c) for c in classes}
    sup, qry = [], []
    for _ in range(n_episodes):
        chosen = rng.choice(classes, way, replace=False)
        picks = np.stack([rng.choice(index[c], shot + 1, replace=False) for c in chosen])
        sup.append(x[picks[:, :shot]])
        qry.append(x[picks[:, shot]])
    return np.stack(sup).astype(np.float64), np.stack(qry).astype(np.float64)


def bayes_accuracy(x, labels, basis, tau, sigma, way, shot, n_episodes=20000, seed=1):
    """Accuracy of the Bayes-optimal rule on episodes of (x, labels)."""
    sup, qry = _episodes(x, labels, way, shot, n_episodes, np.random.default_rng(seed))
    precision = 1. / tau ** 2 + shot / sigma ** 2
    m = (sup @ basis).sum(2) / sigma ** 2 / precision            # [E, way, d]
    q = qry @ basis                                              # [E, way, d]
    dist = ((q[:, :, None, :] - m[:, None, :, :]) ** 2).sum(-1)  # [E, query class, class]
    return float((dist.argmin(-1) == np.arange(way)).mean())


def nearest_mean_accuracy(x, labels, way, shot, n_episodes=20000, seed=1):
    """Nearest support mean in the full space (no meta-learning)."""
    sup, qry = _episodes(x, labels, way, shot, n_episodes, np.random.default_rng(seed))
    m = sup.mean(2)
    dist = ((qry[:, :, None, :] - m[:, None, :, :]) ** 2).sum(-1)
    return float((dist.argmin(-1) == np.arange(way)).mean())


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', required=True)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--dim', type=int, default=640)
    p.add_argument('--subspace', type=int, default=16)
    p.add_argument('--tau', type=float, default=0.7)
    p.add_argument('--sigma', type=float, default=1.0)
    p.add_argument('--per_class', type=int, default=600)
    p.add_argument('--episodes', type=int, default=20000)
    a = p.parse_args()
    data, basis = generate(a.seed, a.dim, a.subspace, a.tau, a.sigma, a.per_class)
    write_leo_pickles(a.out, data)
    x, _, labels = data['test']
    record = dict(vars(a))
    for shot in (1, 5):
        record[f'bayes_5way_{shot}shot'] = bayes_accuracy(x, labels, basis, a.tau, a.sigma, 5,
                                                          shot, a.episodes)
        record[f'nearest_mean_5way_{shot}shot'] = nearest_mean_accuracy(x, labels, 5, shot,
                                                                         a.episodes)
    with open(os.path.join(a.out, 'bayes.json'), 'w') as f:
        json.dump(record, f, indent=1)
    print(json.dumps(record, indent=1))


if __name__ == '__main__':
    main()
