"""Tests of the PPO updater: hand-computed loss terms, returns, a bandit."""

import math

import numpy as np
import pytest
import tensorflow as tf

from autoloss_tf import LinearController
from autoloss_tf import MLPController
from autoloss_tf import ppo


def _updater(controller=None, **kwargs):
    controller = controller or LinearController(num_features=1, num_actions=2)
    settings = dict(value_coefficient=0.0, entropy_coefficient=0.0,
                    normalize_advantages=False)
    settings.update(kwargs)
    return ppo.PPOUpdater(controller, **settings)


def _loss(updater, old_probability, advantage, action=0, returns=0.0):
    return updater.loss(
        tf.zeros([1, 1]), tf.constant([action]),
        tf.constant([math.log(old_probability)]), tf.constant([advantage]),
        tf.constant([returns]),
    )


# Returns.

def test_discounted_returns_with_bootstrap():
    returns = ppo.discounted_returns([1.0, 0.0, 2.0], gamma=0.5,
                                     bootstrap_value=4.0)
    # G2 = 2 + 0.5 * 4, G1 = 0 + 0.5 * 4, G0 = 1 + 0.5 * 2.
    np.testing.assert_allclose(returns, [2.0, 2.0, 4.0])


def test_discounted_returns_stop_at_episode_end():
    returns = ppo.discounted_returns([1.0, 0.0, 2.0], gamma=0.5,
                                     dones=[False, True, False],
                                     bootstrap_value=4.0)
    # Transition 1 ends an episode, so G1 = 0 and G0 = 1 + 0.5 * 0.
    np.testing.assert_allclose(returns, [1.0, 0.0, 4.0])


def test_discounted_returns_gamma_095():
    returns = ppo.discounted_returns([1.0] * 3, gamma=0.95)
    np.testing.assert_allclose(returns, [1 + 0.95 + 0.95 ** 2, 1.95, 1.0])


# Clipped ratio objective.

@pytest.mark.parametrize("old_probability, advantage, expected", [
    # The uniform policy gives the action probability 0.5.
    (0.25, 1.0, -1.2),   # ratio 2, clipped to 1.2.
    (0.25, -1.0, 2.0),   # ratio 2: the unclipped term is the minimum.
    (1.0, 1.0, -0.5),    # ratio 0.5: the unclipped term is the minimum.
    (1.0, -1.0, 0.8),    # ratio 0.5, clipped to 0.8.
    (0.5 / 1.1, 2.0, -2.2),  # ratio 1.1 is inside the clip range.
])
def test_policy_loss_clipped_ratio(old_probability, advantage, expected):
    terms = _loss(_updater(), old_probability, advantage)
    assert float(terms.policy) == pytest.approx(expected, rel=1e-5)
    assert float(terms.total) == pytest.approx(expected, rel=1e-5)


def test_clip_fraction_counts_ratios_outside_range():
    updater = _updater()
    assert float(_loss(updater, 0.25, 1.0).clip_fraction) == 1.0
    assert float(_loss(updater, 0.5 / 1.1, 1.0).clip_fraction) == 0.0


def _bias_gradient(updater, old_probability, advantage):
    bias = updater.controller.output_layer.bias
    with tf.GradientTape() as tape:
        terms = _loss(updater, old_probability, advantage)
    return tape.gradient(terms.total, bias).numpy()


def test_clipped_ratio_has_no_policy_gradient():
    updater = _updater()
    gradient = _bias_gradient(updater, 0.25, 1.0)
    np.testing.assert_array_equal(gradient, [0.0, 0.0])


def test_unclipped_ratio_gradient_by_hand():
    updater = _updater()
    # loss = -r A with r = p(a) / 1; d loss / d b_j = -r A (1[j = a] - p_j)
    # = -0.5 * (1 - 0.5) for the taken action and +0.25 for the other.
    gradient = _bias_gradient(updater, 1.0, 1.0)
    np.testing.assert_allclose(gradient, [-0.25, 0.25], rtol=1e-6)


# Value and entropy terms.

def test_value_loss_by_hand():
    updater = _updater(value_coefficient=0.5)
    terms = updater.loss(tf.zeros([2, 1]), tf.constant([0, 1]),
                         tf.math.log(tf.constant([0.5, 0.5])),
                         tf.zeros([2]), tf.constant([1.0, 3.0]))
    # The critic starts at V = 0: mean(1, 9) = 5, weighted by 0.5.
    assert float(terms.value) == pytest.approx(5.0)
    assert float(terms.total) == pytest.approx(2.5)


def test_entropy_bonus_lowers_loss():
    updater = _updater(entropy_coefficient=0.1)
    terms = _loss(updater, 0.5, 0.0)
    assert float(terms.entropy) == pytest.approx(math.log(2.0))
    assert float(terms.total) == pytest.approx(-0.1 * math.log(2.0))


