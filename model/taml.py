"""Bayesian TAML, "Learning to Balance" (Lee et al., ICLR 2020), as haebeom-lee/l2b has it.

MAML over l2b's Conv4 (32 channels, batch norm with a learned shift and batch statistics,
a classifier head that is the constant zero for every task) plus three task-dependent
balancing variables, each with a diagonal Gaussian posterior computed by an inference
network from the task's support set:

- omega [way]: class imbalance. The inner loss is sum_c softmax(omega)_c * loss_c, where
  loss_c = (way / N) * sum_{i in class c} CE_i (N = support size); without omega it is the
  mean over classes of loss_c, i.e. sum_i CE_i / N, MAML's mean cross-entropy.
- gamma [5]: task imbalance. Every inner step of layer l is multiplied by exp(gamma_l)
  (gamma_l shared by conv{l}_w and conv{l}_b, gamma_5 by the head).
- z [2 * 4 * C]: out-of-distribution tasks. Before the inner loop, conv{l}_w is multiplied
  by 1 + z_w,l per output channel and z_b,l is added to conv{l}_b.
- alpha (--alpha_on): Meta-SGD step sizes, 0.01 everywhere, the head's a single column
  tiled over classes (MAML's meta_sgd option).

With every switch off this is MAML with a zero head; with only alpha it is Meta-SGD: the
same code path (tests check both against model/maml.py).

Outer loss per task: query cross-entropy + KL(q || N(0, 1)) / (N + M), the KL summed over
the dimensions of the variables that are on, N the support size and M the query size;
averaged over tasks. Posterior draws: one reparameterised sample per task at meta-train,
the posterior mean at validation; at meta-test with n_mc_samples S > 0, S sampled passes
(inner loop included) whose softmax outputs are averaged, and the mean when S = 0.

Padding. l2b pads the support sets of a metabatch with zero rows to one length and feeds
them through the network: their batch-norm statistics then include the zero rows, and N
counts them, so a task's adaptation depends on which tasks share its metabatch (fidelity
sheet 10.1-10.2). Here padded rows (label -1) are dropped before the base network by
default; `l2b_padding=True` keeps l2b's behaviour. The inference network masks them out
either way, as l2b does.
"""
import collections
from typing import NamedTuple

import sonnet as snt
import tensorflow as tf

from model import inner_loop
from model.maml import MAML, accuracy

BALANCING = ('omega', 'gamma', 'z')


def kl_to_standard_normal(mu, sigma):
    """KL(Normal(mu, sigma) || Normal(0, 1)), summed over all entries."""
    return tf.reduce_sum(-tf.math.log(sigma) + 0.5 * (tf.square(sigma) + tf.square(mu)) - 0.5)


def _linear(n):
    return snt.Linear(n, w_init=snt.initializers.RandomNormal(stddev=0.02))


def _on_last_axis(layer, x):
    """A dense layer applied along the last axis of a rank-3 tensor (tf.layers.dense)."""
    shape = tf.shape(x)
    y = layer(tf.reshape(x, [-1, x.shape[-1]]))
    return tf.reshape(y, tf.concat([shape[:-1], [layer.output_size]], 0))


