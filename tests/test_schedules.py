"""Tests for the schedules that pick each step's action."""

import numpy as np
import pytest
import tensorflow as tf

from autoloss_tf import CyclicSchedule
from autoloss_tf import FixedSchedule
from autoloss_tf import LearnedSchedule
from autoloss_tf import LinearController
from autoloss_tf import MLPController
from autoloss_tf import MemberwiseSchedule
from autoloss_tf import RandomSchedule
from autoloss_tf import ThresholdSchedule
from autoloss_tf import feature_names
from autoloss_tf.schedules import inverse_cdf_sample
from autoloss_tf.schedules import sample_categorical

ACTIONS = ["task", "l1"]
FEATURES = feature_names(ACTIONS)


def _bind(schedule, population=1, actions=ACTIONS):
    schedule.bind(actions, feature_names(actions), population)
    return schedule


def _features(population, **values):
    """Return a [population, num_features] matrix of ones.

    Each keyword sets the column of that feature, with "__" in place of
    "/": `loss__task=[1.0, 2.0]` sets the column "loss/task".
    """
    matrix = np.ones((population, len(FEATURES)), "float32")
    for key, column in values.items():
        matrix[:, FEATURES.index(key.replace("__", "/"))] = column
    return tf.constant(matrix)


def _select(schedule, features, step=0):
    return schedule.select(features, tf.constant(step, "int64")).numpy()


def _linear_controller(num_features, num_actions, temperature=1.0, seed=0):
    """Return a `LinearController` with random, known weights."""
    controller = LinearController(
        num_features, num_actions, temperature=temperature
    )
    rng = np.random.default_rng(seed)
    controller.output_layer.kernel.assign(
        rng.normal(size=(num_features, num_actions)).astype("float32")
    )
    controller.output_layer.bias.assign(
        rng.normal(size=num_actions).astype("float32")
    )
    return controller


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


# FixedSchedule.


@pytest.mark.parametrize("action", ["l1", 1])
def test_fixed_schedule_selects_action(action):
    schedule = _bind(FixedSchedule(action), population=3)
    features = _features(3)

    np.testing.assert_array_equal(_select(schedule, features, step=7),
                                  [1, 1, 1])
    np.testing.assert_array_equal(
        schedule.probabilities(features).numpy(), [[0, 1]] * 3
    )


@pytest.mark.parametrize(
    "action, expected",
    [(2, "action=2 "), (-1, "action=-1 "), ("missing", "action='missing'")],
)
def test_fixed_schedule_invalid_action(action, expected):
    with pytest.raises(ValueError, match=expected):
        _bind(FixedSchedule(action))


# CyclicSchedule.


def test_cyclic_schedule_pattern_proportions():
    schedule = _bind(CyclicSchedule(["task"] + ["l1"] * 5), population=2)
    features = _features(2)

    choices = np.array([_select(schedule, features, t) for t in range(60)])

    expected = [0 if t % 6 == 0 else 1 for t in range(60)]
    np.testing.assert_array_equal(choices[:, 0], expected)
    np.testing.assert_array_equal(choices[:, 1], expected)
    assert np.sum(choices[:, 0] == 0) == 10
    assert np.sum(choices[:, 0] == 1) == 50


def test_cyclic_schedule_empty_pattern():
    with pytest.raises(ValueError, match=r"pattern=\[\]"):
        CyclicSchedule([])


def test_cyclic_schedule_unknown_action():
    with pytest.raises(ValueError, match="'missing'"):
        _bind(CyclicSchedule(["task", "missing"]))


# RandomSchedule.


def test_random_schedule_proportions():
    schedule = _bind(RandomSchedule({"task": 1.0, "l1": 3.0}, seed=4),
                     population=50)
    features = _features(50)

    choices = np.stack([_select(schedule, features, t) for t in range(40)])

    assert abs(np.mean(choices == 1) - 0.75) < 0.03
    np.testing.assert_allclose(
        schedule.probabilities(features).numpy(), [[0.25, 0.75]] * 50
    )


