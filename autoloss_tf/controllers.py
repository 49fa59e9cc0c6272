"""Controller networks: features in, a categorical policy over actions out.

A controller maps the feature vector X of each population member to logits
over the registered actions. `policy` turns the logits into a
`tfp.distributions.Categorical` with a softmax temperature, so the action
probabilities are softmax(logits / temperature).
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp


@keras.saving.register_keras_serializable(package="autoloss_tf")
class Controller(keras.Model):
    """Base class of the policy networks.

    Args:
        num_features: length of the feature vector.
        num_actions: number of actions to choose from.
        temperature: softmax temperature, > 0. Higher values flatten the
            policy. Defaults to 1.0.
        feature_scale: optional list of `num_features` positive floats. Each
            feature is divided by its entry before the first layer, so
            features of very different magnitudes (losses near 100,
            gradient norms near 0.01) reach the network on one scale.
            Defaults to all ones.
        feature_mask: optional list of `num_features` values, each 0 or 1.
            Features with a 0 reach the network as 0 whatever their value,
            which drops them from the policy (a feature ablation) while the
            controller still reads the full feature vector. Defaults to all
            ones.
    """

    kind = None

    def __init__(
        self, num_features, num_actions, temperature=1.0, feature_scale=None,
        feature_mask=None, **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("num_features", num_features)
        _check_positive_int("num_actions", num_actions)
        if not temperature > 0:
            raise ValueError(
                "`temperature` must be > 0. "
                f"Received: temperature={temperature}. Pass e.g. 1.0."
            )
        if feature_scale is None:
            feature_scale = [1.0] * num_features
        feature_scale = [float(s) for s in feature_scale]
        if len(feature_scale) != num_features or min(feature_scale) <= 0:
            raise ValueError(
                "`feature_scale` must hold `num_features` positive floats. "
                f"Received: feature_scale={feature_scale} with "
                f"num_features={num_features}. Pass one scale per feature."
            )
        if feature_mask is None:
            feature_mask = [1.0] * num_features
        feature_mask = [float(m) for m in feature_mask]
        if len(feature_mask) != num_features or not set(feature_mask) <= {0.0, 1.0}:
            raise ValueError(
                "`feature_mask` must hold `num_features` values, each 0 or 1. "
                f"Received: feature_mask={feature_mask} with "
                f"num_features={num_features}. Pass 1 to keep a feature and "
                "0 to drop it."
            )
        self.num_features = int(num_features)
        self.num_actions = int(num_actions)
        self.temperature = float(temperature)
        self.feature_scale = feature_scale
        self.feature_mask = feature_mask

    def _scaled(self, features):
        features = tf.cast(features, "float32")
        scaled = features / tf.constant(self.feature_scale, "float32")
        if min(self.feature_mask) == 1.0:
            return scaled
        return scaled * tf.constant(self.feature_mask, "float32")

    def logits(self, features):
        """Return the raw logits [batch, num_actions] for features."""
        return self(features)

    def probabilities(self, features):
        """Return softmax(logits / temperature) as [batch, num_actions]."""
        return tf.nn.softmax(self.logits(features) / self.temperature)

    def policy(self, features):
        """Return the `tfp.distributions.Categorical` policy for features."""
        return tfp.distributions.Categorical(
            logits=self.logits(features) / self.temperature
        )

    def build(self, input_shape=None):
        shape = (None, self.num_features)
        for layer in self._network_layers():
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def _network_layers(self):
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update(
            num_features=self.num_features,
            num_actions=self.num_actions,
            temperature=self.temperature,
            feature_scale=self.feature_scale,
            feature_mask=self.feature_mask,
        )
        return config


@keras.saving.register_keras_serializable(package="autoloss_tf")
class LinearController(Controller):
    """A linear policy: logits = W x + b.

    Example:

    >>> controller = LinearController(num_features=8, num_actions=2)
    >>> controller.probabilities(tf.zeros([1, 8])).shape
    TensorShape([1, 2])
    """

    kind = "linear"

    def __init__(self, num_features, num_actions, **kwargs):
        super().__init__(num_features, num_actions, **kwargs)
        self.output_layer = keras.layers.Dense(
            num_actions, kernel_initializer="zeros", name="logits"
        )
        self.build()

    def _network_layers(self):
        return [self.output_layer]

    def call(self, features):
        return self.output_layer(self._scaled(features))


@keras.saving.register_keras_serializable(package="autoloss_tf")
class MLPController(Controller):
    """A two-layer perceptron policy: logits = W2 relu(W1 x + b1) + b2.

    Args:
        num_features: length of the feature vector.
        num_actions: number of actions.
        hidden_units: width of the hidden ReLU layer. Defaults to 32.
        seed: seed of the weight initializer. Defaults to 0.
        **kwargs: `temperature`, `feature_scale`, and Keras model arguments.
    """

    kind = "mlp"

    def __init__(
        self, num_features, num_actions, hidden_units=32, seed=0, **kwargs
    ):
        super().__init__(num_features, num_actions, **kwargs)
        _check_positive_int("hidden_units", hidden_units)
        self.hidden_units = int(hidden_units)
        self.seed = int(seed)
        self.hidden_layer = keras.layers.Dense(
            hidden_units, activation="relu", name="hidden",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        )
        # A zero output layer starts the policy uniform over the actions.
        self.output_layer = keras.layers.Dense(
            num_actions, kernel_initializer="zeros", name="logits"
        )
        self.build()

    def _network_layers(self):
        return [self.hidden_layer, self.output_layer]

    def call(self, features):
        return self.output_layer(self.hidden_layer(self._scaled(features)))

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=self.hidden_units, seed=self.seed)
        return config


CONTROLLER_KINDS = {"linear": LinearController, "mlp": MLPController}


def make_controller(kind, num_features, num_actions, **kwargs):
    """Create a controller by kind name (`"linear"` or `"mlp"`)."""
    if kind not in CONTROLLER_KINDS:
        raise ValueError(
            "Unknown controller kind. "
            f"Received: kind={kind!r}. Choose one of {sorted(CONTROLLER_KINDS)}."
        )
    return CONTROLLER_KINDS[kind](num_features, num_actions, **kwargs)


def _check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. "
            f"Received: {name}={value!r}."
        )
