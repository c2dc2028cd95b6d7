"""Golden tests: cbfinn/maml's own maml.py and utils.py beside our --model maml / fomaml with
--backbone maml_conv4, on the same weights and episodes.

The original is loaded from the originals' folder (tests/golden/originals.py) and run as it is,
with three things around it, none of which changes what it computes:
- FLAGS: its module globals are replaced by a namespace holding its main.py's flags at the
  values compared (its absl flags would clash with ours);
- special_grads.py is answered with an empty module. It registers a gradient for MaxPoolGrad,
  which TensorFlow registers itself since TF 1.2: there the import raises KeyError, which
  maml.py catches with a warning (cbfinn/maml issue #12), so every TF 1.x >= 1.2 run of the
  original, and its released checkpoint's, used TensorFlow's registered second derivative of
  max-pool, as TF 2.x does. That one (nn_grad.py _MaxPoolGradGrad) is the exact derivative:
  MaxPoolGrad routes its third input `grad` to the argmax positions, linear in `grad` (whose
  transpose, gathering at the argmax, is MaxPoolGradGrad) and locally constant in the inputs
  that choose the argmax (zero there). test_max_pool_second_derivative_is_exact checks it by
  finite differences. (special_grads' own function, which puts a max-pool gradient on the
  first input and zero on `grad`, is not that derivative; no TF >= 1.2 ever ran it.)
- tf.map_fn over the tasks is TensorFlow's own, called through a wrapper that also returns
  the fast weights its task function passes to the query forwards (task_metalearn's forwards
  alternate support / query; the query ones carry the weights after steps 1..n), so that they
  can be compared step by step.
Its meta-loss is `metaval_total_losses2[num_updates - 1]`, the same expression as the train
prefix's `total_losses2` (reduce_sum over tasks and queries of xent = CE / update_batch_size,
over meta_batch_size); its meta-gradient is tf.gradients of it over the trainable variables,
what `optimizer.compute_gradients` returns (the train prefix also builds two Adam updates,
which would only cost time here). Both sides use TensorFlow's fused batch-norm kernel (contrib's
default for 4-D inputs; our default), in float32: the original's weights are float32.
"""
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import main
from model import build_model, maml_convert, nets, steps
from model.runner import Runner
from model.maml import scaled_cross_entropy
from tests.golden.originals import load_original, original_dir

v1 = tf.compat.v1
RTOL, ATOL = 1e-5, 1e-6
# The meta-gradient: the forward and every inner step come out bitwise equal, but the
# second-order backward pass sums its terms (BN over 84x84 positions, the inner gradients'
# own gradients) in another order on each side (tf.gradients through tf.map_fn's while_v2 vs
# our tape in the runner's task loop): measured up to 1.2e-5 of the tensor's largest entry.
META_RTOL = 3e-5

# cbfinn/maml main.py's flags at their defaults; each variant below overrides some.
ORIGINAL_FLAGS = dict(datasource='omniglot', num_classes=5, update_batch_size=5,
                      update_lr=1e-3, meta_lr=1e-3, meta_batch_size=25, num_updates=1,
                      norm='batch_norm', num_filters=64, conv=True, max_pool=False,
                      stop_grad=False, metatrain_iterations=15000)

# Its two Conv4s at small sizes: Omniglot's stride-2 convs with a spatial mean (28x28 grey is
# what our maml_conv4 takes for Omniglot), miniImageNet's max-pool (84x84 RGB: its head is
# num_filters * 5 * 5 wide); 5 inner steps at its learning rates; two tasks.
VARIANTS = {
    'omniglot': dict(datasource='omniglot', dataset='omniglot', image_shape=(28, 28, 1),
                     num_classes=3, update_batch_size=2, query=2, num_filters=6,
                     max_pool=False, update_lr=0.4),
    'miniimagenet': dict(datasource='miniimagenet', dataset='mimgnet',
                         image_shape=(84, 84, 3), num_classes=3, update_batch_size=1,
                         query=2, num_filters=4, max_pool=True, update_lr=0.01),
}
N_STEPS, N_TASKS = 5, 2
REPORT = {}   # comparison -> largest absolute and relative difference (printed with -s)


