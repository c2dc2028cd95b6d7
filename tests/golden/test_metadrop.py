"""haebeom-lee/metadrop's own layers.py, model.py and data.py beside ours.

The original's MetaDropout (Meta-Dropout, and MAML through its --maml switch) is built from its
own files in a TF 1.x graph; ours is built as main.py builds `--model metadrop` (with and
without --maml) and `--model maml` (metadrop's Conv4 is our default backbone): a Runner over a
small Omniglot-format npy dataset, so every flag default is the real one. Both get the same
parameter values (ours copied into the original's variables), the same episodes and the same
noise:

- noise: the original draws with `tf.distributions.Normal(loc, scale).sample()`, which TF
  computes as `loc + scale * N(0, 1)`; its `layers.normal` is replaced by a Normal whose
  sample() is `draw * scale + loc` with the draw taken from `Draws`, and ours gets the same
  draws through MetaDropout.noise (its source of N(0, 1) draws). Draws are handed out in call
  order, which is the same in both: per forward the four conv layers, then the dense layer.
  Where a loop body is traced once (the original's map_fn over tasks, our while loops over
  tasks and, at test time, over inner steps) both sides get the same draws in every
  iteration (`period`).
- sizes: 5-way 2-shot 3-query, 28x28x1 inputs, 8 conv channels (the original fixes 64 for
  Omniglot in MetaDropout.__init__; its attribute is set to 8 before its graph is built, the
  code is its own), inner lr 0.1, 3 MC samples at test.
- dtype: float64 wherever a gradient is taken (the inner loop, the meta-gradient, Adam,
  export). The original then runs under `Float64TF` (test_l2b.py), a namespace whose float32
  is float64: its placeholders, variables and map_fn dtypes, every operation of its code as
  written; ours is the model main.py builds, built by the same code in float64
  (`Float64Runner`: same variables, names and shapes as the float32 one, checked). In
  float32 both differ by round-off only, but round-off that differs between the two graphs
  (other kernels, other summation order: oneDNN on or off changes it) decides a ReLU input
  or a max-pool window that is a near-tie, and the gradient moves to another unit
  (docs/fidelity.md, issue 19): with TF_ENABLE_ONEDNN_OPTS=0 the float32 weights after 5
  inner steps differed by 1e-3 relative and Adam's updates by 7%, which no tolerance could
  tell from a bug. The forward at the original's own precision (float32, both batch norms on
  their default fused kernels) and the meta-test pipeline (our eval step is float32) stay
  float32.

Compared: the noisy and the noise-free forward (float32 and float64), the weights before
every inner step and after the last, every MC forward of the inner loss and its mean, the
query logits, loss and accuracy (one task, its own noise at every step, 5 inner steps); the
meta-gradient of theta, phi and the batch-norm shifts over 2 tasks (second order, 2 inner
steps; batch norm by its plain arithmetic, the only one in float64) and two clipped Adam
updates (main.py's meta_train op vs our compiled train step); the meta-test pipeline (its
tnet, map_fn over tasks, vs our eval step); export's arrays for one episode (model.export vs
model/export.py trajectory); the class-reuse sampler (data.py generate_episode vs our
Runner's sampler with --reuse_task_classes) under the same numpy RandomState.
"""
import functools
import re
import types
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

import main
from data import episodes as episodes_lib
from model import backbones, steps
from model import export as export_lib
from model.runner import Runner
from tests.golden import tf1_standins
from tests.golden.originals import load_original, original_dir
from tests.golden.test_l2b import Float64TF

v1 = tf.compat.v1

WAY, SHOT, QUERY, TASKS = 5, 2, 3, 2
# Inner lr 0.1 (main.py's default): at 0.4 these random weights make the inner loop chaotic,
# float32 round-off of 1e-7 grows to 1e-4 in 5 steps (our own fused and plain batch norm
# then differ as much as ours and the original), which would hide a real difference.
N_CHANNEL, N_STEPS, INNER_LR, N_TEST_MC, META_LR = 8, 5, 0.1, 3, 1e-3
META_STEPS = 2   # inner steps of the second-order meta-gradient test (its graphs grow with them)
N_TRAIN_CLASSES, N_TEST_CLASSES, PER_CLASS = 32, 16, 20

