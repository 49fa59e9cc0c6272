"""Proximal policy optimization (PPO) of a controller with a critic.

For tasks whose runs are too long for one reward per run, the AutoLoss
paper (Xu et al., ICLR 2019, section 4.4 and appendix A.3) trains the
controller online with PPO (Schulman et al., 2017) in actor-critic style.
The actor is the controller's categorical policy, and the critic is a
small MLP that estimates the discounted return of a feature vector. Every
step of the task model adds one transition (features, action, reward) to
a buffer. When the buffer contains `buffer_size` transitions, `update`
runs `epochs` passes of minibatch gradient steps on

    loss = policy_loss + value_coefficient * value_loss
           - entropy_coefficient * entropy,

    policy_loss = -mean(min(r A, clip(r, 1 - eps, 1 + eps) A)),
    value_loss = mean((V(x) - G)^2),
    entropy = mean(H(pi(. | x))),

where r = pi(a | x) / pi_old(a | x), G is the discounted return with
discount gamma, and A = G - V_old(x) is the advantage. Subtracting the
entropy makes minimizing the loss raise the policy's entropy, which keeps
it exploring. Then the buffer is cleared. The transitions of one buffer
were all sampled with the weights of the previous update, so pi_old is
the controller as it was when the update began. After the update, the
updated controller samples the next actions, so the behaviour policy and
the trained policy are synchronized once per update.

Defaults follow the paper's appendix A.3: discount 0.95, Adam learning
rate 1e-3, buffer 2,000 transitions, minibatch 64, critic MLP with 32
hidden units. The clip range 0.2 is the value of the PPO paper's
experiments.
"""

import collections

import keras
import numpy as np
import tensorflow as tf

PPOLoss = collections.namedtuple(
    "PPOLoss",
    ["total", "policy", "value", "entropy", "clip_fraction"],
)


def discounted_returns(rewards, gamma, dones=None, bootstrap_value=0.0):
    """Return G_t = r_t + gamma * G_{t+1}, restarting after episode ends.

    Args:
        rewards: float [n], in time order.
        gamma: discount in [0, 1].
        dones: optional bool [n]; True marks the last transition of an
            episode, whose return has no future term. Defaults to none.
        bootstrap_value: the value of the state after the last transition,
            used when that transition is not an episode end. Defaults to 0.

    Returns:
        float64 [n].
    """
    rewards = np.asarray(rewards, "float64")
    if dones is None:
        dones = np.zeros(len(rewards), bool)
    dones = np.asarray(dones, bool)
    if dones.shape != rewards.shape:
        raise ValueError(
            "`dones` must have one entry per reward. Received: "
            f"{dones.shape} dones for {rewards.shape} rewards."
        )
    returns = np.zeros_like(rewards)
    future = float(bootstrap_value)
    for index in range(len(rewards) - 1, -1, -1):
        if dones[index]:
            future = 0.0
        future = rewards[index] + gamma * future
        returns[index] = future
    return returns


@keras.saving.register_keras_serializable(package="autoloss_tf")
class ValueNetwork(keras.Model):
    """A two-layer MLP critic: V(x) = w2 . relu(W1 (x / scale) + b1) + b2.

    The output layer starts at zero, so every first estimate is 0.

    Args:
        num_features: length of the feature vector.
        hidden_units: width of the hidden ReLU layer. Defaults to 32.
        feature_scale: optional list of `num_features` positive divisors of
            the features, as for a controller. Defaults to all ones.
        seed: seed of the hidden layer's initializer. Defaults to 0.
    """

    def __init__(self, num_features, hidden_units=32, feature_scale=None,
                 seed=0, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("num_features", num_features),
                            ("hidden_units", hidden_units)):
            if isinstance(value, bool) or not isinstance(value, int) or (
                    value < 1):
                raise ValueError(
                    f"`{name}` must be a positive integer. "
                    f"Received: {name}={value!r}."
                )
        if feature_scale is None:
            feature_scale = [1.0] * num_features
        feature_scale = [float(s) for s in feature_scale]
        if len(feature_scale) != num_features or min(feature_scale) <= 0:
            raise ValueError(
                "`feature_scale` must hold `num_features` positive floats. "
                f"Received: feature_scale={feature_scale} with "
                f"num_features={num_features}."
            )
        self.num_features = int(num_features)
        self.hidden_units = int(hidden_units)
        self.feature_scale = feature_scale
        self.seed = int(seed)
        self.hidden_layer = keras.layers.Dense(
            hidden_units, activation="relu", name="hidden",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        )
        self.output_layer = keras.layers.Dense(
            1, kernel_initializer="zeros", name="value"
        )
        self.hidden_layer.build((None, self.num_features))
        self.output_layer.build((None, self.hidden_units))
        self.built = True

    def call(self, features):
        features = tf.cast(features, "float32")
        scaled = features / tf.constant(self.feature_scale, "float32")
        return self.output_layer(self.hidden_layer(scaled))[:, 0]

    def get_config(self):
        config = super().get_config()
        config.update(num_features=self.num_features,
                      hidden_units=self.hidden_units,
                      feature_scale=self.feature_scale, seed=self.seed)
        return config


