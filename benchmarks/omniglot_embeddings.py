"""Pre-computed Omniglot embeddings in deepmind/leo's file layout, from a Conv4 classifier
pretrained on the meta-train split only.

    python -m benchmarks.omniglot_embeddings --data_root /work/shared/data --out DIR
    python -m benchmarks.omniglot_embeddings --data_root ... --out DIR --epochs 20 --n_channel 128

Pretraining: every class of the meta-train split (a character at one of the four
rotations) is one label. The backbone is this project's Conv4 (model/nets.py, metadrop
variant: 3x3 conv, BN with shift only and batch statistics, ReLU, 2x2 max-pool; 28 -> 1
spatially, so the features before the dense head are `n_channel`-dimensional). It trains
with Adam on shuffled mixed-class batches, BN in training mode (batch statistics), as the
network always computes. `--n_holdout` drawings per class (seeded, per class) are held out
of training and give the classification-validation accuracy.

Embeddings: the features before the classifier head, of every image of the train, val
and test splits. Batch statistics would make an image's embedding depend on the other
images of the batch it is computed with; grouping by class (all 20 drawings of a class in
one batch) would in addition put label information into every embedding (a query image
would be normalised together with the support images of its own class and nothing else),
which the few-shot learner downstream must not get. So the embeddings use population
statistics instead (`--bn_stats population`, the default, as a network in inference mode):
per BN layer, mean and biased variance of its input over all meta-train images, computed
layer by layer (layer l's statistics with layers < l already normalised by theirs), and
then every image of every split is embedded independently of its batch (nets.GivenStats).
The statistics come from meta-train images only, so nothing of val/test enters the
embeddings. `--bn_stats class` is the per-class batch alternative (transductive, for
comparison only). pretrain.json records the held-out accuracy with both the training
forward (mixed batches, batch statistics) and the population statistics, so the switch of
statistics can be checked not to hurt.

Output (deepmind/leo data.py layout), in --out:
  {train,val,test}_embeddings.pkl  pickle protocol 2 of a dict with
      'embeddings': float32 [n, D]
      'keys': numpy str array [n] of '<index>-<class_label>-<class_label>_<k>.png': the
          class name with every character outside [A-Za-z0-9.()] replaced by '.', e.g.
          'Japanese_(hiragana)/character01@rot90' -> 'Japanese.(hiragana).character01.rot90'
          (no '-' or '_', as LEO splits keys on '-' and file names on '_'), k the drawing
          index within its class; the images of a class are contiguous, in class order.
  pretrain.json   settings, class counts, per-epoch loss / accuracies, held-out accuracy,
                  timings, the embedding dimension, and a nearest-centroid probe (cosine,
                  on the L2-normalised embeddings as LEO normalises them) of 5-way 1/5-shot
                  episodes on the val and test embeddings.
  {train,val,test}_embeddings.npz  the same arrays as data/leo.py converts them (the LEO
                  reader loads them and never unpickles).
LEO l2-normalises embeddings itself when it samples a problem, so they are stored raw.
The keys, the files (written durably), the population statistics and the probe are
model/embed.py's (`--mode embed`, which does the same from any checkpoint of main.py);
this script keeps its own Conv4 pretraining, its held-out check and the `class` comparison.
"""
import argparse
import json
import os
import time

# As main.py, before TensorFlow is imported (model/__init__.py explains the oneDNN switch).
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import tensorflow as tf

from model import backbones, embed, nets
from model.embed import SPLITS, PICKLE_PROTOCOL, class_label, class_labels, make_keys  # noqa: F401
from model.optim import Adam


def write_pickle(path, embeddings, keys):
    """<split>_embeddings.pkl and its npz (model/embed.py write_embeddings)."""
    folder, name = os.path.split(path)
    embed.write_embeddings(folder or '.', name[:-len('_embeddings.pkl')], embeddings, keys)


