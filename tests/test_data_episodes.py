"""ClassSplit and EpisodeSampler: the invariants of metadrop-style N-way K-shot episodes."""
import numpy as np
import pytest

from data.episodes import ClassSplit, Episode, EpisodeSampler, EpisodeSizeError

H = W = 4


def coded_split(n_classes=12, n_per_class=10, counts=None, **kw):
    """Float images whose every pixel is 1000 * class + index, so an episode reveals its ids."""
    counts = counts or [n_per_class] * n_classes
    classes = [np.full((n, H, W, 1), 0, np.float32) + (1000 * c + np.arange(n, dtype=np.float32))[:, None, None, None]
               for c, n in enumerate(counts)]
    if len(set(counts)) == 1:
        return ClassSplit(np.stack(classes), **kw)
    return ClassSplit(classes, **kw)


def decode(x):
    v = x[..., 0, 0, 0].astype(np.int64)  # [T, N]
    return v // 1000, v % 1000


@pytest.mark.parametrize('way,shot,query', [(5, 1, 15), (3, 4, 2), (12, 1, 1)])
def test_layout_shapes_and_disjointness(way, shot, query):
    split = coded_split(n_classes=12, n_per_class=20)
    ep = EpisodeSampler(split, way, shot, query).sample(np.random.default_rng(0), 6)
    assert isinstance(ep, Episode)
    assert ep.xs.shape == (6, way * shot, H, W, 1) and ep.xs.dtype == np.float32
    assert ep.xq.shape == (6, way * query, H, W, 1) and ep.xq.dtype == np.float32
    assert ep.ys.shape == (6, way * shot) and ep.ys.dtype == np.int32
    assert ep.yq.shape == (6, way * query) and ep.yq.dtype == np.int32
    np.testing.assert_array_equal(ep.ys, np.tile(np.repeat(np.arange(way), shot), (6, 1)))
    np.testing.assert_array_equal(ep.yq, np.tile(np.repeat(np.arange(way), query), (6, 1)))
    cs, is_ = decode(ep.xs)
    cq, iq = decode(ep.xq)
    for t in range(6):
        s_cls = cs[t].reshape(way, shot)
        q_cls = cq[t].reshape(way, query)
        # One class per label block, the same class for support and query, distinct classes.
        assert (s_cls == s_cls[:, :1]).all() and (q_cls == s_cls[:, :1]).all()
        assert len(set(s_cls[:, 0].tolist())) == way
        for j in range(way):
            s_img = set(is_[t].reshape(way, shot)[j].tolist())
            q_img = set(iq[t].reshape(way, query)[j].tolist())
            assert len(s_img) == shot and len(q_img) == query and not s_img & q_img


def test_same_seed_same_episode_and_different_seeds_differ():
    sampler = EpisodeSampler(coded_split(), 5, 2, 3)
    a = sampler.sample(np.random.default_rng(7), 4)
    b = sampler.sample(np.random.default_rng(7), 4)
    c = sampler.sample(np.random.default_rng(8), 4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.xs, c.xs)


def test_reuse_classes_reproduces_metadrop_bug():
    split = coded_split(n_classes=40, n_per_class=20)
    buggy = EpisodeSampler(split, 5, 1, 5, reuse_classes=True).sample(np.random.default_rng(1), 8)
    cls, idx = decode(buggy.xs)
    assert (cls == cls[:1]).all()                      # same classes in the same label order
    assert len({tuple(r) for r in idx.tolist()}) > 1   # images still drawn per task
    fixed = EpisodeSampler(split, 5, 1, 5).sample(np.random.default_rng(1), 8)
    cls, _ = decode(fixed.xs)
    assert len({frozenset(r) for r in cls.tolist()}) == 8


def test_explicit_classes_and_draw_ids():
    split = coded_split(n_classes=10, n_per_class=8)
    sampler = EpisodeSampler(split, 3, 2, 2)
    ep = sampler.sample(np.random.default_rng(0), 3, classes=[7, 2, 5])
    cls, _ = decode(ep.xs)
    np.testing.assert_array_equal(cls, np.tile(np.repeat([7, 2, 5], 2), (3, 1)))
    ids, images = sampler.draw_ids(np.random.default_rng(3), 2)
    ep = sampler.episode(ids, images)
    cls, idx = decode(ep.xq)
    np.testing.assert_array_equal(cls, np.repeat(ids, 2, axis=1))
    np.testing.assert_array_equal(idx, images[:, :, 2:].reshape(2, -1))


def test_classes_of_different_sizes():
    split = coded_split(counts=[3, 9, 5, 4])
    np.testing.assert_array_equal(split.counts, [3, 9, 5, 4])
    ep = EpisodeSampler(split, 4, 1, 2).sample(np.random.default_rng(0), 20)
    cls, idx = decode(np.concatenate([ep.xs, ep.xq], axis=1))
    assert (idx < np.array([3, 9, 5, 4])[cls]).all()


def test_size_errors_name_the_numbers():
    split = coded_split(n_classes=24, n_per_class=20, name='test', dataset='omniglot')
    with pytest.raises(EpisodeSizeError, match=r"way 30 .*24 classes of the 'test' split of omniglot.*--way 24"):
        EpisodeSampler(split, 30, 1, 1)
    with pytest.raises(EpisodeSizeError, match=r'shot 5 \+ query 16 = 21.*20 images'):
        EpisodeSampler(split, 5, 5, 16)
    for bad in [dict(way=0, shot=1, query=1), dict(way=5, shot=0, query=1), dict(way=5, shot=1, query=0)]:
        with pytest.raises(EpisodeSizeError, match='at least 1, got 0'):
            EpisodeSampler(split, **bad)
    small = coded_split(counts=[20, 3, 20])
    with pytest.raises(EpisodeSizeError, match='smallest class .* has 3 images'):
        EpisodeSampler(small, 2, 2, 2)


def test_rotations_expose_four_classes_per_stored_class():
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 256, size=(3, 5, 6, 6, 1), dtype=np.uint8)
    split = ClassSplit(stored, names=['A/c1', 'A/c2', 'B/c1'], rotations=True)
    assert split.n_classes == 12 and split.image_shape == (6, 6, 1)
    np.testing.assert_array_equal(split.counts, [5] * 12)
    for c in range(3):
        for k in range(4):
            got = split.images(4 * c + k, [4, 0, 2])
            want = np.rot90(stored[c, [4, 0, 2]].astype(np.float32) / 255, k, axes=(1, 2))
            np.testing.assert_array_equal(got, want)
    assert split.class_name(5) == 'A/c2@rot90' and split.class_name(0) == 'A/c1@rot0'
    # The sampler reads rotated classes the same way.
    ep = EpisodeSampler(split, 12, 2, 3).sample(np.random.default_rng(1), 1)
    assert ep.xs.shape == (1, 24, 6, 6, 1)


def test_uint8_scaled_and_float_as_stored():
    u8 = np.full((2, 3, 2, 2, 1), 255, np.uint8)
    assert ClassSplit(u8).images(0, [0]).max() == 1.0
    f32 = np.full((2, 3, 2, 2, 1), 7.5, np.float32)
    assert ClassSplit(f32).images(1, [2]).max() == 7.5
    assert ClassSplit(f32, scale=2.0).images(1, [2]).max() == 15.0
    assert ClassSplit(u8, scale=1.0).images(0, [1]).max() == 255.0
