"""Tests of REINFORCE: the policy gradient, baselines, rewards, checkpoints."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import autoloss_tf as al
from autoloss_tf import training


def _controller(temperature=2.0):
    controller = al.LinearController(
        num_features=2, num_actions=2, temperature=temperature
    )
    kernel, bias = controller.output_layer.kernel, controller.output_layer.bias
    kernel.assign([[0.5, -0.25], [0.1, 0.3]])
    bias.assign([0.2, -0.1])
    return controller


EPISODE_FEATURES = np.array(
    [[1.0, 2.0], [0.5, -1.0], [-2.0, 0.25], [3.0, 1.0]], "float32"
)
EPISODE_ACTIONS = np.array([0, 1, 1, 0], "int32")
EPISODE_MASK = np.array([1, 1, 1, 0], "float32")


def _hand_gradient(controller, advantage):
    """d/dW of -A * sum_t m_t log softmax((x_t W + b) / T)[a_t]."""
    kernel = controller.output_layer.kernel.numpy()
    bias = controller.output_layer.bias.numpy()
    temperature = controller.temperature
    grad_kernel = np.zeros_like(kernel)
    grad_bias = np.zeros_like(bias)
    for x, a, m in zip(EPISODE_FEATURES, EPISODE_ACTIONS, EPISODE_MASK):
        z = (x @ kernel + bias) / temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        residual = -p
        residual[a] += 1.0
        grad_kernel += -advantage * m * np.outer(x, residual) / temperature
        grad_bias += -advantage * m * residual / temperature
    return grad_kernel, grad_bias


def test_policy_gradient_matches_hand_computation():
    controller = _controller()
    updater = training.ReinforceUpdater(controller)
    advantage = 3.5
    with tf.GradientTape() as tape:
        terms = updater.loss(
            EPISODE_FEATURES, EPISODE_ACTIONS, EPISODE_MASK, advantage
        )
    grads = tape.gradient(
        terms.total, [controller.output_layer.kernel, controller.output_layer.bias]
    )
    expected_kernel, expected_bias = _hand_gradient(controller, advantage)
    np.testing.assert_allclose(grads[0].numpy(), expected_kernel, rtol=1e-5)
    np.testing.assert_allclose(grads[1].numpy(), expected_bias, rtol=1e-5)


def test_policy_loss_terms_by_hand():
    controller = _controller()
    updater = training.ReinforceUpdater(controller, entropy_weight=0.5)
    terms = updater.loss(EPISODE_FEATURES, EPISODE_ACTIONS, EPISODE_MASK, 2.0)
    probabilities = controller.probabilities(EPISODE_FEATURES).numpy()
    log_p = np.log(probabilities[np.arange(4), EPISODE_ACTIONS])
    expected_log_p = (log_p * EPISODE_MASK).sum()
    entropy = -(probabilities * np.log(probabilities)).sum(axis=1)
    expected_entropy = (entropy * EPISODE_MASK).sum() / EPISODE_MASK.sum()
    np.testing.assert_allclose(float(terms.log_probability), expected_log_p, rtol=1e-5)
    np.testing.assert_allclose(float(terms.policy), -2.0 * expected_log_p, rtol=1e-5)
    np.testing.assert_allclose(float(terms.entropy), expected_entropy, rtol=1e-5)
    # A positive entropy weight lowers the loss as entropy rises.
    np.testing.assert_allclose(
        float(terms.total), -2.0 * expected_log_p - 0.5 * expected_entropy,
        rtol=1e-5,
    )


def test_update_applies_first_adam_step():
    controller = _controller()
    updater = training.ReinforceUpdater(
        controller, learning_rate=0.01, advantage_clip=100.0
    )
    updater.baseline.value = 1.0
    before = controller.output_layer.kernel.numpy().copy()
    expected_grad, _ = _hand_gradient(controller, advantage=2.0)
    entry = updater.update(
        EPISODE_FEATURES, EPISODE_ACTIONS, EPISODE_MASK, reward=3.0
    )
    after = controller.output_layer.kernel.numpy()
    # Adam's first step moves each weight by lr * g / (|g| + epsilon).
    expected = before - 0.01 * expected_grad / (np.abs(expected_grad) + 1e-7)
    np.testing.assert_allclose(after, expected, rtol=1e-4, atol=1e-7)
    assert entry["advantage"] == 2.0
    assert entry["baseline"] == 1.0


def test_advantage_is_clipped():
    updater = training.ReinforceUpdater(_controller(), advantage_clip=5.0)
    updater.baseline.value = 100.0
    high = updater.update(EPISODE_FEATURES, EPISODE_ACTIONS, EPISODE_MASK, 180.0)
    assert high["advantage"] == 5.0
    low = updater.update(EPISODE_FEATURES, EPISODE_ACTIONS, EPISODE_MASK, -50.0)
    assert low["advantage"] == -5.0


def test_moving_average_baseline_recursion():
    baseline = training.MovingAverageBaseline(decay=0.8)
    assert baseline.advantage(10.0) == 0.0
    assert baseline.update(10.0) == 10.0
    assert baseline.advantage(20.0) == pytest.approx(10.0)
    assert baseline.update(20.0) == pytest.approx(0.8 * 10 + 0.2 * 20)
    assert baseline.update(5.0) == pytest.approx(0.8 * 12.0 + 0.2 * 5.0)


def test_explicit_baseline_overrides_average():
    updater = training.ReinforceUpdater(_controller(), advantage_clip=50.0)
    updater.baseline.value = 100.0
    entry = updater.update(
        EPISODE_FEATURES, EPISODE_ACTIONS, EPISODE_MASK, 30.0, baseline=20.0
    )
    assert entry["advantage"] == 10.0
    assert updater.baseline.value == pytest.approx(0.8 * 100 + 0.2 * 30)


def test_rewards_rank_lower_error_higher():
    assert training.regression_reward(2.0, 100.0) == pytest.approx(50.0)
    assert training.regression_reward(1.0) > training.regression_reward(2.0)
    assert training.classification_reward(0.1, 9.0) == pytest.approx(-10.0)
    assert training.classification_reward(0.05) > training.classification_reward(0.1)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="decay"):
        training.MovingAverageBaseline(decay=1.0)
    with pytest.raises(ValueError, match="advantage_clip"):
        training.ReinforceUpdater(_controller(), advantage_clip=0.0)
    updater = training.ReinforceUpdater(_controller())
    with pytest.raises(ValueError, match="baseline"):
        training.EpisodicTrainer(updater, None, "/tmp", baseline="median")
    with pytest.raises(ValueError, match="at least 2"):
        training.EpisodicTrainer(
            updater, None, "/tmp", episodes_per_batch=1, baseline="batch"
        )


def _fake_batches(calls):
    """A run_batch whose episodes depend only on the batch index."""

    def run_batch(batch_index, count):
        calls.append((batch_index, count))
        rng = np.random.default_rng(batch_index)
        episodes = []
        for _ in range(count):
            features = rng.normal(size=(6, 2)).astype("float32")
            actions = rng.integers(0, 2, size=6).astype("int32")
            episodes.append(training.Episode(
                features, actions, np.ones(6, "float32"),
                reward=float(rng.normal()), metric=float(rng.uniform()),
            ))
        return episodes

    return run_batch


def test_batch_baseline_is_leave_one_out(tmp_path):
    trainer = training.EpisodicTrainer(
        training.ReinforceUpdater(_controller(), advantage_clip=100.0),
        _fake_batches([]), str(tmp_path), episodes_per_batch=3,
        baseline="batch",
    )
    history = trainer.train(3)
    rewards = [entry["reward"] for entry in history]
    for i, entry in enumerate(history):
        others = [r for j, r in enumerate(rewards) if j != i]
        assert entry["baseline"] == pytest.approx(np.mean(others))


def test_resume_loses_no_finished_episode(tmp_path):
    calls = []
    first = training.EpisodicTrainer(
        training.ReinforceUpdater(_controller()), _fake_batches(calls),
        str(tmp_path), episodes_per_batch=2,
    )
    first.train(4)
    saved = json.loads((tmp_path / "history.json").read_text())
    assert len(saved["episodes"]) == 4
    weights_after_four = [w.numpy().copy() for w in first.updater.controller.weights]

    resumed_calls = []
    second = training.EpisodicTrainer(
        training.ReinforceUpdater(_controller()), _fake_batches(resumed_calls),
        str(tmp_path), episodes_per_batch=2,
    )
    assert second.resume() == 4
    for restored, expected in zip(second.updater.controller.weights,
                                  weights_after_four):
        np.testing.assert_array_equal(restored.numpy(), expected)
    history = second.train(6)
    assert [entry["episode"] for entry in history] == list(range(6))
    assert resumed_calls == [(2, 2)]

    uninterrupted = training.EpisodicTrainer(
        training.ReinforceUpdater(_controller()), _fake_batches([]),
        str(tmp_path / "straight"), episodes_per_batch=2,
    )
    uninterrupted.train(6)
    for a, b in zip(second.updater.controller.weights,
                    uninterrupted.updater.controller.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    assert os.path.exists(tmp_path / "checkpoint.npz")


def test_progress_baseline_recovers_a_quadratic():
    baseline = training.ProgressBaseline(degree=2, decay=1.0, min_rewards=3,
                                         ridge=0.0)
    for progress in (0.0, 0.25, 0.5, 0.75):
        baseline.update(progress, 3.0 - 4.0 * progress + 2.0 * progress ** 2)
    np.testing.assert_allclose(baseline.coefficients(), [3.0, -4.0, 2.0],
                               atol=1e-9)
    assert baseline.value(1.0) == pytest.approx(1.0)


def test_progress_baseline_weights_recent_rewards():
    # Degree 0 is a weighted mean: weights 0.5^2, 0.5, 1 from oldest.
    baseline = training.ProgressBaseline(degree=0, decay=0.5, min_rewards=1)
    assert baseline.value(0.3) is None
    for reward in (8.0, 4.0, 1.0):
        baseline.update(0.1, reward)
    expected = (0.25 * 8 + 0.5 * 4 + 1.0 * 1) / 1.75
    assert baseline.value(0.9) == pytest.approx(expected)


def test_progress_baseline_before_fit_is_weighted_mean():
    baseline = training.ProgressBaseline(degree=2, decay=0.5, min_rewards=4)
    baseline.update(0.0, 1.0)
    baseline.update(0.5, 3.0)
    assert baseline.coefficients() is None
    assert baseline.value(1.0) == pytest.approx((0.5 * 1 + 3.0) / 1.5)
    restored = training.ProgressBaseline(degree=2, decay=0.5, min_rewards=4)
    restored.load_state(baseline.state())
    assert restored.points == [[0.0, 1.0], [0.5, 3.0]]


@pytest.mark.parametrize("kwargs, message", [
    (dict(degree=-1), "degree"),
    (dict(decay=0.0), "decay"),
    (dict(decay=1.5), "decay"),
    (dict(degree=3, min_rewards=3), "min_rewards"),
])
def test_progress_baseline_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        training.ProgressBaseline(**kwargs)


def test_checkpoint_round_trip(tmp_path):
    path = str(tmp_path / "nested" / "checkpoint.npz")
    history_path = str(tmp_path / "nested" / "history.json")
    arrays = {"w": np.arange(6.0).reshape(2, 3), "step": np.asarray(7)}
    state = {"run_index": 2, "history": [{"reward": 0.5}]}
    training.write_checkpoint(path, arrays, state=state,
                              history_path=history_path,
                              history={"runs": [1, 2]})

    loaded_state, loaded = training.read_checkpoint(path)
    assert loaded_state == state
    assert sorted(loaded) == ["step", "w"]
    np.testing.assert_array_equal(loaded["w"], arrays["w"])
    assert int(loaded["step"]) == 7
    with open(history_path) as f:
        assert json.load(f) == {"runs": [1, 2]}
    assert sorted(os.listdir(tmp_path / "nested")) == [
        "checkpoint.npz", "history.json"]

    # Without a state, nothing but the arrays is stored.
    training.write_checkpoint(path, {"w": np.zeros(2)})
    loaded_state, loaded = training.read_checkpoint(path)
    assert loaded_state is None
    assert list(loaded) == ["w"]


def test_variable_arrays_round_trip_and_mismatch():
    import keras

    source = [keras.Variable(np.arange(3.0)), keras.Variable(np.ones((2, 2)))]
    arrays = training.variables_to_arrays(source, "gan_")
    assert sorted(arrays) == ["gan_0", "gan_1"]
    target = [keras.Variable(np.zeros(3)), keras.Variable(np.zeros((2, 2)))]
    training.assign_from_arrays(target, {**arrays, "other": 1}, "gan_", "GAN")
    np.testing.assert_array_equal(target[0].numpy(), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(target[1].numpy(), np.ones((2, 2)))

    with pytest.raises(ValueError, match="contains 2 GAN variables, but "
                       "this run's model has 1"):
        training.assign_from_arrays(target[:1], arrays, "gan_", "GAN")
    wrong_shape = [keras.Variable(np.zeros(4)), target[1]]
    with pytest.raises(ValueError, match=r"GAN variable 0 has shape \(3,\)"):
        training.assign_from_arrays(wrong_shape, arrays, "gan_", "GAN")


@pytest.mark.parametrize("decoding", ["greedy", "dither"])
def test_episodes_need_sampled_actions(make_regressor, regression_data,
                                       decoding):
    model = make_regressor(with_l1=True)
    names = al.feature_names(["mse", "l1"])
    controller = al.LinearController(len(names), 2)
    model.compile(optimizer="sgd", schedule=al.LearnedSchedule(
        controller, decoding=decoding, record_steps=4))
    x, y = regression_data
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)

    with pytest.raises(ValueError, match=f"decoding='{decoding}'"):
        training.episodes_from_population(model, [0.0], [0.0])
