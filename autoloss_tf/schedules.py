"""Schedules: every way to pick the action of a training step.

A schedule is a Keras layer with one method that matters,
`select(features, step) -> int32 [population]`. `ScheduledModel` calls it
once per step, inside its compiled `train_step`, with the feature matrix
[population, num_features] of `FeatureTracker`. Schedules:

- `LearnedSchedule`: a controller's categorical policy, sampled (seeded
  statelessly from (seed, step)), decoded greedily, or dithered (each
  action taken at its policy rate, without random draws).
- `FixedSchedule`: always the same action.
- `CyclicSchedule`: a repeating pattern such as D, G, G, G (a K:1 ratio).
- `RandomSchedule`: an action drawn with fixed probabilities.
- `ThresholdSchedule`: the rules S1, S2, S3 of the AutoLoss paper
  (Xu et al., ICLR 2019, section 5.1.1): apply the regularizer when
  (A - B) / B > threshold.
- `MemberwiseSchedule`: different schedules for consecutive slices of a
  population, so one compiled run can train many methods side by side.
"""

import keras
import numpy as np
import tensorflow as tf

# Mask of the 20 high mantissa bits that the first 32-bit word of a
# double-precision uniform contributes.
_HIGH_MANTISSA_MASK = 0xFFFFF


def sample_categorical(logits, seed):
    """Draw one action per row of `logits` from the stateless seed `seed`.

    The draws equal `tf.random.stateless_categorical(logits, 1, seed)` on
    CPU in TensorFlow 2.21 (and so `tfp.distributions.Categorical(logits)
    .sample(seed=seed)`), also inside a step compiled with
    `jit_compile=True` and on a machine with a GPU. That kernel samples by
    inverse CDF in float64 from Philox bits, but it draws other actions
    under XLA and on GPU. There this function runs `inverse_cdf_sample`,
    which rebuilds the CPU kernel's draw from ops that XLA and the GPU
    reproduce exactly. On CPU without XLA it runs the kernel itself, which
    costs about 4 microseconds per step against about 23 (measured in a
    loop of 20,000 draws on 2 shared cores).

    Args:
        logits: float [rows, num_actions].
        seed: int32 [2] stateless seed.

    Returns:
        int32 [rows]. Rows whose logits are all NaN get the index
        `num_actions`, as the kernel returns.
    """
    if _in_xla_context() or tf.config.list_logical_devices("GPU"):
        return inverse_cdf_sample(logits, seed)
    draws = tf.random.stateless_categorical(logits, 1, seed, dtype="int32")
    return draws[:, 0]


def _in_xla_context():
    """Return whether ops traced now will be compiled by XLA."""
    # NOTE: a private TensorFlow 2.21 function. Where it is missing, this
    # returns True, so the XLA-safe sampler always runs.
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return True
    graph = ops.get_default_graph()
    return bool(control_flow_util.GraphOrParentsInXlaContext(graph))


def inverse_cdf_sample(logits, seed):
    """Draw one action per row as the CPU kernel of stateless_categorical.

    The 32-bit Philox words come from `tf.random.stateless_uniform(
    dtype=tf.uint32, alg="philox")`, which XLA and the GPU reproduce
    exactly, and their conversion to a double is explicit, as TensorFlow's
    `Uint64ToDouble` does it. The uniform float ops of `tf.random` convert
    bits to floats differently under XLA, so they cannot serve here.

    NOTE: the CPU kernel splits large batches into thread shards whose
    Philox offsets depend on the thread count. On a 2-core machine that
    starts at about 1,000 rows of 3 actions. Here row r always reads words
    2r and 2r + 1, so draws of such large populations can differ from the
    kernel's.

    Args:
        logits: float [rows, num_actions].
        seed: int32 [2] stateless seed.

    Returns:
        int32 [rows].
    """
    logits = tf.convert_to_tensor(logits)
    rows = tf.shape(logits)[0]
    words = tf.random.stateless_uniform(
        [rows, 2], seed=seed, minval=None, maxval=None, dtype=tf.uint32,
        alg="philox",
    )
    # The double in [1, 2) with mantissa (high 20 bits of word 0, word 1),
    # minus 1.
    high = tf.bitwise.bitwise_and(
        words[:, 0], tf.constant(_HIGH_MANTISSA_MASK, tf.uint32)
    )
    uniform = (
        tf.cast(high, tf.float64) * 2.0**32 + tf.cast(words[:, 1], tf.float64)
    ) * 2.0**-52
    # Non-finite logits add no probability mass, and the maximum skips them.
    finite = tf.math.is_finite(logits)
    lowest = tf.constant(np.finfo(logits.dtype.as_numpy_dtype).min,
                         logits.dtype)
    max_logit = tf.reduce_max(
        tf.where(finite, logits, lowest), axis=1, keepdims=True
    )
    mass = tf.where(
        finite,
        tf.exp(tf.cast(logits, tf.float64) - tf.cast(max_logit, tf.float64)),
        tf.zeros([], tf.float64),
    )
    cdf = tf.cumsum(mass, axis=1)
    target = uniform[:, None] * cdf[:, -1:]
    # The first index whose unnormalized CDF exceeds the target.
    return tf.reduce_sum(tf.cast(cdf <= target, tf.int32), axis=1)


