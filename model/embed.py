"""`--mode embed`: LEO's embedding files from a trained image backbone.

    python main.py --model maml --mode embed --savedir RUN --dataset omniglot ... \
        [--embed_dir DIR] [--embed_crops center,multiview] [--embed_batch_size 100]
    python main.py --model leo --dataset leo_custom --data_path DIR ...

deepmind/leo reads pre-computed features and never released the code that made them (leo
issue #6); its paper (appendix B.2) describes a WRN-28-10 trained as a plain classifier on
the meta-train classes, whose penultimate features (640-d, after the global average pool)
are the embeddings. This module writes such files from any checkpoint of this project that
has an image backbone, for any image dataset it reads:

- MAML, first-order MAML, Meta-SGD (model.net), Meta-Dropout (model.net with its
  deterministic perturbation, the noise-free z = alpha of --mode export's features; none
  with --maml) and Bayesian TAML (its Conv4 at the meta-learned theta; the task-conditioned
  z, omega and gamma need a task and are not applied): the meta-learned initialisation,
  before any inner step, restored from <savedir> as meta_test restores it;
- MTL: the meta-trained model (backbone with its scaling and shifting) when <savedir> holds
  a model-<i> checkpoint, else the pre-training snapshot weights-<--pre_iter> (-1: the
  newest) of --pretrain_dir (the backbone alone): `--model mtl --backbone_arch wrn28_10
  --mode pretrain` then `--mode embed` is LEO's pipeline.

The layer: always the input of the classifier head, i.e. the penultimate features, as
LEO's are on its WRN (after the last BN-ReLU and the global average pool, 640-d):
  conv4 / convnet4 / wide_convnet4 / maml_conv4 with max-pool: the 4th block's output,
    flattened (64-d on 28x28 Omniglot with 64 channels, 800-d on 84x84 with 32);
  maml_conv4 on Omniglot (stride-2 convs): the spatial mean of the 4th block (64-d);
  resnet12 / resnet18 (PyTorch-MAML's): the global average pool of the last stage;
  MTL resnet12 / resnet18: the final average pool (512-d);
  wrn28_10: BN-ReLU after the third group, global average pool (640-d).

Batch norm in inference form: every BN layer normalises with population statistics of its
input over the images of the meta-train split, as the network saw them in training (whole
images; crops at embedding time use the same statistics, as a network in inference mode
uses its running statistics for any input), computed layer by layer (layer l's with the
layers before it already normalised by theirs) and exact (float64 sums over all of them).
Nothing of val/test enters them, nothing is per class, and an image's embedding does not
depend on the other images of its batch. The forward up to layer l runs once per BN layer, about
L/2 passes over the meta-train split; `embed_stats_images` N (a config attribute, 0 = all)
uses the first ceil(N / classes) images of every meta-train class instead. Layer norm (MTL's --norm layer_norm) is per image
and needs none.

Crops (--embed_crops, comma-separated, each `center` or `multiview`, optionally `:<side>`):
LEO ships `center` and `multiview` files; its code shows only that a multiview file has one
row per image (keys unique per image file), so its views were combined per image. The 80x80
crop of the 84x84 images is our reading of its paper's appendix B.2 (the originals here do
not state a crop size). Here a crop of side c (default: LEO's 4-pixel margin
in 84 scaled to the image, c = side - max(1, round(4 side / 84)): 80 at 84, 27 at 28, 30 at
32) is resized back to the network's input side (bilinear; the network was trained on whole
images of that size); `center` embeds the centre crop, `multiview` the mean of the
embeddings of ten views: the centre and four corner crops and their horizontal mirrors
(the classic ten-crop test; our reading of "multiview", which the originals do not define).
`center:<side>` with side = the image side embeds the whole image. multiview needs c
smaller than the image (its five crops would coincide otherwise).

Output, in --embed_dir (default <savedir>/embeddings): the first crop's files in the folder
itself (what `--model leo --dataset leo_custom --data_path DIR` reads), every further
crop's in DIR/<crop>/:
  <split>_embeddings.pkl  pickle protocol 2 of {'embeddings': float32 [n, D], 'keys': str
      array [n]} (deepmind/leo's layout); keys '<i>-<label>-<label>_<k>.png' with the class
      name made a LEO label (every character outside [A-Za-z0-9.()] -> '.': LEO splits keys
      on '-' and file names on '_'), k the image's index in its class; classes contiguous,
      in the split's order;
  <split>_embeddings.npz  the same arrays as data/leo.py converts them (with the pickle's
      size and mtime), so the reader loads the npz and never unpickles;
  embed.json  settings, checkpoint, feature layer, per split and crop the shape and counts,
      BN statistics summary, timings, and nearest-centroid probes (cosine on L2-normalised
      embeddings, as LEO normalises them) on 5-way 1-shot and 5-shot val/test episodes.
Every file is written to a temporary name, flushed (fsync), renamed, and the folder flushed.
Embeddings are stored raw: LEO L2-normalises them itself.
"""
import json
import os
import pickle
import re
import tempfile
import time
from typing import Callable, List, NamedTuple

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from data import leo as leo_data
from model import crops, nets
from model.crops import CROPS, Crop, default_side  # noqa: F401  (part of embed's API)
from model.runner import RunError, fsync_path

