"""ImbalancedSampler: Bayesian TAML's (l2b generate_episode) imbalanced, padded episodes."""
import numpy as np
import pytest

from data.episodes import (ClassSplit, Episode, EpisodeIds, EpisodeSizeError, ImbalancedSampler,
                           support_counts, support_mask)

H = W = 2


def coded_split(n_classes=10, n_per_class=30, counts=None, **kw):
    """Images whose every pixel is 1000 * (class + 1) + index, so an episode reveals its ids and
    padding (all zero) cannot be mistaken for an image."""
    counts = counts or [n_per_class] * n_classes
    classes = [np.zeros((n, H, W, 1), np.float32)
               + (1000 * (c + 1) + np.arange(n, dtype=np.float32))[:, None, None, None]
               for c, n in enumerate(counts)]
    if len(set(counts)) == 1:
        return ClassSplit(np.stack(classes), **kw)
    return ClassSplit(classes, **kw)


def decode(x):
    v = x[..., 0, 0, 0].astype(np.int64)
    return v // 1000 - 1, v % 1000


def chi2(values, n_bins):
    """Chi-square statistic of values in 1..n_bins against the uniform distribution."""
    freq = np.bincount(np.ravel(values) - 1, minlength=n_bins)
    expected = freq.sum() / n_bins
    return ((freq - expected) ** 2 / expected).sum()


# Upper 0.1% points of chi-square with 4 and 9 degrees of freedom.
CHI2_999 = {5: 18.47, 10: 27.88}


def all_equal(shots):
    return (shots == shots[:, :1]).all(axis=1)


def test_class_mode_shots_uniform_and_unequal():
    ids = ImbalancedSampler(coded_split(), 5, 5, 3, imbalance='class').draw_ids(0, 3000)
    assert ids.shots.min() == 1 and ids.shots.max() == 5
    assert chi2(ids.shots, 5) < CHI2_999[5]
    for j in range(5):  # each label position on its own too
        assert chi2(ids.shots[:, j], 5) < CHI2_999[5]
    # P(all 5 equal) = 5**-4 = 0.0016.
    assert all_equal(ids.shots).mean() < 0.01
    assert ids.class_imbalanced.all()


def test_task_mode_shots_equal_within_task_uniform_across():
    ids = ImbalancedSampler(coded_split(), 5, 10, 3, imbalance='task').draw_ids(1, 3000)
    assert all_equal(ids.shots).all()
    assert chi2(ids.shots[:, 0], 10) < CHI2_999[10]
    assert not ids.class_imbalanced.any()


def test_mixed_mode_coin_and_equal_shot_fraction():
    way, max_shot, n = 3, 5, 4000
    ids = ImbalancedSampler(coded_split(), way, max_shot, 3).draw_ids(2, n)  # 'mixed' is the default
    coin = ids.class_imbalanced
    sd = np.sqrt(n * 0.25)
    assert abs(coin.sum() - n / 2) < 4 * sd
    eq = all_equal(ids.shots)
    assert eq[~coin].all()  # task-imbalanced tasks share one shot
    # Class-imbalanced tasks tie with probability max_shot**-(way-1).
    p_tie = max_shot ** -(way - 1)
    assert abs(eq[coin].mean() - p_tie) < 4 * np.sqrt(p_tie * (1 - p_tie) / coin.sum())
    p_eq = 0.5 + 0.5 * p_tie
    assert abs(eq.sum() - n * p_eq) < 4 * np.sqrt(n * p_eq * (1 - p_eq))
    assert chi2(ids.shots[coin], max_shot) < CHI2_999[5]
    assert chi2(ids.shots[~coin, 0], max_shot) < CHI2_999[5]


def test_none_mode_is_balanced_and_draws_no_shots():
    split = coded_split()
    ids = ImbalancedSampler(split, 4, 3, 2, imbalance='none').draw_ids(3, 50)
    assert (ids.shots == 3).all() and not ids.class_imbalanced.any()
    ep = ImbalancedSampler(split, 4, 3, 2, imbalance='none').sample(3, 5)
    assert ep.xs.shape == (5, 12, H, W, 1) and (ep.ys >= 0).all()


