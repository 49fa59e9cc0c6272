"""A DCGAN whose generator and discriminator updates are scheduled actions.

Section 4.2 of the AutoLoss paper (Xu et al., ICLR 2019) casts GAN training
as two actions: update the generator G on its loss, or update the
discriminator D on its loss. A schedule picks one per step. Here:

- `"generator"`: the non-saturating loss -E_z log D(G(z)) over G's
  variables. The paper writes the saturating E_z log(1 - D(G(z))), whose
  gradient vanishes while D rejects the fakes.
- `"discriminator"`: -E_x log D(x) - E_z log(1 - D(G(z))) on a real batch
  and an equally large fake batch, over D's variables.

Each action has its own Adam optimizer, by default with learning rate 2e-4
and beta_1 0.5.

Besides the standard features (progress, per-action loss and normalized
gradient norm, validation features), the model adds the paper's GAN
features: `loss_ratio` (generator loss / discriminator loss),
`log_grad_norm_ratio` (log of the generator's normalized gradient norm over
the discriminator's) and `discriminator_error` (the fraction of real and
fake images that D misclassified in its latest loss evaluation). The
paper's Inception Score feature is not computed here.

The architecture follows DCGAN and is configurable along the axes of the
paper's appendix A.5 (base filters, latent size, batch normalization,
activations), plus the kernel size k:

    G: z -> Dense(h/4 * w/4 * 2f) -> [BN] -> act -> reshape
         -> Conv2DTranspose(f, k, stride 2) -> [BN] -> act
         -> Conv2DTranspose(channels, k, stride 2) -> tanh
    D: image -> Conv2D(f, k, stride 2) -> act
         -> Conv2D(2f, k, stride 2) -> [BN] -> act -> Dense(1) logit

For 28x28x1 images the defaults (f = 64, z of size 100, batch norm, k = 5)
give G: 7x7x128 -> 14x14x64 -> 28x28x1 and D: 14x14x64 -> 7x7x128 -> 1.
"""

import keras
import numpy as np
import tensorflow as tf

from autoloss_tf import ScheduledModel

ACTIVATIONS = ("relu", "leaky_relu")
GAN_FEATURE_NAMES = ("loss_ratio", "log_grad_norm_ratio",
                     "discriminator_error")
GENERATOR, DISCRIMINATOR = "generator", "discriminator"
# Floor of the denominators of the ratio features, so a zero loss or
# gradient gives a large finite feature instead of Inf or NaN.
_RATIO_FLOOR = 1e-8
_LEAKY_SLOPE = 0.2
_INIT_STDDEV = 0.02


@keras.saving.register_keras_serializable(package="autoloss_models")
class BatchNormalizationWithOptionalUpdate(keras.layers.BatchNormalization):
    """`BatchNormalization` that can skip its moving-statistics update.

    Called with `training=True, update_statistics=False`, it normalizes
    with the batch's moments, as in training, but leaves `moving_mean` and
    `moving_variance` unchanged. A GAN action uses this for the network it
    does not update, so a step changes no variable of the other network.
    Masks, renormalization and synchronized statistics are not supported.
    """

    def call(self, inputs, training=None, mask=None, update_statistics=True):
        if not training or update_statistics or not self.trainable:
            return super().call(inputs, training=training, mask=mask)
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        values = keras.ops.cast(inputs, compute_dtype)
        axis = self.axis % len(inputs.shape)
        reduction_axes = [i for i in range(len(inputs.shape)) if i != axis]
        mean, variance = keras.ops.moments(values, axes=reduction_axes)
        outputs = keras.ops.batch_normalization(
            values, mean, variance, axis=self.axis,
            offset=self.beta if self.center else None,
            scale=self.gamma if self.scale else None,
            epsilon=self.epsilon,
        )
        return keras.ops.cast(outputs, self.compute_dtype)


