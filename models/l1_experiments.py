"""Controller training, guided runs and Table-1 comparisons for the L1 tasks.

Every run here is one compiled population fit: all members of a population
see the same full batch each step, each follows its own schedule, and a
member stops counting once `patience` steps pass without a new best
validation metric. Its reported weights are those of its best validation
step. One step scans one full batch of the training partition, so costs are
counted in task-model batches.

Partitions follow section 5.1.1 of the AutoLoss paper (Xu et al., ICLR
2019). The controller trains on `controller_train` and is rewarded on
`controller_val`. Guided runs and every baseline train on `task_train`,
select on `task_val`, and report on `test`.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

import autoloss_tf
from autoloss_tf import schedules as schedules_lib
from autoloss_tf import training
from autoloss_models import data as data_lib
from autoloss_models import l1_tasks

# Threshold grids, written as th = r - 1 for ratios r = A / B, since each
# rule applies L1 when A / B > 1 + th. S1 compares validation with
# training loss (r near 1 to 3 once a model overfits); S2 compares the L1
# loss with the validation loss (r far below 1 on these tasks); S3 compares
# two gradient norms (r over several decades).
THRESHOLD_GRIDS = {
    "S1": tuple(float(r) - 1.0 for r in (
        0.8, 0.9, 0.95, 1.0, 1.02, 1.05, 1.1, 1.2, 1.3, 1.5, 1.75, 2.0,
        2.5, 3.0, 4.0)),
    "S2": tuple(float(r) - 1.0 for r in np.logspace(-2.5, 0.5, 15)),
    "S3": tuple(float(r) - 1.0 for r in np.logspace(-2.0, 2.0, 15)),
}
THRESHOLD_RULES = ("S1", "S2", "S3")
METHODS = ("without_l1", "S1", "S2", "S3", "DGS", "AutoLoss")
BREAST_CANCER_CONTROLLER_SEED = 0


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Settings of one L1 task (values from the AutoLoss authors' code).

    Attributes:
        name: `"regression"` or `"classification"`.
        metric: name of the reported test metric.
        learning_rate: Adam learning rate of the task model.
        max_steps: step limit of one run.
        patience: steps without a better validation metric before a run
            stops.
        l1_scale: weight of the L1 action's loss.
        dgs_grid: (low, high, count) of the log-spaced DGS weight grid.
        reward_scale: C in the reward.
        baseline_decay: decay of the REINFORCE baseline.
        advantage_clip: clip of R - B.
        temperature: the controller's softmax temperature.
        feature_scale: per-feature divisors applied inside the controller.
        controller_learning_rate: Adam learning rate of the controller.
        controller_data_sets: synthetic data sets whose controller
            partitions controller training cycles through.
        steps_per_execution: train steps per compiled call.
        data_spec: the `ClassificationSpec` of synthetic classification
            data; None for the default specification.
    """

    name: str
    metric: str
    learning_rate: float
    max_steps: int
    patience: int
    l1_scale: float
    dgs_grid: tuple
    reward_scale: float
    baseline_decay: float
    advantage_clip: float
    temperature: float
    feature_scale: tuple
    controller_learning_rate: float = 1e-2
    controller_data_sets: int = 1
    steps_per_execution: int = 500
    data_spec: data_lib.ClassificationSpec = None

    def splits(self, seed, dataset="synthetic", trial=False):
        """Return the `FiveWaySplit` of data seed `seed`.

        The breast-cancer data is one fixed set of 569 rows, so its
        controller partitions always come from shuffle seed 0 and `seed`
        only reshuffles the task and test rows when `trial` is True. No
        comparison trial then reuses a row a controller trained on.
        """
        if self.name == "regression":
            if dataset != "synthetic":
                raise ValueError(
                    "The regression task only has synthetic data. "
                    f"Received: dataset={dataset!r}. Use dataset='synthetic'."
                )
            return data_lib.regression_splits(seed=seed)
        if dataset == "synthetic":
            return data_lib.classification_splits(
                spec=self.data_spec or data_lib.ClassificationSpec(), seed=seed
            )
        if dataset == "breast_cancer":
            return data_lib.breast_cancer_splits(
                seed=BREAST_CANCER_CONTROLLER_SEED,
                task_seed=seed if trial else None,
            )
        raise ValueError(
            "Unknown classification data set. "
            f"Received: dataset={dataset!r}. Choose 'synthetic' or "
            "'breast_cancer'."
        )

    def make_model(self, population, dimension, task_l1_weights=None,
                   seed=0, shared_init=True, l1_scale=None):
        """Create a population task model (`l1_scale` overrides the spec's)."""
        common = dict(
            population=population,
            l1_scale=self.l1_scale if l1_scale is None else l1_scale,
            task_l1_weights=task_l1_weights, seed=seed,
            shared_init=shared_init,
        )
        if self.name == "regression":
            return l1_tasks.QuadraticRegression(dimension=dimension, **common)
        return l1_tasks.MLPClassifier(dimension=dimension, **common)

    def reward(self, model, split_val):
        """Return (rewards, metrics) per member after best weights load."""
        if self.name == "regression":
            metrics = model.training_state.best_metric.numpy()
            rewards = [
                training.regression_reward(m, self.reward_scale)
                for m in metrics
            ]
        else:
            metrics = model.error_rate(split_val.x, split_val.y).numpy()
            rewards = [
                training.classification_reward(m, self.reward_scale)
                for m in metrics
            ]
        return np.asarray(rewards), np.asarray(metrics)

    def test_metric(self, model, split):
        """Return the reported test metric of every member."""
        values = model.test_metric(split.test.x, split.test.y)
        if self.name == "regression":
            values = values - split.noise_variance["test"]
        return values

    def dgs_weights(self):
        low, high, count = self.dgs_grid
        return np.logspace(np.log10(low), np.log10(high), count)

    def with_l1_scale(self, l1_scale):
        """Return this spec with the L1 action's weight set to `l1_scale`.

        Two features grow in proportion to the weight: the L1 loss, and the
        L1 gradient norm, which equals the weight times the share of
        nonzero parameters. Their feature scales are multiplied by
        `l1_scale / self.l1_scale`, so they reach the controller on the
        scale they have at the default weight.
        """
        if not l1_scale > 0:
            raise ValueError(
                f"`l1_scale` must be > 0. Received: l1_scale={l1_scale!r}."
            )
        ratio = float(l1_scale) / self.l1_scale
        scale = list(self.feature_scale)
        names = autoloss_tf.feature_names(("task", "l1"))
        for name in ("grad_norm/l1", "loss/l1"):
            scale[names.index(name)] *= ratio
        return dataclasses.replace(
            self, l1_scale=float(l1_scale), feature_scale=tuple(scale)
        )


