"""Measure the step time of scheduled models against plain Keras steps.

Task models, each a `ScheduledModel` with a learned schedule:

- `mlp`: binary classification, input dim 32 -> Dense(32, ReLU) ->
  Dense(1) logit, batch 64 of synthetic data. Actions "task" (binary
  cross-entropy) and "l1" (0.02 * sum |w|), both on every weight with one
  shared Adam 1e-3.
- `dcgan`: `autoloss_models.dcgan.DCGAN` at the quick GAN settings
  (28x28x1 images, 64 base filters, z of size 100, 3x3 kernels, batch 64 of
  uniform noise images), with its "generator" and "discriminator" actions
  and their two Adam optimizers.
- `seq2seq`: `autoloss_models.seq2seq.Seq2SeqMultiTask` at its quick sizes
  (vocabularies of 3,000, embedding 128, 64 LSTM units per direction,
  sentences of 30 tokens, batch 64 of random token ids), with its "mt",
  "pos" and "lemma" actions. It is measured only when that module exists;
  otherwise the script prints that it skipped it.

The schedule is a `LearnedSchedule` around an `MLPController` (hidden 32).
Its output layer starts at zero and `fit` does not train it, so the policy
is uniform and each step's action depends only on the stateless seed
(seed, step). The script recomputes every step's action from that seed with
`sample_categorical`, the sampler of `LearnedSchedule`.

The plain baseline of each action is a `keras.Model` whose `train_step`
computes that action's loss on its own copy of the task model under a
`GradientTape` and applies a fresh optimizer of the same settings to the
same variable group. It has no features, schedule, dispatch or finite
check. The plain step time of a round is the mean of the per-action plain
times weighted by how often the scheduled model took each action in its
steps of that round.

Method. One process measures every row. A row is one model under one
strategy ("none", or "mirrored": MirroredStrategy over 2 logical CPU
devices) with one steps_per_execution value, and gets fresh models. After a
warm-up fit of each model, every round runs one fit of `steps` steps per
model (each plain action and the scheduled model), in an order that
rotates from round to round. The step time of a model is the median over
rounds. The ratio is scheduled / plain of the medians. The same is done for
CPU time (`time.process_time`), which other jobs on the machine disturb
less than wall time.

Only the MLP rows on one device use steps_per_execution > 1: Keras 3.15.1
cannot run a plain model under MirroredStrategy with more than one step per
execution, and the DCGAN and seq2seq steps are long enough that the
per-call overhead of `fit` matters little.

NOTE: when the strategies include "mirrored", the process splits its CPU
into 2 logical devices before TensorFlow starts, so the single-device rows
of that run also run on the first logical device of the split.

Usage:

    python benchmarks/step_overhead.py
    python benchmarks/step_overhead.py --models dcgan --strategies none \\
        --rounds 3

The JSON record goes to `benchmarks/results/step_overhead.json` unless
`--json` names another path.
"""

import argparse
import dataclasses
import functools
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

from autoloss_models import dcgan  # noqa: E402
from autoloss_tf import LearnedSchedule  # noqa: E402
from autoloss_tf import MLPController  # noqa: E402
from autoloss_tf import ScheduledModel  # noqa: E402
from autoloss_tf import feature_names  # noqa: E402
from autoloss_tf import replicas as replicas_lib  # noqa: E402
from autoloss_tf.schedules import sample_categorical  # noqa: E402

PROGRAM = "benchmarks/step_overhead.py"
DEFAULT_JSON = pathlib.Path(__file__).resolve().parent / "results" / (
    "step_overhead.json"
)
MODELS = ("mlp", "dcgan", "seq2seq")
STRATEGIES = ("none", "mirrored")
NUM_LOGICAL_CPUS = 2
SCHEDULE_SEED = 0
NUM_SAMPLES = 4096
# The ratio targets of the rows that have one.
TARGETS = {
    ("mlp", "none"): 1.10,
    ("dcgan", "none"): 1.05,
    ("seq2seq", "none"): 1.05,
    ("dcgan", "mirrored"): 1.10,
}

MLP_INPUT_DIM = 32
MLP_HIDDEN_UNITS = 32
MLP_L1_WEIGHT = 0.02
MLP_LEARNING_RATE = 1e-3

