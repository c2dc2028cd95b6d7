"""model/maml_convert.py on small cbfinn/maml-layout TF1 checkpoints written here: what it
converts, and every input it refuses with one `error:` line (the released checkpoint itself is
compared with the original in tests/golden/test_maml.py)."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import main
from model import maml_convert
from model.runner import Runner

v1 = tf.compat.v1
CHANNELS, WAY = 4, 3


def original_arrays(rng, channels=CHANNELS, way=WAY):
    """cbfinn/maml's Omniglot Conv4 (grey input, strided, head [C, way]) by variable name."""
    arrays = {}
    for l in range(1, 5):
        arrays[f'model/conv{l}'] = rng.normal(size=(3, 3, 1 if l == 1 else channels, channels))
        arrays['model/Variable' + ('' if l == 1 else f'_{l - 1}')] = rng.normal(size=channels)
        arrays[f'model/{l - 1}/beta'] = rng.normal(size=channels)
    arrays['model/w5'] = rng.normal(size=(channels, way))
    arrays['model/b5'] = rng.normal(size=way)
    return {k: v.astype(np.float32) for k, v in arrays.items()}


def write_tf1_checkpoint(prefix, arrays):
    """What the original's tf.train.Saver writes: one entry per variable name."""
    with tf.Graph().as_default():
        variables = [v1.Variable(value, name=name) for name, value in arrays.items()]
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            v1.train.Saver(variables).save(session, str(prefix), write_meta_graph=False)
    return prefix


def grey_folder(root, n_classes=3, per_class=2):
    rng = np.random.default_rng(0)
    for split in ('train', 'test'):
        for c in range(n_classes):
            for i in range(per_class):
                path = root / split / f'{split}{c}' / f'{i}.png'
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (28, 28), np.uint8)).save(path)
    return ['--dataset', 'folder', '--folder_dir', str(root), '--channels', '1',
            '--image_size', '28', '--noprogress', '--n_channel', str(CHANNELS)]


@pytest.fixture
def data(tmp_path):
    return grey_folder(tmp_path / 'images')


def convert(tmp_path, arrays, *flags, name='model1234'):
    prefix = write_tf1_checkpoint(tmp_path / 'orig' / name, arrays)
    return maml_convert.main(['--checkpoint', str(prefix), '--savedir',
                              str(tmp_path / 'out'), *flags])


def test_converts_names_and_values_for_meta_test(tmp_path, data, capsys):
    arrays = original_arrays(np.random.default_rng(0))
    arrays['model/conv1/Adam'] = np.zeros((3, 3, 1, CHANNELS), np.float32)   # skipped
    arrays['beta1_power'] = np.float32(0.9)
    assert convert(tmp_path, arrays, *data) == 0
    assert 'model-1234' in capsys.readouterr().out
    # --way came from the checkpoint; meta_test restores it with the same flags
    runner = Runner(main.parse_config(['--mode', 'meta_test', '--savedir', str(tmp_path / 'out'),
                                       '--backbone', 'maml_conv4', '--way', str(WAY), *data]))
    assert runner.restore_for_test().endswith('model-1234')
    names = maml_convert.variable_names(runner.model)
    for var in runner.model.outer_variables:
        np.testing.assert_array_equal(var.numpy(), arrays[names[var.ref()]])
    assert not runner.model.net.max_pool   # 28x28 grey: the Omniglot (strided) variant


def test_folder_and_prefix_spellings(tmp_path, data):
    arrays = original_arrays(np.random.default_rng(0))
    prefix = write_tf1_checkpoint(tmp_path / 'orig' / 'model7', arrays)
    assert maml_convert.main(['--checkpoint', str(tmp_path / 'orig'), '--savedir',
                              str(tmp_path / 'a'), *data]) == 0
    assert tf.train.latest_checkpoint(str(tmp_path / 'a')).endswith('model-7')
    assert maml_convert.main(['--checkpoint', f'{prefix}.index', '--savedir',
                              str(tmp_path / 'b'), '--iteration', '3', *data]) == 0
    assert tf.train.latest_checkpoint(str(tmp_path / 'b')).endswith('model-3')


def refused(capsys, code):
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, err
    return err


def test_refuses_missing_and_unreadable_checkpoints(tmp_path, data, capsys):
    err = refused(capsys, maml_convert.main(['--checkpoint', str(tmp_path / 'nope' / 'model1'),
                                             '--savedir', str(tmp_path / 'o'), *data]))
    assert 'model1.index does not exist' in err
    (tmp_path / 'empty').mkdir()
    err = refused(capsys, maml_convert.main(['--checkpoint', str(tmp_path / 'empty'),
                                             '--savedir', str(tmp_path / 'o'), *data]))
    assert 'no checkpoint' in err
    (tmp_path / 'bad.index').write_bytes(b'not a checkpoint')
    err = refused(capsys, maml_convert.main(['--checkpoint', str(tmp_path / 'bad'),
                                             '--savedir', str(tmp_path / 'o'), *data]))
    assert 'cannot read the checkpoint' in err


def test_names_every_missing_extra_and_misshapen_variable(tmp_path, data, capsys):
    arrays = original_arrays(np.random.default_rng(0))
    arrays['model/b5_renamed'] = arrays.pop('model/b5')
    arrays['model/conv2'] = np.zeros((3, 3, CHANNELS, 8), np.float32)
    err = refused(capsys, convert(tmp_path, arrays, *data))
    assert 'missing model/b5' in err and 'unexpected model/b5_renamed' in err
    assert 'model/conv2: [3, 3, 4, 8] in the file, [3, 3, 4, 4] here' in err
    assert not (tmp_path / 'out' / 'checkpoint').exists()


def test_refuses_a_checkpoint_of_another_size_or_model(tmp_path, data, capsys):
    arrays = original_arrays(np.random.default_rng(0))
    err = refused(capsys, convert(tmp_path, arrays, *data, '--n_channel', '8'))
    assert 'shapes differ' in err and '--n_channel' in err
    err = refused(capsys, convert(tmp_path, arrays, *data, '--backbone', 'conv4'))
    assert '--backbone maml_conv4' in err
    err = refused(capsys, convert(tmp_path, arrays, *data, '--model', 'metasgd'))
    assert '--model metasgd' in err
    err = refused(capsys, convert(tmp_path, arrays, *data, '--way', '0'))
    assert '--way must be a positive integer' in err
    err = refused(capsys, convert(tmp_path, arrays, '--dataset', 'folder', '--folder_dir',
                                  str(tmp_path / 'no_images')))
    assert 'no_images' in err


def test_refuses_to_overwrite_a_checkpoint(tmp_path, data, capsys):
    arrays = original_arrays(np.random.default_rng(0))
    assert convert(tmp_path, arrays, *data) == 0
    err = refused(capsys, convert(tmp_path, arrays, *data, name='model5'))
    assert 'already holds a checkpoint' in err
