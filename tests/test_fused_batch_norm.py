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
torch's epsilon), TAML's z, gamma and omega with its inference network, and MTL's ResNet-12
with scaling and shifting and PyTorch-MAML's ResNet-12 (both narrowed to 4-8 channels)."""
import os

import numpy as np
import pytest
import tensorflow as tf

from model import maml, metadrop, mtl, nets, resnets, taml

REPRO = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), 'shared', 'repro', 'fused_bn_84', 'episode_weights.npz')
TOLERANCE = 1e-4


class Kinks:
    """Stands in for tf.nn.relu, the backbones' leaky ReLUs and tf.nn.max_pool2d: while
    recording it computes them and notes each one's choices (sign of each input, flat argmax
    of each window); while replaying it imposes the recorded choices, call by call."""

    def __init__(self, monkeypatch):
        self.relu_op, self.pool_op = tf.nn.relu, tf.nn.max_pool2d
        self.recorded, self.replay = [], None
        monkeypatch.setattr(tf.nn, 'relu', self.relu)
        monkeypatch.setattr(tf.nn, 'max_pool2d', self.max_pool2d)
        monkeypatch.setattr(resnets, 'leaky_relu_01', lambda t: self.leaky(t, 0.1))

    def next_choice(self):
        return self.replay.pop(0)

    def relu(self, x, name=None):
        if self.replay is not None:
            return tf.where(self.next_choice(), x, tf.zeros_like(x))
        y = self.relu_op(x)
        self.recorded.append(y > 0)
        return y

    def leaky(self, x, slope):
        if self.replay is not None:
            return tf.where(self.next_choice(), x, slope * x)
        y = tf.nn.leaky_relu(x, slope)
        self.recorded.append(y > 0)
        return y

    def leaky_max(self, act, slope):
        """MTL's leaky ReLU, max(x, slope x): the branch tf.maximum's gradient takes."""
        def leaky(x):
            if self.replay is not None:
                return tf.where(self.next_choice(), x, slope * x)
            self.recorded.append(x >= slope * x)
            return act(x)
        return leaky

    def max_pool2d(self, x, ksize, strides, padding, data_format='NHWC', name=None):
        if self.replay is not None:
            return tf.gather(tf.reshape(x, [-1]), self.next_choice())
        self.recorded.append(tf.nn.max_pool_with_argmax(x, ksize, strides, padding,
                                                        include_batch_in_index=True)[1])
        return self.pool_op(x, ksize, strides, padding, data_format, name)


def twin_values(model, twin):
    """Give the float64 twin the float32 model's values, variable by variable."""
    pairs = list(zip(model.variables, twin.variables))
    assert len(model.variables) == len(twin.variables) > 0
    for a, b in pairs:
        assert a.shape == b.shape and a.name == b.name and b.dtype == tf.float64
        b.assign(a.numpy().astype(np.float64))


def fixed_noise(shape, dtype):
    """The same deterministic 'draws' in either precision (computed in float64)."""
    n = tf.reduce_prod(shape)
    return tf.cast(tf.reshape(tf.sin(tf.cast(tf.range(n), tf.float64) * 0.7), shape), dtype)


def meta_gradient(model, episode):
    with tf.GradientTape() as tape:
        loss = model.task_loss(*episode)[0]
    return [loss] + tape.gradient(loss, model.outer_variables)


