"""Issue 19's reproduction, reduced: the query-loss gradient of Meta-Dropout's Conv4 at 84x84x3
(noise-free multiplier mu * softplus(alpha), batch norm with the batch's statistics, ReLU, 2x2
max-pool) in float32 through the fused kernel and the plain arithmetic, against float64.

    python -m benchmarks.fused_bn_check [--npz PATH] [--draws N] [--graph]

--npz: issue 19's episode_weights.npz (default ../shared/repro/fused_bn_84/ beside the
checkout, if present); otherwise, and for --draws N > 1, episodes synthesised the same way
(standard-normal images, the project's Meta-Dropout initialisers plus 0.05 N(0, 1), 8 channels).
--graph: the float32 gradients inside tf.function (grappler and oneDNN's graph rewrites, as
training runs them) instead of eagerly.

Per path it prints the conv kernels' gradients' largest relative difference from float64 twice:
against the float64 gradient, and against the float64 gradient taken on the same smooth piece of
the network (the float32 forward's ReLU signs and max-pool window maxima imposed on the float64
forward). Then, per layer, how many ReLU inputs fell on the other side of 0 and how many windows
chose another maximum (with the float64 gap between the two values). ReLU and max-pool gradients
jump there, so a value within the float32 forward's rounding of a kink sends a gradient elsewhere
and changes the whole gradient by percents, on either path: what issue 19 saw (see README).

    python -m benchmarks.fused_bn_check --table [--cases SUBSTRING]

--table: the default path's meta-gradient (the fused batch norm where it applies, inside
tf.function as training runs it) of every backbone, method and shape the project runs, against a
float64 twin of the same model on the same ReLU, leaky-ReLU and max-pool pieces (`Kinks`); one
row per case, the largest relative difference per tensor group (each tensor's error over its
own scale, as tests/test_fused_batch_norm.py measures and asserts it; the cases are its cases).
"""
import argparse
import collections
import os
import re
import time

# The project's default path, as main.py sets it before TensorFlow loads: TensorFlow itself
# leaves oneDNN off on some CPUs (this 2-core AMD EPYC among them).
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from model import maml, metadrop, mtl, nets, resnets, taml

REPRO = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), 'shared', 'repro', 'fused_bn_84', 'episode_weights.npz')
LAYERS = range(1, 5)


def repro_episode(path):
    """Issue 19's episode: its first task's query set and weights, under this script's names."""
    d = np.load(path)
    rename = {'theta/': '', 'metadrop/phi/': 'phi_', 'conb': 'conv', '_bn/beta': '_beta'}
    weights = {}
    for i in range(24):
        name = str(d[f'name{i}']).split(':')[0]
        for old, new in rename.items():
            name = name.replace(old, new)
        weights[name] = d[f'w{i}']
    return d['xq'][0], d['yq'], weights


