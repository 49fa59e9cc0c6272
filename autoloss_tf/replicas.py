"""Run the per-replica parts of a scheduled step, with or without a strategy.

Why the scheduled step is split this way under `tf.distribute`:

- Every replica must take the same action, so the action is decided once.
  `ScheduledModel.train_step` calls `merge_call` and runs the schedule in
  cross-replica context, where the feature variables are mirrored and
  their values are the same on every replica. Under
  MultiWorkerMirroredStrategy each worker runs this cross-replica code on
  its own. The features are all-reduced and the sampling seed is
  (seed, step), so every worker computes the same action.
- An optimizer update inside `tf.cond` or `tf.switch_case` in replica
  context fails, because the optimizer's own `merge_call` cannot run
  inside a conditional there. In cross-replica context the conditional is
  legal, and each of its branches calls `call_for_each_replica`. That
  call runs the replica code (loss, gradient, `optimizer.apply`) in
  replica context again.
- `optimizer.apply` runs in replica context, as in `keras.Model.fit`
  under the same strategy. So clipnorm, global_clipnorm, weight decay and
  loss scaling act exactly as Keras applies them, and the gradient is
  all-reduced once inside the optimizer. Keras 3.15 clips each replica's
  local gradient before that all-reduce. So under a strategy clipnorm
  bounds the per-replica gradient, not the global one.
- The finite check that guards the update is reduced across replicas
  before the conditional. So a NaN on any replica's shard skips the step
  on every replica. Keras 3.15.1's `LossScaleOptimizer` takes its own
  finite check from replica 0 only, so without this check an overflow in
  another replica's shard reaches the weights. A skipped step of a
  loss-scaled action halves the loss scale, as the `LossScaleOptimizer`
  does on one device.
- Features are reduced in cross-replica context: losses are averaged over
  the replicas, and the gradient-norm feature is the norm of the summed
  gradient, as on one device. That sum is a second all-reduce of the
  chosen action's gradient, besides the optimizer's own.

Keras 3.15.1's own train function fails under a strategy in two ways, so
`make_train_function` builds one for it:

- With steps_per_execution > 1, Keras calls its per-step `tf.function`
  inside a `tf.cond` in its `tf.while_loop`. Under MirroredStrategy on 2
  logical CPUs (TensorFlow 2.21) that fails for a plain Keras model too:
  "You must feed a value for placeholder tensor
  'while/body/_10/while/cond/then/_184/while/cond/Placeholder' with dtype
  int32". The loop here calls `strategy.run` directly in the loop body.
- Under MultiWorkerMirroredStrategy Keras reduces the scalar logs with
  `strategy.reduce("MEAN", value, axis=0)`, which raises "Invalid
  reduction dimension 0 for input with 0 dimensions". The train logs of a
  scheduled step are the same on every replica, so the function here
  takes the mean over the local replicas, as Keras does under
  MirroredStrategy.

Keras's test function fails under MultiWorkerMirroredStrategy in the same
way, so `make_test_function` builds one there. It averages the test logs
over every replica, because each replica evaluates its own shard. Under
MirroredStrategy Keras's test function works, also with several steps
per execution.

XLA (`jit_compile=True`) stays rejected under a strategy: Keras compiles
the whole multi-replica step as one XLA cluster, and on 2 logical CPUs
even a plain Keras model then fails with "Trying to access resource
.../replica_1/... located in device CPU:1 from device CPU:0".

`ReplicaRunner` hides the difference: without a strategy it calls the
function and returns its result unchanged, so the single-device step runs
the same operations as before.
"""

import tensorflow as tf

# NOTE: MultiWorkerMirroredStrategy is tested with two CPU workers on one
# machine only. Parameter-server, central-storage and TPU strategies are
# rejected by `check_strategy`.
SUPPORTED_STRATEGIES = (
    tf.distribute.MirroredStrategy,
    tf.distribute.MultiWorkerMirroredStrategy,
)


class ReplicaRunner:
    """Runs replica code from cross-replica context and reduces its results.

    Args:
        strategy: the `tf.distribute.Strategy` of the step, or None for a
            step without a strategy.
    """

    def __init__(self, strategy=None):
        self.strategy = strategy

    def run(self, fn, *args):
        """Call `fn(*args)` once per replica; return per-replica results."""
        if self.strategy is None:
            return fn(*args)
        return self.strategy.extended.call_for_each_replica(fn, args=args)

    def mean(self, value):
        """Return the mean of a per-replica value over the replicas."""
        if self.strategy is None:
            return value
        return self.strategy.reduce(
            tf.distribute.ReduceOp.MEAN, value, axis=None
        )

    def sum(self, values):
        """Return the sum over the replicas of a list of per-replica values."""
        if self.strategy is None:
            return values
        return [
            self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for v in values
        ]

    def all(self, flags):
        """Return the elementwise AND of per-replica boolean flags."""
        if self.strategy is None:
            return flags
        failures = self.strategy.reduce(
            tf.distribute.ReduceOp.SUM,
            self.run(_count_false, flags),
            axis=None,
        )
        return tf.equal(failures, 0)


def _count_false(flags):
    return tf.cast(tf.logical_not(flags), "int32")


def num_replicas():
    """Return the replica count of the current replica context (1 without)."""
    context = tf.distribute.get_replica_context()
    if context is None:
        return tf.distribute.get_strategy().num_replicas_in_sync
    return context.num_replicas_in_sync