REGRESSION = TaskSpec(
    name="regression", metric="excess_mse", learning_rate=5e-4,
    max_steps=20000, patience=2000, l1_scale=0.2, dgs_grid=(1e-3, 10.0, 50),
    reward_scale=2000.0, baseline_decay=0.8, advantage_clip=20.0,
    temperature=2.0, controller_learning_rate=3e-3, controller_data_sets=8,
    # progress, 2 grad norms, 2 losses, validation metric, EMA, diff EMA
    feature_scale=(1.0, 1.0, 1.0, 10.0, 1.0, 10.0, 10.0, 0.01),
)
CLASSIFICATION = TaskSpec(
    name="classification", metric="error", learning_rate=1e-3,
    max_steps=2000, patience=300, l1_scale=0.02, dgs_grid=(1e-6, 10.0, 50),
    reward_scale=100.0, baseline_decay=0.9, advantage_clip=5.0,
    temperature=2.0,
    feature_scale=(1.0, 0.1, 0.02, 1.0, 0.1, 1.0, 1.0, 0.01),
    controller_learning_rate=1e-3,
    controller_data_sets=8,
)
TASKS = {"regression": REGRESSION, "classification": CLASSIFICATION}


def get_task(name):
    """Return the `TaskSpec` called `name`."""
    if name not in TASKS:
        raise ValueError(
            f"Unknown task. Received: task={name!r}. Choose one of "
            f"{sorted(TASKS)}."
        )
    return TASKS[name]


def run_population(spec, model, schedule, train, val):
    """Fit a population model on `train` with validation features on `val`.

    Returns:
        The model with its best-validation weights loaded.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(spec.learning_rate),
        schedule=schedule, patience=spec.patience,
        total_steps=spec.max_steps,
        steps_per_execution=spec.steps_per_execution,
    )
    dataset = tf.data.Dataset.from_tensors((train.x, train.y)).repeat()
    model.fit(
        dataset, steps_per_epoch=spec.max_steps, epochs=1, verbose=0,
        shuffle=False,
        feature_validation_data=(val.x, val.y),
    )
    model.restore_best_weights()
    return model


def make_controller(spec, kind="mlp", seed=0, feature_mask=None):
    """Create a controller sized for the L1 tasks' 8 features, 2 actions."""
    return autoloss_tf.make_controller(
        kind, num_features=len(spec.feature_scale), num_actions=2,
        temperature=spec.temperature, feature_scale=list(spec.feature_scale),
        feature_mask=feature_mask,
        **({"seed": seed} if kind == "mlp" else {}),
    )


def controller_data_seed(seed, index):
    """Data seed of the index-th controller data set of training seed `seed`.

    Index 0 is `seed` itself; the others come from a stream far above the
    comparison trials' seeds (see `trial_seed`).
    """
    return seed if index == 0 else 1_000_000 + 1_000 * seed + index


