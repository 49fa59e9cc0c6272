"""REINFORCE training of a controller over complete task-model episodes.

The policy gradient is equation 2 of the AutoLoss paper (Xu et al., ICLR
2019) with S = 1 episode per update:

    grad J = (R - B) * grad sum_t log p(a_t | x_t; phi),

where R is the episode's final reward, B a moving-average baseline
B <- decay * B + (1 - decay) * R, and R - B is clipped to
[-advantage_clip, advantage_clip]. The controller minimizes the negated
objective, minus an optional entropy bonus (a positive `entropy_weight`
raises the policy's entropy).

`EpisodicTrainer` runs episodes in batches (several task-model copies in
one population model), then applies one S = 1 update per episode in order.
NOTE: episodes of one batch are sampled with the controller weights at the
start of that batch. With `episodes_per_batch > 1` the later updates of a
batch are therefore slightly off-policy, and `episodes_per_batch=1` is
exact.
"""

import collections
import dataclasses
import json
import os

import keras
import numpy as np
import tensorflow as tf

from autoloss_tf import replicas as replicas_lib

BASELINES = ("moving_average", "batch")

PolicyGradientLoss = collections.namedtuple(
    "PolicyGradientLoss",
    ["total", "policy", "entropy", "advantage", "log_probability"],
)


def regression_reward(error, scale=20000.0):
    """Return R = scale / error for a mean squared error (higher is better)."""
    return scale / max(float(error), 1e-12)


def classification_reward(error, scale=100.0):
    """Return R = scale / (error - 1) for a classification error in [0, 1).

    The value is negative and rises toward -scale as the error falls, so a
    lower error earns a higher reward.
    """
    return scale / (float(error) - 1.0 - 1e-12)


class MovingAverageBaseline:
    """B <- decay * B + (1 - decay) * R, starting at the first reward.

    Args:
        decay: in [0, 1). Defaults to 0.8.
    """

    def __init__(self, decay=0.8, value=None):
        if not 0.0 <= decay < 1.0:
            raise ValueError(
                "`decay` must be in [0, 1). "
                f"Received: decay={decay}. Pass a value such as 0.8."
            )
        self.decay = float(decay)
        self.value = value

    def advantage(self, reward):
        """Return R - B with the current B (0 for the first reward)."""
        if self.value is None:
            return 0.0
        return float(reward) - self.value

    def update(self, reward):
        """Fold a reward into the average and return the new B."""
        if self.value is None:
            self.value = float(reward)
        else:
            self.value = self.decay * self.value + (1 - self.decay) * reward
        return self.value


