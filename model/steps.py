"""The compiled steps, shared by the runner and the benchmarks.

make_train_step: the whole meta-train step (every task of the metabatch, every inner step,
the meta-gradient, clipping and the outer update) as one tf.function with a fixed input
signature, so it traces once. By default the tasks run in a tf.while_loop whose body (one
task's loss and its meta-gradient) is traced once, whatever the metabatch; `task_loop=
'unrolled'` builds every task in the graph (the plain path the tests compare it with).
make_eval_step: adaptation and query scoring for any number of tasks (tf.map_fn over
tasks; the method runs its test-time inner loop in a tf.while_loop).
"""
import tensorflow as tf

from model import optim

TASK_LOOPS = ('while', 'unrolled')


def episode_spec(n_tasks, n_support, n_query, image_shape):
    """TensorSpecs of (xs, ys, xq, yq); None leaves a dimension free."""
    return [tf.TensorSpec([n_tasks, n_support, *image_shape], tf.float32),
            tf.TensorSpec([n_tasks, n_support], tf.int32),
            tf.TensorSpec([n_tasks, n_query, *image_shape], tf.float32),
            tf.TensorSpec([n_tasks, n_query], tf.int32)]


def check_task_loop(task_loop):
    if task_loop not in TASK_LOOPS:
        raise ValueError(f'task_loop must be one of {", ".join(TASK_LOOPS)}, got {task_loop!r}')


def metabatch_gradient(task_fn, n_tasks, variables, metric_names=(), task_loop='while',
                       parallel_tasks=1):
    """The mean over tasks t = 0..n_tasks-1 of task_fn(t) -> (loss, accuracy, {name: metric})
    and its gradient with respect to `variables`.

    Returns (mean loss, accuracies [n_tasks], gradients (None where a variable does not
    affect the loss), {name: per-task metrics stacked on axis 0}); metric_names are the keys
    task_fn returns (the loop needs them before it traces the body).

    task_loop 'while': one task's loss and gradient are traced once and run in a
    tf.while_loop over the tasks, the gradients summed across iterations; the mean of the
    per-task gradients is the gradient of the mean loss, so the result is the unrolled
    one's up to float summation order. The graph no longer grows with the metabatch: a
    second-order MAML step traces and optimises a quarter of the ops at metabatch 4.
    parallel_tasks: iterations of that loop TensorFlow may run at once (tasks in flight;
    more overlap, more memory).
    task_loop 'unrolled': every task built in the graph, one tape over all of them."""
    check_task_loop(task_loop)
    metric_names = tuple(metric_names)

    def checked(out):
        metrics = out[2] if len(out) > 2 else {}
        if set(metrics) != set(metric_names):
            raise ValueError(f'the task loss returned metrics {sorted(metrics)}, but '
                             f'{sorted(metric_names)} were declared')
        return out[0], out[1], metrics

    if task_loop == 'unrolled':
        with tf.GradientTape() as tape:
            outs = [checked(task_fn(t)) for t in range(n_tasks)]
            loss = tf.reduce_mean(tf.stack([o[0] for o in outs]))
        grads = tape.gradient(loss, variables)
        return (loss, tf.stack([o[1] for o in outs]), grads,
                {k: tf.stack([o[2][k] for o in outs]) for k in metric_names})

    unconnected = []   # filled when the body is traced: variables without a gradient

    def body(t, loss_sum, grad_sums, accs, metrics):
        with tf.GradientTape() as tape:
            loss, acc, values = checked(task_fn(t))
        grads = tape.gradient(loss, variables)
        unconnected[:] = [g is None for g in grads]
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                 for g, v in zip(grads, variables)]
        return (t + 1, loss_sum + loss, [s + g for s, g in zip(grad_sums, grads)],
                accs.write(t, acc),
                [m.write(t, tf.cast(values[k], dtype)) for m, k in zip(metrics, metric_names)])

    dtype = variables[0].dtype

    def array(kind=dtype):
        return tf.TensorArray(kind, size=n_tasks)

    _, loss_sum, grad_sums, accs, metrics = tf.while_loop(
        lambda t, *_: t < n_tasks, body,
        (tf.constant(0), tf.constant(0., dtype), [tf.zeros_like(v) for v in variables],
         array(tf.float32), [array() for _ in metric_names]),
        parallel_iterations=parallel_tasks)
    grads = [None if none else s / n_tasks for s, none in zip(grad_sums, unconnected)]
    return (loss_sum / n_tasks, accs.stack(), grads,
            {k: m.stack() for k, m in zip(metric_names, metrics)})


def make_train_step(model, optimizer, clip_value, spec, skip_nonfinite=True, clip_norm=0.,
                    strategy=None, update=None, task_loop='while', parallel_tasks=1):
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
    (loss, grads) -> applied replaces the clipping, guard and optimiser step (LEO's).

    task_loop: 'while' (one traced task in a tf.while_loop, parallel_tasks of them in
    flight) or 'unrolled' (every task in the graph), as in metabatch_gradient; a method
    whose task_loss returns named metrics declares them in `task_metrics`. The step is
    traced without autograph: everything in it is plain TensorFlow (Python loops unroll,
    tf.while_loop where a loop must not)."""
    n_tasks = spec[0].shape[0]
    variables = model.outer_variables

    check_task_loop(task_loop)
    metric_names = tuple(getattr(model, 'task_metrics', ()))

    def tasks_and_gradient(xs, ys, xq, yq, n):
        if hasattr(model, 'metabatch_loss'):
            with tf.GradientTape() as tape:
                loss, acc, extras = model.metabatch_loss(xs, ys, xq, yq, training=True)
            return loss, acc, tape.gradient(loss, variables), extras
        loss, acc, grads, metrics = metabatch_gradient(
            lambda t: model.task_loss(xs[t], ys[t], xq[t], yq[t], training=True), n,
            variables, metric_names, task_loop, parallel_tasks)
        # A method may also return named per-task metrics (TAML: cent, kl): their means.
        return loss, acc, grads, {k: tf.reduce_mean(v) for k, v in metrics.items()}

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
        @tf.function(input_signature=spec, autograph=False)
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

    @tf.function(input_signature=spec, autograph=False)
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