def assert_matches_float64(model, twin, episode, kinks, fused=True, zero_parts=(),
                           tolerance=TOLERANCE):
    """The float32 meta-gradient inside tf.function (recording the kinks) against the float64
    twin's eagerly on the same kinks; returns the largest error over its scale.
    zero_parts: (variable, boolean mask) pairs marking entries whose true meta-gradient is 0
    (as a conv bias before batch norm), measured against the overall scale, the rest of the
    tensor against its own."""
    @tf.function(autograph=False)
    def run():
        kinks.recorded.clear()
        return meta_gradient(model, [tf.constant(e) for e in episode]), list(kinks.recorded)
    concrete = run.get_concrete_function()
    ops = {op.type for op in concrete.graph.get_operations()}
    assert ('FusedBatchNormV3' in ops) == fused, 'the fused kernel where (and only where) it applies'
    fast, recorded = concrete()
    kinks.replay = [r.numpy() for r in recorded]
    reference = meta_gradient(twin, [tf.constant(e.astype(np.float64) if e.dtype == np.float32
                                                 else e) for e in episode])
    assert kinks.replay == [], 'the float64 run met every recorded ReLU and max-pool'
    kinks.replay = None
    overall = max(np.abs(r.numpy()).max() for r in reference[1:] if r is not None)
    zero = {v.ref(): mask for v, mask in zero_parts}
    names = ['loss'] + [v.name for v in model.outer_variables]
    masks = [None] + [zero.get(v.ref()) for v in model.outer_variables]
    checked, worst = 0, 0.
    for i, (name, f, r) in enumerate(zip(names, fast, reference)):
        assert (f is None) == (r is None), name
        if r is None:
            continue
        f, r = f.numpy().astype(np.float64), r.numpy()
        parts = [np.ones(r.shape, bool)] if masks[i] is None else [~masks[i], masks[i]]
        for part, exact_zero in zip(parts, (False, True)):
            err, size = np.abs(f - r)[part].max(), np.abs(r)[part].max()
            # Conv biases before batch norm have a true meta-gradient of exactly 0 (float64
            # gives round-off, float32 round-off): those are measured against the overall scale.
            scale = size if size > 1e-6 * overall and not exact_zero else overall
            if r.ndim == 1:
                # Any other bias or shift there is a sum over every position of terms batch
                # norm nearly cancels: its float32 round-off is that of the kernels' gradients,
                # not of its own small value (Meta-Dropout's phi biases at 84x84: 1e-3 of
                # their own scale, 6e-6 of the overall, tf.function and eager alike).
                scale = max(scale, 0.1 * overall)
            assert err <= tolerance * scale, f'{name} (#{i}): {err / scale:.1e}'
            worst = max(worst, err / scale)
        checked += 1
    assert checked > 2
    return worst