MODES = {  # name -> (our flags, the original's --maml)
    'metadrop': (['--model', 'metadrop'], False),
    'metadrop_maml': (['--model', 'metadrop', '--maml'], True),
    'maml': (['--model', 'maml'], True),
}

# Tolerances relative to the largest entry compared: float32 round-off; float64 round-off
# through 5 second-order inner steps (measured below 1e-12: printed at the end with -s).
RTOL32, RTOL64 = 2e-5, 1e-10

MEASURED = {}   # comparison -> (largest absolute, largest relative difference), for the report


def close(name, ours, theirs, rtol=RTOL32, scale=None):
    """Asserts |ours - theirs| <= rtol (|theirs| + scale) elementwise, where scale is the
    largest |theirs| unless given; records the largest absolute difference and the largest
    relative to that scale."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
    scale = max(float(np.abs(theirs).max()) if scale is None else scale, 1e-30)
    diff = np.abs(ours - theirs)
    old = MEASURED.get(name, (0., 0.))
    MEASURED[name] = (max(old[0], float(diff.max())), max(old[1], float(diff.max()) / scale))
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * scale, err_msg=name)


@pytest.fixture(scope='module', autouse=True)
def report_measured():
    yield
    if MEASURED:
        width = max(map(len, MEASURED))
        print('\nlargest differences (absolute, relative to the largest |original|):')
        for name, (a, r) in sorted(MEASURED.items()):
            print(f'  {name:<{width}}  {a:.3g}  {r:.3g}')


# ---- the original and ours ---------------------------------------------------------------
@pytest.fixture(scope='module')
def original():
    return load_original(original_dir('metadrop'), ['layers', 'model', 'data'])


class MetadropFloat64TF(Float64TF):
    """Float64TF, and tf.losses.softmax_cross_entropy (layers.py cross_entropy) computed in
    float64: TF's takes the mean over examples in float32 whatever the input's dtype (see the
    stand-in), which would put float32 rounding into the float64 inner loop."""
    losses = types.SimpleNamespace(
        softmax_cross_entropy=tf1_standins.softmax_cross_entropy_in_input_dtype)


@pytest.fixture(scope='module')
def original64():
    """The original's files once more, their tf.float32 (and float32 defaults) float64."""
    return load_original(original_dir('metadrop'), ['layers', 'model', 'data'],
                         substitutes={'tensorflow': MetadropFloat64TF()})


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    """Omniglot in metadrop's npy layout ([n_classes, 20, 784] float32), small."""
    root = tmp_path_factory.mktemp('data')
    (root / 'omniglot').mkdir()
    rng = np.random.default_rng(7)
    for name, n in (('train', N_TRAIN_CLASSES), ('test', N_TEST_CLASSES)):
        np.save(root / 'omniglot' / f'{name}.npy',
                rng.random((n, PER_CLASS, 784), dtype=np.float32))
    return root


def config(data_root, savedir, mode, *extra):
    flags, _ = MODES[mode]
    # --n_test_mc_samp is Meta-Dropout's own flag (--model maml refuses it; it has no noise
    # to average, and the original's --maml averages identical losses).
    mc = ['--n_test_mc_samp', str(N_TEST_MC)] if 'metadrop' in flags else []
    return main.parse_config([
        *flags, '--mode', 'meta_train', '--dataset', 'omniglot', '--data_root', str(data_root),
        '--savedir', str(savedir), '--way', str(WAY), '--shot', str(SHOT), '--query', str(QUERY),
        '--metabatch', str(TASKS), '--n_channel', str(N_CHANNEL), '--inner_lr', str(INNER_LR),
        *mc, '--meta_lr', str(META_LR), '--noprogress', *extra])


class Float64Runner(Runner):
    """The Runner main.py builds, with its model built by the same code (the method's build,
    every flag) over a float64 backbone, and its train step compiled for float64 episodes."""

    def build_model(self):
        reference = super().build_model()
        with mock.patch.object(backbones, 'backbone_of',
                               functools.partial(backbones.backbone_of, dtype=tf.float64)):
            model = super().build_model()
        def signature(m):
            return [(v.name, v.shape) for v in m.variables]
        assert signature(model) == signature(reference)
        assert [v.name for v in model.outer_variables] == \
            [v.name for v in reference.outer_variables]
        assert all(v.dtype == tf.float64 for v in model.variables)
        return model

    def compile_train_step(self, spec):
        return super().compile_train_step(
            [tf.TensorSpec(s.shape, tf.float64 if s.dtype == tf.float32 else s.dtype)
             for s in spec])