def synthetic_episode(seed, size=84, channels=8, n=10, way=5):
    """The same distribution: the project's Meta-Dropout initialisers (truncated normal 0.02
    kernels, normal 0.02 head, zeros) plus 0.05 N(0, 1), as after some training."""
    rng = np.random.default_rng(seed)
    w = {'dense_w': rng.normal(0, .02, (channels * (size // 16) ** 2, way)),
         'dense_b': np.zeros(way)}
    for l in LAYERS:
        shape = (3, 3, 3 if l == 1 else channels, channels)
        for prefix in ('', 'phi_'):
            w[f'{prefix}conv{l}_w'] = np.clip(rng.normal(0, .02, shape), -.04, .04)
            w[f'{prefix}conv{l}_b'] = np.zeros(channels)
        w[f'conv{l}_beta'] = np.zeros(channels)
    w = {k: v + .05 * rng.standard_normal(v.shape) for k, v in w.items()}
    return rng.standard_normal((n, size, size, 3)), np.repeat(np.arange(way), n // way), w


def conv_gradients(episode, dtype, fused, route=None):
    """(d query loss / d conv kernels, per layer (ReLU output > 0, flat argmax of each max-pool
    window), per layer the ReLU output). `route`, such choices per layer, replaces each ReLU
    and max-pool by multiplying by that mask and taking those elements."""
    x, y, w = episode
    c = {k: tf.constant(v, dtype) for k, v in w.items()}
    h = tf.constant(x, dtype)
    kernels = [c[f'conv{l}_w'] for l in LAYERS]
    choices, activations = [], []
    with tf.GradientTape() as tape:
        tape.watch(kernels)
        for l in LAYERS:
            mu = tf.nn.conv2d(h, c[f'conv{l}_w'], 1, 'SAME') + c[f'conv{l}_b']
            alpha = tf.nn.conv2d(h, c[f'phi_conv{l}_w'], 1, 'SAME') + c[f'phi_conv{l}_b']
            h, beta = mu * tf.nn.softplus(alpha), c[f'conv{l}_beta']
            if fused:
                h = tf.compat.v1.nn.fused_batch_norm(h, tf.ones_like(beta), beta, epsilon=1e-3,
                                                     is_training=True)[0]
            else:
                mean, var = tf.nn.moments(h, [0, 1, 2])
                h = (h - mean) * tf.math.rsqrt(var + 1e-3) + beta
            h = tf.nn.relu(h) if route is None else h * tf.cast(route[l - 1][0], dtype)
            pooled, argmax = tf.nn.max_pool_with_argmax(h, 2, 2, 'VALID',
                                                        include_batch_in_index=True)
            choices.append((h > 0, argmax))
            activations.append(h)
            if route is None:
                h = tf.nn.max_pool2d(h, 2, 2, 'VALID')
            else:
                h = tf.reshape(tf.gather(tf.reshape(h, [-1]), route[l - 1][1]), pooled.shape)
        logits = tf.matmul(tf.reshape(h, [h.shape[0], -1]), c['dense_w']) + c['dense_b']
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                                             logits=logits))
    return tape.gradient(loss, kernels), choices, activations


def relative(a, b):
    return np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max()


def check(episode, graph, label):
    """Prints both paths' errors; returns the largest on the same pieces."""
    run = tf.function(conv_gradients, autograph=False) if graph else conv_gradients
    ref, ref_choices, ref_act = conv_gradients(episode, tf.float64, fused=False)
    ref = [g.numpy() for g in ref]
    worst = 0.
    for fused in (True, False):
        grads, choices, _ = run(episode, tf.float32, fused)
        choices = [(m.numpy(), a.numpy()) for m, a in choices]
        same_piece = [g.numpy() for g in conv_gradients(episode, tf.float64, False, choices)[0]]
        changed = []   # per layer: ReLUs on the other side of 0, windows with another maximum
        for (m32, a32), (m64, a64), act in zip(choices, ref_choices, ref_act):
            moved = a32 != a64.numpy()
            flat = act.numpy().reshape(-1)
            gap = np.abs(flat[a64.numpy()[moved]] - flat[a32[moved]])
            changed.append(f'{int((m32 != m64.numpy()).sum())}/{int(moved.sum())}'
                           + (f' (gap {gap.max():.0e})' if moved.any() else ''))
        worst = max(worst, max(relative(g, r) for g, r in zip(grads, same_piece)))
        print(f'{label:8s} {"fused" if fused else "plain"}: '
              + ' '.join(f'{relative(g, r):.1e}' for g, r in zip(grads, ref))
              + ' | same pieces: '
              + ' '.join(f'{relative(g, r):.1e}' for g, r in zip(grads, same_piece))
              + ' | ReLUs/windows that differ per layer: ' + ', '.join(changed))
    return worst


# ---- the float64 twin on the same pieces (tests/test_fused_batch_norm.py and --table) ----------
class Patches:
    """monkeypatch.setattr outside pytest: undo() restores every attribute set."""

    def __init__(self):
        self.saved = []

    def setattr(self, target, name, value):
        self.saved.append((target, name, getattr(target, name)))
        setattr(target, name, value)

    def undo(self):
        while self.saved:
            setattr(*self.saved.pop())


class Kinks:
    """Stands in for tf.nn.relu, the backbones' leaky ReLUs and tf.nn.max_pool2d: while
    recording it computes them and notes each one's choices (sign of each input, flat argmax
    of each window); while replaying it imposes the recorded choices, call by call.
    patch: pytest's monkeypatch or a Patches."""

    def __init__(self, patch):
        self.relu_op, self.pool_op = tf.nn.relu, tf.nn.max_pool2d
        self.recorded, self.replay = [], None
        patch.setattr(tf.nn, 'relu', self.relu)
        patch.setattr(tf.nn, 'max_pool2d', self.max_pool2d)
        patch.setattr(resnets, 'leaky_relu_01', lambda t: self.leaky(t, 0.1))

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


def perturb(model, scale, seed=1):
    """Add scale N(0, 1) to every outer variable, as the reproduction does to its initial
    weights (non-zero shifts and biases, as after any training step)."""
    rng = np.random.default_rng(seed)
    for v in model.outer_variables:
        v.assign_add(scale * rng.standard_normal(v.shape).astype(v.dtype.as_numpy_dtype))


def fixed_noise(shape, dtype):
    """The same deterministic 'draws' in either precision (computed in float64)."""
    n = tf.reduce_prod(shape)
    return tf.cast(tf.reshape(tf.sin(tf.cast(tf.range(n), tf.float64) * 0.7), shape), dtype)


def meta_gradient(model, episode):
    with tf.GradientTape() as tape:
        loss = model.task_loss(*episode)[0]
    return [loss] + tape.gradient(loss, model.outer_variables)


def twin_errors(model, twin, episode, kinks, zero_parts=()):
    """The float32 meta-gradient inside tf.function (recording the kinks) against the float64
    twin's eagerly on the same kinks. Returns (whether the graph has the fused kernel,
    [(tensor name, largest error over its scale)], the loss first).
    zero_parts: (variable, boolean mask) pairs marking entries whose true meta-gradient is 0
    (as a conv bias before batch norm), measured against the overall scale, the rest of the
    tensor against its own."""
    @tf.function(autograph=False)
    def run():
        kinks.recorded.clear()
        return meta_gradient(model, [tf.constant(e) for e in episode]), list(kinks.recorded)
    concrete = run.get_concrete_function()
    fused = 'FusedBatchNormV3' in {op.type for op in concrete.graph.get_operations()}
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
    errors = []
    for i, (name, f, r) in enumerate(zip(names, fast, reference)):
        assert (f is None) == (r is None), name
        if r is None:
            continue
        f, r = f.numpy().astype(np.float64), r.numpy()
        parts = [np.ones(r.shape, bool)] if masks[i] is None else [~masks[i], masks[i]]
        worst = 0.
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
            worst = max(worst, err / scale)
        errors.append((f'{name} (#{i})', worst))
    return fused, errors


def image_episode(image, way=3, shot=1, query=2, seed=0):
    """Image-like inputs: pixels in [0, 1], smooth over space, as the loaders give."""
    rng = np.random.default_rng(seed)

    def images(n):
        coarse = rng.random((n, image[0] // 4 + 1, image[1] // 4 + 1, image[2]))
        smooth = tf.image.resize(coarse, image[:2], 'bilinear').numpy()
        return np.clip(smooth + 0.05 * rng.standard_normal((n, *image)), 0, 1).astype(np.float32)
    return (images(way * shot), np.repeat(np.arange(way), shot).astype(np.int32),
            images(way * query), np.repeat(np.arange(way), query).astype(np.int32))


def normal_episode(image, way=2, shot=1, query=1, seed=0):
    """The reproduction's inputs: standard-normal images."""
    rng = np.random.default_rng(seed)

    def images(n):
        return rng.standard_normal((n, *image)).astype(np.float32)
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


def resnet_pair(cls, image, way, widths, first_order, noise=0.):
    """PyTorch-MAML's ResNet-12 / ResNet-18 under MAML (1 inner step) and its float64 twin;
    noise: the reproduction's perturbation of the initial weights."""
    pair = []
    for dtype in (tf.float32, tf.float64):
        tf.random.set_seed(0)
        net = cls(way, image, widths=widths, dtype=dtype)
        pair.append(maml.MAML(net, inner_lr=0.1, n_steps=1, first_order=first_order))
    if noise:
        perturb(pair[0], noise)
    twin_values(*pair)
    return pair


# MTL narrowed: the first conv block keeps ResNet-18's 64 channels (a literal in model/mtl.py)
MTL_NARROW = {'resnet12': dict(RESNET12_CHANNELS=(4, 4, 4, 8), FEATURE_DIM=8),
              'resnet18': dict(RESNET18_BLOCKS=((64, 4), (4, 4), (4, 4), (4, 4), (4, 8),
                                                (8, 8), (8, 8), (8, 8)), FEATURE_DIM=8)}


def mtl_pair(patch, kinks, image, n_steps, arch='resnet12'):
    """MTL (2-way 1-shot) over a narrowed ResNet-12 or -18 (MTL_NARROW), and its float64
    twin: the same values in float64 variables under the same keys. The scales, shifts and FC
    start 0.05 N(0, 1) away from their initial values, as after some meta-training."""
    for name, value in MTL_NARROW[arch].items():
        patch.setattr(mtl, name, value)
    if hasattr(mtl.MtlBackbone, 'feature_dim'):   # a class attribute bound to FEATURE_DIM
        patch.setattr(mtl.MtlBackbone, 'feature_dim', MTL_NARROW[arch]['FEATURE_DIM'])
    tf.random.set_seed(0)
    pair = [mtl.MTL(2, 1, image, arch=arch, img_size=image[0], n_steps=n_steps,
                    n_test_steps=n_steps) for _ in range(2)]
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


def z_shift_parts(model):
    """The halves of TAML's z mean and scale heads that shift the conv biases (z_b): those
    biases come before batch norm, so the loss gives them a true meta-gradient of 0 (left: the
    KL's, ~1e-11 here), and float32 round-off there is measured against the overall scale."""
    _, to_mean, to_scale = model.encoder.heads['z']
    parts = []
    for layer in (to_mean, to_scale):
        for v in (layer.w, layer.b):
            mask = np.zeros(v.shape, bool)
            mask[..., model.n_z // 2:] = True
            parts.append((v, mask))
    return parts


Case = collections.namedtuple('Case', 'model twin episode kinks fused zero_parts')


def conv4_case(patch, variant, image, method, first_order, max_pool):
    """Conv4 (4 channels, 2-way 1-shot 1-query, 2 inner steps) under MAML, Meta-Dropout or
    TAML (with its z heads' bias-shift halves measured against the overall scale)."""
    model, twin = conv4_pair(variant, image, 4, 2, method, first_order, max_pool=max_pool,
                             zero_head=method == 'taml')
    return Case(model, twin, image_episode(image, 2, query=1), Kinks(patch),
                variant != 'pytorch', z_shift_parts(model) if method == 'taml' else ())


def mtl_case(patch, arch, n_steps):
    """MTL with scaling and shifting at 84x84x3 (ResNet-18: resized to 224 in the graph)."""
    image = (84, 84, 3)
    kinks = Kinks(patch)
    model, twin = mtl_pair(patch, kinks, image, n_steps, arch)
    return Case(model, twin, image_episode(image, 2, query=1), kinks, True, ())


# The narrowed widths: ResNet-18 at 4 channels crashes TensorFlow (segmentation fault inside
# tf.function with oneDNN on, TF 2.21; 8 and more, and the real widths, run).
NARROW = {'resnet12': (4, 4, 4, 8), 'resnet18': (8, 8, 8, 16)}


def resnet_case(patch, arch, first_order, inputs='image', narrow=True):
    """PyTorch-MAML's ResNet-12 or ResNet-18 (narrowed to NARROW, or at its own widths) under
    MAML at 84x84x3; torch's epsilon 1e-5 is below the fused kernel's minimum: the plain path.
    inputs 'normal': the reproduction's (standard-normal images, the initial weights plus
    0.05 N(0, 1)); 'image': image-like, the initial weights."""
    image = (84, 84, 3)
    cls = resnets.ResNet12 if arch == 'resnet12' else resnets.ResNet18
    widths = NARROW[arch] if narrow else resnets.WIDTHS[arch]
    noise = 0.05 if inputs == 'normal' else 0.
    episode = (normal_episode if inputs == 'normal' else image_episode)(image, 2, query=1)
    return Case(*resnet_pair(cls, image, 2, widths, first_order, noise), episode, Kinks(patch),
                False, ())


# (row label, case builder, its arguments after patch): every backbone, method and shape
CASES = [
    ('metadrop Conv4 84x84x3 2nd', conv4_case,
     ('metadrop', (84, 84, 3), 'metadrop', False, True)),
    ('metadrop Conv4 84x84x3 1st', conv4_case,
     ('metadrop', (84, 84, 3), 'metadrop', True, True)),
    ('maml_conv4 84x84x3 2nd', conv4_case, ('maml', (84, 84, 3), 'maml', False, True)),
    ('maml_conv4 84x84x3 1st', conv4_case, ('maml', (84, 84, 3), 'maml', True, True)),
    ('maml_conv4 32x32x3 2nd', conv4_case, ('maml', (32, 32, 3), 'maml', False, True)),
    ('maml_conv4 28x28x1 2nd', conv4_case, ('maml', (28, 28, 1), 'maml', False, False)),
    ('ConvNet4 84x84x3 2nd', conv4_case, ('pytorch', (84, 84, 3), 'maml', False, True)),
    ('ConvNet4 84x84x3 1st', conv4_case, ('pytorch', (84, 84, 3), 'maml', True, True)),
    ('ConvNet4 28x28x1 2nd', conv4_case, ('pytorch', (28, 28, 1), 'maml', False, True)),
    ('TAML maml_conv4 32x32x3 2nd', conv4_case, ('maml', (32, 32, 3), 'taml', False, True)),
    ('TAML maml_conv4 32x32x3 1st', conv4_case, ('maml', (32, 32, 3), 'taml', True, True)),
    ('TAML maml_conv4 28x28x1 2nd', conv4_case, ('maml', (28, 28, 1), 'taml', False, False)),
    ('MTL ResNet-12 (4-8) 84x84x3 1 step', mtl_case, ('resnet12', 1)),
    ('MTL ResNet-12 (4-8) 84x84x3 2 steps', mtl_case, ('resnet12', 2)),
    ('MTL ResNet-18 (64, 4-8) 84->224 1 step', mtl_case, ('resnet18', 1)),
    ('MTL ResNet-18 (64, 4-8) 84->224 2 steps', mtl_case, ('resnet18', 2)),
    ('ResNet-12 (4-8) 84x84x3 2nd', resnet_case, ('resnet12', False)),
    ('ResNet-12 (4-8) 84x84x3 1st', resnet_case, ('resnet12', True)),
    ('ResNet-18 (8-16) 84x84x3 2nd normal', resnet_case, ('resnet18', False, 'normal')),
    ('ResNet-18 (8-16) 84x84x3 1st normal', resnet_case, ('resnet18', True, 'normal')),
    ('ResNet-18 (8-16) 84x84x3 2nd image', resnet_case, ('resnet18', False, 'image')),
    ('ResNet-18 (64-512) 84x84x3 2nd normal', resnet_case, ('resnet18', False, 'normal', False)),
    ('ResNet-18 (64-512) 84x84x3 1st normal', resnet_case, ('resnet18', True, 'normal', False)),
    ('ResNet-18 (64-512) 84x84x3 2nd image', resnet_case, ('resnet18', False, 'image', False)),
]

GROUPS = (('loss', r'^loss'), ('phi', r'phi/'), ('inference net', r'encoder/'),
          ('head', r'dense_|fc_w5|fc_b5'), ('MTL scales', r'ss_.*_conv'),
          ('MTL shifts', r'ss_.*_bias'), ('BN gamma, beta', r'gamma|beta'),
          ('conv biases', r'_b:'), ('conv kernels', r'_w:'))


def tensor_group(name):
    return next(group for group, pattern in GROUPS if re.search(pattern, name))


def table(select):
    """One row per case: the largest error over scale per tensor group."""
    rows = []
    for label, build, args in CASES:
        if select and select not in label:
            continue
        patch, start = Patches(), time.time()
        try:
            case = build(patch, *args)
            fused, errors = twin_errors(case.model, case.twin, case.episode, case.kinks,
                                        case.zero_parts)
        finally:
            patch.undo()
        worst = collections.OrderedDict()
        for name, err in errors:
            group = tensor_group(name)
            worst[group] = max(worst.get(group, 0.), err)
        rows.append((label, 'fused' if fused else 'plain', worst))
        print(f'{label}: {"fused" if fused else "plain"}, '
              + ', '.join(f'{g} {e:.1e}' for g, e in worst.items())
              + f' ({time.time() - start:.0f} s)', flush=True)
    groups = [g for g, _ in GROUPS if any(g in w for _, _, w in rows)]
    print('\n| case | batch norm | ' + ' | '.join(groups) + ' |')
    print('| --- | --- | ' + ' | '.join('---' for _ in groups) + ' |')
    for label, path, worst in rows:
        print(f'| {label} | {path} | '
              + ' | '.join(f'{worst[g]:.1e}' if g in worst else '' for g in groups) + ' |')


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--npz', default=REPRO, help="issue 19's episode_weights.npz")
    p.add_argument('--draws', type=int, default=1, help='synthetic episodes to check as well')
    p.add_argument('--graph', action='store_true', help='float32 inside tf.function')
    p.add_argument('--table', action='store_true',
                   help='every backbone and shape against its float64 twin on the same pieces')
    p.add_argument('--cases', default='', help='with --table: only the rows containing this')
    args = p.parse_args()
    if args.table:
        print(f'TensorFlow {tf.__version__}, TF_ENABLE_ONEDNN_OPTS='
              f'{os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")}; the default path inside '
              'tf.function against the float64 twin: largest error over scale per group')
        table(args.cases)
        return
    print(f'TensorFlow {tf.__version__}, TF_ENABLE_ONEDNN_OPTS='
          f'{os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")}, '
          f'{"tf.function" if args.graph else "eager"}; largest relative difference of the '
          'conv1..conv4 kernel gradients')
    if os.path.exists(args.npz):
        check(repro_episode(args.npz), args.graph, 'issue 19')
    else:
        print(f'({args.npz} absent: synthetic episodes only)')
    for seed in range(args.draws if os.path.exists(args.npz) else max(args.draws, 1)):
        check(synthetic_episode(seed), args.graph, f'seed {seed}')


if __name__ == '__main__':
    main()