SPLITS = ('train', 'val', 'test')
PICKLE_PROTOCOL = 2          # deepmind/leo's files were written by Python 2
EMBED_DIR = 'embeddings'     # under the savedir, by default
EMBED_JSON = 'embed.json'
PROBE_EPISODES = 1000
PROBE_WAY = 5
UMASK = os.umask(0o022)
os.umask(UMASK)


# ---- LEO's keys ----------------------------------------------------------------------------
def class_label(name):
    """A class name as a LEO class label: no '-' (key separator) and no '_' (file-name
    separator); everything outside [A-Za-z0-9.()] becomes '.'."""
    return re.sub(r'[^A-Za-z0-9.()]', '.', str(name))


def class_labels(split):
    """The labels of every class of `split`, checked unique (two names that sanitise to
    the same label would merge classes in LEO's index)."""
    labels = [class_label(split.class_name(c)) for c in range(split.n_classes)]
    if len(set(labels)) != len(labels):
        seen, dup = set(), []
        for c, lab in enumerate(labels):
            if lab in seen:
                dup.append(f'{split.class_name(c)!r} -> {lab!r}')
            seen.add(lab)
        raise ValueError('class names collide once sanitised for LEO keys: ' + '; '.join(dup[:5]))
    return labels


def make_keys(split):
    """numpy str array of the keys of every image of `split`, class by class, image by
    image (the order the embeddings are written in)."""
    keys, i = [], 0
    for c, lab in enumerate(class_labels(split)):
        for k in range(int(split.counts[c])):
            keys.append(f'{i}-{lab}-{lab}_{k}.png')
            i += 1
    return np.array(keys, dtype=str)


