"""Scheduled fits that `test_multi_worker.py` runs on every worker.

Run as a script, it trains under MultiWorkerMirroredStrategy with the
cluster in TF_CONFIG and writes what it observed to the JSON file named by
its only argument. The test also imports it and calls `fit_learned(1)`
for the single-device reference. Every fit uses the same 12-sample data set
and global batches of 4, so each of the two workers trains on shards of 2
samples.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from autoloss_tf import CyclicSchedule  # noqa: E402
from autoloss_tf import LearnedSchedule  # noqa: E402
from autoloss_tf import LinearController  # noqa: E402
from autoloss_tf import ScheduledModel  # noqa: E402
from autoloss_tf import feature_names  # noqa: E402
from autoloss_tf.training import ReinforceUpdater  # noqa: E402

ACTIONS = ("first", "second")
GLOBAL_BATCH = 4
NUM_SAMPLES = 12
EPOCHS = 3
CLIPNORM = 0.05
CLIP_LEARNING_RATE = 0.1
INITIAL_LOSS_SCALE = 2.0**8
# Sample 2 lands in the second shard of the first global batch.
OVERFLOW_INDEX = (2, 0)


class TwoLayerNet(ScheduledModel):
    """Dense(2) -> Dense(1), one action per layer, both on the MSE."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Dense(
            2, kernel_initializer=keras.initializers.Constant(0.5)
        )
        self.second = keras.layers.Dense(1, kernel_initializer="ones")
        for name in ACTIONS:
            self.add_action(name, self.mse_loss,
                            variables=[getattr(self, name)])

    def call(self, x):
        return self.second(self.first(x))

    def mse_loss(self, data):
        x, y = data[0], data[1]
        prediction = keras.ops.cast(self(x), "float32")
        return keras.ops.mean(keras.ops.square(prediction - y))


class Recorder(keras.callbacks.Callback):
    """Records the action log and a snapshot of values after every batch."""

    def __init__(self, read):
        super().__init__()
        self.read = read
        self.actions = []
        self.snapshots = []

    def on_train_batch_end(self, batch, logs=None):
        self.actions.append(int(logs["action"]))
        self.snapshots.append(self.read())


def make_data():
    """Return the regression set: x [12, 3] and y [12, 1], float32."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_SAMPLES, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32") + 0.3).astype(
        "float32"
    )
    return x, y


def learned_schedule(record_steps=None):
    """Return a seeded linear policy whose logits depend on the features."""
    names = feature_names(ACTIONS)
    controller = LinearController(
        num_features=len(names), num_actions=len(ACTIONS)
    )
    kernel = np.linspace(-1.0, 1.0, len(names) * len(ACTIONS))
    controller.output_layer.kernel.assign(
        kernel.reshape(len(names), len(ACTIONS)).astype("float32")
    )
    return LearnedSchedule(controller, seed=5, record_steps=record_steps)


def local_value(variable):
    """Return the value of a variable on this worker's first replica."""
    value = getattr(variable, "value", variable)
    components = getattr(value, "values", None)
    if components is not None:
        value = components[0]
    return np.asarray(value.numpy()).tolist()


def model_values(model):
    """Return [path, local value] of every model and optimizer variable.

    A list, not a dict, because the paths depend on how many layers the
    process created before, while the order does not.
    """
    variables = list(model.variables) + [
        v for optimizer in model.action_optimizers for v in optimizer.variables
    ]
    return [[v.path, local_value(v)] for v in variables]


def fit_learned(steps_per_execution):
    """Fit with a learned schedule and Adam, then update the controller.

    Returns:
        A dict: `actions` logged per execution, `values` of every
        variable, `controller` weights after one REINFORCE update whose
        reward is the final training loss, and the `evaluation` logs of
        `evaluate` (those of the last batch).
    """
    x, y = make_data()
    model = TwoLayerNet()
    model(x[:1])
    schedule = learned_schedule(record_steps=EPOCHS * 3)
    model.compile(
        optimizer=keras.optimizers.Adam(0.05), schedule=schedule,
        steps_per_execution=steps_per_execution, jit_compile=False,
    )
    recorder = Recorder(lambda: None)
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False,
              verbose=0, callbacks=[recorder])

    updater = ReinforceUpdater(schedule.controller, learning_rate=0.01)
    features, actions, active = schedule.buffer.numpy()
    reward = -float(model.mse_loss((x, y)))
    # A baseline of 0 makes the advantage the reward itself.
    updater.update(features[:, 0], actions[:, 0],
                   active[:, 0].astype("float32"), reward, baseline=0.0)
    evaluation = model.evaluate(x, y, batch_size=GLOBAL_BATCH, verbose=0,
                                return_dict=True)
    return {
        "actions": recorder.actions,
        "values": model_values(model),
        "controller": [local_value(v) for v in schedule.controller.weights],
        "evaluation": {k: float(v) for k, v in evaluation.items()},
    }


