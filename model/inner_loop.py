"""The one gradient-descent inner loop that every method of the project calls.

theta_{s+1} = theta_s - step_size * d loss(theta_s) / d theta_s, for s = 0..n_steps-1.

- `step_size` is a scalar (MAML's inner_lr) or a mapping name -> tensor broadcastable to
  that parameter (Meta-SGD's learned per-parameter alphas).
- `layer_scale`, optional mapping name -> scalar tensor, multiplies each parameter's step
  (TAML's exp(gamma) per layer).
- second order by default: the gradients stay on the outer tape, so the meta-gradient
  differentiates through them; `first_order=True` stops them (FOMAML).
- `frozen`: names of parameters left out of the adaptation (they keep their initial value;
  they can still be meta-learned). PyTorch-MAML's `frozen` list.
- `weight_decay` and heavy-ball `momentum` as PyTorch-MAML's inner loop:
  g <- g + wd * theta; buf <- g + momentum * buf (buf starts at 0, no dampening);
  theta <- theta - lr * buf. With first_order only the loss gradient is stopped.
- `state`: an optional nest of tensors carried from step to step; then
  loss_fn(params, state) returns (loss, new state) (per-episode BN running statistics).
- `recompute=True` (gradient checkpointing, PyTorch-MAML's --efficient) checkpoints each
  step: the forward keeps only each step's parameters, and the step's activations are
  recomputed when the meta-gradient needs them, so memory no longer grows with the
  activations of every step. The meta-gradient is the same.
- `unroll=False` runs the steps in a tf.while_loop, for the long test-time loops where no
  meta-gradient is needed (tracing stays constant in n_steps).
"""
import collections

import tensorflow as tf


def _as_tensors(params):
    return collections.OrderedDict(
        (k, tf.convert_to_tensor(v) if isinstance(v, tf.Variable) else v) for k, v in params.items())


