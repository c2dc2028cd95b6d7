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


def make_train_step(model, optimizer, clip_value, spec, skip_nonfinite=True, clip_norm=0.,
                    strategy=None, update=None):
    """(xs, ys, xq, yq) -> (mean query loss, per-task query accuracy [T], applied), plus
    a dict of the means of a method's named metrics when its task_loss returns them; updates
    the model's outer variables with the clipped meta-gradient (by value, then by global
    norm when clip_norm > 0).

    skip_nonfinite: the update runs (in a tf.cond, so nothing retraces) only when the loss
    and every meta-gradient entry are finite, checked before clipping (which would turn an
    Inf into a finite value); otherwise the weights and the optimizer state (moments, step
    count) are left untouched. `applied` says which happened.

    strategy: a tf.distribute strategy whose scope created the variables. The T tasks are
    split evenly across its replicas (replica r takes tasks r*T/R .. (r+1)*T/R - 1 of the
    same metabatch), each replica differentiates the mean query loss of its tasks, and the
    meta-gradients are averaged across replicas before the one update, so the result is the
    single-device meta-gradient of the whole metabatch.

    A model with `metabatch_loss(xs, ys, xq, yq, training)` -> (mean loss, per-task acc,
    named metric means) computes its tasks batched (LEO) instead of one by one. `update`
    (loss, grads) -> applied replaces the clipping, guard and optimiser step (LEO's)."""
    n_tasks = spec[0].shape[0]
    variables = model.outer_variables

    def tasks_and_gradient(xs, ys, xq, yq, n):
        if hasattr(model, 'metabatch_loss'):
            with tf.GradientTape() as tape:
                loss, acc, extras = model.metabatch_loss(xs, ys, xq, yq, training=True)
            return loss, acc, tape.gradient(loss, variables), extras
        with tf.GradientTape() as tape:
            outs = [model.task_loss(xs[t], ys[t], xq[t], yq[t], training=True)
                    for t in range(n)]
            loss = tf.reduce_mean(tf.stack([o[0] for o in outs]))
        grads = tape.gradient(loss, variables)
        # A method may also return named per-task metrics (TAML: cent, kl): their means.
        extras = {k: tf.reduce_mean(tf.stack([o[2][k] for o in outs]))
                  for k in (outs[0][2] if len(outs[0]) > 2 else {})}
        return loss, tf.stack([o[1] for o in outs]), grads, extras

    def apply(loss, grads):
        if update is not None:
            return update(loss, grads)

        def update_with():
            clipped = optim.clip_by_global_norm(optim.clip_by_value(grads, clip_value),
                                                clip_norm)
            optimizer.apply(clipped)
            return tf.constant(True)

        if skip_nonfinite:
            finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(x))
                                             for x in [loss, *grads] if x is not None]))
            return tf.cond(finite, update_with, lambda: tf.constant(False))
        return update_with()

    def result(loss, acc, applied, extras):
        return (loss, acc, applied, extras) if extras else (loss, acc, applied)

    if strategy is None:
        @tf.function(input_signature=spec)
        def train_step(xs, ys, xq, yq):
            loss, acc, grads, extras = tasks_and_gradient(xs, ys, xq, yq, n_tasks)
            return result(loss, acc, apply(loss, grads), extras)
        return train_step

    n_replicas = strategy.num_replicas_in_sync
    if n_tasks % n_replicas:
        raise ValueError(f'--metabatch {n_tasks} cannot be split evenly across '
                         f'{n_replicas} replicas; use a multiple of {n_replicas}')
    per_replica = n_tasks // n_replicas
    mean = tf.distribute.ReduceOp.MEAN

    def replica_fn(xs, ys, xq, yq):
        ctx = tf.distribute.get_replica_context()
        first = ctx.replica_id_in_sync_group * per_replica
        mine = [t[first:first + per_replica] for t in (xs, ys, xq, yq)]
        loss, acc, grads, extras = tasks_and_gradient(*mine, per_replica)
        present = [g for g in grads if g is not None]
        reduced = iter(ctx.all_reduce(mean, present))
        grads = [None if g is None else next(reduced) for g in grads]
        extras = {k: ctx.all_reduce(mean, v) for k, v in extras.items()}
        return ctx.all_reduce(mean, loss), ctx.all_gather(acc, axis=0), grads, extras

    def local(value):
        return strategy.experimental_local_results(value)[0]

    @tf.function(input_signature=spec)
    def train_step(xs, ys, xq, yq):
        loss, acc, grads, extras = strategy.run(replica_fn, args=(xs, ys, xq, yq))
        loss, acc = local(loss), local(acc)
        grads = [None if g is None else local(g) for g in grads]
        extras = {k: local(v) for k, v in extras.items()}
        return result(loss, acc, apply(loss, grads), extras)

    return train_step


def make_eval_step(model, spec):
    """(xs, ys, xq, yq) -> (per-task query loss [T], per-task query accuracy [T])."""
    @tf.function(input_signature=spec)
    def eval_step(xs, ys, xq, yq):
        return tf.map_fn(lambda e: model.task_loss(*e, training=False), (xs, ys, xq, yq),
                         fn_output_signature=(tf.float32, tf.float32))

    return eval_step