# ---- durable writes ------------------------------------------------------------------------
def write_durably(path, write):
    """Calls write(binary file) on a temporary file beside `path`, flushes it to the disk,
    renames it into place and flushes the folder: a crash leaves the old file or the new
    one, never a partial one."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~UMASK)   # mkstemp's 0600 -> what open() would have given
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    fsync_path(folder)


def write_embeddings(folder, split, embeddings, keys):
    """<split>_embeddings.pkl (LEO's layout) and the npz data/leo.py reads in its place.
    Returns the two paths."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    keys = np.asarray(keys, dtype=str)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(keys):
        raise ValueError(f'{len(keys)} keys for embeddings of shape {embeddings.shape}')
    os.makedirs(folder, exist_ok=True)
    pkl = os.path.join(folder, f'{split}_embeddings.pkl')
    write_durably(pkl, lambda f: pickle.dump({'embeddings': embeddings, 'keys': keys}, f,
                                             protocol=PICKLE_PROTOCOL))
    # The reader takes the npz when it records this very pickle (size, mtime in ns; a
    # rename keeps the mtime), and converts again otherwise.
    st = os.stat(pkl)
    npz = str(leo_data.npz_path(pkl))
    write_durably(npz, lambda f: np.savez(
        f, embeddings=embeddings, keys=keys, source_size=np.int64(st.st_size),
        source_mtime_ns=np.int64(st.st_mtime_ns), version=np.int64(leo_data.NPZ_VERSION)))
    return pkl, npz


# ---- crops (model/crops.py) ---------------------------------------------------------------
def parse_crops(spec, image_shape):
    """--embed_crops for images of image_shape -> [Crop]; RunError naming what is wrong."""
    try:
        return crops.parse_crops(spec, image_shape)
    except ValueError as e:
        raise RunError(str(e)) from None


def crop_offsets(kind, height, width, side):
    """(top, left) of each crop: the centre (torchvision's CenterCrop rounding), then for
    multiview the four corners."""
    centre = (int(round((height - side) / 2.)), int(round((width - side) / 2.)))
    if kind == 'center':
        return [centre]
    return [centre, (0, 0), (0, width - side), (height - side, 0), (height - side, width - side)]


def views(x, crop):
    """The views of a batch x [B, H, W, C] the crop averages: each crop resized back to
    H x W (no resize when it is the whole image), and for multiview its mirror too."""
    height, width = int(x.shape[1]), int(x.shape[2])
    out = []
    for top, left in crop_offsets(crop.kind, height, width, crop.side):
        v = x[:, top:top + crop.side, left:left + crop.side, :]
        if (crop.side, crop.side) != (height, width):
            v = tf.image.resize(v, [height, width], method='bilinear')
        out.append(v)
        if crop.kind == 'multiview':
            out.append(v[:, :, ::-1, :])
    return out


# ---- the feature extractor of a checkpoint -------------------------------------------------
class Extractor(NamedTuple):
    features: Callable       # (images, norm) -> [B, D]; norm a nets norm callable
    bn_layers: List[str]     # the batch-norm layers, in forward order
    checkpoint: str          # what was restored
    layer: str               # which features, for embed.json
    dtype: tf.DType


def _restore_failure(path, e):
    return RunError(f'cannot restore {path} into this --model/--backbone: '
                    f'{" ".join(str(e).split())[:300]}')


def extractor(runner):
    """The penultimate-feature function of the runner's trained model (see the module
    docstring), with its checkpoint restored."""
    cfg, model = runner.cfg, runner.model
    if not hasattr(model, 'net') and not hasattr(runner, 'load_pretrained'):
        raise RunError(f'--mode embed needs an image backbone; --model {cfg.model} has none')
    if hasattr(runner, 'load_pretrained'):   # MTL: its meta-trained model or its snapshot
        path, notes = runner.restore()
        for note in notes:
            runner.log(f'warning: {note}')
        backbone = model.backbone
        ss = model.ss if path else None
        if path is None:
            try:
                runner.load_pretrained()
            except (AssertionError, ValueError, tf.errors.OpError) as e:
                raise _restore_failure(f'the pre-training snapshot in {cfg.pretrain_dir or cfg.savedir}', e)
            path = runner.pretrained_path
            what = 'the pre-trained backbone (no scaling and shifting)'
        else:
            what = 'the meta-trained backbone with its scaling and shifting'
        return Extractor(lambda x, norm: backbone.features(x, ss=ss, stats=norm),
                         list(backbone.bn_layers), path,
                         f'MTL {backbone.arch}: the {backbone.feature_dim}-d average pool of '
                         f'{what}', tf.float32)
    path = runner.restore_for_test()
    net = model.net
    hook = model.noise_hook(False) if hasattr(model, 'noise_hook') else None
    name = type(net).__name__
    pooled = getattr(net, 'max_pool', False) is False and name == 'Conv4'
    layer = (f'{cfg.model} {name}: the {net.feature_dim}-d input of the classifier head '
             + ('(spatial mean of the 4th block)' if pooled else
                '(4th block, flattened)' if name == 'Conv4' else '(global average pool)')
             + (' with the noise-free perturbation softplus(alpha)' if hook else '')
             + ', at the meta-learned initialisation theta')
    return Extractor(lambda x, norm: net.features(x, None, pre_bn=hook, norm=norm),
                     list(net.bn_channels), path, layer, net.dtype)


# ---- population statistics -----------------------------------------------------------------
class _Sums:
    """norm callable: the given statistics for the layers in `stats`; at layer `target` it
    keeps the per-channel sums of x and x^2 (in float64) and the number of values, and
    normalises with the batch's own moments (what follows is not used)."""

    def __init__(self, stats, target):
        self.stats, self.target = stats, target
        self.sums = None

    def __call__(self, x, name):
        if name in self.stats:
            return self.stats[name]
        if name == self.target:
            x64 = tf.cast(x, tf.float64)
            axes = list(range(x.shape.rank - 1))
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float64)
            self.sums = (tf.reduce_sum(x64, axes), tf.reduce_sum(tf.square(x64), axes), count)
        return nets.moments(x)


def population_stats(features, layers, batches, dtype=tf.float32, bar=None):
    """{BN layer: (mean, biased var)} of each layer's input over every image `batches()`
    yields (called once per layer), layer by layer: layer l's with the layers before it
    normalised by their population statistics. `features(x, norm)` is the forward."""
    stats = {}
    for layer in layers:
        norm = _Sums(stats, layer)

        @tf.function(reduce_retracing=True)
        def sums(xb):
            features(xb, norm)   # the unused rest of the forward is pruned
            return norm.sums

        s1 = s2 = count = 0.
        for xb in batches():
            a, b, n = (v.numpy() for v in sums(tf.constant(xb)))
            s1, s2, count = s1 + a, s2 + b, count + n
            if bar is not None:
                bar.update(1)
        mean = s1 / count
        var = np.maximum(s2 / count - mean ** 2, 0.)
        stats[layer] = (tf.constant(mean, dtype), tf.constant(var, dtype))
    return stats


