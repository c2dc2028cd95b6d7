"""The compiled steps, shared by the runner and the benchmarks.

make_train_step: the whole meta-train step (every task of the metabatch, every inner step,
the meta-gradient, clipping and the outer update) as one tf.function with a fixed input
signature, so it traces once. Tasks are unrolled in Python inside it.
make_eval_step: adaptation and query scoring for any number of tasks (tf.map_fn over
tasks; the method runs its test-time inner loop in a tf.while_loop).
"""
import tensorflow as tf

from model import optim


def episode_spec(n_tasks, n_support, n_query, image_shape):
    """TensorSpecs of (xs, ys, xq, yq); None leaves a dimension free."""
    return [tf.TensorSpec([n_tasks, n_support, *image_shape], tf.float32),
            tf.TensorSpec([n_tasks, n_support], tf.int32),
            tf.TensorSpec([n_tasks, n_query, *image_shape], tf.float32),
            tf.TensorSpec([n_tasks, n_query], tf.int32)]


def make_train_step(model, optimizer, clip_value, spec, skip_nonfinite=True):
    """(xs, ys, xq, yq) -> (mean query loss, per-task query accuracy [T], applied); updates
    the model's outer variables with the clipped meta-gradient.

    skip_nonfinite: the update runs (in a tf.cond, so nothing retraces) only when the loss
    and every meta-gradient entry are finite, checked before clipping (which would turn an
    Inf into a finite value); otherwise the weights and the optimizer state (moments, step
    count) are left untouched. `applied` says which happened."""
    n_tasks = spec[0].shape[0]
    variables = model.outer_variables

    @tf.function(input_signature=spec)
    def train_step(xs, ys, xq, yq):
        with tf.GradientTape() as tape:
            outs = [model.task_loss(xs[t], ys[t], xq[t], yq[t], training=True)
                    for t in range(n_tasks)]
            loss = tf.reduce_mean(tf.stack([o[0] for o in outs]))
        grads = tape.gradient(loss, variables)

        def update():
            optimizer.apply(optim.clip_by_value(grads, clip_value))
            return tf.constant(True)

        if skip_nonfinite:
            finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(x))
                                             for x in [loss, *grads] if x is not None]))
            applied = tf.cond(finite, update, lambda: tf.constant(False))
        else:
            applied = update()
        return loss, tf.stack([o[1] for o in outs]), applied

    return train_step


def make_eval_step(model, spec):
    """(xs, ys, xq, yq) -> (per-task query loss [T], per-task query accuracy [T])."""
    @tf.function(input_signature=spec)
    def eval_step(xs, ys, xq, yq):
        return tf.map_fn(lambda e: model.task_loss(*e, training=False), (xs, ys, xq, yq),
                         fn_output_signature=(tf.float32, tf.float32))

    return eval_step
