"""Optimization-state features read by a schedule before every step.

The feature set follows the AutoLoss paper (Xu et al., "AutoLoss: Learning
Discrete Schedules for Alternate Optimization", ICLR 2019, section 4.1):

1. training progress t / T;
2. per action, the normalized gradient magnitude ||g||_2 / sqrt(#params);
3. per action, the latest loss value;
4. the validation metric, its exponential moving average (EMA) and the EMA
   of its step-to-step differences.

Features 2 and 3 of an action are refreshed only on steps where that action
runs. The other entries keep their last value, so a step never computes a
loss it does not apply. The validation entries refresh every
`validation_interval` steps. All values live in Keras variables with a
leading population axis, so they are saved with the model.
"""

import keras
import tensorflow as tf

PROGRESS = "progress"
VALIDATION_GROUP = ("val_metric", "val_metric_ema", "val_diff_ema")


def feature_names(action_names, extra_names=()):
    """Return the ordered feature names for a list of action names.

    Args:
        action_names: names of the registered actions, in index order.
        extra_names: names of model-specific features appended at the end.

    Returns:
        A list of strings: `progress`, `grad_norm/<action>` per action,
        `loss/<action>` per action, the three validation features, then
        `extra_names`.
    """
    names = [PROGRESS]
    names += [f"grad_norm/{name}" for name in action_names]
    names += [f"loss/{name}" for name in action_names]
    names += list(VALIDATION_GROUP)
    names += list(extra_names)
    return names


class FeatureTracker(keras.layers.Layer):
    """Stores the latest feature values of every population member.

    Args:
        action_names: names of the registered actions, in index order.
        population: number of task-model copies trained in lockstep.
            Defaults to 1.
        extra_names: names of model-specific features. Defaults to none.
        ema_decay: decay of the validation EMAs, in [0, 1). Defaults to 0.9.
    """

    def __init__(
        self, action_names, population=1, extra_names=(), ema_decay=0.9,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(
                "`ema_decay` must be in [0, 1). "
                f"Received: ema_decay={ema_decay}. Pass a value such as 0.9."
            )
        self.action_names = list(action_names)
        self.population = int(population)
        self.extra_names = list(extra_names)
        self.ema_decay = float(ema_decay)
        self.names = feature_names(self.action_names, self.extra_names)
        num_actions = len(self.action_names)
        self.grad_norms = self._zeros("grad_norms", (num_actions,))
        self.loss_values = self._zeros("losses", (num_actions,))
        self.validation = self._zeros("validation", (3,))
        self.extras = self._zeros("extras", (max(len(self.extra_names), 1),))
        self.progress = self._zeros("progress", ())
        self.validation_seen = self.add_weight(
            name="validation_seen", shape=(), initializer="zeros",
            dtype="bool", trainable=False,
        )
        # Every weight exists now. Marked built, so Keras does not try to
        # build the whole model symbolically from a batch under a
        # tf.distribute strategy.
        self.built = True

    def _zeros(self, name, shape):
        return self.add_weight(
            name=name, shape=(self.population,) + tuple(shape),
            initializer="zeros", dtype="float32", trainable=False,
        )

    @property
    def size(self):
        """Number of features per population member."""
        return len(self.names)

    def index(self, name):
        """Return the column of feature `name` in `values()`."""
        if name not in self.names:
            raise KeyError(
                f"Unknown feature name. Received: name={name!r}. "
                f"Known features: {self.names}."
            )
        return self.names.index(name)

    def values(self):
        """Return the features as a float32 tensor [population, size]."""
        parts = [
            self.progress[:, None],
            self.grad_norms,
            self.loss_values,
            self.validation,
        ]
        if self.extra_names:
            parts.append(self.extras)
        return tf.concat([tf.convert_to_tensor(p) for p in parts], axis=1)

    def set_progress(self, progress):
        """Set t / T (a scalar) for every member."""
        progress = tf.cast(progress, "float32")
        self.progress.assign(tf.fill([self.population], progress))

    def record_action(self, action, loss, grad_norm, applied):
        """Refresh the loss and gradient entries of the chosen actions.

        Args:
            action: int32 [population], the action each member took.
            loss: float32 [population], the chosen action's loss.
            grad_norm: float32 [population], its normalized gradient norm.
            applied: bool [population], False where the step was skipped;
                those members keep their old entries.
        """
        mask = tf.one_hot(action, len(self.action_names), on_value=True,
                          off_value=False, dtype="bool")
        mask = tf.logical_and(mask, applied[:, None])
        self.loss_values.assign(tf.where(mask, loss[:, None], self.loss_values))
        self.grad_norms.assign(
            tf.where(mask, grad_norm[:, None], self.grad_norms)
        )

    def record_all(self, losses, grad_norms):
        """Set every action's entries: [population, num_actions] each."""
        self.loss_values.assign(tf.cast(losses, "float32"))
        self.grad_norms.assign(tf.cast(grad_norms, "float32"))

    def record_validation(self, metric):
        """Refresh the validation metric, its EMA and the EMA of differences.

        The first reading initializes the EMA to the metric and the
        difference EMA to zero. A reading that is not finite is stored as
        it is, so the features of that step are not finite. Differences to
        or from such a reading count as zero, and the next finite reading
        starts the EMA again, so one bad reading does not leave the
        features non-finite for the rest of training.
        """
        metric = tf.cast(metric, "float32")
        old = self.validation
        decay = self.ema_decay
        seen = self.validation_seen
        has_ema = tf.logical_and(seen, tf.math.is_finite(old[:, 1]))
        ema = tf.where(
            has_ema, decay * old[:, 1] + (1 - decay) * metric, metric
        )
        has_difference = tf.logical_and(
            tf.logical_and(seen, tf.math.is_finite(old[:, 0])),
            tf.math.is_finite(metric),
        )
        diff = tf.where(has_difference, metric - old[:, 0], 0.0)
        diff_ema = decay * old[:, 2] + (1 - decay) * diff
        self.validation.assign(tf.stack([metric, ema, diff_ema], axis=1))
        self.validation_seen.assign(True)

    def record_extras(self, extras):
        """Set the model-specific features: float32 [population, n_extra]."""
        self.extras.assign(tf.cast(extras, "float32"))

    def get_config(self):
        config = super().get_config()
        config.update(
            action_names=self.action_names,
            population=self.population,
            extra_names=self.extra_names,
            ema_decay=self.ema_decay,
        )
        return config
