"""Tests of the further L1 studies: data specifications, cost accounting,
feature masks, per-member L1 weights, and tiny end-to-end study runs."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import autoloss_tf
from autoloss_tf import cli
from autoloss_tf import export
from autoloss_models import data
from autoloss_models import l1_experiments
from autoloss_models import l1_studies
from autoloss_models import l1_tasks

TINY = ["--max-steps", "60", "--trials", "1", "--episodes", "32"]


# Data specifications of the transfer study -------------------------------

@pytest.mark.parametrize("name", sorted(l1_studies.TRANSFER_SPECS))
def test_transfer_spec_is_reproducible_per_seed(name):
    spec = l1_studies.TRANSFER_SPECS[name]
    first = data.classification_splits(spec=spec, seed=7)
    again = data.classification_splits(spec=spec, seed=7)
    other = data.classification_splits(spec=spec, seed=8)
    np.testing.assert_array_equal(first.task_train.x, again.task_train.x)
    np.testing.assert_array_equal(first.test.y, again.test.y)
    assert not np.array_equal(first.task_train.x, other.task_train.x)
    assert first.task_train.x.shape == (200, spec.dimension)


@pytest.mark.parametrize("name, expected", [
    ("source", (32, 2, 2, 28)),
    ("more_informative", (32, 4, 4, 24)),
    ("wide_separated", (64, 3, 3, 58)),
    ("narrow_noisy", (16, 4, 2, 10)),
])
def test_transfer_spec_column_split(name, expected):
    spec = l1_studies.TRANSFER_SPECS[name]
    described = l1_studies.describe_spec(spec)
    assert (spec.dimension, described["informative_columns"],
            described["combination_columns"],
            described["noise_columns"]) == expected


@pytest.mark.parametrize("name", sorted(l1_studies.TRANSFER_SPECS))
def test_combination_columns_are_exact_combinations(name):
    spec = l1_studies.TRANSFER_SPECS[name]
    x = data.classification_splits(spec=spec, seed=3).task_train.x.astype("float64")
    informative = x[:, :spec.num_informative]
    combination = x[:, spec.num_informative:spec.num_informative + spec.num_combination]
    noise = x[:, spec.num_informative + spec.num_combination:]
    _, residual, _, _ = np.linalg.lstsq(informative, combination, rcond=None)
    assert residual.max() < 1e-6 * (combination ** 2).sum()
    # Noise columns are not combinations of the informative ones.
    _, residual, _, _ = np.linalg.lstsq(informative, noise, rcond=None)
    assert residual.min() > 0.5 * len(x)


def test_specs_differ_in_distribution():
    described = {
        name: l1_studies.describe_spec(spec)
        for name, spec in l1_studies.TRANSFER_SPECS.items()
    }
    assert len({json.dumps(d, sort_keys=True) for d in described.values()}) == 4


# Budget accounting -------------------------------------------------------

def test_budget_curves_by_hand():
    # Three DGS members run in the order 2, 0, 1.
    dgs_test = np.array([0.5, 0.3, 0.9])
    dgs_val = np.array([1.0, 0.8, 2.0])
    dgs_steps = np.array([100, 200, 50])
    curves = l1_studies.budget_curves(
        dgs_test, dgs_val, dgs_steps, order=[2, 0, 1],
        guided_test=[0.7, 0.4, 0.25], guided_steps=[30, 40, 50],
        controller_batches=[0, 60, 120],
    )
    assert curves["dgs_batches"] == [50, 150, 350]
    assert curves["dgs_metric"] == [0.9, 0.5, 0.3]
    assert curves["dgs_final"] == 0.3
    assert curves["dgs_batches_to_final"] == 350
    assert curves["autoloss_batches"] == [30, 100, 170]
    assert curves["autoloss_batches_to_dgs_final"] == 170
    assert curves["batches_ratio"] == pytest.approx(170 / 350)
    assert curves["reused_controller_ratio"] == pytest.approx(50 / 350)


def test_budget_curve_follows_validation_not_test():
    # Member 1 has the best test value but a worse validation value, so
    # DGS never picks it; AutoLoss never reaches DGS's final.
    curves = l1_studies.budget_curves(
        np.array([0.4, 0.1]), np.array([1.0, 2.0]), np.array([10, 10]),
        order=[0, 1], guided_test=[0.5], guided_steps=[5],
        controller_batches=[0],
    )
    assert curves["dgs_metric"] == [0.4, 0.4]
    assert curves["dgs_batches_to_final"] == 10
    assert curves["autoloss_batches_to_dgs_final"] is None
    assert curves["batches_ratio"] is None
    assert curves["reused_controller_ratio"] is None


def test_median_ratio_counts_unreached_as_infinite():
    assert l1_studies._median_ratio([0.5, None, 2.0]) == 2.0
    assert l1_studies._median_ratio([0.5, None, None]) is None
    assert l1_studies._median_ratio([0.25, 0.75]) == 0.5


# Feature masks, per-member L1 weights, lambda scaling ------------------

def test_feature_mask_removes_feature_from_policy():
    mask = l1_studies.feature_mask("loss_values")
    names = autoloss_tf.feature_names(("task", "l1"))
    assert [n for n, m in zip(names, mask) if m == 0] == ["loss/task", "loss/l1"]
    controller = autoloss_tf.MLPController(8, 2, feature_mask=mask, seed=1)
    controller.output_layer.kernel.assign(tf.ones([32, 2]) * [1.0, -1.0])
    features = np.ones([1, 8], "float32")
    changed = features.copy()
    changed[0, names.index("loss/task")] = 50.0
    np.testing.assert_array_equal(
        controller.probabilities(features), controller.probabilities(changed)
    )
    changed[0, names.index("val_metric")] = 50.0
    assert not np.allclose(
        controller.probabilities(features), controller.probabilities(changed)
    )


def test_feature_mask_rejects_other_values():
    with pytest.raises(ValueError, match="each 0 or 1"):
        autoloss_tf.MLPController(3, 2, feature_mask=[1, 0.5, 1])
    with pytest.raises(ValueError, match="Unknown feature group"):
        l1_studies.feature_mask("momentum")


def test_feature_mask_survives_export(tmp_path):
    mask = l1_studies.feature_mask("gradient_magnitudes")
    controller = autoloss_tf.MLPController(8, 2, feature_mask=mask)
    directory = str(tmp_path / "c")
    names = autoloss_tf.feature_names(("task", "l1"))
    export.export_controller(controller, directory, feature_names=names,
                             action_names=["task", "l1"])
    loaded = export.load_controller(directory)
    assert loaded.controller.feature_mask == mask
    assert loaded.metadata["feature_mask"] == mask


def test_l1_scale_per_member():
    model = l1_tasks.QuadraticRegression(
        population=3, dimension=2, l1_scale=[0.0, 1.0, 2.5], seed=2,
        shared_init=False,
    )
    norms = model.l1_norm().numpy()
    np.testing.assert_allclose(
        model.l1_action_loss(None).numpy(), [0.0, 1.0, 2.5] * norms, rtol=1e-6
    )
    with pytest.raises(ValueError, match="one float per member"):
        l1_tasks.QuadraticRegression(population=3, l1_scale=[0.1, 0.2])
    with pytest.raises(ValueError, match="must be >= 0"):
        l1_tasks.QuadraticRegression(population=2, l1_scale=[0.1, -0.2])


def test_with_l1_scale_rescales_l1_features():
    spec = l1_experiments.REGRESSION
    scaled = spec.with_l1_scale(2.0)
    assert scaled.l1_scale == 2.0
    ratio = np.asarray(scaled.feature_scale) / np.asarray(spec.feature_scale)
    names = autoloss_tf.feature_names(("task", "l1"))
    expected = [10.0 if n in ("grad_norm/l1", "loss/l1") else 1.0 for n in names]
    np.testing.assert_allclose(ratio, expected)
    with pytest.raises(ValueError, match="must be > 0"):
        spec.with_l1_scale(0.0)


def test_guided_runs_average_in_comparison():
    spec = dataclasses.replace(
        l1_experiments.CLASSIFICATION, max_steps=30, patience=30,
        steps_per_execution=30,
    )
    controller = l1_experiments.make_controller(spec)
    single = l1_experiments.run_comparison_trial(spec, controller, 5)
    several = l1_experiments.run_comparison_trial(
        spec, controller, 5, guided_runs=3
    )
    assert single["DGS"] == several["DGS"]
    assert isinstance(several["AutoLoss"]["steps"], float)


# Tiny end-to-end runs through the command --------------------------------

def _study(tmp_path, name, task, *extra):
    out = tmp_path / f"{name}.json"
    status = cli.main([
        "study", name, task, *TINY, "--seed", "1",
        "--work-dir", str(tmp_path / name), "--json", str(out), *extra,
    ])
    assert status == 0
    with open(out) as f:
        return json.load(f)


def _check_common(results, name, task):
    assert results["study"] == name
    assert results["task"] == task
    assert results["seed"] == 1
    assert results["trials"] == 1
    assert results["command"].startswith(f"autoloss study {name} {task}")


def _check_plot(tmp_path, results_path):
    png = tmp_path / "figure.png"
    assert cli.main(["plot", str(results_path), "--out", str(png)]) == 0
    assert png.stat().st_size > 1000


def test_lambda_robustness_end_to_end(tmp_path):
    results = _study(tmp_path, "lambda-robustness", "classification",
                     "--lambdas", "0.001", "0.1")
    _check_common(results, "lambda-robustness", "classification")
    assert results["lambdas"] == [0.001, 0.1]
    for method in ("combined", "AutoLoss"):
        assert len(results["methods"][method]["mean"]) == 2
    assert [c["episodes"] for c in results["controllers"]] == [32, 32]
    _check_plot(tmp_path, tmp_path / "lambda-robustness.json")


def test_budget_end_to_end(tmp_path):
    results = _study(tmp_path, "budget", "regression")
    _check_common(results, "budget", "regression")
    assert "batches_ratio" in results
    trial = results["per_trial"][0]
    # Untrained controller plus one snapshot per batch of 16 episodes.
    assert len(trial["autoloss_batches"]) == 3
    assert len(trial["dgs_batches"]) == 50
    controller_batches = results["controller_batches"]
    assert controller_batches[0] == 0
    assert controller_batches[-1] == results["controller"]["task_model_batches"]
    assert np.all(np.diff(trial["dgs_batches"]) > 0)
    _check_plot(tmp_path, tmp_path / "budget.json")
    # More episodes on the same work directory are rejected before any
    # training, so the snapshots stay as they were.
    snapshots = tmp_path / "budget" / "controller" / "snapshots.npz"
    before = snapshots.read_bytes()
    status = cli.main([
        "study", "budget", "regression", "--max-steps", "60", "--trials", "1",
        "--episodes", "48", "--seed", "1", "--work-dir", str(tmp_path / "budget"),
    ])
    assert status == 2
    assert snapshots.read_bytes() == before


def test_transfer_data_end_to_end(tmp_path):
    results = _study(tmp_path, "transfer-data", "classification")
    _check_common(results, "transfer-data", "classification")
    assert sorted(results["data_sets"]) == [
        "more_informative", "narrow_noisy", "wide_separated"]
    for entry in results["data_sets"].values():
        assert set(entry["methods"]) == {"without_l1", "DGS", "AutoLoss"}
        assert entry["cost_batches"]["DGS_per_trial"] > 0
    _check_plot(tmp_path, tmp_path / "transfer-data.json")


def test_ablation_end_to_end_and_resume(tmp_path, capsys):
    results = _study(tmp_path, "ablation", "regression")
    _check_common(results, "ablation", "regression")
    assert sorted(results["variants"]) == [
        "gradient_magnitudes", "loss_values", "none", "validation_metrics"]
    for entry in results["variants"].values():
        assert entry["controller"]["episodes"] == 32
    _check_plot(tmp_path, tmp_path / "ablation.json")
    # A rerun resumes every controller from its checkpoint: same result.
    again = _study(tmp_path, "ablation", "regression")
    assert again["variants"] == results["variants"]
    # Other settings on the same work directory are rejected.
    status = cli.main([
        "study", "ablation", "regression", "--max-steps", "70", "--trials",
        "1", "--episodes", "32", "--seed", "1",
        "--work-dir", str(tmp_path / "ablation"),
    ])
    assert status == 2
    assert "other settings" in capsys.readouterr().err


def test_checkpoints_checked_before_training(tmp_path):
    spec = dataclasses.replace(l1_experiments.REGRESSION, max_steps=20)
    first = l1_studies.ControllerJob(spec, str(tmp_path / "a"))
    second = l1_studies.ControllerJob(spec, str(tmp_path / "b"))
    os.makedirs(second.directory)
    settings = second.settings(episodes=32, seed=0)
    with open(os.path.join(second.directory, "history.json"), "w") as f:
        json.dump({"settings": {**settings, "episodes": 48}}, f)
    with pytest.raises(l1_studies.StudyResumeError, match="'episodes': \\(48, 32\\)"):
        l1_studies.train_controllers([first, second], episodes=32, seed=0)
    assert not os.path.exists(first.directory)


@pytest.mark.parametrize("arguments, message", [
    (["budget", "regression", "--episodes", "0"], "--episodes must be >= 2"),
    (["budget", "regression", "--trials", "0"], "--trials must be >= 1"),
    (["budget", "regression", "--seed", "-1"], "--seed must be >= 0"),
    (["lambda-robustness", "regression", "--lambdas", "nan"], "finite and > 0"),
    (["lambda-robustness", "regression", "--lambdas", "inf"], "finite and > 0"),
    (["lambda-robustness", "regression", "--lambdas", "0.1", "-1"],
     "finite and > 0"),
    (["lambda-robustness", "regression", "--lambdas", "1", "1.0000001"],
     "first 6 significant digits"),
])
def test_bad_study_values_rejected(arguments, message, tmp_path, capsys):
    status = cli.main(["study", *arguments, "--work-dir", str(tmp_path / "w")])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "w")


def test_unwritable_paths_rejected_first(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    status = cli.main(["study", "budget", "regression",
                       "--json", str(blocker / "out.json"),
                       "--work-dir", str(tmp_path / "w")])
    assert status == 2
    assert "--json: cannot write" in capsys.readouterr().err
    status = cli.main(["study", "budget", "regression",
                       "--work-dir", str(blocker / "w")])
    assert status == 2
    assert "--work-dir: cannot write" in capsys.readouterr().err


def test_transfer_with_given_controller(tmp_path):
    out = tmp_path / "given.json"
    directory = os.path.join(os.path.dirname(cli.DEFAULT_CONTROLLERS),
                             "saved_controllers", "classification")
    status = cli.main([
        "study", "transfer-data", "classification", "--max-steps", "30",
        "--trials", "1", "--controller", directory, "--json", str(out),
        "--work-dir", str(tmp_path / "unused"),
    ])
    assert status == 0
    results = json.loads(out.read_text())
    assert results["episodes"] is None
    assert results["work_dir"] is None
    assert results["controller"]["directory"] == directory
    assert results["controller"]["training"]["task"] == "classification"
    assert not os.path.exists(tmp_path / "unused")


def test_study_on_wrong_task_is_usage_error(tmp_path, capsys):
    status = cli.main(["study", "budget", "classification",
                       "--work-dir", str(tmp_path)])
    assert status == 2
    assert "runs on regression" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_study_option_of_other_study_is_usage_error(tmp_path, capsys):
    status = cli.main(["study", "ablation", "regression", "--lambdas", "1",
                       "--work-dir", str(tmp_path)])
    assert status == 2
    assert "lambda-robustness study only" in capsys.readouterr().err