class InferenceNetwork(snt.Module):
    """l2b encoder.py: the posteriors of omega, gamma and z from one support set.

    conv(10, 3x3, SAME) -> ReLU -> max-pool 2x2, twice; flatten; dense 64 (linear); then per
    class the statistics [mean, variance, (n_c - 1) / (max_shot - 1)] of each feature
    over the class's examples -> dense 3 -> 4 + ReLU -> s [way, 256]; dense 128 + ReLU,
    dense 32 -> v [way, 32]; the same statistics over classes (the set-size entry is the
    mean of the per-class ones) -> dense 3 -> 4 + ReLU -> v [1, 128]. Heads: omega from s
    (dense 64 + ReLU, then mean and softplus-scale layers to 1 per class), gamma and z
    from v (dense 64 + ReLU, then mean and scale layers to 5 and 2 * 4 * C). Conv kernels
    truncated normal(0.02), dense kernels normal(0.02), biases zero. No batch norm.
    """

    def __init__(self, way, max_shot, n_z, name='encoder'):
        super().__init__(name=name)
        self.way = int(way)
        self.max_shot = int(max_shot)
        conv = dict(kernel_shape=3, padding='SAME',
                    w_init=snt.initializers.TruncatedNormal(stddev=0.02))
        self.conv1 = snt.Conv2D(10, name='conv1', **conv)
        self.conv2 = snt.Conv2D(10, name='conv2', **conv)
        self.dense1 = _linear(64)
        self.interact1 = snt.Linear(4, w_init=snt.initializers.RandomNormal(stddev=0.02),
                                    name='interact1')
        self.dense2 = _linear(128)
        self.dense3 = _linear(32)
        self.interact2 = snt.Linear(4, w_init=snt.initializers.RandomNormal(stddev=0.02),
                                    name='interact2')
        self.heads = {}
        for name, n in (('omega', 1), ('gamma', 5), ('z', n_z)):
            self.heads[name] = (_linear(64), _linear(n), _linear(n))

    def set_size(self, counts):
        """l2b's normalised set size (n_c - 1) / (max_shot - 1)."""
        return (counts - 1.) / max(self.max_shot - 1, 1)

    def __call__(self, x, y):
        """x [n, H, W, C] real support rows, y [n] labels in 0..way-1 ->
        {name: (mean, scale)} for omega [way], gamma [5], z [n_z]."""
        h = x
        for conv in (self.conv1, self.conv2):
            h = tf.nn.max_pool2d(tf.nn.relu(conv(h)), 2, 2, 'VALID')
        h = self.dense1(snt.flatten(h))                              # [n, 64]
        onehot = tf.one_hot(y, self.way, dtype=h.dtype)              # [n, way]
        counts = tf.reduce_sum(onehot, 0)                            # [way]
        per = tf.maximum(counts, 1.)[:, None]
        mean = tf.matmul(onehot, h, transpose_a=True) / per          # [way, 64]
        var = tf.matmul(onehot, tf.square(h - tf.gather(mean, y)), transpose_a=True) / per
        size = self.set_size(counts)
        s = tf.stack([mean, var, tf.tile(size[:, None], [1, mean.shape[-1]])], -1)
        s = tf.nn.relu(_on_last_axis(self.interact1, s))             # [way, 64, 4]
        s = tf.reshape(s, [self.way, -1])                            # [way, 256]
        v = self.dense3(tf.nn.relu(self.dense2(s)))                  # [way, 32]
        v_mean = tf.reduce_mean(v, 0)
        v_var = tf.reduce_mean(tf.square(v - v_mean), 0)
        v = tf.stack([v_mean, v_var, tf.fill(tf.shape(v_mean), tf.reduce_mean(size))], -1)
        v = tf.reshape(tf.nn.relu(_on_last_axis(self.interact2, v[None])), [1, -1])  # [1, 128]
        out = {}
        for name, source in (('omega', s), ('gamma', v), ('z', v)):
            hidden, to_mean, to_scale = self.heads[name]
            g = tf.nn.relu(hidden(source))
            mu, raw = to_mean(g), to_scale(g)
            # omega: one value per class ([way, 1] -> [way]); gamma, z: [1, n] -> [n].
            out[name] = (tf.reshape(mu, [-1]), tf.reshape(tf.nn.softplus(raw), [-1]))
        return out


class TaskAdaptation(NamedTuple):
    """One task's adaptation (`TAML.adapt_task`)."""
    params: collections.OrderedDict   # the adapted fast weights
    kl: tf.Tensor                     # KL of the posteriors that are on, unscaled
    n: tf.Tensor                      # N, the support size the inner loss and KL scale by
    losses: tf.Tensor                 # the inner loss before each step [steps]
    values: dict                      # the drawn omega / gamma / z (those that are on)


