"""Tests of the L1 task models and the experiment driver built on them."""

import dataclasses

import numpy as np
import pytest

from autoloss_models import data
from autoloss_models import l1_experiments
from autoloss_models import l1_tasks


def test_regression_prediction_by_hand():
    model = l1_tasks.QuadraticRegression(population=2, dimension=3, seed=4,
                                         shared_init=False)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    quadratic = model.quadratic.numpy()
    linear = model.linear.numpy()
    bias = model.bias.numpy()
    expected = np.stack([
        np.einsum("nd,de,ne->n", x, quadratic[p], x) / 10.0
        + x @ linear[p] + bias[p]
        for p in range(2)
    ])
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5)


def test_regression_has_273_parameters_per_member():
    model = l1_tasks.QuadraticRegression(population=3)
    total = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert total == 3 * 273


def test_shared_init_copies_members():
    shared = l1_tasks.MLPClassifier(population=3, seed=1)
    kernel = shared.hidden_kernel.numpy()
    np.testing.assert_array_equal(kernel[0], kernel[2])
    separate = l1_tasks.MLPClassifier(population=3, seed=1, shared_init=False)
    assert not np.allclose(separate.hidden_kernel.numpy()[0],
                           separate.hidden_kernel.numpy()[1])


def test_classifier_logits_and_error_by_hand():
    model = l1_tasks.MLPClassifier(population=1, dimension=4, hidden_units=3,
                                   seed=2)
    x = np.random.default_rng(1).normal(size=(6, 4)).astype("float32")
    y = np.array([0, 1, 1, 0, 1, 0], "float32")
    hidden = np.maximum(x @ model.hidden_kernel.numpy()[0]
                        + model.hidden_bias.numpy()[0], 0)
    logits = hidden @ model.output_kernel.numpy()[0] + model.output_bias.numpy()[0]
    np.testing.assert_allclose(model(x).numpy()[0], logits, rtol=1e-5)
    error = np.mean((logits > 0).astype("float32") != y)
    assert model.error_rate(x, y).numpy()[0] == pytest.approx(error)


def test_task_action_adds_member_l1_weight():
    model = l1_tasks.QuadraticRegression(
        population=2, dimension=2, task_l1_weights=[0.0, 0.5]
    )
    x = np.ones((4, 2), "float32")
    y = np.zeros(4, "float32")
    plain = model.member_loss(x, y).numpy()
    combined = model.task_action_loss((x, y)).numpy()
    norms = model.l1_norm().numpy()
    np.testing.assert_allclose(combined, plain + np.array([0.0, 0.5]) * norms,
                               rtol=1e-6)
    l1 = model.l1_action_loss((x, y)).numpy()
    np.testing.assert_allclose(l1, 0.2 * norms, rtol=1e-6)


def test_negative_l1_weight_raises():
    with pytest.raises(ValueError, match="task_l1_weights"):
        l1_tasks.QuadraticRegression(population=1, task_l1_weights=-1.0)


def _poisoned(split):
    """Replace every partition the controller must not read with NaN."""
    def nan_like(part):
        return data.Split(np.full_like(part.x, np.nan), part.y)

    return dataclasses.replace(
        split, task_train=nan_like(split.task_train),
        task_val=nan_like(split.task_val), test=nan_like(split.test),
    )


def test_controller_training_reads_only_controller_partitions():
    spec = dataclasses.replace(
        l1_experiments.CLASSIFICATION, max_steps=30, patience=30,
        steps_per_execution=10,
    )
    split = _poisoned(data.classification_splits(seed=0))
    controller = l1_experiments.make_controller(spec)
    run_batch = l1_experiments.controller_batch_runner(spec, controller, split, 0)
    episodes = run_batch(0, 2)
    assert len(episodes) == 2
    for episode in episodes:
        assert np.isfinite(episode.reward)
        assert np.isfinite(episode.features).all()
        assert episode.mask.sum() == 30


def test_comparison_trial_layout():
    spec = dataclasses.replace(
        l1_experiments.REGRESSION, max_steps=20, patience=20,
        steps_per_execution=10,
    )
    controller = l1_experiments.make_controller(spec)
    results = l1_experiments.run_comparison_trial(spec, controller, data_seed=3)
    assert list(results) == list(l1_experiments.METHODS)
    assert results["DGS"]["lambda"] in list(spec.dgs_weights())
    for rule in l1_experiments.THRESHOLD_RULES:
        assert results[rule]["threshold"] in l1_experiments.THRESHOLD_GRIDS[rule]
    assert results["DGS"]["grid_steps"] == 50 * 20
    for entry in results.values():
        assert np.isfinite(entry["test"])
