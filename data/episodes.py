"""Class splits and the N-way K-shot episode sampler (numpy only, no TensorFlow).

The sampler follows metadrop's data.py `generate_episode`: per task, `way` classes are
drawn without replacement (their order defines labels 0..way-1), then `shot + query`
images per class without replacement; the first `shot` images form the support set and
the rest the query set. Both sets are class-major and not shuffled.

metadrop draws the class set only once per call and reuses it for every task of the
metabatch (fidelity sheet 4.3). That bug is reproducible with `reuse_classes=True`; the
default draws classes for each task independently.

`ImbalancedSampler` is Bayesian TAML's episode generator (l2b data.py `generate_episode`):
the shot varies per task (task imbalance) and/or per class (class imbalance), and support
sets are padded to a common length within the metabatch with zero images and label -1.
"""
import operator
from typing import NamedTuple, Optional, Sequence

import numpy as np


class Episode(NamedTuple):
    """A metabatch of T tasks. Labels are class-major: `shot` copies of 0, then of 1, ..."""
    xs: np.ndarray  # float32 [T, way*shot, *image_shape]   support images ([T, way*shot, D] for features)
    ys: np.ndarray  # int32   [T, way*shot]
    xq: np.ndarray  # float32 [T, way*query, *image_shape]  query images
    yq: np.ndarray  # int32   [T, way*query]


class EpisodeSizeError(ValueError):
    """An episode asks for more classes or images than a split has (message has the numbers)."""


