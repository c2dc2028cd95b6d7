"""--mode embed (model/embed.py): a tiny checkpoint -> LEO's files (pickle and npz) that the
LEO reader loads, batch-norm statistics of the meta-train split only, crops, the probe,
one-line errors, and LEO training on the output; WRN-28-10's size against the paper."""
import json
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf

import main
from data import leo as leo_data
from data.episodes import ClassSplit
from model import embed, resnets
from model.runner import Runner, RunError

SIDE = 28


def _split(name, n_classes, n_per, rng, noise=0.05, names=None):
    """Classes of noisy copies of one random binary pattern each (separable)."""
    protos = rng.random((n_classes, 1, SIDE, SIDE, 1)) < 0.3
    flips = rng.random((n_classes, n_per, SIDE, SIDE, 1)) < noise
    images = (protos ^ flips).astype(np.uint8) * 255
    names = names or [f'{name}_alpha-{c}/character{c:02d}' for c in range(n_classes)]
    return ClassSplit(images, names=names, name=name)


def tiny_dataset(base, seed=0, noise=0.05, val_test_seed=None):
    rng = np.random.default_rng(seed)
    train = _split('train', 8, 8, rng, noise)
    rng = np.random.default_rng(seed if val_test_seed is None else val_test_seed)
    rng.random(1)
    return base._replace(train=train, val=_split('val', 6, 8, rng, noise),
                         test=_split('test', 6, 8, rng, noise), description='tiny separable')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A MAML Conv4-16 runner in --mode embed with a saved (untrained) checkpoint model-0."""
    d = tmp_path_factory.mktemp('embed_run')
    savedir = d / 'run'
    savedir.mkdir()
    cfg = main.parse_config(['--mode', 'embed', '--model', 'maml', '--dataset', 'synthetic',
                             '--n_channel', '16', '--way', '5', '--noprogress',
                             '--savedir', str(savedir), '--embed_batch_size', '16'])
    runner = Runner(cfg, log=lambda s: None)
    base = runner.dataset
    runner.dataset = tiny_dataset(base)
    runner.save(runner.manager(), 0)
    runner.base_dataset = base
    return runner


def embed_into(runner, out, crops='center:28', dataset=None, probe_episodes=200):
    runner.cfg.embed_dir = str(out)
    runner.cfg.embed_crops = crops
    if dataset is not None:
        runner.dataset = dataset
    return embed.embed(runner, probe_episodes=probe_episodes)


@pytest.fixture(scope='module')
def written(run, tmp_path_factory):
    out = tmp_path_factory.mktemp('embeddings')
    return out, embed_into(run, out, 'center:28,multiview:24')


@pytest.mark.parametrize('split', embed.SPLITS)
def test_files_load_through_the_leo_reader_in_both_layouts(written, run, split):
    out, record = written
    pkl, npz = out / f'{split}_embeddings.pkl', out / f'{split}_embeddings.npz'
    raw = pkl.read_bytes()
    assert raw[:2] == b'\x80\x02'   # pickle protocol 2, as deepmind/leo's Python 2 files
    data = pickle.loads(raw, encoding='latin1')
    emb, keys = data['embeddings'], data['keys']
    s = run.dataset.split(split)
    assert emb.dtype == np.float32 and emb.shape == (int(s.counts.sum()), 16)
    labels, ids = leo_data.class_index(keys, pkl)   # the original's key checks
    assert labels == [embed.class_label(s.class_name(c)) for c in range(s.n_classes)]
    assert all('_' not in lab and '-' not in lab for lab in labels)
    with np.load(npz, allow_pickle=False) as z:
        np.testing.assert_array_equal(z['embeddings'], emb)
        np.testing.assert_array_equal(z['keys'], keys)
    before = os.stat(npz).st_mtime_ns
    loaded = leo_data.read_embeddings(pkl, 'rewrite it')
    assert os.stat(npz).st_mtime_ns == before   # the reader took the npz, no conversion
    np.testing.assert_array_equal(loaded.embeddings, emb)
    ds = leo_data.load_custom(data_path=str(out))
    assert ds.split(split).n_classes == s.n_classes
    # multiview in its own folder, same layout, another crop
    mv = pickle.loads((out / 'multiview' / f'{split}_embeddings.pkl').read_bytes(), encoding='latin1')
    assert mv['embeddings'].shape == emb.shape and not np.allclose(mv['embeddings'], emb)
    np.testing.assert_array_equal(mv['keys'], keys)
    assert record['crops']['multiview']['views'] == 10 and record['crops']['center']['side'] == 28


def test_embed_json_records_settings_shapes_and_probe(written, run):
    out, record = written
    saved = json.loads((out / embed.EMBED_JSON).read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved['checkpoint'].endswith('model-0') and saved['embedding_dim'] == 16
    assert saved['batch_norm']['layers'] == 4 and saved['batch_norm']['images'] == 64
    assert saved['crops']['center']['splits']['test']['shape'] == [48, 16]
    probe = saved['crops']['center']['splits']['test']['centroid_5way_1shot']
    assert probe['episodes'] == 200 and probe['query'] == 7
    assert os.stat(out / 'train_embeddings.pkl').st_mode & 0o777 == 0o666 & ~embed.UMASK


def test_probe_is_above_chance_on_separable_data_and_at_chance_on_noise(written, run, tmp_path):
    _, record = written
    assert record['crops']['center']['splits']['test']['centroid_5way_1shot']['accuracy'] > 0.6
    saved = run.dataset
    try:   # images of pure noise: no class information, so the probe must fall to chance
        noise = embed_into(run, tmp_path, 'center:28', tiny_dataset(saved, noise=0.5))
    finally:
        run.dataset = saved
    assert noise['crops']['center']['splits']['test']['centroid_5way_1shot']['accuracy'] < 0.35


def test_batch_norm_statistics_come_from_the_train_split_only(written, run, tmp_path):
    """Other val/test images leave the train embeddings (and so the statistics) unchanged;
    other train images change them; an image's embedding does not depend on its batch."""
    out, _ = written
    train = pickle.loads((out / 'train_embeddings.pkl').read_bytes())['embeddings']
    test = pickle.loads((out / 'test_embeddings.pkl').read_bytes())['embeddings']
    saved = run.dataset
    try:
        embed_into(run, tmp_path / 'a', 'center:28', tiny_dataset(saved, val_test_seed=7))
        run.cfg.embed_batch_size = 5
        embed_into(run, tmp_path / 'b', 'center:28', saved)
        embed_into(run, tmp_path / 'c', 'center:28',
                   saved._replace(train=tiny_dataset(saved, seed=3).train))
    finally:
        run.dataset = saved
        run.cfg.embed_batch_size = 16
    other_val_test = pickle.loads((tmp_path / 'a' / 'train_embeddings.pkl').read_bytes())['embeddings']
    np.testing.assert_array_equal(other_val_test, train)
    rebatched = pickle.loads((tmp_path / 'b' / 'test_embeddings.pkl').read_bytes())['embeddings']
    np.testing.assert_allclose(rebatched, test, rtol=1e-5, atol=1e-6)
    # The same test images with other train images: only the statistics differ, and they do.
    other_train = pickle.loads((tmp_path / 'c' / 'test_embeddings.pkl').read_bytes())['embeddings']
    assert np.abs(other_train - test).max() > 1e-3


