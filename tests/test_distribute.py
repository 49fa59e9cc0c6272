"""Tests for `ScheduledModel.fit` under `tf.distribute.MirroredStrategy`.

`conftest.py` splits the CPU into two logical devices before TensorFlow
initializes them, so the strategy here has two replicas. Keras splits each
global batch of 4 samples into two shards of 2.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from autoloss_models.dcgan import DCGAN
from autoloss_tf import CyclicSchedule
from autoloss_tf import LearnedSchedule
from autoloss_tf import LinearController
from autoloss_tf import feature_names
from autoloss_tf import replicas as replicas_lib

FIT_ARGS = dict(batch_size=4, shuffle=False, verbose=0)


@pytest.fixture(scope="module")
def strategy():
    """Return a MirroredStrategy over the two logical CPU devices.

    One strategy serves the whole module. A second MirroredStrategy in the
    same process starts its collective instance keys at the same number.
    TensorFlow 2.21 then matches its all-reduce with an earlier strategy's
    all-reduce of another shape and aborts the step.
    """
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        raise RuntimeError(
            "The MirroredStrategy tests need two logical CPU devices, but "
            f"TensorFlow has {devices}. TensorFlow initialized its devices "
            "before conftest.py configured them: run these tests with "
            "pytest so conftest.py is imported first."
        )
    return tf.distribute.MirroredStrategy(devices[:2])


def _replica_values(variable):
    """Return a variable's value on every replica (one entry without one)."""
    value = getattr(variable, "value", variable)
    components = getattr(value, "values", None)
    if components is None:
        return [np.asarray(value)]
    return [component.numpy() for component in components]


def _model_variables(model):
    optimizer_variables = [
        v for optimizer in model.action_optimizers for v in optimizer.variables
    ]
    return list(model.variables) + optimizer_variables


def _single_values(variables):
    return [_replica_values(v)[0] for v in variables]


def _learned_schedule(action_names, decoding="sample"):
    """Return a seeded linear policy whose logits depend on the features."""
    names = feature_names(action_names)
    controller = LinearController(
        num_features=len(names), num_actions=len(action_names)
    )
    kernel = np.linspace(-1.0, 1.0, len(names) * len(action_names))
    controller.output_layer.kernel.assign(
        kernel.reshape(len(names), len(action_names)).astype("float32")
    )
    return LearnedSchedule(controller, seed=5, decoding=decoding)


def _fit_two_layer_net(make_two_layer_net, regression_data, step_recorder,
                       schedule_factory, optimizer_factory, epochs=3):
    x, y = regression_data
    model = make_two_layer_net()
    model.compile(
        optimizer=optimizer_factory(), schedule=schedule_factory(),
        jit_compile=False,
    )
    recorder = step_recorder()
    model.fit(x, y, epochs=epochs, callbacks=[recorder], **FIT_ARGS)
    return model, recorder


SCHEDULES = {
    "cyclic": lambda: CyclicSchedule(["first", "second", "second"]),
    "learned": lambda: _learned_schedule(["first", "second"]),
    "dithered": lambda: _learned_schedule(["first", "second"], "dither"),
}


@pytest.mark.parametrize("kind", sorted(SCHEDULES))
def test_replicas_stay_identical(
    kind, strategy, make_two_layer_net, regression_data, step_recorder
):
    with strategy.scope():
        model, _ = _fit_two_layer_net(
            make_two_layer_net, regression_data, step_recorder,
            SCHEDULES[kind], lambda: keras.optimizers.Adam(0.05),
        )

    variables = _model_variables(model)
    assert all(len(_replica_values(v)) == 2 for v in variables)
    for variable in variables:
        first, second = _replica_values(variable)
        np.testing.assert_array_equal(first, second, err_msg=variable.path)
    assert int(model.training_state.step.numpy()) == 9