def ours(data_root, tmp_path, mode, *extra, dtype=tf.float32):
    """Our Runner as main.py builds it (float64: Float64Runner), every variable set to random
    values (biases and shifts too, so that none of them can hide behind a zero); the same
    float32 values in either dtype."""
    runner = (Runner if dtype == tf.float32 else Float64Runner)(
        config(data_root, tmp_path / mode, mode, *extra), log=lambda *a: None)
    model = runner.model
    rng = np.random.default_rng(3)
    for v in variables_by_original_name(model).values():
        v.assign(rng.normal(0., 0.3, v.shape).astype(np.float32).astype(v.dtype.as_numpy_dtype))
    return runner


def variables_by_original_name(model):
    """Our variables under the names of the original's (metadrop model.py get_theta / get_phi,
    layers.py conv_block's batch-norm scopes)."""
    out = {f'theta/{k}:0': v for k, v in model.net.theta.items()}
    out.update({f'{layer}_bn/beta:0': v for layer, v in model.net.bn_beta.items()})
    out.update({f'phi/{k}:0': v for k, v in getattr(model, 'phi', {}).items()})
    return out


def original_model(original, mode, metabatch=TASKS, n_steps=N_STEPS):
    args = types.SimpleNamespace(dataset='omniglot', way=WAY, n_steps=n_steps,
                                 metabatch=metabatch, inner_lr=INNER_LR,
                                 n_test_mc_samp=N_TEST_MC, maml=MODES[mode][1])
    model = original.model.MetaDropout(args)
    model.n_channel = N_CHANNEL   # its Omniglot width is 64; read when its variables are made
    return model


def our_values(runner):
    return {name: v.numpy() for name, v in variables_by_original_name(runner.model).items()}


def load_values(session, ours_, mode):
    """Copies our values (our_values) into the original's trainable variables (all of them:
    theta, phi, the four batch-norm betas). With --model maml ours has no phi; the original's
    (unused under --maml) gets random values."""
    theirs = {v.name: v for v in v1.trainable_variables()}
    extra = set(theirs) - set(ours_)
    assert not set(ours_) - set(theirs), sorted(set(ours_) - set(theirs))
    assert all(n.startswith('phi/') for n in extra) and (not extra or mode == 'maml'), extra
    rng = np.random.default_rng(5)
    for name, v in theirs.items():
        value = ours_[name] if name in ours_ else rng.normal(0., 0.3, v.shape).astype(np.float32)
        v.load(value, session)


def tf1_session():
    """A TF1 session without Grappler's rewrites: they take most of the first run of these
    graphs here, and without them the graph runs as written."""
    config = v1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    return v1.Session(config=config)


# ---- the same noise on both sides ------------------------------------------------------------
class Draws:
    """N(0, 1) draws in call order: call i gets tf.random.stateless_normal(shape, seed
    (seed, i)), a fixed function of the shape and i, whether the caller is a TF1 graph or
    eager code. With `period`, call i gets the draw of i % period: where a loop body is traced
    once, its draws are shared by every iteration, so the other side is given the same draws
    in every iteration too."""

    def __init__(self, period=None, seed=0):
        self.period, self.seed = period, seed
        self.calls = 0

    def __call__(self, shape, dtype):
        i = self.calls if self.period is None else self.calls % self.period
        self.calls += 1
        return tf.random.stateless_normal(shape, [self.seed, i], dtype=dtype)


def inject(monkeypatch, original, draws):
    """The original's normal(loc, scale).sample() -> draw * scale + loc (TF's own formula)."""
    class Normal:
        def __init__(self, loc, scale):
            self.loc, self.scale = loc, scale

        def sample(self):
            return draws(tf.shape(self.loc), self.loc.dtype) * self.scale + self.loc

    monkeypatch.setattr(original.layers, 'normal', Normal)