@pytest.mark.parametrize('mode', ['mixed', 'class', 'task', 'none'])
def test_draw_order_is_the_documented_one(mode):
    split = coded_split(counts=[6, 9, 7, 12, 8, 30])
    way, max_shot, query = 3, 4, 5
    ids = ImbalancedSampler(split, way, max_shot, query, imbalance=mode).draw_ids(11, 40)
    rng = np.random.default_rng(11)
    for t in range(40):
        cls = rng.choice(split.n_classes, way, replace=False)
        per_class = rng.random() > 0.5 if mode == 'mixed' else mode == 'class'
        if mode == 'none':
            shot = np.full(way, max_shot)
        elif per_class:
            shot = rng.integers(1, max_shot + 1, size=way)
        else:
            shot = np.full(way, rng.integers(1, max_shot + 1))
        cnt = split.counts[cls]
        shot = np.where(cnt < shot + query, cnt - query, shot)
        np.testing.assert_array_equal(ids.classes[t], cls)
        np.testing.assert_array_equal(ids.shots[t], shot)
        assert ids.class_imbalanced[t] == per_class
        for j in range(way):
            drawn = rng.choice(cnt[j], shot[j] + query, replace=False)
            np.testing.assert_array_equal(ids.support[t, j, :shot[j]], drawn[:shot[j]])
            assert (ids.support[t, j, shot[j]:] == -1).all()
            np.testing.assert_array_equal(ids.query[t, j], drawn[shot[j]:])


def test_clipping_small_class():
    split = coded_split(counts=[20, 40, 40, 40])
    query = 15
    for mode in ('task', 'class'):
        ids = ImbalancedSampler(split, 3, 10, query, imbalance=mode).draw_ids(4, 1500)
        small = ids.classes == 0
        assert ids.shots[small].max() == 5 and ids.shots[~small].max() == 10
        if mode == 'task':
            # The draw is visible in the unclipped classes: min(draw, 5) for class 0.
            other = np.where(small, 0, ids.shots).max(axis=1)
            has = small.any(axis=1)
            np.testing.assert_array_equal(ids.shots[small], np.minimum(other[has], 5))
            assert (other[has] > 5).any()
        else:
            # Draws 5..10 are all clipped to 5: P = 6/10.
            frac = (ids.shots[small] == 5).mean()
            assert abs(frac - 0.6) < 0.05
        # When clipped, all 20 images of the class are used.
        t, j = np.nonzero(small & (ids.shots == 5))
        for tt, jj in zip(t, j):
            used = np.concatenate([ids.support[tt, jj, :5], ids.query[tt, jj]])
            assert sorted(used.tolist()) == list(range(20))


def test_clipping_can_break_equal_shots_in_none_mode():
    ids = ImbalancedSampler(coded_split(counts=[20, 40]), 2, 10, 15, imbalance='none').draw_ids(0, 10)
    np.testing.assert_array_equal(np.sort(ids.shots, axis=1), np.tile([5, 10], (10, 1)))


def test_size_errors_name_the_numbers():
    split = coded_split(counts=[15, 40, 40], name='test', dataset='cub')
    with pytest.raises(EpisodeSizeError, match=r"query 15 .* 16 images .*smallest class of the 'test' split "
                                                r"of cub has 15 images; use query <= 14"):
        ImbalancedSampler(split, 2, 5, 15)
    with pytest.raises(EpisodeSizeError, match='has 15 images'):
        ImbalancedSampler(split, 2, 5, 16)
    sampler = ImbalancedSampler(split, 3, 5, 14)  # smallest = query + 1: that class always gets 1 shot
    ids = sampler.draw_ids(0, 30)
    assert (ids.shots[ids.classes == 0] == 1).all()
    with pytest.raises(EpisodeSizeError, match=r'way 4 is larger than the 3 classes'):
        ImbalancedSampler(split, 4, 5, 2)
    for bad in [dict(way=0, max_shot=1, query=1), dict(way=2, max_shot=0, query=1), dict(way=2, max_shot=1, query=0)]:
        with pytest.raises(EpisodeSizeError, match='at least 1, got 0'):
            ImbalancedSampler(split, **bad)
    with pytest.raises(ValueError, match="imbalance must be one of mixed, class, task, none"):
        ImbalancedSampler(split, 2, 5, 2, imbalance='1')


