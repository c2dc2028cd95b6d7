"""The default path's meta-gradients (the fused batch norm where it applies, oneDNN on, inside
tf.function as training runs them) against float64, at every image shape the project runs
(issue 19).

ReLU, leaky ReLU and max-pool gradients jump at their kinks (an input crossing 0, a window's two
largest values swapping), so a value within float32 rounding of a kink may send a gradient
elsewhere and move the whole meta-gradient by percents, on the fused and the plain path alike
(benchmarks/fused_bn_check.py shows both). The float64 reference is therefore taken on the same
smooth piece: the float32 run records every ReLU's sign and every max-pool window's maximum, and
the float64 run imposes them (`Kinks`). On that piece float32 agrees to a few 1e-6; the tolerance,
1e-4 of each tensor's scale, is far below any error that matters (issue 19's was 3-6e-2).
Covered: Meta-Dropout's multiplier and maml_conv4 (fused), PyTorch-MAML's ConvNet4 (plain,
torch's epsilon), TAML's z, gamma and omega with its inference network, MTL's ResNet-12 and
ResNet-18 (input resized to 224) with scaling and shifting, and PyTorch-MAML's ResNet-12 and
ResNet-18 (narrowed to 4-16 channels; `python -m benchmarks.fused_bn_check --table` runs
ResNet-18 at its own widths too). The machinery (Kinks, the twins, the error measure, the
cases) is benchmarks/fused_bn_check.py's, whose table prints the same errors per tensor group."""
import os

import numpy as np
import pytest
import tensorflow as tf

from benchmarks.fused_bn_check import (Kinks, conv4_case, conv4_pair, mtl_case, resnet_case,
                                       twin_errors, twin_values)
from model import mtl

REPRO = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), 'shared', 'repro', 'fused_bn_84', 'episode_weights.npz')
TOLERANCE = 1e-4


def assert_matches_float64(model, twin, episode, kinks, fused=True, zero_parts=(),
                           tolerance=TOLERANCE):
    """Every tensor of the float32 meta-gradient (and the loss) within `tolerance` of its
    scale of the float64 twin's on the same kinks (benchmarks.fused_bn_check.twin_errors);
    the fused kernel in the graph where (and only where) it applies. Returns the worst."""
    has_fused, errors = twin_errors(model, twin, episode, kinks, zero_parts)
    assert has_fused == fused, 'the fused kernel where (and only where) it applies'
    assert len(errors) > 3
    for name, err in errors:
        assert err <= tolerance, f'{name}: {err:.1e}'
    return max(err for _, err in errors)


def assert_case(case, tolerance=TOLERANCE):
    return assert_matches_float64(case.model, case.twin, case.episode, case.kinks, case.fused,
                                  case.zero_parts, tolerance)


# ---- issue 19's episode and weights: Meta-Dropout's Conv4 (8 channels) at 84x84x3 --------------
def test_issue19_episode_meta_gradient_matches_float64(monkeypatch):
    """Inner learning rate 0 as in the issue, so the query forward is the reproduction's."""
    if not os.path.exists(REPRO):
        pytest.skip(f'issue 19 reproduction absent ({REPRO})')
    d = np.load(REPRO)
    model, twin = conv4_pair('metadrop', (84, 84, 3), 8, 5, 'metadrop', inner_lr=0., n_steps=1)
    variables = {v.name: v for v in model.variables}
    for i in range(24):
        variables[str(d[f'name{i}'])].assign(d[f'w{i}'])
    twin_values(model, twin)
    episode = (d['xs'][0], d['ys'], d['xq'][0], d['yq'])
    assert_matches_float64(model, twin, episode, Kinks(monkeypatch))


# ---- the project's initialisers on image-like data, every shape ------------------------------
CONV4_CASES = [
    # (backbone variant, image, method, first order, max_pool)
    ('metadrop', (84, 84, 3), 'metadrop', False, True),   # Meta-Dropout's multiplier
    ('metadrop', (84, 84, 3), 'metadrop', True, True),
    ('maml', (84, 84, 3), 'maml', False, True),           # maml_conv4 on miniImageNet
    ('maml', (84, 84, 3), 'maml', True, True),
    ('maml', (32, 32, 3), 'maml', False, True),
    ('maml', (28, 28, 1), 'maml', False, False),          # its Omniglot setting: strided
    ('pytorch', (84, 84, 3), 'maml', False, True),        # PyTorch-MAML's ConvNet4 (plain BN,
    ('pytorch', (84, 84, 3), 'maml', True, True),         # torch's epsilon 1e-5)
    ('pytorch', (28, 28, 1), 'maml', False, True),
]


@pytest.mark.parametrize('variant,image,method,first_order,max_pool', CONV4_CASES)
def test_conv4_meta_gradient_matches_float64(monkeypatch, variant, image, method, first_order,
                                             max_pool):
    assert_case(conv4_case(monkeypatch, variant, image, method, first_order, max_pool))