# The quick settings of models/gan_experiments.py.
DCGAN_SETTINGS = dict(image_shape=(28, 28, 1), latent_dim=100,
                      base_filters=64, kernel_size=3)

SEQ2SEQ_VOCABULARY = 3000
SEQ2SEQ_LENGTH = 30
SEQ2SEQ_POS_TAGS = 20
SEQ2SEQ_LEMMA_CLASSES = 40


@dataclasses.dataclass
class Task:
    """How to build, feed and run one task model in the benchmark.

    Attributes:
        name: `"mlp"`, `"dcgan"` or `"seq2seq"`.
        action_names: the actions in registration order.
        batch_size: examples per step.
        default_steps: steps timed per model and round.
        make_model: callable returning a new, built `ScheduledModel`.
        make_optimizer: callable returning the compiled optimizer of a
            model from `make_model`.
        action_spec: callable `(model, action) -> (loss, variables,
            optimizer)` with the action's loss function on that model, its
            variable group and a new optimizer of the action's settings.
        make_dataset: callable `(batch_size) -> tf.data.Dataset`, repeated.
    """

    name: str
    action_names: tuple
    batch_size: int
    default_steps: int
    make_model: object
    make_optimizer: object
    action_spec: object
    make_dataset: object


# MLP --------------------------------------------------------------------


class ScheduledClassifier(ScheduledModel):
    """The MLP as a `ScheduledModel` with a "task" and an "l1" action."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(MLP_HIDDEN_UNITS, activation="relu",
                                         name="hidden")
        self.output_layer = keras.layers.Dense(1, name="logit")
        self.add_action("task", self.task_loss)
        self.add_action("l1", self.l1_loss)

    def call(self, x):
        return self.output_layer(self.hidden(x))[:, 0]

    def layer_weights(self):
        """Return the MLP's trainable weights (the schedule excluded)."""
        return (self.hidden.trainable_variables
                + self.output_layer.trainable_variables)

    def task_loss(self, data):
        x, y = data
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
            labels=y, logits=self(x, training=True)
        ))

    def l1_loss(self, data):
        del data
        return MLP_L1_WEIGHT * tf.add_n(
            [tf.reduce_sum(tf.abs(w)) for w in self.layer_weights()]
        )


def _make_mlp():
    model = ScheduledClassifier()
    model(tf.zeros([1, MLP_INPUT_DIM]))
    return model


def _mlp_action(model, action):
    loss = model.task_loss if action == "task" else model.l1_loss
    return loss, model.layer_weights(), keras.optimizers.Adam(
        MLP_LEARNING_RATE
    )


