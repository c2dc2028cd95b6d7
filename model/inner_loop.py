"""The one gradient-descent inner loop that every method of the project calls.

theta_{s+1} = theta_s - step_size * d loss(theta_s) / d theta_s, for s = 0..n_steps-1.

- `step_size` is a scalar (MAML's inner_lr) or a mapping name -> tensor broadcastable to
  that parameter (Meta-SGD's learned per-parameter alphas).
- `layer_scale`, optional mapping name -> scalar tensor, multiplies each parameter's step
  (TAML's exp(gamma) per layer).
- second order by default: the gradients stay on the outer tape, so the meta-gradient
  differentiates through them; `first_order=True` stops them (FOMAML).
- `unroll=False` runs the steps in a tf.while_loop, for the long test-time loops where no
  meta-gradient is needed (tracing stays constant in n_steps).
"""
import collections

import tensorflow as tf


def _as_tensors(params):
    return collections.OrderedDict(
        (k, tf.convert_to_tensor(v) if isinstance(v, tf.Variable) else v) for k, v in params.items())


def gradient_step(loss_fn, params, step_size, first_order=False, layer_scale=None):
    """One step. Returns (new_params, loss before the step)."""
    keys = list(params.keys())
    values = [params[k] for k in keys]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        for v in values:
            tape.watch(v)
        loss = loss_fn(params)
    grads = tape.gradient(loss, values, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    new = collections.OrderedDict()
    for k, v, g in zip(keys, values, grads):
        if first_order:
            g = tf.stop_gradient(g)
        lr = step_size[k] if isinstance(step_size, collections.abc.Mapping) else step_size
        step = lr * g
        if layer_scale is not None and k in layer_scale:
            step = layer_scale[k] * step
        new[k] = v - step
    return new, loss


def gradient_descent(loss_fn, params, n_steps, step_size, first_order=False,
                     layer_scale=None, unroll=True):
    """Runs `n_steps` inner steps from `params` (variables or tensors).

    loss_fn(params) -> scalar loss, where params is a mapping like `params`.
    Returns (adapted params as an OrderedDict of tensors, losses [n_steps] before each step).
    """
    if unroll or n_steps == 0:
        fast = collections.OrderedDict(params)
        losses = []
        for _ in range(n_steps):
            fast, loss = gradient_step(loss_fn, fast, step_size, first_order, layer_scale)
            losses.append(loss)
        fast = _as_tensors(fast)
        return fast, (tf.stack(losses) if losses else tf.zeros([0]))

    keys = list(params.keys())
    start = _as_tensors(params)

    def body(i, values, losses):
        fast = collections.OrderedDict(zip(keys, values))
        fast, loss = gradient_step(loss_fn, fast, step_size, True, layer_scale)
        return i + 1, [fast[k] for k in keys], losses.write(i, loss)

    losses = tf.TensorArray(tf.convert_to_tensor(start[keys[0]]).dtype, size=n_steps)
    _, values, losses = tf.while_loop(
        lambda i, *_: i < n_steps, body, (tf.constant(0), [start[k] for k in keys], losses))
    return collections.OrderedDict(zip(keys, values)), losses.stack()
