"""Tests for the optimization-state features and their `FeatureTracker`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from autoloss_tf import CyclicSchedule
from autoloss_tf import FeatureTracker
from autoloss_tf import feature_names
from autoloss_tf import ScheduledModel

LEARNING_RATE = 0.01
# Columns of the feature matrix of a model with actions ("mse", "l1").
GRAD_NORM_MSE, GRAD_NORM_L1 = 1, 2
LOSS_MSE, LOSS_L1 = 3, 4


def _float32(values):
    return np.asarray(values, "float32")


def _mse_and_gradients(kernel, bias, x, y):
    """Return the loss and (kernel, bias) gradients of mean((xW + b - y)^2)."""
    residual = x @ kernel + bias - y
    scale = 2.0 / residual.size
    return (
        np.mean(residual**2),
        scale * x.T @ residual,
        scale * residual.sum(axis=0),
    )


def _normalized_norm(*gradients):
    squares = sum(np.sum(np.square(g)) for g in gradients)
    count = sum(np.size(g) for g in gradients)
    return np.sqrt(squares) / np.sqrt(count)


def test_feature_names_order():
    names = feature_names(["task", "l1"], extra_names=["lr"])

    assert names == [
        "progress",
        "grad_norm/task", "grad_norm/l1",
        "loss/task", "loss/l1",
        "val_metric", "val_metric_ema", "val_diff_ema",
        "lr",
    ]


def test_tracker_index_and_unknown_name():
    tracker = FeatureTracker(["task", "l1"], population=2)

    assert tracker.size == 8
    assert tracker.index("loss/l1") == 4
    assert tracker.values().shape == (2, 8)
    with pytest.raises(KeyError, match="'loss/missing'"):
        tracker.index("loss/missing")


@pytest.mark.parametrize("ema_decay", [-0.1, 1.0])
def test_tracker_invalid_ema_decay(ema_decay):
    with pytest.raises(ValueError, match=f"ema_decay={ema_decay}"):
        FeatureTracker(["task"], ema_decay=ema_decay)


def test_tracker_config_round_trip():
    tracker = FeatureTracker(
        ["task", "l1"], population=3, extra_names=["lr"], ema_decay=0.5
    )

    restored = FeatureTracker.from_config(tracker.get_config())

    assert restored.names == tracker.names
    assert restored.population == 3
    assert restored.ema_decay == 0.5
    assert restored.values().shape == (3, 9)


def test_record_action_keeps_other_entries():
    tracker = FeatureTracker(["a", "b"], population=3)
    tracker.record_all(
        _float32([[1, 2], [3, 4], [5, 6]]),
        _float32([[10, 20], [30, 40], [50, 60]]),
    )

    tracker.record_action(
        np.array([0, 1, 1], "int32"),
        _float32([-1, -2, -3]),
        _float32([-10, -20, -30]),
        np.array([True, True, False]),
    )

    # Member 2 was not applied, so it keeps every old entry.
    np.testing.assert_array_equal(
        tracker.loss_values.numpy(), [[-1, 2], [3, -2], [5, 6]]
    )
    np.testing.assert_array_equal(
        tracker.grad_norms.numpy(), [[-10, 20], [30, -20], [50, 60]]
    )


def test_progress_is_step_over_total(make_regressor, regression_data,
                                     step_recorder):
    x, y = regression_data
    model = make_regressor()
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    tracker = model.feature_tracker
    recorder = step_recorder(lambda: tracker.progress.numpy()[0])

    model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
              callbacks=[recorder])
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
              callbacks=[recorder])

    # The first fit has T = 9 steps; the second continues to T = 9 + 6.
    expected = [np.float32(t) / np.float32(9) for t in range(9)]
    expected += [np.float32(t) / np.float32(15) for t in range(9, 15)]
    np.testing.assert_array_equal(recorder.snapshots, expected)


@pytest.mark.parametrize("total_steps", [20, 4])
def test_progress_uses_compile_total_steps(
    total_steps, make_regressor, regression_data, step_recorder
):
    x, y = regression_data
    model = make_regressor()
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                  total_steps=total_steps)
    tracker = model.feature_tracker
    recorder = step_recorder(lambda: tracker.progress.numpy()[0])

    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0,
              callbacks=[recorder])

    expected = [
        min(np.float32(t) / np.float32(total_steps), np.float32(1.0))
        for t in range(6)
    ]
    np.testing.assert_array_equal(recorder.snapshots, expected)


def test_only_chosen_action_entries_refresh(
    make_regressor, regression_data, step_recorder
):
    x, y = regression_data
    model = make_regressor(with_l1=True)
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE),
        schedule=CyclicSchedule(["mse", "l1"]),
    )
    recorder = step_recorder(
        lambda: model.feature_tracker.values().numpy()[0]
    )

    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
              callbacks=[recorder])
    after_mse, after_l1, after_second_mse = recorder.snapshots

    # Step 0 runs "mse". The "l1" entries keep the values of the first
    # refresh, which evaluates every action at the initial weights.
    kernel = np.ones((3, 1))
    bias = np.zeros(1)
    loss_0, kernel_grad, bias_grad = _mse_and_gradients(
        kernel, bias, x[:4], y[:4]
    )
    l1_grad_norm = _normalized_norm(0.1 * np.ones(3), np.zeros(1))
    np.testing.assert_allclose(
        after_mse[[GRAD_NORM_MSE, GRAD_NORM_L1, LOSS_MSE, LOSS_L1]],
        [_normalized_norm(kernel_grad, bias_grad), l1_grad_norm, loss_0, 0.3],
        rtol=1e-6,
    )

    # Step 1 runs "l1", so only its entries change.
    kernel = kernel - LEARNING_RATE * kernel_grad
    bias = bias - LEARNING_RATE * bias_grad
    np.testing.assert_array_equal(
        after_l1[[GRAD_NORM_MSE, LOSS_MSE]],
        after_mse[[GRAD_NORM_MSE, LOSS_MSE]],
    )
    np.testing.assert_allclose(
        after_l1[[GRAD_NORM_L1, LOSS_L1]],
        [l1_grad_norm, 0.1 * np.abs(kernel).sum()],
        rtol=1e-6,
    )

    # Step 2 runs "mse" on the third batch, so only its entries change.
    kernel = kernel - LEARNING_RATE * 0.1 * np.sign(kernel)
    loss_2, kernel_grad, bias_grad = _mse_and_gradients(
        kernel, bias, x[8:], y[8:]
    )
    np.testing.assert_array_equal(
        after_second_mse[[GRAD_NORM_L1, LOSS_L1]],
        after_l1[[GRAD_NORM_L1, LOSS_L1]],
    )
    np.testing.assert_allclose(
        after_second_mse[[GRAD_NORM_MSE, LOSS_MSE]],
        [_normalized_norm(kernel_grad, bias_grad), loss_2],
        rtol=1e-5,
    )


def test_grad_norm_matches_hand_computation(make_two_layer_net,
                                            regression_data):
    x, y = regression_data
    model = make_two_layer_net()
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))

    model.fit(x[:4], y[:4], batch_size=4, epochs=1, verbose=0)

    # Every entry comes from the initial weights, because the first refresh
    # computed the "second" entries and step 0 ran only "first".
    first_kernel, first_bias = np.full((3, 2), 0.5), np.zeros(2)
    second_kernel, second_bias = np.ones((2, 1)), np.zeros(1)
    x, y = x[:4].astype("float64"), y[:4].astype("float64")
    hidden = x @ first_kernel + first_bias
    residual = hidden @ second_kernel + second_bias - y
    output_grad = 2.0 * residual / residual.size
    hidden_grad = output_grad @ second_kernel.T
    first_norm = _normalized_norm(x.T @ hidden_grad, hidden_grad.sum(axis=0))
    second_norm = _normalized_norm(hidden.T @ output_grad, output_grad.sum())
    tracker = model.feature_tracker
    np.testing.assert_allclose(
        tracker.grad_norms.numpy()[0], [first_norm, second_norm], rtol=1e-6
    )
    np.testing.assert_allclose(
        tracker.loss_values.numpy()[0], [np.mean(residual**2)] * 2, rtol=1e-6
    )


def test_validation_ema_recursion():
    decay = 0.9
    tracker = FeatureTracker(["task"], population=2, ema_decay=decay)
    readings = np.array([[1.0, 4.0], [0.5, 5.0], [0.8, 3.0]])

    for reading in readings:
        tracker.record_validation(_float32(reading))

    # The first reading starts the EMA at the metric and the difference
    # EMA at zero.
    ema = readings[0]
    diff_ema = np.zeros(2)
    for previous, reading in zip(readings[:-1], readings[1:]):
        ema = decay * ema + (1 - decay) * reading
        diff_ema = decay * diff_ema + (1 - decay) * (reading - previous)
    np.testing.assert_allclose(
        tracker.validation.numpy(),
        np.stack([readings[-1], ema, diff_ema], axis=1),
        rtol=1e-6,
    )
    np.testing.assert_allclose(ema, [0.935, 3.99])
    np.testing.assert_allclose(diff_ema, [-0.015, -0.11], atol=1e-12)


def test_validation_nonfinite_reading_restarts_ema():
    decay = 0.5
    tracker = FeatureTracker(["task"], population=1, ema_decay=decay)

    tracker.record_validation(_float32([np.inf]))
    after_bad_reading = tracker.validation.numpy()[0]
    tracker.record_validation(_float32([2.0]))
    after_restart = tracker.validation.numpy()[0]
    tracker.record_validation(_float32([1.0]))

    np.testing.assert_array_equal(after_bad_reading, [np.inf, np.inf, 0.0])
    np.testing.assert_array_equal(after_restart, [2.0, 2.0, 0.0])
    np.testing.assert_array_equal(
        tracker.validation.numpy()[0], [1.0, 1.5, -0.5]
    )


def test_features_saved_in_keras_file(make_regressor, regression_data,
                                      tmp_path):
    x, y = regression_data
    model = make_regressor(with_l1=True)
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0,
              feature_validation_data=(x, y))
    path = tmp_path / "model.keras"

    model.save(path)
    restored = keras.saving.load_model(path)

    tracker = model.feature_tracker
    assert tracker.variables
    assert not tracker.trainable_variables
    assert all(isinstance(v, keras.Variable) for v in tracker.variables)
    values = tracker.values().numpy()
    assert np.all(values[0, 1:] != 0.0)
    np.testing.assert_array_equal(restored.feature_tracker.values(), values)
    for restored_variable, variable in zip(
        restored.feature_tracker.variables, tracker.variables
    ):
        np.testing.assert_array_equal(restored_variable, variable)


class KernelSumRegressor(ScheduledModel):
    """Dense(1) with the actions "mse" and "l1" and extra features.

    The kernel starts at ones and the bias at zero. The extra feature
    `kernel_sum` is the kernel's sum after each step.

    Args:
        names: extra feature names. Defaults to ("kernel_sum",).
        value_shape: if set, `extra_features` returns zeros of this shape
            instead. Defaults to None.
        override: if False, `extra_features` is the base class's.
            Defaults to True.
    """

    def __init__(self, names=("kernel_sum",), value_shape=None,
                 override=True, **kwargs):
        super().__init__(**kwargs)
        self.names = list(names)
        self.value_shape = value_shape
        self.override = override
        self.dense = keras.layers.Dense(
            1, kernel_initializer="ones", bias_initializer="zeros"
        )
        self.add_action("mse", self.mse_loss)
        self.add_action("l1", self.l1_loss)

    def call(self, x):
        return self.dense(x)

    def mse_loss(self, data):
        x, y = data[0], data[1]
        return keras.ops.mean(keras.ops.square(self(x) - y))

    def l1_loss(self, data):
        del data
        return 0.1 * keras.ops.sum(keras.ops.abs(self.dense.kernel))

    def extra_feature_names(self):
        return self.names

    def extra_features(self, data):
        if not self.override:
            return super().extra_features(data)
        if self.value_shape is not None:
            return tf.zeros(self.value_shape)
        return tf.reshape(tf.reduce_sum(self.dense.kernel), [1, 1])


def _kernel_sum_regressor(x, **kwargs):
    model = KernelSumRegressor(**kwargs)
    model(x[:1])
    return model


def test_extra_feature_follows_each_step(regression_data, step_recorder):
    x, y = regression_data
    model = _kernel_sum_regressor(x)
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                  schedule=CyclicSchedule(["mse", "l1"]))
    tracker = model.feature_tracker
    assert tracker.names == feature_names(["mse", "l1"], ["kernel_sum"])
    column = tracker.index("kernel_sum")
    recorder = step_recorder(lambda: (
        tracker.values().numpy()[0, column],
        model.dense.kernel.numpy().sum(),
    ))

    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
              callbacks=[recorder])

    assert len(recorder.snapshots) == 3
    for feature, kernel_sum in recorder.snapshots:
        assert feature == pytest.approx(kernel_sum, rel=1e-6)


def test_extra_feature_set_before_first_step(regression_data):
    x, y = regression_data
    model = _kernel_sum_regressor(x)
    seen = []

    class ReadFeaturesFirst(CyclicSchedule):
        def select(self, features, step):
            seen.append(features)
            return super().select(features, step)

    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE),
                  schedule=ReadFeaturesFirst(["mse"]))
    model.run_eagerly = True
    model.fit(x[:4], y[:4], batch_size=4, epochs=1, verbose=0)

    column = model.feature_tracker.index("kernel_sum")
    # The kernel starts at ones, so the first step reads its sum, 3.
    assert seen[0].numpy()[0, column] == 3.0


@pytest.mark.parametrize(
    "names, match",
    [(["loss/mse"], "differ from the standard"),
     (["a", "a"], "must be unique"),
     ([""], "non-empty strings")],
    ids=["standard-name", "duplicate", "empty"],
)
def test_extra_feature_names_invalid(names, match, regression_data):
    model = _kernel_sum_regressor(regression_data[0], names=names)
    with pytest.raises(ValueError, match=match):
        model.compile(optimizer="sgd")


def test_extra_features_wrong_shape(regression_data):
    x, y = regression_data
    model = _kernel_sum_regressor(x, value_shape=(1, 2))
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"shape \[1, 1\]"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)


def test_extra_features_not_overridden(regression_data):
    x, y = regression_data
    model = _kernel_sum_regressor(x, override=False)
    model.compile(optimizer="sgd")
    with pytest.raises(NotImplementedError, match="extra_features"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