def random_episode(seed, n_tasks=TASKS, dtype=np.float32):
    """Images drawn in float32 (the datasets' dtype), given as `dtype`."""
    rng = np.random.default_rng(seed)
    xs = rng.random((n_tasks, WAY * SHOT, 28, 28, 1), dtype=np.float32).astype(dtype)
    xq = rng.random((n_tasks, WAY * QUERY, 28, 28, 1), dtype=np.float32).astype(dtype)
    ys = np.tile(np.repeat(np.arange(WAY, dtype=np.int32), SHOT), (n_tasks, 1))
    yq = np.tile(np.repeat(np.arange(WAY, dtype=np.int32), QUERY), (n_tasks, 1))
    return episodes_lib.Episode(xs, ys, xq, yq)


def flat_onehot(ep):
    """The episode as the original's placeholders take it: flat images, one-hot labels (in
    the images' dtype)."""
    n = ep.xs.shape[0]
    onehot = np.eye(WAY, dtype=ep.xs.dtype)
    return (ep.xs.reshape(n, -1, 784), onehot[ep.ys], ep.xq.reshape(n, -1, 784), onehot[ep.yq])


# ---- one task, step by step -------------------------------------------------------------------
def record_original(monkeypatch, module, model):
    """Records every forward of the original (its theta, sample flag and logits) and every
    loss its inner loop differentiates (model.py calls tf.gradients only there)."""
    seen = {'forward': [], 'inner_loss': []}
    forward = model.forward

    def recorded_forward(x, theta, phi, sample=False):
        out = forward(x, theta, phi, sample=sample)
        seen['forward'].append((dict(theta), sample, out))
        return out

    model.forward = recorded_forward
    real_tf = module.tf

    class RecordingTF:
        def __getattr__(self, name):
            return getattr(real_tf, name)

        def gradients(self, ys, xs, *args, **kwargs):
            seen['inner_loss'].append(ys)
            return real_tf.gradients(ys, xs, *args, **kwargs)

    monkeypatch.setattr(module, 'tf', RecordingTF())
    return seen


def record_ours(model):
    """Records our inner loop: the weights each inner loss is evaluated at, the logits of
    every support forward, the adapted weights and the query logits."""
    seen = {'params': [], 'support_logits': [], 'adapted': [], 'query_logits': []}
    inner_loss, support_ce, query_logits = model.inner_loss, model.support_ce, model.query_logits

    def recorded_inner_loss(params, *args, **kwargs):
        seen['params'].append(dict(params))
        return inner_loss(params, *args, **kwargs)

    def recorded_support_ce(logits, y):
        seen['support_logits'].append(logits)
        return support_ce(logits, y)

    def recorded_query_logits(adapted, x):
        out = query_logits(adapted, x)
        seen['adapted'].append(adapted)
        seen['query_logits'].append(out)
        return out

    model.inner_loss, model.support_ce = recorded_inner_loss, recorded_support_ce
    model.query_logits = recorded_query_logits
    return seen


def their_first_forwards(theirs, x):
    """The original's forward at its initial weights, with noise, then without."""
    theta, phi = theirs.get_theta(), theirs.get_phi()
    return [theirs.forward(tf.constant(x), theta, phi, sample=s) for s in (True, False)]


def our_first_forwards(model, x):
    """Ours in the same order (a model without noise: its one forward, twice)."""
    params = model.net.initial_params()
    if getattr(model, 'maml', True):
        return np.stack([model.predict(params, tf.constant(x))] * 2)
    return np.stack([model.forward(params, tf.constant(x), sample=s) for s in (True, False)])


def noise_both(monkeypatch, original, model, period=None):
    """The same draws for both sides; returns (theirs, ours) to count the calls."""
    theirs_draws, ours_draws = Draws(period), Draws(period)
    inject(monkeypatch, original, theirs_draws)
    if hasattr(model, 'noise'):
        model.noise = ours_draws
    return theirs_draws, ours_draws