class ClassSplit:
    """One split (train/val/test) of a dataset: a list of classes, each a set of images.

    Args:
      images: one array [n_classes, n_per_class, H, W, C] (may be a read-only memmap) or a
        list of arrays [n_i, *image_shape] (classes of different sizes), where image_shape
        is (H, W, C) for images or (D,) for feature vectors such as LEO's embeddings; every
        class has the same image_shape. An "image" below is one such row.
      names: optional names of the stored classes, e.g. 'Korean/character07'.
      rotations: expose 4 classes per stored class; class id c is stored class c // 4
        rotated counter-clockwise by (c % 4) * 90 degrees (np.rot90 on the H, W axes; only
        for square images).
        This is the char1@0,90,180,270, char2@0,... layout the metadrop npy files are
        believed to use.
      scale: multiplier applied when images are read. Default: 1/255 for uint8 storage,
        none (values used as stored) for float storage.
      name, dataset: only used in messages, e.g. "the 'test' split of omniglot".
    """

    def __init__(self, images, names: Optional[Sequence[str]] = None, rotations: bool = False,
                 scale: Optional[float] = None, name: str = 'train', dataset: str = 'omniglot'):
        self.name = name
        self.dataset = dataset
        self.rotations = bool(rotations)
        if isinstance(images, np.ndarray):
            if images.ndim != 5:
                raise ValueError(f'images of the {self._where()} must be an array [n_classes, n_per_class, '
                                 f'H, W, C] or a list of [n, H, W, C] arrays; got shape {images.shape}')
            self._stacked = images
            self._classes = None
            n_stored = images.shape[0]
            stored_counts = np.full(n_stored, images.shape[1], dtype=np.int64)
            shape = tuple(int(s) for s in images.shape[2:])
            dtype = images.dtype
        else:
            classes = list(images)
            if not classes:
                raise ValueError(f'the {self._where()} has no classes')
            shapes = {tuple(np.shape(a)[1:]) for a in classes}
            # Any rank >= 2: [n, H, W, C] images, or [n, D] feature vectors (LEO's embeddings).
            if any(np.ndim(a) < 2 for a in classes) or len(shapes) != 1:
                raise ValueError(f'classes of the {self._where()} must be arrays [n, H, W, C] (or [n, D] '
                                 f'features) of one image shape; got shapes '
                                 f'{sorted({np.shape(a) for a in classes})[:5]}')
            dtypes = {np.asarray(a).dtype for a in classes}
            if len(dtypes) != 1:
                raise ValueError(f'classes of the {self._where()} mix dtypes {sorted(map(str, dtypes))}')
            self._stacked = None
            self._classes = [np.asarray(a) for a in classes]
            n_stored = len(classes)
            stored_counts = np.array([len(a) for a in classes], dtype=np.int64)
            shape = shapes.pop()
            dtype = dtypes.pop()
        if self.rotations and (len(shape) < 2 or shape[0] != shape[1]):
            raise ValueError(f'rotations need square images, the {self._where()} has {shape}')
        if names is not None:
            names = [str(n) for n in names]
            if len(names) != n_stored:
                raise ValueError(f'{len(names)} names for {n_stored} stored classes in the {self._where()}')
        self._names = names
        if scale is None and dtype == np.uint8:
            scale = 255.0  # stored as divisor so uint8 reads are exactly x / 255
            self._divide = True
        else:
            self._divide = False
        self._scale = None if scale is None else np.float32(scale)
        self.n_stored = n_stored
        self.image_shape = shape
        self.n_classes = n_stored * 4 if self.rotations else n_stored
        self.counts = np.repeat(stored_counts, 4) if self.rotations else stored_counts

    def _where(self):
        return f"'{self.name}' split of {self.dataset}"

    def __len__(self):
        return self.n_classes

    def __repr__(self):
        return (f'ClassSplit({self._where()}: {self.n_classes} classes, images {self.image_shape}, '
                f'{int(self.counts.min())}..{int(self.counts.max())} per class'
                f'{", 4 rotations per stored class" if self.rotations else ""})')

    def _stored(self, c):
        c = operator.index(c)
        if not 0 <= c < self.n_classes:
            raise IndexError(f'class {c} out of range for the {self._where()} ({self.n_classes} classes)')
        return (c // 4, c % 4) if self.rotations else (c, 0)

    def _to_float(self, raw):
        out = raw.astype(np.float32)
        if self._scale is not None:
            if self._divide:
                out /= self._scale
            else:
                out *= self._scale
        return out

    def class_name(self, c) -> str:
        s, k = self._stored(c)
        base = self._names[s] if self._names is not None else f'class{s:04d}'
        return f'{base}@rot{90 * k}' if self.rotations else base

    def images(self, c, idx) -> np.ndarray:
        """float32 [len(idx), *image_shape]: images `idx` of (virtual) class `c`."""
        return self.gather(np.array([c]), np.asarray(idx, dtype=np.int64)[None])[0]

    def gather(self, classes, idx) -> np.ndarray:
        """float32 [M, n, *image_shape]: for each of the M classes, its images idx[m] (idx: [M, n])."""
        classes = np.asarray(classes, dtype=np.int64)
        idx = np.asarray(idx, dtype=np.int64)
        if classes.ndim != 1 or idx.ndim != 2 or idx.shape[0] != classes.shape[0]:
            raise ValueError(f'gather needs classes [M] and idx [M, n]; got {classes.shape} and {idx.shape}')
        if classes.size and (classes.min() < 0 or classes.max() >= self.n_classes):
            raise IndexError(f'class ids out of range for the {self._where()} ({self.n_classes} classes)')
        if idx.size and (idx.min() < 0 or (idx >= self.counts[classes][:, None]).any()):
            raise IndexError(f'image indices out of range for the {self._where()}')
        if self.rotations:
            stored, rot = classes // 4, classes % 4
        else:
            stored, rot = classes, np.zeros_like(classes)
        if self._stacked is not None:
            # One fancy-indexing read; on a memmap it touches only the requested images.
            raw = self._stacked[stored[:, None], idx]
        else:
            raw = np.stack([self._classes[s][i] for s, i in zip(stored, idx)]) if len(stored) else \
                np.zeros((0, idx.shape[1]) + self.image_shape, self._classes[0].dtype)
        out = self._to_float(raw)
        for k in (1, 2, 3):
            sel = rot == k
            if sel.any():
                out[sel] = np.rot90(out[sel], k, axes=(2, 3))
        return out


def _positive_int(value, what):
    try:
        v = operator.index(value)
    except TypeError:
        raise EpisodeSizeError(f'{what} must be an integer, got {value!r}') from None
    if v < 1:
        raise EpisodeSizeError(f'{what} must be at least 1, got {v}')
    return v


class EpisodeSampler:
    """Draws metabatches of N-way (`way`), K-shot (`shot`) tasks with `query` query images per class.

    reuse_classes=True reproduces metadrop's bug: the classes (and label order) drawn for the
    first task of a `sample` call are used for all its tasks; images are still drawn per task.
    """

    def __init__(self, split: ClassSplit, way, shot, query, reuse_classes: bool = False):
        self.split = split
        self.way = _positive_int(way, 'way')
        self.shot = _positive_int(shot, 'shot')
        self.query = _positive_int(query, 'query')
        self.reuse_classes = bool(reuse_classes)
        where = split._where()
        if self.way > split.n_classes:
            raise EpisodeSizeError(
                f'way {self.way} is larger than the {split.n_classes} classes of the {where}; '
                f'use --way {split.n_classes} or fewer')
        need = self.shot + self.query
        smallest = int(split.counts.min())
        if need > smallest:
            raise EpisodeSizeError(
                f'shot {self.shot} + query {self.query} = {need} images per class, but the smallest class '
                f'of the {where} has {smallest} images; use shot + query <= {smallest}')

    def __repr__(self):
        return (f'EpisodeSampler({self.way}-way {self.shot}-shot, {self.query} query, '
                f'reuse_classes={self.reuse_classes}, {self.split!r})')

    def sample(self, rng: np.random.Generator, n_tasks: int, classes=None) -> Episode:
        """Draws `n_tasks` tasks. `classes` (way ids) fixes the classes of every task, in order,
        as metadrop's export does; by default they are drawn (see reuse_classes)."""
        return self.episode(*self.draw_ids(rng, n_tasks, classes))

    def draw_ids(self, rng: np.random.Generator, n_tasks: int, classes=None):
        """The random part of `sample`: class ids [T, way] and image ids [T, way, shot+query].

        rng: a Generator (or a seed for one), or a legacy np.random.RandomState, which is used
        as it is: its choice(n, k, replace=False) is metadrop's np.random.choice(range(n), k,
        replace=False), so the same RandomState state gives metadrop's classes and images
        (tests/golden/test_metadrop.py)."""
        if not isinstance(rng, np.random.RandomState):
            rng = np.random.default_rng(rng)  # a Generator is passed through unchanged
        n_tasks = _positive_int(n_tasks, 'n_tasks')
        way, shot, query = self.way, self.shot, self.query
        if classes is not None:
            classes = np.asarray(classes, dtype=np.int64)
            if classes.shape != (way,) or len(set(classes.tolist())) != way:
                raise EpisodeSizeError(f'classes must be {way} distinct class ids, got {classes.tolist()}')
            if classes.min() < 0 or classes.max() >= self.split.n_classes:
                raise EpisodeSizeError(f'class ids must be in 0..{self.split.n_classes - 1}, '
                                       f'got {classes.tolist()}')
        counts = self.split.counts
        task_classes = np.empty((n_tasks, way), dtype=np.int64)
        task_images = np.empty((n_tasks, way, shot + query), dtype=np.int64)
        task_cls = classes
        for t in range(n_tasks):
            # Same draw order as metadrop: the classes of the task, then the images class by class.
            if classes is None and (t == 0 or not self.reuse_classes):
                task_cls = rng.choice(self.split.n_classes, way, replace=False)
            task_classes[t] = task_cls
            for j, c in enumerate(task_cls):
                task_images[t, j] = rng.choice(counts[c], shot + query, replace=False)
        return task_classes, task_images

    def episode(self, task_classes, task_images) -> Episode:
        """Reads the images of `draw_ids` output into an Episode."""
        task_classes = np.asarray(task_classes, dtype=np.int64)
        task_images = np.asarray(task_images, dtype=np.int64)
        n_tasks, way = task_classes.shape
        shot, query = self.shot, self.query
        if way != self.way or task_images.shape != (n_tasks, way, shot + query):
            raise EpisodeSizeError(f'ids of shape {task_classes.shape} / {task_images.shape} do not fit a '
                                   f'{self.way}-way {shot}-shot {query}-query sampler')
        shape = self.split.image_shape
        x = self.split.gather(task_classes.reshape(-1), task_images.reshape(n_tasks * way, shot + query))
        x = x.reshape((n_tasks, way, shot + query) + shape)
        xs = x[:, :, :shot].reshape((n_tasks, way * shot) + shape)
        xq = x[:, :, shot:].reshape((n_tasks, way * query) + shape)
        ys = np.tile(np.repeat(np.arange(way, dtype=np.int32), shot), (n_tasks, 1))
        yq = np.tile(np.repeat(np.arange(way, dtype=np.int32), query), (n_tasks, 1))
        return Episode(np.ascontiguousarray(xs), ys, np.ascontiguousarray(xq), yq)


IMBALANCE_MODES = ('mixed', 'class', 'task', 'none')


class EpisodeIds(NamedTuple):
    """The random part of an imbalanced metabatch (ImbalancedSampler.draw_ids)."""
    classes: np.ndarray          # int64 [T, way]            class ids; label j = column j
    shots: np.ndarray            # int64 [T, way]            support size per class, after clipping
    support: np.ndarray          # int64 [T, way, max_shot]  image ids, -1 beyond shots[t, j]
    query: np.ndarray            # int64 [T, way, query]     image ids
    class_imbalanced: np.ndarray  # bool [T]  shots drawn per class ('class', or 'mixed' with coin > 0.5)


def support_mask(ys) -> np.ndarray:
    """bool [T, maxlen]: True on real support rows, False on padding (label -1)."""
    return np.asarray(ys) >= 0


def support_counts(ys, way) -> np.ndarray:
    """int64 [T, way]: real support rows of each label per task (padding, label -1, is not counted)."""
    ys = np.asarray(ys)
    way = _positive_int(way, 'way')
    if ys.ndim != 2:
        raise ValueError(f'support_counts needs labels [T, maxlen], got shape {ys.shape}')
    if ys.size and ys.max() >= way:
        raise ValueError(f'label {int(ys.max())} is out of range for way {way}')
    return (ys[:, :, None] == np.arange(way)).sum(axis=1).astype(np.int64)


class ImbalancedSampler:
    """Bayesian TAML's imbalanced N-way episodes (l2b data.py `generate_episode`).

    Each task has `way` classes, 1..`max_shot` support images per class and exactly `query`
    query images per class. `imbalance` selects how shots are drawn:
      'mixed' (l2b mode 1, the default; l2b uses it for training, validation and test):
              a coin ~ U(0, 1); coin > 0.5 gives class imbalance, otherwise task imbalance.
      'class' (l2b mode 2): each class draws its own shot uniform in {1..max_shot}.
      'task'  (l2b mode 3): one shot uniform in {1..max_shot} shared by all classes of the task.
      'none'  (not in l2b; for balanced baselines): every class gets max_shot, nothing drawn.

    Draw order of `draw_ids(rng, T)` (rng = np.random.default_rng(rng)), task by task, t = 0..T-1:
      1. classes = rng.choice(split.n_classes, way, replace=False); label j = position j.
      2. 'mixed': coin = rng.random(), then if coin > 0.5
                  shots = rng.integers(1, max_shot + 1, size=way)   (class imbalance)
                  else shots = [rng.integers(1, max_shot + 1)] * way  (task imbalance);
         'class': shots = rng.integers(1, max_shot + 1, size=way)   (no coin);
         'task':  shots = [rng.integers(1, max_shot + 1)] * way     (no coin);
         'none':  shots = [max_shot] * way                          (no draw).
      3. Clipping, as l2b: for each class c, if count_c < shot_c + query then
         shot_c = count_c - query (all count_c images of the class are used). No draw.
         This can make the shots of a task-imbalanced (or 'none') task unequal.
      4. For j = 0..way-1 in label order: ids = rng.choice(count_c, shot_c + query,
         replace=False); ids[:shot_c] are the support images, ids[shot_c:] the query images.

    Layout (`sample` / `episode`): support and query sets are class-blocked in label order and
    not shuffled. Every support set is padded to the longest support set of the metabatch (or
    to `pad_to` rows) with all-zero images and label -1; tf.one_hot(-1, way) is the all-zero
    row l2b pads with. Query sets are never padded (way*query rows). Labels -1 mark padding:
    use `support_mask(ys)` and `support_counts(ys, way)`. l2b feeds the padded rows through the
    network too (its batch-norm statistics include them); that quirk is for the model to
    reproduce or not, the sampler only marks the rows.

    Raises EpisodeSizeError (with the numbers) when way > split.n_classes or when the smallest
    class has fewer than query + 1 images (l2b would give it zero or negative shots).
    """

    def __init__(self, split: ClassSplit, way, max_shot, query, imbalance: str = 'mixed'):
        self.split = split
        self.way = _positive_int(way, 'way')
        self.max_shot = _positive_int(max_shot, 'max_shot')
        self.query = _positive_int(query, 'query')
        if imbalance not in IMBALANCE_MODES:
            raise ValueError(f'imbalance must be one of {", ".join(IMBALANCE_MODES)} (l2b modes 1, 2, 3 are '
                             f"'mixed', 'class', 'task'; 'none' is balanced), got {imbalance!r}")
        self.imbalance = imbalance
        where = split._where()
        if self.way > split.n_classes:
            raise EpisodeSizeError(
                f'way {self.way} is larger than the {split.n_classes} classes of the {where}; '
                f'use --way {split.n_classes} or fewer')
        smallest = int(split.counts.min())
        if smallest < self.query + 1:
            raise EpisodeSizeError(
                f'query {self.query} + at least 1 shot = {self.query + 1} images per class, but the smallest '
                f'class of the {where} has {smallest} images; use query <= {smallest - 1}')
        # Largest support a task can have: the `way` largest per-class caps min(max_shot, count - query).
        caps = np.sort(np.minimum(self.max_shot, split.counts - self.query))[::-1]
        self.max_support_len = int(caps[:self.way].sum())

    def __repr__(self):
        return (f'ImbalancedSampler({self.way}-way 1..{self.max_shot}-shot, {self.query} query, '
                f'imbalance={self.imbalance!r}, {self.split!r})')

    def sample(self, rng: np.random.Generator, n_tasks: int, pad_to: Optional[int] = None) -> Episode:
        """Draws `n_tasks` tasks (see the class docstring for the draw order and layout).

        pad_to: pad every support set to this many rows (e.g. `max_support_len`, for a compiled
        step with a fixed shape); default: the longest support set of this metabatch."""
        return self.episode(self.draw_ids(rng, n_tasks), pad_to=pad_to)

    def draw_ids(self, rng: np.random.Generator, n_tasks: int) -> EpisodeIds:
        """The random part of `sample`, in the documented draw order; reads no images."""
        rng = np.random.default_rng(rng)  # a Generator is passed through unchanged
        n_tasks = _positive_int(n_tasks, 'n_tasks')
        way, max_shot, query, mode = self.way, self.max_shot, self.query, self.imbalance
        counts = self.split.counts
        classes = np.empty((n_tasks, way), dtype=np.int64)
        shots = np.empty((n_tasks, way), dtype=np.int64)
        support = np.full((n_tasks, way, max_shot), -1, dtype=np.int64)
        qids = np.empty((n_tasks, way, query), dtype=np.int64)
        class_imb = np.zeros(n_tasks, dtype=bool)
        for t in range(n_tasks):
            cls = rng.choice(self.split.n_classes, way, replace=False)
            if mode == 'mixed':
                per_class = rng.random() > 0.5
            else:
                per_class = mode == 'class'
            if mode == 'none':
                shot = np.full(way, max_shot, dtype=np.int64)
            elif per_class:
                shot = rng.integers(1, max_shot + 1, size=way)
            else:
                shot = np.full(way, rng.integers(1, max_shot + 1), dtype=np.int64)
            cnt = counts[cls]
            shot = np.where(cnt < shot + query, cnt - query, shot)
            classes[t], shots[t], class_imb[t] = cls, shot, per_class
            for j in range(way):
                ids = rng.choice(cnt[j], shot[j] + query, replace=False)
                support[t, j, :shot[j]] = ids[:shot[j]]
                qids[t, j] = ids[shot[j]:]
        return EpisodeIds(classes, shots, support, qids, class_imb)

    def episode(self, ids: EpisodeIds, pad_to: Optional[int] = None) -> Episode:
        """Reads the images of `draw_ids` output into a padded Episode (see `sample`)."""
        classes = np.asarray(ids.classes, dtype=np.int64)
        shots = np.asarray(ids.shots, dtype=np.int64)
        support = np.asarray(ids.support, dtype=np.int64)
        qids = np.asarray(ids.query, dtype=np.int64)
        n_tasks, way = classes.shape
        query = self.query
        if (way != self.way or shots.shape != classes.shape or support.ndim != 3
                or support.shape[:2] != classes.shape or qids.shape != (n_tasks, way, query)):
            raise EpisodeSizeError(f'ids of shapes {classes.shape} / {shots.shape} / {support.shape} / '
                                   f'{qids.shape} do not fit a {self.way}-way {query}-query sampler')
        real = support >= 0
        if (shots < 1).any() or not np.array_equal(real.sum(axis=2), shots) \
                or not np.array_equal(real, np.arange(support.shape[2]) < shots[:, :, None]):
            raise EpisodeSizeError('support ids must hold shots[t, j] >= 1 ids per class followed by -1')
        lengths = shots.sum(axis=1)
        longest = int(lengths.max())
        if pad_to is None:
            maxlen = longest
        else:
            maxlen = _positive_int(pad_to, 'pad_to')
            if maxlen < longest:
                raise EpisodeSizeError(
                    f'pad_to {maxlen} is shorter than the longest support set of this metabatch '
                    f'({longest} rows, task {int(lengths.argmax())}, shots {shots[lengths.argmax()].tolist()}); '
                    f'use pad_to >= {self.max_support_len} (max_support_len) for any metabatch')
        shape = self.split.image_shape
        # Support: one read of exactly the real images, in (task, label, image) order.
        t_idx, j_idx, _ = np.nonzero(real)
        xs_real = self.split.gather(classes[t_idx, j_idx], support[real][:, None])[:, 0]
        rows = np.arange(maxlen) < lengths[:, None]  # [T, maxlen]; real rows come first
        xs = np.zeros((n_tasks, maxlen) + shape, dtype=np.float32)
        xs[rows] = xs_real
        ys = np.full((n_tasks, maxlen), -1, dtype=np.int32)
        ys[rows] = j_idx.astype(np.int32)
        xq = self.split.gather(classes.reshape(-1), qids.reshape(n_tasks * way, query))
        xq = xq.reshape((n_tasks, way * query) + shape)
        yq = np.tile(np.repeat(np.arange(way, dtype=np.int32), query), (n_tasks, 1))
        return Episode(xs, ys, np.ascontiguousarray(xq), yq)
