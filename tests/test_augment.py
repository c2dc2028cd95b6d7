"""Per-task augmentation (data/augment.py): PyTorch-MAML's crop / flip / colour jitter."""

import numpy as np
import pytest

from data import augment
from data.augment import AUGMENTATIONS, EpisodeAugmenter, parse_augment
from data.episodes import Episode


def episode(tasks=2, way=5, shot=2, query=3, hw=12, channels=3, seed=0):
    """Random images with values in (0.05, 1]: no pixel is 0, so padding shows up as exact zeros."""
    rng = np.random.default_rng(seed)
    xs = rng.uniform(0.05, 1, (tasks, way * shot, hw, hw, channels)).astype(np.float32)
    xq = rng.uniform(0.05, 1, (tasks, way * query, hw, hw, channels)).astype(np.float32)
    ys = np.tile(np.repeat(np.arange(way, dtype=np.int32), shot), (tasks, 1))
    yq = np.tile(np.repeat(np.arange(way, dtype=np.int32), query), (tasks, 1))
    return Episode(xs, ys, xq, yq)


def flat(x):
    return x.reshape((-1,) + x.shape[-3:])


# ----------------------------------------------------------------------------- parse_augment

@pytest.mark.parametrize('value, expect', [
    ('', ()), ('none', ()), ('None', ()), (None, ()), ((), ()),
    ('crop,flip', ('crop', 'flip')), (' color , crop ', ('color', 'crop')),
    ('crop,flip,color', ('crop', 'flip', 'color')), (['flip'], ('flip',)),
])
def test_parse_augment(value, expect):
    assert parse_augment(value) == expect


@pytest.mark.parametrize('value, says', [
    ('crop,blur', "unknown augmentation 'blur'"),
    ('crop,,flip', 'unknown augmentation an empty name'),
    ('flip,crop,flip', 'flip is named more than once'),
])
def test_parse_augment_errors(value, says):
    with pytest.raises(ValueError) as err:
        parse_augment(value)
    assert says in str(err.value)
    assert 'crop, flip, color' in str(err.value)


def test_bad_settings():
    with pytest.raises(ValueError, match='pad'):
        EpisodeAugmenter(('crop',), pad=-1)
    with pytest.raises(ValueError, match='jitter'):
        EpisodeAugmenter(('color',), jitter=1.5)
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'"):
        EpisodeAugmenter(('rotate',))


# ----------------------------------------------------------------------------- episode level

def test_no_augmentation_returns_the_same_episode():
    ep = episode()
    aug = EpisodeAugmenter(())
    assert aug(ep, np.random.default_rng(0)) is ep and not aug
    assert EpisodeAugmenter('none')(ep, np.random.default_rng(0)) is ep


@pytest.mark.parametrize('query', [False, True])
def test_support_only_unless_query_and_labels_untouched(query):
    ep = episode()
    before = [a.copy() for a in ep]
    out = EpisodeAugmenter(AUGMENTATIONS, query=query)(ep, np.random.default_rng(1))
    assert out is not ep
    for a, b in zip(ep, before):                     # the input episode is not modified
        np.testing.assert_array_equal(a, b)
    assert out.ys is ep.ys and out.yq is ep.yq
    assert out.xs.shape == ep.xs.shape and out.xs.dtype == np.float32
    assert not np.array_equal(out.xs, ep.xs)
    if query:
        assert out.xq.shape == ep.xq.shape and not np.array_equal(out.xq, ep.xq)
    else:
        assert out.xq is ep.xq


def test_same_seed_same_result_and_images_drawn_independently():
    ep = episode()
    aug = EpisodeAugmenter(AUGMENTATIONS, query=True)
    a = aug(ep, np.random.default_rng(5))
    b = aug(ep, np.random.default_rng(5))
    c = aug(ep, np.random.default_rng(6))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.xs, c.xs)
    # Two copies of one image in the same episode are transformed differently.
    same = episode()._replace(xs=np.repeat(ep.xs[:, :1], 10, axis=1))
    out = flat(aug(same, np.random.default_rng(0)).xs)
    assert len({o.tobytes() for o in out}) > 5


# ----------------------------------------------------------------------------- crop