@pytest.fixture(scope='module', autouse=True)
def print_report():
    yield
    for what, worst in REPORT.items():
        print(f'\n{what}: max abs {worst["abs"]:.2e}, max rel {worst["rel"]:.2e}')


def load_cbfinn():
    """maml.py and utils.py, special_grads answered by an empty module (module docstring)."""
    return load_original(original_dir('maml'), ['utils', 'maml'],
                         substitutes={'special_grads': types.ModuleType('special_grads')})


def set_flags(original, **values):
    flags = types.SimpleNamespace(**{**ORIGINAL_FLAGS, **values})
    original.maml.FLAGS = original.utils.FLAGS = flags
    return flags


def fast_weights_map_fn(exported, weight_keys, n_steps):
    """tf.compat.v1.map_fn that also returns, per task, the fast weights after each step."""
    def map_fn(fn, elems, dtype, parallel_iterations):
        def with_fast_weights(elem):
            calls = recorded.setdefault('calls', [])
            del calls[:]
            out = fn(elem)
            assert len(calls) == 2 * n_steps
            return [out, [dict(weights) for weights in calls[1::2]]]
        fast_dtype = [{k: tf.float32 for k in weight_keys} for _ in range(n_steps)]
        out, fast = v1.map_fn(with_fast_weights, elems, dtype=[dtype, fast_dtype],
                              parallel_iterations=parallel_iterations)
        exported.append((out, fast))
        return out

    recorded = {}
    return map_fn, recorded


def recording_forward(forward, recorded):
    def run(inp, weights, reuse=False, scope=''):
        recorded.setdefault('calls', []).append(weights)
        return forward(inp, weights, reuse=reuse, scope=scope)
    return run


def episode(variant, seed=0):
    """One metabatch: support labels in a random order per task, pixels uniform in [0, 1]."""
    rng = np.random.default_rng(seed)
    way, shot, query = variant['num_classes'], variant['update_batch_size'], variant['query']
    shape = variant['image_shape']
    ys = np.stack([rng.permutation(np.repeat(np.arange(way), shot)) for _ in range(N_TASKS)])
    yq = np.stack([rng.permutation(np.repeat(np.arange(way), query)) for _ in range(N_TASKS)])
    xs = rng.random((N_TASKS, way * shot, *shape)).astype(np.float32)
    xq = rng.random((N_TASKS, way * query, *shape)).astype(np.float32)
    return xs, ys.astype(np.int32), xq, yq.astype(np.int32)


def run_cbfinn(variant, theta, beta, eps, stop_grads=(False, True)):
    """The original's numbers for one metabatch, once per value of its --stop_grad, on the
    weights theta (its weights-dict names) and BN shifts beta (per block, 0..3)."""
    original = load_cbfinn()
    xs, ys, xq, yq = eps
    way = variant['num_classes']
    flat = lambda x: x.reshape(*x.shape[:2], -1)
    inputs = dict(inputa=flat(xs), inputb=flat(xq), labela=np.eye(way, dtype=np.float32)[ys],
                  labelb=np.eye(way, dtype=np.float32)[yq])
    results = []
    with tf.Graph().as_default():
        tensors = {k: tf.constant(v) for k, v in inputs.items()}
        weights = None
        fetches = []
        for stop_grad in stop_grads:
            set_flags(original, **{k: v for k, v in variant.items() if k in ORIGINAL_FLAGS},
                      num_updates=N_STEPS, meta_batch_size=N_TASKS, stop_grad=stop_grad)
            model = original.maml.MAML(int(np.prod(variant['image_shape'])), way,
                                       test_num_updates=N_STEPS)
            if weights is not None:   # the second model shares the first one's variables
                model.weights = weights
            exported = []
            map_fn, recorded = fast_weights_map_fn(exported, list(theta), N_STEPS)
            model.forward = recording_forward(model.forward, recorded)
            original.maml.tf.map_fn = map_fn
            model.construct_model(tensors, prefix='metaval_')
            weights = model.weights
            variables = v1.trainable_variables()
            meta_loss = model.metaval_total_losses2[N_STEPS - 1]
            (outputas, outputbs, lossesa, _, _, _), fast = exported[0]
            fetches.append(dict(
                support_logits=outputas, query_logits=outputbs, lossesa=lossesa,
                meta_loss=meta_loss, fast=fast,
                grads=dict(zip([v.name for v in variables], tf.gradients(meta_loss, variables)))))
        assign = [weights[k].assign(v) for k, v in theta.items()]
        by_name = {v.name: v for v in v1.global_variables()}
        assign += [by_name[f'model/{l}/beta:0'].assign(b) for l, b in enumerate(beta)]
        names = sorted(by_name)
        config = v1.ConfigProto()
        # Grappler only rearranges; off, the first run of these second-order graphs takes 2 s
        # instead of 20.
        config.graph_options.rewrite_options.disable_meta_optimizer = True
        with v1.Session(config=config) as session:
            session.run(v1.global_variables_initializer())
            session.run(assign)
            for f in fetches:
                results.append(session.run(f))
    return results, names