def test_entropy_gradient_points_to_uniform():
    updater = _updater(entropy_coefficient=0.1)
    bias = updater.controller.output_layer.bias
    bias.assign([1.0, 0.0])
    p0 = 1.0 / (1.0 + math.exp(-1.0))
    p = np.array([p0, 1.0 - p0])
    entropy = -np.sum(p * np.log(p))
    # dH / d b_j = -p_j (log p_j + H); the loss is -0.1 H.
    expected = 0.1 * p * (np.log(p) + entropy)
    gradient = _bias_gradient(updater, 0.5, 0.0)
    np.testing.assert_allclose(gradient, expected, rtol=1e-5)
    assert gradient[0] > 0  # Descent lowers the larger logit.

    before = float(_loss(updater, 0.5, 0.0).entropy)
    updater._step(tf.zeros([1, 1]), tf.constant([0]),
                  tf.constant([math.log(0.5)]), tf.zeros([1]), tf.zeros([1]))
    after = float(_loss(updater, 0.5, 0.0).entropy)
    assert after > before


# Update, buffer and state.

def test_update_clears_buffer_and_counts():
    updater = _updater(buffer_size=4, minibatch_size=2, epochs=2)
    updater.add(np.zeros((3, 1)), [0, 1, 0], 1.0)
    assert not updater.ready
    updater.add(np.zeros((1, 1)), [1], [0.0], dones=[True])
    assert updater.ready
    result = updater.update()
    assert result["transitions"] == 4
    assert result["updates"] == 1
    assert updater.size == 0
    assert updater.updates == 1
    # Returns with gamma 0.95: 1 + 0.95 (1 + 0.95), 1 + 0.95, 1, 0.
    expected = np.mean([1 + 0.95 * 1.95, 1.95, 1.0, 0.0])
    assert result["mean_return"] == pytest.approx(expected)


def test_add_rejects_bad_shapes():
    updater = _updater()
    with pytest.raises(ValueError, match="features"):
        updater.add(np.zeros((2, 3)), [0, 1], 0.0)
    with pytest.raises(ValueError, match="below num_actions=2"):
        updater.add(np.zeros((1, 1)), [2], 0.0)
    with pytest.raises(ValueError, match="add\\(\\) first"):
        updater.update()


def test_settings_are_checked():
    controller = LinearController(num_features=1, num_actions=2)
    with pytest.raises(ValueError, match="gamma"):
        ppo.PPOUpdater(controller, gamma=1.5)
    with pytest.raises(ValueError, match="buffer_size"):
        ppo.PPOUpdater(controller, buffer_size=0)
    with pytest.raises(ValueError, match="entropy_coefficient"):
        ppo.PPOUpdater(controller, entropy_coefficient=-0.1)


def test_state_round_trip():
    first = _updater(MLPController(2, 3), buffer_size=4, minibatch_size=2)
    first.add(np.ones((4, 2)), [0, 1, 2, 1], [1.0, 0.0, 0.5, 0.2])
    first.update()
    first.add(np.ones((2, 2)), [2, 2], [0.3, 0.1], dones=[False, True])
    arrays = first.state_arrays()

    second = _updater(MLPController(2, 3, seed=5), buffer_size=4,
                      minibatch_size=2)
    second.load_state_arrays(arrays)
    assert second.updates == 1
    assert second.size == 2
    for name in ("controller", "critic"):
        for left, right in zip(getattr(first, name).weights,
                               getattr(second, name).weights):
            np.testing.assert_array_equal(left.numpy(), right.numpy())
    for left, right in zip(first.optimizer.variables,
                           second.optimizer.variables):
        np.testing.assert_array_equal(left.numpy(), right.numpy())
    np.testing.assert_array_equal(second._buffer_arrays()[1], [2, 2])


def test_bandit_learns_better_action():
    controller = MLPController(num_features=1, num_actions=3, seed=0)
    updater = ppo.PPOUpdater(controller, learning_rate=1e-2, buffer_size=64,
                             minibatch_size=16, epochs=4, seed=0)
    rng = np.random.default_rng(0)
    features = np.ones((64, 1), "float32")
    for _ in range(25):
        probabilities = controller.probabilities(features).numpy()
        actions = np.array([rng.choice(3, p=row / row.sum())
                            for row in probabilities])
        rewards = (actions == 1).astype("float32")
        # One-step episodes: each pull is its own episode.
        updater.add(features, actions, rewards, dones=np.ones(64, bool))
        updater.update()
    probability = controller.probabilities(features[:1]).numpy()[0]
    assert probability[1] > 0.9
