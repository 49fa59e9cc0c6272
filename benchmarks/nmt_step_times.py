"""Measure the step time of each NMT action and of evaluation and decoding.

Model: `Seq2SeqMultiTask` with the sizes of `nmt_experiments` quick mode
(embedding 128, 64 units per encoder direction, one layer each, Dense
taggers, batch 64) on the cached de-en corpus (`load_corpus`).

One model is compiled once with a schedule that runs the action stored in
a variable, so all actions share one trace. Each round runs one
`fit(verbose=0)` call of `--steps` steps per action, in an order that
rotates between rounds, and records the wall and CPU seconds per step.
The reported value of an action is the median over rounds. The first
`fit` call (which traces the train step) is timed separately. After the
rounds, the script times one evaluation of the validation split (all
three tasks) and greedy decoding of the test split, twice each (the first
call traces).

Usage:

    python benchmarks/nmt_step_times.py --rounds 5 --steps 30

The JSON record goes to `benchmarks/results/nmt_step_times.json` unless
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

from autoloss_models import nmt_experiments as ne  # noqa: E402
from autoloss_models import seq2seq  # noqa: E402
from autoloss_tf import schedules as schedules_lib  # noqa: E402

DEFAULT_JSON = pathlib.Path(__file__).parent / "results" / "nmt_step_times.json"


class ChosenActionSchedule(schedules_lib.Schedule):
    """Run the action whose index is stored in `chosen`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.chosen = self.add_weight(name="chosen", shape=(),
                                      initializer="zeros", dtype="int32",
                                      trainable=False)

    def select(self, features, step):
        return tf.fill([tf.shape(features)[0]], tf.convert_to_tensor(
            self.chosen))

    def probabilities(self, features, step=0):
        return tf.one_hot(self.select(features, step),
                          len(self.action_names))


def _timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _batches(corpus, batch_size, start, steps, seed):
    indices = ne.batch_indices(len(corpus.train.source), batch_size, seed,
                               start, steps)
    arrays = {key: tf.constant(getattr(corpus.train, key))
              for key in seq2seq.BATCH_KEYS}
    return tf.data.Dataset.from_tensor_slices(indices).map(
        lambda rows: {key: tf.gather(values, rows)
                      for key, values in arrays.items()})


def measure(settings, corpus, rounds, steps, seed):
    """Return the timing record (see the module docstring)."""
    keras.utils.set_random_seed(seed)
    model = ne.make_model(settings, corpus, seed)
    schedule = ChosenActionSchedule()
    model.compile(schedule=schedule, total_steps=10 ** 6)
    done = 0

    def fit(count):
        nonlocal done
        dataset = _batches(corpus, settings.batch_size, done, count, seed)
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        done += count

    _, first_wall, first_cpu = _timed(lambda: fit(1))
    per_step = {task: {"wall": [], "cpu": []} for task in seq2seq.TASKS}
    for round_index in range(rounds):
        order = np.roll(np.arange(len(seq2seq.TASKS)), -round_index)
        for index in order:
            schedule.chosen.assign(int(index))
            _, wall, cpu = _timed(lambda: fit(steps))
            task = seq2seq.TASKS[index]
            per_step[task]["wall"].append(1000 * wall / steps)
            per_step[task]["cpu"].append(1000 * cpu / steps)
        print(f"round {round_index + 1}/{rounds}: " + ", ".join(
            f"{task} {values['wall'][-1]:.1f} ms"
            for task, values in per_step.items()), flush=True)

    valid = ne.SplitView(corpus.valid)
    test = ne.SplitView(corpus.test)
    bos_id, eos_id = ne.special_ids(corpus.train)
    evaluation = [_timed(lambda: model.evaluate_split(valid))[1:]
                  for _ in range(2)]
    decoding = [_timed(lambda: model.translate(
        test.source, bos_id, eos_id, settings.target_length))[1:]
        for _ in range(2)]
    return {
        "first_fit_call_seconds": {"wall": first_wall, "cpu": first_cpu},
        "step_ms": {
            task: {
                "median_wall": statistics.median(values["wall"]),
                "median_cpu": statistics.median(values["cpu"]),
                "wall": values["wall"], "cpu": values["cpu"],
            }
            for task, values in per_step.items()
        },
        "validation_evaluation_seconds": {
            "sentences": len(valid),
            "first_wall_cpu": list(evaluation[0]),
            "second_wall_cpu": list(evaluation[1]),
        },
        "test_decoding_seconds": {
            "sentences": len(test),
            "first_wall_cpu": list(decoding[0]),
            "second_wall_cpu": list(decoding[1]),
        },
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of one fit call per action (default 5)")
    parser.add_argument("--steps", type=int, default=30,
                        help="steps per fit call (default 30)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of weights and batches (default 0)")
    parser.add_argument("--json", default=str(DEFAULT_JSON),
                        help="output JSON path")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be >= 1.")

    settings = ne.settings_for("quick")
    corpus = ne.load_corpus(settings, progress=print)
    load_before = os.getloadavg()
    record = measure(settings, corpus, args.rounds, args.steps, args.seed)

    record.update(
        command="python " + " ".join(shlex.quote(a) for a in sys.argv),
        settings=settings.to_dict(),
        machine=(f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                 f"Python {platform.python_version()}"),
        load_averages=[list(load_before), list(os.getloadavg())],
    )
    path = pathlib.Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    for task, values in record["step_ms"].items():
        print(f"{task}: median {values['median_wall']:.1f} ms wall, "
              f"{values['median_cpu']:.1f} ms CPU per step")
    print(f"Written to {path}")


if __name__ == "__main__":
    main()
