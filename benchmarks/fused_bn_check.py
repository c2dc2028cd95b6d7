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
"""
import argparse
import os

import numpy as np
import tensorflow as tf

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


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--npz', default=REPRO, help="issue 19's episode_weights.npz")
    p.add_argument('--draws', type=int, default=1, help='synthetic episodes to check as well')
    p.add_argument('--graph', action='store_true', help='float32 inside tf.function')
    args = p.parse_args()
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
