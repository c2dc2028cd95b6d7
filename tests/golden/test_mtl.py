"""Golden test: MTL (model/mtl.py, model/mtl_runner.py) against the original's own TensorFlow code,
yaoyao-liu/meta-transfer-learning tensorflow/ (models/resnet12.py, resnet18.py, meta_model.py,
pre_model.py, utils/misc.py; trainer/pre.py and trainer/meta.py for the learning-rate schedules).

Both sides get the same parameter values (ours, randomised so nothing sits at its initial value,
loaded into the original's variables), the same episode and, in pre-training, the same dropout
masks (the original's tf.nn.dropout and ours patched to apply a given mask with each one's own
keep-probability scaling). Compared in float32 (the original hard-codes tf.float32 variables and
placeholders): ResNet-12 and ResNet-18 forward with scaling and shifting, the FC inner loop's
support and query losses at every step, the meta-loss and its second-order meta-gradient for SS
and FC, one outer Adam update, the meta-test loop on the flip-doubled support set, one
pre-training step (loss, gradient, Adam update) and both learning-rate schedules.

ResNet-12's chain needs images of at least 80 (four 2x2 VALID max-pools, then the original's
fixed 5x5 VALID average pool into 512 features), so the episode is 84x84, 2-way 1-shot, two
queries per class, one task.
"""
import contextlib
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

import main
from model import build_model, mtl, optim
from model.mtl_runner import MtlPretrainRunner, MtlRunner
from tests.golden.originals import load_original, original_dir

v1 = tf.compat.v1

WAY, SHOT, QUERY, SIZE = 2, 1, 2, 84
N_STEPS, N_TEST_STEPS = 3, 4
PRETRAIN_CLASSES, PRETRAIN_BATCH = 5, 2
TOLERANCE = 1e-5   # float32, relative to the largest entry of the compared tensor
# Flags in the original's names (main.py aliases them to ours).
OUR_FLAGS = ['--model', 'mtl', '--way_num', str(WAY), '--shot_num', str(SHOT),
             '--metatrain_epite_sample_num', str(QUERY), '--meta_batch_size', '1',
             '--train_base_epoch_num', str(N_STEPS), '--test_base_epoch_num', str(N_TEST_STEPS),
             '--pretrain_class_num', str(PRETRAIN_CLASSES),
             '--pretrain_batch_size', str(PRETRAIN_BATCH),
             # short schedules that reach their floors within a few iterations
             '--pre_lr_dropstep', '3', '--pre_lr_stop', '--min_pre_lr', '2e-4',
             '--lr_drop_step', '2']
PRETRAIN_ITERATION = 7   # the pre-training step compared: its learning rate is halved twice