class ProgressBaseline:
    """A reward baseline that depends on training progress.

    Segment rewards of one run drift with progress: early segments of a GAN
    run earn large rewards and later ones small rewards, whatever the
    policy does. A moving average lags that drift, so late segments get
    mostly negative advantages, and any action that was more frequent early
    looks good. This baseline is instead a weighted least-squares fit of
    the rewards seen so far against a polynomial in progress (0 at the
    start of a run, 1 at its end): B(p) = sum_i w_i p^i. Older rewards
    weigh `decay^age`, so the fit follows a changing policy.

    Args:
        degree: degree of the polynomial. Defaults to 2.
        decay: weight factor per reward of age, in (0, 1]. Defaults to
            0.99.
        min_rewards: fewer rewards than this give no fit: `value` returns
            their weighted mean instead (None without any reward).
            Defaults to 10.
        ridge: L2 penalty on the non-constant coefficients. Defaults to
            1e-3.

    Attributes:
        points: the (progress, reward) pairs seen, oldest first.
    """

    def __init__(self, degree=2, decay=0.99, min_rewards=10, ridge=1e-3):
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
            raise ValueError(
                "`degree` must be an integer >= 0. "
                f"Received: degree={degree!r}."
            )
        if not 0.0 < decay <= 1.0:
            raise ValueError(
                f"`decay` must be in (0, 1]. Received: decay={decay!r}. "
                "Pass a value such as 0.99."
            )
        if min_rewards < degree + 1:
            raise ValueError(
                "`min_rewards` must be at least degree + 1, so the fit is "
                f"determined. Received: min_rewards={min_rewards!r}, "
                f"degree={degree!r}."
            )
        self.degree = degree
        self.decay = float(decay)
        self.min_rewards = int(min_rewards)
        self.ridge = float(ridge)
        self.points = []

    def _weights(self):
        ages = np.arange(len(self.points))[::-1]
        return self.decay ** ages

    def coefficients(self):
        """Return the fitted [w_0, ..., w_degree], or None before a fit."""
        if len(self.points) < self.min_rewards:
            return None
        progress, rewards = np.asarray(self.points, "float64").T
        design = np.vander(progress, self.degree + 1, increasing=True)
        weights = self._weights()
        penalty = self.ridge * np.eye(self.degree + 1)
        penalty[0, 0] = 0.0
        gram = design.T @ (weights[:, None] * design) + penalty
        return np.linalg.solve(gram, design.T @ (weights * rewards))

    def value(self, progress):
        """Return B(progress), or None before the first reward."""
        if not self.points:
            return None
        coefficients = self.coefficients()
        if coefficients is None:
            rewards = np.asarray(self.points, "float64")[:, 1]
            weights = self._weights()
            return float(np.sum(weights * rewards) / np.sum(weights))
        powers = float(progress) ** np.arange(self.degree + 1)
        return float(powers @ coefficients)

    def update(self, progress, reward):
        """Record the reward of a segment that started at `progress`."""
        self.points.append([float(progress), float(reward)])

    def state(self):
        return [list(point) for point in self.points]

    def load_state(self, points):
        self.points = [[float(p), float(r)] for p, r in points]


