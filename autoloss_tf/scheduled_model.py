"""`ScheduledModel`: a Keras model whose train step runs one scheduled action.

An action is a (loss, variable group, optimizer) triple registered with
`add_action`. Every step, the compiled `train_step` reads the features of
`FeatureTracker`, gets an action from the schedule, and computes and applies
only that action's loss and gradient (the AutoLoss formulation, Xu et al.,
ICLR 2019, equation 1).

Optimizer state. Two actions on the same variables can share one optimizer
state or keep one each. With Adam this choice decides whether a regularizer
schedule can work at all: in a numpy study of the quadratic regression task
(d = 16, Adam 5e-4, 10 trials) separate states made every L1 schedule far
worse than a grid-searched weighted sum (excess test MSE about 4.3 against
0.25), because Adam rescales the L1 gradient to about lr * sign(theta)
whatever its weight. One shared state made schedules match the weighted sum
(about 0.24 to 0.27), since the shared moments average the alternating
gradients and an L1 fraction q acts like a weight 0.2 q / (1 - q). So the
default, `optimizer="auto"`, shares the compiled optimizer between actions
whose variable groups overlap and gives an action with a disjoint group (a
GAN's generator or discriminator) an optimizer of its own.

Non-finite values. With `nonfinite="skip"` (the default) a step whose loss,
gradient or features are NaN or Inf applies nothing and is counted in the
`skipped_steps` log. With `nonfinite="raise"` the step raises
`tf.errors.InvalidArgumentError` instead. A NaN feature never reaches
`tf.switch_case`, which would otherwise silently run its last branch.

Population mode. `ScheduledModel(population=P)` trains P independent copies
of a task model in lockstep, each with its own action per step. Every
variable then carries a leading axis of size P, every action loss returns a
[P] vector, and all actions must share one variable group and one
optimizer (the L1 setting). Each step computes all action losses, takes
each member's chosen one, and differentiates their sum once; because Adam
is elementwise, each member's update equals a separate run's.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from autoloss_tf import actions as actions_lib
from autoloss_tf import features as features_lib
from autoloss_tf import replicas as replicas_lib
from autoloss_tf import schedules as schedules_lib

NONFINITE_POLICIES = ("skip", "raise")


class TrainingState(keras.layers.Layer):
    """Step counter, skip counter and best-validation bookkeeping."""

    def __init__(self, population=1, **kwargs):
        super().__init__(**kwargs)
        self.population = int(population)
        scalar = dict(shape=(), trainable=False)
        self.step = self.add_weight(
            name="step", initializer="zeros", dtype="int64", **scalar
        )
        self.skipped = self.add_weight(
            name="skipped_steps", initializer="zeros", dtype="int64", **scalar
        )
        self.total_steps = self.add_weight(
            name="total_steps", initializer="ones", dtype="float32", **scalar
        )
        self.features_ready = self.add_weight(
            name="features_ready", initializer="zeros", dtype="bool", **scalar
        )
        member = dict(shape=(self.population,), trainable=False)
        self.best_metric = self.add_weight(
            name="best_metric", dtype="float32",
            initializer=keras.initializers.Constant(float("inf")), **member
        )
        self.best_step = self.add_weight(
            name="best_step", initializer="zeros", dtype="int64", **member
        )
        self.active = self.add_weight(
            name="active", initializer="ones", dtype="bool", **member
        )
        self.active_steps = self.add_weight(
            name="active_steps", initializer="zeros", dtype="int64", **member
        )
        # Every weight exists now; see `FeatureTracker`.
        self.built = True


@keras.saving.register_keras_serializable(package="autoloss_tf")
class ScheduledModel(keras.Model):
    """A `keras.Model` trained one scheduled action at a time.

    Subclass it, build the layers in `__init__`, register actions with
    `add_action`, then `compile` with a schedule and call `fit`.

    Args:
        population: number of task-model copies trained in lockstep, or
            None for an ordinary single model. Defaults to None.
        **kwargs: passed to `keras.Model`.

    Example:

    ```python
    class Regressor(ScheduledModel):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(1)
            self.add_action("task", self.task_loss)
            self.add_action("l1", self.l1_loss)

        def call(self, x):
            return self.dense(x)[:, 0]

        def task_loss(self, data):
            x, y = data
            return keras.ops.mean((self(x) - y) ** 2)

        def l1_loss(self, data):
            return 0.2 * keras.ops.sum(keras.ops.abs(self.dense.kernel))

    model = Regressor()
    model(x[:1])  # Creates the Dense weights; build() alone would not.
    model.compile(optimizer="adam", schedule=CyclicSchedule(["task", "l1"]))
    model.fit(x, y, epochs=10)
    ```
    """

    def __init__(self, *args, population=None, **kwargs):
        super().__init__(*args, **kwargs)
        if population is not None and (
            not isinstance(population, int) or population < 1
        ):
            raise ValueError(
                "`population` must be a positive integer or None. "
                f"Received: population={population!r}."
            )
        object.__setattr__(self, "_population", population)
        object.__setattr__(self, "_action_list", [])
        object.__setattr__(self, "_actions_prepared", False)
        object.__setattr__(self, "_validation_data", None)
        object.__setattr__(self, "_schedule_config", None)

    # Registration ---------------------------------------------------------

    @property
    def population(self):
        """Number of members trained in lockstep (1 for a single model)."""
        return self._population or 1

    @property
    def action_names(self):
        """Names of the registered actions, in index order."""
        return [action.name for action in self._action_list]

    def add_action(self, name, loss, variables=None, optimizer="auto"):
        """Register a schedulable (loss, variable group, optimizer) action.

        Args:
            name: unique action name.
            loss: callable `loss(data)` returning a scalar loss (a
                [population] vector in population mode).
            variables: the group to update: None for every trainable
                variable of the model, or a list of layers and variables,
                or a callable returning one (resolved when the model is
                built). Groups of different actions may overlap.
            optimizer: `"auto"` (the compiled optimizer for a model's only
                action and for actions whose groups overlap, else an own
                copy),
                `"shared"` (always the compiled optimizer), `"own"` (a copy
                of the compiled optimizer for this action alone), or an
                optimizer instance (share it with every action given the
                same instance). Defaults to `"auto"`.

        Raises:
            ValueError: for a duplicate or empty name, a loss that is not
                callable, an unknown optimizer mode, or registration after
                compile.
        """
        # `compiled` also covers a model compiled before it was built, whose
        # actions are prepared only at the first fit.
        if self._actions_prepared or self.compiled:
            raise ValueError(
                "Actions must be registered before compile(). "
                f"Received: add_action({name!r}) after compile. Register "
                "all actions in __init__."
            )
        actions_lib.validate_new_action(
            self.action_names, name, loss, optimizer
        )
        self._action_list.append(
            actions_lib.Action(name, loss, variables, optimizer)
        )

    def validation_metric(self, x, y):
        """Return the validation metric feature for validation data.

        Lower must be better. The default evaluates the first action's loss
        on `(x, y)`. Override it to report another metric.
        """
        return self._action_list[0].loss((x, y))

    def extra_feature_names(self):
        """Return the names of model-specific features. Defaults to none.

        Override it together with `extra_features` to append features
        after the standard ones (a GAN's discriminator error, for
        example). `compile` reads the names once.
        """
        return ()

    def extra_features(self, data):
        """Return the model-specific feature values after a step.

        `train_step` calls it after every step's update, and once before
        the first step, on that step's batch. It runs inside the compiled
        step, so it must use TensorFlow ops. The latest losses and
        gradient norms are in `self.feature_tracker`. A value that is
        not finite makes the next step's features non-finite, so that step
        is skipped (or raises, with `nonfinite="raise"`).

        Returns:
            float32 [population, len(extra_feature_names())].
        """
        del data
        raise NotImplementedError(
            f"{type(self).__name__} lists extra feature names "
            f"{list(self.extra_feature_names())} but does not override "
            "extra_features(data). Override it to return their values."
        )

    # Compile --------------------------------------------------------------

    def compile(
        self,
        optimizer="rmsprop",
        schedule=None,
        nonfinite="skip",
        validation_interval=1,
        ema_decay=0.9,
        patience=None,
        total_steps=None,
        **kwargs,
    ):
        """Configure the model for scheduled training.

        Args:
            optimizer: the optimizer shared by actions (see `add_action`).
                Defaults to `"rmsprop"`, as in Keras.
            schedule: a `Schedule`. Defaults to a `FixedSchedule` for a
                single action and to a `CyclicSchedule` over all actions in
                registration order otherwise.
            nonfinite: `"skip"` or `"raise"`; what a step does when its
                loss, gradient or features are not finite. Defaults to
                `"skip"`.
            validation_interval: refresh the validation features every this
                many steps when `fit` receives `feature_validation_data`.
                Defaults to 1.
            ema_decay: decay of the validation EMAs. Defaults to 0.9.
            patience: if set, a member stops being active after this many
                steps without a new best validation metric; `fit` stops
                when no member is active. The best weights are kept either
                way; `restore_best_weights()` loads them. Defaults to None.
            total_steps: T in the progress feature t / T. Defaults to the
                number of steps of the current `fit` call.
            **kwargs: other `keras.Model.compile` arguments (metrics, ...).
                Under the "mixed_float16" policy, `auto_scale_loss` (True by
                default) wraps every action's optimizer in a
                `LossScaleOptimizer`, the instances given to `add_action`
                included.

        Raises:
            ValueError: for no registered action, a bad argument, or
                variable groups that do not fit the model.
        """
        if not self._action_list:
            raise ValueError(
                "A ScheduledModel needs at least one action before compile(). "
                "Call add_action(name, loss, variables) in __init__."
            )
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(
                "`nonfinite` must be one of "
                f"{NONFINITE_POLICIES}. Received: nonfinite={nonfinite!r}."
            )
        _check_positive("validation_interval", validation_interval)
        if patience is not None:
            _check_positive("patience", patience)
        if total_steps is not None:
            _check_positive("total_steps", total_steps)
        if kwargs.get("loss") is not None:
            raise ValueError(
                "A ScheduledModel takes its losses from its actions. "
                f"Received: loss={kwargs['loss']!r}. Register each loss with "
                "add_action() instead."
            )
        kwargs.pop("loss", None)
        object.__setattr__(
            self, "_auto_scale_loss", kwargs.get("auto_scale_loss", True)
        )
        super().compile(optimizer=optimizer, **kwargs)
        if schedule is None:
            schedule = self._default_schedule()
        self._set_tracked("schedule", schedule)
        self.nonfinite = nonfinite
        self.validation_interval = int(validation_interval)
        self.ema_decay = float(ema_decay)
        self.patience = patience
        self.total_steps_setting = total_steps
        object.__setattr__(self, "_schedule_config", {
            "schedule": keras.saving.serialize_keras_object(schedule),
            "nonfinite": nonfinite,
            "validation_interval": self.validation_interval,
            "ema_decay": self.ema_decay,
            "patience": patience,
            "total_steps": total_steps,
        })
        self._set_tracked("feature_tracker", features_lib.FeatureTracker(
            self.action_names, self.population,
            extra_names=self._checked_extra_feature_names(),
            ema_decay=self.ema_decay,
        ))
        self._set_tracked("training_state", TrainingState(self.population))
        self.schedule.bind(
            self.action_names, self.feature_tracker.names, self.population
        )
        object.__setattr__(self, "_actions_prepared", False)
        self.train_function = None
        if self.built:
            self._prepare_actions()

    def _checked_extra_feature_names(self):
        names = list(self.extra_feature_names())
        standard = features_lib.feature_names(self.action_names)
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError(
                    "Extra feature names must be non-empty strings. "
                    f"Received: {name!r} in extra_feature_names() = {names}."
                )
            if name in standard or names.count(name) > 1:
                raise ValueError(
                    "Extra feature names must be unique and differ from "
                    f"the standard features {standard}. Received: "
                    f"{name!r} in extra_feature_names() = {names}. "
                    "Rename the feature."
                )
        return names

    def _set_tracked(self, name, value):
        """Attach state after build; Keras locks tracking once built."""
        tracker = getattr(self, "_tracker", None)
        locked = tracker is not None and tracker.locked
        if locked:
            tracker.unlock()
        try:
            setattr(self, name, value)
        finally:
            if locked:
                tracker.lock(tracker._lock_violation_msg)

    def _default_schedule(self):
        if len(self._action_list) == 1:
            return schedules_lib.FixedSchedule(self.action_names[0])
        return schedules_lib.CyclicSchedule(self.action_names)

    def get_compile_config(self):
        config = super().get_compile_config() or {}
        config = dict(config)
        config["scheduled"] = self._schedule_config
        return config

    def compile_from_config(self, config):
        config = dict(config)
        scheduled = dict(config.pop("scheduled", None) or {})
        config = keras.saving.deserialize_keras_object(config)
        if scheduled.get("schedule") is not None:
            scheduled["schedule"] = keras.saving.deserialize_keras_object(
                scheduled["schedule"]
            )
        self.compile(**config, **scheduled)

    # Variable groups and optimizers --------------------------------------

    def task_variables(self):
        """Trainable variables of the task model (schedule excluded)."""
        excluded = set()
        for layer in (getattr(self, "schedule", None),):
            if layer is not None:
                excluded.update(id(v) for v in layer.variables)
        return [v for v in self.trainable_variables if id(v) not in excluded]

    def _prepare_actions(self):
        """Resolve variable groups and build every optimizer eagerly."""
        if self._actions_prepared:
            return
        model_variables = self.task_variables()
        for action in self._action_list:
            action.resolved_variables = actions_lib.resolve_variables(
                action, model_variables
            )
        optimizers = self._assign_optimizers()
        for index, optimizer in enumerate(optimizers):
            group = _union(
                a.resolved_variables for a in self._action_list
                if a.optimizer_index == index
            )
            _build_optimizer(optimizer, group)
        self._set_tracked("action_optimizers", optimizers)
        if self._population is not None:
            self._check_population_layout()
        self._set_tracked("_best_weights", [
            keras.Variable(
                v, trainable=False, name=f"best_{i}", dtype=v.dtype
            )
            for i, v in enumerate(self._all_action_variables())
        ])
        object.__setattr__(self, "_actions_prepared", True)

    def _assign_optimizers(self):
        optimizers = []
        loss_scale_wrappers = {}
        for action in self._action_list:
            mode = action.optimizer
            if mode == "auto":
                # A lone action uses the compiled optimizer itself, so
                # `model.optimizer` and its callbacks see its steps.
                alone = len(self._action_list) == 1
                mode = "shared" if alone or self._overlaps(action) else "own"
            if mode == "shared":
                chosen = self.optimizer
            elif mode == "own":
                chosen = self.optimizer.__class__.from_config(
                    self.optimizer.get_config()
                )
            else:
                chosen = self._loss_scaled(mode, loss_scale_wrappers)
            for index, existing in enumerate(optimizers):
                if existing is chosen:
                    action.optimizer_index = index
                    break
            else:
                optimizers.append(chosen)
                action.optimizer_index = len(optimizers) - 1
        return optimizers

    def _loss_scaled(self, optimizer, wrappers):
        """Wrap an action's own optimizer instance as Keras's compile would.

        Under the "mixed_float16" policy with `auto_scale_loss` (the
        default), `keras.Model.compile` wraps the compiled optimizer in a
        `LossScaleOptimizer`. An instance passed to `add_action` gets the
        same wrapper here. `wrappers` maps each instance to its wrapper, so
        actions that share an instance share one loss scale.
        """
        needs_scaling = (
            self._auto_scale_loss
            and self.dtype_policy.name == "mixed_float16"
            and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        )
        if not needs_scaling:
            return optimizer
        if id(optimizer) not in wrappers:
            wrappers[id(optimizer)] = keras.optimizers.LossScaleOptimizer(
                optimizer, name=f"{optimizer.name}_loss_scale"
            )
        return wrappers[id(optimizer)]

    def _overlaps(self, action):
        own = {id(v) for v in action.resolved_variables}
        return any(
            own & {id(v) for v in other.resolved_variables}
            for other in self._action_list if other is not action
        )

    def _all_action_variables(self):
        return _union(a.resolved_variables for a in self._action_list)

    def _check_population_layout(self):
        first = self._action_list[0]
        first_ids = [id(v) for v in first.resolved_variables]
        for action in self._action_list[1:]:
            same_group = [id(v) for v in action.resolved_variables] == first_ids
            if not same_group or action.optimizer_index != first.optimizer_index:
                raise ValueError(
                    "In population mode every action must update the same "
                    "variables with the same optimizer. Received: action "
                    f"{action.name!r} differs from {first.name!r}. Use "
                    "population=None for actions on different groups."
                )
        for variable in first.resolved_variables:
            if not variable.shape or variable.shape[0] != self.population:
                raise ValueError(
                    "In population mode every variable needs a leading axis "
                    f"of size population={self.population}. Received: "
                    f"{variable.path} with shape {variable.shape}."
                )

    # Fit ------------------------------------------------------------------

    def make_train_function(self, force=False):
        if not self._actions_prepared:
            if not self.built:
                raise ValueError(
                    "The model must be built before training. Call "
                    "model.build(input_shape) or call it on a batch first."
                )
            self._prepare_actions()
        strategy = self.distribute_strategy
        replicas_lib.check_strategy(
            strategy, self._step_variables(), self.jit_compile
        )
        if not replicas_lib.uses_strategy(strategy):
            return super().make_train_function(force=force)
        if self.train_function is None or force:
            self.train_function = replicas_lib.make_train_function(
                strategy, self.train_step, self.steps_per_execution,
                run_eagerly=self.run_eagerly,
            )
        return self.train_function

    def make_test_function(self, force=False):
        strategy = self.distribute_strategy
        if not replicas_lib.is_multi_worker(strategy):
            return super().make_test_function(force=force)
        # Keras 3.15.1's own test function fails there on scalar logs, as
        # its train function does; see `replicas.py`.
        if self.test_function is None or force:
            self.test_function = replicas_lib.make_test_function(
                strategy, self.test_step, self.steps_per_execution,
                run_eagerly=self.run_eagerly,
            )
        return self.test_function

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15.1 averages the first distributed batch with an eager
        # `strategy.reduce`, which raises "Attempt to convert a value
        # (PerReplica...) with an unsupported type" under
        # MultiWorkerMirroredStrategy. The build needs only the batch's
        # shapes and dtypes, so one local shard serves.
        strategy = self._distribute_strategy
        if iterator is not None and replicas_lib.is_multi_worker(strategy):
            for _, _, distributed_iterator in iterator:
                data_batch = replicas_lib.local_batch(
                    strategy, next(distributed_iterator)
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(
            iterator=iterator, data_batch=data_batch
        )

    def _step_variables(self):
        """Return every variable the train step reads or writes."""
        optimizer_variables = [
            v for optimizer in self.action_optimizers
            for v in optimizer.variables
        ]
        return _union([self.variables, optimizer_variables])

    def fit(self, *args, feature_validation_data=None, callbacks=None,
            **kwargs):
        """Train as `keras.Model.fit` does, one scheduled action per step.

        Args:
            *args: positional `keras.Model.fit` arguments.
            feature_validation_data: optional `(x, y)` whose
                `validation_metric` feeds the validation features (and the
                `patience` stopping rule) every `validation_interval`
                steps. It stays set for later `fit` calls.
            callbacks: Keras callbacks.
            **kwargs: other `keras.Model.fit` arguments.
        """
        if feature_validation_data is not None:
            x_val, y_val = feature_validation_data
            _check_finite_validation(x_val, y_val)
            object.__setattr__(self, "_validation_data", (
                tf.convert_to_tensor(x_val), tf.convert_to_tensor(y_val)
            ))
            self.train_function = None
        callbacks = list(callbacks or []) + [_ScheduleCallback()]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def load_own_variables(self, store):
        own = len(self._trainable_variables) + len(self._non_trainable_variables)
        if not self._actions_prepared and len(store.keys()) > own:
            # Loaded with compile=False. The best-weight snapshot, saved
            # last, has no variables to load into until compile creates
            # them, and only scheduled training reads it.
            store = {str(i): store[str(i)] for i in range(own)}
        super().load_own_variables(store)

    def restore_best_weights(self):
        """Load the weights of the best validation metric seen so far.

        Members that never had a validation reading keep their weights.
        """
        state = self.training_state
        seen = tf.math.is_finite(state.best_metric)
        for variable, best in zip(self._all_action_variables(),
                                  self._best_weights):
            mask = self._member_mask(seen, variable)
            variable.assign(tf.where(mask, best, variable))

    # Train step ----------------------------------------------------------

    def train_step(self, data):
        if tf.distribute.has_strategy():
            # Decide once, in cross-replica context; see `replicas.py`.
            context = tf.distribute.get_replica_context()
            decision = context.merge_call(
                self._scheduled_update, args=(data,)
            )
        else:
            decision = self._scheduled_update(None, data)
        return self._logs(*decision)

    def _scheduled_update(self, strategy, data):
        """Decide the action of every member and apply it.

        Runs in cross-replica context under a strategy, where `data` contains
        one shard per replica.

        Returns:
            (actions, probabilities, loss, applied), one entry per member.
        """
        runner = replicas_lib.ReplicaRunner(strategy)
        state = self.training_state
        tracker = self.feature_tracker
        step = tf.convert_to_tensor(state.step)
        tf.cond(
            state.features_ready, lambda: tf.constant(True),
            lambda: self._refresh_all_features(data, runner),
        )
        if self._validation_data is not None:
            due = tf.equal(step % self.validation_interval, 0)
            tf.cond(due, self._refresh_validation, lambda: tf.constant(False))
        tracker.set_progress(
            tf.minimum(tf.cast(step, "float32") / state.total_steps, 1.0)
        )
        features = tracker.values()
        actions, probabilities = schedules_lib.decide(
            self.schedule, features, step
        )
        usable = self._usable(features, actions)
        if self._population is None:
            loss, grad_norm, applied = self._single_update(
                data, actions, usable, runner
            )
        else:
            loss, grad_norm, applied = self._population_update(
                data, actions, usable, runner
            )
        tracker.record_action(tf.maximum(actions, 0), loss, grad_norm, applied)
        self._record_extra_features(data, runner)
        self.schedule.observe(step, features, actions, state.active.value)
        state.active_steps.assign_add(tf.cast(state.active, "int64"))
        skipped = tf.reduce_sum(tf.cast(tf.logical_not(applied), "int64"))
        state.skipped.assign_add(skipped)
        state.step.assign_add(1)
        return actions, probabilities, loss, applied

    def _usable(self, features, actions):
        """Return which members may step: finite features and a valid action."""
        finite = tf.reduce_all(tf.math.is_finite(features), axis=1)
        if self.nonfinite == "raise":
            finite = _assert_finite(finite, "features")
        in_range = tf.logical_and(
            actions >= 0, actions < len(self._action_list)
        )
        return tf.logical_and(finite, in_range)

    def _single_update(self, data, actions, usable, runner):
        """Run the chosen action's branch; an unusable step runs `skip`.

        The skip branch sits at index len(actions), so one `switch_case`
        both dispatches and guards, and a bad index never reaches the
        last real branch.
        """
        def skip():
            zero = tf.zeros([1])
            return zero, zero, tf.zeros([1], "bool")

        branches = [
            (lambda a=a: self._apply_action(a, data, runner))
            for a in self._action_list
        ]
        index = tf.where(usable[0], actions[0], len(branches))
        return tf.switch_case(index, branches + [skip])

    def _apply_action(self, action, data, runner):
        """Apply one action's gradient unless a replica's values are not finite.

        The gradients are of the loss times the optimizer's loss scale
        (1 unless it is a `LossScaleOptimizer` or has `loss_scale_factor`),
        and the gradient-norm feature divides that scale out again.
        """
        optimizer = self.action_optimizers[action.optimizer_index]
        variables = action.resolved_variables
        loss, grads = runner.run(self._action_gradients, action, data)
        loss_finite = runner.all(runner.run(tf.math.is_finite, loss))
        loss = runner.mean(loss)
        grad_norm = _unscaled(
            tf.linalg.global_norm(runner.sum(grads))
            / math.sqrt(action.num_parameters),
            optimizer,
        )
        finite = self._checked_finite(
            loss_finite, tf.math.is_finite(grad_norm), optimizer,
            f"loss of action {action.name!r}",
        )

        def apply():
            runner.run(lambda g: optimizer.apply(g, variables), grads)
            return tf.constant(True)

        def skip():
            _lower_loss_scale(optimizer)
            return tf.constant(False)

        applied = tf.cond(finite, apply, skip)
        return (
            tf.reshape(loss, [1]),
            tf.reshape(grad_norm, [1]),
            tf.reshape(applied, [1]),
        )

    def _checked_finite(self, loss_finite, grads_finite, optimizer,
                        description):
        """Return whether a step may apply (with nonfinite="raise", assert it).

        A loss-scaled action whose gradients overflow only skips the step
        and lowers the loss scale, as `LossScaleOptimizer` does, because an
        overflow of the scaled gradients is how it finds its scale. Only
        its non-finite loss raises.
        """
        finite = tf.logical_and(loss_finite, grads_finite)
        if self.nonfinite != "raise":
            return finite
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            loss_finite = _assert_finite(loss_finite, description)
            return tf.logical_and(loss_finite, grads_finite)
        return _assert_finite(finite, description)

    def _action_gradients(self, action, data):
        """Return one replica's action loss and its loss-scaled gradients."""
        optimizer = self.action_optimizers[action.optimizer_index]
        with tf.GradientTape() as tape:
            loss = self._action_loss(action, data)
            scaled = optimizer.scale_loss(replicas_lib.scale_loss(loss))
        grads = self._dense_gradients(tape, scaled, action.resolved_variables)
        return tf.cast(loss, "float32"), grads

    def _dense_gradients(self, tape, loss, variables):
        grads = tape.gradient(loss, variables)
        return [
            tf.zeros_like(v) if g is None else g
            for g, v in zip(grads, variables)
        ]

    def _action_loss(self, action, data):
        loss = action.loss(data)
        expected = [] if self._population is None else [self.population]
        shape = loss.shape
        if shape.rank is not None and list(shape) != expected:
            raise ValueError(
                f"The loss of action {action.name!r} must have shape "
                f"{expected} ({'a scalar' if not expected else 'one value per member'}). "
                f"Received: shape {shape}. Reduce it with a mean or sum."
            )
        return loss

    def _population_update(self, data, actions, usable, runner):
        # NOTE: this path has tests on one device only, none under a
        # tf.distribute strategy.
        variables = self._action_list[0].resolved_variables
        optimizer = self.action_optimizers[self._action_list[0].optimizer_index]
        chosen, grads = runner.run(
            self._population_gradients, data, actions, usable
        )
        grad_norm = _unscaled(
            self._member_grad_norms(runner.sum(grads)), optimizer
        )
        ignored = tf.logical_not(usable)
        loss_finite = tf.logical_or(
            runner.all(runner.run(tf.math.is_finite, chosen)), ignored
        )
        grads_finite = tf.logical_or(tf.math.is_finite(grad_norm), ignored)
        finite = self._checked_finite(
            tf.reduce_all(loss_finite), tf.reduce_all(grads_finite),
            optimizer, "a member's loss",
        )
        step_ok = tf.logical_and(finite, tf.reduce_any(usable))

        def apply():
            runner.run(lambda g: optimizer.apply(g, variables), grads)
            return tf.constant(True)

        def skip():
            # A step skipped only because no member was usable keeps the
            # loss scale.
            tf.cond(
                finite, lambda: tf.constant(False),
                lambda: _lower_loss_scale(optimizer),
            )
            return tf.constant(False)

        applied = tf.cond(step_ok, apply, skip)
        return runner.mean(chosen), grad_norm, tf.logical_and(usable, applied)

    def _population_gradients(self, data, actions, usable):
        """Return one replica's chosen member losses and scaled gradients."""
        first_action = self._action_list[0]
        variables = first_action.resolved_variables
        optimizer = self.action_optimizers[first_action.optimizer_index]
        safe_actions = tf.maximum(actions, 0)
        # NOTE: an unusable member gets a zero gradient, but Adam still
        # moves it by its stored momentum on this step.
        with tf.GradientTape() as tape:
            losses = tf.stack(
                [self._action_loss(a, data) for a in self._action_list],
                axis=1,
            )
            chosen = tf.gather(losses, safe_actions, axis=1, batch_dims=1)
            total = tf.reduce_sum(tf.where(usable, chosen, 0.0))
            scaled = optimizer.scale_loss(replicas_lib.scale_loss(total))
        return chosen, self._dense_gradients(tape, scaled, variables)

    def _member_grad_norms(self, grads):
        squares = [
            tf.reduce_sum(tf.reshape(tf.square(g), [self.population, -1]), 1)
            for g in grads
        ]
        per_member = self._action_list[0].num_parameters // self.population
        return tf.sqrt(tf.add_n(squares)) / math.sqrt(per_member)

    def _refresh_all_features(self, data, runner):
        """Evaluate every action once so no feature starts at zero."""
        losses, norms = [], []
        for action in self._action_list:
            loss, grads = runner.run(self._feature_gradients, action, data)
            grads = runner.sum(grads)
            if self._population is None:
                norm = tf.linalg.global_norm(grads) / math.sqrt(
                    action.num_parameters
                )
            else:
                norm = self._member_grad_norms(grads)
            losses.append(tf.broadcast_to(runner.mean(loss),
                                          [self.population]))
            norms.append(tf.broadcast_to(tf.cast(norm, "float32"),
                                         [self.population]))
        stacked_losses = tf.stack(losses, axis=1)
        stacked_norms = tf.stack(norms, axis=1)
        keep = tf.math.is_finite(stacked_losses) & tf.math.is_finite(stacked_norms)
        self.feature_tracker.record_all(
            tf.where(keep, stacked_losses, 0.0),
            tf.where(keep, stacked_norms, 0.0),
        )
        self._record_extra_features(data, runner)
        self.training_state.features_ready.assign(True)
        return tf.constant(True)

    def _feature_gradients(self, action, data):
        """Return one replica's loss of an action and its gradients."""
        with tf.GradientTape() as tape:
            loss = self._action_loss(action, data)
            total = replicas_lib.scale_loss(tf.reduce_sum(loss))
        grads = self._dense_gradients(tape, total, action.resolved_variables)
        return tf.cast(loss, "float32"), grads

    def _record_extra_features(self, data, runner):
        tracker = self.feature_tracker
        if not tracker.extra_names:
            return
        values = runner.mean(runner.run(self._checked_extra_features, data))
        tracker.record_extras(values)

    def _checked_extra_features(self, data):
        tracker = self.feature_tracker
        values = tf.convert_to_tensor(self.extra_features(data))
        expected = [self.population, len(tracker.extra_names)]
        if values.shape.rank is not None and (
            values.shape.rank != 2
            or not values.shape.is_compatible_with(expected)
        ):
            raise ValueError(
                "extra_features(data) must return one value per extra "
                f"feature and member, shape {expected} for the features "
                f"{tracker.extra_names}. Received: shape {values.shape}."
            )
        return tf.cast(values, "float32")

    def _refresh_validation(self):
        state = self.training_state
        x_val, y_val = self._validation_data
        metric = tf.cast(self.validation_metric(x_val, y_val), "float32")
        metric = tf.broadcast_to(metric, [self.population])
        self.feature_tracker.record_validation(
            tf.where(tf.math.is_finite(metric), metric, state.best_metric)
        )
        improved = metric < state.best_metric
        step = tf.convert_to_tensor(state.step)
        state.best_metric.assign(tf.where(improved, metric, state.best_metric))
        state.best_step.assign(tf.where(improved, step, state.best_step))
        for variable, best in zip(self._all_action_variables(),
                                  self._best_weights):
            best.assign(
                tf.where(self._member_mask(improved, variable), variable, best)
            )
        if self.patience is not None:
            waited = step - state.best_step
            state.active.assign(
                tf.logical_and(state.active, waited <= self.patience)
            )
        return tf.constant(True)

    def _member_mask(self, member_flags, variable):
        """Broadcast a [population] flag vector to a variable's shape."""
        if self._population is None:
            flag = member_flags[0]
            return tf.fill(tf.shape(variable), flag)
        shape = [self.population] + [1] * (len(variable.shape) - 1)
        return tf.broadcast_to(tf.reshape(member_flags, shape), variable.shape)

    def _logs(self, actions, probabilities, loss, applied):
        state = self.training_state
        applied_float = tf.cast(applied, "float32")
        applied_count = tf.reduce_sum(applied_float)
        # A skipped step may carry a NaN loss; it must not reach the mean.
        applied_loss = tf.where(applied, loss, tf.zeros_like(loss))
        step_loss = tf.reduce_sum(applied_loss) / tf.maximum(
            applied_count, 1.0
        )
        # Like Keras, `loss` is the mean over the epoch's applied steps.
        self._loss_tracker.update_state(
            step_loss, sample_weight=tf.minimum(applied_count, 1.0)
        )
        logs = {
            "loss": self._loss_tracker.result(),
            # -1 marks a skipped step, whose sampled index may be invalid.
            "action": tf.where(applied[0], actions[0], -1),
            "skipped_steps": tf.convert_to_tensor(state.skipped),
        }
        # Every returned tensor costs host work per call, so the per-action
        # feature values stay in `feature_tracker` instead of the logs.
        if self.patience is not None:
            logs["active_members"] = tf.reduce_sum(
                tf.cast(state.active, "int32")
            )
        mean_probabilities = tf.reduce_mean(probabilities, axis=0)
        for index, name in enumerate(self.action_names):
            logs[f"p_{name}"] = mean_probabilities[index]
        if self._validation_data is not None:
            logs["val_metric"] = tf.reduce_mean(
                self.feature_tracker.validation[:, 0]
            )
        return logs

    def test_step(self, data):
        """Evaluate every action's loss (and compiled metrics) on a batch."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        logs = {}
        for action in self._action_list:
            logs[f"loss/{action.name}"] = tf.reduce_mean(action.loss(data))
        if self.compiled_metrics is not None or self._compile_metrics:
            y_pred = self(x, training=False)
            logs.update(self.compute_metrics(x, y, y_pred, sample_weight))
        return logs


class _ScheduleCallback(keras.callbacks.Callback):
    """Sets T for the progress feature and stops when no member is active."""

    def on_train_begin(self, logs=None):
        model = self.model
        state = model.training_state
        total = model.total_steps_setting
        if total is None:
            steps = self.params.get("steps")
            if steps is None:
                raise ValueError(
                    "The progress feature t / T needs the number of steps, "
                    "but this dataset's length is unknown. Pass "
                    "steps_per_epoch to fit() or total_steps to compile()."
                )
            total = int(state.step.numpy()) + steps * self.params["epochs"]
        state.total_steps.assign(float(total))

    def on_train_batch_end(self, batch, logs=None):
        if self.model.patience is not None:
            if not bool(tf.reduce_any(self.model.training_state.active)):
                self.model.stop_training = True


def _check_finite_validation(x_val, y_val):
    for name, values in (("x", x_val), ("y", y_val)):
        array = np.asarray(values)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(
                "`feature_validation_data` must be finite: a NaN or Inf "
                "validation metric would skip every training step. "
                f"Received: {int((~np.isfinite(array)).sum())} non-finite "
                f"values in its {name}. Remove or impute those rows."
            )


def _union(groups):
    result, seen = [], set()
    for group in groups:
        for variable in group:
            if id(variable) not in seen:
                seen.add(id(variable))
                result.append(variable)
    return result


def _build_optimizer(optimizer, variables):
    if not optimizer.built:
        optimizer.build(variables)
        return
    # An optimizer built elsewhere (for example by an earlier compile) must
    # already track every variable it will update.
    known = {id(v) for v in optimizer._trainable_variables}
    missing = [v.path for v in variables if id(v) not in known]
    if missing:
        raise ValueError(
            "An optimizer passed to add_action() was already built on other "
            f"variables. Received: variables not tracked by it: {missing}. "
            "Pass a new, unbuilt optimizer."
        )


def _check_positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}."
        )


def _unscaled(grad_norm, optimizer):
    """Return a gradient norm over the optimizer's loss scale, in float32."""
    grad_norm = tf.cast(grad_norm, "float32")
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer) or (
        optimizer.loss_scale_factor is not None
    )
    if not scaled:
        return grad_norm
    scale = tf.cast(optimizer.scale_loss(tf.constant(1.0)), "float32")
    return grad_norm / scale


def _lower_loss_scale(optimizer):
    """Halve a `LossScaleOptimizer`'s scale after a skipped step.

    `LossScaleOptimizer.apply` does the same when it finds a non-finite
    gradient: it resets the growth counter and halves `dynamic_scale`. Other
    optimizers are left unchanged. Returns True, for use as a `tf.cond`
    branch.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer.step_counter.assign(0)
        optimizer.dynamic_scale.assign(optimizer.dynamic_scale * 0.5)
    return tf.constant(True)


def _assert_finite(flag, what):
    message = (
        f"Non-finite {what} with compile(nonfinite='raise'). Lower the "
        "learning rate, check the inputs, or use nonfinite='skip'."
    )
    with tf.control_dependencies(
        [tf.debugging.Assert(tf.reduce_all(flag), [message])]
    ):
        return tf.identity(flag)