def test_crop_is_a_window_of_the_zero_padded_image():
    pad, hw = 3, 10
    ep = episode(tasks=3, hw=hw, channels=1)
    out = EpisodeAugmenter(('crop',), pad=pad)(ep, np.random.default_rng(0))
    offsets = []
    for img, res in zip(flat(ep.xs), flat(out.xs)):
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
        found = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if np.array_equal(padded[dy:dy + hw, dx:dx + hw], res)]
        assert len(found) == 1, 'not a window of the padded image'
        offsets.append(found[0])
    dys, dxs = zip(*offsets)
    assert min(dys + dxs) >= 0 and max(dys + dxs) <= 2 * pad
    assert len(set(offsets)) > 5                 # offsets are drawn per image
    assert {0, 2 * pad} & set(dys + dxs)         # the extremes are reachable


def test_crop_keeps_84x84x3_shape():
    ep = episode(tasks=1, hw=84)
    out = EpisodeAugmenter(('crop',))(ep, np.random.default_rng(0))
    assert out.xs.shape == ep.xs.shape
    assert (out.xs == 0).any()                   # some padding came in (pad 8)


# ----------------------------------------------------------------------------- flip

def test_flip_mirrors_about_half_the_images_exactly():
    ep = episode(tasks=20, way=5, shot=4, hw=6)             # 400 support images
    out = EpisodeAugmenter(('flip',))(ep, np.random.default_rng(0))
    flipped = 0
    for img, res in zip(flat(ep.xs), flat(out.xs)):
        if np.array_equal(res, img[:, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(res, img)
    assert 160 <= flipped <= 240                 # p = 0.5: 200 +- 4 sigma


# ----------------------------------------------------------------------------- colour

def test_color_with_zero_jitter_is_the_identity():
    ep = episode()
    out = EpisodeAugmenter(('color',), jitter=0)(ep, np.random.default_rng(0))
    np.testing.assert_array_equal(out.xs, ep.xs)


def test_brightness_scales_and_clips():
    x = flat(episode().xs)
    f = np.linspace(0.6, 1.4, len(x))
    out = augment.adjust_brightness(x, f)
    np.testing.assert_allclose(out, np.clip(x * f[:, None, None, None], 0, 1), rtol=1e-6)


def test_contrast_keeps_the_grey_mean_and_saturation_blends_with_grey():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 0.7, (8, 9, 9, 3)).astype(np.float32)    # no clipping for f in [0.6, 1.4]
    f = np.linspace(0.6, 1.4, 8)
    grey = x @ np.array([0.2989, 0.587, 0.114], np.float32)
    out = augment.adjust_contrast(x, f)
    out_grey = out @ np.array([0.2989, 0.587, 0.114], np.float32)
    # Up to the grey weights summing to 0.9999 (torchvision's), the grey mean is kept.
    np.testing.assert_allclose(out_grey.mean(axis=(1, 2)), grey.mean(axis=(1, 2)), atol=1e-4)
    assert out[0].std() < x[0].std() < out[-1].std()               # f < 1 flattens, f > 1 sharpens
    np.testing.assert_allclose(augment.adjust_contrast(x, np.zeros(8)),
                               np.broadcast_to(grey.mean(axis=(1, 2))[:, None, None, None], x.shape),
                               atol=1e-6)
    desat = augment.adjust_saturation(x, np.zeros(8))              # f = 0: the grey image
    np.testing.assert_allclose(desat, np.repeat(grey[..., None], 3, axis=-1), atol=1e-6)
    np.testing.assert_allclose(augment.adjust_saturation(x, np.ones(8)), x, atol=1e-6)
    one = x[..., :1]
    assert augment.adjust_saturation(one, f) is one                 # no colour to saturate


def test_color_jitter_stays_in_range_and_is_random_per_image():
    ep = episode(tasks=4)
    out = EpisodeAugmenter(('color',), jitter=1.0)(ep, np.random.default_rng(0))
    assert out.xs.min() >= 0 and out.xs.max() <= 1
    ratio = flat(out.xs).mean(axis=(1, 2, 3)) / flat(ep.xs).mean(axis=(1, 2, 3))
    assert ratio.std() > 0.05                    # each image has its own factors
    grey = episode(tasks=1, channels=1)
    g = EpisodeAugmenter(('color',))(grey, np.random.default_rng(0))
    assert g.xs.shape == grey.xs.shape and 0 <= g.xs.min() and g.xs.max() <= 1
