"""Golden test: haebeom-lee/l2b's own layers.py, encoder.py and model.py beside model/taml.py.

Both are given the same parameter values (ours, randomised, loaded into the original's
variables), the same episodes (two tasks; balanced, and imbalanced with the first task's
support set zero-padded to the second's length as l2b's data.py pads a metabatch) and the
same posterior draws (the original's `Normal.sample` is patched to return given noise, ours
takes it through TAML.noise). Compared for MAML, Meta-SGD, each of omega / gamma / z alone and
all four switches: the inference network's posterior means and scales, the drawn omega,
gamma and z, the inner loss before every inner step, the task KL, the query cross-entropy,
and the meta-gradient of every outer variable; the validation graph (posterior means,
forward_outer_multiple) and, for TAML, the Monte-Carlo meta-test prediction
(forward_outer_multiple_repeat).

Float64. l2b writes tf.float32 into its placeholders, N_t, the per-class loss and tf.map_fn's
dtypes, and leaves tf.zeros / get_variable at their float32 defaults; its operations take their
dtype from their inputs. It runs here under a namespace whose float32 is float64 (and whose
zeros, ones and get_variable default to it), so every operation of its code runs as written,
in float64; ours is the model main.py builds (checked: same variables and shapes) in float64.
In float32 the two differ by round-off only, but round-off decides between near-tied entries
of a max-pool window, whose gradient then goes to another entry: meta-gradients measured
through max-pooling differ by up to 0.5% between TensorFlow's oneDNN and default kernels on
the same graph, which no tolerance can tell from a real difference.

Padding: with --l2b_padding ours equals l2b on the padded episode. Without it (the default)
the documented difference (model/taml.py, README): padded rows are dropped before the base
network and N counts real rows only, so each task is computed as l2b computes that task
alone, unpadded; the test checks exactly that, and that the padded task does differ from
l2b's padded computation while the unpadded task does not.

Sizes: l2b fixes the image geometry by dataset (32x32x3 for cifar, 84x84x3 for mimgnet), so
the test uses its cifar geometry with 4 channels instead of 32, 3-way tasks, 2 inner steps
(the zero head makes the first step move the head only; the second moves every layer).
"""
import collections
import types

import numpy as np
import pytest
import tensorflow as tf

import main
from model import build_model, nets, steps
from model.taml import TAML
from tests.golden.originals import load_original, original_dir
from tests.golden.tf1_standins import TF1Namespace

v1 = tf.compat.v1

WAY, N_CHANNEL, MAX_SHOT, N_STEPS, QUERY = 3, 4, 6, 2, 2
SHAPE = (32, 32, 3)
DIM = int(np.prod(SHAPE))
N_Z = 2 * 4 * N_CHANNEL
NOISE_SHAPES = collections.OrderedDict(omega=[WAY], gamma=[5], z=[N_Z])
SWITCHES = ('alpha_on', 'omega_on', 'gamma_on', 'z_on')
CONFIGS = {'maml': (), 'metasgd': ('alpha_on',), 'omega': ('omega_on',),
           'gamma': ('gamma_on',), 'z': ('z_on',), 'taml': SWITCHES}
# The validation graph (tf.map_fn over the metabatch, posterior means) costs a few seconds to
# build per configuration: built for MAML and all four switches.
VALIDATED = ('maml', 'taml')
# float64 through 2 second-order inner steps: relative to the largest entry compared.
RTOL = 1e-9
# Largest differences seen, per comparison (printed at the end with -s, for the README).
MEASURED = collections.defaultdict(lambda: [0., 0.])