class Schedule(keras.layers.Layer):
    """Base class: maps features to one action per population member."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.action_names = None
        self.population = None
        self.feature_names = None
        # A schedule has no build step. Marked built, so Keras does not
        # try to build the whole model symbolically from a batch under a
        # tf.distribute strategy, which calls the model on that batch.
        self.built = True

    def bind(self, action_names, feature_names, population):
        """Attach to a model's actions and features; validate them.

        `ScheduledModel.compile` calls this before any tracing.
        """
        self.action_names = list(action_names)
        self.feature_names = list(feature_names)
        self.population = int(population)

    def select(self, features, step):
        """Return the int32 action index of every member: [population]."""
        raise NotImplementedError

    def probabilities(self, features, step=0):
        """Return the probability of each action per member at `step`.

        Deterministic schedules return a one-hot matrix of their choice at
        the current step, so logs have the same keys for every schedule.
        """
        raise NotImplementedError

    def observe(self, step, features, actions, active):
        """Receive the features, chosen actions and active mask of a step.

        Learned schedules record them for the policy-gradient update; the
        default does nothing.
        """
        del step, features, actions, active

    def _action_index(self, action):
        if isinstance(action, int):
            if not 0 <= action < len(self.action_names):
                raise ValueError(
                    "Action index out of range. "
                    f"Received: action={action} for actions "
                    f"{self.action_names}. Pass an index below "
                    f"{len(self.action_names)} or an action name."
                )
            return action
        if action not in self.action_names:
            raise ValueError(
                f"Unknown action name. Received: action={action!r}. "
                f"Registered actions: {self.action_names}."
            )
        return self.action_names.index(action)


def decide(schedule, features, step):
    """Return (actions, probabilities) of any schedule."""
    method = getattr(schedule, "decide", None)
    if method is not None:
        return method(features, step)
    actions = schedule.select(features, step)
    return actions, schedule.probabilities(features, step)


def _one_hot(actions, num_actions):
    return tf.one_hot(actions, num_actions, dtype="float32")


@keras.saving.register_keras_serializable(package="autoloss_tf")
class FixedSchedule(Schedule):
    """Always pick `action` (a name or index).

    With the single action `task + lambda * l1`, this is one point of the
    dense grid search (DGS) baseline.
    """

    def __init__(self, action, **kwargs):
        super().__init__(**kwargs)
        self.action = action
        self._index = None

    def bind(self, action_names, feature_names, population):
        super().bind(action_names, feature_names, population)
        self._index = self._action_index(self.action)

    def select(self, features, step):
        return tf.fill([tf.shape(features)[0]], tf.constant(self._index, "int32"))

    def probabilities(self, features, step=0):
        return _one_hot(self.select(features, step), len(self.action_names))

    def get_config(self):
        config = super().get_config()
        config.update(action=self.action)
        return config


@keras.saving.register_keras_serializable(package="autoloss_tf")
class CyclicSchedule(Schedule):
    """Repeat a fixed pattern of actions, one entry per step.

    Example: `CyclicSchedule(["discriminator"] + ["generator"] * 5)` is a
    D:G ratio of 1:5.

    Args:
        pattern: non-empty list of action names or indices.
    """

    def __init__(self, pattern, **kwargs):
        super().__init__(**kwargs)
        if not pattern:
            raise ValueError(
                "`pattern` must list at least one action. "
                f"Received: pattern={pattern!r}."
            )
        self.pattern = list(pattern)
        self._indices = None

    def bind(self, action_names, feature_names, population):
        super().bind(action_names, feature_names, population)
        self._indices = [self._action_index(a) for a in self.pattern]

    def select(self, features, step):
        position = tf.cast(step % len(self._indices), "int32")
        action = tf.gather(tf.constant(self._indices, "int32"), position)
        return tf.fill([tf.shape(features)[0]], action)

    def probabilities(self, features, step=0):
        return _one_hot(self.select(features, step), len(self.action_names))

    def get_config(self):
        config = super().get_config()
        config.update(pattern=self.pattern)
        return config


@keras.saving.register_keras_serializable(package="autoloss_tf")
class RandomSchedule(Schedule):
    """Draw each step's action with fixed probabilities.

    Args:
        probabilities: dict action name -> weight, or a list with one weight
            per action; weights are normalized to sum to 1.
        seed: integer seed; draws are stateless functions of (seed, step).
            Defaults to 0.
    """

    def __init__(self, probabilities, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.weights_spec = probabilities
        self.seed = int(seed)
        self._logits = None

    def bind(self, action_names, feature_names, population):
        super().bind(action_names, feature_names, population)
        spec = self.weights_spec
        if isinstance(spec, dict):
            weights = [0.0] * len(action_names)
            for name, value in spec.items():
                weights[self._action_index(name)] = float(value)
        else:
            weights = [float(w) for w in spec]
        if len(weights) != len(action_names) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                "`probabilities` must give one non-negative weight per action "
                f"with a positive sum. Received: probabilities={spec!r} for "
                f"actions {action_names}."
            )
        total = sum(weights)
        self._probs = [w / total for w in weights]
        self._logits = tf.math.log(tf.constant(self._probs, "float32") + 1e-30)

    def select(self, features, step):
        count = tf.shape(features)[0]
        logits = tf.tile(self._logits[None, :], [count, 1])
        seed = tf.stack([tf.constant(self.seed, "int32"), tf.cast(step, "int32")])
        return sample_categorical(logits, seed)

    def probabilities(self, features, step=0):
        count = tf.shape(features)[0]
        return tf.tile(tf.constant(self._probs, "float32")[None, :], [count, 1])

    def get_config(self):
        config = super().get_config()
        config.update(probabilities=self.weights_spec, seed=self.seed)
        return config


THRESHOLD_RULES = {
    # rule: (feature A, feature B); apply the regularizer when (A-B)/B > th.
    "S1": ("val_metric", "loss/{task}"),
    "S2": ("loss/{regularizer}", "val_metric"),
    "S3": ("grad_norm/{regularizer}", "grad_norm/{task}"),
}


@keras.saving.register_keras_serializable(package="autoloss_tf")
class ThresholdSchedule(Schedule):
    """The threshold rules S1, S2 and S3 for a task loss and a regularizer.

    Each step, the regularizer action runs when (A - B) / B > threshold,
    otherwise the task action runs, where:

    - S1: A = task loss on validation data, B = latest task loss on training
      data (an overfitting signal);
    - S2: A = latest regularizer loss, B = task loss on validation data;
    - S3: A = latest gradient norm of the regularizer, B = latest gradient
      norm of the task loss.

    Args:
        rule: `"S1"`, `"S2"` or `"S3"`.
        thresholds: one float for every member, or a list with one float
            per member of the slice this schedule drives.
        task_action: name of the task action. Defaults to `"task"`.
        regularizer_action: name of the regularizer action.
            Defaults to `"l1"`.
    """

    def __init__(
        self, rule, thresholds, task_action="task", regularizer_action="l1",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if rule not in THRESHOLD_RULES:
            raise ValueError(
                f"Unknown threshold rule. Received: rule={rule!r}. "
                f"Choose one of {sorted(THRESHOLD_RULES)}."
            )
        self.rule = rule
        self.thresholds = thresholds
        self.task_action = task_action
        self.regularizer_action = regularizer_action

    def bind(self, action_names, feature_names, population):
        super().bind(action_names, feature_names, population)
        self._task = self._action_index(self.task_action)
        self._regularizer = self._action_index(self.regularizer_action)
        names = {"task": self.task_action, "regularizer": self.regularizer_action}
        a_name, b_name = (
            template.format(**names) for template in THRESHOLD_RULES[self.rule]
        )
        self._a = self.feature_names.index(a_name)
        self._b = self.feature_names.index(b_name)
        if isinstance(self.thresholds, (list, tuple)):
            if len(self.thresholds) != population:
                raise ValueError(
                    "`thresholds` must hold one value per population member. "
                    f"Received: {len(self.thresholds)} thresholds for "
                    f"population={population}."
                )
            values = [float(t) for t in self.thresholds]
        else:
            values = [float(self.thresholds)] * population
        self._threshold_values = tf.constant(values, "float32")

    def select(self, features, step):
        a = features[:, self._a]
        b = features[:, self._b]
        ratio = tf.math.divide_no_nan(a - b, b)
        apply = ratio > self._threshold_values
        return tf.where(
            apply, tf.constant(self._regularizer, "int32"),
            tf.constant(self._task, "int32"),
        )

    def probabilities(self, features, step=0):
        return _one_hot(self.select(features, step), len(self.action_names))

    def get_config(self):
        config = super().get_config()
        config.update(
            rule=self.rule, thresholds=self.thresholds,
            task_action=self.task_action,
            regularizer_action=self.regularizer_action,
        )
        return config


class RolloutBuffer:
    """Fixed-size record of (features, action, active) per step and member.

    Lives in `tf.Variable`s so the compiled train step writes it without
    retracing; it is transient and is not saved with the model.
    """

    def __init__(self, max_steps, population, num_features):
        self.max_steps = int(max_steps)
        self.features = tf.Variable(
            tf.zeros([max_steps, population, num_features]), trainable=False
        )
        self.actions = tf.Variable(
            tf.zeros([max_steps, population], "int32"), trainable=False
        )
        self.active = tf.Variable(
            tf.zeros([max_steps, population], "bool"), trainable=False
        )
        self.start = tf.Variable(tf.constant(0, "int64"), trainable=False)

    def write(self, step, features, actions, active):
        index = step - self.start

        def _write():
            # Scatter updates, because a slice of a variable created under
            # a tf.distribute strategy has no `assign`.
            position = tf.cast(index, "int32")[None]
            for variable, value in ((self.features, features),
                                    (self.actions, actions),
                                    (self.active, active)):
                variable.scatter_update(
                    tf.IndexedSlices(tf.expand_dims(value, 0), position)
                )
            return tf.constant(True)

        in_range = tf.logical_and(index >= 0, index < self.max_steps)
        tf.cond(in_range, _write, lambda: tf.constant(False))

    def numpy(self):
        """Return (features, actions, active) numpy arrays, time-major."""
        return (
            self.features.numpy(), self.actions.numpy(), self.active.numpy()
        )


DECODINGS = ("sample", "greedy", "dither")


@keras.saving.register_keras_serializable(package="autoloss_tf")
class LearnedSchedule(Schedule):
    """Pick actions with a controller's policy.

    Args:
        controller: a `Controller` (or anything with a compatible
            `policy(features)` and `probabilities(features)`).
        seed: integer seed. Step t of member m samples from the stateless
            seed (seed, t), so a run reproduces exactly. Defaults to 0.
        decoding: how a step's action follows from the policy. `"sample"`
            (the default) draws it, which policy-gradient training needs,
            so `episodes_from_population` rejects the other two.
            `"greedy"` takes the most probable action. `"dither"` takes
            each action at the rate the policy gives it, without random
            draws (error diffusion). Every step adds the probabilities to a
            per-member residual, takes the action with the largest
            residual and subtracts 1 from it. Constant probabilities
            (1/6, 5/6) give the cycle b, b, a, b, b, b. The residual is a
            weight of the schedule, saved with the model and zeroed by a
            new compile. Two models that share one dithered schedule also
            share its residual, so give each model its own.
            Note: a controller that learned a mixing rate (for example
            "apply L1 on 60% of steps") behaves very differently when
            decoded greedily, while dithering keeps the rate.
        record_steps: if set, record up to this many steps of features and
            actions in a `RolloutBuffer` for REINFORCE. Defaults to None.
        feature_names: optional ordered feature names the controller was
            trained on; `compile` then rejects a model whose names differ.
        action_names: optional ordered action names, checked the same way.
    """

    def __init__(self, controller, seed=0, decoding="sample",
                 record_steps=None, feature_names=None, action_names=None,
                 **kwargs):
        if "greedy" in kwargs:
            raise TypeError(
                "LearnedSchedule takes `decoding` in place of `greedy`. "
                f"Received: greedy={kwargs['greedy']!r}. Pass "
                "decoding='greedy' (or 'sample', the default)."
            )
        super().__init__(**kwargs)
        self.controller = controller
        self.expected_feature_names = (
            None if feature_names is None else list(feature_names)
        )
        self.expected_action_names = (
            None if action_names is None else list(action_names)
        )
        self.seed = int(seed)
        if decoding not in DECODINGS:
            raise ValueError(
                "Unknown decoding. Received: "
                f"decoding={decoding!r}. Choose one of {list(DECODINGS)}."
            )
        self.decoding = decoding
        self.record_steps = record_steps
        self._buffer = None
        self._residual = None

    @property
    def buffer(self):
        """The `RolloutBuffer`, or None when not recording."""
        return self._buffer

    def bind(self, action_names, feature_names, population):
        super().bind(action_names, feature_names, population)
        for kind, expected, received in (
            ("feature", self.expected_feature_names, list(feature_names)),
            ("action", self.expected_action_names, list(action_names)),
        ):
            if expected is not None and expected != received:
                raise ValueError(
                    f"The controller was trained on other {kind} names, and "
                    f"it reads them by position. Received: model {kind}s "
                    f"{received}, controller {kind}s {expected}. Register "
                    "the actions (and features) in the controller's order, "
                    "or train a controller for this model."
                )
        controller = self.controller
        if controller.num_actions != len(action_names):
            raise ValueError(
                "The controller's action count does not match the model. "
                f"Received: controller.num_actions={controller.num_actions}, "
                f"model actions={action_names}. Create the controller with "
                f"num_actions={len(action_names)}."
            )
        if controller.num_features != len(feature_names):
            raise ValueError(
                "The controller's feature count does not match the model. "
                f"Received: controller.num_features={controller.num_features}, "
                f"model features ({len(feature_names)}): {feature_names}. "
                f"Create the controller with num_features={len(feature_names)}."
            )
        if self.record_steps and self._buffer is None:
            # Stored outside Keras tracking: the buffer is not model state.
            object.__setattr__(
                self, "_buffer",
                RolloutBuffer(self.record_steps, population, len(feature_names)),
            )
        if self.decoding == "dither":
            self._bind_residual((population, len(action_names)))

    def decide(self, features, step):
        """Return (actions, probabilities) from one controller evaluation."""
        logits = self.controller.logits(features) / self.controller.temperature
        probabilities = tf.nn.softmax(logits)
        if self.decoding == "greedy":
            return tf.argmax(logits, axis=-1, output_type="int32"), probabilities
        if self.decoding == "dither":
            return self._dither(probabilities), probabilities
        seed = tf.stack(
            [tf.constant(self.seed, "int32"), tf.cast(step, "int32")]
        )
        return sample_categorical(logits, seed), probabilities

    @property
    def residual(self):
        """The dither residual [population, actions], or None when not
        dithering or not yet compiled."""
        return self._residual

    def _bind_residual(self, shape):
        """Create the dither residual, or zero it when compiled again.

        It is a non-trainable weight of the schedule, so `model.save` and
        checkpoints keep it, and a reloaded model continues the pattern.
        """
        if self._residual is None:
            residual = self.add_weight(
                shape=shape, initializer="zeros", trainable=False,
                name="dither_residual",
            )
            object.__setattr__(self, "_residual", residual)
        elif tuple(self._residual.shape) != shape:
            raise ValueError(
                "A dithered LearnedSchedule keeps one residual per member "
                f"and action, of shape {tuple(self._residual.shape)} from "
                f"its first compile. Received: shape {shape} (members, "
                "actions) at this compile. Create a new LearnedSchedule "
                "for each model or schedule part."
            )
        else:
            # A new compile restarts the step count, and so the pattern.
            self._residual.assign(tf.zeros(shape))

    def _dither(self, probabilities):
        """Take the action with the largest residual and subtract 1 from it.

        Rows with a non-finite probability get the index `num_actions`, as
        the sampler returns for NaN logits, and keep their residual.
        """
        num_actions = len(self.action_names)
        finite = tf.reduce_all(tf.math.is_finite(probabilities), axis=-1)
        total = self._residual + tf.where(
            finite[:, None], probabilities, tf.zeros_like(probabilities)
        )
        actions = tf.where(
            finite, tf.argmax(total, axis=-1, output_type="int32"),
            tf.constant(num_actions, "int32"),
        )
        # one_hot of index num_actions is all zeros.
        self._residual.assign(total - tf.one_hot(actions, num_actions))
        return actions

    def select(self, features, step):
        return self.decide(features, step)[0]

    def probabilities(self, features, step=0):
        return self.controller.probabilities(features)

    def observe(self, step, features, actions, active):
        if self._buffer is not None:
            self._buffer.write(step, features, actions, active)

    def get_config(self):
        config = super().get_config()
        config.update(
            controller=keras.saving.serialize_keras_object(self.controller),
            seed=self.seed, decoding=self.decoding,
            record_steps=self.record_steps,
            feature_names=self.expected_feature_names,
            action_names=self.expected_action_names,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Configs saved before `decoding` existed hold a `greedy` flag.
        if "greedy" in config:
            greedy = config.pop("greedy")
            config.setdefault("decoding", "greedy" if greedy else "sample")
        config["controller"] = keras.saving.deserialize_keras_object(
            config["controller"]
        )
        return cls(**config)


def _has_run_state(schedule):
    """Return whether `schedule` keeps per-member state between steps."""
    return isinstance(schedule, LearnedSchedule) and (
        schedule.decoding == "dither" or bool(schedule.record_steps)
    )


@keras.saving.register_keras_serializable(package="autoloss_tf")
class MemberwiseSchedule(Schedule):
    """Drive consecutive slices of a population with different schedules.

    Args:
        parts: list of `(schedule, member_count)` pairs; the counts must add
            up to the model's population.

    Example: one compiled run of 26 members trains "without L1" once, the
    S1 rule at 12 thresholds and the S3 rule at 12 thresholds, and one
    controller-guided member::

        MemberwiseSchedule([
            (FixedSchedule("task"), 1),
            (ThresholdSchedule("S1", s1_grid), 12),
            (ThresholdSchedule("S3", s3_grid), 12),
            (LearnedSchedule(controller), 1),
        ])
    """

    def __init__(self, parts, **kwargs):
        super().__init__(**kwargs)
        if not parts:
            raise ValueError("`parts` must hold at least one (schedule, count).")
        self.schedules = [schedule for schedule, _ in parts]
        self.counts = [int(count) for _, count in parts]
        if min(self.counts) < 1:
            raise ValueError(
                "Every member count must be >= 1. "
                f"Received: counts={self.counts}."
            )

    def bind(self, action_names, feature_names, population):
        if sum(self.counts) != population:
            raise ValueError(
                "Member counts must add up to the population. "
                f"Received: counts={self.counts} (sum {sum(self.counts)}) for "
                f"population={population}."
            )
        super().bind(action_names, feature_names, population)
        for index, schedule in enumerate(self.schedules):
            if _has_run_state(schedule) and any(
                    other is schedule for other in self.schedules[:index]):
                raise ValueError(
                    "A dithered or recording LearnedSchedule keeps state per "
                    "member, so two parts cannot share one. Received: the "
                    f"same schedule object as parts of {self.schedules}. "
                    "Create one LearnedSchedule per part."
                )
        for schedule, count in zip(self.schedules, self.counts):
            schedule.bind(action_names, feature_names, count)

    def _split(self, tensor):
        return tf.split(tensor, self.counts, axis=0)

    def select(self, features, step):
        parts = self._split(features)
        return tf.concat(
            [s.select(f, step) for s, f in zip(self.schedules, parts)], axis=0
        )

    def decide(self, features, step):
        decisions = [
            decide(s, f, step)
            for s, f in zip(self.schedules, self._split(features))
        ]
        return (
            tf.concat([actions for actions, _ in decisions], axis=0),
            tf.concat([probs for _, probs in decisions], axis=0),
        )

    def probabilities(self, features, step=0):
        parts = self._split(features)
        return tf.concat(
            [s.probabilities(f, step) for s, f in zip(self.schedules, parts)], axis=0
        )

    def observe(self, step, features, actions, active):
        for schedule, f, a, m in zip(
            self.schedules, self._split(features), self._split(actions),
            self._split(active),
        ):
            schedule.observe(step, f, a, m)

    def get_config(self):
        config = super().get_config()
        config.update(
            parts=[
                [keras.saving.serialize_keras_object(s), c]
                for s, c in zip(self.schedules, self.counts)
            ]
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["parts"] = [
            (keras.saving.deserialize_keras_object(s), c)
            for s, c in config["parts"]
        ]
        return cls(**config)

