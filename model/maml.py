"""MAML (second order), first-order MAML and Meta-SGD.

The meta-learned initialisation is the backbone's theta (plus its BN shifts, which are
meta-learned but not adapted). Each task adapts theta with the shared inner loop on its
support set and is scored on its query set with the adapted weights.

Loss: mean softmax cross-entropy (metadrop's tf.losses.softmax_cross_entropy), in the inner
and the outer loop. cbfinn/maml instead sums the per-example CE divided by K (its xent:
softmax CE / update_batch_size, summed by tf.gradients in the inner loop and by reduce_sum
over the queries, then divided by the metabatch, in the outer loop): `inner_loss='maml_sum'`
reproduces the inner scaling (way times the mean), `outer_loss='maml_sum'` the outer one
(way x queries-per-class / K times the mean: x75 at 5-way 1-shot with 15 queries, which
matters where the meta-gradient is clipped, cbfinn's miniImageNet clip of 10).

Meta-SGD: a learned step size per parameter entry (alpha), the same shapes as theta except
the head, whose alpha is one column [F, 1] (and [1] for the bias) shared by all classes as
in l2b's Meta-SGD, so the step is invariant to class permutation. Initialised to the
constant `alpha_init` (default: inner_lr, so Meta-SGD starts where MAML starts; l2b uses
0.01).

Batch-norm modes (`bn_mode`, PyTorch-MAML's transductive and inductive settings). The
support forwards of the inner loop always normalise with the support batch's statistics;
the modes differ in the query forward:
- 'transductive' (the originals, default): the query set is normalised with its own batch
  statistics, so a query's prediction depends on the other queries.
- 'episodic': per-episode running statistics. They start at mean 0, variance 1 for every
  task, are updated after each support forward of the inner loop,
  running <- (1 - m) running + m batch (m = bn_momentum, torch's 0.1; the variance is the
  unbiased one, as torch keeps it), and normalise the queries (inductive). As in torch the
  statistics are buffers: no gradient flows through them.
- 'support': the queries are normalised with the support set's statistics under the
  adapted weights (inductive; the gradient flows through those statistics).
"""
import collections
from typing import NamedTuple, Optional

import sonnet as snt
import tensorflow as tf

from model import inner_loop
from model import nets


def cross_entropy(logits, labels):
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


LOSS_SCALINGS = ('mean', 'maml_sum')


def scaled_cross_entropy(kind, logits, labels, n_support):
    """'mean': mean CE; 'maml_sum' (cbfinn/maml's xent summed): sum_i CE_i / K, where K, the
    shot, is the support size over the number of classes, whatever the size of `labels`."""
    if kind == 'maml_sum':
        shot = tf.cast(n_support, logits.dtype) / tf.cast(tf.shape(logits)[-1], logits.dtype)
        return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=logits)) / shot
    return cross_entropy(logits, labels)


def accuracy(logits, labels):
    return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=labels.dtype),
                                           labels), tf.float32))


BN_MODES = ('transductive', 'episodic', 'support')


class Adapted(NamedTuple):
    """A task after its inner loop: the fast weights and what the query forward needs."""
    params: collections.OrderedDict
    losses: tf.Tensor                  # inner loss before each step [n_steps]
    support: tf.Tensor                 # the support images (bn_mode 'support')
    running: Optional[dict] = None     # layer -> (mean, var) (bn_mode 'episodic')