def our_config(variant, model, tmp_path, *extra):
    return main.parse_config([
        '--mode', 'meta_train', '--savedir', str(tmp_path), '--model', model,
        '--backbone', 'maml_conv4', '--dataset', variant['dataset'],
        '--n_channel', str(variant['num_filters']), '--way', str(variant['num_classes']),
        '--shot', str(variant['update_batch_size']), '--query', str(variant['query']),
        '--metabatch', str(N_TASKS), '--inner_lr', str(variant['update_lr']),
        '--n_steps', str(N_STEPS), '--inner_loss', 'maml_sum', '--outer_loss', 'maml_sum',
        *extra])


def build_ours(cfg, image_shape):
    previous = nets.FUSED_BATCH_NORM
    nets.FUSED_BATCH_NORM = cfg.fused_batch_norm   # what the runner sets from the flag
    try:
        return build_model(cfg, cfg.way, image_shape)
    finally:
        nets.FUSED_BATCH_NORM = previous


def run_ours(model, eps, fused):
    """Our numbers, through the runner's own pieces (adapt, task_loss, metabatch_gradient)."""
    xs, ys, xq, yq = (tf.constant(a) for a in eps)
    previous = nets.FUSED_BATCH_NORM
    nets.FUSED_BATCH_NORM = fused
    try:
        out = dict(support_logits=np.stack([model.predict(model.net.initial_params(), xs[t])
                                            for t in range(N_TASKS)]),
                   fast=[], query_logits=[], lossa=[])
        for t in range(N_TASKS):
            per_step, logits = [], []
            for s in range(1, N_STEPS + 1):
                adapted = model.adapt(xs[t], ys[t], training=True, n_steps=s)
                per_step.append({k: v.numpy() for k, v in adapted.params.items()})
                logits.append(model.query_logits(adapted, xq[t]).numpy())
            out['lossa'].append(float(adapted.losses[0]))
            out['fast'].append(per_step)
            out['query_logits'].append(logits)

        @tf.function(autograph=False)
        def meta_gradient():
            loss, _, grads, _ = steps.metabatch_gradient(
                lambda t: model.task_loss(xs[t], ys[t], xq[t], yq[t], training=True),
                N_TASKS, model.outer_variables)
            return loss, grads

        loss, grads = meta_gradient()
        out['meta_loss'] = float(loss)
        out['grads'] = [g.numpy() for g in grads]
        return out
    finally:
        nets.FUSED_BATCH_NORM = previous