def relative(ours, theirs):
    """(largest absolute difference, that over the largest |theirs|)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    diff = float(np.abs(ours - theirs).max())
    return diff, diff / max(float(np.abs(theirs).max()), 1e-30)


def assert_close(ours, theirs, what, tolerance=TOLERANCE):
    diff, rel = relative(ours, theirs)
    assert rel <= tolerance, f'{what}: largest difference {diff:.3g} ({rel:.3g} relative)'


def assert_gradients(ours, theirs, what):
    """Gradients (name -> array) equal to TOLERANCE, except the conv biases (and shifts): the
    affine-free batch-statistics batch norm cancels them, so their true gradient is zero on
    both sides and what is left is round-off, checked to be small."""
    scale = max(np.abs(g).max() for g in theirs.values())
    for k, g in theirs.items():
        if '_bias' in k:
            assert np.abs(g).max() < 1e-3 * scale and np.abs(ours[k]).max() < 1e-3 * scale, k
        else:
            assert np.abs(g).max() > 1e-3 * scale, k
            assert_close(ours[k], g, f'{what} of {k}')


def assert_adam_steps(run):
    """One Adam update from the same values: every step within lr; off the biases, whose
    gradients are round-off (so is the direction of their step), the same step. Adam's first
    step is lr * g / (|g| + eps'): where an entry of the gradient is not far above its
    round-off the step follows that round-off, so those entries are left out."""
    ours, theirs, before, lr = (run[k] for k in ('ours', 'theirs', 'before', 'lr'))
    for k, after in theirs['after'].items():
        moved, our_moved = after - before[k], ours['after'][k] - before[k]
        assert np.abs(moved).max() <= 1.0001 * lr and np.abs(our_moved).max() <= 1.0001 * lr
        if '_bias' in k:
            continue
        assert np.abs(moved).max() > .5 * lr
        g = theirs['grads'][k]
        clear = np.abs(g) > 1e-4 * np.abs(g).max()
        diff = np.abs(our_moved - moved)[clear].max()
        assert diff <= 1e-3 * lr, f'{k}: Adam steps differ by {diff:.3g} (lr {lr:g})'


# ---- the original, loaded from its folder ----------------------------------------------------
@pytest.fixture(scope='module')
def original():
    folder = original_dir('meta-transfer-learning') / 'tensorflow'
    # utils/misc.py imports cv2 for the meta-test flips of its data pipeline, not used here.
    return load_original(folder, ['utils.misc', 'models.resnet12', 'models.resnet18',
                                  'models.meta_model', 'models.pre_model', 'trainer.pre',
                                  'trainer.meta'],
                         substitutes={'cv2': types.ModuleType('cv2')})


def original_flags(cfg, **more):
    """The original's FLAGS for our configuration, in its flag names."""
    return types.SimpleNamespace(
        img_size=cfg.img_size, way_num=cfg.way, shot_num=cfg.shot, base_lr=cfg.inner_lr,
        meta_lr=cfg.meta_lr, train_base_epoch_num=cfg.n_steps,
        test_base_epoch_num=cfg.n_test_steps, meta_batch_size=cfg.metabatch,
        metatrain_epite_sample_num=cfg.query, pretrain_class_num=cfg.pretrain_class_num,
        pre_lr=cfg.pre_lr, pretrain_dropout_keep=cfg.pretrain_dropout_keep, norm=cfg.norm,
        activation=cfg.activation, backbone_arch=cfg.backbone_arch, **more)


@contextlib.contextmanager
def flags_of(original, flags):
    """The original's modules read FLAGS at call time; MakeMetaModel / MakePreModel import
    `resnet12` / `resnet18` when called (its Python 2 branch), after the loader has restored
    sys.modules."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ('misc', 'resnet12', 'resnet18', 'meta_model', 'pre_model', 'pre', 'meta'):
            patch.setattr(getattr(original, name), 'FLAGS', flags)
        patch.setitem(sys.modules, 'resnet12', original.resnet12)
        patch.setitem(sys.modules, 'resnet18', original.resnet18)
        yield patch


class RecordingAdam(v1.train.AdamOptimizer):
    """tf.train.AdamOptimizer that keeps the (gradient, variable) pairs minimize() computed."""
    made = []

    def compute_gradients(self, *args, **kwargs):
        self.grads_and_vars = super().compute_gradients(*args, **kwargs)
        RecordingAdam.made.append(self)
        return self.grads_and_vars


def recorded_gradients(variables):
    """name -> gradient tensor of the original's last minimize(), for a dict of its variables."""
    by_var = {id(v): g for g, v in RecordingAdam.made[-1].grads_and_vars}
    return {k: by_var[id(v)] for k, v in variables.items()}


def session():
    """A session without Grappler's graph rewrites, which take longer on these graphs than the
    computation (the arithmetic is the same ops either way)."""
    config = v1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    return v1.Session(config=config)


def load(sess, variables, values):
    """Sets the original's variables to our values, in one run."""
    feeds, assigns = {}, []
    for k, var in variables.items():
        value = v1.placeholder(var.dtype, var.shape)
        feeds[value] = values[k]
        assigns.append(var.assign(value))
    sess.run(assigns, feeds)


# ---- our side, as main.py builds it --------------------------------------------------------
@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
    return main.parse_config(['--savedir', str(tmp_path_factory.mktemp('mtl')), *OUR_FLAGS])


def randomise(model, seed=0):
    """Moves every parameter off its initial value: biases and shifts random, scales around 1,
    the FC bias random (the kernels are Glorot draws already)."""
    rng = np.random.default_rng(seed)
    weights = model.backbone.weights
    for k, v in weights.items():
        if '_bias' in k:
            v.assign(rng.normal(0., .5, v.shape).astype(np.float32))
    for k, v in getattr(model, 'ss', {}).items():
        v.assign((1. + .2 * rng.normal(size=v.shape) if '_conv' in k
                  else rng.normal(0., .5, v.shape)).astype(np.float32))
    model.fc['b5'].assign(rng.normal(0., .1, model.fc['b5'].shape).astype(np.float32))


def values(variables):
    return {k: v.numpy() for k, v in variables.items()}


def episode(seed=1, query=QUERY):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(size=[1, WAY * SHOT, SIZE, SIZE, 3]).astype(np.float32)
    xq = rng.uniform(size=[1, WAY * query, SIZE, SIZE, 3]).astype(np.float32)
    ys = np.tile(np.arange(WAY, dtype=np.int32), SHOT)[None]
    yq = np.tile(np.arange(WAY, dtype=np.int32), query)[None]
    return xs, ys, xq, yq


def one_hot(y, n=WAY):
    return np.eye(n, dtype=np.float32)[y]


def flat(x):
    return x.reshape(*x.shape[:-3], -1)


@pytest.fixture(scope='module')
def meta_model(cfg):
    tf.random.set_seed(0)
    model = build_model(cfg, cfg.way, (SIZE, SIZE, 3))
    randomise(model)
    return model


# ---- meta-train: forward, inner loop, meta-gradient, one outer Adam update -------------------
@pytest.fixture(scope='module')
def meta_train(original, cfg, meta_model):
    ours = meta_model
    xs, ys, xq, yq = episode()
    start = dict(backbone=values(ours.backbone.weights), ss=values(ours.ss), fc=values(ours.fc))
    lr = MtlRunner.learning_rate(types.SimpleNamespace(cfg=cfg), 0)

    theirs = {}
    with tf.Graph().as_default(), flags_of(original, original_flags(cfg, phase='meta')) as patch:
        patch.setattr(v1.train, 'AdamOptimizer', RecordingAdam)
        model = original.meta_model.MakeMetaModel()
        model.construct_model()
        with v1.variable_scope('meta-model', reuse=True):   # its batch-norm scopes exist
            embedding = model.forward_resnet(model.inputa[0], model.weights, model.ss_weights,
                                             reuse=True)
        grads = recorded_gradients({**model.ss_weights, **model.fc_weights})
        feed = {model.inputa: flat(xs), model.labela: one_hot(ys), model.inputb: flat(xq),
                model.labelb: one_hot(yq), model.meta_lr: lr}
        with session() as sess:
            sess.run(v1.global_variables_initializer())
            load(sess, {**{k: v for k, v in model.weights.items() if k in start['backbone']},
                        **{f'ss_{k}': v for k, v in model.ss_weights.items()},
                        **model.fc_weights},
                 {**start['backbone'], **{f'ss_{k}': v for k, v in start['ss'].items()},
                  **start['fc']})
            theirs['embedding'] = sess.run(embedding, feed)
            # One run: the gradients are those the update applies.
            theirs.update(sess.run(dict(
                update=model.metatrain_op, loss=model.total_loss,
                accuracy=model.total_accuracy, support_losses=model.total_lossa,
                query_losses=model.total_lossb, grads=grads), feed))
            theirs['after'] = sess.run({**model.ss_weights, **model.fc_weights})

    fs, fq = ours.embed(xs[0]), ours.embed(xq[0])
    mine = {'embedding': fs.numpy()}
    fc, support_losses, query_losses = ours.fc, [], []
    for _ in range(cfg.n_steps):
        support_losses.append(ours.inner_loss(fs, ys[0], fc).numpy())
        query_losses.append(ours.inner_loss(fq, yq[0], fc).numpy())
        fc = ours.inner_step(fs, ys[0], fc)
    mine.update(support_losses=support_losses, query_losses=query_losses)
    variables = dict(zip([*ours.ss, *ours.fc], ours.outer_variables))
    with tf.GradientTape() as tape:
        loss, accuracy, _ = ours.task_loss(xs[0], ys[0], xq[0], yq[0])
    grads = tape.gradient(loss, list(variables.values()))
    # The runner's optimiser, applied as its compiled step applies it (run eagerly here: the
    # step's tracing would cost more than the rest of this comparison).
    optimizer = optim.make_optimizer('adam', ours.outer_variables, lr)
    assert bool(mtl.apply_if_finite(optimizer, loss, grads))
    mine.update(loss=loss.numpy(), accuracy=accuracy.numpy(), after=values(variables),
                grads=dict(zip(variables, [g.numpy() for g in grads])))
    return dict(ours=mine, theirs=theirs, before={**start['ss'], **start['fc']}, lr=lr)


def test_resnet12_forward_with_scaling_and_shifting(meta_train):
    """models/resnet12.py forward_resnet: conv(W * tiled scale) + shift -> contrib batch norm ->
    leaky ReLU, three per block, the 1x1 shortcut, max-pool, 5x5 average pool."""
    assert_close(meta_train['ours']['embedding'], meta_train['theirs']['embedding'],
                 'ResNet-12 features')


def test_fc_inner_loop_losses_at_every_step(meta_train):
    """meta_model.py task_metalearn: per-example xent / shot summed, SGD at base_lr on the FC
    only; the support and query losses before each of the train_base_epoch_num steps."""
    ours, theirs = meta_train['ours'], meta_train['theirs']
    assert len(theirs['support_losses']) == N_STEPS
    assert_close(ours['support_losses'], theirs['support_losses'], 'support losses')
    assert_close(ours['query_losses'], theirs['query_losses'], 'query losses')
    assert len(set(np.round(theirs['support_losses'], 6))) == N_STEPS   # the steps move


def test_meta_loss_and_second_order_meta_gradient(meta_train):
    """The query loss after the inner loop (sum / shot / meta_batch) and its gradient for every
    scale, shift and the FC initialisation, through the inner loop (second order)."""
    ours, theirs = meta_train['ours'], meta_train['theirs']
    assert_close(ours['loss'], theirs['loss'], 'meta-loss')
    assert_close(ours['accuracy'], theirs['accuracy'], 'query accuracy')
    assert_gradients(ours['grads'], theirs['grads'], 'meta-gradient')


def test_one_outer_adam_update(meta_train):
    """tf.train.AdamOptimizer(meta_lr) on SS and FC against the runner's optimiser (TF1 Adam,
    epsilon 1e-8) at the schedule's learning rate."""
    assert_adam_steps(meta_train)


# ---- meta-test: the flip-doubled support set, test_base_epoch_num steps ----------------------
def test_meta_test_loop_on_the_flip_doubled_support_set(original, cfg, meta_model):
    """meta_model.py construct_test_model on the support set process_batch_augmentation makes
    (the images, then their cv2.flip(img, 1)), against our compiled evaluation with
    --base_augmentation: the query accuracy after every step and the final query loss."""
    ours = meta_model
    xs, ys, xq, yq = episode(seed=2, query=cfg.shot)   # the original's Q = K at meta-test
    doubled = np.concatenate([xs, xs[:, :, :, ::-1]], 1)   # cv2.flip(img, 1): mirror the width
    start = {**values(ours.backbone.weights), **values(ours.fc),
             **{f'ss_{k}': v for k, v in values(ours.ss).items()}}
    with tf.Graph().as_default(), flags_of(original, original_flags(cfg, phase='meta')):
        model = original.meta_model.MakeMetaModel()
        model.construct_test_model()
        feed = {model.inputa: flat(doubled), model.labela: one_hot(np.concatenate([ys, ys], 1)),
                model.inputb: flat(xq), model.labelb: one_hot(yq)}
        with session() as sess:
            sess.run(v1.global_variables_initializer())
            load(sess, {**{k: v for k, v in model.weights.items() if k in start},
                        **{f'ss_{k}': v for k, v in model.ss_weights.items()},
                        **model.fc_weights}, start)
            loss, accuracies = sess.run([model.metaval_total_loss,
                                         model.metaval_total_accuracies], feed)
    # What the runner's compiled evaluation step maps over the tasks, run eagerly.
    our_loss, our_accuracies = ours.evaluate_task(xs[0], ys[0], xq[0], yq[0], cfg.n_test_steps,
                                                  cfg.base_augmentation)
    assert cfg.base_augmentation and len(accuracies) == N_TEST_STEPS
    np.testing.assert_array_equal(our_accuracies.numpy(), accuracies)
    assert_close(our_loss.numpy(), loss, 'meta-test query loss')


# ---- pre-training: one step with the same dropout masks -------------------------------------
class DropoutMasks:
    """tf.nn.dropout with given keep masks, taken in call order, each call scaling by its own
    keep probability as TensorFlow does (x / keep * mask): TF 1.x's keep_prob, TF 2's 1 - rate."""

    def __init__(self, masks):
        self.masks, self.keeps = masks, []

    def apply(self, x, keep):
        mask = self.masks[len(self.keeps)]
        self.keeps.append(keep)
        return x * (1. / keep) * mask

    def tf1(self, x, keep_prob=None, **unused):
        return self.apply(x, keep_prob)

    def tf2(self, x, rate=None, **unused):
        return self.apply(x, 1. - rate)


class Py2Dict(dict):
    """A dict whose values() is a list, as in Python 2: pre_model.py minimises over
    `weights.values() + fc_weights.values()`, which Python 3's dict views cannot add."""

    def values(self):
        return list(super().values())


def learning_rate(runner_class, cfg, i):
    """The runner's learning rate at iteration i (it reads only cfg)."""
    return runner_class.learning_rate(types.SimpleNamespace(cfg=cfg), i)


@pytest.fixture(scope='module')
def pretrain(original, cfg):
    tf.random.set_seed(1)
    # As MtlPretrainRunner.build_model makes it.
    ours = mtl.MtlPretrainNet(cfg.pretrain_class_num, cfg.backbone_arch, (SIZE, SIZE, 3),
                              cfg.img_size, cfg.pretrain_dropout_keep, cfg.activation, cfg.norm)
    randomise(ours, seed=2)
    rng = np.random.default_rng(3)
    x = rng.uniform(size=[PRETRAIN_BATCH, SIZE, SIZE, 3]).astype(np.float32)
    y = rng.integers(0, cfg.pretrain_class_num, PRETRAIN_BATCH).astype(np.int32)
    side, masks = SIZE, []
    for channels in mtl.RESNET12_CHANNELS:
        side //= 2
        masks.append((rng.uniform(size=[PRETRAIN_BATCH, side, side, channels])
                      < cfg.pretrain_dropout_keep).astype(np.float32))
    lr = learning_rate(MtlPretrainRunner, cfg, PRETRAIN_ITERATION)
    start = dict(backbone=values(ours.backbone.weights), fc=values(ours.fc))

    theirs, their_masks = {}, DropoutMasks(masks)
    with tf.Graph().as_default(), flags_of(original, original_flags(cfg, phase='pre')) as patch:
        patch.setattr(v1.train, 'AdamOptimizer', RecordingAdam)
        patch.setattr(v1.nn, 'dropout', their_masks.tf1)
        model = original.pre_model.MakePreModel()
        for name in ('construct_resnet_weights', 'construct_fc_weights'):
            patch.setattr(model, name, lambda f=getattr(model, name): Py2Dict(f()))
        image = v1.placeholder(tf.float32, [PRETRAIN_BATCH, SIZE * SIZE * 3])
        label = v1.placeholder(tf.float32, [PRETRAIN_BATCH, cfg.pretrain_class_num])
        model.construct_pretrain_model({'pretrain_input': image, 'pretrain_label': label})
        backbone = {k: v for k, v in model.weights.items() if k in start['backbone']}
        fc = {f'fc_{k}': v for k, v in model.fc_weights.items()}
        grads = recorded_gradients({**backbone, **fc})
        with session() as sess:
            sess.run(v1.global_variables_initializer())
            load(sess, {**backbone, **fc},
                 {**start['backbone'], **{f'fc_{k}': v for k, v in start['fc'].items()}})
            theirs.update(sess.run(dict(
                update=model.pretrain_op, loss=model.pretrain_task_loss,
                accuracy=model.pretrain_task_accuracy, grads=grads),
                {image: flat(x), label: one_hot(y, cfg.pretrain_class_num),
                 model.pretrain_lr: lr}))
            theirs['after'] = sess.run({**backbone, **fc})

    variables = {**ours.backbone.weights, **{f'fc_{k}': v for k, v in ours.fc.items()}}
    our_masks = DropoutMasks(masks)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf.nn, 'dropout', our_masks.tf2)
        with tf.GradientTape() as tape:
            loss, accuracy = ours.batch_loss(x, y, training=True)
    grads = tape.gradient(loss, list(variables.values()))
    # The runner's optimiser at its learning rate of that iteration, applied as its compiled
    # step applies it.
    optimizer = optim.make_optimizer('adam', ours.outer_variables, lr)
    assert bool(mtl.apply_if_finite(optimizer, loss, grads))
    mine = dict(loss=loss.numpy(), accuracy=accuracy.numpy(), after=values(variables),
                keeps=our_masks.keeps, grads=dict(zip(variables, [g.numpy() for g in grads])))
    theirs['keeps'] = their_masks.keeps
    before = {**start['backbone'], **{f'fc_{k}': v for k, v in start['fc'].items()}}
    return dict(ours=mine, theirs=theirs, before=before, lr=lr)