def check_episode(ep, ids, way, query, maxlen):
    T = len(ids.classes)
    assert isinstance(ep, Episode)
    assert ep.xs.shape == (T, maxlen, H, W, 1) and ep.xs.dtype == np.float32
    assert ep.ys.shape == (T, maxlen) and ep.ys.dtype == np.int32
    assert ep.xq.shape == (T, way * query, H, W, 1) and ep.xq.dtype == np.float32
    assert ep.yq.shape == (T, way * query) and ep.yq.dtype == np.int32
    lengths = ids.shots.sum(axis=1)
    pad = np.arange(maxlen) >= lengths[:, None]
    np.testing.assert_array_equal(ep.ys == -1, pad)
    np.testing.assert_array_equal(support_mask(ep.ys), ~pad)
    assert (ep.xs[pad] == 0).all() and (ep.xs[~pad] > 0).all()
    np.testing.assert_array_equal(support_counts(ep.ys, way), ids.shots)
    np.testing.assert_array_equal(ep.yq, np.tile(np.repeat(np.arange(way), query), (T, 1)))
    cs, is_ = decode(ep.xs)
    cq, iq = decode(ep.xq)
    for t in range(T):
        n = lengths[t]
        # Class-blocked in label order, the labelled class's images.
        np.testing.assert_array_equal(ep.ys[t, :n], np.repeat(np.arange(way), ids.shots[t]))
        np.testing.assert_array_equal(cs[t, :n], ids.classes[t][ep.ys[t, :n]])
        np.testing.assert_array_equal(cq[t], ids.classes[t][ep.yq[t]])
        for j in range(way):
            s_img = is_[t, :n][ep.ys[t, :n] == j]
            q_img = iq[t][ep.yq[t] == j]
            np.testing.assert_array_equal(s_img, ids.support[t, j, :ids.shots[t, j]])
            np.testing.assert_array_equal(q_img, ids.query[t, j])
            assert len(set(s_img.tolist()) | set(q_img.tolist())) == len(s_img) + query


@pytest.mark.parametrize('ragged', [False, True])
def test_padding_layout_and_images(ragged):
    split = coded_split(counts=[20, 25, 30, 22, 40, 35] if ragged else [30] * 6)
    way, query = 4, 15
    sampler = ImbalancedSampler(split, way, 10, query)
    ids = sampler.draw_ids(5, 8)
    ep = sampler.episode(ids)
    maxlen = int(ids.shots.sum(axis=1).max())
    assert ep.xs.shape[1] == maxlen
    assert (ep.ys == -1).any()  # this seed gives tasks of different lengths
    check_episode(ep, ids, way, query, maxlen)
    # sample = episode(draw_ids) for the same seed.
    for a, b in zip(sampler.sample(5, 8), ep):
        np.testing.assert_array_equal(a, b)


def test_pad_to():
    split = coded_split()
    sampler = ImbalancedSampler(split, 3, 4, 2)
    assert sampler.max_support_len == 12
    ids = sampler.draw_ids(6, 5)
    longest = int(ids.shots.sum(axis=1).max())
    for pad_to in (longest, sampler.max_support_len, 20):
        check_episode(sampler.episode(ids, pad_to=pad_to), ids, 3, 2, pad_to)
        check_episode(sampler.sample(6, 5, pad_to=pad_to), ids, 3, 2, pad_to)
    with pytest.raises(EpisodeSizeError, match=rf'pad_to {longest - 1} is shorter .*\({longest} rows.*'
                                               rf'pad_to >= 12'):
        sampler.sample(6, 5, pad_to=longest - 1)
    # Clipping lowers the bound: caps min(4, count - 2) = 1, 3, 4, 4 -> best 3 classes 4 + 4 + 3.
    assert ImbalancedSampler(coded_split(counts=[3, 5, 30, 30]), 3, 4, 2).max_support_len == 11


def test_rotations_and_uint8_split():
    stored = np.random.default_rng(0).integers(1, 256, size=(3, 8, H, W, 1), dtype=np.uint8)
    split = ClassSplit(stored, rotations=True)
    ep = ImbalancedSampler(split, 5, 3, 2).sample(0, 4)
    mask = support_mask(ep.ys)
    assert (ep.xs[~mask] == 0).all() and (ep.xs[mask] > 0).all() and ep.xs.max() <= 1


def test_seeds_reproducible():
    sampler = ImbalancedSampler(coded_split(counts=[20, 25, 30, 22, 40, 35]), 5, 6, 4)
    a = sampler.sample(np.random.default_rng(9), 6)
    b = sampler.sample(9, 6)
    c = sampler.sample(10, 6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not (a.xs.shape == c.xs.shape and np.array_equal(a.xs, c.xs))
    # A passed Generator is advanced, not copied.
    rng = np.random.default_rng(9)
    first, second = sampler.draw_ids(rng, 2), sampler.draw_ids(rng, 2)
    assert isinstance(first, EpisodeIds)
    assert not np.array_equal(first.support, second.support) or not np.array_equal(first.classes, second.classes)


def test_support_helpers():
    ys = np.array([[0, 0, 1, 2, -1, -1], [0, 1, 1, 1, 2, 2]])
    np.testing.assert_array_equal(support_counts(ys, 3), [[2, 1, 1], [1, 3, 2]])
    np.testing.assert_array_equal(support_mask(ys), ys >= 0)
    with pytest.raises(ValueError, match='label 2 is out of range for way 2'):
        support_counts(ys, 2)
