"""Actions: a (loss, variable group, optimizer) triple the schedule picks."""

import dataclasses

import keras

OPTIMIZER_MODES = ("auto", "shared", "own")


@dataclasses.dataclass
class Action:
    """One schedulable update: minimize `loss` over `variables`.

    Attributes:
        name: unique name, used in logs as `loss/<name>` and `p_<name>`.
        loss: callable `loss(data) -> scalar tensor` (or a [population]
            vector for population models), where `data` is the batch that
            `fit` passes to `train_step`.
        variables: the variable group as given at registration: None (every
            variable of the task model), a list of layers and variables, or
            a callable returning such a list.
        optimizer: `"auto"`, `"shared"`, `"own"` or an optimizer instance.
        resolved_variables: the variable group after `compile`.
        optimizer_index: index into the model's action optimizers.
    """

    name: str
    loss: object
    variables: object = None
    optimizer: object = "auto"
    resolved_variables: list = dataclasses.field(default_factory=list)
    optimizer_index: int = -1

    @property
    def num_parameters(self):
        """Number of scalar parameters in the resolved variable group."""
        total = 0
        for variable in self.resolved_variables:
            size = 1
            for dim in variable.shape:
                size *= int(dim)
            total += size
        return total


def validate_new_action(existing_names, name, loss, optimizer):
    """Raise ValueError if a new action's name, loss or optimizer is invalid."""
    if not isinstance(name, str) or not name:
        raise ValueError(
            "An action name must be a non-empty string. "
            f"Received: name={name!r}."
        )
    if name in existing_names:
        raise ValueError(
            "Action names must be unique. "
            f"Received: name={name!r}, already registered: {existing_names}. "
            "Choose another name."
        )
    if not callable(loss):
        raise ValueError(
            "An action's `loss` must be callable as loss(data). "
            f"Received: loss={loss!r} for action {name!r}."
        )
    is_optimizer = isinstance(optimizer, keras.optimizers.Optimizer)
    if not is_optimizer and optimizer not in OPTIMIZER_MODES:
        raise ValueError(
            "An action's `optimizer` must be one of "
            f"{OPTIMIZER_MODES} or a keras.optimizers.Optimizer. "
            f"Received: optimizer={optimizer!r} for action {name!r}."
        )


def resolve_variables(action, model_variables):
    """Turn an action's variable spec into a deduplicated variable list.

    Args:
        action: the `Action`.
        model_variables: the task model's variables; every resolved variable
            must be one of them.

    Returns:
        A list of variables in first-seen order.

    Raises:
        ValueError: if the group is empty or contains a variable that is not
            one of the task model's.
    """
    spec = action.variables
    if spec is None:
        items = list(model_variables)
    else:
        if callable(spec) and not isinstance(spec, keras.layers.Layer):
            spec = spec()
        if isinstance(spec, (keras.layers.Layer, keras.Variable)):
            spec = [spec]
        items = []
        for item in spec:
            if isinstance(item, keras.layers.Layer):
                items.extend(item.trainable_variables)
            else:
                items.append(item)
    known = {id(v) for v in model_variables}
    resolved, seen = [], set()
    for variable in items:
        if id(variable) not in known:
            raise ValueError(
                f"Action {action.name!r} lists a variable that is not a "
                "trainable variable of this model. "
                f"Received: {getattr(variable, 'path', variable)!r}. "
                "Pass layers or variables owned by the model, and build "
                "the model before compile or fit."
            )
        if id(variable) not in seen:
            seen.add(id(variable))
            resolved.append(variable)
    if not resolved:
        raise ValueError(
            f"Action {action.name!r} has an empty variable group. "
            f"Received: variables={action.variables!r}. Pass layers or "
            "variables that exist once the model is built (for layers "
            "created in __init__, build the model first)."
        )
    return resolved