class PPOUpdater:
    """Clipped-ratio PPO of a `Controller` (actor) and a `ValueNetwork`.

    Args:
        controller: the actor, an `autoloss_tf.Controller`.
        critic: a `ValueNetwork` over the same features. Defaults to one
            with 32 hidden units and the controller's feature scale.
        learning_rate: Adam learning rate of actor and critic. Defaults to
            1e-3.
        clip_ratio: eps of the clipped ratio. Defaults to 0.2.
        gamma: discount of the returns. Defaults to 0.95.
        epochs: passes over the buffer per update. Defaults to 4.
        minibatch_size: transitions per gradient step. Defaults to 64.
        buffer_size: transitions that make the buffer `ready`. Defaults to
            2000.
        value_coefficient: weight of the value loss. Defaults to 0.5.
        entropy_coefficient: weight of the entropy bonus, >= 0; a positive
            value raises the entropy. Defaults to 0.01.
        normalize_advantages: rescale the advantages of an update to mean
            0 and standard deviation 1. Defaults to True.
        seed: seed of the minibatch order; update u shuffles with
            (seed, u), so a resumed run repeats it. Defaults to 0.

    Attributes:
        optimizer: the Adam instance over actor and critic variables.
        updates: updates applied so far.
    """

    def __init__(self, controller, critic=None, learning_rate=1e-3,
                 clip_ratio=0.2, gamma=0.95, epochs=4, minibatch_size=64,
                 buffer_size=2000, value_coefficient=0.5,
                 entropy_coefficient=0.01, normalize_advantages=True,
                 seed=0):
        _check_settings(learning_rate, clip_ratio, gamma, epochs,
                        minibatch_size, buffer_size, value_coefficient,
                        entropy_coefficient)
        self.controller = controller
        if critic is None:
            critic = ValueNetwork(controller.num_features,
                                  feature_scale=controller.feature_scale)
        if critic.num_features != controller.num_features:
            raise ValueError(
                "The critic must read as many features as the controller. "
                f"Received: critic.num_features={critic.num_features}, "
                f"controller.num_features={controller.num_features}."
            )
        self.critic = critic
        self.clip_ratio = float(clip_ratio)
        self.gamma = float(gamma)
        self.epochs = int(epochs)
        self.minibatch_size = int(minibatch_size)
        self.buffer_size = int(buffer_size)
        self.value_coefficient = float(value_coefficient)
        self.entropy_coefficient = float(entropy_coefficient)
        self.normalize_advantages = bool(normalize_advantages)
        self.seed = int(seed)
        self.updates = 0
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(self._variables())
        self.clear()
        num_features = controller.num_features
        vector = tf.TensorSpec([None], tf.float32)
        self._step = tf.function(
            self._gradient_step,
            input_signature=[
                tf.TensorSpec([None, num_features], tf.float32),
                tf.TensorSpec([None], tf.int32), vector, vector, vector,
            ],
        )

    def _variables(self):
        return (list(self.controller.trainable_variables)
                + list(self.critic.trainable_variables))

    # Buffer -------------------------------------------------------------

    def clear(self):
        """Drop every buffered transition."""
        self._features, self._actions = [], []
        self._rewards, self._dones = [], []

    @property
    def size(self):
        """Transitions in the buffer."""
        return sum(len(actions) for actions in self._actions)

    @property
    def ready(self):
        """True once the buffer contains at least `buffer_size` transitions."""
        return self.size >= self.buffer_size

    def add(self, features, actions, rewards, dones=None):
        """Append transitions in time order.

        Args:
            features: float [n, num_features], what the policy saw.
            actions: int [n], the actions it sampled.
            rewards: float [n], or one float for every transition.
            dones: optional bool [n]; True marks an episode's last
                transition. Defaults to none.
        """
        features = np.asarray(features, "float32")
        actions = np.asarray(actions, "int32").reshape(-1)
        count = len(actions)
        rewards = np.broadcast_to(np.asarray(rewards, "float32"),
                                  (count,)).copy()
        dones = (np.zeros(count, bool) if dones is None
                 else np.asarray(dones, bool).reshape(-1))
        expected = (count, self.controller.num_features)
        if features.shape != expected or len(dones) != count:
            raise ValueError(
                "add() needs features [n, num_features] and one action and "
                f"done flag per row. Received: features {features.shape}, "
                f"{count} actions, {len(dones)} dones; expected features "
                f"{expected}."
            )
        if count and (actions.min() < 0
                      or actions.max() >= self.controller.num_actions):
            raise ValueError(
                "Actions must be indices below num_actions="
                f"{self.controller.num_actions}. Received: actions in "
                f"[{actions.min()}, {actions.max()}]."
            )
        self._features.append(features)
        self._actions.append(actions)
        self._rewards.append(rewards)
        self._dones.append(dones)

    def _buffer_arrays(self):
        if not self._actions:
            num_features = self.controller.num_features
            return (np.zeros((0, num_features), "float32"),
                    np.zeros(0, "int32"), np.zeros(0, "float32"),
                    np.zeros(0, bool))
        return (np.concatenate(self._features), np.concatenate(self._actions),
                np.concatenate(self._rewards), np.concatenate(self._dones))

    # Loss and update ----------------------------------------------------

    def loss(self, features, actions, old_log_probabilities, advantages,
             returns):
        """Return the `PPOLoss` of a minibatch (means over its rows)."""
        policy = self.controller.policy(features)
        log_probabilities = policy.log_prob(actions)
        ratio = tf.exp(log_probabilities - old_log_probabilities)
        clipped = tf.clip_by_value(ratio, 1.0 - self.clip_ratio,
                                   1.0 + self.clip_ratio)
        policy_loss = -tf.reduce_mean(
            tf.minimum(ratio * advantages, clipped * advantages)
        )
        value_loss = tf.reduce_mean(tf.square(self.critic(features) - returns))
        entropy = tf.reduce_mean(policy.entropy())
        total = (policy_loss + self.value_coefficient * value_loss
                 - self.entropy_coefficient * entropy)
        clip_fraction = tf.reduce_mean(tf.cast(
            tf.abs(ratio - 1.0) > self.clip_ratio, "float32"
        ))
        return PPOLoss(total, policy_loss, value_loss, entropy, clip_fraction)

    def _gradient_step(self, features, actions, old_log_probabilities,
                       advantages, returns):
        variables = self._variables()
        with tf.GradientTape() as tape:
            terms = self.loss(features, actions, old_log_probabilities,
                              advantages, returns)
        grads = tape.gradient(terms.total, variables)
        self.optimizer.apply(grads, variables)
        return terms

    def update(self, bootstrap_features=None):
        """Train on the buffered transitions, then clear the buffer.

        Args:
            bootstrap_features: optional float [num_features], the state
                after the last transition. If given and that transition is
                not an episode end, its critic value continues the returns.
                Defaults to None (the returns stop at the buffer's end).

        Returns:
            A dict: `transitions`, `updates` (after this one), the means
            over the last epoch of `loss`, `policy_loss`, `value_loss`,
            `entropy` and `clip_fraction`, and `mean_return`.

        Raises:
            ValueError: if the buffer is empty.
        """
        features, actions, rewards, dones = self._buffer_arrays()
        count = len(actions)
        if count == 0:
            raise ValueError(
                "update() needs buffered transitions. Call add() first."
            )
        features_tensor = tf.constant(features)
        actions_tensor = tf.constant(actions)
        old_log_probabilities = self.controller.policy(
            features_tensor).log_prob(actions_tensor).numpy()
        values = self.critic(features_tensor).numpy().astype("float64")
        bootstrap = 0.0
        if bootstrap_features is not None and not dones[-1]:
            state = np.asarray(bootstrap_features, "float32").reshape(1, -1)
            bootstrap = float(self.critic(tf.constant(state)).numpy()[0])
        returns = discounted_returns(rewards, self.gamma, dones, bootstrap)
        advantages = returns - values
        if self.normalize_advantages and count > 1:
            advantages = (advantages - advantages.mean()) / (
                advantages.std() + 1e-8)
        rng = np.random.default_rng([self.seed, self.updates])
        for _ in range(self.epochs):
            order = rng.permutation(count)
            epoch_terms = []
            for start in range(0, count, self.minibatch_size):
                rows = order[start:start + self.minibatch_size]
                terms = self._step(
                    tf.constant(features[rows]), tf.constant(actions[rows]),
                    tf.constant(old_log_probabilities[rows], "float32"),
                    tf.constant(advantages[rows], "float32"),
                    tf.constant(returns[rows], "float32"),
                )
                epoch_terms.append([float(value) for value in terms])
        self.updates += 1
        self.clear()
        means = np.mean(epoch_terms, axis=0)
        result = dict(zip(
            ("loss", "policy_loss", "value_loss", "entropy", "clip_fraction"),
            (float(value) for value in means),
        ))
        result.update(transitions=count, updates=self.updates,
                      mean_return=float(returns.mean()))
        return result

    # Checkpoint state ---------------------------------------------------

    def state_arrays(self, prefix="ppo_"):
        """Return actor, critic, optimizer and buffer as a dict of arrays."""
        arrays = {}
        for name, variables in (("controller", self.controller.weights),
                                ("critic", self.critic.weights),
                                ("optimizer", self.optimizer.variables)):
            for index, variable in enumerate(variables):
                arrays[f"{prefix}{name}_{index}"] = np.asarray(variable.numpy())
        features, actions, rewards, dones = self._buffer_arrays()
        arrays.update({
            f"{prefix}buffer_features": features,
            f"{prefix}buffer_actions": actions,
            f"{prefix}buffer_rewards": rewards,
            f"{prefix}buffer_dones": dones,
            f"{prefix}updates": np.asarray(self.updates, "int64"),
        })
        return arrays

    def load_state_arrays(self, arrays, prefix="ppo_"):
        """Restore values written by `state_arrays`."""
        for name, variables in (("controller", self.controller.weights),
                                ("critic", self.critic.weights),
                                ("optimizer", self.optimizer.variables)):
            for index, variable in enumerate(variables):
                key = f"{prefix}{name}_{index}"
                if key not in arrays:
                    raise ValueError(
                        f"The PPO state has no entry {key!r}. It was "
                        "written for another controller or critic; start "
                        "a new directory."
                    )
                variable.assign(arrays[key])
        self.clear()
        features = arrays[f"{prefix}buffer_features"]
        if len(features):
            self.add(features, arrays[f"{prefix}buffer_actions"],
                     arrays[f"{prefix}buffer_rewards"],
                     arrays[f"{prefix}buffer_dones"])
        self.updates = int(arrays[f"{prefix}updates"])


def _check_settings(learning_rate, clip_ratio, gamma, epochs, minibatch_size,
                    buffer_size, value_coefficient, entropy_coefficient):
    for name, value in (("epochs", epochs), ("minibatch_size", minibatch_size),
                        ("buffer_size", buffer_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive integer. "
                f"Received: {name}={value!r}."
            )
    for name, value in (("learning_rate", learning_rate),
                        ("clip_ratio", clip_ratio)):
        if not value > 0:
            raise ValueError(
                f"`{name}` must be > 0. Received: {name}={value!r}."
            )
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"`gamma` must be in [0, 1]. Received: gamma={gamma!r}.")
    for name, value in (("value_coefficient", value_coefficient),
                        ("entropy_coefficient", entropy_coefficient)):
        if not value >= 0:
            raise ValueError(
                f"`{name}` must be >= 0. Received: {name}={value!r}."
            )
