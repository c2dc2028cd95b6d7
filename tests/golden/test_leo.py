"""Golden test: deepmind/leo's own model.py (with its data.py, config.py, runner.py and utils.py)
beside model/leo.py.

The original is TF 1.x graph code on Sonnet 1 and TFP; it runs here on the Sonnet 1 stand-in of
tests/golden/sonnet1.py (checked on its own below) with TF 1.x TensorShape semantics while its
graph is built. Its config.py and runner.py define absl flags at import: they get a private
FlagValues (so their flags never meet main.py's), and the test reads the original's defaults from
config.get_inner_model_config() / get_outer_model_config().

Both implementations get the same parameter values (ours, randomised, assigned to the original's
variables by name), the same two episodes (3-way 2-shot, 3 queries per class, 8-d unit-norm
embeddings) and the same noise: the original's `tfp.distributions.Normal.sample` is patched to
return loc + scale * (a given standard-normal draw), tfp's own formula, and its `tf.nn.dropout`
to apply a given keep mask with TF's formula; ours takes the same draws through LEO.noise and
LEO.keep_mask. The original draws one dropout mask ours never needs (the support loss after the
last fine-tuning step, which it computes and discards): that mask is simply not given to ours.

Compared in float64 (the original module's default): the encoder, the relation network, the
latent distribution's parameters, the latent draw and the KL, every decoder output and classifier
weight draw, every support loss of the latent and fine-tuning loops, the adapted weights, the
encoder penalty, the L2 and orthogonality penalties, the query loss and accuracy, the per-episode
and metabatch loss, the meta-gradient of all seven variables, one outer step (runner.py's
clipping by value and by norm, then TF1 Adam), the meta-test computation, and the NaN guard:
--original_nan_guard against grads_and_vars on a NaN episode, and our default fallback against
the gradient its docstring intends, computed from the original's own L2 collection.

Differences found (README, Fidelity notes): the latent KL's value where sigma sits at its 1e-10
floor (the original's tfp log_prob loses precision there; ours computes it from the draw; the
flag --original_kl_estimate reproduces the original's formula; the gradient is the same either
way).

The encoder penalty and the orthogonality weight carry float32 roundings in the original's
float64 module (tf.losses.mean_squared_error computes in float32; tf.cast of a Python float
rounds through float32): they are compared at 2e-7 / 3e-8, the meta-gradient at 1e-7.
"""
import collections
import contextlib
import math
import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from absl import flags as absl_flags

import main
from model import build_model, optim
from model import leo as leo_module
from tests.golden import sonnet1
from tests.golden.originals import load_original, original_dir

v1 = tf.compat.v1

WAY, SHOT, QUERY, DIM, LATENTS, T, F = 3, 2, 3, 8, 4, 2, 2
N_EPISODES = 2
HPARAMS = dict(dropout_rate=0.3, kl_weight=0.5, encoder_penalty_weight=0.1,
               l2_penalty_weight=0.01, orthogonality_penalty_weight=0.2)
OUTER_LR = 1e-3
RTOL = 1e-9
GRAD_RTOL = 1e-7
MEASURED = collections.defaultdict(lambda: [0., 0.])
# The original's variable for each of ours (model.outer_variables order).
ORIGINAL_NAMES = ['leo/encoder/linear/w', 'leo/relation_network/mlp/linear_0/w',
                  'leo/relation_network/mlp/linear_1/w', 'leo/relation_network/mlp/linear_2/w',
                  'leo/decoder/linear/w', 'leo/leo_inner/lr', 'leo/finetuning/lr']


def close(ours, theirs, what, rtol=RTOL, atol=0.):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    diff = float(np.max(np.abs(ours - theirs))) if ours.size else 0.
    scale = float(np.max(np.abs(theirs))) if theirs.size else 0.
    MEASURED[what][0] = max(MEASURED[what][0], diff)
    MEASURED[what][1] = max(MEASURED[what][1], diff / scale if scale else 0.)
    assert diff <= max(rtol * max(scale, 1e-3), atol), \
        f'{what}: max |diff| {diff:.3g}, scale {scale:.3g}'