def test_pretrain_dropout_after_every_block(pretrain, cfg):
    """resnet12.py pretrain_block_forward: dropout with keep pretrain_dropout_keep after each
    of the four blocks; both sides drew the same masks in the same order."""
    assert pretrain['theirs']['keeps'] == [cfg.pretrain_dropout_keep] * 4
    np.testing.assert_allclose(pretrain['ours']['keeps'], pretrain['theirs']['keeps'],
                               rtol=1e-15)


def test_pretrain_loss_and_gradient(pretrain):
    """pre_model.py: mean softmax cross-entropy of the backbone + FC head, its gradient for
    every kernel, bias and the head (the dummy w5/b5 of the weights dict get none)."""
    ours, theirs = pretrain['ours'], pretrain['theirs']
    assert_close(ours['loss'], theirs['loss'], 'pre-training loss')
    assert_close(ours['accuracy'], theirs['accuracy'], 'pre-training accuracy')
    assert_gradients(ours['grads'], theirs['grads'], 'pre-training gradient')


def test_pretrain_adam_update(pretrain):
    """tf.train.AdamOptimizer(pretrain_lr) on every backbone weight and the head, against the
    runner's optimiser, at the learning rate of pre-training iteration PRETRAIN_ITERATION."""
    assert_adam_steps(pretrain)