def _mlp_dataset(batch_size, seed=0):
    """Return batches of (x [batch, 32], y [batch]) from a noisy teacher."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(NUM_SAMPLES, MLP_INPUT_DIM)).astype("float32")
    teacher = rng.normal(size=(MLP_INPUT_DIM,)).astype("float32")
    y = (x @ teacher > 0).astype("float32")
    flip = rng.random(NUM_SAMPLES) < 0.1
    y[flip] = 1.0 - y[flip]
    return _repeated(tf.data.Dataset.from_tensor_slices((x, y)), batch_size)


def mlp_task():
    """Return the MLP task."""
    return Task(
        name="mlp", action_names=("task", "l1"), batch_size=64,
        default_steps=2000, make_model=_make_mlp,
        make_optimizer=lambda: keras.optimizers.Adam(MLP_LEARNING_RATE),
        action_spec=_mlp_action, make_dataset=_mlp_dataset,
    )


# DCGAN ------------------------------------------------------------------


def _dcgan_action(model, action):
    if action == dcgan.GENERATOR:
        loss, network = model.generator_loss, model.generator
    else:
        loss, network = model.discriminator_loss, model.discriminator
    return loss, network.trainable_variables, keras.optimizers.Adam(
        model.learning_rate, beta_1=model.beta_1
    )


def _dcgan_dataset(image_shape):
    def make(batch_size, seed=0):
        """Return batches of uniform noise images in [-1, 1]."""
        rng = np.random.default_rng(seed)
        images = rng.uniform(
            -1.0, 1.0, size=(4 * batch_size,) + tuple(image_shape)
        ).astype("float32")
        return _repeated(tf.data.Dataset.from_tensor_slices(images),
                         batch_size)

    return make


def dcgan_task(batch_size=64, **settings):
    """Return the DCGAN task, by default at the quick GAN settings.

    Args:
        batch_size: real images per step. Defaults to 64.
        **settings: `DCGAN` arguments that replace `DCGAN_SETTINGS`.
    """
    settings = dict(DCGAN_SETTINGS, **settings)
    return Task(
        name="dcgan", action_names=(dcgan.GENERATOR, dcgan.DISCRIMINATOR),
        batch_size=batch_size, default_steps=100,
        make_model=lambda: dcgan.DCGAN(**settings),
        # Each action has its own Adam, so the compiled one is unused.
        make_optimizer=lambda: "adam",
        action_spec=_dcgan_action,
        make_dataset=_dcgan_dataset(settings["image_shape"]),
    )


# Seq2seq ----------------------------------------------------------------


def seq2seq_task(batch_size=64, vocabulary_size=SEQ2SEQ_VOCABULARY,
                 **sizes):
    """Return the seq2seq task, by default at the quick sizes.

    Args:
        batch_size: sentences per step. Defaults to 64.
        vocabulary_size: ids of each language. Defaults to 3,000.
        **sizes: other `Seq2SeqMultiTask` arguments (embedding_dim,
            encoder_units, layer counts, dropout).

    Raises:
        ImportError: while `autoloss_models.seq2seq` does not exist.
    """
    from autoloss_models import seq2seq

    def make_model():
        return seq2seq.Seq2SeqMultiTask(
            source_vocabulary_size=vocabulary_size,
            target_vocabulary_size=vocabulary_size,
            num_pos_tags=SEQ2SEQ_POS_TAGS,
            num_lemma_classes=SEQ2SEQ_LEMMA_CLASSES, **sizes
        )

    def action_spec(model, action):
        loss = {seq2seq.MT: model.mt_loss, seq2seq.POS: model.pos_loss,
                seq2seq.LEMMA: model.lemma_loss}[action]
        decoder = {seq2seq.MT: model.translation_decoder,
                   seq2seq.POS: model.pos_tagger,
                   seq2seq.LEMMA: model.lemma_tagger}[action]
        variables = (model.encoder.trainable_variables
                     + decoder.trainable_variables)
        return loss, variables, keras.optimizers.Adam(
            model.learning_rate, global_clipnorm=model.global_clipnorm
        )

    return Task(
        name="seq2seq", action_names=tuple(seq2seq.TASKS),
        batch_size=batch_size, default_steps=40, make_model=make_model,
        # Each action's Adam comes from the model, so the compiled one is
        # unused.
        make_optimizer=lambda: "adam",
        action_spec=action_spec,
        make_dataset=_seq2seq_dataset(vocabulary_size),
    )


def _seq2seq_dataset(vocabulary_size):
    def make(batch_size, seed=0):
        """Return batches of random sentences, 10 to 30 tokens, 0-padded."""
        rng = np.random.default_rng(seed)
        count = 4 * batch_size
        lengths = rng.integers(10, SEQ2SEQ_LENGTH + 1, size=count)
        positions = np.arange(SEQ2SEQ_LENGTH)[None, :]
        padding = positions >= lengths[:, None]

        def ids(high):
            values = rng.integers(1, high, size=(count, SEQ2SEQ_LENGTH))
            values[padding] = 0
            return values.astype("int32")

        batch = {
            "source": ids(vocabulary_size),
            "target_in": ids(vocabulary_size),
            "target_out": ids(vocabulary_size),
            "pos": ids(SEQ2SEQ_POS_TAGS),
            "lemma": ids(SEQ2SEQ_LEMMA_CLASSES),
        }
        return _repeated(tf.data.Dataset.from_tensor_slices(batch),
                         batch_size)

    return make


TASK_FACTORIES = {"mlp": mlp_task, "dcgan": dcgan_task,
                  "seq2seq": seq2seq_task}


def _repeated(dataset, batch_size):
    dataset = dataset.batch(batch_size, drop_remainder=True).repeat()
    return dataset.prefetch(tf.data.AUTOTUNE)


# Models -----------------------------------------------------------------


class PlainActionModel(keras.Model):
    """One action of a task model as a plain Keras train step.

    Args:
        task_model: a task model of its own (never compiled), which
            provides the loss function and the variables.
        loss: the action's loss function on `task_model`.
        variables: the action's variable group on `task_model`.
    """

    def __init__(self, task_model, loss, variables, **kwargs):
        super().__init__(**kwargs)
        self.task_model = task_model
        self.action_loss = loss
        self.action_variables = list(variables)
        self.built = True

    def train_step(self, data):
        with tf.GradientTape() as tape:
            loss = self.action_loss(data)
            # Keras losses divide by the replica count the same way.
            scaled = replicas_lib.scale_loss(loss)
        grads = tape.gradient(scaled, self.action_variables)
        self.optimizer.apply(grads, self.action_variables)
        return {"loss": loss}


def make_models(task, steps_per_execution, jit_compile=False):
    """Build and compile the scheduled model and one plain model per action.

    Args:
        task: the `Task`.
        steps_per_execution: `compile` argument of every model.
        jit_compile: `compile` argument of every model. Defaults to False.

    Returns:
        (scheduled, {action: plain model}).
    """
    scheduled = task.make_model()
    controller = MLPController(
        num_features=len(feature_names(
            task.action_names, scheduled.extra_feature_names()
        )),
        num_actions=len(task.action_names), seed=SCHEDULE_SEED,
    )
    scheduled.compile(
        optimizer=task.make_optimizer(),
        schedule=LearnedSchedule(controller, seed=SCHEDULE_SEED),
        steps_per_execution=steps_per_execution, jit_compile=jit_compile,
    )
    plain = {}
    for action in task.action_names:
        task_model = task.make_model()
        loss, variables, optimizer = task.action_spec(task_model, action)
        optimizer.build(variables)
        model = PlainActionModel(task_model, loss, variables)
        model.compile(optimizer=optimizer,
                      steps_per_execution=steps_per_execution,
                      jit_compile=jit_compile)
        plain[action] = model
    return scheduled, plain


# Timing -----------------------------------------------------------------


def time_fit(model, dataset, steps):
    """Run `fit` for `steps` steps and time it.

    The CPU time is `time.process_time`, the user and system time of every
    thread of this process, so it leaves out the time this process waits
    while other jobs hold the cores. It also counts the busy-waiting of
    TensorFlow's thread pools.

    Returns:
        The pair (wall time, CPU time) per step, in milliseconds.
    """
    wall_start = time.perf_counter()
    cpu_start = time.process_time()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, shuffle=False,
              verbose=0)
    cpu_ms = (time.process_time() - cpu_start) * 1000.0 / steps
    wall_ms = (time.perf_counter() - wall_start) * 1000.0 / steps
    return wall_ms, cpu_ms


@functools.lru_cache(maxsize=None)
def _uniform_draw(num_actions):
    """Return a compiled `step -> action` of a uniform learned schedule."""
    return tf.function(lambda step: sample_categorical(
        tf.zeros([1, num_actions]),
        tf.stack([tf.constant(SCHEDULE_SEED, "int32"), step]),
    )[0])


def scheduled_action_counts(num_actions, first_step, steps):
    """Return how often a uniform learned schedule took each action.

    The controller's logits are all zero, so the action of step t is the
    draw of `sample_categorical` from zero logits and the seed
    (SCHEDULE_SEED, t), as in `LearnedSchedule.decide`.
    """
    draw = _uniform_draw(num_actions)
    counts = np.zeros(num_actions, "int64")
    for step in range(first_step, first_step + steps):
        counts[int(draw(tf.constant(step, "int32")))] += 1
    return counts


def _check_counts(scheduled, counts_before, counts):
    """Compare recomputed action counts with the optimizers' step counts.

    Only possible when every action has an optimizer of its own.
    """
    optimizers = scheduled.action_optimizers
    if len(optimizers) != len(counts):
        return
    measured = np.array(
        [int(o.iterations.numpy()) for o in optimizers], "int64"
    ) - counts_before
    if not np.array_equal(measured, counts):
        raise RuntimeError(
            "The action counts recomputed from the schedule's seed do not "
            f"match the optimizers' step counts. Received: recomputed "
            f"{counts.tolist()}, optimizers {measured.tolist()}. The "
            "controller's logits are probably not all zero."
        )


def _optimizer_steps(scheduled):
    return np.array(
        [int(o.iterations.numpy()) for o in scheduled.action_optimizers],
        "int64",
    )


def measure(task, strategy_name, strategy, steps_per_execution, steps,
            rounds, jit_compile=False):
    """Time one row's models in rotating rounds and return the row.

    `steps` is rounded up to a multiple of `steps_per_execution`, so every
    compiled call runs the same number of steps.
    """
    executions = -(-steps // steps_per_execution)
    steps = executions * steps_per_execution
    scope = strategy.scope() if strategy is not None else _no_scope()
    with scope:
        dataset = task.make_dataset(task.batch_size)
        scheduled, plain = make_models(task, steps_per_execution,
                                       jit_compile)
    names = ["scheduled"] + list(task.action_names)
    models = dict(plain, scheduled=scheduled)
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    fractions = []
    # Warm-up: trace the train functions and start the input pipeline.
    for model in models.values():
        model.fit(dataset, steps_per_epoch=2 * steps_per_execution,
                  epochs=1, shuffle=False, verbose=0)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if name == "scheduled":
                first_step = int(scheduled.training_state.step.numpy())
                before = _optimizer_steps(scheduled)
            wall_ms, cpu_ms = time_fit(models[name], dataset, steps)
            wall[name].append(wall_ms)
            cpu[name].append(cpu_ms)
            if name == "scheduled":
                counts = scheduled_action_counts(
                    len(task.action_names), first_step, steps
                )
                _check_counts(scheduled, before, counts)
                fractions.append(counts / steps)
    row = _summarize(task, strategy_name, steps_per_execution, steps,
                     wall, cpu, fractions)
    row["jit_compile"] = bool(scheduled.jit_compile)
    return row


class _no_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def _plain_mix(task, times, fractions):
    """Return the per-round plain time mixed by the rounds' action shares."""
    return [
        float(sum(share * times[action][index]
                  for action, share in zip(task.action_names, shares)))
        for index, shares in enumerate(fractions)
    ]