def fit_clipped():
    """Fit with SGD and clipnorm, and return the weights after each step."""
    x, y = make_data()
    model = TwoLayerNet()
    model(x[:1])
    model.compile(
        optimizer=keras.optimizers.SGD(CLIP_LEARNING_RATE, clipnorm=CLIPNORM),
        schedule=CyclicSchedule(list(ACTIONS)), jit_compile=False,
    )
    initial = [local_value(v) for v in model.trainable_variables]
    recorder = Recorder(
        lambda: [local_value(v) for v in model.trainable_variables]
    )
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False,
              verbose=0, callbacks=[recorder])
    return {
        "initial": initial,
        "snapshots": recorder.snapshots,
        "actions": recorder.actions,
        # The normalized norm of each action's latest summed, unclipped
        # gradient, and the parameter count it is normalized by.
        "grad_norm_features": local_value(model.feature_tracker.grad_norms),
        "num_parameters": [
            int(sum(np.prod(v.shape) for v in getattr(model, name).weights))
            for name in ACTIONS
        ],
    }


def fit_mixed_overflow():
    """Fit in mixed precision with one float16 overflow in one shard."""
    x, y = make_data()
    x[OVERFLOW_INDEX] = 1e30
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = TwoLayerNet()
        model(x[:1])
        model.compile(
            optimizer=keras.optimizers.LossScaleOptimizer(
                keras.optimizers.Adam(0.05),
                initial_scale=INITIAL_LOSS_SCALE,
            ),
            schedule=CyclicSchedule(list(ACTIONS)), jit_compile=False,
        )
        initial = [local_value(v) for v in model.trainable_variables]
        recorder = Recorder(
            lambda: [local_value(v) for v in model.trainable_variables]
        )
        model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False,
                  verbose=0, callbacks=[recorder])
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return {
        "initial": initial,
        "snapshots": recorder.snapshots,
        "actions": recorder.actions,
        "skipped_steps": int(model.training_state.skipped.numpy()),
        "loss_scales": [
            local_value(o.dynamic_scale) for o in model.action_optimizers
        ],
        "values": model_values(model),
    }


def local_first_batch_overflows(strategy):
    """Return whether this worker's shard of batch 1 contains the overflow.

    It shards the data as `experimental_distribute_dataset` does for
    `fit`, which Keras uses for array inputs under a strategy.
    """
    x, y = make_data()
    x[OVERFLOW_INDEX] = 1e30
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    local_x = strategy.experimental_local_results(batch[0])[0]
    return bool(np.any(local_x.numpy() > 1e29))


def run_fits(strategy):
    """Run every fit under `strategy.scope()` and return a JSON-ready dict."""
    results = {}
    fits = {
        "learned": lambda: fit_learned(1),
        "learned_two_steps_per_execution": lambda: fit_learned(2),
        "clipped": fit_clipped,
        "mixed_overflow": fit_mixed_overflow,
    }
    for name, fit in fits.items():
        with strategy.scope():
            results[name] = fit()
    results["overflow_in_local_shard"] = local_first_batch_overflows(strategy)
    results["num_replicas"] = strategy.num_replicas_in_sync
    return results


def main(argv):
    if len(argv) != 1:
        raise SystemExit(
            "usage: python multi_worker_fit.py OUTPUT_JSON (with TF_CONFIG "
            "set to this worker's cluster and task)"
        )
    if "TF_CONFIG" not in os.environ:
        raise SystemExit(
            "TF_CONFIG is not set: this script trains as one worker of a "
            "MultiWorkerMirroredStrategy cluster."
        )
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    results = run_fits(strategy)
    with open(argv[0], "w") as output:
        json.dump(results, output)


if __name__ == "__main__":
    main(sys.argv[1:])