def close(ours, theirs, what, rtol=RTOL, scale=None):
    """Asserts max |ours - theirs| <= rtol * scale, scale = max |theirs| unless given."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    diff = float(np.max(np.abs(ours - theirs))) if ours.size else 0.
    if scale is None:
        scale = float(np.max(np.abs(theirs))) if theirs.size else 0.
    key = what.split('[')[0]
    MEASURED[key][0] = max(MEASURED[key][0], diff)
    MEASURED[key][1] = max(MEASURED[key][1], diff / scale if scale else 0.)
    assert diff <= rtol * max(scale, 1e-6), f'{what}: max |diff| {diff:.3g}, scale {scale:.3g}'


@pytest.fixture(scope='module', autouse=True)
def report():
    yield
    for key, (diff, rel) in sorted(MEASURED.items()):
        print(f'l2b golden {key}: max abs {diff:.2e}, max rel {rel:.2e}')


class Float64TF(TF1Namespace):
    """The original's `tf` with float64 for its float32: its tf.float32 and the float32
    defaults of tf.zeros, tf.ones and tf.get_variable (module docstring)."""
    float32 = tf.float64

    @staticmethod
    def zeros(shape, dtype=tf.float64, name=None):
        return v1.zeros(shape, dtype, name)

    @staticmethod
    def ones(shape, dtype=tf.float64, name=None):
        return v1.ones(shape, dtype, name)

    @staticmethod
    def get_variable(name, shape=None, dtype=tf.float64, *args, **kwargs):
        return v1.get_variable(name, shape, dtype, *args, **kwargs)


@pytest.fixture(scope='module')
def l2b():
    return load_original(original_dir('l2b'), ['layers', 'encoder', 'model'],
                         substitutes={'tensorflow': Float64TF()})


# ---- episodes -------------------------------------------------------------------------------
def make_episode(shots, seed, pad_to=None):
    """One task: support [n, 32, 32, 3] class-blocked (label -1 for zero padding rows, as our
    sampler pads), QUERY queries per class."""
    rng = np.random.default_rng(seed)
    ys = np.concatenate([np.full(s, c) for c, s in enumerate(shots)]).astype(np.int32)
    xs = rng.random((len(ys), *SHAPE))
    if pad_to is not None:
        extra = pad_to - len(ys)
        xs = np.concatenate([xs, np.zeros((extra, *SHAPE))])
        ys = np.concatenate([ys, np.full(extra, -1, np.int32)])
    yq = np.repeat(np.arange(WAY), QUERY).astype(np.int32)
    xq = rng.random((len(yq), *SHAPE))
    return xs, ys, xq, yq


def episodes(kind):
    """Two tasks. 'balanced': 2 shots each; 'imbalanced': task 0 has 1/3/2 shots, padded with
    zero rows to task 1's 4/2/5 = 11 (the metabatch's longest)."""
    if kind == 'balanced':
        return [make_episode((2, 2, 2), 1), make_episode((2, 2, 2), 2)]
    return [make_episode((1, 3, 2), 1, pad_to=11), make_episode((4, 2, 5), 2)]


def unpadded(task):
    xs, ys, xq, yq = task
    return xs[ys >= 0], ys[ys >= 0], xq, yq


def as_l2b(task):
    """l2b's feed: flattened HWC images, one-hot labels (all-zero rows for padding)."""
    xs, ys, xq, yq = task
    onehot = lambda y: (y[:, None] == np.arange(WAY)).astype(np.float64)  # noqa: E731
    return xs.reshape(len(xs), DIM), onehot(ys), xq.reshape(len(xq), DIM), onehot(yq)


def draws(switches, n_tasks, seed):
    """Standard-normal noise per task, in the order both implementations sample: omega,
    gamma, z (those that are on)."""
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(shape)
             for name, shape in NOISE_SHAPES.items() if f'{name}_on' in switches]
            for _ in range(n_tasks)]


# ---- ours -----------------------------------------------------------------------------------
def build_ours(switches, l2b_padding):
    argv = ['--savedir', '/tmp/l2b_golden', '--model', 'taml', '--dataset', 'cifar',
            '--ood_dataset', '', '--way', str(WAY), '--n_channel', str(N_CHANNEL),
            '--max_shot', str(MAX_SHOT), '--n_steps', str(N_STEPS), '--n_test_steps',
            str(N_STEPS), '--inner_lr', '0.5', '--query', str(QUERY)]
    argv += [f'--{s}' for s in switches] + (['--l2b_padding'] if l2b_padding else [])
    cfg = main.parse_config(argv)
    tf.random.set_seed(0)
    model = float64_twin(build_model(cfg, WAY, SHAPE))
    # Random values everywhere (the initialisers' zeros and constants would hide mistakes).
    rng = np.random.default_rng(7)
    for v in model.outer_variables:
        shape = v.shape.as_list()
        if 'alpha' in v.name:
            value = 0.01 * np.exp(0.3 * rng.standard_normal(shape))
        elif len(shape) > 1:
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
        else:
            value = 0.1 * rng.standard_normal(shape)
        v.assign(value)
    return model