class ReinforceUpdater:
    """REINFORCE updater of a controller's weights and baseline.

    Args:
        controller: an `autoloss_tf.Controller`.
        learning_rate: Adam learning rate. Defaults to 1e-3.
        baseline_decay: decay of the moving-average baseline.
            Defaults to 0.8.
        advantage_clip: R - B is clipped to +- this. Defaults to 20.
        entropy_weight: weight of the entropy bonus. Defaults to 0.

    A controller created in a `tf.distribute` strategy's scope (the
    schedule of a distributed `ScheduledModel`) needs the updater created
    in the same scope. Every replica then computes the same gradient from
    the same episode, and the update applies it once on every replica, so
    the controller's copies stay identical.
    """

    def __init__(self, controller, learning_rate=1e-3, baseline_decay=0.8,
                 advantage_clip=20.0, entropy_weight=0.0):
        if not advantage_clip > 0:
            raise ValueError(
                "`advantage_clip` must be > 0. "
                f"Received: advantage_clip={advantage_clip}."
            )
        distributed = any(
            replicas_lib.is_distributed(v) for v in controller.weights
        )
        if distributed and not tf.distribute.has_strategy():
            raise ValueError(
                "The controller's weights belong to a tf.distribute "
                "strategy, but the ReinforceUpdater was created outside its "
                "scope. Create the updater inside `with strategy.scope():`."
            )
        self._strategy = tf.distribute.get_strategy() if distributed else None
        self.controller = controller
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(controller.trainable_variables)
        self.baseline = MovingAverageBaseline(baseline_decay)
        self.advantage_clip = float(advantage_clip)
        self.entropy_weight = float(entropy_weight)
        num_features = controller.num_features
        apply = self._apply_gradient
        if self._strategy is not None:
            apply = self._apply_gradient_on_replicas
        self._apply = tf.function(
            apply,
            input_signature=[
                tf.TensorSpec([None, num_features], tf.float32),
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([], tf.float32),
            ],
        )

    def loss(self, features, actions, mask, advantage):
        """Return the `PolicyGradientLoss` of one episode.

        Args:
            features: float32 [T, num_features].
            actions: int32 [T].
            mask: float32 [T], 1 for steps that belong to the episode.
            advantage: the clipped R - B.
        """
        policy = self.controller.policy(features)
        log_probability = tf.reduce_sum(policy.log_prob(actions) * mask)
        entropy = tf.reduce_sum(policy.entropy() * mask) / tf.maximum(
            tf.reduce_sum(mask), 1.0
        )
        policy_loss = -advantage * log_probability
        total = policy_loss - self.entropy_weight * entropy
        return PolicyGradientLoss(
            total, policy_loss, entropy, advantage, log_probability
        )

    def _apply_gradient(self, features, actions, mask, advantage):
        variables = self.controller.trainable_variables
        with tf.GradientTape() as tape:
            terms = self.loss(features, actions, mask, advantage)
            # Under a strategy the optimizer sums the replicas' identical
            # gradients, so each replica contributes 1 / replica count.
            total = replicas_lib.scale_loss(terms.total)
        grads = tape.gradient(total, variables)
        self.optimizer.apply(grads, variables)
        return terms

    def _apply_gradient_on_replicas(self, features, actions, mask, advantage):
        """Apply the gradient on every replica and return replica 0's terms."""
        strategy = self._strategy
        terms = strategy.run(
            self._apply_gradient, args=(features, actions, mask, advantage)
        )
        return PolicyGradientLoss(*[
            strategy.experimental_local_results(value)[0] for value in terms
        ])

    def update(self, features, actions, mask, reward, baseline=None):
        """Apply one S = 1 update for an episode and fold R into B.

        Args:
            features: float32 [T, num_features].
            actions: int32 [T].
            mask: float32 [T].
            reward: the episode's reward R.
            baseline: optional B to use instead of the moving average (the
                moving average is still updated).

        Returns:
            A dict with `reward`, `baseline` (before the update),
            `advantage` (clipped) and the loss terms.
        """
        if baseline is None:
            baseline_before = self.baseline.value
            raw_advantage = self.baseline.advantage(reward)
        else:
            baseline_before = float(baseline)
            raw_advantage = float(reward) - baseline_before
        advantage = float(np.clip(
            raw_advantage, -self.advantage_clip, self.advantage_clip
        ))
        terms = self._apply(
            tf.convert_to_tensor(features, tf.float32),
            tf.convert_to_tensor(actions, tf.int32),
            tf.convert_to_tensor(mask, tf.float32),
            tf.constant(advantage, tf.float32),
        )
        self.baseline.update(reward)
        return {
            "reward": float(reward),
            "baseline": baseline_before,
            "advantage": advantage,
            "policy_loss": float(terms.policy),
            "entropy": float(terms.entropy),
        }

    # Checkpoint state ----------------------------------------------------

    def state_arrays(self):
        """Return controller and optimizer values as a dict of arrays."""
        arrays = {}
        for i, v in enumerate(self.controller.weights):
            arrays[f"controller_{i}"] = np.asarray(v.numpy())
        for i, v in enumerate(self.optimizer.variables):
            arrays[f"optimizer_{i}"] = np.asarray(v.numpy())
        return arrays

    def load_state_arrays(self, arrays):
        """Restore values saved by `state_arrays`."""
        for i, v in enumerate(self.controller.weights):
            v.assign(arrays[f"controller_{i}"])
        for i, v in enumerate(self.optimizer.variables):
            v.assign(arrays[f"optimizer_{i}"])


@dataclasses.dataclass
class Episode:
    """One finished task-model run, ready for a policy-gradient update.

    Attributes:
        features: float32 [T, num_features] seen by the controller.
        actions: int32 [T] taken.
        mask: float32 [T], 1 while the run was active.
        reward: final reward R.
        metric: the validation metric behind the reward.
    """

    features: np.ndarray
    actions: np.ndarray
    mask: np.ndarray
    reward: float
    metric: float