def close(ours, theirs, what, worst, scale=None, rtol=RTOL):
    """Equal up to float32 round-off: |ours - theirs| <= RTOL * max |theirs| entry-wise (an
    entry near zero in a tensor of large ones carries the round-off of the large ones, which
    second-order paths through five steps accumulate); records the largest absolute
    difference and the largest relative to the tensor's largest entry."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    scale = max(float(np.abs(theirs).max()) if scale is None else scale, ATOL / RTOL)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=rtol * scale, err_msg=what)
    diff = float(np.abs(ours - theirs).max())
    worst['abs'] = max(worst['abs'], diff)
    worst['rel'] = max(worst['rel'], diff / scale)


@pytest.fixture(scope='module', params=sorted(VARIANTS))
def compared(request, tmp_path_factory):
    """Both implementations on the same weights and metabatch, second and first order."""
    name = request.param
    variant = VARIANTS[name]
    tmp = tmp_path_factory.mktemp(name)
    ours = {m: build_ours(our_config(variant, m, tmp), variant['image_shape'])
            for m in ('maml', 'fomaml')}
    # Our initialisation (maml_conv4's Glorot / normal(1.0) head), plus non-zero BN shifts so
    # that their meta-gradient is exercised; copied into fomaml's and the original's.
    rng = np.random.default_rng(1)
    for k, var in ours['maml'].net.bn_beta.items():
        var.assign(rng.normal(0., 0.1, var.shape).astype(np.float32))
    for a, b in zip(ours['maml'].outer_variables, ours['fomaml'].outer_variables):
        b.assign(a)
    theta = {maml_convert.WEIGHT_KEYS[k]: v.numpy() for k, v in ours['maml'].net.theta.items()}
    beta = [ours['maml'].net.bn_beta[f'conv{l}'].numpy() for l in range(1, 5)]
    eps = episode(variant)
    theirs, names = run_cbfinn(variant, theta, beta, eps)
    return dict(name=name, variant=variant, eps=eps, names=names,
                theirs=dict(zip(('maml', 'fomaml'), theirs)),
                ours={m: run_ours(model, eps, True) for m, model in ours.items()},
                models=ours)


def test_original_variables_are_the_converters_names(compared):
    """The original's graph names its variables as the converter reads them."""
    expected = sorted(f'{n}:0' for n in maml_convert.CHECKPOINT_NAMES.values())
    trainable = [n for n in compared['names'] if 'moving_' not in n]
    assert trainable == expected


def test_forward_and_every_inner_step(compared):
    ours, theirs = compared['ours']['maml'], compared['theirs']['maml']
    worst = dict(abs=0., rel=0.)
    close(ours['support_logits'], theirs['support_logits'], 'forward (support logits)', worst)
    # The first inner loss (theta on the support set): its xent summed, CE / K per example.
    close(ours['lossa'], theirs['lossesa'].sum(axis=1), 'inner loss', worst)
    for t in range(N_TASKS):
        for s in range(N_STEPS):
            for k, v in ours['fast'][t][s].items():
                close(v, theirs['fast'][s][maml_convert.WEIGHT_KEYS[k]][t],
                      f'task {t} step {s + 1} {k}', worst)
            close(ours['query_logits'][t][s], theirs['query_logits'][s][t],
                  f'task {t} query logits after step {s + 1}', worst)
    REPORT[f'{compared["name"]} forward + 5 inner steps'] = worst


@pytest.mark.parametrize('method', ['maml', 'fomaml'])
def test_meta_loss_and_meta_gradient(compared, method):
    """cbfinn's outer loss (sum of query CE / K, mean over tasks) with --outer_loss maml_sum,
    and its meta-gradient, second order and with --stop_grad (our fomaml)."""
    ours, theirs = compared['ours'][method], compared['theirs'][method]
    model = compared['models'][method]
    worst = dict(abs=0., rel=0.)
    close(ours['meta_loss'], theirs['meta_loss'], 'meta-loss', worst)
    names = maml_convert.variable_names(model)
    # The conv biases feed batch norm, which removes any per-channel shift: their gradients,
    # inner and meta, are zero up to round-off, compared on the scale of the whole
    # meta-gradient (what a clip or Adam would see).
    scale = max(float(np.abs(g).max()) for g in theirs['grads'].values())
    for var, grad in zip(model.outer_variables, ours['grads']):
        name = names[var.ref()]
        conv_bias = name in [maml_convert.CHECKPOINT_NAMES[f'conv{l}_b'] for l in range(1, 5)]
        close(grad, theirs['grads'][name + ':0'], f'meta-gradient {var.name}', worst,
              scale if conv_bias else None, META_RTOL)
    REPORT[f'{compared["name"]} {method} meta-loss + meta-gradient'] = worst