@pytest.fixture(scope='module', autouse=True)
def report():
    yield
    for key, (diff, rel) in sorted(MEASURED.items()):
        print(f'leo golden {key}: max abs {diff:.2e}, max rel {rel:.2e}')


# ---- loading the original ---------------------------------------------------------------------
def private_absl():
    """An `absl` module whose flags.DEFINE_* register into a private FlagValues."""
    values = absl_flags.FlagValues()
    flags = types.SimpleNamespace(FLAGS=values)
    for kind in ('string', 'integer', 'float', 'boolean', 'enum'):
        define = getattr(absl_flags, f'DEFINE_{kind}')
        setattr(flags, f'DEFINE_{kind}',
                lambda *a, _define=define, **k: _define(*a, flag_values=values, **k))
    module = types.ModuleType('absl')
    module.flags = flags
    return module, values


@pytest.fixture(scope='module')
def leo():
    folder = original_dir('leo')
    absl, values = private_absl()
    loaded = load_original(folder, ['data', 'model', 'config', 'utils', 'runner'],
                           substitutes={'sonnet': sonnet1.module(), 'absl': absl},
                           preload=('tensorflow_probability',))
    values(['leo'])   # parse: the original's defaults
    return loaded


class InjectedDraws:
    """Hands out given standard-normal draws and dropout keep masks in call order."""

    def __init__(self, noise, masks):
        self.noise, self.masks = list(noise), list(masks)

    def next_noise(self):
        return self.noise.pop(0)

    def next_mask(self):
        return self.masks.pop(0)

    def done(self):
        return not self.noise and not self.masks


def dropout_with(draws):
    """tf.nn.dropout's computation (TF 2.x nn_ops._dropout) with a given keep mask."""
    def dropout(x, keep_prob=None, noise_shape=None, seed=None, name=None, rate=None):
        assert keep_prob is None and noise_shape is None
        if isinstance(rate, (int, float)) and rate == 0:
            return x   # TF returns x unchanged for a Python rate of 0
        scale = tf.convert_to_tensor(1 / (1 - rate), dtype=x.dtype)
        return tf.where(tf.constant(draws.next_mask()), x * scale, tf.zeros([], x.dtype))
    return dropout


def normal_with(draws):
    class InjectedNormal(tfp.distributions.Normal):
        """tfp's Normal whose sample() is tfp's `sampled * scale + loc` with a given draw."""

        def sample(self, sample_shape=(), seed=None, name='sample', **kwargs):
            assert sample_shape == ()
            eps = tf.constant(draws.next_noise(), self.dtype)
            return eps * self.scale + self.loc
    return InjectedNormal


class _Delegate(types.ModuleType):
    def __init__(self, base, **overrides):
        super().__init__(getattr(base, '__name__', 'delegate'))
        self._base = base
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        return getattr(self._base, name)


@contextlib.contextmanager
def injected(leo, draws):
    """The original's model.py sees patched tf.nn.dropout and tfp Normal.sample meanwhile."""
    module = leo.model
    saved_tf, saved_tfp = module.tf, module.tfp
    module.tf = _Delegate(saved_tf, nn=_Delegate(saved_tf.nn, dropout=dropout_with(draws)))
    module.tfp = _Delegate(saved_tfp, distributions=_Delegate(
        saved_tfp.distributions, Normal=normal_with(draws)))
    try:
        yield
    finally:
        module.tf, module.tfp = saved_tf, saved_tfp


def spy(record, name, method):
    def wrapped(*args, **kwargs):
        out = method(*args, **kwargs)
        record[name].append(out)
        return out
    return wrapped


SPIED = ('encoder', 'relation_network', 'average_codes_per_class', 'possibly_sample', 'decoder',
         'loss_fn', 'leo_inner_loop', 'finetuning_inner_loop')


# ---- episodes, weights, draws -----------------------------------------------------------------
def make_episodes(seed=0, dim=DIM, way=WAY, shot=SHOT, query=QUERY, n=N_EPISODES):
    """n episodes, class-major, unit-norm embeddings (LEO's data pipeline normalises)."""
    rng = np.random.default_rng(seed)

    def unit(shape):
        x = rng.normal(size=shape)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)
    xs, xq = unit((n, way, shot, dim)), unit((n, way, query, dim))
    return xs, xq


