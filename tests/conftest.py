"""Fixtures shared by the core tests: tiny scheduled models, data, a recorder.

The test models are registered under the package "autoloss_tests", so
`keras.saving.load_model` can rebuild them. Their weights start from
constant initializers, so every run is deterministic.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

# The MirroredStrategy tests need two logical CPU devices. TensorFlow
# accepts this only before it initializes its devices, that is, before the
# first test runs an op, so it is set here, when pytest imports conftest.
# Ops without a device scope still run on /CPU:0.
NUM_LOGICAL_CPUS = 2
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS,
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from autoloss_tf import ScheduledModel  # noqa: E402

L1_WEIGHT = 0.1
NUM_SAMPLES = 12
NUM_INPUTS = 3


def mean_squared_error(model, data):
    """Return the mean squared error of `model` on a batch `(x, y)`.

    The prediction is cast to float32 first, as Keras losses do, so the
    loss also works under the "mixed_float16" policy.
    """
    x, y = data[0], data[1]
    prediction = keras.ops.cast(model(x), "float32")
    return keras.ops.mean(keras.ops.square(prediction - y))


@keras.saving.register_keras_serializable(package="autoloss_tests")
class DenseRegressor(ScheduledModel):
    """A Dense(1) regressor with an "mse" action and an optional "l1" action.

    Both actions update every variable, so their groups overlap. The kernel
    starts at ones and the bias at zero. `train_step_traces` counts how
    often Python runs `train_step`, that is, how often it is traced.

    Args:
        with_l1: if True, also register the action "l1" with the loss
            `L1_WEIGHT * ||kernel||_1`. Defaults to False.
    """

    def __init__(self, with_l1=False, **kwargs):
        super().__init__(**kwargs)
        self.with_l1 = with_l1
        self.train_step_traces = 0
        self.dense = keras.layers.Dense(
            1, kernel_initializer="ones", bias_initializer="zeros"
        )
        self.add_action("mse", self.mse_loss)
        if with_l1:
            self.add_action("l1", self.l1_loss)

    def call(self, x):
        return self.dense(x)

    def mse_loss(self, data):
        return mean_squared_error(self, data)

    def l1_loss(self, data):
        del data
        return L1_WEIGHT * keras.ops.sum(keras.ops.abs(self.dense.kernel))

    def train_step(self, data):
        self.train_step_traces += 1
        return super().train_step(data)

    def get_config(self):
        config = super().get_config()
        config.update(with_l1=self.with_l1)
        return config


@keras.saving.register_keras_serializable(package="autoloss_tests")
class TwoLayerNet(ScheduledModel):
    """Dense(2) -> Dense(1), with an action per listed layer.

    Each listed layer ("first" or "second") gets an action of that name
    whose loss is the mean squared error of the whole network and whose
    variable group is that layer alone, so the groups are disjoint.

    Args:
        layers: names of the layers that get an action. Pass () to
            register actions by hand. Defaults to ("first", "second").
        optimizer: optimizer mode of every registered action.
            Defaults to "auto".
    """

    def __init__(self, layers=("first", "second"), optimizer="auto",
                 **kwargs):
        super().__init__(**kwargs)
        self.layer_names = list(layers)
        self.optimizer_mode = optimizer
        self.first = keras.layers.Dense(
            2, kernel_initializer=keras.initializers.Constant(0.5),
            bias_initializer="zeros",
        )
        self.second = keras.layers.Dense(
            1, kernel_initializer="ones", bias_initializer="zeros"
        )
        for name in self.layer_names:
            self.add_action(
                name, self.mse_loss, variables=[getattr(self, name)],
                optimizer=optimizer,
            )

    def call(self, x):
        return self.second(self.first(x))

    def mse_loss(self, data):
        return mean_squared_error(self, data)

    def get_config(self):
        config = super().get_config()
        config.update(layers=self.layer_names, optimizer=self.optimizer_mode)
        return config


class StepRecorder(keras.callbacks.Callback):
    """Records the logs and a snapshot of chosen values after every batch.

    Args:
        read: callable returning the values to snapshot, for example
            `lambda: [v.numpy() for v in model.weights]`. Defaults to
            None, which records only the logs.
    """

    def __init__(self, read=None):
        super().__init__()
        self.read = read
        self.logs = []
        self.snapshots = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append({k: np.asarray(v) for k, v in (logs or {}).items()})
        if self.read is not None:
            self.snapshots.append(self.read())

    def column(self, key):
        """Return the values of log `key`, one per recorded batch."""
        return [entry[key].item() for entry in self.logs]


@pytest.fixture
def regression_data():
    """Return a 12-sample linear regression set (x [12, 3], y [12, 1])."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_SAMPLES, NUM_INPUTS)).astype("float32")
    true_kernel = np.array([[1.0], [-2.0], [0.5]], "float32")
    noise = 0.1 * rng.normal(size=(NUM_SAMPLES, 1))
    y = (x @ true_kernel + 0.3 + noise).astype("float32")
    return x, y


@pytest.fixture
def make_regressor(regression_data):
    """Return a factory of `DenseRegressor`s, built unless `build=False`."""
    def make(build=True, **kwargs):
        model = DenseRegressor(**kwargs)
        if build:
            model(regression_data[0][:1])
        return model

    return make


@pytest.fixture
def make_two_layer_net(regression_data):
    """Return a factory of built `TwoLayerNet`s."""
    def make(**kwargs):
        model = TwoLayerNet(**kwargs)
        model(regression_data[0][:1])
        return model

    return make


@pytest.fixture
def step_recorder():
    """Return the `StepRecorder` callback class."""
    return StepRecorder


@pytest.fixture
def mixed_precision():
    """Set the global dtype policy to "mixed_float16" for one test."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(previous)