@pytest.mark.parametrize('mode', list(MODES))
def test_forward_float32(original, data_root, tmp_path, monkeypatch, mode):
    """At the original's own precision, float32, its batch norm on contrib's default fused
    kernel and ours on our default fused path: the forward with and without noise. No
    gradient is taken, so no ReLU or max-pool near-tie can move it (the inner loop and
    everything after it is compared in float64)."""
    runner = ours(data_root, tmp_path, mode)
    x = random_episode(11, n_tasks=1).xs[0]
    noise_both(monkeypatch, original, runner.model)
    values = our_values(runner)
    with tf.Graph().as_default():
        forwards = their_first_forwards(original_model(original, mode), x.reshape(-1, 784))
        with tf1_session() as session:
            load_values(session, values, mode)
            forwards = session.run(forwards)
    close('forward, float32 (noisy, then noise-free)', our_first_forwards(runner.model, x),
          np.stack(forwards))


@pytest.mark.parametrize('mode,training', [
    ('metadrop', True), ('metadrop', False), ('metadrop_maml', True), ('maml', True)],
    ids=['metadrop-meta_train', 'metadrop-meta_test', 'metadrop_maml-meta_train',
         'maml-meta_train'])
def test_inner_loop_step_by_step(original64, data_root, tmp_path, monkeypatch, mode, training):
    """One task, its own noise at every step (meta_test: 3 MC samples per inner loss), in
    float64: the forward with and without noise at the initial weights, the weights before
    every inner step and after the last, every noisy forward of the MC inner loss, the inner
    loss, the query forward (noise-free, still scaled by softplus(alpha) in Meta-Dropout), the
    query loss and accuracy."""
    original = original64
    runner = ours(data_root, tmp_path, mode, dtype=tf.float64)
    model = runner.model
    ep = random_episode(11, n_tasks=1, dtype=np.float64)
    theirs_draws, ours_draws = noise_both(monkeypatch, original, model)
    stochastic = mode == 'metadrop'
    mc = 1 if training else N_TEST_MC
    xtr, ytr, xte, yte = (a[0] for a in flat_onehot(ep))
    values = our_values(runner)
    with tf.Graph().as_default():
        theirs = original_model(original, mode)
        first_forwards = their_first_forwards(theirs, xtr)
        seen = record_original(monkeypatch, original.model, theirs)
        result = theirs.get_loss_single(tuple(map(tf.constant, (xtr, ytr, xte, yte))), training,
                                        reuse=True)
        with tf1_session() as session:
            load_values(session, values, mode)
            first_forwards, forwards, inner_losses, (cent, acc) = session.run(
                [first_forwards, [(f[0], f[2]) for f in seen['forward']], seen['inner_loss'],
                 result])
        samples = [f[1] for f in seen['forward']]

    # Ours, in the same order: the initial forwards, then the task.
    close('forward (noisy, then noise-free)', our_first_forwards(model, ep.xs[0]),
          np.stack(first_forwards), rtol=RTOL64)
    seen = record_ours(model)
    loss, accuracy = model.task_loss(*(tf.constant(a[0]) for a in ep), training=training)
    # The original's forwards: n_steps x mc noisy ones (--maml: noise-free), then the query.
    assert samples == [True] * N_STEPS * mc + [False]
    assert len(inner_losses) == N_STEPS
    if stochastic:
        assert ours_draws.calls == theirs_draws.calls == 5 * (1 + N_STEPS * mc)
    ours_mc = mc if stochastic else 1   # ours does not repeat a forward that has no noise
    (adapted,), (query_logits,) = seen['adapted'], seen['query_logits']
    for s in range(N_STEPS):
        their_theta, _ = forwards[s * mc]
        for k, value in seen['params'][s].items():
            close(f'theta before each inner step ({k})', value.numpy(), their_theta[k],
                  rtol=RTOL64)
        for j in range(ours_mc):
            close('support logits of each (MC) forward',
                  seen['support_logits'][s * ours_mc + j].numpy(), forwards[s * mc + j][1],
                  rtol=RTOL64)
        close('MC inner loss', adapted.losses[s].numpy(), inner_losses[s], rtol=RTOL64)
    their_theta, their_logits = forwards[-1]
    for k, value in adapted.params.items():
        close(f'theta after the last inner step ({k})', value.numpy(), their_theta[k],
              rtol=RTOL64)
    close('query logits', query_logits.numpy(), their_logits, rtol=RTOL64)
    close('query loss', loss.numpy(), cent, rtol=RTOL64)
    # Our accuracy is float32 (the engine's), the original's here float64: the same fraction.
    assert accuracy.numpy() == np.float32(acc)