class EpisodicTrainer:
    """Train a controller by REINFORCE, checkpointing after every batch.

    Args:
        updater: a `ReinforceUpdater`.
        run_batch: callable `run_batch(batch_index, count) -> [Episode]`
            that trains `count` task models under the controller. It must
            derive all randomness from `batch_index`, so a resumed run
            repeats the same batches.
        directory: where `checkpoint.npz` and `history.json` go.
        episodes_per_batch: episodes per call of `run_batch`. Defaults to 8.
        baseline: `"moving_average"` (B of equation 2) or `"batch"`: B for
            an episode is the mean reward of the other episodes of its batch
            (leave-one-out). When `run_batch` starts every episode of a
            batch from the same weights and data, the batch baseline
            removes the reward spread caused by the initial weights, which
            otherwise swamps the effect of the schedule. Defaults to
            `"moving_average"`.

    Attributes:
        settings: optional JSON-serializable dict saved with every
            checkpoint, so a caller can check that a resumed run uses the
            same settings.
        saved_settings: the `settings` of the checkpoint that `resume`
            loaded, or None.
    """

    def __init__(self, updater, run_batch, directory, episodes_per_batch=8,
                 baseline="moving_average"):
        if episodes_per_batch < 1:
            raise ValueError(
                "`episodes_per_batch` must be >= 1. "
                f"Received: episodes_per_batch={episodes_per_batch}."
            )
        if baseline not in BASELINES:
            raise ValueError(
                f"`baseline` must be one of {BASELINES}. "
                f"Received: baseline={baseline!r}."
            )
        if baseline == "batch" and episodes_per_batch < 2:
            raise ValueError(
                "baseline='batch' needs at least 2 episodes per batch. "
                f"Received: episodes_per_batch={episodes_per_batch}."
            )
        self.baseline = baseline
        self.settings = None
        self.saved_settings = None
        self.updater = updater
        self.run_batch = run_batch
        self.directory = directory
        self.episodes_per_batch = int(episodes_per_batch)
        self.history = []

    @property
    def checkpoint_path(self):
        return os.path.join(self.directory, "checkpoint.npz")

    @property
    def history_path(self):
        return os.path.join(self.directory, "history.json")

    def resume(self):
        """Load the last checkpoint if there is one; return episodes done."""
        if not os.path.exists(self.checkpoint_path):
            return 0
        with np.load(self.checkpoint_path) as arrays:
            self.updater.load_state_arrays(arrays)
        with open(self.history_path) as f:
            saved = json.load(f)
        self.history = saved["episodes"]
        self.updater.baseline.value = saved["baseline"]
        self.saved_settings = saved.get("settings")
        return len(self.history)

    def train(self, episodes, progress=None):
        """Run episodes until `episodes` are done in total.

        Args:
            episodes: total number of episodes, counting resumed ones.
            progress: optional callable(history_entry) for each episode.

        Returns:
            The list of per-episode history entries.
        """
        while len(self.history) < episodes:
            batch_index = len(self.history) // self.episodes_per_batch
            count = min(self.episodes_per_batch, episodes - len(self.history))
            batch = self.run_batch(batch_index, count)
            baselines = self._batch_baselines(batch)
            for episode, baseline in zip(batch, baselines):
                entry = self.updater.update(
                    episode.features, episode.actions, episode.mask,
                    episode.reward, baseline=baseline,
                )
                entry.update(
                    episode=len(self.history), metric=float(episode.metric),
                    steps=int(episode.mask.sum()),
                    regularizer_fraction=_action_fraction(episode),
                )
                self.history.append(entry)
                if progress is not None:
                    progress(entry)
            self.save()
        return self.history

    def _batch_baselines(self, batch):
        if self.baseline != "batch" or len(batch) < 2:
            return [None] * len(batch)
        rewards = np.asarray([e.reward for e in batch], "float64")
        return list((rewards.sum() - rewards) / (len(rewards) - 1))

    def save(self):
        """Write the checkpoint and history atomically."""
        write_checkpoint(
            self.checkpoint_path, self.updater.state_arrays(),
            history_path=self.history_path, history={
                "baseline": self.updater.baseline.value,
                "settings": self.settings,
                "episodes": self.history,
            },
        )