@pytest.mark.parametrize("kind", sorted(SCHEDULES))
def test_matches_single_device(
    kind, strategy, make_two_layer_net, regression_data, step_recorder
):
    def optimizer():
        return keras.optimizers.Adam(0.05)

    single, single_steps = _fit_two_layer_net(
        make_two_layer_net, regression_data, step_recorder,
        SCHEDULES[kind], optimizer,
    )
    with strategy.scope():
        mirrored, mirrored_steps = _fit_two_layer_net(
            make_two_layer_net, regression_data, step_recorder,
            SCHEDULES[kind], optimizer,
        )

    actions = mirrored_steps.column("action")
    assert actions == single_steps.column("action")
    assert set(actions) == {0, 1}
    for name in ("first", "second"):
        np.testing.assert_allclose(
            mirrored_steps.column(f"p_{name}"),
            single_steps.column(f"p_{name}"), rtol=1e-5,
        )
    for variable, expected in zip(
        _model_variables(mirrored), _single_values(_model_variables(single))
    ):
        np.testing.assert_allclose(
            _replica_values(variable)[0], expected, rtol=1e-5, atol=1e-6,
            err_msg=variable.path,
        )


OPTIMIZER_OPTIONS = {
    "clipnorm": lambda: keras.optimizers.SGD(0.1, clipnorm=0.05),
    "global_clipnorm": lambda: keras.optimizers.SGD(
        0.1, global_clipnorm=0.05
    ),
    "weight_decay": lambda: keras.optimizers.AdamW(0.1, weight_decay=0.5),
}


def _fit_plain(optimizer, regression_data):
    x, y = regression_data
    model = keras.Sequential([
        keras.Input((x.shape[1],)),
        keras.layers.Dense(
            1, kernel_initializer="ones", bias_initializer="zeros"
        ),
    ])
    model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
    model.fit(x, y, epochs=2, **FIT_ARGS)
    return [v.numpy() for v in model.layers[0].weights]


@pytest.mark.parametrize("option", sorted(OPTIMIZER_OPTIONS))
def test_optimizer_options_match_keras(
    option, strategy, make_regressor, regression_data
):
    x, y = regression_data
    make_optimizer = OPTIMIZER_OPTIONS[option]
    with strategy.scope():
        scheduled = make_regressor()
        scheduled.compile(optimizer=make_optimizer(), jit_compile=False)
        scheduled.fit(x, y, epochs=2, **FIT_ARGS)
        plain = _fit_plain(make_optimizer(), regression_data)
        unclipped = _fit_plain(keras.optimizers.SGD(0.1), regression_data)

    # Bit-exact: the scheduled step must apply the gradient through the
    # optimizer exactly as keras.Model.fit does under the same strategy.
    for variable, expected, plain_sgd in zip(
        scheduled.dense.weights, plain, unclipped
    ):
        np.testing.assert_array_equal(_replica_values(variable)[0], expected)
        # The option changes the result, so the test can fail.
        assert not np.allclose(expected, plain_sgd)


def test_clipnorm_bounds_each_step(strategy, make_regressor, regression_data,
                                   step_recorder):
    x, y = regression_data
    clipnorm, learning_rate = 0.05, 0.1
    with strategy.scope():
        model = make_regressor()
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate, clipnorm=clipnorm),
            jit_compile=False,
        )
        recorder = step_recorder(lambda: _single_values(model.dense.weights))
        model.fit(x, y, epochs=1, callbacks=[recorder], **FIT_ARGS)

    kernels = [np.ones((3, 1), "float32")] + [
        snapshot[0] for snapshot in recorder.snapshots
    ]
    # Keras clips each replica's gradient, then sums the two replicas'.
    bound = 2 * learning_rate * clipnorm
    for before, after in zip(kernels, kernels[1:]):
        assert np.linalg.norm(after - before) <= bound * (1 + 1e-5)
    # The unclipped gradient norm here is far above clipnorm.
    assert float(model.feature_tracker.grad_norms[0, 0]) * np.sqrt(4) > 10 * clipnorm


@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_train_step_traced_once_per_replica(
    steps_per_execution, strategy, make_regressor, regression_data
):
    x, y = regression_data
    with strategy.scope():
        model = make_regressor(with_l1=True)
        model.compile(
            optimizer=keras.optimizers.SGD(0.01),
            schedule=_learned_schedule(["mse", "l1"]),
            steps_per_execution=steps_per_execution, jit_compile=False,
        )
        model.fit(x, y, epochs=3, **FIT_ARGS)
        model.fit(x, y, epochs=2, **FIT_ARGS)

    # MirroredStrategy runs the step function once per replica thread. With
    # several steps per execution the first step is traced outside the
    # loop and the loop body once more.
    traces_per_replica = 1 if steps_per_execution == 1 else 2
    assert model.train_step_traces == (
        traces_per_replica * strategy.num_replicas_in_sync
    )
    assert int(model.training_state.step.numpy()) == 15