def float64_twin(model):
    """The TAML main.py builds, rebuilt over the same Conv4 in float64."""
    net = model.net
    twin = TAML(nets.Conv4(net.way, net.n_channel, net.image_shape, net.variant, zero_head=True,
                           dtype=tf.float64),
                max_shot=model.max_shot, inner_lr=model.inner_lr, n_steps=model.n_steps,
                n_test_steps=model.n_test_steps, alpha_on=model.alpha_on,
                omega_on=model.on['omega'], gamma_on=model.on['gamma'], z_on=model.on['z'],
                n_mc_samples=model.n_mc_samples, l2b_padding=model.l2b_padding,
                first_order=model.first_order)
    assert net.input_norm is None and model.alpha_on == (model.alpha is not None)
    assert [v.shape for v in twin.outer_variables] == [v.shape for v in model.outer_variables]
    if model.alpha is not None:
        for k, v in model.alpha.items():
            assert np.all(v.numpy() == 0.01), k   # l2b's alpha initial value
    return twin


def l2b_name_of(model):
    """Our outer variables by the name of the original's variable holding the same value."""
    names = {}
    for k, v in model.net.theta.items():
        names[f'theta/{k}'] = v
    for k, v in model.net.bn_beta.items():
        names[f'{k}_bn/beta'] = v
    for k, v in (model.alpha or {}).items():
        names[f'alpha/{k}'] = v
    enc = model.encoder
    if enc is not None:
        for layer in ('conv1', 'conv2', 'dense1', 'interact1', 'dense2', 'dense3', 'interact2'):
            names[f'encoder/{layer}/kernel'] = getattr(enc, layer).w
            names[f'encoder/{layer}/bias'] = getattr(enc, layer).b
        for head, (hidden, to_mean, to_scale) in enc.heads.items():
            for prefix, layer in (('dense', hidden), ('mu', to_mean), ('sigma', to_scale)):
                names[f'encoder/{prefix}_{head}/kernel'] = layer.w
                names[f'encoder/{prefix}_{head}/bias'] = layer.b
    assert len(names) == len(model.outer_variables)
    return names


def run_ours(model, tasks, noise):
    """The meta-gradient of the mean over tasks (the runner's metabatch_gradient) with the
    given noise, and per task what the adaptation drew and computed on the way."""
    queue = [d for task in noise for d in task]
    model.noise = lambda shape, dtype: tf.constant(queue.pop(0), dtype)
    adaptations, posteriors = [], []
    adapt, posterior = model.adapt_task, model.posterior

    def recording_adapt(*args, **kwargs):
        adaptations.append(adapt(*args, **kwargs))
        return adaptations[-1]

    def recording_posterior(*args, **kwargs):
        posteriors.append(posterior(*args, **kwargs))
        return posteriors[-1]

    model.adapt_task, model.posterior = recording_adapt, recording_posterior
    loss, acc, grads, metrics = steps.metabatch_gradient(
        lambda t: model.task_loss(*tasks[t], training=True), len(tasks), model.outer_variables,
        model.task_metrics, task_loop='unrolled')
    assert not queue and len(adaptations) == len(posteriors) == len(tasks)
    out = []
    for t, (adapted, post) in enumerate(zip(adaptations, posteriors)):
        out.append(dict(post={k: (m.numpy(), s.numpy()) for k, (m, s) in post.items()},
                        values={k: v.numpy() for k, v in adapted.values.items()},
                        losses=adapted.losses.numpy(), cent=metrics['cent'][t].numpy(),
                        kl=metrics['kl'][t].numpy(), acc=acc[t].numpy()))
    return out, dict(loss=loss.numpy(), grads=grads)