# ---- embedding -----------------------------------------------------------------------------
def split_batches(split, batch_size, per_class=None):
    """float32 image batches of every image of `split` (or the first `per_class` of each
    class), class by class, image by image."""
    pending, n = [], 0
    for c in range(split.n_classes):
        count = int(split.counts[c]) if per_class is None else min(per_class, int(split.counts[c]))
        x = split.images(c, np.arange(count))
        while len(x):
            take = x[:batch_size - n]
            pending.append(take)
            n += len(take)
            x = x[len(take):]
            if n == batch_size:
                yield np.concatenate(pending)
                pending, n = [], 0
    if pending:
        yield np.concatenate(pending)


def n_images(split, per_class=None):
    counts = np.asarray(split.counts)
    return int(np.sum(counts if per_class is None else np.minimum(counts, per_class)))


def n_batches(split, batch_size, per_class=None):
    return -(-n_images(split, per_class) // batch_size)


def stats_per_class(split, stats_images):
    """How many images of each meta-train class the statistics use: all (stats_images 0),
    else the first ceil(stats_images / classes) of every class (every class, no sampling)."""
    if not stats_images:
        return None
    return max(1, -(-int(stats_images) // split.n_classes))


def embed_split(features, split, stats, crop=None, batch_size=100, bar=None):
    """float32 [n, D]: the features of every image of `split` (class by class) with BN
    statistics `stats` (a dict, or a nets norm callable; None: the batch's own); with a
    crop, the mean over its views."""
    norm = stats if stats is None or callable(stats) else nets.GivenStats(stats)

    @tf.function(reduce_retracing=True)
    def embed_batch(x):
        if crop is None:
            return features(x, norm)
        vs = views(x, crop)
        return tf.add_n([features(v, norm) for v in vs]) / len(vs)

    out = []
    for xb in split_batches(split, batch_size):
        out.append(embed_batch(tf.constant(xb)).numpy())
        if bar is not None:
            bar.update(1)
    return np.concatenate(out).astype(np.float32)


def centroid_probe(embeddings, counts, way=PROBE_WAY, shot=1, query=15, n_episodes=PROBE_EPISODES,
                   seed=0):
    """Mean accuracy and 95% interval of nearest-centroid classification (cosine, on the
    L2-normalised embeddings) over random way-way shot-shot episodes."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    accs = []
    for _ in range(n_episodes):
        classes = rng.choice(len(counts), way, replace=False)
        sup, qry = [], []
        for c in classes:
            idx = starts[c] + rng.choice(int(counts[c]), shot + query, replace=False)
            sup.append(e[idx[:shot]])
            qry.append(e[idx[shot:]])
        protos = np.stack([s.mean(0) for s in sup])
        protos /= np.maximum(np.linalg.norm(protos, axis=1, keepdims=True), 1e-12)
        q = np.concatenate(qry)
        pred = np.argmax(q @ protos.T, axis=1)
        accs.append(np.mean(pred == np.repeat(np.arange(way), query)))
    accs = np.array(accs)
    return float(accs.mean()), float(1.96 * accs.std() / np.sqrt(len(accs)))


def probes(embeddings, counts, n_episodes=PROBE_EPISODES, seed=0):
    """{'centroid_5way_<K>shot': {...}} for K = 1, 5 where the split has the classes and
    images (queries: min(15, smallest class - K))."""
    out = {}
    counts = np.asarray(counts)
    for shot in (1, 5):
        query = min(15, int(counts.min()) - shot)
        if n_episodes and query >= 1 and len(counts) >= PROBE_WAY:
            m, ci = centroid_probe(embeddings, counts, PROBE_WAY, shot, query, n_episodes, seed)
            out[f'centroid_{PROBE_WAY}way_{shot}shot'] = dict(accuracy=m, ci95=ci, query=query,
                                                              episodes=n_episodes)
    return out


def crop_folder(out, crops, crop):
    """The first crop's files go in `out` itself (leo_custom's --data_path), the others in
    out/<crop>/."""
    return out if crop == crops[0] else os.path.join(out, crop.name)


def embed(runner, probe_episodes=PROBE_EPISODES):
    """--mode embed (see the module docstring); returns the embed.json record."""
    cfg = runner.cfg
    ds = runner.dataset
    crops = parse_crops(getattr(cfg, 'embed_crops', 'center'), ds.image_shape)
    batch_size = int(getattr(cfg, 'embed_batch_size', 100))
    if batch_size < 1:
        raise RunError(f'--embed_batch_size must be a positive integer, got {batch_size}')
    if ds.train is None:
        raise RunError(f'--dataset {cfg.dataset} has no meta-train split, from which the '
                       'batch-norm statistics of the embeddings are computed; embed an '
                       'in-distribution dataset')
    out = getattr(cfg, 'embed_dir', '') or os.path.join(cfg.savedir, EMBED_DIR)
    progress = getattr(cfg, 'progress', True)
    t0, c0 = time.perf_counter(), time.process_time()
    ex = extractor(runner)
    runner.log(f'embed: {ex.layer}; checkpoint {ex.checkpoint}')
    try:
        keys = {s: make_keys(ds.split(s)) for s in SPLITS}
    except ValueError as e:
        raise RunError(str(e)) from None
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise RunError(f'cannot create --embed_dir {out}: {e.strerror}') from None

    ts = time.perf_counter()
    # Exact over every meta-train image by default; the forward up to layer l runs once per
    # BN layer l (about L/2 passes), so deep backbones may cap it (--embed_stats_images).
    per_class = stats_per_class(ds.train, getattr(cfg, 'embed_stats_images', 0))
    with tqdm(total=len(ex.bn_layers) * n_batches(ds.train, batch_size, per_class),
              desc='embed: BN statistics', disable=not progress, leave=False) as bar:
        stats = population_stats(ex.features, ex.bn_layers,
                                 lambda: split_batches(ds.train, batch_size, per_class), ex.dtype,
                                 bar)
    stats_secs = time.perf_counter() - ts

    results, files = {}, {}
    total = sum(n_batches(ds.split(s), batch_size) for s in SPLITS) * len(crops)
    with tqdm(total=total, desc='embed', disable=not progress) as bar:
        for crop in crops:
            folder = crop_folder(out, crops, crop)
            per_split = {}
            for s in SPLITS:
                split = ds.split(s)
                bar.set_description(f'embed: {crop.name} {s}')
                emb = embed_split(ex.features, split, stats, crop, batch_size, bar)
                pkl, npz = write_embeddings(folder, s, emb, keys[s])
                files.setdefault(crop.name, {})[s] = [os.path.relpath(pkl, out),
                                                      os.path.relpath(npz, out)]
                info = dict(shape=list(emb.shape), n_classes=int(split.n_classes),
                            n_images=int(len(emb)),
                            images_per_class=sorted({int(n) for n in split.counts}))
                if s != 'train':
                    info.update(probes(emb, split.counts, probe_episodes, cfg.seed))
                per_split[s] = info
            results[crop.name] = dict(side=crop.side, folder=os.path.relpath(folder, out),
                                      views=1 if crop.kind == 'center' else 10,
                                      splits=per_split)
            probe = per_split['test'].get(f'centroid_{PROBE_WAY}way_1shot')
            if probe:
                runner.log(f'embed: {crop.name} ({crop.side}x{crop.side}) test 5-way 1-shot '
                           f'nearest-centroid accuracy {100 * probe["accuracy"]:.2f} +- '
                           f'{100 * probe["ci95"]:.2f} %')
    record = dict(
        model=cfg.model, dataset=cfg.dataset, dataset_description=ds.description,
        trained_dataset=getattr(runner, 'trained_dataset', None) or cfg.dataset,
        test_dataset=cfg.dataset,
        image_shape=[int(v) for v in ds.image_shape], checkpoint=ex.checkpoint,
        feature_layer=ex.layer, embedding_dim=int(next(iter(results.values()))['splits']['train']['shape'][1]),
        batch_norm=dict(statistics='population, meta-train split only', layers=len(ex.bn_layers),
                        images=n_images(ds.train, per_class),
                        images_per_class=per_class or 'all'),
        crops=results, files=files, val_is_test=bool(ds.val_is_test),
        settings=dict(embed_dir=out, embed_crops=[f'{c.kind}:{c.side}' for c in crops],
                      embed_batch_size=batch_size, seed=cfg.seed, probe_episodes=probe_episodes,
                      pickle_protocol=PICKLE_PROTOCOL),
        read_with=f'python main.py --model leo --dataset leo_custom --data_path {out}',
        stats_secs=stats_secs, total_secs=time.perf_counter() - t0,
        total_cpu_secs=time.process_time() - c0)
    write_durably(os.path.join(out, EMBED_JSON),
                  lambda f: f.write((json.dumps(record, indent=1) + '\n').encode()))
    runner.log(f'embed: wrote {", ".join(results)} embeddings of {cfg.dataset} '
               f'({record["embedding_dim"]}-d) in {out} ({record["total_secs"]:.0f} s)')
    return record
