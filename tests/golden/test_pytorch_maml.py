"""Golden tests: fmu2/PyTorch-MAML's own PyTorch code (models/, utils/optimizers.py, imported from
the originals' folder) beside ours, on the same weights and episodes.

Weights go from torch to ours: a conv kernel [out, in, kh, kw] becomes [kh, kw, in, out], a
Linear weight [way, C*h*w] (torch flattens C, h, w) becomes dense_w [h*w*C, way] (we flatten
NHWC), BatchNorm2d's weight / bias become gamma / beta. Everything runs in float64 (torch
.double(), our backbones built with dtype float64) and is compared to 1e-9 relative, except the
runfile test, which builds the model from the runfile's own flags through model.build_model and
the runner's compiled step, in float32 as main.py does.

Sizes are small (2-way, 1-shot, 2 queries per class, 16x16 or 32x32 images, 4 channels where a
constructor takes a width) so the module runs in seconds.
"""
import collections
import re

import numpy as np
import pytest
import tensorflow as tf

from tests.golden.originals import load_original, original_dir

torch = pytest.importorskip('torch', reason='the PyTorch-MAML golden tests need torch: '
                                            'pip install -e ".[golden]"')

import main  # noqa: E402
import model as model_registry  # noqa: E402
from model import maml as maml_lib  # noqa: E402
from model import backbones, optim, steps  # noqa: E402

WAY, SHOT, QUERY = 2, 1, 2
RTOL, ATOL = 1e-9, 1e-12


@pytest.fixture(scope='module')
def pt():
    """The original's modules (its `models` and `utils` packages, loaded from its folder)."""
    # Tiny tensors: one thread avoids OpenMP's spinning workers competing with TensorFlow's.
    torch.set_num_threads(1)
    return load_original(original_dir('PyTorch-MAML'),
                         ['models', 'models.maml', 'models.encoders', 'models.classifiers',
                          'utils', 'utils.optimizers'])


# ---- weights: torch -> ours ------------------------------------------------------------

def our_name(torch_name):
    """The original's parameter name -> ours (model/nets.py, model/resnets.py)."""
    n = re.sub(r'^encoder\.(encoder\.)?', '', torch_name)
    if n.startswith('classifier.linear.'):
        return 'dense_w' if n.endswith('weight') else 'dense_b'
    n = n.replace('res_conv.conv', 'sc_conv').replace('res_conv.bn', 'sc_bn')
    n = re.sub(r'^layer0\.(conv|bn)\.', r'layer0.\g<1>1.', n)   # ResNet-18's stem
    n = re.sub(r'^(conv\d)\.conv\.', r'\1.', n)                 # ConvNet4's blocks
    *path, kind = n.split('.')
    is_bn = re.fullmatch(r'(sc_)?bn\d?', path[-1]) is not None
    suffix = {('weight', False): 'w', ('bias', False): 'b',
              ('weight', True): 'gamma', ('bias', True): 'beta'}[kind, is_bn]
    return '_'.join(path + [suffix])