# ---- the metabatch: meta-gradient, Adam, meta-test pipeline -----------------------------------
def original_feed(theirs, ep):
    return dict(zip([theirs.episodes[k] for k in ('xtr', 'ytr', 'xte', 'yte')], flat_onehot(ep)))


@pytest.mark.parametrize('mode', ['metadrop', 'maml'])
def test_meta_gradient_and_adam(original64, data_root, tmp_path, monkeypatch, mode):
    """main.py's meta-train op over a metabatch of 2 tasks, in float64: the mean query loss,
    the meta-gradient (second order) of every variable it trains (theta, phi unless --maml,
    the batch-norm shifts) as get_train_op computes it, and two steps of that op (Adam, clip
    [-3, 3]). Against our Runner: the meta-gradient as its compiled step computes it (tasks in
    a while loop) and two calls of its compiled train step. Both tasks get the same draws (5
    inner steps x 5 per noisy forward): our while loop over tasks traces one task. Two inner
    steps (META_STEPS): second order through more than one step, graphs small enough. Batch
    norm is the plain arithmetic on both sides (no fused kernel exists in float64), whose
    second derivative tests/test_fast_paths.py compares to the fused kernel's."""
    original = original64
    runner = ours(data_root, tmp_path, mode, '--n_steps', str(META_STEPS), dtype=tf.float64)
    model = runner.model
    ep = random_episode(12, dtype=np.float64)
    period = META_STEPS * 5
    values = our_values(runner)
    with tf.Graph().as_default():
        theirs = original_model(original, mode, n_steps=META_STEPS)
        inject(monkeypatch, original, Draws(period))
        # get_loss_multiple(True) is tf.map_fn(get_loss_single) over the tasks and the mean of
        # their losses; here the tasks are unrolled (the second-order gradient of the while_v2
        # loop map_fn builds today takes minutes to build), the rest is main.py meta_train().
        xtr, ytr, xte, yte = (tf.constant(a) for a in flat_onehot(ep))
        per_task = [theirs.get_loss_single((xtr[t], ytr[t], xte[t], yte[t]), True,
                                           reuse=t > 0) for t in range(TASKS)]
        cent = tf.reduce_mean([c for c, _ in per_task])
        acc = tf.stack([a for _, a in per_task])
        var_list = [v for v in v1.trainable_variables()
                    if not (MODES[mode][1] and 'phi' in v.name)]
        optimizer = v1.train.AdamOptimizer(v1.convert_to_tensor(META_LR))
        computed = []
        compute_gradients = optimizer.compute_gradients
        optimizer.compute_gradients = lambda *a, **k: computed.append(
            compute_gradients(*a, **k)) or computed[-1]
        train_op = original.layers.get_train_op(optimizer, cent, clip=[-3., 3.],
                                                var_list=var_list)
        with tf1_session() as session:
            session.run(v1.global_variables_initializer())
            load_values(session, values, mode)
            cent, acc, their_grads, before = session.run(
                [cent, acc, [g for g, _ in computed[0]], var_list])
            after = []
            for _ in range(2):
                session.run(train_op)
                after.append(session.run(var_list))
        names = [v.name for v in var_list]

    variables = model.outer_variables
    ours_by_name = variables_by_original_name(model)
    assert sorted(ours_by_name[n].name for n in names) == sorted(v.name for v in variables)
    order = [[id(v) for v in variables].index(id(ours_by_name[n])) for n in names]
    if hasattr(model, 'noise'):
        model.noise = Draws(period)

    @tf.function(autograph=False)
    def meta_gradient(xs, ys, xq, yq):
        return steps.metabatch_gradient(
            lambda t: model.task_loss(xs[t], ys[t], xq[t], yq[t], training=True), TASKS,
            variables, **runner.task_loop_options())

    loss, accs, ours_grads, _ = meta_gradient(*ep)
    close('meta-train query loss (metabatch mean)', loss.numpy(), cent, rtol=RTOL64)
    np.testing.assert_array_equal(accs.numpy(), acc.astype(np.float32))
    # Under MAML the conv biases ahead of batch norm have an analytic meta-gradient of 0: both
    # sides hold round-off there, which Adam's normalisation could turn into steps in
    # arbitrary directions on both sides alike; they are checked for that and left out of
    # the other comparisons.
    largest = max(float(np.abs(g).max()) for g in their_grads)
    round_off = [name for name in names
                 if mode == 'maml' and re.fullmatch(r'theta/conv\d_b:0', name)]
    for name, i, theirs_g in zip(names, order, their_grads):
        if name in round_off:
            assert np.abs(theirs_g).max() < RTOL64 * largest
            assert np.abs(ours_grads[i].numpy()).max() < RTOL64 * largest
            continue
        # Relative to the largest entry of the tensor, but not below 1e-2 of the largest
        # entry overall (a tensor of small entries carries the round-off of the large ones).
        close(f'meta-gradient ({name.split(":")[0]})', ours_grads[i].numpy(), theirs_g,
              rtol=RTOL64, scale=max(float(np.abs(theirs_g).max()), 1e-2 * largest))
    for step in range(2):
        if hasattr(model, 'noise'):
            model.noise = Draws(period)
        _, _, applied = runner.train_step(*ep)
        assert applied.numpy()
        for name, b, theirs_after in zip(names, before, after[step]):
            if name in round_off:
                continue
            # Adam moves every entry by about META_LR; one whose gradient changes sign
            # between the steps moves by a difference of nearly equal terms, which carries
            # the meta-gradient's round-off relative to META_LR: compared to a step.
            close(f'Adam updates, 2 steps ({name.split("/")[0]})',
                  ours_by_name[name].numpy() - b, theirs_after - b, rtol=RTOL64, scale=META_LR)


