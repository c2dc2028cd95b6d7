"""'Stroke glyphs': a small Omniglot-like dataset generated with numpy, no download, no disk cache.

Each class is a random glyph prototype of 2-4 strokes (straight segments or quadratic Bezier
curves, some starting where the previous one ended). Each example redraws the prototype the
way a hand would: control points jittered, a small random rotation/scale/shear/shift of the
whole glyph, its own stroke thickness and a little pixel noise. Strokes are bright on a dark
background, like preprocessed Omniglot.

Rendering is vectorised: every stroke is sampled at points t along the curve and each point
contributes a separable Gaussian (weighted by the arc length it stands for), so one image is a
[H, P] x [P, W] matrix product and a whole split is one batched matmul.
"""
import numpy as np

from .base import DatasetError, DatasetSpec, FewShotDataset
from .episodes import ClassSplit

MAX_STROKES = 4
POINTS_PER_STROKE = 24
# Distortion strengths, in pixels of a 28x28 image (scaled with image_size).
CONTROL_JITTER = 1.5     # std of each control point's offset
SHIFT = 1.5              # std of the glyph's translation
ROTATION_DEG = 10.0      # std of the glyph's rotation
SCALE_RANGE = (0.85, 1.15)
SHEAR = 0.08             # std
THICKNESS_RANGE = (0.75, 1.15)  # Gaussian sigma of the pen
INK = 2.5                # image = 1 - exp(-INK * line density); centre of a stroke ~0.92
NOISE = 0.03             # std of additive pixel noise


def _prototypes(rng, n_classes, size):
    """Control points [n, MAX_STROKES, 3, 2] (x, y in pixels) and a stroke mask [n, MAX_STROKES]."""
    lo, hi = 0.2 * size, 0.8 * size
    n_strokes = rng.integers(2, MAX_STROKES + 1, size=n_classes)
    mask = np.arange(MAX_STROKES)[None] < n_strokes[:, None]
    start = rng.uniform(lo, hi, size=(n_classes, MAX_STROKES, 2))
    end = rng.uniform(lo, hi, size=(n_classes, MAX_STROKES, 2))
    # Strokes of a glyph often join: some start where the previous one ended.
    chained = rng.random((n_classes, MAX_STROKES)) < 0.4
    chained[:, 0] = False
    for s in range(1, MAX_STROKES):
        start[:, s] = np.where(chained[:, s, None], end[:, s - 1], start[:, s])
    # No tiny strokes: push the end away along the same direction to at least 0.25 * size.
    d = end - start
    length = np.linalg.norm(d, axis=-1, keepdims=True)
    unit = np.where(length > 1e-6, d / np.maximum(length, 1e-6), np.array([1.0, 0.0]))
    end = np.clip(start + unit * np.maximum(length, 0.25 * size), 0.12 * size, 0.88 * size)
    # Half the strokes are curves: the middle control point leaves the chord sideways.
    mid = 0.5 * (start + end)
    normal = np.stack([-unit[..., 1], unit[..., 0]], axis=-1)
    bend = rng.normal(0.0, 0.22 * size, size=(n_classes, MAX_STROKES, 1))
    curved = rng.random((n_classes, MAX_STROKES, 1)) < 0.5
    middle = mid + np.where(curved, bend, 0.0) * normal
    return np.stack([start, middle, end], axis=2), mask


def _distort(rng, ctrl, size):
    """Per-example control points [n, S, 3, 2]: jitter, then an affine map about the centre."""
    n = ctrl.shape[0]
    k = size / 28.0
    pts = ctrl + rng.normal(0.0, CONTROL_JITTER * k, size=ctrl.shape)
    theta = np.deg2rad(rng.normal(0.0, ROTATION_DEG, size=n))
    scale = rng.uniform(*SCALE_RANGE, size=(n, 2))
    shear = rng.normal(0.0, SHEAR, size=n)
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)        # [n, 2, 2]
    shr = np.zeros((n, 2, 2))
    shr[:, 0, 0] = shr[:, 1, 1] = 1.0
    shr[:, 0, 1] = shear
    mat = rot @ shr * scale[:, None, :]
    centre = (size - 1) / 2.0
    shift = rng.normal(0.0, SHIFT * k, size=(n, 1, 1, 2))
    return np.einsum('nij,nscj->nsci', mat, pts - centre) + centre + shift


