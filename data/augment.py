"""Per-task image augmentation of episodes: PyTorch-MAML's transforms (datasets/transforms.py),
in numpy, on the float images of a data.episodes.Episode.

PyTorch-MAML transforms the support images of each task with its `transform` and leaves the
queries to `val_transform` (unset in its configs, so untouched); EpisodeAugmenter does the
same, and with query=True transforms the queries too. Every image gets its own random
draw. The operations, always applied in this order whatever order they are named in (the
order of torchvision's pipelines there: crop, then colour, then flip):

  crop   torchvision RandomCrop(size, padding=pad): the image is zero-padded by `pad` pixels
         on each side, then an HxW window at a uniformly random offset in [0, 2*pad] along
         each axis is cut out (pad=8 as PyTorch-MAML and MetaOptNet).
  color  torchvision ColorJitter(brightness=j, contrast=j, saturation=j): three factors
         drawn uniformly from [max(0, 1-j), 1+j] and applied in a random order per image;
         brightness multiplies the image, contrast blends it with the mean of its
         greyscale image, saturation blends it with its greyscale image
         (grey = 0.2989 R + 0.587 G + 0.114 B, torchvision's tensor weights), each
         result clipped to [0, 1]. Saturation does nothing to 1-channel images, whose
         grey image is the image itself. j=0 is the identity (nothing is drawn).
  flip   torchvision RandomHorizontalFlip: each image is mirrored left-right with
         probability 0.5.

PyTorch-MAML applies these to PIL images, whose colour operations round to uint8; here the
images stay float32 (torchvision's tensor semantics). Labels are never changed.
"""
import numpy as np

from .episodes import Episode

AUGMENTATIONS = ('crop', 'flip', 'color')
_ORDER = ('crop', 'color', 'flip')             # the order in which they are applied
_GREY = np.array([0.2989, 0.587, 0.114], np.float32)


def parse_augment(value) -> tuple:
    """'crop,flip' -> ('crop', 'flip'); '' / 'none' / None -> (). A tuple or list of names
    is checked the same way. Raises ValueError for an unknown or repeated name."""
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ('', 'none'):
            return ()
        names = [n.strip().lower() for n in text.split(',')]
    else:
        names = [str(n).strip().lower() for n in value]
    allowed = ', '.join(AUGMENTATIONS)
    for n in names:
        if n not in AUGMENTATIONS:
            shown = repr(n) if n else 'an empty name'
            raise ValueError(f'unknown augmentation {shown} in {value!r}; use a comma-separated list '
                             f"of {allowed}, or 'none'")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f'augmentation {", ".join(repeated)} is named more than once in {value!r}; '
                         f'name each of {allowed} at most once')
    return tuple(names)


def random_crop(x, rng, pad):
    """[M, H, W, C]: each image zero-padded by `pad` and cut at a random offset in [0, 2*pad]."""
    m, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = rng.integers(0, 2 * pad + 1, size=(m, 2))
    out = np.empty_like(x)
    for i, (dy, dx) in enumerate(offsets):
        out[i] = padded[i, dy:dy + h, dx:dx + w]
    return out


def random_flip(x, rng):
    """[M, H, W, C]: each image mirrored left-right with probability 0.5."""
    flip = np.flatnonzero(rng.random(x.shape[0]) < 0.5)
    out = np.array(x, copy=True)
    if flip.size:
        # Pixels as single C-channel items, so the mirror moves whole pixels (faster).
        pixel = np.dtype((np.void, x.shape[-1] * x.dtype.itemsize))
        src = np.ascontiguousarray(x).view(pixel)[..., 0]
        out.view(pixel)[flip, ..., 0] = src[flip, :, ::-1]
    return out


def _grey(x):
    """[M, H, W, 1] greyscale of [M, H, W, C] images (C = 1 or 3)."""
    if x.shape[-1] == 1:
        return x
    return (x @ _GREY)[..., None]


def _factors(f):
    return np.asarray(f, np.float32).reshape(-1, 1, 1, 1)


def adjust_brightness(x, f):
    """[M, H, W, C] images times per-image factors f [M] (a blend with black), clipped to [0, 1]."""
    out = x * _factors(f)
    return np.clip(out, 0, 1, out=out)


def _blend(x, f, other):
    """clip(f * x + (1 - f) * other, 0, 1) with per-image f, in few passes."""
    f = _factors(f)
    out = x * f
    out += (1 - f) * other
    return np.clip(out, 0, 1, out=out)


def adjust_contrast(x, f):
    """Each image blended with the mean of its greyscale image: f * x + (1 - f) * mean."""
    return _blend(x, f, _grey(x).mean(axis=(1, 2, 3), keepdims=True))


def adjust_saturation(x, f):
    """Each image blended with its greyscale image; 1-channel images are returned as they are."""
    if x.shape[-1] == 1:
        return x
    return _blend(x, f, _grey(x))


_COLOR_OPS = (adjust_brightness, adjust_contrast, adjust_saturation)


