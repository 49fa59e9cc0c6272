"""Tests for scheduled training under the "mixed_float16" policy.

On one device. `test_distribute.py` covers mixed precision under
MirroredStrategy and `test_multi_worker.py` under
MultiWorkerMirroredStrategy.
"""

import keras
import numpy as np
import pytest

from autoloss_models.dcgan import DCGAN
from autoloss_tf import CyclicSchedule

FIT_ARGS = dict(batch_size=4, shuffle=False, verbose=0)
INITIAL_SCALE = 2.0**8


def _overflow_in_first_batch(regression_data):
    """Return the data with one value that overflows float16 in batch 1."""
    x, y = regression_data
    x = x.copy()
    x[2, 0] = 1e30
    return x, y


def _weights(variables):
    return [np.asarray(v.numpy()).copy() for v in variables]


def test_single_action_matches_plain_mixed_fit(
    mixed_precision, make_regressor, regression_data
):
    x, y = regression_data
    scheduled = make_regressor()
    scheduled.compile(optimizer=keras.optimizers.Adam(0.01))
    scheduled.fit(x, y, epochs=3, **FIT_ARGS)

    plain = keras.Sequential([
        keras.Input((x.shape[1],)),
        keras.layers.Dense(
            1, kernel_initializer="ones", bias_initializer="zeros"
        ),
    ])
    plain.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    plain.fit(x, y, epochs=3, **FIT_ARGS)

    assert scheduled.dense.compute_dtype == "float16"
    assert isinstance(
        scheduled.optimizer, keras.optimizers.LossScaleOptimizer
    )
    for mine, expected in zip(
        _weights(scheduled.dense.weights), _weights(plain.layers[0].weights)
    ):
        np.testing.assert_array_equal(mine, expected)
    # The initial scale 2**15 overflows float16 on the first batch, so both
    # skip that step and halve the scale.
    assert float(scheduled.optimizer.dynamic_scale.numpy()) == 2.0**14
    assert float(plain.optimizer.dynamic_scale.numpy()) == 2.0**14
    assert int(scheduled.optimizer.iterations) == 8
    assert int(plain.optimizer.iterations) == 8


def test_overflow_skips_step_and_halves_scale(
    mixed_precision, make_two_layer_net, regression_data, step_recorder
):
    x, y = _overflow_in_first_batch(regression_data)
    model = make_two_layer_net()
    model.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(
            keras.optimizers.Adam(0.05), initial_scale=INITIAL_SCALE
        ),
        schedule=CyclicSchedule(["first", "second"]),
    )
    initial = _weights(model.trainable_variables)
    recorder = step_recorder(lambda: _weights(model.trainable_variables))
    model.fit(x, y, epochs=1, callbacks=[recorder], **FIT_ARGS)

    assert recorder.column("action") == [-1, 1, 0]
    assert int(model.training_state.skipped.numpy()) == 1
    for before, after in zip(initial, recorder.snapshots[0]):
        np.testing.assert_array_equal(after, before)
    for variable in model.trainable_variables:
        assert np.all(np.isfinite(variable.numpy())), variable.path
    # Each action has its own loss-scaled copy of the compiled optimizer.
    first, second = model.action_optimizers
    assert float(first.dynamic_scale.numpy()) == INITIAL_SCALE / 2
    assert float(second.dynamic_scale.numpy()) == INITIAL_SCALE
    assert int(first.iterations) == 1
    assert int(second.iterations) == 1


def test_optimizer_instance_wrapped_once(mixed_precision, make_two_layer_net,
                                         regression_data):
    x, y = regression_data
    shared = keras.optimizers.SGD(0.1)
    model = make_two_layer_net(optimizer=shared)
    model.compile(optimizer="sgd", schedule=CyclicSchedule(["first", "second"]))
    model.fit(x, y, epochs=1, **FIT_ARGS)

    (optimizer,) = model.action_optimizers
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert optimizer.inner_optimizer is shared
    # Every skipped step (an overflow at the initial scale 2**15) halved
    # the one scale that both actions share.
    skipped = int(model.training_state.skipped.numpy())
    assert int(shared.iterations) == 3 - skipped
    assert float(optimizer.dynamic_scale.numpy()) == 2.0 ** (15 - skipped)


def test_no_wrapper_without_auto_scale_loss(
    mixed_precision, make_two_layer_net
):
    shared = keras.optimizers.SGD(0.1)
    model = make_two_layer_net(optimizer=shared)
    model.compile(optimizer="sgd", auto_scale_loss=False)

    assert model.action_optimizers == [shared]


def test_gradient_overflow_does_not_raise(make_regressor, regression_data,
                                          step_recorder):
    x, y = regression_data
    model = make_regressor()
    # Loss times 2**127 overflows float32 in the gradient for every loss
    # above 2, so the first steps skip and halve the scale until the
    # scaled gradients are finite. The loss itself stays finite.
    model.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.01), initial_scale=2.0**127
        ),
        nonfinite="raise",
    )
    recorder = step_recorder(lambda: float(model.optimizer.dynamic_scale))
    model.fit(x, y, epochs=2, callbacks=[recorder], **FIT_ARGS)

    skipped = int(model.training_state.skipped.numpy())
    assert skipped >= 1
    assert recorder.column("skipped_steps")[:skipped] == list(
        range(1, skipped + 1)
    )
    assert recorder.snapshots[skipped - 1] == 2.0 ** (127 - skipped)
    assert int(model.optimizer.iterations) == 6 - skipped
    for variable in model.dense.weights:
        assert np.all(np.isfinite(variable.numpy())), variable.path


def test_dcgan_fits_under_mixed_precision(mixed_precision):
    images = np.random.default_rng(0).uniform(
        -1.0, 1.0, size=(8, 8, 8, 1)
    ).astype("float32")
    gan = DCGAN(image_shape=(8, 8, 1), latent_dim=4, base_filters=4,
                kernel_size=3)
    gan.compile(schedule=CyclicSchedule(["discriminator", "generator"]))
    gan.fit(images, batch_size=4, epochs=2, shuffle=False, verbose=0)

    generator, discriminator = gan.action_optimizers
    assert generator.inner_optimizer is gan.generator_optimizer
    assert discriminator.inner_optimizer is gan.discriminator_optimizer
    assert int(gan.generator_optimizer.iterations) == 2
    assert int(gan.discriminator_optimizer.iterations) == 2
    for variable in gan.trainable_variables:
        assert variable.dtype == "float32"
        assert np.all(np.isfinite(variable.numpy())), variable.path
    assert gan.generate(2).dtype == np.float16


def test_loss_scale_factor_keeps_features(make_regressor, regression_data):
    x, y = regression_data
    models = []
    for factor in (None, 128.0):
        model = make_regressor(with_l1=True)
        model.compile(
            optimizer=keras.optimizers.SGD(0.05, loss_scale_factor=factor),
            schedule=CyclicSchedule(["mse", "l1"]),
        )
        model.fit(x, y, epochs=2, **FIT_ARGS)
        models.append(model)

    unscaled, scaled = models
    # The loss is scaled by a power of two and the gradients divided by it
    # again, so every value matches exactly.
    for mine, expected in zip(_weights(scaled.dense.weights),
                              _weights(unscaled.dense.weights)):
        np.testing.assert_array_equal(mine, expected)
    np.testing.assert_array_equal(
        scaled.feature_tracker.grad_norms.numpy(),
        unscaled.feature_tracker.grad_norms.numpy(),
    )