class _Step:
    """One inner step over flat lists (so that it can be recomputed and looped)."""

    def __init__(self, loss_fn, keys, step_size, first_order, layer_scale, frozen, momentum,
                 weight_decay, with_state):
        unknown = sorted(set(frozen) - set(keys))
        if unknown:
            raise ValueError(f'frozen parameters {unknown} are not among {keys}')
        self.loss_fn = loss_fn
        self.keys = list(keys)
        self.adapted = [k for k in self.keys if k not in frozen]
        self.step_size = step_size
        self.first_order = first_order
        self.layer_scale = layer_scale
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.with_state = with_state

    def __call__(self, values, velocity, state):
        """values: aligned with keys; velocity: aligned with `adapted` ([] without
        momentum). Returns (new values, new velocity, loss, new state)."""
        fast = collections.OrderedDict(zip(self.keys, values))
        watched = [fast[k] for k in self.adapted]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for v in watched:
                tape.watch(v)
            if self.with_state:
                loss, state = self.loss_fn(fast, state)
            else:
                loss = self.loss_fn(fast)
        grads = tape.gradient(loss, watched, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        new = collections.OrderedDict(fast)
        new_velocity = []
        for i, (k, v, g) in enumerate(zip(self.adapted, watched, grads)):
            if self.first_order:
                g = tf.stop_gradient(g)
            if self.weight_decay:
                g = g + self.weight_decay * v
            if self.momentum:
                g = g + self.momentum * velocity[i]
                new_velocity.append(g)
            lr = self.step_size[k] if isinstance(self.step_size, collections.abc.Mapping) \
                else self.step_size
            step = lr * g
            if self.layer_scale is not None and k in self.layer_scale:
                step = self.layer_scale[k] * step
            new[k] = v - step
        return [new[k] for k in self.keys], new_velocity, loss, state


def gradient_step(loss_fn, params, step_size, first_order=False, layer_scale=None, frozen=()):
    """One step without momentum or state. Returns (new_params, loss before the step)."""
    step = _Step(loss_fn, list(params), step_size, first_order, layer_scale, frozen, 0., 0.,
                 False)
    values, _, loss, _ = step([params[k] for k in step.keys], [], None)
    return collections.OrderedDict(zip(step.keys, values)), loss


def gradient_descent(loss_fn, params, n_steps, step_size, first_order=False,
                     layer_scale=None, unroll=True, frozen=(), momentum=0., weight_decay=0.,
                     state=None, recompute=False):
    """Runs `n_steps` inner steps from `params` (variables or tensors).

    loss_fn(params) -> scalar loss (or, with `state`, loss_fn(params, state) -> (loss,
    state)), where params is a mapping like `params`.
    Returns (adapted params as an OrderedDict of tensors, losses [n_steps] before each
    step), plus the final state when `state` is given.
    """
    with_state = state is not None
    step = _Step(loss_fn, list(params), step_size, first_order, layer_scale, frozen, momentum,
                 weight_decay, with_state)
    keys = step.keys
    start = _as_tensors(params)
    values = [start[k] for k in keys]
    velocity = [tf.zeros_like(start[k]) for k in step.adapted] if momentum else []

    def finish(values, losses, state):
        out = (collections.OrderedDict(zip(keys, values)), losses)
        return out + (state,) if with_state else out

    if n_steps == 0:
        return finish(values, tf.zeros([0]), state)

    if unroll:
        run = _recomputed(step, len(keys), len(velocity), state) if recompute else step
        losses = []
        for _ in range(n_steps):
            values, velocity, loss, state = run(values, velocity, state)
            losses.append(loss)
        return finish(values, tf.stack(losses), state)

    def body(i, values, velocity, state, losses):
        values, velocity, loss, state = step(values, velocity, state)
        return i + 1, values, velocity, state, losses.write(i, loss)

    step.first_order = True  # no meta-gradient through a while_loop
    losses = tf.TensorArray(values[0].dtype, size=n_steps)
    loop_state = state if with_state else ()
    _, values, _, loop_state, losses = tf.while_loop(
        lambda i, *_: i < n_steps, body,
        (tf.constant(0), values, velocity, loop_state, losses))
    return finish(values, losses.stack(), loop_state if with_state else None)


def checkpointed(fn):
    """fn(*tensors) -> list of tensors, with gradient checkpointing: the forward pass
    keeps none of fn's intermediate tensors for the backward pass; the backward pass runs
    fn again on the same inputs (after the incoming gradients exist, so the two runs are
    not merged) and differentiates that run, second derivatives included.

    tf.recompute_grad is not usable here: it runs the forward under stop_recording, which
    also silences the tape that computes the inner-loop gradient inside fn."""
    @tf.custom_gradient
    def run(*inputs):
        outputs = fn(*inputs)

        def grad(*upstream, variables=None):
            variables = list(variables or [])
            with tf.control_dependencies([u for u in upstream if u is not None]):
                again = [tf.identity(x) for x in inputs]
            with tf.GradientTape() as tape:
                tape.watch(again)
                tape.watch(variables)
                recomputed = fn(*again)
            grads = tape.gradient(recomputed, again + variables, output_gradients=list(upstream),
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return grads[:len(again)], grads[len(again):]

        return outputs, grad

    return run


def _recomputed(step, n_values, n_velocity, state_structure):
    """`step` as a function of flat tensors whose activations are recomputed in the
    backward pass instead of kept (see `checkpointed`)."""
    n_state = len(tf.nest.flatten(state_structure)) if state_structure is not None else 0

    def flat_step(*flat):
        values = list(flat[:n_values])
        velocity = list(flat[n_values:n_values + n_velocity])
        state = (tf.nest.pack_sequence_as(state_structure, list(flat[n_values + n_velocity:]))
                 if n_state else None)
        values, velocity, loss, state = step(values, velocity, state)
        # Identity so that an unchanged (frozen) input is still a distinct output.
        return [tf.identity(t) for t in
                [*values, *velocity, loss, *(tf.nest.flatten(state) if n_state else [])]]

    recomputed = checkpointed(flat_step)

    def run(values, velocity, state):
        flat = [*values, *velocity, *(tf.nest.flatten(state) if n_state else [])]
        out = recomputed(*flat)
        values = list(out[:n_values])
        velocity = list(out[n_values:n_values + n_velocity])
        loss = out[n_values + n_velocity]
        state = (tf.nest.pack_sequence_as(state_structure, list(out[n_values + n_velocity + 1:]))
                 if n_state else None)
        return values, velocity, loss, state

    return run