# ---- the original ---------------------------------------------------------------------------
class Original:
    """l2b's LearningToBalance in its own graph:
    - forward_outer for one task with sampled balancing variables, and tf.gradients of its
      cent + kl. forward_outer_multiple's outer loss is the mean over the metabatch of that
      (mean cent + mean kl, the tasks mapped with tf.map_fn), so its meta-gradient is the mean
      of the tasks' gradients: the task graph is run per task (each with its own draws, which
      a draw injected into tf.map_fn's one traced body could not give) and averaged;
    - the validation graph, forward_outer_multiple(sample=False) over a padded metabatch;
    - with all four switches, the meta-test graph forward_outer_multiple_repeat (n_mc sampled
      passes) for one task."""

    def __init__(self, l2b, switches, validation=True, n_mc=2):
        self.l2b = l2b
        self.switches = switches
        self.graph = tf.Graph()
        args = types.SimpleNamespace(
            id_dataset=['cifar'], way=WAY, max_shot=MAX_SHOT, n_steps=N_STEPS, metabatch=2,
            inner_lr=0.5, **{s: s in switches for s in SWITCHES})
        self.recording = None
        saved = (l2b.encoder.normal, l2b.model.tf, l2b.model.accuracy)
        with self.graph.as_default():
            self.pending = []     # noise placeholders the patched sample() hands out in order
            l2b.encoder.normal = self.injected_normal()
            l2b.model.tf = self.recording_tf(l2b.model.tf)
            l2b.model.accuracy = self.recording_accuracy(l2b.model.accuracy)
            try:
                self.build(args, validation, n_mc)
            finally:
                l2b.encoder.normal, l2b.model.tf, l2b.model.accuracy = saved
        # Without grappler's graph rewriting, which takes longer here than the runs.
        config = v1.ConfigProto()
        config.graph_options.rewrite_options.disable_meta_optimizer = True
        self.sess = v1.Session(graph=self.graph, config=config)

    # The patches: record what the original computes, and inject the noise.
    def injected_normal(self):
        outer = self

        class Injected(self.l2b.layers.normal):
            def __init__(self, loc, scale, **kwargs):
                super().__init__(loc, scale, **kwargs)
                if outer.recording is not None:
                    outer.recording['post'].append((loc, scale))

            def sample(self, *args, **kwargs):
                # tf.distributions.Normal draws eps ~ N(0, 1) and returns eps * scale + loc.
                value = outer.pending.pop(0) * self.scale + self.loc
                if outer.recording is not None:
                    outer.recording['values'].append(value)
                return value

        return Injected

    def recording_tf(self, tf1):
        outer = self

        class Recording(types.ModuleType):
            def __getattr__(self, name):
                return getattr(tf1, name)

            @staticmethod
            def map_fn(fn, *args, **kwargs):
                # TF 1.x ran fn as plain Python; TF 2.x first converts it with autograph
                # (half of this graph's construction time), which changes nothing here.
                return tf1.map_fn(tf.autograph.experimental.do_not_convert(fn), *args, **kwargs)

            @staticmethod
            def gradients(ys, xs, *args, **kwargs):
                if outer.recording is not None:   # the inner loss of one inner step
                    outer.recording['losses'].append(ys)
                return tf1.gradients(ys, xs, *args, **kwargs)

        return Recording('tensorflow')

    def recording_accuracy(self, accuracy):
        def recorded(logits, labels, *args, **kwargs):
            if self.recording is not None:
                self.recording['predictions'].append(logits)
            return accuracy(logits, labels, *args, **kwargs)
        return recorded

    def noise_placeholders(self):
        return [v1.placeholder(tf.float64, shape) for name, shape in NOISE_SHAPES.items()
                if f'{name}_on' in self.switches]

    def build(self, args, validation, n_mc):
        model = self.l2b.model.LearningToBalance(args)
        # l2b's cifar geometry, with fewer channels (read at call time).
        model.n_channel = model.encoder.n_channel = N_CHANNEL
        self.task = [v1.placeholder(tf.float64, [None, d]) for d in (DIM, WAY, DIM, WAY)]
        self.noise = self.noise_placeholders()
        self.pending[:] = self.noise
        self.recording = collections.defaultdict(list)
        cent, acc, kl, _ = model.forward_outer(self.task, sample=True)
        record, self.recording = self.recording, None
        assert not self.pending and len(record['losses']) == N_STEPS
        omega, gamma, z = record['post']   # all three heads are always built
        self.record = dict(post=dict(omega=omega, gamma=gamma, z=z), values=record['values'],
                           losses=record['losses'], cent=cent, kl=kl, acc=acc)
        self.loss = cent + kl
        self.variables = v1.trainable_variables()
        self.grads = v1.gradients(self.loss, self.variables)
        self.episode = model.get_placeholders()
        if validation:
            self.validation = model.forward_outer_multiple(sample=False, reuse=True)
        if set(self.switches) == set(SWITCHES):
            self.mc_noise = [self.noise_placeholders() for _ in range(n_mc)]
            self.pending[:] = [p for pas in self.mc_noise for p in pas]
            self.recording = collections.defaultdict(list)
            self.mc_accuracy = model.forward_outer_multiple_repeat(n_sample=n_mc)
            self.mc_prediction = self.recording['predictions'][-1]
            self.recording = None
            assert not self.pending
        self.init = v1.global_variables_initializer()
        self.values = {v.name[:-len(':0')]: v1.placeholder(v.dtype.base_dtype, v.shape)
                       for v in self.variables}
        self.assign = {name: v.assign(self.values[name]).op
                       for v, name in zip(self.variables, self.values)}

    def load(self, ours):
        """Our values into the original's variables (the encoder's stay at their own
        initial values where ours has no inference network: then they are unused)."""
        values = {name: v.numpy() for name, v in l2b_name_of(ours).items()}
        assert set(values) <= set(self.values)
        self.sess.run(self.init)
        for name in set(self.values) - set(values):
            assert name.startswith('encoder/') and ours.encoder is None, name
        self.sess.run([self.assign[name] for name in values],
                      {self.values[name]: value for name, value in values.items()})

    def run(self, tasks, noise):
        """Per-task records, and the metabatch's outer loss and meta-gradient (the means over
        tasks; None for variables the loss does not depend on)."""
        present = [g for g in self.grads if g is not None]
        records, losses, grads = [], [], []
        for task, values in zip(tasks, noise):
            feed = dict(zip(self.task, as_l2b(task)))
            feed.update(zip(self.noise, values))
            record, loss, grad = self.sess.run([self.record, self.loss, present], feed)
            records.append(record)
            losses.append(loss)
            grads.append(grad)
        mean = [np.mean([g[i] for g in grads], 0) for i in range(len(present))]
        mean = iter(mean)
        return records, dict(loss=np.mean(losses), grads={
            v.name[:-len(':0')]: None if g is None else next(mean)
            for v, g in zip(self.variables, self.grads)})


