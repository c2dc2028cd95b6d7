"""Synthetic stroke glyphs: deterministic, Omniglot-like, learnable but not trivial."""
import numpy as np
import pytest

from data.datasets import DatasetError, load_dataset
from data.episodes import EpisodeSampler


def nearest_neighbour_accuracy(split, way=5, shot=1, query=15, n_tasks=300, seed=1):
    """Accuracy of 1-NN in pixel space (L2 to the support images) on `n_tasks` episodes."""
    ep = EpisodeSampler(split, way, shot, query).sample(np.random.default_rng(seed), n_tasks)
    xs = ep.xs.reshape(n_tasks, way * shot, -1)
    xq = ep.xq.reshape(n_tasks, way * query, -1)
    d2 = (xq ** 2).sum(-1)[:, :, None] - 2 * xq @ xs.transpose(0, 2, 1) + (xs ** 2).sum(-1)[:, None, :]
    pred = np.take_along_axis(ep.ys, d2.argmin(-1), axis=1)
    return float((pred == ep.yq).mean())


@pytest.fixture(scope='module')
def default():
    return load_dataset('synthetic')


def test_default_shapes_and_values(default):
    ds = default
    assert ds.name == 'synthetic' and ds.image_shape == (28, 28, 1) and not ds.val_is_test
    assert (ds.train.n_classes, ds.val.n_classes, ds.test.n_classes) == (600, 100, 200)
    assert all((s.counts == 20).all() for s in (ds.train, ds.val, ds.test))
    x = ds.test.images(3, range(20))
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    assert x.max() > 0.9 and x.mean() < 0.3  # bright strokes on a dark background
    assert '600' in ds.description and 'seed 0' in ds.description


def test_learnable_but_not_trivial(default):
    acc = nearest_neighbour_accuracy(default.test)
    print(f'5-way 1-shot pixel nearest-neighbour accuracy on the synthetic test split: {acc:.3f}')
    assert 0.40 < acc < 0.90


def test_examples_of_a_class_vary_and_classes_differ(default):
    x = default.train.gather(np.arange(50), np.tile(np.arange(20), (50, 1))).reshape(50, 20, -1)
    within = np.abs(x[:, 0] - x[:, 1]).mean()
    between = np.abs(x[:-1, 0] - x[1:, 0]).mean()
    assert 0 < within < between


def test_same_seed_same_data_other_seed_other_data():
    small = dict(n_train=6, n_val=3, n_test=4)
    a = load_dataset('synthetic', seed=3, **small)
    b = load_dataset('synthetic', seed=3, **small)
    c = load_dataset('synthetic', seed=4, **small)
    for which in ('train', 'val', 'test'):
        ia = getattr(a, which).gather(np.arange(3), np.tile(np.arange(20), (3, 1)))
        ib = getattr(b, which).gather(np.arange(3), np.tile(np.arange(20), (3, 1)))
        ic = getattr(c, which).gather(np.arange(3), np.tile(np.arange(20), (3, 1)))
        np.testing.assert_array_equal(ia, ib)
        assert not np.array_equal(ia, ic)
    # Splits do not share glyphs, and a split does not depend on the sizes of the others.
    assert not np.array_equal(a.train.images(0, [0]), a.test.images(0, [0]))
    d = load_dataset('synthetic', seed=3, n_train=2, n_val=1, n_test=4)
    np.testing.assert_array_equal(d.test.images(2, range(20)), a.test.images(2, range(20)))


def test_bad_options():
    with pytest.raises(DatasetError, match='seed'):
        load_dataset('synthetic', seed=-1)
    with pytest.raises(DatasetError, match='n_test'):
        load_dataset('synthetic', n_test=0)
