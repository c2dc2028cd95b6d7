"""benchmarks/omniglot_embeddings.py on a tiny synthetic stand-in for the Omniglot subsets:
deepmind/leo's pickle layout, and that pretraining learns."""
import json
import pickle
import types

import numpy as np
import pytest

from benchmarks import omniglot_embeddings as oe
from data.episodes import ClassSplit


def _split(name, names, n_per_class, rng, rotations=True):
    """Stored classes of noisy copies of one random 28x28 pattern each."""
    protos = rng.random((len(names), 1, 28, 28, 1)) < 0.2
    noise = rng.random((len(names), n_per_class, 28, 28, 1)) < 0.05
    images = (protos ^ noise).astype(np.uint8) * 255
    return ClassSplit(images, names=names, rotations=rotations, name=name)


@pytest.fixture(scope='module')
def tiny_ds():
    rng = np.random.default_rng(0)
    # Names with the separators LEO splits on ('-', '_') and the '/' and '@' of real names.
    train = _split('train', ['Japanese_(hiragana)/character01', 'Japanese_(hiragana)/character02',
                             'Greek-x/character01', 'Greek-x/character10'], 12, rng)
    val = _split('val', ['Latin/character01', 'Latin/character02'], 12, rng)
    # Classes of different sizes, without rotations.
    test = ClassSplit([rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8) for n in (6, 7, 8, 9, 10, 11)],
                      names=[f'Korean/character{i:02d}' for i in range(1, 7)], name='test')
    return types.SimpleNamespace(train=train, val=val, test=test, description='tiny synthetic')


@pytest.fixture(scope='module')
def written(tiny_ds, tmp_path_factory):
    out = tmp_path_factory.mktemp('emb')
    report = oe.run(tiny_ds, str(out), epochs=1, n_channel=16, batch_size=8, lr=3e-3, n_holdout=2,
                    seed=0, probe_episodes=20, log=lambda s: None)
    return out, report


def _load(path):
    with open(path, 'rb') as f:
        raw = f.read()
    assert raw[:2] == b'\x80\x02'  # pickle protocol 2
    return pickle.loads(raw, encoding='latin1')  # as deepmind/leo loads it under Python 3


@pytest.mark.parametrize('name', oe.SPLITS)
def test_pickle_layout(written, tiny_ds, name):
    out, _ = written
    data = _load(out / f'{name}_embeddings.pkl')
    split = getattr(tiny_ds, name)
    emb, keys = data['embeddings'], data['keys']
    assert isinstance(keys, np.ndarray) and keys.dtype.kind == 'U'
    assert emb.dtype == np.float32 and emb.shape == (int(split.counts.sum()), 16)
    assert np.isfinite(emb).all()
    assert len(keys) == len(emb)

    labels, files = [], []
    for k in keys:
        fields = str(k).split('-')
        assert len(fields) == 3, k
        _, label, image_file = fields
        assert image_file.split('_')[0] == label, k
        assert '_' not in label and image_file.endswith('.png')
        labels.append(label)
        files.append(image_file)
    assert len(set(files)) == len(files)  # image file names unique within the split
    # Classes contiguous, in class order, one label per class with its image count.
    runs = [labels[0]] + [b for a, b in zip(labels, labels[1:]) if a != b]
    assert len(runs) == len(set(runs)) == split.n_classes
    assert runs == [oe.class_label(split.class_name(c)) for c in range(split.n_classes)]
    assert [labels.count(r) for r in runs] == [int(n) for n in split.counts]


def test_class_label():
    assert oe.class_label('Japanese_(hiragana)/character01@rot90') == 'Japanese.(hiragana).character01.rot90'
    assert oe.class_label('a-b_c') == 'a.b.c'
    with pytest.raises(ValueError, match='collide'):
        oe.class_labels(ClassSplit(np.zeros((2, 1, 4, 4, 1), np.float32), names=['a_b', 'a-b']))


def test_pretraining_lowers_the_loss_and_report(written, tiny_ds):
    out, report = written
    saved = json.loads((out / 'pretrain.json').read_text())
    assert saved['embedding_dim'] == 16
    assert saved['class_counts'] == {'train': 16, 'val': 8, 'test': 6}
    # The training images evaluated the same way before and after one epoch (about 0.3 lower).
    assert saved['final_train_loss'] < saved['initial_train_loss'] - 0.1
    assert report['final_train_loss'] == saved['final_train_loss']
    assert 0. <= saved['holdout_acc'] <= 1. and saved['n_holdout_images'] == 16 * 2
    assert saved['settings']['bn_stats'] == 'population'
    assert 'centroid_5way_1shot' in saved['splits']['test']


@pytest.fixture(scope='module')
def untrained(tiny_ds):
    """(net, population statistics) of a network initialised and not trained."""
    net, stats, _ = oe.pretrain(tiny_ds.train, epochs=0, n_channel=4, batch_size=8, seed=1, log=lambda s: None)
    return net, stats


def test_population_embeddings_do_not_depend_on_the_batch(untrained, tiny_ds):
    """With population statistics an image's embedding is the same whatever is batched with it."""
    rng = np.random.default_rng(1)
    net, stats = untrained
    from model import nets
    x = tiny_ds.val.images(0, np.arange(5))
    alone = net.features(x[:1], norm=nets.GivenStats(stats)).numpy()
    batched = net.features(np.concatenate([x[:1], rng.random((7, 28, 28, 1), np.float32)]),
                           norm=nets.GivenStats(stats)).numpy()[:1]
    np.testing.assert_allclose(alone, batched, rtol=1e-5, atol=1e-6)
    emb = oe.embed_split(net, tiny_ds.val, stats)
    np.testing.assert_allclose(emb[:1], alone, rtol=1e-5, atol=1e-6)


def test_population_stats_are_the_statistics_of_the_whole_set(untrained, tiny_ds):
    """Layer 1: the moments of its input over all images at once; every layer: the same
    whatever the batch size they are accumulated over."""
    from model import nets
    net, _ = untrained
    x = np.concatenate([tiny_ds.train.images(c, np.arange(12)) for c in range(tiny_ds.train.n_classes)])
    record = {}
    net.features(x, norm=nets.BatchStats(record))
    stats = oe.population_stats(net, x, batch_size=len(x))
    np.testing.assert_allclose(stats['conv1'][0], record['conv1'][0], rtol=1e-3, atol=1e-5)  # float32 reference
    np.testing.assert_allclose(stats['conv1'][1], record['conv1'][1], rtol=1e-3, atol=1e-8)
    small = oe.population_stats(net, x, batch_size=7)
    for layer in net.bn_channels:
        for a, b in zip(stats[layer], small[layer]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
