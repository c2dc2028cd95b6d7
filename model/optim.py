"""Outer-loop optimisers, written to match the originals' TF1 optimisers exactly.

tf.compat.v1.train.AdamOptimizer (used by cbfinn/maml, metadrop, l2b, LEO, MTL):
  lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
  m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
  var -= lr_t * m / (sqrt(v) + epsilon)            (epsilon 1e-8, outside the correction)
Keras' Adam differs (epsilon 1e-7 and inside the bias correction), hence this module.
torch.optim.Adam (PyTorch-MAML's `adam`) adds epsilon to the bias-corrected sqrt(v) instead:
`TorchAdam` (--optimizer torch_adam).
Slots are created up front for a fixed variable list, so the whole state is a plain
tf.Module that tf.train.Checkpoint saves and restores.

PyTorch-MAML's outer options are here too: SGD with momentum (torch.optim.SGD: buf <-
momentum buf + g, no dampening, buf starting at the first gradient), L2 weight decay added
to the gradient (torch's coupled weight_decay, for SGD and Adam), step and cosine
learning-rate schedules, and clipping by global norm next to clipping by value.
"""
import math

import tensorflow as tf

OPTIMIZERS = ('adam', 'torch_adam', 'sgd')
SCHEDULES = ('constant', 'step', 'cosine')


class Adam(tf.Module):
    def __init__(self, variables, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 weight_decay=0., name='adam', lr_dtype=tf.float32):
        super().__init__(name=name)
        self.variables_to_train = list(variables)
        self.weight_decay = float(weight_decay)
        self.learning_rate = tf.Variable(learning_rate, dtype=lr_dtype, trainable=False,
                                         name='learning_rate')
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
        with self.name_scope:
            self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name='m')
                      for v in self.variables_to_train]
            self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name='v')
                      for v in self.variables_to_train]

    def with_slots(self, grads):
        """(variable, m, v, gradient plus the coupled weight decay) for every variable that
        has a gradient (`grads` aligned with the variable list, None = no gradient)."""
        for var, m, v, g in zip(self.variables_to_train, self.m, self.v, grads):
            if g is None:
                continue
            g = tf.cast(g, var.dtype)
            if self.weight_decay:
                g = g + self.weight_decay * var
            yield var, m, v, g

    def apply(self, grads):
        """One update with `grads`, aligned with the variable list (None = no gradient).

        TF1's AdamOptimizer holds beta1, beta2, epsilon, the learning rate and the beta powers
        as float32 tensors and casts them to the variable's dtype: a float64 variable's moments
        decay with float32(0.999) = 0.99900001287 and its step size is formed in float64 from
        the float32 powers. So do we (found by the LEO golden test: the exact 0.999 moved a
        float64 step by 6.4e-6); a float32 variable gets the same numbers as before."""
        self.step.assign_add(1)
        t = tf.cast(self.step, tf.float32)
        power1, power2 = self.beta1 ** t, self.beta2 ** t          # float32, as TF1's
        lr32 = tf.cast(self.learning_rate, tf.float32)
        for var, m, v, g in self.with_slots(grads):
            dtype = var.dtype
            if dtype == tf.float32:
                beta1, beta2, epsilon = self.beta1, self.beta2, self.epsilon
                lr_t = self.learning_rate * tf.sqrt(1. - power2) / (1. - power1)
            else:
                beta1, beta2, epsilon = (tf.cast(tf.constant(c, tf.float32), dtype)
                                         for c in (self.beta1, self.beta2, self.epsilon))
                lr_t = (tf.cast(lr32, dtype) * tf.sqrt(1. - tf.cast(power2, dtype))
                        / (1. - tf.cast(power1, dtype)))
            m.assign(beta1 * m + (1. - beta1) * g)
            v.assign(beta2 * v + (1. - beta2) * tf.square(g))
            var.assign_sub(tf.cast(lr_t, dtype) * m / (tf.sqrt(v) + epsilon))