# ---- the learning-rate schedules: the original's own training loops, on stand-in sessions ---
SUMMARY = v1.Summary().SerializeToString()


class RecordingSession:
    """Answers a trainer's sess.run with zeros (and empty summaries) and records the learning
    rate it feeds to its training op."""

    def __init__(self, graph):
        self.graph, self.rates = graph, []

    def run(self, fetches, feed_dict=None):
        if isinstance(fetches, dict):
            return {}   # the weights it saves
        if not isinstance(fetches, list):
            return SUMMARY
        if 'train_op' in fetches:
            self.rates.append(feed_dict['learning_rate'])
        return [SUMMARY if f == 'summary' else 0. for f in fetches]


def run_original_loop(train, flags, original, **model):
    with tf.Graph().as_default() as graph, flags_of(original, flags) as patch:
        patch.setattr(np, 'float', float, raising=False)   # trainer/meta.py: NumPy < 1.24
        sess = RecordingSession(graph)
        train(types.SimpleNamespace(sess=sess, model=types.SimpleNamespace(**model)))
    return sess.rates


def test_pretrain_learning_rate_schedule(original, cfg, tmp_path):
    """trainer/pre.py pre_train: pre_lr, halved after every pre_lr_dropstep iterations, floored
    at min_pre_lr with pre_lr_stop; against MtlPretrainRunner.learning_rate."""
    n = 12
    flags = original_flags(cfg, pretrain_iterations=n, pretrain_dir=str(tmp_path),
                           pre_string='golden', pre_lr_dropstep=cfg.pre_lr_dropstep,
                           pre_lr_stop=cfg.pre_lr_stop, min_pre_lr=cfg.min_pre_lr,
                           pre_print_step=cfg.pre_print_step, pre_sum_step=1,
                           pre_save_step=n + 1)
    rates = run_original_loop(original.pre.PreTrainer.pre_train, flags, original,
                              pretrain_lr='learning_rate', pretrain_op='train_op',
                              pretrain_summ_op='summary', pretrain_task_loss='loss',
                              pretrain_task_accuracy='accuracy', weights={})
    assert rates[-1] == cfg.min_pre_lr and rates[0] == cfg.pre_lr   # the floor is reached
    assert rates == [learning_rate(MtlPretrainRunner, cfg, i) for i in range(n)]


