"""Run the per-replica parts of a scheduled step, with or without a strategy.

Why the scheduled step is split this way under `tf.distribute`:

- Every replica must take the same action, so the action is decided once.
  `ScheduledModel.train_step` calls `merge_call` and runs the schedule in
  cross-replica context, where the feature variables are mirrored and
  their values are the same on every replica.
- An optimizer update inside `tf.cond` or `tf.switch_case` in replica
  context fails, because the optimizer's own `merge_call` cannot run
  inside a conditional there. In cross-replica context the conditional is
  legal, and each of its branches calls `call_for_each_replica`. That
  call runs the replica code (loss, gradient, `optimizer.apply`) in
  replica context again.
- `optimizer.apply` runs in replica context, as in `keras.Model.fit`
  under the same strategy. So clipnorm, global_clipnorm and weight decay
  act exactly as Keras applies them, and the gradient is all-reduced once
  inside the optimizer. Keras 3.15 clips each replica's local gradient
  before that all-reduce. So under a strategy clipnorm bounds the
  per-replica gradient, not the global one.
- The finite check that guards the update is reduced across replicas
  before the conditional. So a NaN on any replica's shard skips the step
  on every replica.
- Features are reduced in cross-replica context: losses are averaged over
  the replicas, and the gradient-norm feature is the norm of the summed
  gradient, as on one device. That sum is a second all-reduce of the
  chosen action's gradient, besides the optimizer's own.

`ReplicaRunner` hides the difference: without a strategy it calls the
function and returns its result unchanged, so the single-device step runs
the same operations as before.
"""

import tensorflow as tf

# NOTE: only MirroredStrategy is tested. Multi-worker, parameter-server
# and TPU strategies are rejected by `check_strategy`.
SUPPORTED_STRATEGIES = (tf.distribute.MirroredStrategy,)


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


def check_strategy(strategy, variables, jit_compile, steps_per_execution):
    """Raise ValueError for a setup the distributed scheduled step rejects.

    Args:
        strategy: the model's `tf.distribute.Strategy`.
        variables: the model, state and optimizer variables of the step.
        jit_compile: the model's `jit_compile` setting.
        steps_per_execution: the model's `steps_per_execution` setting.
    """
    default = (
        not tf.distribute.has_strategy()
        and strategy is tf.distribute.get_strategy()
    )
    if default:
        return
    if not isinstance(strategy, SUPPORTED_STRATEGIES):
        names = [cls.__name__ for cls in SUPPORTED_STRATEGIES]
        raise ValueError(
            "ScheduledModel supports only these tf.distribute strategies: "
            f"{names}. Received: strategy={type(strategy).__name__}. Train "
            "under MirroredStrategy, or without a strategy."
        )
    if jit_compile:
        raise ValueError(
            "ScheduledModel does not support XLA under a tf.distribute "
            f"strategy. Received: jit_compile={jit_compile!r} with "
            f"{type(strategy).__name__}. Compile with jit_compile=False."
        )
    if steps_per_execution != 1:
        # The cross-replica dispatch fails to run inside the while loop
        # that Keras builds for several steps per execution.
        raise ValueError(
            "ScheduledModel runs one step per execution under a "
            "tf.distribute strategy. Received: "
            f"steps_per_execution={steps_per_execution}. Compile with "
            "steps_per_execution=1."
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