# ---- the released checkpoint, converted ------------------------------------------------------
RELEASED = ('logs/miniimagenet1shot/'
            'cls_5.mbs_4.ubs_1.numstep5.updatelr0.01hidden32maxpoolbatchnorm/model59000')
TEST_STEPS = 10   # cbfinn's main.py: test_num_updates = 10 at test, update_lr 0.01


def image_folder(root, n_classes=5, per_class=4, size=84):
    """A folder dataset of random RGB images (train/ and test/ splits), for the runner."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ('train', 'test'):
        for c in range(n_classes):
            for i in range(per_class):
                path = Path(root) / split / f'{split}{c}' / f'{i}.png'
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(path)
    return root


def cbfinn_released(prefix, eps):
    """The original restoring its own checkpoint with its own Saver (trainable variables) and
    testing one episode as its main.py test() does: 10 steps, metabatch 1."""
    original = load_cbfinn()
    xs, ys, xq, yq = eps
    flat = lambda x: x.reshape(*x.shape[:2], -1)
    with tf.Graph().as_default():
        set_flags(original, datasource='miniimagenet', num_classes=5, update_batch_size=1,
                  update_lr=0.01, num_updates=5, num_filters=32, max_pool=True,
                  meta_batch_size=1)
        model = original.maml.MAML(84 * 84 * 3, 5, test_num_updates=TEST_STEPS)
        exported = []
        map_fn, recorded = fast_weights_map_fn(exported, ['conv1', 'b1', 'conv2', 'b2', 'conv3',
                                                          'b3', 'conv4', 'b4', 'w5', 'b5'],
                                               TEST_STEPS)
        model.forward = recording_forward(model.forward, recorded)
        original.maml.tf.map_fn = map_fn
        model.construct_model(dict(inputa=tf.constant(flat(xs)), inputb=tf.constant(flat(xq)),
                                   labela=tf.constant(np.eye(5, dtype=np.float32)[ys]),
                                   labelb=tf.constant(np.eye(5, dtype=np.float32)[yq])),
                              prefix='metaval_')
        (outputas, outputbs, _, _, _, _), _ = exported[0]
        saver = v1.train.Saver(v1.trainable_variables())
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            saver.restore(session, str(prefix))
            return session.run(dict(support_logits=outputas[0],
                                    query_logits=outputbs[TEST_STEPS - 1][0],
                                    accuracy=model.metaval_total_accuracies2[TEST_STEPS - 1]))


def test_released_checkpoint_converted_gives_the_same_logits_and_accuracy(tmp_path):
    """model59000 through model/maml_convert.py and main.py's meta_test runner vs the original
    restoring it: the same logits before and after 10 steps, the same adapted accuracy."""
    prefix = original_dir('maml') / RELEASED
    data = ['--dataset', 'folder', '--folder_dir', str(image_folder(tmp_path / 'images')),
            '--noprogress']
    savedir = tmp_path / 'converted'
    assert maml_convert.main(['--checkpoint', str(prefix), '--savedir', str(savedir),
                              *data]) == 0
    runner = Runner(main.parse_config([
        '--mode', 'meta_test', '--savedir', str(savedir), *data, '--model', 'maml',
        '--backbone', 'maml_conv4', '--way', '5', '--shot', '1', '--query', '3',
        '--metabatch', '1', '--inner_lr', '0.01', '--n_test_steps', str(TEST_STEPS),
        '--inner_loss', 'maml_sum', '--outer_loss', 'maml_sum', '--n_test_iters', '2']))
    assert runner.restore_for_test().endswith('model-59000')
    rng = np.random.default_rng(3)
    eps = (rng.random((1, 5, 84, 84, 3), np.float32), rng.permutation(5)[None].astype(np.int32),
           rng.random((1, 15, 84, 84, 3), np.float32),
           rng.permutation(np.repeat(np.arange(5), 3))[None].astype(np.int32))
    theirs = cbfinn_released(prefix, eps)
    model = runner.model
    xs, ys, xq, yq = (tf.constant(a[0]) for a in eps)
    worst = dict(abs=0., rel=0.)
    close(model.predict(model.net.initial_params(), xs), theirs['support_logits'],
          'logits with the released weights', worst)
    adapted = model.adapt(xs, ys, training=False)   # the meta_test path: 10 steps, while loop
    logits = model.query_logits(adapted, xq).numpy()
    close(logits, theirs['query_logits'], 'query logits after 10 steps', worst)
    _, accuracy = runner.eval_step(*(tf.constant(a) for a in eps))
    assert np.argmax(logits, 1).tolist() == np.argmax(theirs['query_logits'], 1).tolist()
    assert float(accuracy[0]) == pytest.approx(float(theirs['accuracy']), abs=1e-7)
    REPORT['released checkpoint: logits, 10-step adapted logits and accuracy'] = worst
    runner.meta_test()   # main.py --mode meta_test on the converted checkpoint
    assert (savedir / 'meta_test.log').read_text().startswith('accuracy : ')


def test_special_grads_cannot_register_on_tf2():
    """Why the loader substitutes special_grads: TF already registers MaxPoolGrad's gradient."""
    with pytest.raises(KeyError, match='MaxPoolGrad'):
        load_original(original_dir('maml'), ['special_grads'])