def test_meta_learning_rate_schedule(original, cfg, tmp_path):
    """trainer/meta.py train: meta_lr, multiplied by lr_drop_rate after every lr_drop_step
    iterations, floored at 0.1 meta_lr; against MtlRunner.learning_rate (--min_meta_lr 1e-4,
    0.1 of the default meta_lr)."""
    n = 12
    flags = original_flags(cfg, metatrain_iterations=n, exp_string='golden',
                           logdir=str(tmp_path), lr_drop_step=cfg.lr_drop_step,
                           lr_drop_rate=cfg.lr_drop_rate, meta_print_step=cfg.print_freq,
                           meta_save_step=n + 1, meta_val_print_step=n + 1,
                           meta_intrain_val_sample=1)
    episode_arrays = (np.zeros(1),) * 4
    data = types.SimpleNamespace(load_data=lambda data_type: None,
                                 load_episode=lambda index, data_type: episode_arrays)
    rates = run_original_loop(
        lambda trainer: original.meta.MetaTrainer.train(trainer, data), flags, original,
        meta_lr='learning_rate', metatrain_op='train_op', total_loss='loss',
        total_accuracy='accuracy', training_summ_op='summary', val_summ_op='summary',
        input_val_loss='val_loss', input_val_acc='val_accuracy', inputa='xs', inputb='xq',
        labela='ys', labelb='yq', weights={}, ss_weights={}, fc_weights={})
    assert cfg.min_meta_lr == 0.1 * cfg.meta_lr and rates[-1] == cfg.min_meta_lr
    np.testing.assert_allclose(rates, [learning_rate(MtlRunner, cfg, i) for i in range(n)],
                               rtol=1e-15)