def test_random_schedule_seed_reproducible():
    features = _features(20)

    def draws(seed):
        schedule = _bind(RandomSchedule([0.5, 0.5], seed=seed), 20)
        return np.stack([_select(schedule, features, t) for t in range(5)])

    np.testing.assert_array_equal(draws(seed=1), draws(seed=1))
    assert not np.array_equal(draws(seed=1), draws(seed=2))


@pytest.mark.parametrize(
    "weights", [[1.0], [1.0, -1.0], [0.0, 0.0]], ids=["short", "neg", "zero"]
)
def test_random_schedule_invalid_weights(weights):
    with pytest.raises(ValueError, match="non-negative weight per action"):
        _bind(RandomSchedule(weights))


# ThresholdSchedule.


@pytest.mark.parametrize(
    "rule, a_name, b_name",
    [
        ("S1", "val_metric", "loss__task"),
        ("S2", "loss__l1", "val_metric"),
        ("S3", "grad_norm__l1", "grad_norm__task"),
    ],
)
def test_threshold_schedule_rule(rule, a_name, b_name):
    # (A - B) / B per member: 0.5, 0.25, 0.25, -0.5, and B = 0.
    a = [1.5, 1.25, 1.25, 0.5, 2.0]
    b = [1.0, 1.0, 1.0, 1.0, 0.0]
    thresholds = [0.25, 0.25, 0.2, -0.6, 0.0]
    schedule = _bind(ThresholdSchedule(rule, thresholds), population=5)
    features = _features(5, **{a_name: a, b_name: b})

    # The regularizer (index 1) runs only when the ratio is strictly above
    # the threshold. B = 0 gives a ratio of 0.
    np.testing.assert_array_equal(_select(schedule, features),
                                  [1, 0, 1, 1, 0])


def test_threshold_schedule_custom_action_names():
    actions = ["reg", "mse"]
    schedule = ThresholdSchedule(
        "S3", 0.5, task_action="mse", regularizer_action="reg"
    )
    schedule.bind(actions, feature_names(actions), 2)
    names = feature_names(actions)
    features = np.ones((2, len(names)), "float32")
    features[:, names.index("grad_norm/reg")] = [1.4, 1.6]

    np.testing.assert_array_equal(_select(schedule, tf.constant(features)),
                                  [1, 0])


def test_threshold_schedule_invalid_arguments():
    with pytest.raises(ValueError, match="rule='S4'"):
        ThresholdSchedule("S4", 0.1)
    with pytest.raises(ValueError, match="2 thresholds for population=3"):
        _bind(ThresholdSchedule("S1", [0.1, 0.2]), population=3)


# MemberwiseSchedule.


