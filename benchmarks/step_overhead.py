"""Measure the step time of a `ScheduledModel` against a plain Keras step.

Task: binary classification with an MLP, input dim 32 -> Dense(32, ReLU)
-> Dense(1) logit, Adam 1e-3, batches of synthetic data from a repeated
`tf.data` pipeline.

- plain: a `keras.Model` subclass whose custom `train_step` computes the
  binary cross-entropy under a `GradientTape` and applies Adam.
- scheduled: a `ScheduledModel` with the same layers and two actions,
  "task" (the same binary cross-entropy on every variable) and "l1"
  (0.02 * sum |w| over every variable), picked each step by a
  `LearnedSchedule` around an `MLPController`. Both actions update every
  variable, so they share the compiled Adam.

The controller's output layer starts at zero and `fit` does not train
it, so the schedule picks "l1" on about half of the steps. An "l1" step
skips the forward and backward pass over the batch, so the ratio is
lower than the overhead of a "task" step alone.

Both models run in one process, in alternating rounds. Each round times
one `fit(verbose=0)` call of `--steps` steps per model after a warm-up
call, and alternates which model goes first. The reported step time of a
model is the median over rounds, and the ratio is scheduled / plain of
the medians. The same is reported for CPU time, which other jobs on the
machine disturb less than wall time. Every `--steps-per-execution` value
gets a fresh pair of models. With 1, every step includes the Python work
that `fit` does per call. With a large value, the compiled step itself
dominates.

Usage:

    python benchmarks/step_overhead.py --rounds 9 --steps 2000

The JSON record goes to `benchmarks/results/step_overhead.json` unless
`--json` names another path.
"""

import argparse
import json
import os
import pathlib
import platform
import shlex
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from autoloss_tf import LearnedSchedule  # noqa: E402
from autoloss_tf import MLPController  # noqa: E402
from autoloss_tf import ScheduledModel  # noqa: E402
from autoloss_tf import feature_names  # noqa: E402

INPUT_DIM = 32
HIDDEN_UNITS = 32
L1_WEIGHT = 0.02
LEARNING_RATE = 1e-3
NUM_SAMPLES = 4096
ACTION_NAMES = ("task", "l1")
PROGRAM = "benchmarks/step_overhead.py"
DEFAULT_JSON = pathlib.Path(__file__).resolve().parent / "results" / (
    "step_overhead.json"
)


def binary_cross_entropy(logits, labels):
    """Return the mean sigmoid cross-entropy of logits [batch] and labels."""
    return tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    )


def make_layers():
    """Return a new (hidden, output) layer pair of the benchmark MLP."""
    hidden = keras.layers.Dense(HIDDEN_UNITS, activation="relu", name="hidden")
    output = keras.layers.Dense(1, name="logit")
    return hidden, output


class PlainClassifier(keras.Model):
    """The MLP with a hand-written train step: BCE, one tape, Adam."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.output_layer = make_layers()

    def call(self, x):
        return self.output_layer(self.hidden(x))[:, 0]

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = binary_cross_entropy(self(x, training=True), y)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return {"loss": loss}


class ScheduledClassifier(ScheduledModel):
    """The same MLP as a `ScheduledModel` with a "task" and an "l1" action."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.output_layer = make_layers()
        self.add_action("task", self.task_loss)
        self.add_action("l1", self.l1_loss)

    def call(self, x):
        return self.output_layer(self.hidden(x))[:, 0]

    def task_loss(self, data):
        x, y = data
        return binary_cross_entropy(self(x, training=True), y)

    def l1_loss(self, data):
        del data
        # Only the layers' variables, because `trainable_variables` also
        # contains the controller's weights.
        weights = (
            self.hidden.trainable_variables
            + self.output_layer.trainable_variables
        )
        return L1_WEIGHT * tf.add_n([tf.reduce_sum(tf.abs(w)) for w in weights])


