"""Split the scheduled MLP step's extra time into its parts.

Each variant is the MLP of `step_overhead.py` with one part of the
scheduled step removed or replaced, timed in CPU milliseconds per step
with one TensorFlow thread and 100 steps per execution, where the compiled
step dominates. The difference between two variants estimates what the
removed part costs:

- `plain/task`, `plain/l1`: the plain Keras steps of the two actions.
- `scheduled`: the full scheduled step (learned MLP controller).
- `fixed_task`: a `FixedSchedule` that always takes "task" (no
  controller and no sampling).
- `no_logs`: the logs reduced to the step's loss.
- `no_feature_updates`: without the per-step progress and loss and
  gradient-norm feature updates.
- `no_bookkeeping`: also without the feature-refresh `cond`, the rollout
  observation and the skip and activity counters. Only the step counter
  remains.
- `no_finite_guard`: the chosen action's update applied without the
  gradient-norm feature, the finite checks and their `cond`.
- `fixed_task_no_dispatch`: `fixed_task` calling the "task" update
  directly instead of through `switch_case`.
- `fixed_task_minimal`: `fixed_task` without dispatch, guard, feature
  updates, bookkeeping and logs, which leaves the controller-free
  decision, the update and the step counter.

NOTE: the variants replace private methods of `ScheduledModel` and
`FeatureTracker`, so they follow the code as of this script's commit and
may need updates when those methods change.

Usage:

    python benchmarks/step_profile.py --rounds 5 --steps 2000
"""

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import step_overhead  # noqa: E402
from autoloss_tf import FixedSchedule  # noqa: E402
from autoloss_tf import features as features_lib  # noqa: E402
from autoloss_tf import replicas as replicas_lib  # noqa: E402
from autoloss_tf import scheduled_model as scheduled_lib  # noqa: E402
from autoloss_tf import schedules as schedules_lib  # noqa: E402

STEPS_PER_EXECUTION = 100
VARIANTS = ("plain/task", "plain/l1", "scheduled", "fixed_task", "no_logs",
            "no_feature_updates", "no_bookkeeping", "no_finite_guard",
            "fixed_task_no_dispatch", "fixed_task_minimal")


def _loss_only_logs(self, actions, probabilities, loss, applied):
    del actions, probabilities, applied
    return {"loss": loss[0]}


def _update_without_bookkeeping(self, strategy, data):
    """`_scheduled_update` reduced to decide, apply and count the step."""
    runner = replicas_lib.ReplicaRunner(strategy)
    state = self.training_state
    step = tf.convert_to_tensor(state.step)
    features = self.feature_tracker.values()
    actions, probabilities = schedules_lib.decide(
        self.schedule, features, step
    )
    usable = self._usable(features, actions)
    loss, _, applied = self._single_update(data, actions, usable, runner)
    state.step.assign_add(1)
    return actions, probabilities, loss, applied


def _no_op(self, *args):
    del self, args


def _apply_without_guard(self, action, data, runner):
    """`_apply_action` without the gradient-norm feature and finite checks."""
    optimizer = self.action_optimizers[action.optimizer_index]
    variables = action.resolved_variables
    loss, grads = runner.run(self._action_gradients, action, data)
    runner.run(lambda g: optimizer.apply(g, variables), grads)
    loss = tf.reshape(runner.mean(loss), [1])
    return loss, tf.zeros([1]), tf.ones([1], "bool")


def _first_action_update(self, data, actions, usable, runner):
    """`_single_update` that runs the first action without `switch_case`."""
    del actions, usable
    return self._apply_action(self._action_list[0], data, runner)


def build_variant(name, task):
    """Return the model that runs variant `name` of the MLP step."""
    scheduled, plain = step_overhead.make_models(task, STEPS_PER_EXECUTION)
    if name.startswith("plain/"):
        return plain[name.split("/")[1]]
    if name.startswith("fixed_task"):
        scheduled.compile(
            optimizer=task.make_optimizer(), schedule=FixedSchedule("task"),
            steps_per_execution=STEPS_PER_EXECUTION, jit_compile=False,
        )
    return scheduled


def patch_variant(name):
    """Replace the methods that variant `name` leaves out."""
    model_class = scheduled_lib.ScheduledModel
    tracker_class = features_lib.FeatureTracker
    if name == "no_logs":
        model_class._logs = _loss_only_logs
    if name in ("no_feature_updates", "no_bookkeeping"):
        tracker_class.record_action = _no_op
        tracker_class.set_progress = _no_op
    if name in ("no_bookkeeping", "fixed_task_minimal"):
        model_class._scheduled_update = _update_without_bookkeeping
    if name in ("no_finite_guard", "fixed_task_minimal"):
        model_class._apply_action = _apply_without_guard
    if name in ("fixed_task_no_dispatch", "fixed_task_minimal"):
        model_class._single_update = _first_action_update
    if name == "fixed_task_minimal":
        model_class._logs = _loss_only_logs
        tracker_class.record_action = _no_op
        tracker_class.set_progress = _no_op


def time_variant(name, steps, rounds):
    """Return the median CPU milliseconds per step of variant `name`."""
    task = step_overhead.mlp_task()
    dataset = task.make_dataset(task.batch_size)
    model = build_variant(name, task)
    model.fit(dataset, steps_per_epoch=2 * STEPS_PER_EXECUTION, epochs=1,
              shuffle=False, verbose=0)
    times = []
    for _ in range(rounds):
        start = time.process_time()
        model.fit(dataset, steps_per_epoch=steps, epochs=1, shuffle=False,
                  verbose=0)
        times.append((time.process_time() - start) * 1000.0 / steps)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Print the CPU time per step of variants of the "
        "scheduled MLP step, one variant per process."
    )
    parser.add_argument(
        "--variant", choices=VARIANTS, default=None,
        help="measure only this variant in this process (the script runs "
        "each variant in its own process, because variants patch methods)",
    )
    parser.add_argument(
        "--steps", type=step_overhead._positive_int, default=2000,
        help="steps timed per round, a multiple of 100 (default: 2000)",
    )
    parser.add_argument(
        "--rounds", type=step_overhead._positive_int, default=5,
        help="timing rounds, whose median is reported (default: 5)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.steps % STEPS_PER_EXECUTION:
        parser.error(
            f"--steps must be a multiple of {STEPS_PER_EXECUTION}, "
            f"received {args.steps}"
        )

    if args.variant is not None:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        patch_variant(args.variant)
        milliseconds = time_variant(args.variant, args.steps, args.rounds)
        print(f"{args.variant:<20} {milliseconds:.4f}")
        return

    print(f"{'variant':<20} CPU ms per step")
    for variant in VARIANTS:
        subprocess.run(
            [sys.executable, __file__, "--variant", variant,
             "--steps", str(args.steps), "--rounds", str(args.rounds)],
            check=True,
        )


if __name__ == "__main__":
    main()