def randomise(model, seed=1, scale=1.):
    """Our variables drawn like the original's initialisers (Glorot uniform; the step sizes
    around their inits, varied per entry so each latent / dimension has its own)."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weight_matrices:
        fan_in, fan_out = w.shape
        limit = scale * math.sqrt(6. / (fan_in + fan_out))
        values.append(rng.uniform(-limit, limit, w.shape))
    values.append(rng.uniform(0.5, 1.5, model.inner_lr.shape))
    values.append(rng.uniform(0.01, 0.05, model.finetuning_lr.shape))
    for var, value in zip(model.outer_variables, values):
        var.assign(value.astype(var.dtype.as_numpy_dtype))
    return values


def make_draws(seed, n=N_EPISODES, way=WAY, shot=SHOT, query=QUERY, dim=DIM, latents=LATENTS,
               t=T, f=F, rate=HPARAMS['dropout_rate'], dtype=np.float64):
    """Per episode, in the original's call order: the latent draw, T + 1 weight draws; the
    masks of the encoder, the T + 1 latent-loop losses, the F fine-tuning losses (the last
    unused) and the query."""
    rng = np.random.default_rng(seed)
    noise = [[rng.standard_normal((way, shot, latents)).astype(dtype)]
             + [rng.standard_normal((way, shot, dim)).astype(dtype) for _ in range(t + 1)]
             for _ in range(n)]
    masks = [[rng.random((way, shot, dim)) >= rate for _ in range(1 + (t + 1) + f)]
             + [rng.random((way, query, dim)) >= rate] for _ in range(n)]
    return noise, masks


def ours_view(noise, masks, t=T, f=F):
    """The same draws as ours asks for them: stacked over the episodes, without the mask of
    the original's discarded last fine-tuning loss (index 1 + (T + 1) + F - 1)."""
    unused = 1 + (t + 1) + f - 1
    our_masks = [[m for i, m in enumerate(ep) if i != unused] for ep in masks]
    stack = lambda per_episode: [np.stack(group) for group in zip(*per_episode)]  # noqa: E731
    return stack(noise), stack(our_masks)


def flat_draws(noise, masks):
    return ([d for ep in noise for d in ep], [m for ep in masks for m in ep])


# ---- the two implementations ------------------------------------------------------------------
def our_model(*extra, way=WAY, shot=SHOT, dim=DIM, latents=LATENTS, t=T, f=F, hp=HPARAMS):
    argv = ['--model', 'leo', '--savedir', '/tmp/unused', '--num_classes', str(way),
            '--num_tr_examples_per_class', str(shot), '--num_latents', str(latents),
            '--inner_unroll_length', str(t), '--finetuning_unroll_length', str(f),
            *[f'--{k}={v}' for k, v in hp.items()], *extra]
    cfg = main.parse_config(argv)
    return build_model(cfg, way, (dim,)), cfg


def feed_ours(model, noise, masks):
    noise, masks = list(noise), list(masks)
    record = collections.defaultdict(list)
    model.noise = lambda shape, dtype: tf.constant(noise.pop(0), dtype)
    model.keep_mask = lambda shape, rate, dtype: tf.constant(masks.pop(0))
    for name in SPIED:
        setattr(model, name, spy(record, name, getattr(model, name)))
    return record, lambda: not noise and not masks


def our_flat(xs, xq):
    n = xs.shape[0]
    ys = np.tile(np.repeat(np.arange(xs.shape[1]), xs.shape[2]), (n, 1)).astype(np.int32)
    yq = np.tile(np.repeat(np.arange(xq.shape[1]), xq.shape[2]), (n, 1)).astype(np.int32)
    return (tf.constant(xs.reshape(n, -1, xs.shape[-1])), tf.constant(ys),
            tf.constant(xq.reshape(n, -1, xq.shape[-1])), tf.constant(yq))