def _render(ctrl, mask, sigma, size):
    """float32 images [n, size, size] of strokes with control points ctrl [n, S, 3, 2]."""
    t = (np.arange(POINTS_PER_STROKE) + 0.5) / POINTS_PER_STROKE
    b0, b1, b2 = (1 - t) ** 2, 2 * (1 - t) * t, t ** 2                               # Bezier basis [M]
    p0, p1, p2 = ctrl[:, :, 0, None], ctrl[:, :, 1, None], ctrl[:, :, 2, None]       # [n, S, 1, 2]
    pts = b0[:, None] * p0 + b1[:, None] * p1 + b2[:, None] * p2                     # [n, S, M, 2]
    speed = np.linalg.norm(2 * (1 - t)[:, None] * (p1 - p0) + 2 * t[:, None] * (p2 - p1), axis=-1)
    # Each point stands for the arc length around it; normalising by sqrt(2 pi) sigma makes the
    # summed Gaussians of a straight stroke peak at 1 whatever the sampling density.
    weight = speed / POINTS_PER_STROKE * mask[:, :, None] / (np.sqrt(2 * np.pi) * sigma[:, None, None])
    n = ctrl.shape[0]
    # float32 from here on: the exponentials dominate the cost and float32 exp is ~5x faster.
    pts = pts.reshape(n, -1, 2).astype(np.float32)
    weight = weight.reshape(n, -1, 1).astype(np.float32)
    grid = np.arange(size, dtype=np.float32)
    neg_inv = (-0.5 / sigma ** 2).astype(np.float32)[:, None, None]
    gx = np.exp(np.square(grid - pts[:, :, 0, None]) * neg_inv)                      # [n, P, W]
    gy = np.exp(np.square(grid - pts[:, :, 1, None]) * neg_inv) * weight             # [n, P, H]
    density = np.matmul(gy.transpose(0, 2, 1), gx)                                    # [n, H, W]
    return 1.0 - np.exp(np.float32(-INK) * density)


def generate_split(rng, n_classes, n_per_class=20, image_size=28, chunk=2000):
    """uint8 [n_classes, n_per_class, size, size, 1] glyph images (strokes 255, background ~0)."""
    ctrl, mask = _prototypes(rng, n_classes, image_size)
    out = np.empty((n_classes, n_per_class, image_size, image_size, 1), dtype=np.uint8)
    flat_out = out.reshape(n_classes * n_per_class, image_size, image_size)
    ctrl = np.repeat(ctrl, n_per_class, axis=0)
    mask = np.repeat(mask, n_per_class, axis=0)
    k = image_size / 28.0
    for lo in range(0, len(ctrl), chunk):
        hi = min(lo + chunk, len(ctrl))
        pts = _distort(rng, ctrl[lo:hi], image_size)
        sigma = rng.uniform(*THICKNESS_RANGE, size=hi - lo) * k
        img = _render(pts, mask[lo:hi], sigma, image_size)
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(NOISE)
        flat_out[lo:hi] = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return out


def load(data_root=None, seed=0, image_size=28, n_train=600, n_val=100, n_test=200,
         n_per_class=20) -> FewShotDataset:
    """Generates the stroke-glyph dataset from `seed` (data_root is not used: nothing is read)."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DatasetError(f'synthetic: seed must be a non-negative integer, got {seed!r}')
    for option, value in (('image_size', image_size), ('n_train', n_train), ('n_val', n_val),
                          ('n_test', n_test), ('n_per_class', n_per_class)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise DatasetError(f'synthetic: {option} must be a positive integer, got {value!r}')
    if image_size < 8:
        raise DatasetError(f'synthetic: image_size must be at least 8, got {image_size}')
    splits = {}
    for i, (which, n) in enumerate((('train', n_train), ('val', n_val), ('test', n_test))):
        # Each split has its own stream, so its glyphs do not depend on the sizes of the others.
        rng = np.random.default_rng([int(seed), i])
        images = generate_split(rng, n, n_per_class, image_size)
        splits[which] = ClassSplit(images, names=[f'{which}_glyph{c:04d}' for c in range(n)],
                                   name=which, dataset='synthetic')
    desc = (f'synthetic stroke glyphs (seed {seed}, {image_size}x{image_size}x1, {n_per_class} per class): '
            f'train {n_train} / val {n_val} / test {n_test} classes')
    return FewShotDataset('synthetic', splits['train'], splits['val'], splits['test'],
                          (image_size, image_size, 1), False, desc)


# ----------------------------------------------------------------------------- declaration

def options(cfg):
    """The reader options from main.py's flags."""
    return dict(seed=cfg.data_seed)


SPECS = (DatasetSpec(
    name='synthetic', loader=load, kind='images', flags=('data_seed',), options=options,
    description='generated 28x28 stroke glyphs (nothing to download; for tests and smoke runs)'),)