class _Network(keras.layers.Layer):
    """A chain of layers whose batch norms take `update_statistics`.

    Subclasses name every sub-layer, so variable paths do not depend on how
    many layers the process created before.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.chain = []

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.chain:
            if not layer.built:
                layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.chain:
            shape = layer.compute_output_shape(shape)
        return shape

    def call(self, inputs, training=None, update_statistics=True):
        outputs = inputs
        for layer in self.chain:
            if isinstance(layer, BatchNormalizationWithOptionalUpdate):
                outputs = layer(outputs, training=training,
                                update_statistics=update_statistics)
            else:
                outputs = layer(outputs, training=training)
        return outputs


def _activation(kind, name):
    if kind == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=_LEAKY_SLOPE, name=name)
    return keras.layers.ReLU(name=name)


def _batch_norm(name):
    # Momentum 0.9 (Keras defaults to 0.99) lets the moving statistics that
    # inference-mode sampling uses follow the generator within tens of steps.
    return BatchNormalizationWithOptionalUpdate(momentum=0.9, epsilon=1e-5,
                                                name=name)


class Generator(_Network):
    """DCGAN generator: latent vector [batch, z] -> images in [-1, 1]."""

    def __init__(self, image_shape, base_filters, kernel_size, batch_norm,
                 activation, seed, **kwargs):
        super().__init__(**kwargs)
        height, width, channels = image_shape
        widest = 2 * base_filters
        init = _initializers(seed)
        self.chain.append(keras.layers.Dense(
            height // 4 * width // 4 * widest, use_bias=not batch_norm,
            kernel_initializer=next(init), name="project",
        ))
        if batch_norm:
            self.chain.append(_batch_norm("project_norm"))
        self.chain.append(_activation(activation, "project_activation"))
        self.chain.append(keras.layers.Reshape(
            (height // 4, width // 4, widest), name="reshape"
        ))
        self.chain.append(keras.layers.Conv2DTranspose(
            base_filters, kernel_size, strides=2, padding="same",
            use_bias=not batch_norm, kernel_initializer=next(init),
            name="upsample",
        ))
        if batch_norm:
            self.chain.append(_batch_norm("upsample_norm"))
        self.chain.append(_activation(activation, "upsample_activation"))
        self.chain.append(keras.layers.Conv2DTranspose(
            channels, kernel_size, strides=2, padding="same",
            activation="tanh", kernel_initializer=next(init), name="image",
        ))


class Discriminator(_Network):
    """DCGAN discriminator: images -> one real-vs-fake logit per image."""

    def __init__(self, base_filters, kernel_size, batch_norm, activation,
                 seed, **kwargs):
        super().__init__(**kwargs)
        init = _initializers(seed)
        self.chain.append(keras.layers.Conv2D(
            base_filters, kernel_size, strides=2, padding="same",
            kernel_initializer=next(init), name="downsample_1",
        ))
        self.chain.append(_activation(activation, "downsample_1_activation"))
        self.chain.append(keras.layers.Conv2D(
            2 * base_filters, kernel_size, strides=2, padding="same",
            use_bias=not batch_norm, kernel_initializer=next(init),
            name="downsample_2",
        ))
        if batch_norm:
            self.chain.append(_batch_norm("downsample_2_norm"))
        self.chain.append(_activation(activation, "downsample_2_activation"))
        self.chain.append(keras.layers.Flatten(name="flatten"))
        self.chain.append(keras.layers.Dense(
            1, kernel_initializer=next(init), name="logit"
        ))


def _initializers(seed):
    """Yield N(0, 0.02) kernel initializers with distinct derived seeds."""
    index = 0
    while True:
        index += 1
        yield keras.initializers.RandomNormal(
            stddev=_INIT_STDDEV, seed=seed * 1000 + index
        )


def classification_error(real_logits, fake_logits):
    """Return the fraction of real and fake images D misclassified.

    D calls an image real when its logit is positive. Real and fake images
    count alike, so with equal batch sizes 0.5 is chance level.
    """
    real_wrong = tf.reduce_sum(tf.cast(real_logits <= 0, "float32"))
    fake_wrong = tf.reduce_sum(tf.cast(fake_logits > 0, "float32"))
    total = tf.cast(tf.size(real_logits) + tf.size(fake_logits), "float32")
    return (real_wrong + fake_wrong) / total


@keras.saving.register_keras_serializable(package="autoloss_models")
class DCGAN(ScheduledModel):
    """A DCGAN trained by scheduled generator and discriminator actions.

    Calling the model on latent vectors [batch, latent_dim] returns images.
    `fit(images, batch_size=...)` trains on real images in [-1, 1], one
    action per step, chosen by the compiled schedule.

    Args:
        image_shape: (height, width, channels); height and width must be
            multiples of 4. Defaults to (28, 28, 1).
        latent_dim: size of the latent vector z ~ N(0, I). Defaults to 100.
        base_filters: filters f of D's first and G's last hidden
            convolution. The other hidden layer has 2f. Defaults to 64.
        kernel_size: side of every convolution kernel. Defaults to 5.
        batch_norm: batch normalization in G's hidden layers and D's second
            convolution. Defaults to True.
        generator_activation: `"relu"` or `"leaky_relu"` (slope 0.2).
            Defaults to `"relu"`.
        discriminator_activation: `"relu"` or `"leaky_relu"`. Defaults to
            `"leaky_relu"`.
        learning_rate: Adam learning rate of both actions. Defaults to 2e-4.
        beta_1: Adam beta_1 of both actions. Defaults to 0.5.
        seed: seed of the initial weights and the latent samples.
            Defaults to 0.
        **kwargs: passed to `keras.Model`. `population` is not supported.

    Attributes:
        generator: the generator network, the `"generator"` group.
        discriminator: the discriminator network, the `"discriminator"`
            group.
        generator_optimizer: the Adam instance of the `"generator"` action.
        discriminator_optimizer: the Adam instance of the
            `"discriminator"` action.
        last_discriminator_error: D's classification error in its latest
            loss evaluation, read by the `discriminator_error` feature.

    NOTE: before the first step, `ScheduledModel` evaluates both action
    losses once to fill the features. That evaluation also moves both
    networks' batch-norm moving statistics by one update.

    Example:

    ```python
    gan = DCGAN()
    gan.compile(schedule=CyclicSchedule(["discriminator", "generator"]))
    gan.fit(images, batch_size=64, epochs=1)
    samples = gan.generate(16)
    ```
    """

    def __init__(self, image_shape=(28, 28, 1), latent_dim=100,
                 base_filters=64, kernel_size=5, batch_norm=True,
                 generator_activation="relu",
                 discriminator_activation="leaky_relu", learning_rate=2e-4,
                 beta_1=0.5, seed=0, **kwargs):
        population = kwargs.pop("population", None)
        if population is not None:
            raise ValueError(
                "A DCGAN trains a single generator and discriminator, "
                "because population mode needs every action to update the "
                f"same variables. Received: population={population!r}. "
                "Create one DCGAN per run instead."
            )
        super().__init__(**kwargs)
        _check_architecture(image_shape, latent_dim, base_filters,
                            kernel_size, generator_activation,
                            discriminator_activation)
        _check_optimizer_settings(learning_rate, beta_1)
        self.image_shape = tuple(int(size) for size in image_shape)
        self.latent_dim = int(latent_dim)
        self.base_filters = int(base_filters)
        self.kernel_size = int(kernel_size)
        self.batch_norm = bool(batch_norm)
        self.generator_activation = generator_activation
        self.discriminator_activation = discriminator_activation
        self.learning_rate = float(learning_rate)
        self.beta_1 = float(beta_1)
        self.seed = int(seed)
        self._build_networks()
        self.latent_seed = keras.random.SeedGenerator(self.seed)
        self.last_discriminator_error = self.add_weight(
            name="last_discriminator_error", shape=(), initializer="zeros",
            trainable=False,
        )
        self.generator_optimizer = self._new_adam()
        self.discriminator_optimizer = self._new_adam()
        self.add_action(GENERATOR, self.generator_loss,
                        variables=[self.generator],
                        optimizer=self.generator_optimizer)
        self.add_action(DISCRIMINATOR, self.discriminator_loss,
                        variables=[self.discriminator],
                        optimizer=self.discriminator_optimizer)
        self.built = True

    def _build_networks(self):
        self.generator = Generator(
            self.image_shape, self.base_filters, self.kernel_size,
            self.batch_norm, self.generator_activation, self.seed,
            name="generator",
        )
        self.discriminator = Discriminator(
            self.base_filters, self.kernel_size, self.batch_norm,
            self.discriminator_activation, self.seed + 1,
            name="discriminator",
        )
        self.generator.build((None, self.latent_dim))
        self.discriminator.build((None,) + self.image_shape)

    def _new_adam(self):
        return keras.optimizers.Adam(self.learning_rate, beta_1=self.beta_1)

    def call(self, latent, training=False):
        return self.generator(latent, training=training)

    def generate(self, num_images, batch_size=500):
        """Return `num_images` generated images as a float32 numpy array.

        G runs in inference mode, so batch norm uses its moving statistics.
        Each call draws new latent vectors from the model's seed stream.
        """
        outputs = []
        for start in range(0, num_images, batch_size):
            count = min(batch_size, num_images - start)
            outputs.append(self(self.sample_latent(count)).numpy())
        return _concatenate(outputs, (0,) + self.image_shape)

    def sample_latent(self, count):
        """Draw `count` latent vectors z ~ N(0, I): float32 [count, z]."""
        return keras.random.normal((count, self.latent_dim),
                                   seed=self.latent_seed)

    # Actions ------------------------------------------------------------

    def generator_loss(self, data):
        """Return the non-saturating generator loss -E_z log D(G(z)).

        The fake batch is as large as the real batch in `data`. D runs on
        batch statistics without updating its moving statistics.
        """
        real = _real_images(data)
        fake = self.generator(self.sample_latent(tf.shape(real)[0]),
                              training=True)
        logits = self.discriminator(fake, training=True,
                                    update_statistics=False)
        return tf.reduce_mean(tf.nn.softplus(-logits))

    def discriminator_loss(self, data):
        """Return D's loss on the real batch and an equally large fake one.

        The loss is -E_x log D(x) - E_z log(1 - D(G(z))). G runs on batch
        statistics without updating its moving statistics. As a side
        effect, the call stores D's classification error on these two
        batches in `last_discriminator_error`, which the
        `discriminator_error` feature reads.
        """
        real = _real_images(data)
        loss, error = self._discriminator_terms(real, training=True)
        self.last_discriminator_error.assign(error)
        return loss

    def _discriminator_terms(self, real, training):
        fake = self.generator(self.sample_latent(tf.shape(real)[0]),
                              training=training, update_statistics=False)
        fake = tf.stop_gradient(fake)
        real_logits = self.discriminator(real, training=training)
        fake_logits = self.discriminator(fake, training=training)
        loss = tf.reduce_mean(tf.nn.softplus(-real_logits)) + tf.reduce_mean(
            tf.nn.softplus(fake_logits)
        )
        return loss, classification_error(real_logits, fake_logits)

    # Features -------------------------------------------------------------

    def extra_feature_names(self):
        return list(GAN_FEATURE_NAMES)

    def extra_features(self, data):
        del data
        tracker = self.feature_tracker
        generator, discriminator = (
            tracker.action_names.index(GENERATOR),
            tracker.action_names.index(DISCRIMINATOR),
        )
        losses = tf.convert_to_tensor(tracker.loss_values)
        norms = tf.convert_to_tensor(tracker.grad_norms)
        loss_ratio = losses[:, generator] / tf.maximum(
            losses[:, discriminator], _RATIO_FLOOR
        )
        log_norm_ratio = tf.math.log(
            tf.maximum(norms[:, generator], _RATIO_FLOOR)
        ) - tf.math.log(tf.maximum(norms[:, discriminator], _RATIO_FLOOR))
        error = tf.fill([self.population], tf.convert_to_tensor(
            self.last_discriminator_error
        ))
        return tf.stack([loss_ratio, log_norm_ratio, error], axis=1)

    # Evaluation and saving ------------------------------------------------

    def test_step(self, data):
        """Evaluate both losses and D's error in inference mode.

        Evaluation changes no variable except the latent seed's state.
        """
        real = _real_images(data)
        fake = self.generator(self.sample_latent(tf.shape(real)[0]))
        generator_loss = tf.reduce_mean(
            tf.nn.softplus(-self.discriminator(fake))
        )
        discriminator_loss, error = self._discriminator_terms(
            real, training=False
        )
        return {
            f"loss/{GENERATOR}": generator_loss,
            f"loss/{DISCRIMINATOR}": discriminator_loss,
            "discriminator_error": error,
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            image_shape=list(self.image_shape), latent_dim=self.latent_dim,
            base_filters=self.base_filters, kernel_size=self.kernel_size,
            batch_norm=self.batch_norm,
            generator_activation=self.generator_activation,
            discriminator_activation=self.discriminator_activation,
            learning_rate=self.learning_rate, beta_1=self.beta_1,
            seed=self.seed,
        )
        return config


def _real_images(data):
    images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    return tf.convert_to_tensor(images, "float32")


def _concatenate(arrays, empty_shape):
    if not arrays:
        return np.zeros(empty_shape, "float32")
    return np.concatenate(arrays)


def _check_architecture(image_shape, latent_dim, base_filters, kernel_size,
                        generator_activation, discriminator_activation):
    shape = tuple(image_shape)
    valid_shape = len(shape) == 3 and all(
        isinstance(size, int) and size > 0 for size in shape
    )
    if not valid_shape or shape[0] % 4 or shape[1] % 4:
        raise ValueError(
            "`image_shape` must be (height, width, channels) of positive "
            "integers, with height and width multiples of 4 (G upsamples "
            f"twice by 2). Received: image_shape={image_shape!r}. Pad or "
            "resize the images, for example to (28, 28, 1) or (32, 32, 3)."
        )
    for name, value in (("latent_dim", latent_dim),
                        ("base_filters", base_filters),
                        ("kernel_size", kernel_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive integer. "
                f"Received: {name}={value!r}."
            )
    for name, value in (("generator_activation", generator_activation),
                        ("discriminator_activation", discriminator_activation)):
        if value not in ACTIVATIONS:
            raise ValueError(
                f"`{name}` must be one of {ACTIVATIONS}. "
                f"Received: {name}={value!r}."
            )


def _check_optimizer_settings(learning_rate, beta_1):
    if not learning_rate > 0:
        raise ValueError(
            "`learning_rate` must be positive. "
            f"Received: learning_rate={learning_rate!r}. Pass a value "
            "such as 2e-4."
        )
    if not 0 <= beta_1 < 1:
        raise ValueError(
            f"`beta_1` must be in [0, 1). Received: beta_1={beta_1!r}. "
            "Pass a value such as 0.5."
        )
