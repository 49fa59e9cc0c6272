"""Tests for the controller networks behind `LearnedSchedule`."""

import numpy as np
import pytest
import tensorflow as tf

from autoloss_tf import LinearController
from autoloss_tf import MLPController
from autoloss_tf import make_controller

NUM_FEATURES = 5
NUM_ACTIONS = 3
FEATURE_SCALE = [1.0, 2.0, 4.0, 0.5, 10.0]


def _features(rows=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, NUM_FEATURES)).astype("float32")


def _randomize(controller, seed=1):
    """Assign random values to every weight and return them as arrays."""
    rng = np.random.default_rng(seed)
    values = []
    for variable in controller.weights:
        value = rng.normal(size=variable.shape).astype("float32")
        variable.assign(value)
        values.append(value)
    return values


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _controllers(**kwargs):
    return [
        LinearController(NUM_FEATURES, NUM_ACTIONS, **kwargs),
        MLPController(NUM_FEATURES, NUM_ACTIONS, hidden_units=4, **kwargs),
    ]


def test_linear_controller_logits_by_hand():
    controller = LinearController(
        NUM_FEATURES, NUM_ACTIONS, feature_scale=FEATURE_SCALE
    )
    kernel, bias = _randomize(controller)
    features = _features()

    expected = (features / np.array(FEATURE_SCALE)) @ kernel + bias

    np.testing.assert_allclose(controller.logits(features).numpy(), expected,
                               rtol=1e-5, atol=1e-6)


def test_mlp_controller_logits_by_hand():
    controller = MLPController(
        NUM_FEATURES, NUM_ACTIONS, hidden_units=4,
        feature_scale=FEATURE_SCALE,
    )
    hidden_kernel, hidden_bias, output_kernel, output_bias = (
        _randomize(controller)
    )
    features = _features()

    hidden = np.maximum(
        (features / np.array(FEATURE_SCALE)) @ hidden_kernel + hidden_bias, 0.0
    )
    expected = hidden @ output_kernel + output_bias

    np.testing.assert_allclose(controller.logits(features).numpy(), expected,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_probabilities_are_tempered_softmax(temperature):
    features = _features()
    for controller in _controllers(temperature=temperature):
        _randomize(controller)
        logits = controller.logits(features).numpy()
        expected = _softmax(logits / temperature)

        np.testing.assert_allclose(
            controller.probabilities(features).numpy(), expected, rtol=1e-5,
            err_msg=controller.kind,
        )
        np.testing.assert_allclose(
            controller.policy(features).probs_parameter().numpy(), expected,
            rtol=1e-5, err_msg=controller.kind,
        )


def test_initial_policy_is_uniform():
    features = _features() * 100.0
    for controller in _controllers():
        np.testing.assert_array_equal(
            controller.logits(features).numpy(),
            np.zeros((6, NUM_ACTIONS)), err_msg=controller.kind,
        )
        np.testing.assert_allclose(
            controller.probabilities(features).numpy(),
            np.full((6, NUM_ACTIONS), 1.0 / NUM_ACTIONS), rtol=1e-7,
            err_msg=controller.kind,
        )


def test_mlp_controller_seed_sets_hidden_weights():
    first = MLPController(NUM_FEATURES, NUM_ACTIONS, seed=3)
    same = MLPController(NUM_FEATURES, NUM_ACTIONS, seed=3)
    other = MLPController(NUM_FEATURES, NUM_ACTIONS, seed=4)

    kernel = first.hidden_layer.kernel.numpy()
    np.testing.assert_array_equal(same.hidden_layer.kernel.numpy(), kernel)
    assert not np.array_equal(other.hidden_layer.kernel.numpy(), kernel)


def test_config_round_trip():
    features = _features()
    for controller in _controllers(temperature=2.0,
                                   feature_scale=FEATURE_SCALE):
        _randomize(controller)
        config = controller.get_config()

        restored = type(controller).from_config(config)
        restored.set_weights(controller.get_weights())

        assert restored.get_config() == config
        np.testing.assert_array_equal(
            restored.probabilities(features).numpy(),
            controller.probabilities(features).numpy(),
            err_msg=controller.kind,
        )


def test_make_controller_kinds():
    linear = make_controller("linear", NUM_FEATURES, NUM_ACTIONS)
    mlp = make_controller("mlp", NUM_FEATURES, NUM_ACTIONS, hidden_units=7)

    assert isinstance(linear, LinearController)
    assert isinstance(mlp, MLPController)
    assert mlp.hidden_units == 7
    assert mlp.probabilities(tf.zeros([2, NUM_FEATURES])).shape == (2, 3)


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (dict(num_features=0), "num_features=0"),
        (dict(num_features=2.5), "num_features=2.5"),
        (dict(num_actions=-1), "num_actions=-1"),
        (dict(num_actions=True), "num_actions=True"),
        (dict(temperature=0.0), "temperature=0.0"),
        (dict(feature_scale=[1.0, 2.0]), "feature_scale=[1.0, 2.0]"),
        (dict(feature_scale=[1.0, 0.0, 1.0, 1.0, 1.0]), "feature_scale=["),
    ],
)
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_invalid_arguments(kind, arguments, expected):
    settings = dict(num_features=NUM_FEATURES, num_actions=NUM_ACTIONS)
    settings.update(arguments)
    with pytest.raises(ValueError) as error:
        make_controller(kind, **settings)
    assert expected in str(error.value)


def test_invalid_hidden_units():
    with pytest.raises(ValueError, match="hidden_units=0"):
        MLPController(NUM_FEATURES, NUM_ACTIONS, hidden_units=0)


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind='rnn'"):
        make_controller("rnn", NUM_FEATURES, NUM_ACTIONS)