def controller_batch_runner(spec, controller, splits, seed):
    """Return `run_batch(batch_index, count)` for `EpisodicTrainer`.

    `splits` is one `FiveWaySplit` or a list of them. Batch b trains on the
    controller partitions of `splits[b % len(splits)]`, so a controller can
    learn from several data sets drawn from one generator.

    Each batch trains `count` task models on the controller partitions,
    all from the same initial weights (new weights for every batch), so
    rewards within a batch differ only through the sampled schedules.
    Seeds derive from (seed, batch_index).
    """
    if not isinstance(splits, (list, tuple)):
        splits = [splits]

    def run_batch(batch_index, count):
        split = splits[batch_index % len(splits)]
        dimension = split.controller_train.x.shape[1]
        batch_seed = seed * 100003 + batch_index
        model = spec.make_model(
            count, dimension, seed=batch_seed, shared_init=True
        )
        schedule = schedules_lib.LearnedSchedule(
            controller, seed=batch_seed, record_steps=spec.max_steps
        )
        run_population(
            spec, model, schedule, split.controller_train, split.controller_val
        )
        rewards, metrics = spec.reward(model, split.controller_val)
        return training.episodes_from_population(model, rewards, metrics)

    return run_batch


def trial_seed(seed, trial):
    """Data seed of comparison trial `trial`: disjoint from training seeds."""
    return 10_000 + 1_000 * seed + trial


def comparison_schedule(spec, controller, seed, guided_runs=1):
    """Return (schedule, task_l1_weights, layout) for one comparison trial.

    `layout` maps each method to its member slice; AutoLoss gets
    `guided_runs` members that sample from the same controller.
    """
    dgs = list(spec.dgs_weights())
    parts = [(schedules_lib.FixedSchedule("task"), 1)]
    for rule in THRESHOLD_RULES:
        grid = list(THRESHOLD_GRIDS[rule])
        parts.append((schedules_lib.ThresholdSchedule(rule, grid), len(grid)))
    parts.append((schedules_lib.FixedSchedule("task"), len(dgs)))
    parts.append(
        (schedules_lib.LearnedSchedule(controller, seed=seed), guided_runs)
    )
    threshold_members = sum(len(g) for g in THRESHOLD_GRIDS.values())
    weights = [0.0] * (1 + threshold_members) + dgs + [0.0] * guided_runs
    layout, start = {}, 0
    for method, (_, count) in zip(METHODS, parts):
        layout[method] = slice(start, start + count)
        start += count
    return schedules_lib.MemberwiseSchedule(parts), weights, layout


def run_comparison_trial(spec, controller, data_seed, model_seed=0,
                         dataset="synthetic", guided_runs=1):
    """Train every method of Table 1 on one fresh data set.

    Returns:
        A dict method -> {"test", "val", "steps", and for grids the chosen
        parameter}. Grids (S1-S3 thresholds, DGS weights) pick the member
        with the lowest best validation metric on `task_val`. With
        `guided_runs` > 1, AutoLoss's values are means over its runs.
    """
    split = spec.splits(data_seed, dataset, trial=True)
    schedule, weights, layout = comparison_schedule(
        spec, controller, data_seed, guided_runs
    )
    model = spec.make_model(
        len(weights), split.task_train.x.shape[1], task_l1_weights=weights,
        seed=model_seed,
    )
    run_population(spec, model, schedule, split.task_train, split.task_val)
    test = spec.test_metric(model, split)
    val = model.training_state.best_metric.numpy()
    steps = model.training_state.active_steps.numpy()
    results = {}
    for method, members in layout.items():
        index = members.start + int(np.argmin(val[members]))
        entry = {
            "test": float(test[index]), "val": float(val[index]),
            "steps": int(steps[index]),
            "grid_steps": int(steps[members].sum()),
        }
        if method in THRESHOLD_RULES:
            entry["threshold"] = THRESHOLD_GRIDS[method][index - members.start]
        if method == "DGS":
            entry["lambda"] = float(weights[index])
        if method == "AutoLoss":
            entry.update(
                test=float(test[members].mean()), val=float(val[members].mean()),
                steps=float(steps[members].mean()),
            )
        results[method] = entry
    return results


def guided_run(spec, controller, data_seed, seed=0, dataset="synthetic",
               decoding="sample"):
    """Train one task model on fresh data under a controller.

    `decoding` is `LearnedSchedule`'s: "sample", "greedy" or "dither".

    Returns:
        dict with the test metric, validation metric, steps and the
        fraction of steps that applied L1.
    """
    split = spec.splits(data_seed, dataset, trial=True)
    model = spec.make_model(1, split.task_train.x.shape[1], seed=seed)
    schedule = schedules_lib.LearnedSchedule(
        controller, seed=seed, decoding=decoding, record_steps=spec.max_steps
    )
    run_population(spec, model, schedule, split.task_train, split.task_val)
    _, actions, active = schedule.buffer.numpy()
    active = active[:, 0]
    return {
        "test": float(spec.test_metric(model, split)[0]),
        "val": float(model.training_state.best_metric.numpy()[0]),
        "steps": int(model.training_state.active_steps.numpy()[0]),
        "l1_fraction": float((actions[active, 0] == 1).mean()),
    }