# ---- data ----------------------------------------------------------------------------------
def holdout_split(split, n_holdout, rng):
    """Per class, `n_holdout` drawings chosen at random: ([(class, index)] to train on,
    [(class, index)] held out)."""
    train, held = [], []
    for c in range(split.n_classes):
        n = int(split.counts[c])
        if n_holdout >= n:
            raise ValueError(f'--n_holdout {n_holdout} leaves nothing to train on in class '
                             f'{split.class_name(c)!r} ({n} images)')
        perm = rng.permutation(n)
        held += [(c, int(i)) for i in np.sort(perm[:n_holdout])]
        train += [(c, int(i)) for i in np.sort(perm[n_holdout:])]
    return np.array(train, np.int64).reshape(-1, 2), np.array(held, np.int64).reshape(-1, 2)


def load_pairs(split, pairs):
    """float32 images [n, H, W, C] of (class, index) pairs."""
    x = np.empty((len(pairs),) + tuple(split.image_shape), np.float32)
    for c in np.unique(pairs[:, 0]):
        sel = np.flatnonzero(pairs[:, 0] == c)
        x[sel] = split.images(int(c), pairs[sel, 1])
    return x


# ---- population statistics of the BN layers -----------------------------------------------
def population_stats(net, x, batch_size=1000):
    """{BN layer: (mean, biased var)} of the BN inputs over all images x, layer by layer:
    layer l's with the layers before it normalised by their population statistics."""
    return embed.population_stats(lambda xb, norm: net.features(xb, norm=norm), list(net.bn_channels),
                                  lambda: (x[s:s + batch_size] for s in range(0, len(x), batch_size)),
                                  net.dtype)


def _compiled(fn):
    return tf.function(fn, reduce_retracing=True)


# ---- pretraining ---------------------------------------------------------------------------
def evaluate(net, x, y, batch_size, norm=None, rng=None):
    """(mean cross-entropy, accuracy) of the classifier on x, y. With norm None the forward
    uses batch statistics of mixed batches (shuffled with rng, as at training)."""
    order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))

    @_compiled
    def sums(xb, yb):
        logits = net(xb, norm=norm)
        hit = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), yb)
        return (tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits)),
                tf.reduce_sum(tf.cast(hit, tf.float32)))

    loss = correct = 0.
    for s in range(0, len(x), batch_size):
        idx = order[s:s + batch_size]
        l, c = sums(tf.constant(x[idx]), tf.constant(y[idx]))
        loss += float(l)
        correct += float(c)
    return loss / len(x), correct / len(x)


