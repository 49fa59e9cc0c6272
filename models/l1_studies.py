"""The AutoLoss paper's further L1 studies, each as one function.

- `lambda_robustness`: Figure 1. For each weight lambda of the L1 term,
  AutoLoss with a controller trained at that weight against the combined
  loss `task + lambda * ||theta||_1`.
- `budget`: Figure 3 (right). Test MSE against task-model batches scanned,
  for DGS running its grid in random order and for AutoLoss counting its
  controller training and one guided run.
- `transfer_data`: Table 2. A controller trained on synthetic data of one
  specification guides MLPs on data of three other specifications.
- `ablation`: Table 3. Controllers trained with one feature group dropped.

Every study trains its controllers with the same REINFORCE setup as
`autoloss train-controller` and checkpoints them under a work directory,
so a killed study resumes where it stopped. Comparisons use fresh data
sets (`l1_experiments.trial_seed`) that no controller saw. Each AutoLoss
value of a trial is the mean over `GUIDED_RUNS` runs that sample their
actions from the same controller. The mean removes most of the noise of a
single sampled schedule, and its cost is counted as that of one run.

One task-model batch is one full-batch training step, the unit of every
cost in these results.
"""

import dataclasses
import json
import os

import keras
import numpy as np
from tqdm import tqdm

import autoloss_tf
from autoloss_tf import schedules as schedules_lib
from autoloss_tf import training
from autoloss_models import data as data_lib
from autoloss_models import l1_experiments as experiments