class TorchAdam(Adam):
    """torch.optim.Adam, as PyTorch-MAML's train_reproduce.yaml uses it (`adam`, lr 1e-3):
      m <- m + (1 - beta1) (g - m)                       (torch's lerp)
      v <- beta2 v + (1 - beta2) g^2
      var -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + epsilon)
    TF1's Adam adds epsilon to the raw sqrt(v), so its epsilon is in effect
    epsilon / sqrt(1 - beta2^t) here: 31.6 times torch's at the first step, and the updates
    of parameters with small gradients differ. As in torch the bias corrections are Python
    (float64) numbers, and so is the learning rate (a float32 1e-3 is 1e-3 (1 + 4.7e-8)).
    Same slots as Adam (m, v, step); coupled weight decay as torch's."""

    def __init__(self, variables, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 weight_decay=0., name='torch_adam'):
        super().__init__(variables, learning_rate, beta1, beta2, epsilon, weight_decay, name,
                         lr_dtype=tf.float64)

    def apply(self, grads):
        self.step.assign_add(1)
        t = tf.cast(self.step, tf.float64)
        step_size = self.learning_rate / (1. - self.beta1 ** t)
        correction2_sqrt = tf.sqrt(1. - self.beta2 ** t)
        for var, m, v, g in self.with_slots(grads):
            m.assign(m + (1. - self.beta1) * (g - m))
            v.assign(self.beta2 * v + (1. - self.beta2) * tf.square(g))
            denom = tf.sqrt(v) / tf.cast(correction2_sqrt, var.dtype) + self.epsilon
            var.assign_sub(tf.cast(step_size, var.dtype) * (m / denom))


class SGD(tf.Module):
    """torch.optim.SGD with momentum and coupled weight decay (PyTorch-MAML's `sgd`).

    lr_dtype: the learning rate's dtype. float32 (what checkpoints hold) equals torch's in
    float32; float64 models need tf.float64 for torch's Python-float rate (a float32 0.01
    is 0.01 (1 - 2.2e-8))."""

    def __init__(self, variables, learning_rate=1e-2, momentum=0.9, weight_decay=0.,
                 name='sgd', lr_dtype=tf.float32):
        super().__init__(name=name)
        self.variables_to_train = list(variables)
        self.learning_rate = tf.Variable(learning_rate, dtype=lr_dtype, trainable=False,
                                         name='learning_rate')
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
        with self.name_scope:
            self.buf = [tf.Variable(tf.zeros_like(v), trainable=False, name='momentum')
                        for v in self.variables_to_train]

    def apply(self, grads):
        self.step.assign_add(1)
        for var, buf, g in zip(self.variables_to_train, self.buf, grads):
            if g is None:
                continue
            g = tf.cast(g, var.dtype)
            if self.weight_decay:
                g = g + self.weight_decay * var
            if self.momentum:
                # The buffer starts at 0, so the first step stores the gradient itself, as
                # torch does (no dampening).
                g = buf.assign(self.momentum * buf + g)
            var.assign_sub(tf.cast(self.learning_rate, var.dtype) * g)


def make_optimizer(name, variables, learning_rate, momentum=0.9, weight_decay=0.):
    if name == 'adam':
        return Adam(variables, learning_rate, weight_decay=weight_decay)
    if name == 'torch_adam':
        return TorchAdam(variables, learning_rate, weight_decay=weight_decay)
    if name == 'sgd':
        return SGD(variables, learning_rate, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f'unknown optimizer {name!r}; choose one of {", ".join(OPTIMIZERS)}')


def learning_rate(schedule, base, iteration, milestones=(), decay=0.1, total=None):
    """The learning rate at `iteration` (0-based):
    constant: base;
    step: base * decay^(number of milestones <= iteration) (torch MultiStepLR);
    cosine: base * (1 + cos(pi * iteration / T)) / 2 with T the last milestone, else
      `total` (torch CosineAnnealingLR with eta_min 0, in closed form)."""
    if schedule == 'constant':
        return base
    if schedule == 'step':
        return base * decay ** sum(1 for m in milestones if iteration >= m)
    if schedule == 'cosine':
        t_max = milestones[-1] if milestones else total
        if not t_max:
            raise ValueError('the cosine schedule needs a period: --lr_milestones or '
                             '--n_train_iters')
        return base * (1. + math.cos(math.pi * iteration / t_max)) / 2.
    raise ValueError(f'unknown schedule {schedule!r}; choose one of {", ".join(SCHEDULES)}')


def clip_by_global_norm(grads, clip):
    """Rescales all gradients together so that their global L2 norm is at most `clip`
    (torch.nn.utils.clip_grad_norm_); clip <= 0 disables it."""
    if not clip or clip <= 0:
        return list(grads)
    present = [g for g in grads if g is not None]
    clipped, _ = tf.clip_by_global_norm(present, clip)
    it = iter(clipped)
    return [None if g is None else next(it) for g in grads]


def clip_by_value(grads, clip):
    """Element-wise clipping to [-clip, clip] (metadrop/l2b: 3; maml miniImageNet: 10).
    clip <= 0 disables it."""
    if not clip or clip <= 0:
        return list(grads)
    return [None if g is None else tf.clip_by_value(g, -clip, clip) for g in grads]
