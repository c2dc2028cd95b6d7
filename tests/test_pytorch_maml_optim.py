"""--optimizer torch_adam: torch.optim.Adam (PyTorch-MAML's `adam`), step for step."""
import numpy as np
import pytest
import tensorflow as tf

import main
from model import optim
from tests.test_pytorch_maml_runner import runner

torch = pytest.importorskip('torch', reason='needs torch: pip install -e ".[golden]"')

# Gradients from 1e-9 to 10: where sqrt(v) is near epsilon the two Adams part.
GRADS = [np.array([[1e-9, -3e-7], [2e-4, -0.5]]), np.array([[4e-9, 1e-7], [-1e-3, 10.]]),
         np.array([[-2e-9, 5e-7], [3e-4, 0.25]])]
START = np.array([[0.3, -0.2], [1.5, -1.0]])


def torch_adam_path(weight_decay, dtype):
    p = torch.nn.Parameter(torch.tensor(START, dtype=dtype))
    opt = torch.optim.Adam([p], lr=1e-3, weight_decay=weight_decay)
    path = []
    for g in GRADS:
        p.grad = torch.tensor(g, dtype=dtype)
        opt.step()
        path.append(p.detach().numpy().copy())
    return path


def our_path(cls, weight_decay, dtype):
    v = tf.Variable(START.astype(dtype))
    opt = cls([v], 1e-3, weight_decay=weight_decay)
    path = []
    for g in GRADS:
        opt.apply([tf.constant(g.astype(dtype))])
        path.append(v.numpy().copy())
    return path


@pytest.mark.parametrize('weight_decay', [0., 5e-4])
@pytest.mark.parametrize('dtype,rtol', [('float64', 1e-15), ('float32', 1e-7)])
def test_torch_adam_equals_torch_optim_adam(weight_decay, dtype, rtol):
    """Three steps, each compared: to rounding in float64 and float32."""
    theirs = torch_adam_path(weight_decay, getattr(torch, dtype))
    ours = our_path(optim.TorchAdam, weight_decay, dtype)
    for step, (a, b) in enumerate(zip(ours, theirs), start=1):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=0, err_msg=f'step {step}')


def test_tf1_adam_is_not_torch_adam():
    """TF1's epsilon placement moves a parameter with a tiny gradient much less: the
    difference TorchAdam exists for."""
    theirs = torch_adam_path(0., torch.float64)[0]
    tf1 = our_path(optim.Adam, 0., 'float64')[0]
    step_torch, step_tf1 = theirs - START, tf1 - START
    assert abs(step_tf1[0, 0]) < 0.1 * abs(step_torch[0, 0])     # g = 1e-9
    np.testing.assert_allclose(step_tf1[1, 1], step_torch[1, 1], rtol=1e-5)   # g = -0.5


def test_torch_adam_through_the_command_line(tmp_path):
    """--optimizer torch_adam reaches the runner, and the flag lists this module's choices."""
    assert main.FLAGS['optimizer'].parser.enum_values == list(optim.OPTIMIZERS)
    r = runner(tmp_path, '--optimizer', 'torch_adam', '--n_train_iters', '1')
    assert type(r.optimizer) is optim.TorchAdam
    assert r.optimizer.learning_rate.dtype == tf.float64