def run_ours(model, xs, xq, training=True):
    """Per-episode losses, accuracy, parts and the meta-gradient."""
    with tf.GradientTape() as tape:
        loss, acc, parts = model.episode_losses(*our_flat(xs, xq), training=training)
        mean = tf.reduce_mean(loss)
    out = dict(loss=loss.numpy(), acc=acc.numpy(), mean=mean.numpy(),
               parts={k: v.numpy() for k, v in parts.items()})
    if training:
        out['grads'] = [g.numpy() for g in tape.gradient(mean, model.outer_variables)]
    return out


def our_outer_step(model, loss, grads, original_nan_guard=False):
    """(applied, the variables after LEO's outer step from the current ones: guard,
    per-tensor clipping, TF1 Adam); the variables are put back after."""
    before = [v.numpy() for v in model.outer_variables]
    opt = optim.make_optimizer('adam', model.outer_variables, OUTER_LR)
    update = leo_module.make_outer_update(model, opt, 0.1, 0.1, original_nan_guard)
    applied = bool(update(tf.constant(loss), [tf.constant(g) for g in grads]))
    after = [v.numpy() for v in model.outer_variables]
    for var, value in zip(model.outer_variables, before):
        var.assign(value)
    return applied, after


def run_original(leo, weights, xs, xq, noise=None, masks=None, training=True, dtype=tf.float64,
                 intended_fallback=False, hp=HPARAMS, latents=LATENTS, t=T, f=F):
    """The original on the same weights, episodes and draws: its per-call records, per-episode
    loss, the metabatch mean, grads_and_vars, and the variables after runner.py's clipping and
    one TF1 Adam step (with intended_fallback: the step its docstring intends on a NaN)."""
    config = leo.config.get_inner_model_config()
    config.update(hp, num_latents=latents, inner_unroll_length=t, finetuning_unroll_length=f)
    outer = leo.config.get_outer_model_config()
    draws = InjectedDraws(*flat_draws(noise or [], masks or []))
    record = collections.defaultdict(list)
    int_dtype = tf.int64 if dtype == tf.float64 else tf.int32
    np_dtype = dtype.as_numpy_dtype
    with tf.Graph().as_default(), sonnet1.tf1_tensor_shapes(), injected(leo, draws):
        model = leo.model.LEO(config, use_64bits_dtype=dtype == tf.float64)
        for name in SPIED:
            setattr(model, name, spy(record, name, getattr(model, name)))
        losses, accs = [], []
        for e in range(xs.shape[0]):
            labels = lambda k: tf.constant(  # noqa: E731
                np.repeat(np.arange(xs.shape[1]), k).reshape(xs.shape[1], k, 1), int_dtype)
            problem = leo.data.ProblemInstance(
                tf.constant(xs[e].astype(np_dtype)), labels(xs.shape[2]),
                tf.zeros(xs.shape[1:3], tf.string), tf.constant(xq[e].astype(np_dtype)),
                labels(xq.shape[2]), tf.zeros(xq.shape[1:3], tf.string))
            loss, acc = model(problem, is_meta_training=training)
            losses.append(loss)
            accs.append(acc)
        assert draws.done(), 'the original used fewer draws than given'
        mean = tf.reduce_mean(tf.stack(losses))
        fetch = dict(losses=losses, accs=accs, mean=mean, record=dict(record),
                     l2=model._l2_regularization, ortho=model._decoder_orthogonality_reg)
        if training:
            grads, variables = model.grads_and_vars(mean)
            if intended_fallback:   # the docstring's: d(1e-4 / lambda_1 * L2) / dvar, 0 if none
                penalty = 1e-4 / config['l2_penalty_weight'] * model._l2_regularization
                grads = [tf.zeros_like(v) if g is None else g
                         for g, v in zip(tf.gradients(penalty, variables), variables)]
            clipped = leo.runner._clip_gradients(grads, outer['gradient_threshold'],
                                                 outer['gradient_norm_threshold'])
            step = v1.train.AdamOptimizer(OUTER_LR).apply_gradients(list(zip(clipped,
                                                                              variables)))
            fetch['grads'] = list(grads)
        else:
            variables = model.trainable_variables
        by_name = {v.name.split(':')[0]: v for v in variables}
        names = [v.name.split(':')[0] for v in variables]
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            for name, value in zip(ORIGINAL_NAMES, weights):
                by_name[name].load(value.astype(np_dtype), sess)
            out = sess.run(fetch)
            if training:
                sess.run(step)
                after = dict(zip(names, sess.run(list(variables))))
                out['after'] = [after[n] for n in ORIGINAL_NAMES]
                grads = dict(zip(names, out['grads']))
                out['grads'] = [grads[n] for n in ORIGINAL_NAMES]
    return out