def test_memberwise_schedule_routes_slices():
    schedule = _bind(
        MemberwiseSchedule([
            (FixedSchedule("task"), 2),
            (CyclicSchedule(["task", "l1"]), 2),
            (ThresholdSchedule("S3", [0.0, 1.0]), 2),
        ]),
        population=6,
    )
    # Only the threshold slice (members 4 and 5) reads these columns. The
    # ratio 0.5 > 0.0 picks l1 for member 4, and 0.5 <= 1.0 picks task for 5.
    features = _features(
        6, grad_norm__l1=[9.0] * 4 + [1.5, 1.5], grad_norm__task=[1.0] * 6
    )

    np.testing.assert_array_equal(_select(schedule, features, step=0),
                                  [0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(_select(schedule, features, step=1),
                                  [0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(
        schedule.probabilities(features, step=1).numpy(),
        [[1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [1, 0]],
    )


def test_memberwise_schedule_count_mismatch():
    schedule = MemberwiseSchedule([(FixedSchedule("task"), 2)])
    with pytest.raises(ValueError, match="population=3"):
        _bind(schedule, population=3)


def test_memberwise_schedule_invalid_count():
    with pytest.raises(ValueError, match=r"counts=\[1, 0\]"):
        MemberwiseSchedule([(FixedSchedule("task"), 1),
                            (FixedSchedule("l1"), 0)])


# LearnedSchedule.


def test_learned_schedule_reproducible_from_step():
    population = 64
    features = tf.random.stateless_normal([population, len(FEATURES)], [0, 1])

    def sample(seed, step):
        controller = _linear_controller(len(FEATURES), 2)
        schedule = _bind(LearnedSchedule(controller, seed=seed), population)
        return _select(schedule, features, step)

    np.testing.assert_array_equal(sample(seed=5, step=3),
                                  sample(seed=5, step=3))
    assert not np.array_equal(sample(seed=5, step=3), sample(seed=5, step=4))
    assert not np.array_equal(sample(seed=5, step=3), sample(seed=6, step=3))


def test_learned_schedule_greedy_takes_argmax():
    controller = _linear_controller(len(FEATURES), 2)
    schedule = _bind(LearnedSchedule(controller, decoding="greedy"), 16)
    features = tf.random.stateless_normal([16, len(FEATURES)], [2, 3])

    logits = controller.logits(features).numpy()
    chosen = _select(schedule, features, step=9)

    np.testing.assert_array_equal(chosen, np.argmax(logits, axis=1))
    assert len(set(chosen)) == 2


def _constant_policy(logits, num_features=len(FEATURES)):
    """Return a `LinearController` whose logits are `logits` for any input."""
    controller = LinearController(num_features, len(logits))
    controller.output_layer.kernel.assign(
        np.zeros((num_features, len(logits)), "float32"))
    controller.output_layer.bias.assign(np.asarray(logits, "float32"))
    return controller


def test_dither_cycle_of_constant_policy():
    # Probabilities (1/6, 5/6): the residuals after each step are
    # (1/6, -1/6), (2/6, -2/6), then a tie at (3/6, 3/6) goes to the first
    # action, then (-2/6, 2/6), (-1/6, 1/6), (0, 0): a cycle of six steps.
    controller = _constant_policy([0.0, np.log(5.0)])
    schedule = _bind(LearnedSchedule(controller, decoding="dither"))
    features = _features(1)

    chosen = [int(_select(schedule, features, step)[0]) for step in range(12)]

    assert chosen == [1, 1, 0, 1, 1, 1] * 2


def test_dither_tracks_changing_probabilities():
    # Each member's probability of action 1 drifts with the step. With two
    # actions, its count of action 1 stays within 1 of the summed
    # probabilities after every step.
    population, steps = 3, 200
    num_features = len(FEATURES)
    controller = LinearController(num_features, 2)
    kernel = np.zeros((num_features, 2), "float32")
    kernel[0, 1] = 1.0
    controller.output_layer.kernel.assign(kernel)
    schedules = [
        _bind(LearnedSchedule(controller, decoding="dither", seed=seed),
              population)
        for seed in (3, 4)
    ]
    counts = np.zeros(population)
    expected = np.zeros(population)
    for step in range(steps):
        logit = np.array([-2.0, 0.3, 1.5]) + np.sin(step / 15.0)
        features = np.zeros((population, num_features), "float32")
        features[:, 0] = logit
        chosen = _select(schedules[0], tf.constant(features), step)
        counts += chosen == 1
        expected += 1.0 / (1.0 + np.exp(-logit))
        assert np.all(np.abs(counts - expected) < 1.0 + 1e-4), step
        # Dithering draws no random numbers, so the seed does not matter.
        np.testing.assert_array_equal(
            chosen, _select(schedules[1], tf.constant(features), step))


def test_dither_skips_non_finite_rows():
    controller = _constant_policy([0.0, np.log(3.0)])
    schedule = _bind(LearnedSchedule(controller, decoding="dither"), 2)
    finite = _features(2)
    broken = np.ones((2, len(FEATURES)), "float32")
    broken[1, 0] = np.nan

    first = _select(schedule, finite, 0)
    second = _select(schedule, tf.constant(broken), 1)
    third = _select(schedule, finite, 2)

    # Probabilities (1/4, 3/4). Both members take action 1, leaving the
    # residual (1/4, -1/4). Member 0 then ties at (2/4, 2/4), takes action
    # 0 and then action 1. Member 1 skips a step, so its tie comes a step
    # later.
    np.testing.assert_array_equal(first, [1, 1])
    np.testing.assert_array_equal(second, [0, 2])
    np.testing.assert_array_equal(third, [1, 0])


def test_dither_compiled_again_restarts_pattern():
    controller = _constant_policy([0.0, np.log(5.0)])
    schedule = _bind(LearnedSchedule(controller, decoding="dither"))
    features = _features(1)
    first = [int(_select(schedule, features, step)[0]) for step in range(4)]

    _bind(schedule)
    again = [int(_select(schedule, features, step)[0]) for step in range(4)]

    assert first == again == [1, 1, 0, 1]


def test_dither_rejects_other_population():
    schedule = _bind(LearnedSchedule(_constant_policy([0.0, 1.0]),
                                     decoding="dither"), 3)

    with pytest.raises(ValueError, match=r"shape \(3, 2\).*\(2, 2\)"):
        _bind(schedule, 2)


def test_memberwise_rejects_shared_dithered_part():
    shared = LearnedSchedule(_constant_policy([0.0, 1.0]), decoding="dither")
    schedule = MemberwiseSchedule([(shared, 1), (shared, 1)])

    with pytest.raises(ValueError, match="Create one LearnedSchedule per part"):
        _bind(schedule, 2)


def test_learned_schedule_reads_old_greedy_config():
    config = LearnedSchedule(_constant_policy([0.0, 1.0])).get_config()
    del config["decoding"]

    for greedy, decoding in ((True, "greedy"), (False, "sample")):
        restored = LearnedSchedule.from_config(dict(config, greedy=greedy))
        assert restored.decoding == decoding


def test_learned_schedule_greedy_argument_names_decoding():
    with pytest.raises(TypeError, match="decoding='greedy'"):
        LearnedSchedule(_constant_policy([0.0, 1.0]), greedy=True)


def test_learned_schedule_rejects_unknown_decoding():
    with pytest.raises(ValueError, match="decoding='argmax'"):
        LearnedSchedule(_constant_policy([0.0, 0.0]), decoding="argmax")


def test_dither_config_round_trip():
    schedule = LearnedSchedule(_constant_policy([0.0, 1.0]), seed=2,
                               decoding="dither")

    restored = LearnedSchedule.from_config(schedule.get_config())

    assert restored.decoding == "dither"
    assert restored.seed == 2


def test_learned_schedule_temperature_flattens():
    actions = ["a", "b", "c"]
    num_features = len(feature_names(actions))
    features = tf.random.stateless_normal([4, num_features], [4, 5])
    cold = _linear_controller(num_features, 3, temperature=1.0)
    hot = _linear_controller(num_features, 3, temperature=4.0)
    cold_schedule = _bind(LearnedSchedule(cold), 4, actions)
    hot_schedule = _bind(LearnedSchedule(hot), 4, actions)

    logits = cold.logits(features).numpy()
    cold_probabilities = cold_schedule.probabilities(features).numpy()
    hot_probabilities = hot_schedule.probabilities(features).numpy()

    np.testing.assert_allclose(cold_probabilities, _softmax(logits),
                               rtol=1e-5)
    np.testing.assert_allclose(hot_probabilities, _softmax(logits / 4.0),
                               rtol=1e-5)
    assert np.all(hot_probabilities.max(axis=1)
                  < cold_probabilities.max(axis=1))


def test_learned_schedule_samples_tempered_policy():
    population = 4000
    controller = _linear_controller(len(FEATURES), 2, temperature=3.0)
    schedule = _bind(LearnedSchedule(controller, seed=0), population)
    features = tf.tile(
        tf.random.stateless_normal([1, len(FEATURES)], [6, 7]),
        [population, 1],
    )

    expected = _softmax(controller.logits(features).numpy()[0] / 3.0)
    frequency_l1 = np.mean(_select(schedule, features, step=2) == 1)

    assert abs(frequency_l1 - expected[1]) < 0.03


def test_learned_schedule_records_rollout():
    population = 3
    controller = _linear_controller(len(FEATURES), 2)
    schedule = _bind(LearnedSchedule(controller, record_steps=2), population)
    features = tf.random.stateless_normal([population, len(FEATURES)], [8, 9])
    actions = tf.constant([1, 0, 1], "int32")
    active = tf.constant([True, False, True])

    schedule.observe(tf.constant(1, "int64"), features, actions, active)
    schedule.observe(tf.constant(2, "int64"), features, actions, active)

    # Only steps 0 and 1 fit into a two-step buffer.
    recorded_features, recorded_actions, recorded_active = (
        schedule.buffer.numpy()
    )
    np.testing.assert_array_equal(recorded_features[1], features.numpy())
    np.testing.assert_array_equal(recorded_actions, [[0, 0, 0], [1, 0, 1]])
    np.testing.assert_array_equal(
        recorded_active, [[False, False, False], [True, False, True]]
    )


@pytest.mark.parametrize(
    "num_features, num_actions, expected",
    [
        (5, 2, "controller.num_features=5"),
        (len(FEATURES), 3, "controller.num_actions=3"),
    ],
    ids=["features", "actions"],
)
def test_learned_schedule_size_mismatch(num_features, num_actions, expected):
    controller = LinearController(num_features, num_actions)
    with pytest.raises(ValueError, match=expected):
        _bind(LearnedSchedule(controller))


def test_schedule_config_round_trip():
    schedules = [
        FixedSchedule("l1"),
        CyclicSchedule(["task", "l1", "l1"]),
        RandomSchedule({"task": 1.0, "l1": 2.0}, seed=3),
        ThresholdSchedule("S2", [0.1, 0.2, 0.3, 0.4]),
        MemberwiseSchedule([(FixedSchedule("task"), 1),
                            (CyclicSchedule(["l1", "task"]), 3)]),
    ]
    features = _features(4, loss__l1=[1.0, 1.15, 1.3, 1.5], val_metric=1.0)

    for schedule in schedules:
        restored = type(schedule).from_config(schedule.get_config())
        _bind(schedule, population=4)
        _bind(restored, population=4)
        for step in range(3):
            np.testing.assert_array_equal(
                _select(restored, features, step),
                _select(schedule, features, step),
                err_msg=type(schedule).__name__,
            )


def test_learned_schedule_checks_expected_names():
    controller = MLPController(num_features=8, num_actions=2, hidden_units=4)
    names = feature_names(["task", "l1"])
    schedule = LearnedSchedule(
        controller, feature_names=names, action_names=["task", "l1"]
    )
    schedule.bind(["task", "l1"], names, 1)
    swapped = LearnedSchedule(
        controller, feature_names=feature_names(["l1", "task"]),
        action_names=["l1", "task"],
    )
    with pytest.raises(ValueError, match="trained on other feature names"):
        swapped.bind(["task", "l1"], names, 1)


# Sampling.


def _random_logits(rng, rows, num_actions):
    scale = rng.choice([0.1, 1.0, 5.0])
    return (scale * rng.normal(size=(rows, num_actions))).astype("float32")


def test_inverse_cdf_sample_matches_stateless_categorical():
    rng = np.random.default_rng(0)
    cases = []
    for case in range(60):
        logits = _random_logits(rng, int(rng.integers(1, 9)),
                                int(rng.integers(2, 5)))
        if case % 20 == 0:
            logits[0] = np.nan
        if case % 20 == 10:
            logits[-1, 0] = -np.inf
        seed = tf.constant(
            [int(rng.integers(0, 1000)), int(rng.integers(0, 10**5))],
            tf.int32,
        )
        cases.append((logits, seed))

    for logits, seed in cases:
        expected = tf.random.stateless_categorical(
            logits, 1, seed, dtype="int32"
        )[:, 0]
        np.testing.assert_array_equal(
            inverse_cdf_sample(logits, seed), expected
        )
    # An all-NaN row gets the out-of-range index, as the kernel returns.
    nan_logits, seed = cases[0]
    assert int(inverse_cdf_sample(nan_logits, seed)[0]) == (
        nan_logits.shape[1]
    )


def test_sample_categorical_same_under_xla():
    rng = np.random.default_rng(1)
    compiled = tf.function(sample_categorical, jit_compile=True)
    draws = []
    for step in range(40):
        logits = _random_logits(rng, 4, 3)
        seed = tf.constant([7, step], tf.int32)
        expected = sample_categorical(logits, seed)
        np.testing.assert_array_equal(compiled(logits, seed), expected)
        draws.extend(expected.numpy().tolist())
    assert set(draws) == {0, 1, 2}