def image_episode(image, way=3, shot=1, query=2, seed=0):
    """Image-like inputs: pixels in [0, 1], smooth over space, as the loaders give."""
    rng = np.random.default_rng(seed)

    def images(n):
        coarse = rng.random((n, image[0] // 4 + 1, image[1] // 4 + 1, image[2]))
        smooth = tf.image.resize(coarse, image[:2], 'bilinear').numpy()
        return np.clip(smooth + 0.05 * rng.standard_normal((n, *image)), 0, 1).astype(np.float32)
    return (images(way * shot), np.repeat(np.arange(way), shot).astype(np.int32),
            images(way * query), np.repeat(np.arange(way), query).astype(np.int32))


def conv4_pair(variant, image, channels, way, method, first_order=False, inner_lr=0.1,
               n_steps=2, max_pool=True, zero_head=False):
    pair = []
    for dtype in (tf.float32, tf.float64):
        tf.random.set_seed(0)
        net = nets.Conv4(way, channels, image, variant, max_pool=max_pool, dtype=dtype,
                         zero_head=zero_head)
        if method == 'taml':
            model = taml.TAML(net, max_shot=2, inner_lr=inner_lr, n_steps=n_steps,
                              first_order=first_order, z_on=True, gamma_on=True,
                              omega_on=True)
        else:
            cls = metadrop.MetaDropout if method == 'metadrop' else maml.MAML
            model = cls(net, inner_lr=inner_lr, n_steps=n_steps, first_order=first_order)
        model.noise = fixed_noise
        pair.append(model)
    twin_values(*pair)
    return pair


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
    way = 2
    model, twin = conv4_pair(variant, image, 4, way, method, first_order, max_pool=max_pool,
                             zero_head=method == 'taml')
    assert_matches_float64(model, twin, image_episode(image, way, query=1), Kinks(monkeypatch),
                           fused=variant != 'pytorch')


# ---- TAML's z modulation (with gamma and omega) over the zero-head maml_conv4 ------------------
def z_shift_parts(model):
    """The halves of z's mean and scale heads that shift the conv biases (z_b): those biases
    come before batch norm, so the loss gives them a true meta-gradient of 0 (left: the KL's,
    ~1e-11 here), and float32 round-off there is measured against the overall scale."""
    _, to_mean, to_scale = model.encoder.heads['z']
    parts = []
    for layer in (to_mean, to_scale):
        for v in (layer.w, layer.b):
            mask = np.zeros(v.shape, bool)
            mask[..., model.n_z // 2:] = True
            parts.append((v, mask))
    return parts


@pytest.mark.parametrize('image,first_order,max_pool', [
    ((32, 32, 3), False, True),     # CIFAR-FS / FC100-like
    ((32, 32, 3), True, True),
    ((28, 28, 1), False, False),    # Omniglot-like, strided
])
def test_taml_meta_gradient_matches_float64(monkeypatch, image, first_order, max_pool):
    """The encoder's convs, ReLUs and max-pools go through Kinks too; the twin draws the same
    fixed noise for the reparameterised omega, gamma, z."""
    way = 2
    model, twin = conv4_pair('maml', image, 4, way, 'taml', first_order, max_pool=max_pool,
                             zero_head=True)
    assert_matches_float64(model, twin, image_episode(image, way, query=1), Kinks(monkeypatch),
                           zero_parts=z_shift_parts(model))


# ---- MTL's ResNet-12 with scaling and shifting (narrowed), at 84x84x3 -------------------------
def mtl_pair(monkeypatch, kinks, image, n_steps):
    """MTL (2-way 1-shot) over a ResNet-12 of 4, 4, 4, 8 channels, and its float64 twin: the
    same values in float64 variables under the same keys. The scales, shifts and FC start
    0.05 N(0, 1) away from their initial values, as after some meta-training."""
    monkeypatch.setattr(mtl, 'RESNET12_CHANNELS', (4, 4, 4, 8))
    monkeypatch.setattr(mtl, 'FEATURE_DIM', 8)
    tf.random.set_seed(0)
    pair = [mtl.MTL(2, 1, image, img_size=image[0], n_steps=n_steps, n_test_steps=n_steps)
            for _ in range(2)]
    model, twin = pair
    for v in model.outer_variables:
        v.assign_add(0.05 * tf.random.normal(v.shape))
    for source, target in ((model.backbone.weights, twin.backbone.weights),
                           (model.ss, twin.ss), (model.fc, twin.fc)):
        for k, v in source.items():
            target[k] = tf.Variable(tf.cast(v, tf.float64), name=v.name.split(':')[0],
                                    trainable=v.trainable)
    for m in pair:
        m.backbone.act = kinks.leaky_max(m.backbone.act, mtl.LEAKY_SLOPE)
    return model, twin


@pytest.mark.parametrize('n_steps', [1, 2])
def test_mtl_meta_gradient_matches_float64(monkeypatch, n_steps):
    """Second order through the FC's inner steps, into every scale and shift."""
    image = (84, 84, 3)
    kinks = Kinks(monkeypatch)
    model, twin = mtl_pair(monkeypatch, kinks, image, n_steps)
    assert [v.dtype for v in twin.outer_variables] == [tf.float64] * len(model.outer_variables)
    # The first block's scales on the raw 84x84 image reach 8.4e-5 of their scale in float32
    # itself (eager float32 gives the same, so not the fused kernel): 2e-4, still 150 times
    # below a 3% error, keeps the test from sitting at its own float32 floor.
    assert_matches_float64(model, twin, image_episode(image, 2, query=1), kinks, tolerance=2e-4)


# ---- PyTorch-MAML's ResNet-12 (narrowed to 4, 4, 4, 8 channels), at 84x84x3 -----------------
@pytest.mark.parametrize('first_order', [False, True])
def test_resnet12_meta_gradient_matches_float64(monkeypatch, first_order):
    """Batch norm with gamma and beta and leaky ReLU(0.1), under MAML; torch's epsilon 1e-5 is
    below the fused kernel's minimum, so the plain arithmetic (as ConvNet4)."""
    image, way = (84, 84, 3), 2
    pair = []
    for dtype in (tf.float32, tf.float64):
        tf.random.set_seed(0)
        net = resnets.ResNet12(way, image, widths=(4, 4, 4, 8), dtype=dtype)
        pair.append(maml.MAML(net, inner_lr=0.1, n_steps=1, first_order=first_order))
    twin_values(*pair)
    assert_matches_float64(*pair, image_episode(image, way, query=1), Kinks(monkeypatch),
                           fused=False)
