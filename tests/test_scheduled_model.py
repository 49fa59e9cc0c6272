"""Tests for `ScheduledModel`: training, optimizers, validation, saving."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from autoloss_models import data as data_lib
from autoloss_models.l1_tasks import QuadraticRegression
from autoloss_tf import CyclicSchedule
from autoloss_tf import FixedSchedule
from autoloss_tf import LearnedSchedule
from autoloss_tf import LinearController
from autoloss_tf import MemberwiseSchedule
from autoloss_tf import MLPController
from autoloss_tf import Schedule
from autoloss_tf import feature_names


def _numpy_values(variables):
    return [v.numpy().copy() for v in variables]


def _assert_all_equal(first, second):
    assert len(first) == len(second)
    for index, (a, b) in enumerate(zip(first, second)):
        np.testing.assert_array_equal(a, b, err_msg=f"value {index}")


class ConstantActionSchedule(Schedule):
    """Returns `action` every step, even an index outside the action list."""

    def __init__(self, action, **kwargs):
        super().__init__(**kwargs)
        self.action = action

    def select(self, features, step):
        count = tf.shape(features)[0]
        return tf.fill([count], tf.constant(self.action, "int32"))

    def probabilities(self, features, step=0):
        count = tf.shape(features)[0]
        return tf.zeros([count, len(self.action_names)])


# Equivalence with keras.Model.fit.


@pytest.mark.parametrize(
    "optimizer_class, learning_rate",
    [(keras.optimizers.SGD, 0.05), (keras.optimizers.Adam, 0.01)],
    ids=["sgd", "adam"],
)
def test_single_action_matches_plain_fit(
    optimizer_class, learning_rate, make_regressor, regression_data
):
    x, y = regression_data
    fit_args = dict(batch_size=4, epochs=4, shuffle=False, verbose=0)
    scheduled = make_regressor()
    scheduled.compile(optimizer=optimizer_class(learning_rate))
    scheduled_history = scheduled.fit(x, y, **fit_args)

    plain = keras.Sequential([
        keras.Input((x.shape[1],)),
        keras.layers.Dense(
            1, kernel_initializer="ones", bias_initializer="zeros"
        ),
    ])
    plain.compile(optimizer=optimizer_class(learning_rate), loss="mse")
    plain_history = plain.fit(x, y, **fit_args)

    # Exact equality, not a tolerance: with one action the scheduled step
    # must reproduce keras.Model.fit to the last bit.
    _assert_all_equal(
        _numpy_values(scheduled.dense.weights),
        _numpy_values(plain.layers[0].weights),
    )
    assert int(scheduled.optimizer.iterations) == 12
    assert int(plain.optimizer.iterations) == 12
    assert int(scheduled.training_state.step) == 12
    # Both report the mean loss over each epoch's steps.
    np.testing.assert_allclose(
        scheduled_history.history["loss"], plain_history.history["loss"],
        rtol=1e-6,
    )


# Tracing.


def _trace_test_schedule(kind):
    if kind == "fixed":
        return FixedSchedule("mse")
    if kind == "cyclic":
        return CyclicSchedule(["mse", "l1", "l1"])
    controller = MLPController(
        num_features=len(feature_names(["mse", "l1"])), num_actions=2,
        hidden_units=4,
    )
    return LearnedSchedule(controller, seed=1)


@pytest.mark.parametrize("kind", ["fixed", "cyclic", "learned"])
def test_train_step_traced_once(kind, make_regressor, regression_data):
    x, y = regression_data
    model = make_regressor(with_l1=kind != "fixed")
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        schedule=_trace_test_schedule(kind),
    )

    model.fit(
        x, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
        feature_validation_data=(x, y),
    )
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)

    assert model.train_step_traces == 1
    assert int(model.training_state.step) == 15


# Steps per execution and XLA.


def _linear_schedule(action_names):
    """Return a seeded linear policy whose logits depend on the features."""
    names = feature_names(action_names)
    controller = LinearController(
        num_features=len(names), num_actions=len(action_names)
    )
    kernel = np.linspace(-1.0, 1.0, len(names) * len(action_names))
    controller.output_layer.kernel.assign(
        kernel.reshape(len(names), len(action_names)).astype("float32")
    )
    return LearnedSchedule(controller, seed=5)


def _fit_two_layer_net(make_two_layer_net, regression_data, step_recorder,
                       **compile_kwargs):
    x, y = regression_data
    model = make_two_layer_net()
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        schedule=_linear_schedule(["first", "second"]), **compile_kwargs,
    )
    recorder = step_recorder()
    model.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
              callbacks=[recorder])
    return model, recorder


@pytest.fixture
def op_determinism_off():
    """Turn TensorFlow op determinism off for one test, then restore it.

    Keras 3.15 ignores jit_compile=True while op determinism is on, and
    earlier tests in this process may have turned it on. TensorFlow 2.21
    has no public function that turns it off again.
    """
    from tensorflow.python.framework import config as tf_config

    determinism = tf_config._pywrap_determinism
    previous = determinism.is_enabled()
    determinism.enable(False)
    yield
    determinism.enable(previous)


@pytest.mark.parametrize("steps_per_execution", [2, 3])
def test_steps_per_execution_matches_one_step(
    steps_per_execution, make_two_layer_net, regression_data, step_recorder
):
    reference, reference_steps = _fit_two_layer_net(
        make_two_layer_net, regression_data, step_recorder, jit_compile=False
    )
    model, steps = _fit_two_layer_net(
        make_two_layer_net, regression_data, step_recorder,
        jit_compile=False, steps_per_execution=steps_per_execution,
    )

    # Each epoch has 3 steps, and Keras logs the last step of each
    # execution.
    last_steps = [2, 3] if steps_per_execution == 2 else [3]
    logged = [epoch * 3 + step - 1 for epoch in range(3)
              for step in last_steps]
    actions = reference_steps.column("action")
    assert steps.column("action") == [actions[i] for i in logged]
    assert set(actions) == {0, 1}
    assert int(model.training_state.step) == 9
    _assert_all_equal(_numpy_values(model.variables),
                      _numpy_values(reference.variables))


@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_jit_compile_matches_graph(
    steps_per_execution, op_determinism_off, make_two_layer_net,
    regression_data, step_recorder,
):
    reference, reference_steps = _fit_two_layer_net(
        make_two_layer_net, regression_data, step_recorder, jit_compile=False
    )
    model, steps = _fit_two_layer_net(
        make_two_layer_net, regression_data, step_recorder,
        jit_compile=True, steps_per_execution=steps_per_execution,
    )

    assert model.jit_compile is True
    actions = reference_steps.column("action")
    assert steps.column("action") == actions[steps_per_execution - 1::
                                             steps_per_execution]
    # XLA fuses and reorders float operations, so the weights agree to
    # rounding only.
    for value, expected in zip(_numpy_values(model.trainable_variables),
                               _numpy_values(reference.trainable_variables)):
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)


def test_eager_fit_matches_compiled(make_regressor, regression_data):
    x, y = regression_data
    histories, weights = [], []
    for run_eagerly in (True, False):
        model = make_regressor(with_l1=True)
        model.compile(optimizer=keras.optimizers.SGD(0.01),
                      schedule=CyclicSchedule(["mse", "l1"]),
                      run_eagerly=run_eagerly)
        history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False,
                            verbose=0)
        histories.append(history.history)
        weights.append(_numpy_values(model.weights))

    eager, compiled = histories
    assert eager["skipped_steps"] == compiled["skipped_steps"] == [0, 0]
    np.testing.assert_allclose(eager["loss"], compiled["loss"], rtol=1e-6)
    for eager_value, compiled_value in zip(*weights):
        np.testing.assert_allclose(eager_value, compiled_value, rtol=1e-6)


# Variable groups and optimizers.


def test_disjoint_groups_update_chosen_layer(
    make_two_layer_net, regression_data, step_recorder
):
    x, y = regression_data
    model = make_two_layer_net()
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        schedule=CyclicSchedule(["first", "second", "second"]),
    )
    layers = {"first": model.first, "second": model.second}

    def read():
        return {name: _numpy_values(layer.weights)
                for name, layer in layers.items()}

    before = read()
    recorder = step_recorder(read)
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0,
              callbacks=[recorder])

    changed_layers = []
    for after in recorder.snapshots:
        changed_layers.append([
            name for name in layers
            if any(not np.array_equal(a, b)
                   for a, b in zip(before[name], after[name]))
        ])
        before = after
    assert recorder.column("action") == [0, 1, 1, 0, 1, 1]
    assert changed_layers == [
        ["first"], ["second"], ["second"], ["first"], ["second"], ["second"],
    ]
    iterations = [int(o.iterations) for o in model.action_optimizers]
    assert iterations == [2, 4]


def test_auto_optimizer_shared_for_overlap(make_regressor, regression_data):
    x, y = regression_data
    model = make_regressor(with_l1=True)
    model.compile(optimizer=keras.optimizers.SGD(0.01))

    assert len(model.action_optimizers) == 1
    assert model.action_optimizers[0] is model.optimizer

    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations) == 3


def test_auto_optimizer_separate_for_disjoint(make_two_layer_net):
    model = make_two_layer_net()
    model.compile(optimizer=keras.optimizers.SGD(0.25))

    first, second = model.action_optimizers
    assert first is not second
    assert first is not model.optimizer
    assert second is not model.optimizer
    assert isinstance(first, keras.optimizers.SGD)
    assert float(first.learning_rate) == 0.25
    assert float(second.learning_rate) == 0.25


def test_own_optimizer_separate_for_overlap(make_two_layer_net):
    model = make_two_layer_net(layers=())
    model.add_action("a", model.mse_loss, optimizer="own")
    model.add_action("b", model.mse_loss, optimizer="own")
    model.compile(optimizer="sgd")

    assert len(model.action_optimizers) == 2
    assert model.action_optimizers[0] is not model.action_optimizers[1]


def test_shared_optimizer_mode_for_disjoint(make_two_layer_net):
    model = make_two_layer_net(optimizer="shared")
    model.compile(optimizer="sgd")

    assert len(model.action_optimizers) == 1
    assert model.action_optimizers[0] is model.optimizer


def test_same_optimizer_instance_shared(make_two_layer_net):
    shared = keras.optimizers.Adam(0.01)
    model = make_two_layer_net(layers=())
    model.add_action("first", model.mse_loss, [model.first], shared)
    model.add_action("second", model.mse_loss, [model.second], shared)
    model.compile(optimizer="sgd")

    assert len(model.action_optimizers) == 1
    assert model.action_optimizers[0] is shared


# Argument validation.


def test_add_action_duplicate_name(make_regressor):
    model = make_regressor()
    with pytest.raises(ValueError, match="unique") as error:
        model.add_action("mse", model.mse_loss)
    assert "name='mse'" in str(error.value)


def test_add_action_empty_name(make_regressor):
    model = make_regressor()
    with pytest.raises(ValueError, match="non-empty string") as error:
        model.add_action("", model.mse_loss)
    assert "name=''" in str(error.value)


def test_add_action_non_callable_loss(make_regressor):
    model = make_regressor()
    with pytest.raises(ValueError, match="callable") as error:
        model.add_action("bad", 3.0)
    assert "loss=3.0" in str(error.value)


def test_add_action_unknown_optimizer_mode(make_regressor):
    model = make_regressor()
    with pytest.raises(ValueError, match="optimizer='mine'"):
        model.add_action("bad", model.mse_loss, optimizer="mine")


@pytest.mark.parametrize("built", [True, False], ids=["built", "unbuilt"])
def test_add_action_after_compile(built, make_regressor):
    model = make_regressor(build=built)
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="before compile") as error:
        model.add_action("late", model.mse_loss)
    assert "'late'" in str(error.value)


def test_population_must_be_positive():
    with pytest.raises(ValueError, match="population=0"):
        QuadraticRegression(population=0)


def test_compile_without_actions(make_two_layer_net):
    model = make_two_layer_net(layers=())
    with pytest.raises(ValueError, match="at least one action"):
        model.compile(optimizer="sgd")


def test_compile_rejects_loss(make_regressor):
    model = make_regressor()
    with pytest.raises(ValueError, match="loss='mse'"):
        model.compile(optimizer="sgd", loss="mse")


def test_compile_empty_variable_group(make_two_layer_net):
    model = make_two_layer_net(layers=())
    model.add_action("nothing", model.mse_loss, variables=[])
    with pytest.raises(ValueError, match="empty variable group") as error:
        model.compile(optimizer="sgd")
    assert "'nothing'" in str(error.value)


def test_compile_foreign_variable(make_two_layer_net):
    model = make_two_layer_net(layers=())
    outside = keras.Variable(np.zeros(2, "float32"), name="outside")
    model.add_action("foreign", model.mse_loss, variables=[outside])
    with pytest.raises(ValueError, match="not a trainable variable") as error:
        model.compile(optimizer="sgd")
    assert "outside" in str(error.value)


def test_non_scalar_loss_raises_before_update(
    make_two_layer_net, regression_data
):
    x, y = regression_data
    model = make_two_layer_net(layers=())

    def per_sample_loss(data):
        return keras.ops.square(model(data[0]) - data[1])[:, 0]

    model.add_action("per_sample", per_sample_loss)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    initial = _numpy_values(model.trainable_variables)

    with pytest.raises(ValueError, match=re.escape("shape []")) as error:
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert "'per_sample'" in str(error.value)
    _assert_all_equal(_numpy_values(model.trainable_variables), initial)
    assert int(model.training_state.step) == 0


def test_compile_invalid_nonfinite(make_regressor):
    model = make_regressor()
    with pytest.raises(ValueError, match="nonfinite='ignore'"):
        model.compile(optimizer="sgd", nonfinite="ignore")


@pytest.mark.parametrize(
    "argument, value",
    [
        ("validation_interval", 0),
        ("validation_interval", 1.5),
        ("patience", 0),
        ("patience", True),
        ("total_steps", -1),
    ],
)
def test_compile_invalid_positive_setting(argument, value, make_regressor):
    model = make_regressor()
    with pytest.raises(ValueError, match=re.escape(f"{argument}={value!r}")):
        model.compile(optimizer="sgd", **{argument: value})


@pytest.mark.parametrize(
    "schedule",
    [FixedSchedule("missing"), CyclicSchedule(["mse", "missing"])],
    ids=["fixed", "cyclic"],
)
def test_compile_unknown_schedule_action(schedule, make_regressor):
    model = make_regressor(with_l1=True)
    with pytest.raises(ValueError, match="Unknown action name") as error:
        model.compile(optimizer="sgd", schedule=schedule)
    assert "'missing'" in str(error.value)


@pytest.mark.parametrize(
    "num_features, num_actions, expected",
    [
        (7, 2, "controller.num_features=7"),
        (8, 3, "controller.num_actions=3"),
    ],
    ids=["features", "actions"],
)
def test_compile_controller_size_mismatch(
    num_features, num_actions, expected, make_regressor
):
    model = make_regressor(with_l1=True)
    controller = LinearController(num_features, num_actions)
    with pytest.raises(ValueError, match=re.escape(expected)):
        model.compile(optimizer="sgd", schedule=LearnedSchedule(controller))


# Non-finite values.


def _data_with_nan_in_second_batch(regression_data):
    x, y = regression_data
    x = x.copy()
    x[5, 1] = np.nan
    return x, y


def test_nonfinite_loss_skipped(make_regressor, regression_data,
                                step_recorder):
    x, y = _data_with_nan_in_second_batch(regression_data)
    model = make_regressor()
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    recorder = step_recorder(lambda: (
        _numpy_values(model.dense.weights),
        model.feature_tracker.values().numpy(),
    ))

    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
              callbacks=[recorder])

    (weights_1, features_1), (weights_2, features_2), (weights_3, _) = (
        recorder.snapshots
    )
    assert recorder.column("skipped_steps") == [0, 1, 1]
    _assert_all_equal(weights_2, weights_1)
    assert not np.array_equal(weights_3[0], weights_2[0])
    # The skipped step keeps the old loss and gradient-norm features.
    np.testing.assert_array_equal(features_2[:, 1:], features_1[:, 1:])
    assert np.all(np.isfinite(model.feature_tracker.values().numpy()))
    assert int(model.optimizer.iterations) == 2


def test_nonfinite_loss_raises(make_regressor, regression_data):
    x, y = _data_with_nan_in_second_batch(regression_data)
    model = make_regressor()
    model.compile(optimizer=keras.optimizers.SGD(0.01), nonfinite="raise")

    with pytest.raises(tf.errors.InvalidArgumentError, match="nonfinite"):
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)

    reference = make_regressor()
    reference.compile(optimizer=keras.optimizers.SGD(0.01))
    reference.fit(x[:4], y[:4], batch_size=4, epochs=1, verbose=0)
    _assert_all_equal(
        _numpy_values(model.dense.weights),
        _numpy_values(reference.dense.weights),
    )
    assert int(model.optimizer.iterations) == 1


def _nan_metric(x, y):
    del x, y
    return tf.constant(float("nan"))


def test_nonfinite_validation_metric_skips(
    make_regressor, regression_data, step_recorder
):
    x, y = regression_data
    model = make_regressor()
    model.validation_metric = _nan_metric
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    initial = _numpy_values(model.dense.weights)
    recorder = step_recorder()

    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
              feature_validation_data=(x, y), callbacks=[recorder])

    _assert_all_equal(_numpy_values(model.dense.weights), initial)
    assert recorder.column("skipped_steps") == [1, 2, 3, 4, 5, 6]
    assert int(model.optimizer.iterations) == 0


def test_nonfinite_validation_metric_raises(make_regressor, regression_data):
    x, y = regression_data
    model = make_regressor()
    model.validation_metric = _nan_metric
    model.compile(optimizer=keras.optimizers.SGD(0.01), nonfinite="raise")

    with pytest.raises(tf.errors.InvalidArgumentError, match="features"):
        model.fit(x, y, batch_size=4, epochs=1, verbose=0,
                  feature_validation_data=(x, y))
    assert int(model.optimizer.iterations) == 0


def test_validation_metric_recovers_after_nan(
    make_regressor, regression_data, step_recorder
):
    x, y = regression_data
    model = make_regressor()

    def metric_nan_for_two_steps(x_val, y_val):
        mse = model.mse_loss((x_val, y_val))
        early = model.training_state.step < 2
        return tf.where(early, tf.constant(float("nan")), mse)

    model.validation_metric = metric_nan_for_two_steps
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    recorder = step_recorder()

    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
              feature_validation_data=(x, y), callbacks=[recorder])

    assert recorder.column("skipped_steps") == [1, 2, 2, 2, 2, 2]
    assert int(model.optimizer.iterations) == 4
    assert np.all(np.isfinite(model.feature_tracker.values().numpy()))


@pytest.mark.parametrize("action", [2, 5, -1])
def test_out_of_range_action_skipped(
    action, make_two_layer_net, regression_data, step_recorder
):
    x, y = regression_data
    model = make_two_layer_net()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        schedule=ConstantActionSchedule(action),
    )
    initial = _numpy_values(model.trainable_variables)
    recorder = step_recorder()

    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
              callbacks=[recorder])

    # tf.switch_case runs its last branch ("second") for an out-of-range
    # index, so any change to the weights would show the guard failed.
    _assert_all_equal(_numpy_values(model.trainable_variables), initial)
    assert recorder.column("action") == [-1] * 3
    assert recorder.column("skipped_steps") == [1, 2, 3]
    assert [int(o.iterations) for o in model.action_optimizers] == [0, 0]


# Saving.


def _make_saving_case(case, make_regressor, make_two_layer_net):
    if case == "two_layer_cyclic":
        model = make_two_layer_net()
        return model, CyclicSchedule(["first", "second", "second"])
    model = make_regressor(with_l1=True)
    if case == "regressor_cyclic":
        return model, CyclicSchedule(["mse", "l1"])
    controller = MLPController(
        num_features=len(feature_names(["mse", "l1"])), num_actions=2,
        hidden_units=4, seed=2,
    )
    decoding = "dither" if case == "regressor_dithered" else "sample"
    return model, LearnedSchedule(controller, seed=3, decoding=decoding)


def test_load_without_compile_predicts(tmp_path, make_regressor,
                                       regression_data):
    # The saved best-weight snapshot exists only after compile, so an
    # uncompiled reload skips it and gets it back from its own compile.
    x, y = regression_data
    model = make_regressor(with_l1=True)
    model.compile(optimizer="sgd", schedule=CyclicSchedule(["mse", "l1"]))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)

    restored = keras.saving.load_model(path, compile=False)

    np.testing.assert_array_equal(restored.predict(x, verbose=0),
                                  model.predict(x, verbose=0))
    restored.compile(optimizer="sgd", schedule=CyclicSchedule(["mse", "l1"]))
    history = restored.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert len(restored._best_weights) == len(model._best_weights)


@pytest.mark.parametrize(
    "case", ["regressor_cyclic", "regressor_learned", "regressor_dithered",
             "two_layer_cyclic"]
)
def test_save_load_continues_identically(
    case, tmp_path, make_regressor, make_two_layer_net, regression_data,
    step_recorder,
):
    x, y = regression_data
    fit_args = dict(batch_size=4, shuffle=False, verbose=0)
    model, schedule = _make_saving_case(
        case, make_regressor, make_two_layer_net
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), schedule=schedule)
    model.fit(x, y, epochs=1, **fit_args)
    if case == "regressor_dithered":
        # A saved residual of zeros could not tell a restored one apart.
        assert np.any(model.schedule.residual.numpy() != 0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)

    actions = {}
    for name, candidate in (("original", model), ("restored", restored)):
        recorder = step_recorder()
        candidate.fit(x, y, epochs=2, callbacks=[recorder], **fit_args)
        actions[name] = recorder.column("action")

    assert type(restored) is type(model)
    assert actions["restored"] == actions["original"]
    assert len(set(actions["original"])) == 2
    assert int(restored.training_state.step) == 9
    _assert_all_equal(
        _numpy_values(restored.variables), _numpy_values(model.variables)
    )
    np.testing.assert_array_equal(
        restored.feature_tracker.values().numpy(),
        model.feature_tracker.values().numpy(),
    )
    assert [int(o.iterations) for o in restored.action_optimizers] == [
        int(o.iterations) for o in model.action_optimizers
    ]
    for restored_optimizer, optimizer in zip(
        restored.action_optimizers, model.action_optimizers
    ):
        _assert_all_equal(
            _numpy_values(restored_optimizer.variables),
            _numpy_values(optimizer.variables),
        )


# Population mode.

DIMENSION = 4
MEMBER_L1_WEIGHTS = [0.0, 0.05, 0.1]


def _member_schedules():
    return [
        FixedSchedule("task"),
        CyclicSchedule(["task", "l1"]),
        CyclicSchedule(["task", "task", "l1"]),
    ]


@pytest.fixture
def quadratic_data():
    x, y, _ = data_lib.make_regression(32, dimension=DIMENSION, seed=0)
    return x, y


def test_population_members_match_separate_runs(quadratic_data):
    x, y = quadratic_data
    fit_args = dict(batch_size=8, epochs=3, shuffle=False, verbose=0)
    population = QuadraticRegression(
        population=3, dimension=DIMENSION, seed=1,
        task_l1_weights=MEMBER_L1_WEIGHTS,
    )
    population.compile(
        optimizer=keras.optimizers.Adam(0.01),
        schedule=MemberwiseSchedule([(s, 1) for s in _member_schedules()]),
    )
    population.fit(x, y, **fit_args)

    member_weights = _numpy_values(population.task_variables())
    for member, (schedule, l1_weight) in enumerate(
        zip(_member_schedules(), MEMBER_L1_WEIGHTS)
    ):
        single = QuadraticRegression(
            population=1, dimension=DIMENSION, seed=1,
            task_l1_weights=[l1_weight],
        )
        single.compile(optimizer=keras.optimizers.Adam(0.01),
                       schedule=schedule)
        single.fit(x, y, **fit_args)
        for weights, single_weights in zip(
            member_weights, _numpy_values(single.task_variables())
        ):
            np.testing.assert_allclose(
                weights[member], single_weights[0], rtol=0, atol=1e-5
            )
    # Different schedules must lead to different members.
    assert not np.allclose(member_weights[1][0], member_weights[1][1])
    assert not np.allclose(member_weights[1][1], member_weights[1][2])


def test_patience_stops_when_no_member_improves(quadratic_data,
                                                step_recorder):
    x, y = quadratic_data
    model = QuadraticRegression(population=2, dimension=DIMENSION)
    # A zero learning rate keeps the validation metric constant, so only
    # the first reading is a new best.
    model.compile(optimizer=keras.optimizers.SGD(0.0), patience=2)
    recorder = step_recorder()

    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0,
              feature_validation_data=(x, y), callbacks=[recorder])

    assert int(model.training_state.step) == 4
    assert recorder.column("active_members") == [2, 2, 2, 0]
    np.testing.assert_array_equal(model.training_state.best_step.numpy(),
                                  [0, 0])


def test_patience_continues_while_member_improves(quadratic_data,
                                                  step_recorder):
    x, y = quadratic_data
    model = QuadraticRegression(population=2, dimension=DIMENSION)
    # Member 1 never takes a step, so only member 0 keeps improving.
    model.compile(
        optimizer=keras.optimizers.Adam(0.01), patience=2,
        schedule=MemberwiseSchedule([
            (FixedSchedule("task"), 1), (ConstantActionSchedule(-1), 1),
        ]),
    )
    recorder = step_recorder()

    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
              feature_validation_data=(x, y), callbacks=[recorder])

    assert int(model.training_state.step) == 8
    assert recorder.column("active_members") == [2, 2, 2, 1, 1, 1, 1, 1]
    np.testing.assert_array_equal(model.training_state.best_step.numpy(),
                                  [7, 0])


def test_restore_best_weights(quadratic_data, step_recorder):
    x, y = quadratic_data
    model = QuadraticRegression(
        population=3, dimension=DIMENSION, l1_scale=20.0
    )
    # Task steps lower the validation error, then strong L1 steps raise it,
    # so members 0 and 1 reach their best inside the run.
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        schedule=MemberwiseSchedule([
            (CyclicSchedule(["task"] * 3 + ["l1"] * 9), 1),
            (CyclicSchedule(["task"] * 2 + ["l1"] * 10), 1),
            (FixedSchedule("task"), 1),
        ]),
    )
    initial = _numpy_values(model.task_variables())
    recorder = step_recorder(lambda: (
        _numpy_values(model.task_variables()),
        model.feature_tracker.validation.numpy()[:, 0],
    ))

    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
              feature_validation_data=(x, y), callbacks=[recorder])
    final = _numpy_values(model.task_variables())
    model.restore_best_weights()

    # The reading at step t is taken before that step's update, so it
    # measures the weights recorded after step t - 1.
    readings = np.stack([metric for _, metric in recorder.snapshots])
    weights_before_step = [initial] + [w for w, _ in recorder.snapshots]
    best_steps = np.argmin(readings, axis=0)
    np.testing.assert_array_equal(
        model.training_state.best_step.numpy(), best_steps
    )
    np.testing.assert_array_equal(best_steps, [3, 2, 7])
    restored = _numpy_values(model.task_variables())
    for member, step in enumerate(best_steps):
        for value, expected in zip(restored, weights_before_step[step]):
            np.testing.assert_array_equal(value[member], expected[member])
    assert not np.array_equal(restored[0][0], final[0][0])


# Fixes found by trying the library as a new user.


def test_nan_validation_data_rejected(make_regressor, regression_data):
    x, y = regression_data
    model = make_regressor()
    model.compile(optimizer="sgd")
    x_val = x.copy()
    x_val[0, 0] = np.nan
    with pytest.raises(ValueError, match="feature_validation_data"):
        model.fit(x, y, epochs=1, verbose=0,
                  feature_validation_data=(x_val, y))


def test_skipped_steps_keep_loss_log_finite(make_regressor, regression_data):
    x, y = regression_data
    x = x.copy()
    x[:4] = np.nan
    model = make_regressor()
    model.compile(optimizer="sgd")
    history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert history.history["skipped_steps"][-1] >= 1
    assert np.isfinite(history.history["loss"][-1])