def compare_task(ours, theirs, switches, what):
    on = [n for n in NOISE_SHAPES if f'{n}_on' in switches]
    assert sorted(ours['post']) == sorted(on)
    for name in on:
        for i, part in enumerate(('mean', 'scale')):
            close(ours['post'][name][i], theirs['post'][name][i], f'posterior {part}[{what} {name}]')
    for name, value in zip(on, theirs['values']):
        close(ours['values'][name], value, f'drawn value[{what} {name}]')
    close(ours['losses'], theirs['losses'], f'inner losses[{what}]')
    close(ours['kl'], theirs['kl'], f'task KL[{what}]')
    close(ours['cent'], theirs['cent'], f'query cross-entropy[{what}]')
    assert float(ours['acc']) == pytest.approx(float(theirs['acc']))


def layer_of(name):
    """'theta/conv1_w' -> 'theta/conv1', 'encoder/mu_z/bias' -> 'encoder/mu_z'."""
    for suffix in ('_w', '_b', '/kernel', '/bias'):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def compare_gradients(model, ours, theirs, what):
    close(ours['loss'], theirs['loss'], f'outer loss[{what}]')
    names = l2b_name_of(model)
    by_variable = {id(v): g for v, g in zip(model.outer_variables, ours['grads'])}
    for name, g_theirs in theirs['grads'].items():
        g_ours = by_variable[id(names[name])] if name in names else None
        if g_theirs is None or g_ours is None:
            # Unused heads and, where ours has no inference network, the whole encoder.
            assert g_theirs is None and g_ours is None, (what, name)
            continue
        # Measured against the largest meta-gradient entry of the layer (weights and bias):
        # some biases' meta-gradients are zero up to round-off, by cancellation (a conv bias
        # and its Meta-SGD step, cancelled by the batch-statistics BN that follows; the omega
        # mean's bias, added to every class's omega under a softmax, keeps only its KL part).
        layer = [g for n, g in theirs['grads'].items() if g is not None and
                 layer_of(n) == layer_of(name)]
        close(g_ours.numpy(), g_theirs, f'meta-gradient[{what} {name}]',
              scale=max(float(np.max(np.abs(g))) for g in layer))


@pytest.fixture(scope='module', params=list(CONFIGS))
def config(request, l2b):
    switches = CONFIGS[request.param]
    return request.param, switches, Original(l2b, switches,
                                             validation=request.param in VALIDATED)


@pytest.mark.parametrize('kind', ['balanced', 'imbalanced'])
def test_l2b_padding_equals_l2b(config, kind):
    """--l2b_padding: ours equals l2b on its own padded metabatch (on a balanced one there is
    no padding, so the flag changes nothing)."""
    name, switches, original = config
    model = build_ours(switches, l2b_padding=True)
    original.load(model)
    tasks = episodes(kind)
    noise = draws(switches, len(tasks), seed=3)
    ours, ours_meta = run_ours(model, tasks, noise)
    theirs, theirs_meta = original.run(tasks, noise)
    for t in range(len(tasks)):
        compare_task(ours[t], theirs[t], switches, f'{name} {kind} task {t}')
    compare_gradients(model, ours_meta, theirs_meta, f'{name} {kind}')