# ---- the comparisons --------------------------------------------------------------------------
@pytest.fixture(scope='module')
def setting():
    xs, xq = make_episodes()
    model, _ = our_model()
    weights = randomise(model)
    noise, masks = make_draws(seed=2)
    return xs, xq, weights, noise, masks


@pytest.fixture(scope='module')
def theirs(leo, setting):
    xs, xq, weights, noise, masks = setting
    return run_original(leo, weights, xs, xq, noise, masks)


def compare_training(ours, record, theirs, kl_exact):
    """Every recorded call of ours against the original's (episode e of ours' batch against
    the original's e-th call)."""
    o, t = record, theirs['record']
    E = N_EPISODES

    def per_episode(ours_calls, their_calls, what, per=1, pick=lambda x: x, atol=0.):
        for j, ours_out in enumerate(ours_calls):
            for e in range(E):
                close(pick(ours_out)[e], pick(their_calls[e * per + j]), what, atol=atol)

    per_episode(o['encoder'], t['encoder'], 'encoder')
    per_episode(o['relation_network'], t['relation_network'], 'relation network')
    per_episode(o['average_codes_per_class'], t['average_codes_per_class'],
                'latent distribution parameters')
    # possibly_sample: the latent draw, then T + 1 classifier weight draws per episode
    per_episode(o['possibly_sample'][:1], t['possibly_sample'], 'latent draw z_0', per=T + 2,
                pick=lambda x: x[0])
    for e in range(E):
        their_kl = t['possibly_sample'][e * (T + 2)][1]
        close(o['possibly_sample'][0][1][e], their_kl, 'latent KL',
              atol=0. if kl_exact else 1e-5)
    for j in range(T + 1):
        for e in range(E):
            close(o['possibly_sample'][1 + j][0][e], t['possibly_sample'][e * (T + 2) + 1 + j][0],
                  'classifier weight draws')
    per_episode(o['decoder'], t['decoder'], 'decoder', per=T + 1)
    # support losses: ours T latent + F fine-tuning steps; the original's T + 1 latent losses
    # and F fine-tuning losses (the last discarded); then the query loss
    n_theirs = T + F + 2
    for j in range(T + F):
        for e in range(E):
            close(o['loss_fn'][j][e], t['loss_fn'][e * n_theirs + j], 'inner support losses')
    for e in range(E):
        close(o['loss_fn'][T + F][e], t['loss_fn'][e * n_theirs + T + F + 1], 'query loss')
        close(o['leo_inner_loop'][0][1][e], t['leo_inner_loop'][e][1], 'adapted weights W_T')
        # the original's tf.losses.mean_squared_error casts to float32 (then back): its
        # penalty carries float32 rounding in a float64 module
        close(ours['parts']['encoder_penalty'][e], t['leo_inner_loop'][e][2], 'encoder penalty',
              rtol=2e-7)
        close(ours['acc'][e], theirs['accs'][e], 'query accuracy')
    close(ours['parts']['l2'], theirs['l2'], 'L2 penalty')
    # the original's tf.cast(orthogonality_penalty_weight, dtype) rounds the Python float to
    # float32 first (0.2 -> 0.200000003): 1.5e-8 relative in a float64 module
    close(ours['parts']['orthogonality'], theirs['ortho'], 'orthogonality penalty', rtol=3e-8)