def _summarize(task, strategy_name, steps_per_execution, steps, wall, cpu,
               fractions):
    plain_wall = _plain_mix(task, wall, fractions)
    plain_cpu = _plain_mix(task, cpu, fractions)
    plain_ms = statistics.median(plain_wall)
    scheduled_ms = statistics.median(wall["scheduled"])
    plain_cpu_ms = statistics.median(plain_cpu)
    scheduled_cpu_ms = statistics.median(cpu["scheduled"])
    target = TARGETS.get((task.name, strategy_name))
    ratio = scheduled_ms / plain_ms
    return {
        "model": task.name,
        "strategy": strategy_name,
        "steps_per_execution": steps_per_execution,
        "plain_ms": plain_ms,
        "scheduled_ms": scheduled_ms,
        "ratio": ratio,
        "plain_cpu_ms": plain_cpu_ms,
        "scheduled_cpu_ms": scheduled_cpu_ms,
        "cpu_ratio": scheduled_cpu_ms / plain_cpu_ms,
        "target": target,
        "batch_size": task.batch_size,
        "steps": steps,
        "action_fractions": dict(zip(
            task.action_names, np.mean(fractions, axis=0).tolist()
        )),
        "plain_action_ms": {
            action: statistics.median(wall[action])
            for action in task.action_names
        },
        "plain_round_ms": plain_wall,
        "scheduled_round_ms": wall["scheduled"],
    }