def test_rejects_jit_compile(strategy):
    # Calls the check directly: with op determinism enabled (as other
    # tests in this process may leave it), Keras turns jit_compile off in
    # compile() and fit() never receives it.
    with strategy.scope():
        with pytest.raises(ValueError, match="jit_compile=False"):
            replicas_lib.check_strategy(strategy, [], jit_compile=True)


def test_rejects_other_strategies(make_regressor, regression_data):
    x, y = regression_data
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        model = make_regressor()
        model.compile(optimizer="sgd", jit_compile=False)
        with pytest.raises(ValueError, match="OneDeviceStrategy"):
            model.fit(x, y, epochs=1, **FIT_ARGS)


def test_rejects_variables_outside_scope(
    strategy, make_regressor, regression_data
):
    x, y = regression_data
    model = make_regressor()
    model.compile(optimizer="sgd", jit_compile=False)
    with strategy.scope():
        with pytest.raises(ValueError, match="strategy.scope"):
            model.fit(x, y, epochs=1, **FIT_ARGS)


def test_nan_shard_skips_every_replica(
    strategy, make_two_layer_net, regression_data, step_recorder
):
    x, y = regression_data
    x = x.copy()
    # Sample 2 lands in the second replica's shard of the first batch.
    x[2, 0] = np.nan
    with strategy.scope():
        model = make_two_layer_net()
        model.compile(
            optimizer=keras.optimizers.Adam(0.05),
            schedule=CyclicSchedule(["first", "second"]), jit_compile=False,
        )
        recorder = step_recorder()
        model.fit(x, y, epochs=1, callbacks=[recorder], **FIT_ARGS)

    assert recorder.column("action") == [-1, 1, 0]
    assert int(model.training_state.skipped.numpy()) == 1
    for variable in _model_variables(model):
        first, second = _replica_values(variable)
        np.testing.assert_array_equal(first, second, err_msg=variable.path)
    for variable in model.trainable_variables:
        assert np.all(np.isfinite(_replica_values(variable)[0])), variable.path


def test_validation_features_match_single_device(
    strategy, make_two_layer_net, regression_data, step_recorder
):
    x, y = regression_data
    histories = []
    for scope in (None, strategy):
        with scope.scope() if scope else tf.name_scope("single"):
            model = make_two_layer_net()
            model.compile(
                optimizer=keras.optimizers.Adam(0.05),
                schedule=CyclicSchedule(["first", "second"]),
                jit_compile=False,
            )
            recorder = step_recorder()
            model.fit(
                x, y, epochs=2, callbacks=[recorder],
                feature_validation_data=(x[:6], y[:6]), **FIT_ARGS
            )
        histories.append(recorder.column("val_metric"))

    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-5)


def test_steps_per_execution_matches_one_step(
    strategy, make_two_layer_net, regression_data, step_recorder
):
    runs = {}
    for steps_per_execution in (1, 2):
        with strategy.scope():
            model = make_two_layer_net()
            model.compile(
                optimizer=keras.optimizers.Adam(0.05),
                schedule=_learned_schedule(["first", "second"]),
                steps_per_execution=steps_per_execution, jit_compile=False,
            )
            recorder = step_recorder()
            x, y = regression_data
            model.fit(x, y, epochs=3, callbacks=[recorder], **FIT_ARGS)
        runs[steps_per_execution] = (model, recorder)

    single_model, single_steps = runs[1]
    multi_model, multi_steps = runs[2]
    assert int(multi_model.training_state.step.numpy()) == 9
    # Each epoch has 3 steps: one execution of 2 steps, then one of 1.
    # Keras logs the last step of every execution.
    logged_steps = [1, 2, 4, 5, 7, 8]
    assert multi_steps.column("action") == [
        single_steps.column("action")[i] for i in logged_steps
    ]
    for variable, expected in zip(
        _model_variables(multi_model),
        _single_values(_model_variables(single_model)),
    ):
        for replica_value in _replica_values(variable):
            np.testing.assert_array_equal(
                replica_value, expected, err_msg=variable.path
            )