@pytest.mark.parametrize('kl_mode', ['original_kl_estimate', 'default'])
def test_meta_train_forward_gradient_and_outer_step(leo, setting, theirs, kl_mode):
    """Everything of one meta-train step on the same weights, episodes and draws. With
    --original_kl_estimate everything agrees to 1e-9; by default only the KL's value (where
    sigma is floored) may differ, by float64 rounding of mu / 1e-10, and the gradient agrees."""
    xs, xq, weights, noise, masks = setting
    exact = kl_mode != 'default'
    model, cfg = our_model(*(['--original_kl_estimate'] if exact else []))
    assert cfg.original_kl_estimate == exact
    randomise(model)
    record, done = feed_ours(model, *ours_view(noise, masks))
    ours = run_ours(model, xs, xq)
    assert done(), 'ours used fewer draws than given'
    compare_training(ours, record, theirs, exact)
    atol = 0. if exact else 1e-5
    for e in range(N_EPISODES):
        close(ours['loss'][e], theirs['losses'][e], 'episode loss', atol=atol)
    close(ours['mean'], theirs['mean'], 'metabatch loss', atol=atol)
    for name, g_ours, g_theirs in zip(ORIGINAL_NAMES, ours['grads'], theirs['grads']):
        # the two float32 roundings above (encoder penalty, orthogonality weight) reach the
        # meta-gradient's encoder, relation network and decoder parts
        close(g_ours, g_theirs, f'meta-gradient {name.split("/")[1]}', rtol=GRAD_RTOL)
    # one outer step on the same meta-gradient (the original's): runner.py's clipping by value
    # then by norm per tensor, and TF1 Adam. (On each one's own gradient the steps would differ
    # more: Adam's first step is g / (|g| + 3e-7), so the 1e-8 float32 roundings above are
    # amplified in entries whose gradient is near 0.)
    applied, after = our_outer_step(model, theirs['mean'], theirs['grads'])
    assert applied
    for name, a_ours, a_theirs, w in zip(ORIGINAL_NAMES, after, theirs['after'], weights):
        # TF1's AdamOptimizer casts its float32 beta1, beta2, epsilon and beta powers to the
        # float64 variables' dtype; model/optim.py does the same (it once used the exact 0.999:
        # 6.4e-6 of the step). What remains is the order of float64 operations.
        close(a_ours - w, a_theirs - w, 'outer step (clip, Adam)', rtol=1e-9)
        close(a_ours, a_theirs, 'variables after the outer step', rtol=2e-7)
    # the clipping did act: every step's gradient was over the thresholds somewhere
    assert max(np.abs(g).max() for g in theirs['grads']) > 0.1


def test_meta_test_computation(leo, setting):
    xs, xq, weights, _, _ = setting
    model, _ = our_model()
    randomise(model)
    ours = run_ours(model, xs, xq, training=False)
    theirs = run_original(leo, weights, xs, xq, training=False)
    for e in range(N_EPISODES):
        close(ours['loss'][e], theirs['losses'][e], 'meta-test loss')
        close(ours['acc'][e], theirs['accs'][e], 'meta-test accuracy')
    assert np.all(ours['parts']['kl'] == 0) and np.all(ours['parts']['encoder_penalty'] == 0)


@pytest.mark.parametrize('guard', ['original_nan_guard', 'default'])
def test_nan_guard(leo, setting, guard):
    """A NaN in one support embedding makes the loss and the meta-gradient NaN. The original's
    grads_and_vars then steps on every variable's own value (its swapped names): ours with
    --original_nan_guard equals it. Our default steps on the gradient its docstring intends,
    d(1e-4 / lambda_1 * L2)/dvar, here computed from the original's own L2 collection."""
    xs, xq, weights, noise, masks = setting
    xs = xs.copy()
    xs[0, 1, 0, 3] = np.nan
    original = guard != 'default'
    model, cfg = our_model(*(['--original_nan_guard'] if original else []))
    assert cfg.original_nan_guard == original
    randomise(model)
    feed_ours(model, *ours_view(noise, masks))
    ours = run_ours(model, xs, xq)
    theirs = run_original(leo, weights, xs, xq, noise, masks, intended_fallback=not original)
    assert np.isnan(theirs['mean']) and np.isnan(ours['mean'])
    assert all(np.isnan(g).any() for g in ours['grads'])
    applied, after = our_outer_step(model, ours['mean'], ours['grads'], cfg.original_nan_guard)
    assert not applied
    for name, a_ours, a_theirs, w in zip(ORIGINAL_NAMES, after, theirs['after'], weights):
        assert np.all(np.isfinite(a_ours)), name
        close(a_ours - w, a_theirs - w, 'NaN guard step', rtol=1e-9)   # Adam, as above
    if not original:   # the step sizes are left alone by the intended fallback
        for a_ours, w in zip(after[5:], weights[5:]):
            np.testing.assert_array_equal(a_ours, w)