class MAML(snt.Module):
    """A method over a backbone: `task_loss(xs, ys, xq, yq, training)` -> (loss, acc).

    Inner-loop options of PyTorch-MAML: `frozen` (parameter names kept at their initial
    value during adaptation), `inner_momentum`, `inner_weight_decay`; `efficient`
    recomputes each inner step in the backward pass (gradient checkpointing).
    `bn_mode`: where the query forward takes its batch-norm statistics (module docstring).
    """

    def __init__(self, net, inner_lr=0.1, n_steps=5, n_test_steps=None, first_order=False,
                 meta_sgd=False, alpha_init=None, inner_loss='mean', bn_mode='transductive',
                 bn_momentum=0.1, frozen=(), inner_momentum=0., inner_weight_decay=0.,
                 efficient=False, outer_loss='mean', name='maml'):
        super().__init__(name=name)
        self.net = net
        self.inner_lr = float(inner_lr)
        self.n_steps = int(n_steps)
        self.n_test_steps = int(n_steps if n_test_steps is None else n_test_steps)
        self.first_order = bool(first_order)
        for what, kind in (('inner_loss', inner_loss), ('outer_loss', outer_loss)):
            if kind not in LOSS_SCALINGS:
                raise ValueError(f'{what} must be mean or maml_sum, got {kind!r}')
        self.inner_loss_kind = inner_loss
        self.outer_loss_kind = outer_loss
        if bn_mode not in BN_MODES:
            raise ValueError(f'bn_mode must be one of {", ".join(BN_MODES)}, got {bn_mode!r}')
        if not 0. < bn_momentum <= 1.:
            raise ValueError(f'bn_momentum must be in (0, 1], got {bn_momentum}')
        self.bn_mode = bn_mode
        self.bn_momentum = float(bn_momentum)
        self.frozen = tuple(frozen)
        self.inner_momentum = float(inner_momentum)
        self.inner_weight_decay = float(inner_weight_decay)
        self.efficient = bool(efficient)
        self.alpha = None
        if meta_sgd:
            init = self.inner_lr if alpha_init is None else float(alpha_init)
            alpha = collections.OrderedDict()
            with self.name_scope:
                for k, shape in net.param_shapes().items():
                    if k == 'dense_w':
                        shape = [shape[0], 1]
                    elif k == 'dense_b':
                        shape = [1]
                    alpha[k] = tf.Variable(tf.fill(shape, tf.constant(init, net.dtype)),
                                           name=f'alpha_{k}')
            self.alpha = alpha

    @property
    def outer_variables(self):
        """Everything the outer optimiser updates: theta, BN shifts, and alphas."""
        vs = self.net.variables_to_meta_learn
        if self.alpha is not None:
            vs += list(self.alpha.values())
        return vs

    def step_size(self):
        return self.inner_lr if self.alpha is None else self.alpha

    def support_ce(self, logits, y):
        """The inner-loop loss of one forward: mean CE, or cbfinn/maml's sum of CE / K
        (the mean scaled by the number of classes)."""
        return scaled_cross_entropy(self.inner_loss_kind, logits, y, tf.shape(y)[0])

    def inner_loss(self, params, x, y, training=True, norm=None):
        """The loss one inner step descends (stochastic methods draw their noise here)."""
        return self.support_ce(self.net(x, params, norm=norm), y)

    def features(self, params, x, sample=False):
        """Flattened backbone features with weights `params` (export's htr/hte)."""
        return self.net.features(x, params)

    # ---- adaptation ------------------------------------------------------------------
    stochastic_inner_loss = False   # a recomputed inner step must redo the same computation

    def initial_running_stats(self):
        return {name: (tf.zeros([c], self.net.dtype), tf.ones([c], self.net.dtype))
                for name, c in self.net.bn_channels.items()}

    def update_running_stats(self, running, record):
        """torch's running-average update from the recorded batch statistics."""
        m = self.bn_momentum
        new = {}
        for name, (mean, var) in running.items():
            b_mean, b_var, n = (tf.stop_gradient(t) for t in record[name])
            unbiased = b_var * n / tf.maximum(n - 1., 1.)
            new[name] = ((1. - m) * mean + m * b_mean, (1. - m) * var + m * unbiased)
        return new

    def adapt(self, xs, ys, training=True, n_steps=None):
        """Fast weights for one task's support set, as an `Adapted`."""
        if n_steps is None:
            n_steps = self.n_steps if training else self.n_test_steps
        recompute = self.efficient and training
        if recompute and self.stochastic_inner_loss:
            raise ValueError('--efficient recomputes each inner step in the backward pass, '
                             'which would redraw the noise of a stochastic inner loss '
                             '(Meta-Dropout); use it without noise (--maml) or not at all')
        options = dict(first_order=self.first_order, unroll=training, frozen=self.frozen,
                       momentum=self.inner_momentum, weight_decay=self.inner_weight_decay,
                       recompute=recompute)
        start = self.net.initial_params()
        if self.bn_mode == 'episodic':
            def loss_fn(p, running):
                record = {}
                loss = self.inner_loss(p, xs, ys, training, norm=nets.BatchStats(record))
                return loss, self.update_running_stats(running, record)
            fast, losses, running = inner_loop.gradient_descent(
                loss_fn, start, n_steps, self.step_size(), state=self.initial_running_stats(),
                **options)
            return Adapted(fast, losses, xs, running)
        fast, losses = inner_loop.gradient_descent(
            lambda p: self.inner_loss(p, xs, ys, training), start, n_steps, self.step_size(),
            **options)
        return Adapted(fast, losses, xs)

    # ---- scoring ---------------------------------------------------------------------
    def predict(self, params, x, norm=None):
        """Logits with (adapted) weights `params`: the deterministic forward that scores a
        task after adaptation (and that export and the adversarial attacks use)."""
        return self.net(x, params, norm=norm)

    def query_logits(self, adapted, x):
        """Logits of query images x after adaptation, with the batch-norm mode's
        statistics."""
        if self.bn_mode == 'episodic':
            return self.predict(adapted.params, x, norm=nets.GivenStats(adapted.running))
        if self.bn_mode == 'support':
            n = tf.shape(adapted.support)[0]
            both = tf.concat([tf.reshape(adapted.support, [n, -1]),
                              tf.reshape(x, [tf.shape(x)[0], -1])], 0)
            return self.predict(adapted.params, both, norm=nets.ReferenceStats(n))[n:]
        return self.predict(adapted.params, x)

    def task_loss(self, xs, ys, xq, yq, training=True):
        """The query loss after adaptation (mean CE, or with outer_loss='maml_sum'
        cbfinn/maml's sum of query CE / K) and the query accuracy."""
        logits = self.query_logits(self.adapt(xs, ys, training), xq)
        loss = scaled_cross_entropy(self.outer_loss_kind, logits, yq, tf.shape(ys)[0])
        return loss, accuracy(logits, yq)