def test_overflow_shard_skips_every_replica(
    mixed_precision, strategy, make_two_layer_net, regression_data,
    step_recorder,
):
    x, y = regression_data
    x = x.copy()
    # Sample 2 lands in the second replica's shard of the first batch and
    # becomes inf in float16. Keras 3.15.1's LossScaleOptimizer checks
    # replica 0's gradients only, so on its own it would apply this step.
    x[2, 0] = 1e30
    initial_scale = 2.0**8
    with strategy.scope():
        model = make_two_layer_net()
        model.compile(
            optimizer=keras.optimizers.LossScaleOptimizer(
                keras.optimizers.Adam(0.05), initial_scale=initial_scale
            ),
            schedule=CyclicSchedule(["first", "second"]), jit_compile=False,
        )
        initial = [_replica_values(v) for v in model.trainable_variables]
        recorder = step_recorder(lambda: [
            _replica_values(v) for v in model.trainable_variables
        ])
        model.fit(x, y, epochs=1, callbacks=[recorder], **FIT_ARGS)

    assert recorder.column("action") == [-1, 1, 0]
    assert int(model.training_state.skipped.numpy()) == 1
    for before, after in zip(initial, recorder.snapshots[0]):
        for replica_before, replica_after in zip(before, after):
            np.testing.assert_array_equal(replica_after, replica_before)
    for variable in _model_variables(model):
        first, second = _replica_values(variable)
        np.testing.assert_array_equal(first, second, err_msg=variable.path)
    for variable in model.trainable_variables:
        assert np.all(np.isfinite(_replica_values(variable)[0])), variable.path
    first_optimizer, second_optimizer = model.action_optimizers
    assert _replica_values(first_optimizer.dynamic_scale) == [
        initial_scale / 2
    ] * 2
    assert _replica_values(second_optimizer.dynamic_scale) == [
        initial_scale
    ] * 2


def test_dcgan_fits_under_strategy(strategy):
    # A DCGAN is called on latent vectors but trained on images, so Keras
    # must not build it by calling it on a batch.
    images = np.random.default_rng(0).uniform(
        -1.0, 1.0, size=(8, 8, 8, 1)
    ).astype("float32")
    with strategy.scope():
        gan = DCGAN(image_shape=(8, 8, 1), latent_dim=4, base_filters=4,
                    kernel_size=3)
        gan.compile(schedule=CyclicSchedule(["discriminator", "generator"]))
        gan.fit(images, epochs=2, **FIT_ARGS)

    assert int(gan.generator_optimizer.iterations.numpy()) == 2
    assert int(gan.discriminator_optimizer.iterations.numpy()) == 2
    # Batch-norm moving statistics are left out: Keras 3.15.1 updates them
    # on each replica from its own shard, as in a plain Keras fit.
    optimizer_variables = [
        v for optimizer in gan.action_optimizers for v in optimizer.variables
    ]
    for variable in gan.trainable_variables + optimizer_variables:
        first, second = _replica_values(variable)
        np.testing.assert_array_equal(first, second, err_msg=variable.path)


def test_evaluate_matches_single_device(strategy, make_two_layer_net,
                                        regression_data):
    x, y = regression_data
    results = []
    for scope in (None, strategy):
        with scope.scope() if scope else tf.name_scope("single"):
            model = make_two_layer_net()
            model.compile(
                optimizer=keras.optimizers.Adam(0.05),
                steps_per_execution=2, jit_compile=False,
            )
            model.fit(x, y, epochs=1, **FIT_ARGS)
            results.append(model.evaluate(
                x, y, batch_size=4, verbose=0, return_dict=True
            ))

    single, mirrored = results
    assert set(mirrored) == {"loss", "loss/first", "loss/second"}
    # `evaluate` returns the logs of the last batch: the mean of the two
    # shards' losses there equals the loss of the whole batch.
    for key in ("loss/first", "loss/second"):
        assert mirrored[key] == pytest.approx(single[key], rel=1e-5), key