def test_our_defaults_are_the_originals_config(leo):
    """config.py's flag defaults (read through the original's own getters) are ours."""
    cfg = main.parse_config(['--model', 'leo', '--savedir', '/tmp/unused'])
    inner = leo.config.get_inner_model_config()
    outer = leo.config.get_outer_model_config()
    data = leo.config.get_data_config()
    ours_inner = dict(inner_unroll_length=cfg.n_steps,
                      finetuning_unroll_length=cfg.finetuning_unroll_length,
                      num_latents=cfg.num_latents, inner_lr_init=cfg.inner_lr_init,
                      finetuning_lr_init=cfg.finetuning_lr_init, dropout_rate=cfg.dropout_rate,
                      kl_weight=cfg.kl_weight, encoder_penalty_weight=cfg.encoder_penalty_weight,
                      l2_penalty_weight=cfg.l2_penalty_weight,
                      orthogonality_penalty_weight=cfg.orthogonality_penalty_weight)
    assert ours_inner == inner
    ours_outer = dict(num_classes=cfg.way, num_tr_examples_per_class=cfg.shot,
                      num_val_examples_per_class=cfg.query, metatrain_batch_size=cfg.metabatch,
                      metavalid_batch_size=cfg.metavalid_batch_size,
                      metatest_batch_size=cfg.metatest_batch_size,
                      num_steps_limit=cfg.n_train_iters, outer_lr=cfg.meta_lr,
                      gradient_threshold=cfg.gradient_threshold,
                      gradient_norm_threshold=cfg.gradient_norm_threshold)
    assert ours_outer == outer
    assert (cfg.total_examples_per_class, cfg.embedding_crop, cfg.train_on_val) == \
        (data['total_examples_per_class'], data['embedding_crop'], data['train_on_val'])


def test_variables_and_initialisers_are_the_originals(leo):
    """The same seven variables (names, shapes, dtype), the step sizes' initial values, and
    Glorot-uniform weight matrices in both."""
    config = leo.config.get_inner_model_config()
    config.update(num_latents=LATENTS)
    xs, xq = make_episodes(n=1)
    with tf.Graph().as_default(), sonnet1.tf1_tensor_shapes():
        model = leo.model.LEO(config)
        labels = lambda k: tf.constant(  # noqa: E731
            np.repeat(np.arange(WAY), k).reshape(WAY, k, 1), tf.int64)
        model(leo.data.ProblemInstance(tf.constant(xs[0]), labels(SHOT), tf.zeros([WAY, SHOT],
                                       tf.string), tf.constant(xq[0]), labels(QUERY),
                                       tf.zeros([WAY, QUERY], tf.string)))
        variables = model.trainable_variables
        assert set(variables) == set(v1.trainable_variables())
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            theirs = {v.name.split(':')[0]: (v.dtype.base_dtype, value)
                      for v, value in zip(variables, sess.run(list(variables)))}
    ours, _ = our_model(hp={})
    assert sorted(theirs) == sorted(ORIGINAL_NAMES)
    for name, var in zip(ORIGINAL_NAMES, ours.outer_variables):
        dtype, value = theirs[name]
        assert var.dtype == dtype and tuple(var.shape) == value.shape, name
        if name.endswith('lr'):
            np.testing.assert_array_equal(var.numpy(), value)
        else:
            limit = math.sqrt(6. / sum(value.shape))
            for v in (value, var.numpy()):
                # Glorot uniform: inside the limit, and (for the smallest matrix here, 32
                # entries) the largest of them above half of it but with probability 0.5^32.
                # (0.8 failed once in 1e3 draws: the draw is not seeded by the test.)
                assert np.abs(v).max() <= limit and np.abs(v).max() > 0.5 * limit, name