def test_population_statistics_are_the_moments_of_the_train_images(run):
    """Layer 1's statistics are the moments of its input over all train images at once."""
    net = run.model.net
    x = np.concatenate(list(embed.split_batches(run.dataset.train, 1000)))
    record = {}
    from model import nets
    net.features(x, norm=nets.BatchStats(record))
    stats = embed.population_stats(lambda xb, norm: net.features(xb, norm=norm),
                                   list(net.bn_channels),
                                   lambda: embed.split_batches(run.dataset.train, 7))
    np.testing.assert_allclose(stats['conv1'][0], record['conv1'][0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats['conv1'][1], record['conv1'][1], rtol=1e-4, atol=1e-8)


def test_crops():
    assert [embed.default_side(s) for s in (84, 28, 32)] == [80, 27, 30]
    assert embed.parse_crops('center,multiview', (84, 84, 3)) == [embed.Crop('center', 80),
                                                                 embed.Crop('multiview', 80)]
    assert embed.crop_offsets('multiview', 84, 84, 80) == [(2, 2), (0, 0), (0, 4), (4, 0), (4, 4)]
    x = tf.reshape(tf.range(2 * 6 * 6, dtype=tf.float32), [2, 6, 6, 1])
    v = embed.views(x, embed.Crop('multiview', 4))
    assert len(v) == 10 and all(t.shape == (2, 6, 6, 1) for t in v)
    whole = embed.views(x, embed.Crop('center', 6))
    np.testing.assert_array_equal(whole[0], x)
    for spec, msg in (('center:90', 'larger than'), ('multiview:84', 'smaller than'),
                      ('corner', 'unknown crop'), ('center,center:80', 'twice'),
                      ('center:x', 'positive integer'), ('', 'empty')):
        with pytest.raises(RunError, match=msg):
            embed.parse_crops(spec, (84, 84, 3))
    with pytest.raises(RunError, match='needs images'):
        embed.parse_crops('center', (640,))


def test_statistics_may_use_the_first_images_of_every_class(run):
    train = run.dataset.train   # 8 classes of 8
    assert embed.stats_per_class(train, 0) is None and embed.n_images(train) == 64
    assert embed.stats_per_class(train, 20) == 3 and embed.n_images(train, 3) == 24
    batches = list(embed.split_batches(train, 5, per_class=3))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 4]
    np.testing.assert_array_equal(batches[0][3:5], train.images(1, np.arange(2)))


