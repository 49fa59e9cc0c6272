"""Tests of the DCGAN task model on tiny 8x8 images."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from autoloss_models import dcgan
from autoloss_tf import CyclicSchedule
from autoloss_tf import feature_names

TINY = dict(image_shape=(8, 8, 1), latent_dim=4, base_filters=4,
            kernel_size=3)
GENERATOR_INDEX, DISCRIMINATOR_INDEX = 0, 1


def _images(count=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(count, 8, 8, 1)).astype("float32")


def _tiny_gan(**kwargs):
    settings = dict(TINY)
    settings.update(kwargs)
    return dcgan.DCGAN(**settings)


def _snapshot(model):
    """Copy every variable a GAN step could touch, grouped by owner."""
    def values(variables):
        return {v.path: v.numpy().copy() for v in variables}

    return {
        "generator": values(model.generator.variables),
        "discriminator": values(model.discriminator.variables),
        "generator_optimizer": values(model.generator_optimizer.variables),
        "discriminator_optimizer": values(
            model.discriminator_optimizer.variables
        ),
        "last_discriminator_error": model.last_discriminator_error.numpy(),
    }


def _assert_group_unchanged(before, after, group):
    assert before[group].keys() == after[group].keys()
    for path, value in before[group].items():
        np.testing.assert_array_equal(after[group][path], value,
                                      err_msg=path)


def _assert_trainable_changed(before, after, network):
    for variable in network.trainable_variables:
        assert not np.array_equal(after[network.name][variable.path],
                                  before[network.name][variable.path]), (
            f"{variable.path} did not change"
        )


def _assert_moving_statistics_changed(before, after, network):
    moving = [v for v in network.non_trainable_variables
              if "moving" in v.path]
    assert moving
    for variable in moving:
        assert not np.array_equal(after[network.name][variable.path],
                                  before[network.name][variable.path]), (
            f"{variable.path} did not change"
        )


def _iterations(snapshot, group):
    (value,) = [v for path, v in snapshot[group].items()
                if path.endswith("iteration")]
    return int(value)


# Actions.


def test_each_action_updates_only_its_network():
    model = _tiny_gan()
    model.compile(schedule=CyclicSchedule(["discriminator", "generator"]))
    images = _images(4)
    # The first step also evaluates both losses once to fill the features.
    model.fit(images, batch_size=4, epochs=1, verbose=0)

    before = _snapshot(model)
    model.fit(images, batch_size=4, epochs=1, verbose=0)  # generator
    after_generator = _snapshot(model)
    model.fit(images, batch_size=4, epochs=1, verbose=0)  # discriminator
    after_discriminator = _snapshot(model)

    _assert_trainable_changed(before, after_generator, model.generator)
    _assert_moving_statistics_changed(before, after_generator,
                                      model.generator)
    for group in ("discriminator", "discriminator_optimizer"):
        _assert_group_unchanged(before, after_generator, group)
    assert (after_generator["last_discriminator_error"]
            == before["last_discriminator_error"])
    assert _iterations(after_generator, "generator_optimizer") == 1

    _assert_trainable_changed(after_generator, after_discriminator,
                              model.discriminator)
    _assert_moving_statistics_changed(after_generator, after_discriminator,
                                      model.discriminator)
    for group in ("generator", "generator_optimizer"):
        _assert_group_unchanged(after_generator, after_discriminator, group)
    assert _iterations(after_discriminator, "discriminator_optimizer") == 2


def test_actions_use_own_adam_settings():
    model = _tiny_gan()
    model.compile(schedule=CyclicSchedule(["discriminator", "generator"]))
    model.fit(_images(4), batch_size=4, epochs=1, verbose=0)

    optimizers = model.action_optimizers
    assert len(optimizers) == 2
    assert optimizers[GENERATOR_INDEX] is model.generator_optimizer
    assert optimizers[DISCRIMINATOR_INDEX] is model.discriminator_optimizer
    for optimizer in optimizers:
        assert isinstance(optimizer, keras.optimizers.Adam)
        assert float(optimizer.learning_rate) == pytest.approx(2e-4)
        assert optimizer.beta_1 == 0.5


def test_cyclic_fit_logs_loss_and_action(step_recorder):
    model = _tiny_gan()
    model.compile(schedule=CyclicSchedule(["discriminator", "generator"]))
    recorder = step_recorder()

    history = model.fit(_images(8), batch_size=4, epochs=2, shuffle=False,
                        verbose=0, callbacks=[recorder])

    assert recorder.column("action") == [DISCRIMINATOR_INDEX,
                                         GENERATOR_INDEX] * 2
    assert all(math.isfinite(loss) for loss in recorder.column("loss"))
    assert len(history.history["loss"]) == 2
    assert history.history["skipped_steps"] == [0, 0]


# Features.


def test_feature_names_as_documented():
    model = _tiny_gan()
    model.compile(schedule=CyclicSchedule(["discriminator", "generator"]))

    expected = feature_names(
        ["generator", "discriminator"],
        ["loss_ratio", "log_grad_norm_ratio", "discriminator_error"],
    )
    assert model.feature_tracker.names == expected
    assert expected[1:5] == [
        "grad_norm/generator", "grad_norm/discriminator",
        "loss/generator", "loss/discriminator",
    ]


def test_gan_features_match_tracker():
    model = _tiny_gan()
    model.compile(schedule=CyclicSchedule(["discriminator", "generator"]))
    model.fit(_images(8), batch_size=4, epochs=1, verbose=0)

    tracker = model.feature_tracker
    values = tracker.values().numpy()[0]

    def feature(name):
        return values[tracker.index(name)]

    assert feature("loss_ratio") == pytest.approx(
        feature("loss/generator") / feature("loss/discriminator"), rel=1e-6
    )
    assert feature("log_grad_norm_ratio") == pytest.approx(
        math.log(feature("grad_norm/generator"))
        - math.log(feature("grad_norm/discriminator")),
        rel=1e-5,
    )
    error = feature("discriminator_error")
    assert error == model.last_discriminator_error.numpy()
    # 4 real and 4 fake images per discriminator step.
    assert error * 8 == pytest.approx(round(error * 8), abs=1e-6)


def test_classification_error_by_hand():
    real_logits = tf.constant([[1.0], [-1.0], [0.0]])
    fake_logits = tf.constant([[-2.0], [3.0], [-0.1]])

    # Wrong: the real -1.0 and 0.0 (not positive) and the fake 3.0.
    error = dcgan.classification_error(real_logits, fake_logits)

    assert float(error) == pytest.approx(3 / 6)


# Layers.


def test_batch_norm_skip_keeps_statistics():
    layer = dcgan.BatchNormalizationWithOptionalUpdate(momentum=0.9)
    inputs = tf.constant(np.random.default_rng(0).normal(
        2.0, 3.0, size=(16, 5)
    ).astype("float32"))
    layer.build(inputs.shape)
    reference = keras.layers.BatchNormalization(momentum=0.9)
    reference.build(inputs.shape)

    skipped = layer(inputs, training=True, update_statistics=False)
    expected = reference(inputs, training=True)

    np.testing.assert_allclose(skipped, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), np.zeros(5))
    np.testing.assert_array_equal(layer.moving_variance.numpy(), np.ones(5))
    layer(inputs, training=True)
    np.testing.assert_allclose(layer.moving_mean.numpy(),
                               reference.moving_mean.numpy(), rtol=1e-6)


def test_variant_without_batch_norm_trains():
    model = _tiny_gan(batch_norm=False, generator_activation="leaky_relu",
                      discriminator_activation="relu")
    model.compile(schedule=CyclicSchedule(["discriminator", "generator"]))

    history = model.fit(_images(8), batch_size=4, epochs=1, verbose=0)

    network_variables = (model.generator.variables
                         + model.discriminator.variables)
    assert all("moving" not in v.path for v in network_variables)
    assert all("norm" not in v.path for v in network_variables)
    assert math.isfinite(history.history["loss"][0])


def test_generate_shape_and_range():
    model = _tiny_gan()

    images = model.generate(5, batch_size=2)

    assert images.shape == (5, 8, 8, 1)
    assert images.dtype == np.float32
    assert np.all(np.abs(images) <= 1.0)


def test_evaluate_changes_no_network_variable():
    model = _tiny_gan()
    model.compile(schedule=CyclicSchedule(["discriminator", "generator"]))
    before = _snapshot(model)

    results = model.evaluate(_images(8), batch_size=4, verbose=0,
                             return_dict=True)

    after = _snapshot(model)
    for group in ("generator", "discriminator"):
        _assert_group_unchanged(before, after, group)
    assert set(results) == {"loss/generator", "loss/discriminator",
                            "discriminator_error"}


def test_save_load_keeps_weights(tmp_path):
    model = _tiny_gan(seed=3)
    model.compile(schedule=CyclicSchedule(["discriminator", "generator"]))
    model.fit(_images(4), batch_size=4, epochs=1, verbose=0)
    path = tmp_path / "gan.keras"

    model.save(path)
    restored = keras.saving.load_model(path)

    assert restored.get_config() == model.get_config()
    for name in ("generator", "discriminator"):
        saved = _snapshot(model)[name]
        loaded = _snapshot(restored)[name]
        assert list(saved) == list(loaded)
        for path_name, value in saved.items():
            np.testing.assert_array_equal(loaded[path_name], value)


# Arguments.


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(image_shape=(30, 28, 1)), "multiples of 4"),
     (dict(image_shape=(28, 28)), "image_shape"),
     (dict(latent_dim=0), "latent_dim=0"),
     (dict(base_filters=2.5), "base_filters=2.5"),
     (dict(kernel_size=True), "kernel_size=True"),
     (dict(generator_activation="tanh"), "generator_activation='tanh'"),
     (dict(learning_rate=0.0), "learning_rate=0.0"),
     (dict(beta_1=1.0), "beta_1=1.0"),
     (dict(population=2), "population=2")],
    ids=["odd-size", "no-channels", "latent", "filters", "kernel",
         "activation", "learning-rate", "beta", "population"],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _tiny_gan(**kwargs)