# ---- the Sonnet 1 stand-in on its own ---------------------------------------------------------
def test_sonnet1_linear_mlp_batch_apply_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 5))
    with tf.Graph().as_default():
        reg = lambda w: tf.reduce_sum(w)  # noqa: E731
        with v1.variable_scope('outer'):
            linear = sonnet1.Linear(4, regularizers={'w': reg})
            mlp = sonnet1.MLP([6, 4], use_bias=False)
            y_lin = sonnet1.BatchApply(linear)(tf.constant(x))
            y_lin_again = linear(tf.constant(x[0]))   # reused, no second regulariser loss
            y_mlp = sonnet1.BatchApply(mlp)(tf.constant(x))
        other = sonnet1.Linear(2, name='outer')   # a module named like a taken scope: 'outer_1'
        losses = v1.get_collection(v1.GraphKeys.REGULARIZATION_LOSSES)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            w, b, w0, w1 = sess.run([linear.w, linear.b, *[layer.w for layer in mlp.layers]])
            out = sess.run([y_lin, y_lin_again, y_mlp, losses])
        names = sorted(v.name for v in linear.variables + mlp.variables)
        assert other.module_name == 'outer_1'
    assert names == ['outer/linear/b:0', 'outer/linear/w:0', 'outer/mlp/linear_0/w:0',
                     'outer/mlp/linear_1/w:0']
    assert w.dtype == np.float64 and w.shape == (5, 4) and not b.any()   # bias zeros
    assert np.abs(w).max() <= 2 / math.sqrt(5)   # truncated normal, stddev 1/sqrt(in)
    np.testing.assert_allclose(out[0], x @ w + b, rtol=0,
                               atol=1e-14 * np.abs(x @ w + b).max())
    assert out[0].shape == (2, 3, 4)
    np.testing.assert_allclose(out[1], x[0] @ w + b, rtol=0,
                               atol=1e-14 * np.abs(x[0] @ w + b).max())
    # no final relu; float64 sums in another order: 1e-14 of the largest entry
    np.testing.assert_allclose(out[2], np.maximum(x @ w0, 0) @ w1, rtol=0,
                               atol=1e-14 * np.abs(np.maximum(x @ w0, 0) @ w1).max())
    assert len(out[3]) == 1 and out[3][0] == pytest.approx(w.sum(), rel=0,
                                                              abs=1e-14 * np.abs(w).sum())


def test_sonnet1_module_and_reuse_variables():
    class Module(sonnet1.AbstractModule):
        @sonnet1.reuse_variables
        def first(self, x):
            with v1.variable_scope('a'):
                return x * v1.get_variable('v', [], x.dtype, v1.ones_initializer())

        @sonnet1.reuse_variables
        def second(self, x):
            with v1.variable_scope('b'):
                return x + v1.get_variable('v', [], x.dtype, v1.zeros_initializer())

        def _build(self, x):
            return self.second(self.first(x) + self.first(x))

    with tf.Graph().as_default():
        module = Module(name='m')
        out = module(tf.constant(2.))
        again = module(tf.constant(3.))    # the template and the methods reuse their variables
        direct = module.first(tf.constant(5.))
        names = [v.name for v in module.trainable_variables]
        assert names == sorted(names) == ['m/a/v:0', 'm/b/v:0']
        assert len(v1.trainable_variables()) == 2
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            assert sess.run([out, again, direct]) == [4., 6., 5.]


def test_tf1_tensor_shapes():
    with sonnet1.tf1_tensor_shapes():
        dim = tf.zeros([3, 4]).shape[1]
        assert dim.value == 4
    assert tf.zeros([3, 4]).shape[1] == 4 and isinstance(tf.zeros([3, 4]).shape[1], int)


def test_l2_regularizer_standin_is_exact_in_float64():
    """The TF 1.x stand-in converts the scale to float64 (contrib did); tf.cast would round it
    to float32 first."""
    from tests.golden import tf1_standins
    w = np.random.default_rng(0).normal(size=(4, 8))
    value = tf1_standins.l2_regularizer(0.01)(tf.constant(w)).numpy()
    assert value == pytest.approx(0.01 * 0.5 * np.sum(w ** 2), rel=1e-15)