# Reporting --------------------------------------------------------------


def describe_machine():
    """Return the platform, processor and CPU count as one string."""
    processor = platform.processor() or platform.machine()
    return f"{platform.platform()}, {processor}, {os.cpu_count()} CPUs"


def format_table(rows):
    """Return the rows as a fixed-width text table."""
    lines = [
        f"{'model':<8} {'strategy':<9} {'spe':>4} {'plain_ms':>9} "
        f"{'scheduled_ms':>12} {'ratio':>6} {'cpu_ratio':>9} {'target':>6}"
    ]
    for row in rows:
        target = "-" if row["target"] is None else f"{row['target']:.2f}"
        lines.append(
            f"{row['model']:<8} {row['strategy']:<9} "
            f"{row['steps_per_execution']:>4} {row['plain_ms']:>9.3f} "
            f"{row['scheduled_ms']:>12.3f} {row['ratio']:>6.3f} "
            f"{row['cpu_ratio']:>9.3f} {target:>6}"
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
        return [_positive_int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            "must be a comma-separated list of positive integers, "
            f"received {text!r}"
        ) from None


def _choice_list(choices):
    def parse(text):
        values = text.split(",")
        unknown = [value for value in values if value not in choices]
        if unknown or not text:
            raise argparse.ArgumentTypeError(
                f"must be a comma-separated list of {', '.join(choices)}, "
                f"received {text!r}"
            )
        return values

    return parse


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=(
            "Print the step time of scheduled models (learned schedule) "
            "divided by that of plain Keras train steps doing the same "
            "updates."
        )
    )
    parser.add_argument(
        "--models", type=_choice_list(MODELS), default=list(MODELS),
        help="comma-separated task models to measure; seq2seq is skipped "
        "while autoloss_models.seq2seq does not exist (default: "
        "mlp,dcgan,seq2seq)",
    )
    parser.add_argument(
        "--strategies", type=_choice_list(STRATEGIES),
        default=list(STRATEGIES),
        help="comma-separated strategies: none (one device) and mirrored "
        "(MirroredStrategy over 2 logical CPU devices) (default: both)",
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=None,
        help="training steps timed per model and round, for every model "
        "(default: 2000 for mlp, 100 for dcgan, 40 for seq2seq)",
    )
    parser.add_argument(
        "--rounds", type=_positive_int, default=5,
        help="number of timing rounds, whose median is reported "
        "(default: 5)",
    )
    parser.add_argument(
        "--mlp-steps-per-execution", type=_positive_int_list,
        default=[1, 100],
        help="comma-separated steps_per_execution values of the "
        "single-device MLP rows, one row each (default: 1,100)",
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


def configure_devices(strategies, threads):
    """Set threads and logical CPUs before TensorFlow runs its first op.

    Returns:
        The MirroredStrategy when `strategies` contains "mirrored", else
        None.

    Raises:
        RuntimeError: when TensorFlow has already initialized its devices.
    """
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    if "mirrored" not in strategies:
        return None
    cpus = tf.config.list_physical_devices("CPU")
    if len(tf.config.get_logical_device_configuration(cpus[0]) or []) != (
        NUM_LOGICAL_CPUS
    ):
        tf.config.set_logical_device_configuration(
            cpus[0],
            [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS,
        )
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices[:NUM_LOGICAL_CPUS])


def load_tasks(names):
    """Return (tasks, skipped) for the requested model names.

    A task whose module cannot be imported is skipped with the reason.
    """
    tasks, skipped = [], []
    for name in names:
        try:
            tasks.append(TASK_FACTORIES[name]())
        except ImportError as error:
            skipped.append({"model": name, "reason": str(error)})
            print(f"Skipped {name}: {error}")
    return tasks, skipped


def plan_rows(tasks, strategies, mlp_steps_per_execution):
    """Return the (task, strategy, steps_per_execution) of every row."""
    rows = []
    for task in tasks:
        for strategy in strategies:
            values = [1]
            if task.name == "mlp" and strategy == "none":
                values = mlp_steps_per_execution
            rows.extend((task, strategy, value) for value in values)
    return rows


def main(argv=None):
    """Run the benchmark, print the table and write the JSON record.

    Returns:
        The record written to the JSON file.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    mirrored = configure_devices(args.strategies, args.threads)
    tasks, skipped = load_tasks(args.models)

    load_before = os.getloadavg()[0]
    rows = []
    for task, strategy, steps_per_execution in plan_rows(
        tasks, args.strategies, args.mlp_steps_per_execution
    ):
        steps = args.steps or task.default_steps
        print(f"Measuring {task.name} ({strategy}, steps_per_execution "
              f"{steps_per_execution}, {steps} steps x {args.rounds} "
              "rounds)", flush=True)
        rows.append(measure(
            task, strategy, mirrored if strategy == "mirrored" else None,
            steps_per_execution, steps, args.rounds,
        ))

    record = {
        "command": shlex.join(["python", PROGRAM] + argv),
        "machine": describe_machine(),
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "rounds": args.rounds,
        "threads": args.threads,
        # One-minute load averages of the machine, including this process.
        "load_average": {"start": load_before, "end": os.getloadavg()[0]},
        "rows": rows,
        "skipped": skipped,
    }
    print(format_table(rows))

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"Wrote {args.json}")
    return record


if __name__ == "__main__":
    main()
