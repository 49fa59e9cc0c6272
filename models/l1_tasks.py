"""Task models with an L1 regularizer as a separate action.

Both models follow section 4.1 of the AutoLoss paper (Xu et al., ICLR
2019): the action set is {("task", all parameters), ("l1", all
parameters)}, and the controller decides on each step whether to descend
the task loss or the L1 term. Both are population models: `population`
independent copies train in lockstep with one shared optimizer state per
copy, so one compiled run trains a whole grid of baselines, or a batch of
controller episodes.

The "task" action's loss is `task_loss + task_l1_weight * ||theta||_1`,
with one weight per member (zero by default). A `FixedSchedule("task")`
with a grid of weights is the dense grid search (DGS) baseline.
"""

import keras
import numpy as np
import tensorflow as tf

from autoloss_tf import ScheduledModel


class L1TaskModel(ScheduledModel):
    """Base class: population weights, a task action and an L1 action.

    Args:
        population: number of copies trained in lockstep. Defaults to 1.
        l1_scale: weight of the L1 action's loss, `l1_scale * ||theta||_1`:
            a float, or one float per member. Defaults to 0.2.
        task_l1_weights: None, a float, or one float per member; added as
            `weight * ||theta||_1` to the task action's loss. Defaults to 0.
        seed: seed of the weight initializers. Defaults to 0.
        shared_init: if True, every member starts from the same weights.
            Defaults to True.
        **kwargs: passed to `keras.Model`.
    """

    def __init__(self, population=1, l1_scale=0.2, task_l1_weights=None,
                 seed=0, shared_init=True, **kwargs):
        super().__init__(population=population, **kwargs)
        self.l1_scale = _member_floats("l1_scale", l1_scale, population)
        self.seed = int(seed)
        self.shared_init = bool(shared_init)
        self.task_l1_weights_value = _member_floats(
            "task_l1_weights", 0.0 if task_l1_weights is None
            else task_l1_weights, population,
        )
        self.add_action("task", self.task_action_loss)
        self.add_action("l1", self.l1_action_loss)

    def _member_weight(self, name, shape, stddev):
        """Add a [population, *shape] weight, normal(0, stddev) or zeros.

        With `shared_init` every member starts from the same values, so
        methods compared in one population differ only by their schedule.
        """
        self._weight_count = getattr(self, "_weight_count", 0) + 1
        seed = self.seed * 1000 + self._weight_count
        population = self.population
        shared = self.shared_init

        def initializer(shape, dtype=None):
            if stddev is None:
                return tf.zeros(shape, dtype or "float32")
            sample_shape = (1,) + tuple(shape[1:]) if shared else shape
            values = keras.random.normal(
                sample_shape, stddev=stddev, seed=seed, dtype=dtype or "float32"
            )
            return tf.broadcast_to(values, shape) if shared else values

        return self.add_weight(
            name=name, shape=(population,) + tuple(shape),
            initializer=initializer, trainable=True,
        )

    def l1_norm(self):
        """Return ||theta||_1 of every member: [population]."""
        total = 0.0
        for variable in self.task_variables():
            flat = tf.reshape(tf.abs(variable), [self.population, -1])
            total += tf.reduce_sum(flat, axis=1)
        return total

    def member_loss(self, x, y):
        """Return the unregularized task loss of every member."""
        raise NotImplementedError

    def task_action_loss(self, data):
        x, y = data[0], data[1]
        weights = tf.constant(self.task_l1_weights_value, "float32")
        return self.member_loss(x, y) + weights * self.l1_norm()

    def l1_action_loss(self, data):
        del data
        scales = self.l1_scale
        if isinstance(scales, list):
            scales = tf.constant(scales, "float32")
        return scales * self.l1_norm()

    def validation_metric(self, x, y):
        return self.member_loss(x, y)

    def get_config(self):
        config = super().get_config()
        config.update(
            population=self.population, l1_scale=self.l1_scale,
            task_l1_weights=self.task_l1_weights_value, seed=self.seed,
            shared_init=self.shared_init,
        )
        return config


def _member_floats(name, value, population):
    """Return `value` as a float, or as one float per member if a list."""
    if np.ndim(value) == 0:
        values = [float(value)]
        result = float(value)
    else:
        values = [float(v) for v in np.ravel(value)]
        if len(values) != population:
            raise ValueError(
                f"`{name}` must be one float or one float per member. "
                f"Received: {len(values)} values for population={population}. "
                f"Pass a float or a list of {population} floats."
            )
        result = values
    if min(values) < 0:
        raise ValueError(
            f"`{name}` must be >= 0. Received: {name}={value!r}."
        )
    return result