def test_max_pool_second_derivative_is_exact():
    """TensorFlow's registered gradient of MaxPoolGrad (what both implementations
    differentiate through in second-order MAML with max-pool) against central finite
    differences of a one-step MAML meta-loss, in float64."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 6, 6, 2)))
    u = tf.constant(rng.normal(size=(2, 3, 3, 3)))
    theta0 = rng.normal(size=(3, 3, 2, 3))

    def loss(theta):
        h = tf.nn.max_pool2d(tf.nn.conv2d(x, theta, 1, 'SAME'), 2, 2, 'VALID')
        return tf.reduce_sum(u * h ** 2)

    def meta_loss(theta):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            inner = loss(theta)
        return loss(theta - 0.05 * tape.gradient(inner, theta))

    theta = tf.constant(theta0)
    with tf.GradientTape() as tape:
        tape.watch(theta)
        value = meta_loss(theta)
    grad = tape.gradient(value, theta).numpy()
    h = 1e-6
    numeric = np.zeros_like(theta0)
    for index in np.ndindex(theta0.shape):
        up, down = theta0.copy(), theta0.copy()
        up[index] += h
        down[index] -= h
        numeric[index] = (meta_loss(tf.constant(up)) - meta_loss(tf.constant(down))) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6)
    # and the second-order term is there: without it (first order) the gradient differs
    with tf.GradientTape() as tape:
        tape.watch(theta)
        with tf.GradientTape() as inner_tape:
            inner_tape.watch(theta)
            inner = loss(theta)
        first = loss(theta - 0.05 * tf.stop_gradient(inner_tape.gradient(inner, theta)))
    assert np.abs(tape.gradient(first, theta).numpy() - numeric).max() > 1e-3


def test_scaled_cross_entropy_is_cbfinns_xent_summed():
    """maml_sum = sum_i CE_i / K with K = support size / way, whatever the query size."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 12).astype(np.int32)
    ce = -np.log(np.exp(logits)[np.arange(12), labels] / np.exp(logits).sum(1))
    np.testing.assert_allclose(scaled_cross_entropy('maml_sum', logits, labels, 6),
                               ce.sum() / 2, rtol=1e-6)
    np.testing.assert_allclose(scaled_cross_entropy('mean', logits, labels, 6), ce.mean(),
                               rtol=1e-6)