def test_bad_input_is_one_error_line(run, tmp_path, capsys):
    run.cfg.embed_dir = str(tmp_path / 'x')
    run.cfg.embed_crops = 'center:29'
    with pytest.raises(RunError, match='larger than the 28x28'):
        embed.embed(run)
    for argv, msg in (
            (['--model', 'leo', '--dataset', 'leo_custom', '--mode', 'embed',
              '--savedir', str(tmp_path / 'l')], 'leo'),
            (['--model', 'maml', '--dataset', 'synthetic', '--mode', 'embed', '--n_channel', '16',
              '--noprogress', '--savedir', str(tmp_path / 'none')], 'no checkpoint')):
        with pytest.raises(SystemExit) as e:
            main.cli(['main.py', *argv])
        assert e.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error:') and msg in err[0], err


def test_a_short_leo_run_reads_the_output(written, tmp_path):
    out, _ = written
    from model.leo_runner import LeoRunner
    argv = ['--model', 'leo', '--dataset', 'leo_custom', '--data_path', str(out), '--noprogress',
            '--savedir', str(tmp_path / 'leo'), '--num_latents', '4',
            '--total_examples_per_class', '8', '--query', '3', '--metabatch', '2',
            '--n_steps', '1', '--finetuning_unroll_length', '1', '--metavalid_batch_size', '4',
            '--n_val_batches', '1', '--metatest_batch_size', '4', '--n_test_iters', '8',
            '--nouse_64bits_dtype', '--num_steps_limit', '2', '--checkpoint_steps', '1']
    runner = LeoRunner(main.parse_config(argv), log=lambda s: None)
    assert runner.dataset.image_shape == (16,)
    runner.meta_train()
    result = LeoRunner(main.parse_config(argv + ['--evaluation_mode']), log=lambda s: None).meta_test()
    assert result['n_episodes'] == 8 and 0 <= result['accuracy'] <= 100


def test_wrn28_10_has_the_papers_size_and_640_d_features():
    """Zagoruyko & Komodakis: WRN-28-10 has 36.5M parameters (CIFAR-10 head); LEO's
    embeddings are its 640-d penultimate features."""
    net = resnets.WideResNet(10, (32, 32, 3))
    n = sum(int(np.prod(v.shape)) for v in net.theta.values())
    assert n == 36_479_194 and round(n / 1e6, 1) == 36.5
    assert len(net.bn_channels) == 25   # 2 per block x 12 blocks + the final one
    convs = [k for k in net.theta if k.endswith('_w') and 'conv' in k and '_sc_' not in k]
    assert len(convs) == 25             # + the dense layer: the 26 of 6n + 4 = 28 minus shortcuts
    feats = net.features(tf.zeros([2, 32, 32, 3]))
    assert feats.shape == (2, 640) and net.feature_dim == 640
    assert net(tf.zeros([2, 32, 32, 3])).shape == (2, 10)


