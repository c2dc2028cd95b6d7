"""MAML (second order), first-order MAML and Meta-SGD.

The meta-learned initialisation is the backbone's theta (plus its BN shifts, which are
meta-learned but not adapted). Each task adapts theta with the shared inner loop on its
support set and is scored on its query set with the adapted weights.

Loss: mean softmax cross-entropy (metadrop's tf.losses.softmax_cross_entropy), in the inner
and the outer loop. cbfinn/maml instead sums per-example CE / K in the inner loop;
`inner_loss='maml_sum'` reproduces that scaling.

Meta-SGD: a learned step size per parameter entry (alpha), the same shapes as theta except
the head, whose alpha is one column [F, 1] (and [1] for the bias) shared by all classes as
in l2b's Meta-SGD, so the step is invariant to class permutation. Initialised to the
constant `alpha_init` (default: inner_lr, so Meta-SGD starts where MAML starts; l2b uses
0.01).
"""
import collections

import sonnet as snt
import tensorflow as tf

from model import inner_loop


def cross_entropy(logits, labels):
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def accuracy(logits, labels):
    return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=labels.dtype),
                                           labels), tf.float32))


class MAML(snt.Module):
    """A method over a backbone: `task_loss(xs, ys, xq, yq, training)` -> (loss, acc)."""

    def __init__(self, net, inner_lr=0.1, n_steps=5, n_test_steps=None, first_order=False,
                 meta_sgd=False, alpha_init=None, inner_loss='mean', name='maml'):
        super().__init__(name=name)
        self.net = net
        self.inner_lr = float(inner_lr)
        self.n_steps = int(n_steps)
        self.n_test_steps = int(n_steps if n_test_steps is None else n_test_steps)
        self.first_order = bool(first_order)
        if inner_loss not in ('mean', 'maml_sum'):
            raise ValueError(f'inner_loss must be mean or maml_sum, got {inner_loss!r}')
        self.inner_loss_kind = inner_loss
        self.alpha = None
        if meta_sgd:
            init = self.inner_lr if alpha_init is None else float(alpha_init)
            alpha = collections.OrderedDict()
            with self.name_scope:
                for k, v in net.theta.items():
                    shape = v.shape.as_list()
                    if k == 'dense_w':
                        shape = [shape[0], 1]
                    elif k == 'dense_b':
                        shape = [1]
                    alpha[k] = tf.Variable(tf.fill(shape, tf.constant(init, v.dtype)),
                                           name=f'alpha_{k}')
            self.alpha = alpha

    @property
    def outer_variables(self):
        """Everything the outer optimiser updates: theta, BN shifts, and alphas."""
        vs = list(self.net.theta.values()) + list(self.net.bn_beta.values())
        if self.alpha is not None:
            vs += list(self.alpha.values())
        return vs

    def step_size(self):
        return self.inner_lr if self.alpha is None else self.alpha

    def support_ce(self, logits, y):
        """The inner-loop loss of one forward: mean CE, or cbfinn/maml's sum of CE / K."""
        if self.inner_loss_kind == 'maml_sum':
            # cbfinn/maml: sum_i CE_i / K, i.e. mean CE scaled by the number of classes.
            shot = tf.cast(tf.shape(y)[0], logits.dtype) / tf.cast(tf.shape(logits)[-1],
                                                                   logits.dtype)
            return tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y, logits=logits)) / shot
        return cross_entropy(logits, y)

    def inner_loss(self, params, x, y, training=True):
        """The loss one inner step descends (stochastic methods draw their noise here)."""
        return self.support_ce(self.net(x, params), y)

    def features(self, params, x, sample=False):
        """Flattened backbone features with weights `params` (export's htr/hte)."""
        return self.net.features(x, params)

    def adapt(self, xs, ys, training=True, n_steps=None):
        """Fast weights for one task's support set (and the inner losses before each step)."""
        if n_steps is None:
            n_steps = self.n_steps if training else self.n_test_steps
        return inner_loop.gradient_descent(
            lambda p: self.inner_loss(p, xs, ys, training), self.net.theta, n_steps, self.step_size(),
            first_order=self.first_order, unroll=training)

    def predict(self, params, x):
        """Query logits with (adapted) weights `params`: the deterministic forward that
        scores a task after adaptation (and that export and the adversarial attacks use)."""
        return self.net(x, params)

    def task_loss(self, xs, ys, xq, yq, training=True):
        fast, _ = self.adapt(xs, ys, training)
        logits = self.predict(fast, xq)
        return cross_entropy(logits, yq), accuracy(logits, yq)