# ---- ResNet-18 ---------------------------------------------------------------------------
def test_resnet18_forward_with_scaling_and_shifting(original, tmp_path):
    """models/resnet18.py forward_resnet: the input resized to 224 (tf.image.resize_images), the
    7x7 stem, eight blocks of two conv blocks, 7x7 average pool; with scales and shifts."""
    cfg = main.parse_config(['--savedir', str(tmp_path), *OUR_FLAGS,
                             '--backbone_arch', 'resnet18'])
    tf.random.set_seed(2)
    ours = build_model(cfg, cfg.way, (SIZE, SIZE, 3))
    randomise(ours, seed=4)
    x = np.random.default_rng(5).uniform(size=[2, SIZE, SIZE, 3]).astype(np.float32)
    start = {**values(ours.backbone.weights), **{f'ss_{k}': v for k, v in values(ours.ss).items()}}
    with tf.Graph().as_default(), flags_of(original, original_flags(cfg, phase='meta')):
        model = original.meta_model.MakeMetaModel()
        weights, ss = model.construct_resnet_weights(), model.construct_resnet_ss_weights()
        image = v1.placeholder(tf.float32, [2, SIZE * SIZE * 3])
        features = model.forward_resnet(image, weights, ss, reuse=False)
        with session() as sess:
            sess.run(v1.global_variables_initializer())
            load(sess, {**{k: v for k, v in weights.items() if k in start},
                        **{f'ss_{k}': v for k, v in ss.items()}}, start)
            theirs = sess.run(features, {image: flat(x)})
    assert theirs.shape == (2, 512)
    assert_close(ours.embed(x).numpy(), theirs, 'ResNet-18 features')