def test_meta_test_pipeline(original, data_root, tmp_path, monkeypatch):
    """main.py's meta-test pipeline (get_loss_multiple(False): map_fn over 2 tasks, 5 inner
    steps with 3 MC samples each) against our Runner's compiled eval step. The loop bodies
    are traced once on both sides (map_fn over tasks; our test-time inner loop is a while
    loop too), so every task and every inner step gets the same 3 x 5 draws."""
    runner = ours(data_root, tmp_path, 'metadrop')
    ep = random_episode(13)
    period = N_TEST_MC * 5
    values = our_values(runner)
    theirs_draws = Draws(period)
    with tf.Graph().as_default():
        theirs = original_model(original, 'metadrop')
        theirs.get_theta(), theirs.get_phi()
        inject(monkeypatch, original, theirs_draws)
        tnet = theirs.get_loss_multiple(False)
        with tf1_session() as session:
            load_values(session, values, 'metadrop')
            cent, acc = session.run([tnet['cent'], tnet['acc']], original_feed(theirs, ep))
    assert theirs_draws.calls == N_STEPS * period   # traced once, unrolled over steps
    runner.model.noise = Draws(period)
    losses, accs = runner.eval_step(*ep)
    close('meta-test query loss (metabatch mean)', np.mean(losses.numpy()), cent)
    np.testing.assert_array_equal(accs.numpy(), acc)


# ---- export and the episode sampler --------------------------------------------------------
def original_data(original, data_root):
    """metadrop data.py's Data over our npy files: what its __init__ sets, for files of this
    size (its __init__ reshapes to the full 4800 / 1692 classes)."""
    data = object.__new__(original.data.Data)
    data.N, data.K_mtr, data.K_mte = PER_CLASS, N_TRAIN_CLASSES, N_TEST_CLASSES
    folder = data_root / 'omniglot'
    data.x_mtr = np.load(folder / 'train.npy').reshape(N_TRAIN_CLASSES, PER_CLASS, 784)
    data.x_mte = np.load(folder / 'test.npy').reshape(N_TEST_CLASSES, PER_CLASS, 784)
    return data


def generate(data, seed, way, n_episodes, meta_training=True, classes=None):
    """The original's generate_episode from np.random's global state seeded with `seed`."""
    np.random.seed(seed)
    args = types.SimpleNamespace(way=way, shot=SHOT, query=QUERY)
    return data.generate_episode(args, meta_training=meta_training, n_episodes=n_episodes,
                                 classes=classes)