MTL_TINY = ['--model', 'mtl', '--dataset', 'synthetic', '--img_size', '16', '--noprogress']


def test_mtl_pretraining_snapshot_and_meta_trained_model(tmp_path):
    """MTL: the pre-training snapshot weights-<i> (backbone alone; population statistics go
    through MtlBackbone's batch norm), and its meta-trained model when the savedir holds one."""
    from model import mtl
    from model.mtl_runner import MtlRunner, backbone_checkpoint, weights_path
    savedir = tmp_path / 'mtl'
    # A snapshot as pre-training writes it (untrained: what is tested is where it is read).
    pre = mtl.MtlPretrainNet(8, 'resnet12', (SIDE, SIDE, 1), img_size=16)
    backbone_checkpoint(pre.backbone).write(weights_path(str(savedir / 'pretrain'), 1))
    # --mode embed with the flags of meta_test (main.py's validation of --model mtl --mode
    # embed is the method registry's)
    cfg = main.parse_config(['--savedir', str(savedir), '--mode', 'meta_test', '--pre_iter', '-1',
                             *MTL_TINY])
    cfg.mode, cfg.embed_batch_size = 'embed', 16
    runner = MtlRunner(cfg, log=lambda s: None)
    runner.dataset = tiny_dataset(runner.dataset)
    rec = embed_into(runner, tmp_path / 'pre', 'center:28', probe_episodes=20)
    assert rec['checkpoint'].endswith('weights-1') and rec['embedding_dim'] == 512
    assert rec['batch_norm']['layers'] == 12 and 'pre-trained backbone' in rec['feature_layer']
    net = runner.model.backbone
    first = net.bn_layers[:1]
    stats = embed.population_stats(lambda x, norm: net.features(x, stats=norm), first,
                                   lambda: embed.split_batches(runner.dataset.train, 64))
    record = {}
    from model import nets
    x = np.concatenate(list(embed.split_batches(runner.dataset.train, 64)))
    net.features(x, stats=nets.BatchStats(record))
    np.testing.assert_allclose(stats[first[0]][0], record[first[0]][0], rtol=1e-4, atol=1e-6)
    # A meta-trained checkpoint in the savedir takes precedence (with scaling and shifting).
    runner.model.copy_shift_from_backbone()
    runner.model.ss['block1_conv1'].assign(2. * tf.ones_like(runner.model.ss['block1_conv1']))
    runner.save(runner.manager(), 0)
    runner.model.ss['block1_conv1'].assign(tf.ones_like(runner.model.ss['block1_conv1']))
    ex = embed.extractor(runner)
    assert ex.checkpoint.endswith('model-0') and 'scaling and shifting' in ex.layer
    assert np.abs(ex.features(x[:4], None).numpy() - net.features(x[:4]).numpy()).max() > 1e-4


def test_wrn28_10_pretraining_snapshot_loads_into_mtl_and_meta_transfer_is_refused(tmp_path):
    from model import mtl
    from model.mtl_runner import MtlRunner, backbone_checkpoint
    pre = mtl.MtlPretrainNet(7, 'wrn28_10', (28, 28, 1), img_size=16)
    loss, _ = pre.batch_loss(tf.zeros([2, 28, 28, 1]), tf.constant([0, 1]))
    assert pre.fc['w5'].shape == (640, 7) and np.isfinite(loss.numpy())
    backbone_checkpoint(pre.backbone).write(str(tmp_path / 'weights-1'))
    model = mtl.MTL(5, 1, (28, 28, 1), 'wrn28_10', img_size=16)
    assert not model.ss and model.fc['w5'].shape == (640, 5)
    backbone_checkpoint(model.backbone).read(str(tmp_path / 'weights-1')).assert_existing_objects_matched()
    for a, b in zip(pre.backbone.weights.values(), model.backbone.weights.values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    import types
    with pytest.raises(RunError, match='feature extractor'):
        MtlRunner(types.SimpleNamespace(backbone_arch='wrn28_10', mode='meta_train'))