def to_ours(name, value, channels):
    """A torch parameter (or gradient) as our layout. channels: the encoder's output
    channels (the Linear weight's flat input is channels x h x w)."""
    a = value.detach().numpy()
    if a.ndim == 4:
        return a.transpose(2, 3, 1, 0)
    if name == 'dense_w':
        way, flat = a.shape
        side = int(round(np.sqrt(flat // channels)))
        return a.reshape(way, channels, side, side).transpose(2, 3, 1, 0).reshape(flat, way)
    return a


def copy_weights(torch_model, net, channels):
    """Assigns every torch parameter to our variable of the same role; every variable of
    ours must get one."""
    filled = set()
    for name, p in torch_model.named_parameters():
        key = our_name(name)
        if key in net.theta:   # a zero head has no dense_w / dense_b variables
            net.theta[key].assign(to_ours(key, p, channels))
            filled.add(key)
    assert filled == set(net.theta), sorted(set(net.theta) - filled)


def torch_grads(torch_model, channels):
    return {our_name(n): to_ours(our_name(n), p.grad, channels)
            for n, p in torch_model.named_parameters() if p.grad is not None}


def assert_close(ours, theirs, rtol=RTOL, atol=ATOL, what=''):
    ours = np.asarray(ours)
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, err_msg=what)
    return float(np.max(np.abs(ours - theirs)))


# ---- episodes --------------------------------------------------------------------------

def episodes(n_tasks, size, seed=0):
    """n_tasks episodes of WAY x SHOT support and WAY x QUERY query images (NCHW for torch,
    NHWC for us; the same values)."""
    rng = np.random.RandomState(seed)
    xs = rng.normal(size=(n_tasks, WAY * SHOT, 3, size, size))
    xq = rng.normal(size=(n_tasks, WAY * QUERY, 3, size, size))
    ys = np.tile(np.repeat(np.arange(WAY), SHOT), (n_tasks, 1))
    yq = np.tile(np.repeat(np.arange(WAY), QUERY), (n_tasks, 1))
    return dict(torch=(torch.tensor(xs), torch.tensor(xq), torch.tensor(ys), torch.tensor(yq)),
                ours=(xs.transpose(0, 1, 3, 4, 2), ys.astype(np.int32),
                      xq.transpose(0, 1, 3, 4, 2), yq.astype(np.int32)))


# ---- the two models --------------------------------------------------------------------

ALL_CONV = ['conv1', 'conv2', 'conv3', 'conv4']
BN_ARGS = {'transductive': dict(track_running_stats=False),
           'episodic': dict(track_running_stats=True, episodic=ALL_CONV, n_episode=2)}


def original_convnet4(pt, channels, size, bn_mode, seed=0):
    torch.manual_seed(seed)
    enc = pt.encoders.convnet4.ConvNet4(channels, channels, dict(BN_ARGS[bn_mode]))
    side = size // 16
    clf = pt.classifiers.make('logistic', in_dim=channels * side * side, n_way=WAY)
    return pt.maml.MAML(enc, clf).double()


def our_maml(net, bn_mode='transductive', n_steps=2, frozen=(), **kwargs):
    return maml_lib.MAML(net, inner_lr=0.01, n_steps=n_steps, bn_mode=bn_mode,
                         frozen=model_registry.resolve_frozen(list(frozen),
                                                              list(net.param_shapes())),
                         **kwargs)


def inner_args(pt, **kwargs):
    return pt.utils.config_inner_args(dict(kwargs))


# ---- forward ---------------------------------------------------------------------------

def test_convnet4_forward(pt):
    """ConvNet4 (models/encoders/convnet4.py) + logistic head, batch statistics: the same
    logits, NHWC flattening included (32x32 -> 2x2x4 features)."""
    size, channels = 32, 4
    theirs = original_convnet4(pt, channels, size, 'transductive')
    net = backbones.build_backbone('convnet4', WAY, (size, size, 3), channels, dtype=tf.float64)
    copy_weights(theirs, net, channels)
    ep = episodes(1, size)
    theirs.train()
    with torch.no_grad():
        t_logits = theirs._inner_forward(ep['torch'][0][0], None, 0).numpy()
    logits = net(ep['ours'][0][0]).numpy()
    assert_close(logits, t_logits, what='convnet4 logits')


@pytest.mark.parametrize('name', ['resnet12', 'resnet18'])
def test_resnet_forward(pt, name):
    """ResNet-12 / ResNet-18 at their registered widths (64-128-256-512), batch statistics.
    ResNet-18's stride-2 stages build their 1x1 shortcut without the stride: the original
    cannot run (the residual sum has mismatched sizes); with the stride set on those
    shortcut convolutions (its evident intent, what ours does) the logits agree."""
    size = 16
    torch.manual_seed(0)
    enc = pt.encoders.make(name, bn_args=dict(track_running_stats=False))
    clf = pt.classifiers.make('logistic', in_dim=enc.get_out_dim(), n_way=WAY)
    theirs = pt.maml.MAML(enc, clf).double()
    net = backbones.build_backbone(name, WAY, (size, size, 3), dtype=tf.float64)
    copy_weights(theirs, net, net.widths[-1])
    x = episodes(1, size)['torch'][0][0]
    theirs.train()
    if name == 'resnet18':
        with pytest.raises(RuntimeError, match='size of tensor'):
            theirs._inner_forward(x, None, 0)
        for block in (enc.layer2, enc.layer3, enc.layer4):
            block.res_conv.conv.stride = (block.stride, block.stride)
    with torch.no_grad():
        t_logits = theirs._inner_forward(x, None, 0).numpy()
    logits = net(episodes(1, size)['ours'][0][0]).numpy()
    assert_close(logits, t_logits, what=f'{name} logits')


# ---- inner loop, query logits, meta-gradient -------------------------------------------

def original_meta_gradient(theirs, ep, args):
    """train.py's meta-train step without the update: the query logits of every episode,
    F.cross_entropy over all of them, backward."""
    x_shot, x_query, y_shot, y_query = ep['torch']
    theirs.zero_grad()
    theirs.train()
    logits = theirs(x_shot, x_query, y_shot, args, meta_train=True)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y_query.flatten())
    loss.backward()
    return logits.detach().numpy(), loss.item()


def our_meta_gradient(m, ep):
    xs, ys, xq, yq = (tf.constant(a) for a in ep['ours'])
    with tf.GradientTape() as tape:
        losses, logits = [], []
        for t in range(xs.shape[0]):
            adapted = m.adapt(xs[t], ys[t], training=True)
            logits.append(m.query_logits(adapted, xq[t]))
            losses.append(maml_lib.cross_entropy(logits[-1], yq[t]))
        loss = tf.reduce_mean(losses)
    grads = dict(zip(m.net.theta, tape.gradient(loss, list(m.net.theta.values()))))
    return np.stack([l.numpy() for l in logits]), loss.numpy(), grads


CASES = {
    # train_reproduce.yaml: track_running_stats False, frozen [bn], second order
    'reproduce': dict(bn_mode='transductive', frozen=['bn']),
    'reproduce_first_order': dict(bn_mode='transductive', frozen=['bn'], first_order=True),
    # train_template.yaml: episodic running statistics, zero head, momentum, weight decay
    'template': dict(bn_mode='episodic', zero_head=True, momentum=0.9, weight_decay=5e-4),
    # episodic statistics with BN gamma / beta adapted, a learned head, first order
    'episodic_first_order': dict(bn_mode='episodic', momentum=0.5, weight_decay=1e-3,
                                 first_order=True),
}


def both_models(pt, case, size=32, channels=4, n_steps=2):
    c = CASES[case]
    theirs = original_convnet4(pt, channels, size, c['bn_mode'])
    if c.get('zero_head'):
        theirs.reset_classifier()
    args = inner_args(pt, n_step=n_steps, encoder_lr=0.01, classifier_lr=0.01,
                      frozen=list(c.get('frozen', [])), momentum=c.get('momentum', 0.),
                      weight_decay=c.get('weight_decay', 0.),
                      first_order=c.get('first_order', False))
    net = backbones.build_backbone('convnet4', WAY, (size, size, 3), channels, dtype=tf.float64,
                              zero_head=c.get('zero_head', False))
    copy_weights(theirs, net, channels)
    ours = our_maml(net, c['bn_mode'], n_steps, c.get('frozen', ()),
                    first_order=c.get('first_order', False),
                    inner_momentum=c.get('momentum', 0.),
                    inner_weight_decay=c.get('weight_decay', 0.))
    return theirs, ours, args


@pytest.mark.parametrize('case', list(CASES))
def test_inner_loop_and_meta_gradient(pt, case):
    """MAML._adapt (models/maml.py) for 1 and 2 steps: every fast weight after each step
    (frozen ones unchanged), with each BN mode, momentum and weight decay; then two episodes
    of train.py's meta-train forward and backward: query logits, loss and the meta-gradient
    of every meta-learned parameter (theta with BN gamma / beta)."""
    theirs, ours, args = both_models(pt, case)
    channels = 4
    ep = episodes(2, 32, seed=1)
    x, y = ep['torch'][0][0], ep['torch'][2][0]
    theirs.train()
    for n in (1, 2):
        params = collections.OrderedDict(
            (k, v) for k, v in theirs.named_parameters()
            if not any(s in k for s in args['frozen'] + ['temp']))
        t_fast = theirs._adapt(x, y, params, 0, dict(args, n_step=n), meta_train=True)
        fast = ours.adapt(tf.constant(ep['ours'][0][0]), tf.constant(ep['ours'][1][0]),
                          training=True, n_steps=n).params
        for k, v in t_fast.items():
            key = our_name(k)
            assert_close(fast[key].numpy(), to_ours(key, v, channels), what=f'{key} step {n}')
        for k in set(fast) - {our_name(k) for k in t_fast}:   # frozen: unchanged
            np.testing.assert_array_equal(fast[k].numpy(), ours.net.theta[k].numpy())

    t_logits, t_loss, = original_meta_gradient(theirs, ep, args)
    logits, loss, grads = our_meta_gradient(ours, ep)
    assert_close(logits, t_logits, what='query logits')
    assert_close(loss, t_loss, what='meta-loss')
    t_grads = torch_grads(theirs, channels)
    for k, g in grads.items():
        assert_close(g.numpy(), t_grads[k], what=f'meta-gradient {k}')


@pytest.mark.parametrize('case', ['reproduce', 'template'])
def test_meta_test_adaptation(pt, case):
    """test.py's forward (meta_train=False): 10 inner steps (test_reproduce.yaml), the
    query logits; ours runs them in its test-time tf.while_loop."""
    theirs, ours, args = both_models(pt, case, n_steps=10)
    ours.n_test_steps = 10
    ep = episodes(1, 32, seed=2)
    x_shot, x_query, y_shot, _ = ep['torch']
    theirs.eval()
    t_logits = theirs(x_shot, x_query, y_shot, args, meta_train=False).detach().numpy()
    xs, ys, xq, _ = ep['ours']
    logits = ours.query_logits(ours.adapt(tf.constant(xs[0]), tf.constant(ys[0]),
                                          training=False), tf.constant(xq[0]))
    assert_close(logits.numpy(), t_logits[0], what='query logits')


# ---- the outer step ---------------------------------------------------------------------

def original_outer_step(pt, theirs, optimizer, ep, args, zero_head):
    """One iteration of train.py's meta-train loop: reset the head (reset_classifier), the
    meta-gradient, clip_grad_value_(10) on every parameter, optimizer.step()."""
    if zero_head:
        theirs.reset_classifier()
    _, loss = original_meta_gradient(theirs, ep, args)
    for param in optimizer.param_groups[0]['params']:
        torch.nn.utils.clip_grad_value_(param, 10)
    optimizer.step()
    return loss


def torch_weights(theirs, channels, keys):
    return {our_name(n): to_ours(our_name(n), p, channels)
            for n, p in theirs.named_parameters() if our_name(n) in keys}


@pytest.mark.parametrize('case,optimizer', [('reproduce', 'adam'), ('template', 'sgd')])
def test_outer_steps(pt, case, optimizer):
    """Two meta-train iterations with the optimiser of the config (utils/optimizers.py:
    train_reproduce.yaml's Adam lr 1e-3, train_template.yaml's SGD lr 0.01, momentum 0.9,
    weight decay 5e-4), clipping by value at 10: every meta-learned parameter's change after
    each step. Ours: --optimizer torch_adam / sgd. TF1's Adam (--optimizer adam) moves them
    differently, which the test shows on the first step."""
    theirs, ours, args = both_models(pt, case)
    channels, zero_head = 4, CASES[case].get('zero_head', False)
    opt_args = dict(lr=1e-3) if optimizer == 'adam' else dict(lr=0.01, weight_decay=5e-4)
    t_opt, _ = pt.optimizers.make(optimizer, theirs.parameters(), **opt_args)
    variables = list(ours.outer_variables)
    if optimizer == 'adam':   # --optimizer torch_adam
        our_opt = optim.make_optimizer('torch_adam', variables, opt_args['lr'])
    else:   # --optimizer sgd, with torch's float64 learning rate for this float64 model
        our_opt = optim.SGD(variables, opt_args['lr'], momentum=0.9,
                            weight_decay=opt_args['weight_decay'], lr_dtype=tf.float64)
    keys = list(ours.net.theta)
    start = {k: v.numpy() for k, v in ours.net.theta.items()}
    for i, seed in enumerate((3, 4)):
        ep = episodes(1, 32, seed)   # the mean over a metabatch: test_inner_loop_and_meta_gradient
        t_loss = original_outer_step(pt, theirs, t_opt, ep, args, zero_head)
        _, loss, grads = our_meta_gradient(ours, ep)
        clipped = optim.clip_by_value([grads[k] for k in keys], 10.)
        if i == 0 and optimizer == 'adam':
            tf1 = [tf.Variable(v) for v in variables]
            optim.Adam(tf1, 1e-3).apply(clipped)
            tf1_change = {k: v.numpy() - start[k] for k, v in zip(keys, tf1)}
        our_opt.apply(clipped)
        assert_close(loss, t_loss, what=f'loss {i}')
        t_weights = torch_weights(theirs, channels, keys)
        for k in keys:
            t1 = t_weights[k] - start[k]
            # A conv bias followed by batch norm has no gradient (the normalisation removes
            # it): both Adams turn rounding noise of ~1e-17 into changes of ~1e-12.
            noise = np.max(np.abs(t1)) < 1e-9
            assert_close(ours.net.theta[k].numpy() - start[k], t1, atol=1e-10 if noise else ATOL,
                         what=f'change of {k} after step {i + 1}')
            if i == 0 and optimizer == 'adam' and not noise:
                tf1_off = np.max(np.abs(tf1_change[k] - t1) / np.maximum(np.abs(t1), 1e-30))
                assert tf1_off > 1e-7, k


# ---- the runfile ------------------------------------------------------------------------

def test_runfile_meta_train_step_equals_train_reproduce(pt):
    """runfiles/pytorch_maml_mimg_1shot.sh's meta_train command against the original's
    configs/convnet4/mini-imagenet/5_way_1_shot/train_reproduce.yaml: the flags carry the
    config's values; then the model main.py builds from those flags (model.build_model) and
    the runner's compiled step (steps.make_train_step with the runfile's optimiser and
    clipping) take a meta-train step in float32 beside train.py's loop on the config's
    model, inner loop and optimiser (test_outer_steps follows the optimiser state over two
    steps in float64). Only the sizes are made small: 2-way, 4 channels, 2 episodes of
    32x32 images, 2 inner steps."""
    yaml = pytest.importorskip('yaml', reason='reads the original\'s config: pip install pyyaml')
    from tests.test_runfiles import RUNFILES, commands
    folder = original_dir('PyTorch-MAML')
    config = yaml.safe_load((folder / 'configs/convnet4/mini-imagenet/5_way_1_shot/'
                             'train_reproduce.yaml').read_text())
    argv = [a for a in commands(RUNFILES[0].parent / 'pytorch_maml_mimg_1shot.sh')[0] if a != 'X']
    cfg = main.parse_config(argv)
    args = pt.utils.config_inner_args(config['inner_args'])
    assert (cfg.backbone, cfg.n_steps, cfg.inner_lr, cfg.inner_lr, cfg.frozen,
            cfg.model == 'fomaml', cfg.bn_mode == 'transductive', cfg.metabatch) == \
        (config['encoder'], args['n_step'], args['encoder_lr'], args['classifier_lr'],
         ','.join(args['frozen']), args['first_order'],
         not config['encoder_args']['bn_args']['track_running_stats'],
         config['train']['n_episode'])
    assert (cfg.optimizer, cfg.meta_lr, cfg.weight_decay, cfg.clip_value) == \
        ('torch_adam' if config['optimizer'] == 'adam' else config['optimizer'],
         config['optimizer_args']['lr'], config['optimizer_args'].get('weight_decay', 0.),
         10.)   # train.py: clip_grad_value_(param, 10)
    assert (cfg.inner_momentum, cfg.inner_weight_decay, cfg.zero_head) == \
        (args['momentum'], args['weight_decay'], args['reset_classifier'])

    size, channels, n_tasks, n_steps = 32, 4, 2, 2
    cfg = main.parse_config(argv + ['--way', str(WAY), '--n_channel', str(channels),
                                    '--metabatch', str(n_tasks), '--n_steps', str(n_steps)])
    args['n_step'] = n_steps
    torch.manual_seed(0)
    enc = pt.encoders.convnet4.ConvNet4(channels, channels,
                                        dict(config['encoder_args']['bn_args'], n_episode=n_tasks))
    clf = pt.classifiers.make(config['classifier'], in_dim=channels * (size // 16) ** 2,
                              n_way=WAY)
    theirs = pt.maml.MAML(enc, clf)     # float32, as train.py
    t_opt, _ = pt.optimizers.make(config['optimizer'], theirs.parameters(),
                                  **config['optimizer_args'])

    ours = model_registry.build_model(cfg, WAY, (size, size, 3))
    copy_weights(theirs, ours.net, channels)
    opt = optim.make_optimizer(cfg.optimizer, ours.outer_variables, cfg.meta_lr,
                               momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    step = steps.make_train_step(ours, opt, cfg.clip_value,
                                 steps.episode_spec(n_tasks, WAY * SHOT, WAY * QUERY,
                                                    (size, size, 3)),
                                 clip_norm=cfg.clip_norm)
    start = {k: v.numpy() for k, v in ours.net.theta.items()}
    ep = episodes(n_tasks, size, seed=5)
    ep['torch'] = tuple(t.float() if t.is_floating_point() else t for t in ep['torch'])
    t_loss = original_outer_step(pt, theirs, t_opt, ep, args, zero_head=False)
    xs, ys, xq, yq = ep['ours']
    loss = step(xs.astype(np.float32), ys, xq.astype(np.float32), yq)[0]
    assert_close(loss.numpy(), t_loss, rtol=1e-5, atol=1e-6, what='loss')
    t_weights = torch_weights(theirs, channels, list(start))
    for k in start:
        if re.fullmatch(r'conv\d_b', k):
            continue   # no gradient (batch norm follows): Adam turns float32 noise into steps
        assert_close(ours.net.theta[k].numpy() - start[k], t_weights[k] - start[k],
                     rtol=1e-4, atol=1e-7, what=f'change of {k}')