def assert_same_episode(ours_ep, theirs):
    xtr, ytr, xte, yte = theirs
    n = len(xtr)
    np.testing.assert_array_equal(ours_ep.xs.reshape(n, -1, 784), xtr)
    np.testing.assert_array_equal(ours_ep.xq.reshape(n, -1, 784), xte)
    np.testing.assert_array_equal(ours_ep.ys, ytr.argmax(-1))
    np.testing.assert_array_equal(ours_ep.yq, yte.argmax(-1))


@pytest.mark.parametrize('mode', ['metadrop', 'maml'])
def test_export_arrays(original64, data_root, tmp_path, monkeypatch, mode):
    """One episode of `--mode export`, in float64 (its inner steps take gradients): the
    original's model.export() (features htr / hte, head w / b before every inner step and
    after the last, 10 noisy support feature sets htr_sample for Meta-Dropout; 3 MC samples
    per inner loss) and main.py's episode (2-way, classes (0, 5) of the meta-test split)
    against model/export.py's sampler call and trajectory(), with the same draws in the same
    order."""
    original = original64
    runner = ours(data_root, tmp_path, mode, dtype=tf.float64)
    model = runner.model
    # The episode: main.py export() for c = 0 and ours as export() draws it, from the same
    # RandomState; its float32 images are given in float64 to both.
    theirs_ep = generate(original_data(original, data_root), 4, 2, 1, meta_training=False,
                         classes=[0, 5])
    ep = episodes_lib.EpisodeSampler(runner.dataset.test, 2, SHOT, QUERY).sample(
        np.random.RandomState(4), 1, classes=[0, 5])
    assert_same_episode(ep, theirs_ep)
    xtr, ytr, xte, yte = (a[0].astype(np.float64) for a in theirs_ep)
    theirs_draws, ours_draws = Draws(), Draws()
    values = our_values(runner)
    with tf.Graph().as_default():
        theirs = original_model(original, mode)
        theirs.get_theta(), theirs.get_phi()
        inject(monkeypatch, original, theirs_draws)
        export_net = theirs.export()
        with tf1_session() as session:
            load_values(session, values, mode)
            out = session.run(export_net, {theirs.xtr_2way: xtr, theirs.ytr_2way: ytr,
                                           theirs.xte_2way: xte, theirs.yte_2way: yte})
    if mode == 'metadrop':
        model.noise = ours_draws
    arrays = export_lib.trajectory(model, tf.constant(ep.xs[0], tf.float64),
                                   tf.constant(ep.ys[0]), tf.constant(ep.xq[0], tf.float64),
                                   model.n_test_steps)
    assert sorted(arrays) == sorted(out)
    assert ('htr_sample' in out) == (mode == 'metadrop')
    if mode == 'metadrop':   # under --maml the original draws conv noise it then ignores
        assert ours_draws.calls == theirs_draws.calls
    for key in sorted(out):
        close(f'export {key}', arrays[key], out[key], rtol=RTOL64)


@pytest.mark.parametrize('meta_training', [True, False], ids=['train', 'test'])
def test_class_reuse_sampler(original, data_root, tmp_path, meta_training):
    """data.py generate_episode (one class set for every task of a call: its bug) against
    our Runner's sampler with --reuse_task_classes, from the same np.random.RandomState: the
    same classes, label order and images, metabatch of 4. Without the flag the first task is
    the same draw and the others have their own classes."""
    data = original_data(original, data_root)
    split = 'train' if meta_training else 'test'
    buggy = Runner(config(data_root, tmp_path / 'reuse', 'metadrop', '--reuse_task_classes'),
                   log=lambda *a: None).sampler(split)
    fixed = Runner(config(data_root, tmp_path / 'fixed', 'metadrop'),
                   log=lambda *a: None).sampler(split)
    for seed in range(3):
        theirs = generate(data, seed, WAY, 4, meta_training=meta_training)
        assert_same_episode(buggy.sample(np.random.RandomState(seed), 4), theirs)
        classes, _ = buggy.draw_ids(np.random.RandomState(seed), 4)
        assert (classes == classes[0]).all()
        ours_fixed = fixed.sample(np.random.RandomState(seed), 4)
        assert_same_episode(episodes_lib.Episode(*(a[:1] for a in ours_fixed)),
                            [a[:1] for a in theirs])
        classes, _ = fixed.draw_ids(np.random.RandomState(seed), 4)
        assert not (classes == classes[0]).all()