# ---- TAML's z modulation (with gamma and omega) over the zero-head maml_conv4 ------------------
@pytest.mark.parametrize('image,first_order,max_pool', [
    ((32, 32, 3), False, True),     # CIFAR-FS / FC100-like
    ((32, 32, 3), True, True),
    ((28, 28, 1), False, False),    # Omniglot-like, strided
])
def test_taml_meta_gradient_matches_float64(monkeypatch, image, first_order, max_pool):
    """The encoder's convs, ReLUs and max-pools go through Kinks too; the twin draws the same
    fixed noise for the reparameterised omega, gamma, z; z's bias-shift halves (true
    meta-gradient 0) are measured against the overall scale."""
    assert_case(conv4_case(monkeypatch, 'maml', image, 'taml', first_order, max_pool))


# ---- MTL with scaling and shifting (narrowed), at 84x84x3 -------------------------------------
@pytest.mark.parametrize('arch,n_steps', [('resnet12', 1), ('resnet12', 2), ('resnet18', 2)])
def test_mtl_meta_gradient_matches_float64(monkeypatch, arch, n_steps):
    """MTL has no first-order mode (the original keeps the inner loop's gradients). Its inner
    loop adapts only the FC, so 'second order' is the FC cross-entropy's Hessian terms (FC x
    FC, FC x support features) through the unrolled steps; the backbone, its fused batch norm
    and ResNet-18's resize to 224 are differentiated once, into every scale and shift.
    ResNet-18 keeps its 64-channel first block at 224x224 (the largest batch-norm reduction);
    the float64 twin resizes with model.mtl.resize_bilinear_tf1."""
    case = mtl_case(monkeypatch, arch, n_steps)
    assert [v.dtype for v in case.twin.outer_variables] == [tf.float64] * len(
        case.model.outer_variables)
    # ResNet-12's first block's scales on the raw 84x84 image reach 8.4e-5 of their scale in
    # float32 itself (eager float32 gives the same, so not the fused kernel): 2e-4, still 150
    # times below a 3% error, keeps the test from sitting at its own float32 floor.
    assert_case(case, tolerance=2e-4)


# ---- PyTorch-MAML's ResNet-12 and ResNet-18 (narrowed: 4-8, 8-16 channels), at 84x84x3 -------
@pytest.mark.parametrize('arch,first_order,inputs', [
    ('resnet12', False, 'image'), ('resnet12', True, 'image'),
    ('resnet18', False, 'normal'), ('resnet18', True, 'image')])
def test_resnet_meta_gradient_matches_float64(monkeypatch, arch, first_order, inputs):
    """Batch norm with gamma and beta, leaky ReLU(0.1) (ResNet-12) or ReLU (ResNet-18), under
    MAML; torch's epsilon 1e-5 is below the fused kernel's minimum, so the plain arithmetic (as
    ConvNet4). 'normal': the reproduction's inputs (standard-normal images, the initial
    weights plus 0.05 N(0, 1)); 'image': image-like inputs, the initial weights."""
    assert_case(resnet_case(monkeypatch, arch, first_order, inputs))


# ---- MTL's resize to 224 in float64 (the twin's) -----------------------------------------------
@pytest.mark.parametrize('source,size', [((84, 84), (224, 224)), ((28, 28), (224, 224)),
                                         ((32, 32), (224, 224)), ((17, 23), (11, 29))])
def test_float64_resize_is_tf1s(source, size):
    """resize_bilinear_tf1 is TF 1.x's resize_images BILINEAR (no half-pixel centres): bitwise
    in float32 (the same grid and arithmetic), within float32 rounding in float64; TF 2's
    half-pixel resize, 0.2-0.6 away on these images, would fail both."""
    x = np.random.default_rng(0).random((2, *source, 3)).astype(np.float32)
    tf1 = tf.compat.v1.image.resize_images(x, size, tf.compat.v1.image.ResizeMethod.BILINEAR)
    assert tf1.dtype == tf.float32   # whatever its input: why the twin needs its own
    np.testing.assert_array_equal(mtl.resize_bilinear_tf1(tf.constant(x), size), tf1)
    ours = mtl.resize_bilinear_tf1(tf.constant(x.astype(np.float64)), size)
    assert ours.dtype == tf.float64
    np.testing.assert_allclose(ours, tf1, rtol=0, atol=2.5e-7)   # 2 float32 ulps below 1
    if size == (224, 224):   # MTL's prepare: the TF op in float32, ours in float64
        backbone = mtl.MtlBackbone('resnet18', (*source, 3), img_size=source[0])
        np.testing.assert_array_equal(backbone.prepare(x), tf1)
        np.testing.assert_array_equal(backbone.prepare(x.astype(np.float64)), ours)