def write_checkpoint(checkpoint_path, arrays, state=None, history_path=None,
                     history=None):
    """Write a training checkpoint, and optionally a JSON history, atomically.

    Each file is written under a temporary name and then renamed, so a
    kill leaves either the old file or the new one.

    Args:
        checkpoint_path: the `.npz` file to write.
        arrays: dict name -> array (controller and optimizer state, an
            unfinished run's weights).
        state: optional JSON-serializable state, stored in the same file
            under `state_json`, so arrays and state cannot disagree.
        history_path: optional JSON file for the human-readable history.
        history: the JSON content of `history_path`.
    """
    os.makedirs(os.path.dirname(checkpoint_path) or ".", exist_ok=True)
    arrays = dict(arrays)
    if state is not None:
        arrays["state_json"] = np.asarray(json.dumps(state))
    temporary = checkpoint_path + ".tmp.npz"
    np.savez(temporary, **arrays)
    os.replace(temporary, checkpoint_path)
    if history_path is not None:
        temporary = history_path + ".tmp"
        with open(temporary, "w") as f:
            json.dump(history, f)
        os.replace(temporary, history_path)


def variables_to_arrays(variables, prefix):
    """Return the values of `variables` as a dict `{prefix}{index}: array`."""
    return {
        f"{prefix}{index}": np.asarray(variable.numpy())
        for index, variable in enumerate(variables)
    }


def assign_from_arrays(variables, arrays, prefix, label):
    """Assign values written by `variables_to_arrays` back to `variables`.

    Args:
        variables: the variables, in the order they were written.
        arrays: a dict that contains `{prefix}{index}` entries (other keys
            are ignored).
        prefix: the key prefix given to `variables_to_arrays`.
        label: the model's name in error messages, for example "GAN".

    Raises:
        ValueError: if the count or a shape differs, which means the
            checkpoint was written with other settings.
    """
    stored = sum(1 for key in arrays if key.startswith(prefix))
    if stored != len(variables):
        raise ValueError(
            f"The checkpoint contains {stored} {label} variables, but this "
            f"run's model has {len(variables)}. The checkpoint was "
            f"written with other {label} settings; start a new directory."
        )
    for index, variable in enumerate(variables):
        value = arrays[f"{prefix}{index}"]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"Checkpoint {label} variable {index} has shape "
                f"{value.shape}, but {variable.path} has "
                f"{tuple(variable.shape)}. The checkpoint was written "
                f"with other {label} settings; start a new directory."
            )
        variable.assign(value)


def read_checkpoint(checkpoint_path):
    """Read a file written by `write_checkpoint`.

    Returns:
        `(state, arrays)`: the JSON state (None if none was stored) and the
        dict of the other arrays, loaded into memory.
    """
    with np.load(checkpoint_path) as stored:
        arrays = {key: stored[key] for key in stored.files}
    state = None
    if "state_json" in arrays:
        state = json.loads(str(arrays.pop("state_json")))
    return state, arrays


def _action_fraction(episode):
    """Fraction of active steps that took an action other than index 0."""
    active = episode.mask > 0
    if not active.any():
        return 0.0
    return float((episode.actions[active] != 0).mean())


def episodes_from_population(model, rewards, metrics):
    """Cut a finished population model's rollout buffer into `Episode`s.

    Args:
        model: a population `ScheduledModel` whose schedule is a
            `LearnedSchedule` created with `record_steps`.
        rewards: one reward per member.
        metrics: one validation metric per member.

    Raises:
        ValueError: if the schedule did not sample its actions. The policy
            gradient needs sampled actions, and greedy or dithered ones
            would give biased updates.
    """
    decoding = getattr(model.schedule, "decoding", "sample")
    if decoding != "sample":
        raise ValueError(
            "Policy-gradient episodes need sampled actions. Received: a "
            f"LearnedSchedule with decoding={decoding!r}. Create it with "
            "decoding='sample' for controller training."
        )
    buffer = model.schedule.buffer
    steps = int(model.training_state.step.numpy() - buffer.start.numpy())
    steps = min(steps, buffer.max_steps)
    features, actions, active = buffer.numpy()
    episodes = []
    for member in range(model.population):
        episodes.append(Episode(
            features=features[:steps, member],
            actions=actions[:steps, member],
            mask=active[:steps, member].astype("float32"),
            reward=float(rewards[member]),
            metric=float(metrics[member]),
        ))
    return episodes