class TAML(MAML):
    """Bayesian TAML over a zero-head Conv4 (`net`).

    Switches (l2b's flags): alpha_on (Meta-SGD step sizes), omega_on, gamma_on, z_on.
    `task_loss(xs, ys, xq, yq, training=True)` -> (loss, acc, {'cent', 'kl'}) with one
    posterior sample; `evaluate(xs, ys, xq, yq, n_mc)` -> (cent, kl, acc) with the mean
    (n_mc 0) or n_mc averaged sampled passes. Support labels -1 mark padding.
    """
    task_metrics = ('cent', 'kl')   # the named metrics of task_loss (model/steps.py)

    def __init__(self, net, max_shot=50, inner_lr=0.5, n_steps=5, n_test_steps=None,
                 alpha_on=False, omega_on=False, gamma_on=False, z_on=False, alpha_init=0.01,
                 n_mc_samples=0, l2b_padding=False, first_order=False, name='taml'):
        if not net.zero_head:
            raise ValueError('TAML adapts from a constant zero head (l2b): build the backbone '
                             'with zero_head=True')
        super().__init__(net, inner_lr=inner_lr, n_steps=n_steps, n_test_steps=n_test_steps,
                         first_order=first_order, meta_sgd=alpha_on, alpha_init=alpha_init,
                         name=name)
        self.alpha_on = bool(alpha_on)
        self.on = {'omega': bool(omega_on), 'gamma': bool(gamma_on), 'z': bool(z_on)}
        self.max_shot = int(max_shot)
        self.n_mc_samples = int(n_mc_samples)
        self.l2b_padding = bool(l2b_padding)
        self.conv_layers = [k[:-2] for k in net.theta if k.endswith('_w') and k != 'dense_w']
        self.n_z = 2 * sum(net.theta[f'{c}_w'].shape[-1] for c in self.conv_layers)
        self.encoder = None
        if any(self.on.values()):
            with self.name_scope:
                self.encoder = InferenceNetwork(net.way, max_shot, self.n_z)
                # Sonnet creates variables at the first call: do it now, so the outer
                # optimiser and checkpoints see them from the start.
                self.encoder(tf.zeros([net.way, *net.image_shape], net.dtype),
                             tf.range(net.way))
        # The noise of the reparameterised samples (tests swap in fixed draws).
        self.noise = lambda shape, dtype: tf.random.normal(shape, dtype=dtype)

    @property
    def outer_variables(self):
        vs = super().outer_variables
        if self.encoder is not None:
            vs += list(self.encoder.trainable_variables)
        return vs

    # ---- the balancing variables -------------------------------------------------------
    @staticmethod
    def real_rows(xs, ys):
        mask = ys >= 0
        return tf.boolean_mask(xs, mask), tf.boolean_mask(ys, mask)

    def posterior(self, xs, ys):
        """{name: (mean, scale)} of the variables that are on (real support rows)."""
        if self.encoder is None:
            return {}
        post = self.encoder(*self.real_rows(xs, ys))
        return {k: v for k, v in post.items() if self.on[k]}

    def draw(self, post, sample):
        """Values of the balancing variables: a reparameterised sample or the mean; and
        their KL to N(0, 1), summed."""
        values, kl = {}, tf.constant(0., self.net.dtype)
        for name, (mu, sigma) in post.items():
            values[name] = mu + sigma * self.noise(tf.shape(mu), mu.dtype) if sample else mu
            kl += kl_to_standard_normal(mu, sigma)
        return values, kl

    def balancing(self, xs, ys):
        """softmax(mean omega) [way] and exp(mean gamma) [5], as l2b prints them (ones
        where a variable is off)."""
        post = self.posterior(xs, ys)
        way = self.net.way
        omega = tf.nn.softmax(post['omega'][0]) if 'omega' in post else tf.fill([way], 1. / way)
        gamma = tf.exp(post['gamma'][0]) if 'gamma' in post else tf.ones([5])
        return omega, gamma

    def modulate(self, params, z):
        """conv{l}_w * (1 + z_w,l) per output channel, conv{l}_b + z_b,l."""
        params = collections.OrderedDict(params)
        sizes = [params[f'{c}_w'].shape[-1] for c in self.conv_layers]
        z_w, z_b = tf.split(z, 2)
        for c, zw, zb in zip(self.conv_layers, tf.split(z_w, sizes), tf.split(z_b, sizes)):
            params[f'{c}_w'] = params[f'{c}_w'] * (1. + zw)
            params[f'{c}_b'] = params[f'{c}_b'] + zb
        return params

    def layer_scale(self, gamma):
        """exp(gamma_l) for the parameters of layer l (the head takes the last one)."""
        factors = tf.unstack(tf.exp(gamma))
        scale = {}
        for l, c in enumerate(self.conv_layers):
            scale[f'{c}_w'] = scale[f'{c}_b'] = factors[l]
        scale['dense_w'] = scale['dense_b'] = factors[len(self.conv_layers)]
        return scale

    # ---- one task ----------------------------------------------------------------------
    def weighted_ce(self, logits, y, n, omega=None):
        """l2b's inner loss: per-class sums of CE scaled by way / n, weighted by
        softmax(omega) or averaged over classes. Rows labelled -1 contribute nothing."""
        way = self.net.way
        onehot = tf.one_hot(y, way, dtype=logits.dtype)
        ce = -tf.reduce_sum(onehot * tf.nn.log_softmax(logits), -1)
        per_class = (way / n) * tf.linalg.matvec(onehot, ce, transpose_a=True)
        if omega is None:
            return tf.reduce_mean(per_class)
        return tf.reduce_sum(tf.nn.softmax(omega) * per_class)

    def adapt_task(self, xs, ys, training, sample, post=None):
        """One task's TaskAdaptation: the balancing variables, the modulated
        initialisation and the inner loop. `post`: the task's posterior, if already
        computed (it does not depend on the draw)."""
        values, kl = self.draw(self.posterior(xs, ys) if post is None else post, sample)
        x, y = (xs, ys) if self.l2b_padding else self.real_rows(xs, ys)
        n = tf.cast(tf.shape(y)[0], self.net.dtype)
        start = self.net.initial_params()
        if 'z' in values:
            start = self.modulate(start, values['z'])
        scale = self.layer_scale(values['gamma']) if 'gamma' in values else None
        fast, losses = inner_loop.gradient_descent(
            lambda p: self.weighted_ce(self.net(x, p), y, n, values.get('omega')),
            start, self.n_steps if training else self.n_test_steps, self.step_size(),
            first_order=self.first_order, layer_scale=scale, unroll=training)
        return TaskAdaptation(fast, kl, n, losses, values)

    def task_loss(self, xs, ys, xq, yq, training=True):
        fast, kl, n, _, _ = self.adapt_task(xs, ys, training, sample=training)
        logits = self.net(xq, fast)
        cent = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yq, logits))
        kl = kl / (n + tf.cast(tf.shape(yq)[0], kl.dtype))
        return cent + kl, accuracy(logits, yq), {'cent': cent, 'kl': kl}

    def evaluate(self, xs, ys, xq, yq, n_mc=None):
        """(query CE, scaled KL, accuracy) of one task at validation / meta-test: the
        posterior mean when n_mc is 0, else the average of n_mc sampled passes' softmax
        outputs (CE of that average)."""
        n_mc = self.n_mc_samples if n_mc is None else int(n_mc)
        if self.encoder is None:
            n_mc = 0   # nothing to sample (MAML, Meta-SGD): every pass would be the same
        post = self.posterior(xs, ys)   # once per task; only the draws differ per pass
        passes = []
        for _ in range(max(n_mc, 1)):
            fast, kl, n, _, _ = self.adapt_task(xs, ys, training=False, sample=n_mc > 0,
                                                post=post)
            passes.append(tf.nn.softmax(self.net(xq, fast)))
        prob = tf.add_n(passes) / len(passes)
        picked = tf.gather(prob, yq, batch_dims=1)
        cent = -tf.reduce_mean(tf.math.log(tf.maximum(picked, 1e-30)))
        kl = kl / (n + tf.cast(tf.shape(yq)[0], kl.dtype))
        return cent, kl, accuracy(prob, yq)