def pretrain(split, epochs=10, n_channel=64, batch_size=64, lr=1e-3, weight_decay=0., n_holdout=2,
             seed=0, eval_batch_size=500, log=print):
    """Trains a Conv4 classifier over every class of `split`. Returns (net, population BN
    statistics, report dict)."""
    rng = np.random.default_rng(seed)
    tf.random.set_seed(seed)
    tr_pairs, ho_pairs = holdout_split(split, n_holdout, rng)
    # Labels: the class ids themselves.
    x_tr = load_pairs(split, tr_pairs)
    y_tr = tr_pairs[:, 0].astype(np.int32)
    x_ho = load_pairs(split, ho_pairs)
    y_ho = ho_pairs[:, 0].astype(np.int32)

    net = backbones.build_backbone('conv4', split.n_classes, split.image_shape, n_channel=n_channel)
    variables = net.variables_to_meta_learn
    opt = Adam(variables, learning_rate=lr, weight_decay=weight_decay)

    @tf.function(reduce_retracing=True)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = net(x)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        opt.apply(tape.gradient(loss, variables))
        acc = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))
        return loss, acc

    eval_rng = np.random.default_rng(seed + 1)
    init_loss, init_acc = evaluate(net, x_tr, y_tr, batch_size, rng=eval_rng)
    log(f'pretrain: {split.n_classes} classes, {len(x_tr)} training / {len(x_ho)} held-out images, '
        f'Conv4 {n_channel} channels; initial training loss {init_loss:.4f}')
    history = []
    t0, c0 = time.perf_counter(), time.process_time()
    n_batches = len(x_tr) // batch_size  # drop the last partial batch (BN on a tiny batch)
    for epoch in range(1, epochs + 1):
        te = time.perf_counter()
        order = rng.permutation(len(x_tr))
        losses, accs = [], []
        for b in range(n_batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            loss, acc = step(tf.constant(x_tr[idx]), tf.constant(y_tr[idx]))
            losses.append(float(loss))
            accs.append(float(acc))
        ho_loss, ho_acc = evaluate(net, x_ho, y_ho, batch_size, rng=eval_rng)
        row = dict(epoch=epoch, train_loss=float(np.mean(losses)), train_acc=float(np.mean(accs)),
                   holdout_loss=ho_loss, holdout_acc=ho_acc, secs=time.perf_counter() - te)
        history.append(row)
        log(f'epoch {epoch}: train loss {row["train_loss"]:.4f} acc {row["train_acc"]:.4f}, '
            f'held-out (batch stats) loss {ho_loss:.4f} acc {ho_acc:.4f} ({row["secs"]:.1f} s)')
    train_secs, train_cpu_secs = time.perf_counter() - t0, time.process_time() - c0
    # The training images again, evaluated as before training (batch statistics of mixed
    # batches): the loss pretraining lowered, comparable with initial_train_loss.
    end_loss, end_acc = evaluate(net, x_tr, y_tr, batch_size, rng=eval_rng)

    ts = time.perf_counter()
    stats = population_stats(net, x_tr, eval_batch_size)
    pop = nets.GivenStats(stats)
    ho_pop = evaluate(net, x_ho, y_ho, eval_batch_size, norm=pop)
    tr_pop = evaluate(net, x_tr, y_tr, eval_batch_size, norm=pop)
    stats_secs = time.perf_counter() - ts
    log(f'population BN statistics ({stats_secs:.1f} s): held-out loss {ho_pop[0]:.4f} acc '
        f'{ho_pop[1]:.4f}, training loss {tr_pop[0]:.4f} acc {tr_pop[1]:.4f}')
    report = dict(
        n_classes=int(split.n_classes), n_train_images=int(len(x_tr)), n_holdout_images=int(len(x_ho)),
        initial_train_loss=init_loss, initial_train_acc=init_acc, history=history,
        final_train_loss=end_loss, final_train_acc=end_acc,
        holdout_acc_batch_stats=history[-1]['holdout_acc'] if history else None,
        holdout_acc=ho_pop[1], holdout_loss=ho_pop[0],
        train_acc_population_stats=tr_pop[1], train_loss_population_stats=tr_pop[0],
        train_secs=train_secs, train_cpu_secs=train_cpu_secs, stats_secs=stats_secs)
    return net, stats, report


# ---- embeddings ----------------------------------------------------------------------------
def embed_split(net, split, stats, bn_stats='population', batch_size=500):
    """float32 [n, D]: features of every image of `split`, class by class, drawing by
    drawing. bn_stats 'population': BN with the given population statistics (each image
    independent of the others); 'class': the batch statistics of all images of its class."""
    out = []
    if bn_stats == 'class':
        features = _compiled(lambda x: net.features(x))
        for c in range(split.n_classes):
            x = split.images(c, np.arange(int(split.counts[c])))
            out.append(features(tf.constant(x)).numpy())
    elif bn_stats == 'population':
        return embed.embed_split(lambda x, norm: net.features(x, norm=norm), split, stats,
                                 batch_size=batch_size)
    else:
        raise ValueError(f'unknown bn_stats {bn_stats!r}; choose population or class')
    return np.concatenate(out).astype(np.float32)


def run(ds, out, epochs=10, n_channel=64, batch_size=64, lr=1e-3, weight_decay=0., n_holdout=2,
        seed=0, bn_stats='population', probe_episodes=1000, settings=None, log=print):
    """Pretrains on ds.train, writes the three pickles and pretrain.json in `out`; returns
    the report dict."""
    os.makedirs(out, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    net, stats, report = pretrain(ds.train, epochs, n_channel, batch_size, lr, weight_decay,
                                  n_holdout, seed, log=log)
    te = time.perf_counter()
    splits = {}
    for name in SPLITS:
        split = getattr(ds, name)
        keys = make_keys(split)
        emb = embed_split(net, split, stats, bn_stats)
        write_pickle(os.path.join(out, f'{name}_embeddings.pkl'), emb, keys)
        info = dict(n_classes=int(split.n_classes), n_images=int(len(keys)),
                    images_per_class=sorted({int(n) for n in split.counts}),
                    shape=list(emb.shape))
        if probe_episodes and name != 'train':
            info.update(embed.probes(emb, split.counts, probe_episodes, seed))
        splits[name] = info
        log(f'{name}: {info}')
    report.update(
        settings=dict(settings or {}, epochs=epochs, n_channel=n_channel, batch_size=batch_size, lr=lr,
                      weight_decay=weight_decay, n_holdout=n_holdout, seed=seed, bn_stats=bn_stats,
                      backbone='conv4 (model/nets.py Conv4, metadrop variant)'),
        embedding_dim=int(net.feature_dim), splits=splits,
        embed_secs=time.perf_counter() - te, total_secs=time.perf_counter() - t0,
        total_cpu_secs=time.process_time() - c0,
        pickle_protocol=PICKLE_PROTOCOL,
        class_counts={name: int(getattr(ds, name).n_classes) for name in SPLITS},
        description=getattr(ds, 'description', None))
    embed.write_durably(os.path.join(out, 'pretrain.json'),
                        lambda f: f.write((json.dumps(report, indent=1) + '\n').encode()))
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data_root', required=True, help='holds omniglot/images_background_small{1,2}.zip')
    p.add_argument('--out', required=True, help='output folder (created)')
    p.add_argument('--source', default='small', help="load_dataset's omniglot source")
    p.add_argument('--test_alphabets', default='Korean,Tagalog')
    p.add_argument('--val_alphabets', default='Latin')
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--n_channel', type=int, default=64, help='Conv4 width = embedding dimension')
    p.add_argument('--batch_size', type=int, default=64)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--weight_decay', type=float, default=0.)
    p.add_argument('--n_holdout', type=int, default=2, help='drawings per class held out of training')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--bn_stats', default='population', choices=('population', 'class'))
    p.add_argument('--probe_episodes', type=int, default=1000,
                   help='nearest-centroid probe episodes on val/test (0: none)')
    a = p.parse_args(argv)
    from data.datasets import load_dataset
    split_of = lambda s: [v for v in s.split(',') if v]  # noqa: E731
    ds = load_dataset('omniglot', a.data_root, source=a.source, test_alphabets=split_of(a.test_alphabets),
                      val_alphabets=split_of(a.val_alphabets))
    print(ds.description, flush=True)
    settings = dict(data_root=a.data_root, source=a.source, test_alphabets=split_of(a.test_alphabets),
                    val_alphabets=split_of(a.val_alphabets), cpu_count=os.cpu_count())
    report = run(ds, a.out, a.epochs, a.n_channel, a.batch_size, a.lr, a.weight_decay, a.n_holdout,
                 a.seed, a.bn_stats, a.probe_episodes, settings,
                 log=lambda s: print(s, flush=True))
    print(f'embedding dim {report["embedding_dim"]}, held-out accuracy {report["holdout_acc"]:.4f} '
          f'(population BN statistics), pretraining {report["train_secs"]:.0f} s, total '
          f'{report["total_secs"]:.0f} s wall, {report["total_cpu_secs"]:.0f} s CPU; wrote {a.out}')


if __name__ == '__main__':
    main()