def color_jitter(x, rng, jitter):
    """[M, H, W, C]: ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)."""
    if jitter == 0:
        return x
    if x.shape[-1] not in (1, 3):
        raise ValueError(f'color jitter needs 1- or 3-channel images, got {x.shape[-1]} channels')
    m = x.shape[0]
    factors = rng.uniform(max(0.0, 1 - jitter), 1 + jitter, size=(m, 3)).astype(np.float32)
    order = np.argsort(rng.random((m, 3)), axis=1)     # a random permutation of the 3 ops per image
    out = x.astype(np.float32, copy=True)
    # Images that share an order are transformed together (at most 6 groups).
    perms, group = np.unique(order, axis=0, return_inverse=True)
    for g, perm in enumerate(perms):
        sel = np.flatnonzero(group.ravel() == g)
        img = out[sel]
        for k in perm:
            img = _COLOR_OPS[k](img, factors[sel, k])
        out[sel] = img
    return out


class EpisodeAugmenter:
    """Augments the support images (and with query=True the query images) of an Episode.

    Args:
      augment: names from AUGMENTATIONS (or a string for parse_augment); () does nothing.
      pad: zero padding of 'crop' on each side (PyTorch-MAML: 8).
      jitter: strength of 'color' (PyTorch-MAML: 0.4), in [0, 1].
      query: transform the query images too (PyTorch-MAML does not).
    """

    def __init__(self, augment: tuple, pad: int = 8, jitter: float = 0.4, query: bool = False):
        self.augment = parse_augment(augment)
        if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
            raise ValueError(f'pad must be a non-negative number of pixels, got {pad!r}')
        jitter = float(jitter)
        if not 0 <= jitter <= 1:
            raise ValueError(f'jitter must be in [0, 1] (factors are drawn from [1-jitter, 1+jitter]), '
                             f'got {jitter}')
        self.pad, self.jitter, self.query = int(pad), jitter, bool(query)

    def __repr__(self):
        return (f'EpisodeAugmenter({",".join(self.augment) or "none"}, pad={self.pad}, '
                f'jitter={self.jitter}, query={self.query})')

    def __bool__(self):
        return bool(self.augment)

    def images(self, x, rng):
        """Augments images [..., H, W, C] (any leading axes), each independently."""
        x = np.asarray(x)
        if x.ndim < 3:
            raise ValueError(f'images must be [..., H, W, C], got shape {x.shape}')
        out = x.reshape((-1,) + x.shape[-3:])
        for name in _ORDER:
            if name not in self.augment:
                continue
            if name == 'crop' and self.pad:
                out = random_crop(out, rng, self.pad)
            elif name == 'color':
                out = color_jitter(out, rng, self.jitter)
            elif name == 'flip':
                out = random_flip(out, rng)
        return out.reshape(x.shape).astype(np.float32, copy=False)

    def __call__(self, episode: Episode, rng: np.random.Generator) -> Episode:
        """A new Episode with transformed images and the same labels; `episode` itself when
        there is nothing to do."""
        if not self.augment:
            return episode
        xs = self.images(episode.xs, rng)
        xq = self.images(episode.xq, rng) if self.query else episode.xq
        return Episode(xs, episode.ys, xq, episode.yq)


# PyTorch-MAML's per-channel normalisation constants (datasets/mini_imagenet.py,
# tiered_imagenet.py), for --normalization dataset.
DATASET_NORMALIZATION = {
    'mimgnet': ((0.471, 0.450, 0.403), (0.278, 0.268, 0.284)),
    'tiered': ((0.478, 0.456, 0.410), (0.279, 0.274, 0.286)),
}


def parse_normalization(value, dataset):
    """--normalization: 'none' -> None; 'dataset' -> PyTorch-MAML's constants of that
    dataset; 'M[,M,M]/S[,S,S]' -> (means, stds). The network applies (x - mean) / std."""
    value = (value or 'none').strip()
    if value == 'none':
        return None
    if value == 'dataset':
        if dataset not in DATASET_NORMALIZATION:
            raise ValueError(f'--normalization dataset: no constants known for --dataset '
                             f'{dataset} (known: {", ".join(DATASET_NORMALIZATION)}); give '
                             'them as --normalization MEAN[,MEAN,MEAN]/STD[,STD,STD]')
        return DATASET_NORMALIZATION[dataset]
    try:
        mean, std = value.split('/')
        mean = tuple(float(v) for v in mean.split(','))
        std = tuple(float(v) for v in std.split(','))
    except ValueError:
        raise ValueError(f'--normalization {value!r}: use none, dataset, or '
                         'MEAN[,MEAN,MEAN]/STD[,STD,STD], e.g. 0.5,0.5,0.5/0.25,0.25,0.25') \
            from None
    if len(mean) != len(std) or len(mean) not in (1, 3) or min(std) <= 0:
        raise ValueError(f'--normalization {value!r}: give 1 or 3 means and as many '
                         'positive stds')
    return mean, std
