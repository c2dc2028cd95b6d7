"""Speed settings keep the numerics: the meta-gradient with TensorFlow's oneDNN kernels (on
by default, see model/__init__.py) equals the one with its plain kernels."""
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import sys
import numpy as np
import tensorflow as tf
from model import nets, maml
tf.random.set_seed(0)
net = nets.Conv4(5, n_channel=16, image_shape=(28, 28, 1))
model = maml.MAML(net, inner_lr=0.1, n_steps=2)
rng = np.random.default_rng(0)
xs = tf.constant(rng.random((5, 28, 28, 1), dtype=np.float32))
xq = tf.constant(rng.random((15, 28, 28, 1), dtype=np.float32))
ys = tf.constant(np.arange(5, dtype=np.int32))
yq = tf.constant(np.repeat(np.arange(5, dtype=np.int32), 3))
with tf.GradientTape() as tape:
    loss, _ = model.task_loss(xs, ys, xq, yq)
grads = tape.gradient(loss, model.outer_variables)
np.savez(sys.argv[1], loss=loss.numpy(), *[g.numpy() for g in grads])
'''


def meta_gradient(tmp_path, onednn):
    out = tmp_path / f'onednn{onednn}.npz'
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=str(onednn), TF_CPP_MIN_LOG_LEVEL='2')
    subprocess.run([sys.executable, '-c', SCRIPT, str(out)], cwd=REPO, env=env, check=True,
                   timeout=300)
    return np.load(out)


def test_onednn_kernels_give_the_plain_kernels_meta_gradient(tmp_path):
    fast, plain = meta_gradient(tmp_path, 1), meta_gradient(tmp_path, 0)
    assert fast['loss'] == np.float32(fast['loss']) and abs(fast['loss'] - plain['loss']) < 1e-5
    grads = [k for k in plain.files if k != 'loss']
    # Conv biases have a true meta-gradient of exactly zero (batch norm cancels them), so
    # their entries are pure round-off: tolerances are relative to the overall scale.
    overall = max(np.abs(plain[k]).max() for k in grads)
    for k in grads:
        np.testing.assert_allclose(fast[k], plain[k], rtol=1e-3, atol=1e-4 * overall, err_msg=k)