def make_dataset(batch_size, seed=0):
    """Create a repeated dataset of (x [batch, 32], y [batch]) batches.

    The labels come from a fixed random linear teacher with 10% of them
    flipped, so the task does not become trivially easy during a run.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_SAMPLES, INPUT_DIM)).astype("float32")
    teacher = rng.normal(size=(INPUT_DIM,)).astype("float32")
    y = (x @ teacher > 0).astype("float32")
    flip = rng.random(NUM_SAMPLES) < 0.1
    y[flip] = 1.0 - y[flip]
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    dataset = dataset.batch(batch_size, drop_remainder=True).repeat()
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_models(steps_per_execution, seed=0):
    """Build and compile the plain and the scheduled model.

    Both start from the same weights. Returns the pair (plain, scheduled).
    """
    keras.utils.set_random_seed(seed)
    example = tf.zeros([1, INPUT_DIM])
    plain = PlainClassifier()
    plain(example)
    plain.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        steps_per_execution=steps_per_execution,
    )
    scheduled = ScheduledClassifier()
    scheduled(example)
    scheduled.set_weights(plain.get_weights())
    controller = MLPController(
        num_features=len(feature_names(ACTION_NAMES)),
        num_actions=len(ACTION_NAMES), seed=seed,
    )
    scheduled.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        schedule=LearnedSchedule(controller, seed=seed),
        steps_per_execution=steps_per_execution,
    )
    return plain, scheduled


def time_fit(model, dataset, steps):
    """Run `fit` for `steps` steps and time it.

    The CPU time is `time.process_time`, the user and system time of every
    thread of this process, so it leaves out the time this process waits
    while other jobs hold the cores. It also counts the busy-waiting of
    TensorFlow's thread pools, so it varies less with `--threads 1`.

    Returns:
        The pair (wall time, CPU time) per step, in milliseconds.
    """
    wall_start = time.perf_counter()
    cpu_start = time.process_time()
    model.fit(
        dataset, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0
    )
    cpu_ms = (time.process_time() - cpu_start) * 1000.0 / steps
    wall_ms = (time.perf_counter() - wall_start) * 1000.0 / steps
    return wall_ms, cpu_ms


def measure(steps_per_execution, steps, rounds, batch_size):
    """Time both models in alternating rounds and return one result row.

    `steps` is rounded up to a multiple of `steps_per_execution`, so every
    compiled call runs the same number of steps.
    """
    executions = -(-steps // steps_per_execution)
    steps = executions * steps_per_execution
    dataset = make_dataset(batch_size)
    plain, scheduled = make_models(steps_per_execution)
    models = {"plain": plain, "scheduled": scheduled}
    wall = {"plain": [], "scheduled": []}
    cpu = {"plain": [], "scheduled": []}
    # Warm-up: trace the train functions and start the input pipeline. One
    # call is enough, because later `fit` calls do not retrace.
    for model in models.values():
        model.fit(
            dataset, steps_per_epoch=2 * steps_per_execution, epochs=1,
            shuffle=False, verbose=0,
        )
    for round_index in range(rounds):
        order = ["plain", "scheduled"]
        if round_index % 2:
            order.reverse()
        for name in order:
            wall_ms, cpu_ms = time_fit(models[name], dataset, steps)
            wall[name].append(wall_ms)
            cpu[name].append(cpu_ms)
    return _summarize(steps_per_execution, steps, wall, cpu)


def _summarize(steps_per_execution, steps, wall, cpu):
    median = {name: statistics.median(times) for name, times in wall.items()}
    cpu_median = {
        name: statistics.median(times) for name, times in cpu.items()
    }
    return {
        "model": "mlp",
        "strategy": "none",
        "steps_per_execution": steps_per_execution,
        "plain_ms": median["plain"],
        "scheduled_ms": median["scheduled"],
        "ratio": median["scheduled"] / median["plain"],
        "plain_cpu_ms": cpu_median["plain"],
        "scheduled_cpu_ms": cpu_median["scheduled"],
        "cpu_ratio": cpu_median["scheduled"] / cpu_median["plain"],
        "steps": steps,
        "plain_round_ms": wall["plain"],
        "scheduled_round_ms": wall["scheduled"],
    }


def describe_machine():
    """Return the platform, processor and CPU count as one string."""
    processor = platform.processor() or platform.machine()
    return f"{platform.platform()}, {processor}, {os.cpu_count()} CPUs"


def format_table(rows):
    """Return the rows as a fixed-width text table."""
    lines = [
        f"{'model':<6} {'strategy':<9} {'steps_per_execution':>19} "
        f"{'plain_ms':>9} {'scheduled_ms':>12} {'ratio':>6} "
        f"{'plain_cpu_ms':>12} {'scheduled_cpu_ms':>16} {'cpu_ratio':>9}"
    ]
    for row in rows:
        lines.append(
            f"{row['model']:<6} {row['strategy']:<9} "
            f"{row['steps_per_execution']:>19} {row['plain_ms']:>9.3f} "
            f"{row['scheduled_ms']:>12.3f} {row['ratio']:>6.2f} "
            f"{row['plain_cpu_ms']:>12.3f} {row['scheduled_cpu_ms']:>16.3f} "
            f"{row['cpu_ratio']:>9.2f}"
        )
    return "\n".join(lines)


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer, received {text!r}"
        )
    return value


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"must be 0 or a positive integer, received {text!r}"
        )
    return value


def _positive_int_list(text):
    try:
        values = [_positive_int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            "must be a comma-separated list of positive integers, "
            f"received {text!r}"
        ) from None
    return values


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=(
            "Print the step time of a ScheduledModel (learned MLP schedule, "
            "two actions) divided by that of a plain Keras train step."
        )
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=2000,
        help="training steps timed per model and round, rounded up to a "
        "multiple of each steps-per-execution value (default: 2000)",
    )
    parser.add_argument(
        "--rounds", type=_positive_int, default=9,
        help="number of alternating timing rounds, whose median is reported "
        "(default: 9)",
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=64,
        help="examples per training step (default: 64)",
    )
    parser.add_argument(
        "--steps-per-execution", type=_positive_int_list, default=[1, 100],
        help="comma-separated steps_per_execution values, one result row "
        "each (default: 1,100)",
    )
    parser.add_argument(
        "--threads", type=_non_negative_int, default=0,
        help="TensorFlow intra-op and inter-op thread count; 0 keeps "
        "TensorFlow's default (default: 0)",
    )
    parser.add_argument(
        "--json", type=pathlib.Path, default=DEFAULT_JSON,
        help="path of the JSON record (default: "
        "benchmarks/results/step_overhead.json in this repository)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Run the benchmark, print the table and write the JSON record.

    Returns:
        The record written to the JSON file.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)

    if args.threads:
        # Raises RuntimeError once TensorFlow has run an op in this process.
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    load_before = os.getloadavg()[0]
    rows = [
        measure(value, args.steps, args.rounds, args.batch_size)
        for value in args.steps_per_execution
    ]

    record = {
        "command": shlex.join(["python", PROGRAM] + argv),
        "machine": describe_machine(),
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "threads": args.threads,
        # One-minute load averages of the machine, including this process.
        "load_average": {
            "start": load_before, "end": os.getloadavg()[0],
        },
        "rows": rows,
    }
    print(format_table(rows))

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"Wrote {args.json}")
    return record


if __name__ == "__main__":
    main()