@keras.saving.register_keras_serializable(package="autoloss_models")
class QuadraticRegression(L1TaskModel):
    """The d-ary quadratic regressor f(u) = u^T A u + b^T u + c.

    As in the AutoLoss authors' code, A is stored as W / 10 with
    W ~ N(0, 0.01^2) and b ~ N(0, 0.1^2) at initialization, and c starts
    at 0.
    With d = 16 a member has 16 * 16 + 16 + 1 = 273 parameters. The task
    loss is the mean squared error.

    Args:
        dimension: input dimension d. Defaults to 16.
        l1_scale: weight of the L1 action. Defaults to 0.2.
        **kwargs: see `L1TaskModel`.
    """

    def __init__(self, dimension=16, l1_scale=0.2, **kwargs):
        super().__init__(l1_scale=l1_scale, **kwargs)
        self.dimension = int(dimension)
        self.quadratic = self._member_weight(
            "quadratic", (dimension, dimension), 0.01
        )
        self.linear = self._member_weight("linear", (dimension,), 0.1)
        self.bias = self._member_weight("bias", (), None)
        self.built = True

    def call(self, x):
        """Return predictions [population, batch] for inputs [batch, d]."""
        x = tf.cast(x, "float32")
        projected = tf.einsum("nd,pde->pne", x, self.quadratic)
        quadratic = tf.reduce_sum(projected * x[None], axis=-1) / 10.0
        linear = tf.einsum("nd,pd->pn", x, self.linear)
        return quadratic + linear + self.bias[:, None]

    def member_loss(self, x, y):
        error = self(x) - tf.cast(y, "float32")[None, :]
        return tf.reduce_mean(tf.square(error), axis=1)

    def test_metric(self, x, y):
        """Return each member's mean squared error on (x, y) as numpy."""
        return self.member_loss(x, y).numpy()

    def get_config(self):
        config = super().get_config()
        config.update(dimension=self.dimension)
        return config


@keras.saving.register_keras_serializable(package="autoloss_models")
class MLPClassifier(L1TaskModel):
    """A binary classifier: input -> Dense(hidden, ReLU) -> Dense(1).

    The task loss is the binary cross-entropy on the logit; weights start
    Glorot-normal, biases at 0.

    Args:
        dimension: input dimension. Defaults to 32.
        hidden_units: hidden width. Defaults to 32.
        l1_scale: weight of the L1 action. Defaults to 0.02.
        **kwargs: see `L1TaskModel`.
    """

    def __init__(self, dimension=32, hidden_units=32, l1_scale=0.02,
                 **kwargs):
        super().__init__(l1_scale=l1_scale, **kwargs)
        self.dimension = int(dimension)
        self.hidden_units = int(hidden_units)
        self.hidden_kernel = self._member_weight(
            "hidden_kernel", (dimension, hidden_units),
            float(np.sqrt(2.0 / (dimension + hidden_units))),
        )
        self.hidden_bias = self._member_weight("hidden_bias", (hidden_units,), None)
        self.output_kernel = self._member_weight(
            "output_kernel", (hidden_units,),
            float(np.sqrt(2.0 / (hidden_units + 1))),
        )
        self.output_bias = self._member_weight("output_bias", (), None)
        self.built = True

    def call(self, x):
        """Return logits [population, batch] for inputs [batch, dimension]."""
        x = tf.cast(x, "float32")
        hidden = tf.einsum("nd,pdh->pnh", x, self.hidden_kernel)
        hidden = tf.nn.relu(hidden + self.hidden_bias[:, None, :])
        logits = tf.einsum("pnh,ph->pn", hidden, self.output_kernel)
        return logits + self.output_bias[:, None]

    def member_loss(self, x, y):
        labels = tf.broadcast_to(tf.cast(y, "float32")[None, :],
                                 [self.population, tf.shape(y)[0]])
        losses = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=labels, logits=self(x)
        )
        return tf.reduce_mean(losses, axis=1)

    def error_rate(self, x, y):
        """Return each member's classification error on (x, y)."""
        predicted = tf.cast(self(x) > 0, "float32")
        wrong = tf.not_equal(predicted, tf.cast(y, "float32")[None, :])
        return tf.reduce_mean(tf.cast(wrong, "float32"), axis=1)

    def test_metric(self, x, y):
        """Return each member's classification error on (x, y) as numpy."""
        return self.error_rate(x, y).numpy()

    def get_config(self):
        config = super().get_config()
        config.update(dimension=self.dimension, hidden_units=self.hidden_units)
        return config