STUDY_TASKS = {
    "lambda-robustness": ("regression", "classification"),
    "budget": ("regression",),
    "transfer-data": ("classification",),
    "ablation": ("regression",),
}
GUIDED_RUNS = 4
EPISODES_PER_BATCH = 16
DEFAULT_LAMBDAS = {
    "regression": (0.01, 0.1, 1.0, 10.0),
    "classification": (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
}
# Feature groups of section 4.1 of the AutoLoss paper. The ablation never
# drops `progress`.
FEATURE_GROUPS = {
    "gradient_magnitudes": ("grad_norm/task", "grad_norm/l1"),
    "loss_values": ("loss/task", "loss/l1"),
    "validation_metrics": ("val_metric", "val_metric_ema", "val_diff_ema"),
}
# Data specifications of the transfer study. The controller trains on the
# first; every specification keeps 200 samples per partition and two
# cluster centres per class on the vertices of a hypercube.
TRANSFER_SPECS = {
    "source": data_lib.ClassificationSpec(),
    "more_informative": data_lib.ClassificationSpec(
        dimension=32, informative_fraction=0.125, combination_fraction=0.125,
    ),
    "wide_separated": data_lib.ClassificationSpec(
        dimension=64, class_separation=1.5,
    ),
    "narrow_noisy": data_lib.ClassificationSpec(
        dimension=16, informative_fraction=0.25, combination_fraction=0.125,
        noise_std=1.5,
    ),
}


class StudyResumeError(ValueError):
    """A work directory contains a checkpoint made with other settings."""


def describe_spec(spec):
    """Return a JSON-ready description of a `ClassificationSpec`."""
    return {
        **dataclasses.asdict(spec),
        "informative_columns": spec.num_informative,
        "combination_columns": spec.num_combination,
        "noise_columns": spec.num_noise,
    }


def feature_mask(dropped_group=None):
    """Return the controller feature mask that drops one feature group."""
    names = autoloss_tf.feature_names(("task", "l1"))
    if dropped_group is None:
        return [1.0] * len(names)
    if dropped_group not in FEATURE_GROUPS:
        raise ValueError(
            f"Unknown feature group. Received: {dropped_group!r}. Choose one "
            f"of {sorted(FEATURE_GROUPS)}."
        )
    dropped = FEATURE_GROUPS[dropped_group]
    return [0.0 if name in dropped else 1.0 for name in names]


# Controller training ---------------------------------------------------

@dataclasses.dataclass
class TrainedController:
    """A controller trained by a study, with its training record."""

    controller: object
    history: list
    directory: str
    snapshots: list = None

    @property
    def task_model_batches(self):
        return int(sum(entry["steps"] for entry in self.history))

    def final_l1_fraction(self, window=20):
        last = self.history[-window:]
        return float(np.mean([e["regularizer_fraction"] for e in last]))

    def record(self):
        return {
            "directory": self.directory,
            "episodes": len(self.history),
            "task_model_batches": self.task_model_batches,
            "final_l1_fraction": self.final_l1_fraction(),
        }


@dataclasses.dataclass
class ControllerJob:
    """One controller that a study trains.

    Attributes:
        spec: the task's `TaskSpec`; its L1 weight and data specification
            apply.
        directory: checkpoint directory. A checkpoint made with the same
            settings is resumed.
        mask: optional controller feature mask.
        snapshots: if True, keep the controller weights after every batch
            (on disk, so they survive a resume), starting with the untrained
            weights.
        label: progress-bar label.
    """

    spec: object
    directory: str
    mask: list = None
    snapshots: bool = False
    label: str = "controller"

    def settings(self, episodes, seed):
        """Return the settings a resumed checkpoint must share."""
        spec = self.spec
        return {
            "task": spec.name, "seed": seed, "episodes": episodes,
            "episodes_per_batch": EPISODES_PER_BATCH,
            "data_sets": spec.controller_data_sets,
            "learning_rate": spec.controller_learning_rate,
            "l1_scale": spec.l1_scale, "max_steps": spec.max_steps,
            "feature_mask": [1.0] * len(spec.feature_scale)
            if self.mask is None else [float(m) for m in self.mask],
            "data_spec": None if spec.data_spec is None
            else dataclasses.asdict(spec.data_spec),
        }


def check_checkpoints(jobs, episodes, seed):
    """Raise `StudyResumeError` if a job's checkpoint has other settings.

    Studies call it for all their controllers before training any, so a
    mismatch stops the study before work is done.
    """
    for job in jobs:
        path = os.path.join(job.directory, "history.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            saved = json.load(f).get("settings") or {}
        expected = job.settings(episodes, seed)
        changed = {
            key: (saved.get(key), value) for key, value in expected.items()
            if saved.get(key) != value
        }
        if changed:
            raise StudyResumeError(
                f"{job.directory} contains a controller checkpoint made with "
                f"other settings. Changed (checkpoint, now): {changed}. "
                "Rerun with the checkpoint's settings, pass another "
                f"--work-dir, or delete {job.directory}."
            )


def train_controller(job, episodes, seed):
    """Train (or resume) one controller by REINFORCE under `job.directory`.

    The setup is that of `autoloss train-controller`: batches of 16
    episodes from shared initial weights, the batch baseline, and the
    controller partitions of the spec's number of synthetic data sets.

    Returns:
        A `TrainedController`.
    """
    check_checkpoints([job], episodes, seed)
    spec = job.spec
    keras.utils.set_random_seed(seed)
    controller = experiments.make_controller(
        spec, seed=seed, feature_mask=job.mask
    )
    updater = training.ReinforceUpdater(
        controller, learning_rate=spec.controller_learning_rate,
        baseline_decay=spec.baseline_decay, advantage_clip=spec.advantage_clip,
    )
    splits = [
        spec.splits(experiments.controller_data_seed(seed, index))
        for index in range(spec.controller_data_sets)
    ]
    trainer = training.EpisodicTrainer(
        updater,
        experiments.controller_batch_runner(spec, controller, splits, seed),
        job.directory, episodes_per_batch=EPISODES_PER_BATCH, baseline="batch",
    )
    trainer.settings = job.settings(episodes, seed)
    snapshot_path = os.path.join(job.directory, "snapshots.npz")
    saved_snapshots = _load_snapshots(snapshot_path) if job.snapshots else []
    if job.snapshots and not saved_snapshots:
        saved_snapshots = [controller.get_weights()]
    done = trainer.resume()
    bar = tqdm(total=episodes, initial=min(done, episodes), unit="episode",
               desc=job.label, leave=False)
    try:
        batch_end = (done // EPISODES_PER_BATCH + 1) * EPISODES_PER_BATCH
        while len(trainer.history) < episodes:
            before = len(trainer.history)
            trainer.train(min(batch_end, episodes))
            bar.update(len(trainer.history) - before)
            batch_end += EPISODES_PER_BATCH
            if job.snapshots:
                saved_snapshots.append(controller.get_weights())
                _save_snapshots(snapshot_path, saved_snapshots)
    finally:
        bar.close()
    expected = -(-len(trainer.history) // EPISODES_PER_BATCH) + 1
    if job.snapshots and len(saved_snapshots) != expected:
        raise StudyResumeError(
            f"{snapshot_path} contains {len(saved_snapshots)} controller "
            f"snapshots, but {len(trainer.history)} episodes need {expected}. "
            f"Delete {job.directory} to train that controller again."
        )
    return TrainedController(
        controller, trainer.history, job.directory,
        saved_snapshots if job.snapshots else None,
    )


def train_controllers(jobs, episodes, seed):
    """Check every job's checkpoint, then train the jobs in order."""
    check_checkpoints(jobs, episodes, seed)
    return [train_controller(job, episodes, seed) for job in jobs]


def _load_snapshots(path):
    if not os.path.exists(path):
        return []
    with np.load(path) as arrays:
        count = int(arrays["count"])
        per = int(arrays["per_snapshot"])
        return [
            [arrays[f"s{i}_w{j}"] for j in range(per)] for i in range(count)
        ]


def _save_snapshots(path, snapshots):
    arrays = {"count": len(snapshots), "per_snapshot": len(snapshots[0])}
    for i, weights in enumerate(snapshots):
        for j, value in enumerate(weights):
            arrays[f"s{i}_w{j}"] = value
    training.write_checkpoint(path, arrays)


def _clone(controller, weights=None):
    copy = controller.__class__.from_config(controller.get_config())
    copy.set_weights(weights if weights is not None else controller.get_weights())
    return copy


# Guided members inside one population --------------------------------------

def _learned_parts(controllers, seed):
    """Return Memberwise parts: `GUIDED_RUNS` sampled runs per controller."""
    return [
        (schedules_lib.LearnedSchedule(c, seed=seed), GUIDED_RUNS)
        for c in controllers
    ]


def _run_population(spec, parts, task_l1_weights, l1_scales, split, model_seed):
    """Train one population on `split`; return (test, val, steps) arrays."""
    schedule = schedules_lib.MemberwiseSchedule(parts)
    model = spec.make_model(
        len(task_l1_weights), split.task_train.x.shape[1],
        task_l1_weights=task_l1_weights, seed=model_seed, l1_scale=l1_scales,
    )
    experiments.run_population(
        spec, model, schedule, split.task_train, split.task_val
    )
    return (
        np.asarray(spec.test_metric(model, split), "float64"),
        model.training_state.best_metric.numpy().astype("float64"),
        model.training_state.active_steps.numpy().astype("int64"),
    )


def _summary(values):
    values = np.asarray(values, "float64")
    return {"mean": float(values.mean()), "std": float(values.std()),
            "values": values.tolist()}


def _trials(trials, label):
    return tqdm(range(trials), unit="trial", desc=label, leave=False)


# Figure 1: lambda robustness ------------------------------------------

def lambda_robustness(spec, lambdas, trials, seed, episodes, work_dir):
    """Compare AutoLoss and the combined loss at each L1 weight lambda.

    For each lambda a controller is trained with the L1 action's loss
    `lambda * ||theta||_1`. Each trial then trains, in one population,
    the combined loss `task + lambda * ||theta||_1` for every lambda, the
    task loss alone, and `GUIDED_RUNS` runs guided by each lambda's
    controller, and reports test metrics.
    """
    lambdas = [float(v) for v in lambdas]
    jobs = [
        ControllerJob(
            spec.with_l1_scale(value), lambda_directory(work_dir, value),
            label=f"controller lambda={value:g}",
        )
        for value in lambdas
    ]
    trained = train_controllers(jobs, episodes, seed)
    count = len(lambdas)
    combined = np.zeros([trials, count])
    autoloss = np.zeros([trials, count])
    without = np.zeros([trials])
    autoloss_steps = np.zeros([trials, count])
    for trial in _trials(trials, "lambda trials"):
        data_seed = experiments.trial_seed(seed, trial)
        split = spec.splits(data_seed)
        parts = [(schedules_lib.FixedSchedule("task"), count + 1)]
        parts += _learned_parts([t.controller for t in trained], data_seed)
        weights = lambdas + [0.0] + [0.0] * (count * GUIDED_RUNS)
        scales = lambdas + [spec.l1_scale] + [
            v for v in lambdas for _ in range(GUIDED_RUNS)
        ]
        test, _, steps = _run_population(
            spec, parts, weights, scales, split, model_seed=trial
        )
        combined[trial] = test[:count]
        without[trial] = test[count]
        guided = test[count + 1:].reshape(count, GUIDED_RUNS)
        autoloss[trial] = guided.mean(axis=1)
        autoloss_steps[trial] = steps[count + 1:].reshape(
            count, GUIDED_RUNS).mean(axis=1)
    return {
        "study": "lambda-robustness",
        "task": spec.name,
        "metric": spec.metric,
        "lambdas": lambdas,
        "episodes": episodes,
        "guided_runs_per_trial": GUIDED_RUNS,
        "methods": {
            "combined": _per_lambda(combined),
            "AutoLoss": _per_lambda(autoloss),
        },
        "without_l1": _summary(without),
        "AutoLoss_guided_batches": autoloss_steps.mean(axis=0).tolist(),
        "controllers": [
            {"lambda": v, **t.record()} for v, t in zip(lambdas, trained)
        ],
    }


def lambda_directory(work_dir, value):
    """Return the checkpoint directory of the controller for `value`."""
    return os.path.join(work_dir, f"lambda_{value:g}")


def _per_lambda(values):
    return {
        "mean": values.mean(axis=0).tolist(),
        "std": values.std(axis=0).tolist(),
        "values": values.T.tolist(),
    }


# Figure 3 (right): cost budget ----------------------------------------

def budget(spec, trials, seed, episodes, work_dir):
    """Best test metric against task-model batches, DGS vs AutoLoss.

    DGS runs its 50-point grid in a random order per trial. After each run,
    DGS's point is the test metric of the model it would pick then, the one
    with the lowest validation metric so far. AutoLoss's point after k controller batches is the mean
    test metric of `GUIDED_RUNS` guided runs with the controller as it was
    then, at the cost of the controller's batches so far plus one guided
    run. All guided runs and grid runs of a trial share one population.
    """
    trained = train_controller(
        ControllerJob(spec, os.path.join(work_dir, "controller"),
                      snapshots=True),
        episodes, seed,
    )
    controllers = [_clone(trained.controller, w) for w in trained.snapshots]
    episode_steps = np.asarray([e["steps"] for e in trained.history])
    ends = [min(k * EPISODES_PER_BATCH, len(episode_steps))
            for k in range(len(controllers))]
    controller_batches = np.asarray([episode_steps[:end].sum() for end in ends])
    grid = spec.dgs_weights()
    per_trial = []
    for trial in _trials(trials, "budget trials"):
        data_seed = experiments.trial_seed(seed, trial)
        split = spec.splits(data_seed)
        parts = [(schedules_lib.FixedSchedule("task"), len(grid))]
        parts += _learned_parts(controllers, data_seed)
        weights = list(grid) + [0.0] * (len(controllers) * GUIDED_RUNS)
        test, val, steps = _run_population(
            spec, parts, weights, None, split, model_seed=trial
        )
        order = np.random.default_rng([seed, trial]).permutation(len(grid))
        per_trial.append(budget_curves(
            test[:len(grid)], val[:len(grid)], steps[:len(grid)], order,
            test[len(grid):].reshape(-1, GUIDED_RUNS).mean(axis=1),
            steps[len(grid):].reshape(-1, GUIDED_RUNS).mean(axis=1),
            controller_batches,
        ))
    ratios = [t["batches_ratio"] for t in per_trial]
    reused = [t["reused_controller_ratio"] for t in per_trial]
    return {
        "study": "budget",
        "task": spec.name,
        "metric": spec.metric,
        "episodes": episodes,
        "guided_runs_per_trial": GUIDED_RUNS,
        "batches_ratio": _median_ratio(ratios),
        "batches_ratio_definition": (
            "median over trials of (AutoLoss batches to reach the trial's "
            "final DGS test metric) / (DGS batches to reach it). A trial "
            "where AutoLoss never reaches it counts as infinite, and the "
            "median is null when more than half never reach it."
        ),
        "trials_reached": sum(r is not None for r in ratios),
        "reused_controller_ratio": _median_ratio(reused),
        "reused_controller_ratio_definition": (
            "the same median when the fully trained controller already "
            "exists (trained on other data sets, as here) and only its "
            "guided run is counted"
        ),
        "controller": trained.record(),
        "controller_batches": controller_batches.tolist(),
        "per_trial": per_trial,
    }


def budget_curves(dgs_test, dgs_val, dgs_steps, order, guided_test,
                  guided_steps, controller_batches):
    """Cost curves of one budget trial.

    Args:
        dgs_test, dgs_val, dgs_steps: test metric, best validation metric
            and batches of each DGS grid member.
        order: the order in which DGS runs its grid.
        guided_test, guided_steps: per controller snapshot, the test metric
            and batches of its guided run.
        controller_batches: per snapshot, the controller's training batches
            so far.

    Returns:
        A dict with both curves as (batches, metric) lists, DGS's final
        metric, the batches each method needs to reach it (None if never),
        their ratio, and `reused_controller_ratio`: the last controller's
        guided batches over DGS's, if that run reaches DGS's final.
    """
    dgs_batches, dgs_curve = [], []
    total, best_val, chosen = 0, np.inf, None
    for index in order:
        total += int(dgs_steps[index])
        if dgs_val[index] < best_val:
            best_val, chosen = dgs_val[index], index
        dgs_batches.append(total)
        dgs_curve.append(float(dgs_test[chosen]))
    final = dgs_curve[-1]
    autoloss_batches = [
        int(c + g) for c, g in zip(controller_batches, guided_steps)
    ]
    autoloss_curve = [float(v) for v in guided_test]
    dgs_reach = _first_reach(dgs_batches, dgs_curve, final)
    autoloss_reach = _first_reach(autoloss_batches, autoloss_curve, final)
    ratio = None if autoloss_reach is None else autoloss_reach / dgs_reach
    reused = None
    if autoloss_curve[-1] <= final:
        reused = float(guided_steps[-1]) / dgs_reach
    return {
        "dgs_batches": dgs_batches, "dgs_metric": dgs_curve,
        "autoloss_batches": autoloss_batches, "autoloss_metric": autoloss_curve,
        "dgs_final": final, "dgs_batches_to_final": dgs_reach,
        "autoloss_batches_to_dgs_final": autoloss_reach,
        "batches_ratio": ratio,
        "reused_controller_ratio": reused,
    }


def _median_ratio(ratios):
    """Median of ratios where None is infinite; None if half or more are."""
    if sum(r is not None for r in ratios) * 2 <= len(ratios):
        return None
    return float(np.median([np.inf if r is None else r for r in ratios]))


def _first_reach(batches, curve, target):
    for cost, value in zip(batches, curve):
        if value <= target:
            return int(cost)
    return None


# Table 2: transfer to new data --------------------------------------

def transfer_data(spec, trials, seed, episodes, work_dir, controller=None):
    """Guide MLPs on three new data specifications with one controller.

    The controller trains on the controller partitions of data sets of
    `TRANSFER_SPECS["source"]` (or is given). On each other specification
    every trial runs the Table-1 comparison on a fresh data set.
    """
    source = dataclasses.replace(spec, data_spec=TRANSFER_SPECS["source"])
    record = None
    if controller is None:
        trained = train_controller(
            ControllerJob(source, os.path.join(work_dir, "controller")),
            episodes, seed,
        )
        controller, record = trained.controller, trained.record()
    data_sets = {}
    for name, data_spec in TRANSFER_SPECS.items():
        if name == "source":
            continue
        target = dataclasses.replace(spec, data_spec=data_spec)
        results = []
        for trial in _trials(trials, f"transfer {name}"):
            results.append(experiments.run_comparison_trial(
                target, controller, experiments.trial_seed(seed, trial),
                model_seed=trial, guided_runs=GUIDED_RUNS,
            ))
        data_sets[name] = {
            "spec": describe_spec(data_spec),
            "methods": {
                method: _summary([r[method]["test"] for r in results])
                for method in ("without_l1", "DGS", "AutoLoss")
            },
            "cost_batches": {
                "DGS_per_trial": float(np.mean(
                    [r["DGS"]["grid_steps"] for r in results])),
                "without_l1_per_trial": float(np.mean(
                    [r["without_l1"]["steps"] for r in results])),
                "AutoLoss_guided_per_trial": float(np.mean(
                    [r["AutoLoss"]["steps"] for r in results])),
            },
            "autoloss_minus_dgs": _summary(
                [r["AutoLoss"]["test"] - r["DGS"]["test"] for r in results]),
        }
    return {
        "study": "transfer-data",
        "task": spec.name,
        "metric": spec.metric,
        "episodes": episodes,
        "guided_runs_per_trial": GUIDED_RUNS,
        "source_spec": describe_spec(TRANSFER_SPECS["source"]),
        "controller": record,
        "data_sets": data_sets,
    }


# Table 3: feature ablation ----------------------------------------------

def ablation(spec, trials, seed, episodes, work_dir):
    """Test metric of controllers trained with one feature group dropped.

    Every variant trains from the same seed, data and initial weights, so
    variants differ only in the dropped group. Each trial also runs DGS in
    the same population for reference.
    """
    variants = {"none": None, **{g: g for g in FEATURE_GROUPS}}
    jobs = [
        ControllerJob(
            spec, os.path.join(work_dir, f"drop_{name}"),
            mask=feature_mask(group), label=f"controller drop {name}",
        )
        for name, group in variants.items()
    ]
    trained = dict(zip(variants, train_controllers(jobs, episodes, seed)))
    grid = spec.dgs_weights()
    values = {name: [] for name in variants}
    dgs = []
    for trial in _trials(trials, "ablation trials"):
        data_seed = experiments.trial_seed(seed, trial)
        split = spec.splits(data_seed)
        parts = [(schedules_lib.FixedSchedule("task"), len(grid))]
        parts += _learned_parts([t.controller for t in trained.values()],
                                data_seed)
        weights = list(grid) + [0.0] * (len(variants) * GUIDED_RUNS)
        test, val, _ = _run_population(
            spec, parts, weights, None, split, model_seed=trial
        )
        # DGS picks the grid member with the lowest validation metric.
        dgs.append(float(test[int(np.argmin(val[:len(grid)]))]))
        guided = test[len(grid):].reshape(len(variants), GUIDED_RUNS).mean(1)
        for name, value in zip(variants, guided):
            values[name].append(float(value))
    return {
        "study": "ablation",
        "task": spec.name,
        "metric": spec.metric,
        "episodes": episodes,
        "guided_runs_per_trial": GUIDED_RUNS,
        "feature_groups": {k: list(v) for k, v in FEATURE_GROUPS.items()},
        "variants": {
            name: {"dropped": variants[name], **_summary(values[name]),
                   "controller": trained[name].record()}
            for name in variants
        },
        "DGS": _summary(dgs),
    }