def scale_loss(loss):
    """Multiply a replica's loss by 1 / replica count, as Keras losses do.

    The optimizer sums the replicas' gradients, so the scaled losses give
    the gradient of the mean loss over the global batch.
    """
    count = num_replicas()
    if count == 1:
        return loss
    return loss * tf.cast(1.0 / count, loss.dtype)


def uses_strategy(strategy):
    """Return whether `strategy` is a real strategy, not TF's default one."""
    return tf.distribute.has_strategy() or (
        strategy is not tf.distribute.get_strategy()
    )


def is_multi_worker(strategy):
    """Return whether `strategy` is a MultiWorkerMirroredStrategy."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def check_strategy(strategy, variables, jit_compile):
    """Raise ValueError for a setup the distributed scheduled step rejects.

    Args:
        strategy: the model's `tf.distribute.Strategy`.
        variables: the model, state and optimizer variables of the step.
        jit_compile: the model's `jit_compile` setting.
    """
    if not uses_strategy(strategy):
        return
    if not isinstance(strategy, SUPPORTED_STRATEGIES):
        names = [cls.__name__ for cls in SUPPORTED_STRATEGIES]
        raise ValueError(
            "ScheduledModel supports only these tf.distribute strategies: "
            f"{names}. Received: strategy={type(strategy).__name__}. Train "
            "under MirroredStrategy or MultiWorkerMirroredStrategy, or "
            "without a strategy."
        )
    if jit_compile:
        raise ValueError(
            "ScheduledModel does not support XLA under a tf.distribute "
            "strategy, because XLA compiles all replicas into one cluster "
            "that cannot read the other devices' variables. Received: "
            f"jit_compile={jit_compile!r} with {type(strategy).__name__}. "
            "Compile with jit_compile=False."
        )
    local = [v.path for v in variables if not is_distributed(v)]
    if local:
        raise ValueError(
            "Under a tf.distribute strategy every model, schedule and "
            "optimizer variable must be created in strategy.scope(). "
            f"Received: variables outside the strategy: {local[:5]}"
            f"{' ...' if len(local) > 5 else ''}. Create, build and "
            "compile the model inside `with strategy.scope():`."
        )


def is_distributed(variable):
    """Return whether a Keras or TF variable belongs to a strategy."""
    value = getattr(variable, "value", variable)
    return isinstance(value, tf.distribute.DistributedValues)


def make_train_function(strategy, train_step, steps_per_execution,
                        run_eagerly=False):
    """Build the function `fit` calls once per `steps_per_execution` steps.

    It runs `steps_per_execution` steps of `train_step` under `strategy` in
    one `tf.function`, and stops early when the iterator is exhausted. See
    the module docstring for why Keras's own function is not used.

    Args:
        strategy: the model's `tf.distribute.Strategy`.
        train_step: the model's `train_step(data)`. Its logs must be the
            same on every replica, as the scheduled step's are, because
            only this worker's replicas are averaged.
        steps_per_execution: steps per call, at least 1.
        run_eagerly: if True, run the steps eagerly instead of in a
            `tf.function`, as `compile(run_eagerly=True)` requests.

    Returns:
        `function(iterator) -> logs`, raising StopIteration when the
        iterator has no batch left, as Keras's train function does.
    """
    return _make_step_function(strategy, train_step, steps_per_execution,
                               run_eagerly, _local_mean)


def make_test_function(strategy, test_step, steps_per_execution,
                       run_eagerly=False):
    """Build the function `evaluate` calls, as `make_train_function` does.

    The logs of a test step differ between replicas (each evaluates its own
    shard), so they are averaged over all replicas of all workers.
    """
    return _make_step_function(strategy, test_step, steps_per_execution,
                               run_eagerly, _global_mean)


def _make_step_function(strategy, step_function, steps_per_execution,
                        run_eagerly, reduce_logs):
    def one_step(data):
        logs = strategy.run(step_function, args=(data,))
        return tf.nest.map_structure(
            lambda value: reduce_logs(strategy, value), logs
        )

    def multi_step(iterator):
        logs = one_step(next(iterator))
        if steps_per_execution == 1:
            return logs

        # The first step, outside the loop, fixes the structure of the logs
        # that the loop carries. So the step function is traced twice.
        def body(step, logs, has_batch):
            batch = iterator.get_next_as_optional()
            has_batch = batch.has_value()
            logs = tf.cond(
                has_batch, lambda: one_step(batch.get_value()), lambda: logs
            )
            return step + 1, logs, has_batch

        def more_steps(step, logs, has_batch):
            del logs
            return tf.logical_and(step < steps_per_execution, has_batch)

        _, logs, _ = tf.while_loop(
            more_steps, body, [tf.constant(1), logs, tf.constant(True)]
        )
        return logs

    if not run_eagerly:
        multi_step = tf.function(multi_step, reduce_retracing=True)

    def function(iterator):
        try:
            return multi_step(iterator)
        except tf.errors.OutOfRangeError:
            raise StopIteration from None

    return function


def _global_mean(strategy, value):
    """Return the mean of a per-replica value over all replicas.

    With one replica per worker, `strategy.run` returns plain tensors, and
    `reduce` still averages them across the workers.
    """
    return strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)


def _local_mean(strategy, value):
    """Return the mean of a per-replica value over this worker's replicas."""
    if not isinstance(value, tf.distribute.DistributedValues):
        return value
    return tf.reduce_mean(
        tf.stack(strategy.experimental_local_results(value)), axis=0
    )


def local_batch(strategy, batch):
    """Return this worker's first replica shard of a distributed batch."""

    def first(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return tf.nest.map_structure(first, batch)