def test_without_l2b_padding_each_task_is_l2bs_unpadded_task(config):
    """Default: the padded rows are dropped (fidelity sheet 10.1-10.2), so each task is what
    l2b computes for that task alone, unpadded; the padded task differs from l2b's padded
    computation, the unpadded one does not."""
    name, switches, original = config
    model = build_ours(switches, l2b_padding=False)
    original.load(model)
    tasks = episodes('imbalanced')
    noise = draws(switches, len(tasks), seed=4)
    ours, ours_meta = run_ours(model, tasks, noise)
    theirs, theirs_meta = original.run([unpadded(t) for t in tasks], noise)
    for t in range(len(tasks)):
        compare_task(ours[t], theirs[t], switches, f'{name} unpadded task {t}')
    compare_gradients(model, ours_meta, theirs_meta, f'{name} unpadded')
    padded, _ = original.run(tasks, noise)
    leak = np.max(np.abs(ours[0]['losses'] - padded[0]['losses'])) + \
        abs(float(ours[0]['cent']) - float(padded[0]['cent']))
    assert leak > 1e-3, 'the padded rows should change l2b\'s padded task'
    np.testing.assert_allclose(ours[1]['losses'], padded[1]['losses'], rtol=RTOL)


@pytest.mark.parametrize('kind', ['balanced', 'imbalanced'])
def test_validation_with_posterior_means_equals_l2b(config, kind):
    """l2b's validation graph (forward_outer_multiple, sample=False, over the metabatch) and
    our evaluate with n_mc 0: the same per-task accuracy, mean query CE and mean KL."""
    name, switches, original = config
    if name not in VALIDATED:
        pytest.skip(f'the validation graph is built for {" and ".join(VALIDATED)} only')
    model = build_ours(switches, l2b_padding=True)
    original.load(model)
    tasks = episodes(kind)
    cents, kls, accs = zip(*[model.evaluate(*task, n_mc=0) for task in tasks])
    feed = dict(zip(original.episode, [np.stack(a) for a in zip(*map(as_l2b, tasks))]))
    v = original.sess.run(original.validation, feed)
    close(np.mean(cents), v['cent'], f'validation cross-entropy[{name} {kind}]')
    close(np.mean(kls), v['kl'], f'validation KL[{name} {kind}]')
    # Our accuracies are float32 (the engine's), l2b's here float64: the same fractions.
    np.testing.assert_allclose(np.array(accs), v['acc'], rtol=1e-7)


def test_monte_carlo_meta_test_equals_l2b(config):
    """TAML's meta-test with sampled passes (l2b forward_outer_multiple_repeat): the averaged
    softmax over the passes, the same draws in each."""
    name, switches, original = config
    if name != 'taml':
        pytest.skip('sampled passes are the meta-test of Bayesian TAML (all four switches)')
    model = build_ours(switches, l2b_padding=True)
    original.load(model)
    task = episodes('imbalanced')[1]
    noise = draws(switches, 2, seed=5)            # per pass: omega, gamma, z
    queue = [d for one in noise for d in one]
    model.noise = lambda shape, dtype: tf.constant(queue.pop(0), dtype)
    cent, _, acc = model.evaluate(*task, n_mc=2)
    assert not queue
    feed = dict(zip(original.episode, [a[None] for a in as_l2b(task)]))
    feed.update(zip([p for pas in original.mc_noise for p in pas], [d for one in noise for d in one]))
    prediction, accuracy = original.sess.run([original.mc_prediction, original.mc_accuracy], feed)
    picked = prediction[0][np.arange(len(task[3])), task[3]]
    close(float(cent), -np.mean(np.log(picked)), 'Monte-Carlo cross-entropy[taml]')
    assert float(acc) == pytest.approx(float(np.mean(accuracy)))


def test_dense_standin_contracts_the_last_axis_of_a_rank3_input():
    """tf.layers.dense on [way, 64, 3] (l2b's interact layers): x @ kernel + bias on the last
    axis, as TF 1.x's tensordot path."""
    from tests.golden.tf1_standins import dense
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    with tf.Graph().as_default(), v1.Session() as sess:
        y = dense(tf.constant(x), 4, bias_initializer=v1.constant_initializer(0.5), name='d')
        sess.run(v1.global_variables_initializer())
        kernel = sess.run(v1.global_variables()[0])
        np.testing.assert_allclose(sess.run(y), x @ kernel + 0.5, rtol=1e-12)
