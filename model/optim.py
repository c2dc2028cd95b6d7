"""Outer-loop optimisers, written to match the originals' TF1 optimisers exactly.

tf.compat.v1.train.AdamOptimizer (used by cbfinn/maml, metadrop, l2b, LEO, MTL):
  lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
  m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
  var -= lr_t * m / (sqrt(v) + epsilon)            (epsilon 1e-8, outside the correction)
Keras' Adam differs (epsilon 1e-7 and inside the bias correction), hence this module.
Slots are created up front for a fixed variable list, so the whole state is a plain
tf.Module that tf.train.Checkpoint saves and restores.
"""
import tensorflow as tf


class Adam(tf.Module):
    def __init__(self, variables, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 name='adam'):
        super().__init__(name=name)
        self.variables_to_train = list(variables)
        self.learning_rate = tf.Variable(learning_rate, dtype=tf.float32, trainable=False,
                                         name='learning_rate')
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
        with self.name_scope:
            self.m = [tf.Variable(tf.zeros_like(v), trainable=False, name='m')
                      for v in self.variables_to_train]
            self.v = [tf.Variable(tf.zeros_like(v), trainable=False, name='v')
                      for v in self.variables_to_train]

    def apply(self, grads):
        """One update with `grads`, aligned with the variable list (None = no gradient)."""
        self.step.assign_add(1)
        t = tf.cast(self.step, tf.float32)
        lr_t = self.learning_rate * tf.sqrt(1. - self.beta2 ** t) / (1. - self.beta1 ** t)
        for var, m, v, g in zip(self.variables_to_train, self.m, self.v, grads):
            if g is None:
                continue
            g = tf.cast(g, var.dtype)
            m.assign(self.beta1 * m + (1. - self.beta1) * g)
            v.assign(self.beta2 * v + (1. - self.beta2) * tf.square(g))
            var.assign_sub(tf.cast(lr_t, var.dtype) * m / (tf.sqrt(v) + self.epsilon))


def clip_by_value(grads, clip):
    """Element-wise clipping to [-clip, clip] (metadrop/l2b: 3; maml miniImageNet: 10).
    clip <= 0 disables it."""
    if not clip or clip <= 0:
        return list(grads)
    return [None if g is None else tf.clip_by_value(g, -clip, clip) for g in grads]
