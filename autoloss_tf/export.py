"""Export and load controllers with their feature and action names.

An exported controller is a directory with three entries:

- `saved_model/`: a TensorFlow SavedModel whose serving signature
  `serve(features: float32 [None, num_features])` returns
  `{"probabilities": float32 [None, num_actions]}`, equal to
  softmax(logits / temperature). Serving it needs TensorFlow only.
- `controller.keras`: the controller in the Keras format, which reloads as
  a trainable `Controller`.
- `metadata.json`: the ordered feature and action names the controller was
  trained on, its hyperparameters, the library version and a description
  of the training run.

A controller reads its features by position. Applied to a model whose
features or actions differ in name or order, it runs without error but
decides on the wrong inputs, so `load_controller`, `load_schedule` and
`check_controller_for_model` compare the names and raise
`ControllerMismatchError` on any difference.
"""

import json
import os
import pathlib
import shutil
import tempfile
import warnings
import zipfile

import keras
import numpy as np
import tensorflow as tf

import autoloss_tf
from autoloss_tf import controllers as controllers_lib
from autoloss_tf import schedules as schedules_lib

FORMAT_VERSION = 1
SAVED_MODEL_DIR = "saved_model"
CONTROLLER_FILE = "controller.keras"
METADATA_FILE = "metadata.json"
SERVING_ENDPOINT = "serve"
SERVING_INPUT = "features"
SERVING_OUTPUT = "probabilities"
REQUIRED_METADATA_KEYS = (
    "format_version", "library_version", "controller_kind", "num_features",
    "num_actions", "feature_names", "action_names", "temperature",
    "feature_scale", "training",
)
_REEXPORT_FIX = "Export the controller again with export_controller()."
# _check_library_version issues the version warning two calls below the
# public loader, and the warning must point at the loader's caller.
_VERSION_WARNING_STACKLEVEL = 4

# Exceptions that keras.saving.load_model (Keras 3.15) raises for a damaged
# archive: ValueError for a missing weights file, OSError from h5py for
# corrupt weights, json.JSONDecodeError (a ValueError) for a corrupt config.
# NOTE: KeyError, TypeError and BadZipFile are caught for other damage that
# was not reproduced, such as a config with missing fields.
_KERAS_LOAD_ERRORS = (
    ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile,
)
# tf.saved_model.load raises OSError for a missing or unparsable
# saved_model.pb and FileNotFoundError for missing variables.
_SAVED_MODEL_LOAD_ERRORS = (OSError, ValueError, tf.errors.OpError)


class ControllerMismatchError(ValueError):
    """Error for feature or action names that differ from a controller's."""


class ControllerLoadError(ValueError):
    """Error for an exported controller that cannot be loaded.

    Raised for a missing or corrupt file, invalid metadata, an unknown
    format version, or another major library version. It subclasses
    ValueError, as `keras.saving.load_model` raises ValueError for an
    unreadable file. The original exception, if any, is chained as
    `__cause__`.
    """


class ExportedController:
    """A controller reloaded by `load_controller`.

    Attributes:
        controller: the reloaded Keras `Controller`, trainable.
        metadata: the dict read from `metadata.json`.
        serving: the object returned by `tf.saved_model.load` for
            `saved_model/`; `serving.serve(features)` returns
            `{"probabilities": ...}`.
        directory: the `pathlib.Path` of the exported directory.
    """

    def __init__(self, controller, metadata, serving, directory):
        self.controller = controller
        self.metadata = metadata
        self.serving = serving
        self.directory = pathlib.Path(directory)

    @property
    def feature_names(self):
        """Ordered feature names the controller was trained on."""
        return list(self.metadata["feature_names"])

    @property
    def action_names(self):
        """Ordered action names the controller chooses from."""
        return list(self.metadata["action_names"])

    def probabilities(self, features):
        """Compute action probabilities with the SavedModel serving signature.

        Args:
            features: array-like [batch, num_features], any batch size. It
                is cast to float32.

        Returns:
            A float32 tensor [batch, num_actions] of
            softmax(logits / temperature).

        Raises:
            ValueError: if `features` is not a matrix with one column per
                feature.
        """
        features = tf.cast(features, "float32")
        num_features = self.metadata["num_features"]
        if features.shape.rank != 2 or features.shape[-1] != num_features:
            raise ValueError(
                "`features` must have shape [batch, num_features] with "
                f"num_features={num_features}. Received: features with "
                f"shape {tuple(features.shape)}. Pass one row per member "
                f"with the features {self.feature_names}."
            )
        return self.serving.serve(features)[SERVING_OUTPUT]

    def __repr__(self):
        return (
            f"ExportedController(directory={str(self.directory)!r}, "
            f"kind={self.metadata['controller_kind']!r}, "
            f"num_features={self.metadata['num_features']}, "
            f"actions={self.action_names})"
        )


# Export ----------------------------------------------------------------


def export_controller(
    controller, directory, *, feature_names, action_names, training=None,
    overwrite=False,
):
    """Write a controller as a SavedModel, a `.keras` file and metadata.

    The files are written into a temporary directory next to `directory`
    and then moved into place, with `metadata.json` last, so an export that
    fails leaves no `metadata.json` that describes other files.

    Args:
        controller: a `Controller`, such as `LinearController` or
            `MLPController`.
        directory: path of the directory to create.
        feature_names: ordered feature names, one per controller input,
            usually `model.feature_tracker.names`.
        action_names: ordered action names, one per controller output,
            usually `model.action_names`.
        training: optional JSON-serializable dict describing the training
            run (command, seed, episodes, final validation metric, ...).
            Numpy scalars and arrays are stored as numbers and lists.
            Defaults to None, stored as `{}`.
        overwrite: if True, replace the exported entries of an existing
            directory. Other files in it are kept. Defaults to False.

    Returns:
        The metadata dict written to `metadata.json`.

    Raises:
        ValueError: if `controller` is not a `Controller`, if the name
            lists do not match its feature and action counts or contain
            duplicates, or if `training` is not JSON-serializable.
        FileExistsError: if `directory` is a file, or a non-empty directory
            and `overwrite` is False.

    Example:

    ```python
    controller = MLPController(num_features=8, num_actions=2)
    export_controller(
        controller, "saved_controllers/l1",
        feature_names=model.feature_tracker.names,
        action_names=model.action_names,
        training={"seed": 0, "episodes": 200},
    )
    ```
    """
    _check_controller(controller)
    feature_names = _check_names_argument(
        "feature_names", feature_names, controller.num_features,
        "controller.num_features",
    )
    action_names = _check_names_argument(
        "action_names", action_names, controller.num_actions,
        "controller.num_actions",
    )
    metadata = _build_metadata(
        controller, feature_names, action_names, training
    )
    metadata_text = _encode_metadata(metadata)
    path = pathlib.Path(directory)
    _check_export_target(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(
        tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)
    )
    try:
        _write_saved_model(controller, staging / SAVED_MODEL_DIR)
        controller.save(staging / CONTROLLER_FILE)
        (staging / METADATA_FILE).write_text(metadata_text)
        _move_into_place(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return json.loads(metadata_text)


def _check_controller(controller):
    if not isinstance(controller, controllers_lib.Controller):
        raise ValueError(
            "`controller` must be an autoloss_tf Controller. "
            f"Received: controller of type {type(controller).__name__}. "
            "Pass a LinearController, an MLPController or another "
            "Controller subclass."
        )


def _check_names_argument(argument, names, expected_count, count_source):
    names = list(names)
    if not all(isinstance(name, str) for name in names):
        raise ValueError(
            f"`{argument}` must contain strings. Received: {argument}={names!r}."
        )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"`{argument}` must not repeat a name. Received: duplicates "
            f"{duplicates} in {argument}={names}. Pass each name once."
        )
    if len(names) != expected_count:
        raise ValueError(
            f"`{argument}` must contain one name per controller "
            f"{'input' if argument == 'feature_names' else 'output'}. "
            f"Received: {len(names)} names {names} for "
            f"{count_source}={expected_count}. Pass the names of the model "
            "the controller was trained on."
        )
    return names


def _build_metadata(controller, feature_names, action_names, training):
    if training is not None and not isinstance(training, dict):
        raise ValueError(
            "`training` must be a dict or None. "
            f"Received: training of type {type(training).__name__}. Pass a "
            "dict such as {'seed': 0, 'episodes': 200}."
        )
    metadata = {
        "format_version": FORMAT_VERSION,
        "library_version": autoloss_tf.__version__,
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "controller_kind": controller.kind,
        "num_features": controller.num_features,
        "num_actions": controller.num_actions,
        "feature_names": feature_names,
        "action_names": action_names,
        "temperature": controller.temperature,
        "feature_scale": list(controller.feature_scale),
        "feature_mask": list(controller.feature_mask),
    }
    if hasattr(controller, "hidden_units"):
        metadata["hidden_units"] = controller.hidden_units
    metadata["training"] = dict(training or {})
    return metadata


def _encode_metadata(metadata):
    try:
        return json.dumps(metadata, indent=2, default=_numpy_to_json)
    except (TypeError, ValueError) as error:
        raise ValueError(
            "`training` must contain only JSON-serializable values "
            "(strings, numbers, booleans, None, lists and dicts). "
            f"Received: training={metadata['training']!r} ({error}). "
            "Convert other values to strings or numbers first."
        ) from error


def _numpy_to_json(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _check_export_target(path, overwrite):
    if path.exists() and not path.is_dir():
        raise FileExistsError(
            "The export directory must be a directory or not exist. "
            f"Received: directory={str(path)!r}, which is a file. Pass "
            "another path."
        )
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(
            "The export directory must be empty or not exist, unless "
            f"overwrite=True. Received: directory={str(path)!r} with "
            f"entries {sorted(p.name for p in path.iterdir())}. Pass "
            "overwrite=True to replace the exported controller, or choose "
            "another directory."
        )


def _write_saved_model(controller, path):
    archive = keras.export.ExportArchive()
    archive.track(controller)
    archive.add_endpoint(
        name=SERVING_ENDPOINT,
        fn=lambda features: {
            SERVING_OUTPUT: controller.probabilities(features)
        },
        input_signature=[
            tf.TensorSpec(
                [None, controller.num_features], tf.float32,
                name=SERVING_INPUT,
            )
        ],
    )
    archive.write_out(str(path), verbose=False)


def _move_into_place(staging, path):
    path.mkdir(exist_ok=True)
    # Remove the old metadata first, so an interrupted replacement leaves
    # a directory that load_controller rejects.
    _remove(path / METADATA_FILE)
    for name in (SAVED_MODEL_DIR, CONTROLLER_FILE, METADATA_FILE):
        _remove(path / name)
        os.replace(staging / name, path / name)


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# Load ------------------------------------------------------------------


def load_controller(directory, *, feature_names=None, action_names=None):
    """Load a controller written by `export_controller`.

    Args:
        directory: path of the exported directory.
        feature_names: optional ordered feature names of the model the
            controller will drive. If given, they must equal the saved
            names. Defaults to None (no check).
        action_names: optional ordered action names, checked the same way.
            Defaults to None (no check).

    Returns:
        An `ExportedController` with the reloaded Keras controller, the
        metadata and the loaded SavedModel.

    Raises:
        ControllerLoadError: if the directory, `metadata.json`,
            `controller.keras` or `saved_model/` is missing or unreadable,
            if the metadata is invalid or of an unknown format version, or
            if it was written by another major version of autoloss_tf.
        ControllerMismatchError: if `feature_names` or `action_names`
            differ from the saved names.

    A minor version different from this library's issues a UserWarning.

    Example:

    ```python
    loaded = load_controller(
        "saved_controllers/l1",
        feature_names=model.feature_tracker.names,
        action_names=model.action_names,
    )
    loaded.probabilities(model.feature_tracker.values())
    ```
    """
    return _load_exported(directory, feature_names, action_names)


def load_schedule(directory, feature_names, action_names, seed=0,
                  decoding="sample"):
    """Load an exported controller and wrap it in a `LearnedSchedule`.

    Args:
        directory: path of the exported directory.
        feature_names: ordered feature names of the model to drive, usually
            `autoloss_tf.feature_names(action_names)`.
        action_names: ordered action names of that model.
        seed: seed of the schedule's stateless sampling. Defaults to 0.
        decoding: `"sample"`, `"greedy"` or `"dither"`, as in
            `LearnedSchedule`. Defaults to `"sample"`.

    Returns:
        A `LearnedSchedule` around the reloaded controller.

    Raises:
        ControllerLoadError: as `load_controller` does.
        ControllerMismatchError: if the names differ from the saved names.

    Example:

    ```python
    names = ["task", "l1"]
    schedule = load_schedule(
        "saved_controllers/regression", autoloss_tf.feature_names(names), names
    )
    model.compile(optimizer="adam", schedule=schedule)
    ```
    """
    loaded = _load_exported(directory, feature_names, action_names)
    return schedules_lib.LearnedSchedule(
        loaded.controller, seed=seed, decoding=decoding,
        feature_names=loaded.feature_names, action_names=loaded.action_names,
    )


def check_controller_for_model(loaded, model):
    """Raise unless a model's features and actions match a loaded controller.

    Args:
        loaded: an `ExportedController` from `load_controller`.
        model: a compiled `ScheduledModel`.

    Raises:
        ValueError: if `model` is not compiled, since its features exist
            only after `compile`.
        ControllerMismatchError: if `model.feature_tracker.names` or
            `model.action_names` differ from the saved names.

    Example:

    ```python
    model.compile(optimizer="adam")
    check_controller_for_model(load_controller("saved_controllers/l1"), model)
    ```
    """
    tracker = getattr(model, "feature_tracker", None)
    if tracker is None:
        raise ValueError(
            "The model must be compiled before its features can be checked. "
            f"Received: model of type {type(model).__name__} without a "
            "feature_tracker. Call model.compile() first."
        )
    _check_saved_names(
        loaded.metadata, loaded.directory, tracker.names, model.action_names
    )


def _load_exported(directory, feature_names, action_names):
    path = pathlib.Path(directory)
    if not path.is_dir():
        raise ControllerLoadError(
            "An exported controller must be a directory. Received: "
            f"directory={str(path)!r}, which "
            f"{'is a file' if path.exists() else 'does not exist'}. Pass the "
            "directory given to export_controller(), or export the "
            "controller there."
        )
    metadata = _read_metadata(path)
    _check_library_version(metadata, path)
    _check_saved_names(metadata, path, feature_names, action_names)
    controller = _load_keras_controller(path, metadata)
    serving = _load_serving(path, metadata)
    return ExportedController(controller, metadata, serving, path)


# Metadata --------------------------------------------------------------


def _read_metadata(path):
    file = path / METADATA_FILE
    if not file.is_file():
        raise ControllerLoadError(
            f"An exported controller needs {METADATA_FILE}. Received: "
            f"{str(file)!r} not found. {_REEXPORT_FIX}"
        )
    try:
        metadata = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ControllerLoadError(
            f"{METADATA_FILE} must be a readable JSON file. Received: "
            f"{str(file)!r} failed to load ({error}). {_REEXPORT_FIX}"
        ) from error
    if not isinstance(metadata, dict):
        raise ControllerLoadError(
            f"{METADATA_FILE} must contain a JSON object. Received: a "
            f"{type(metadata).__name__} in {str(file)!r}. {_REEXPORT_FIX}"
        )
    _check_format_version(metadata, file)
    _check_metadata_keys(metadata, file)
    return metadata


def _check_format_version(metadata, file):
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ControllerLoadError(
            f"This autoloss_tf version reads export format {FORMAT_VERSION}. "
            f"Received: format_version={version!r} in {str(file)!r}. "
            "Load it with the autoloss_tf version that wrote it "
            f"(library_version={metadata.get('library_version')!r}), or "
            "export the controller again with export_controller()."
        )


def _check_metadata_keys(metadata, file):
    missing = [key for key in REQUIRED_METADATA_KEYS if key not in metadata]
    if missing:
        raise ControllerLoadError(
            f"{METADATA_FILE} must contain the keys "
            f"{list(REQUIRED_METADATA_KEYS)}. Received: {str(file)!r} "
            f"with missing keys {missing}. {_REEXPORT_FIX}"
        )
    problems = []
    for key in ("num_features", "num_actions"):
        if not isinstance(metadata[key], int) or metadata[key] < 1:
            problems.append(f"{key}={metadata[key]!r} is not a positive int")
    for key, count_key in (("feature_names", "num_features"),
                           ("action_names", "num_actions")):
        names = metadata[key]
        if not isinstance(names, list) or len(names) != metadata[count_key]:
            problems.append(
                f"{key} is not a list of {count_key}={metadata[count_key]!r} "
                "names"
            )
    if not isinstance(metadata["training"], dict):
        problems.append("training is not a JSON object")
    if problems:
        raise ControllerLoadError(
            f"{METADATA_FILE} contains invalid values. Received: "
            f"{'; '.join(problems)} in {str(file)!r}. {_REEXPORT_FIX}"
        )


def _parse_version(version):
    parts = str(version).split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def _check_library_version(metadata, path):
    saved = metadata["library_version"]
    current = autoloss_tf.__version__
    saved_parsed = _parse_version(saved)
    if saved_parsed is None:
        raise ControllerLoadError(
            "`library_version` in metadata.json must look like "
            f"'MAJOR.MINOR.PATCH'. Received: library_version={saved!r} in "
            f"{str(path / METADATA_FILE)!r}. {_REEXPORT_FIX}"
        )
    saved_major, saved_minor = saved_parsed
    current_major, current_minor = _parse_version(current)
    if saved_major != current_major:
        raise ControllerLoadError(
            "An exported controller must come from the same major version "
            f"of autoloss_tf. Received: library_version={saved!r} in "
            f"{str(path)!r}, running autoloss_tf {current}. Install "
            f"autoloss_tf {saved_major}.x to load it, or export the "
            f"controller again with autoloss_tf {current}."
        )
    if saved_minor != current_minor:
        warnings.warn(
            f"The controller in {str(path)!r} was exported by autoloss_tf "
            f"{saved}, and this is autoloss_tf {current}. It loads, but "
            "features or controllers may have changed between minor "
            "versions. Export it again with this version to silence this "
            "warning.",
            UserWarning,
            stacklevel=_VERSION_WARNING_STACKLEVEL,
        )


# Name checks -----------------------------------------------------------


def _check_saved_names(metadata, path, feature_names, action_names):
    differences = []
    for label, received, saved in (
        ("feature_names", feature_names, metadata["feature_names"]),
        ("action_names", action_names, metadata["action_names"]),
    ):
        if received is not None and list(received) != list(saved):
            differences.append(
                _describe_difference(label, list(received), list(saved))
            )
    if differences:
        raise ControllerMismatchError(
            f"The controller exported in {str(path)!r} must be used with the "
            "feature and action names it was trained on, in the same order, "
            "because it reads features by position and returns one "
            "probability per action. Received: " + " ".join(differences)
            + " Train a controller for this model's features and actions, "
            "or use a model with the saved features and actions."
        )


def _describe_difference(label, received, saved):
    parts = [
        f"{label}={received} ({len(received)} names), but the controller "
        f"was trained on {label}={saved} ({len(saved)} names)."
    ]
    missing = [name for name in saved if name not in received]
    extra = [name for name in received if name not in saved]
    if missing:
        parts.append(f"Missing (saved, not received): {missing}.")
    if extra:
        parts.append(f"Extra (received, not saved): {extra}.")
    shared_received = [name for name in received if name in saved]
    shared_saved = [name for name in saved if name in received]
    if shared_received != shared_saved:
        moved = [
            name for name, other in zip(shared_received, shared_saved)
            if name != other
        ]
        parts.append(
            f"Reordered: {moved} (received order {shared_received}, saved "
            f"order {shared_saved})."
        )
    if len(received) != len(saved):
        parts.append(
            f"Count difference: {len(received) - len(saved):+d} "
            f"({len(received)} received, {len(saved)} saved)."
        )
    return " ".join(parts)


# Artifacts -------------------------------------------------------------


def _load_keras_controller(path, metadata):
    file = path / CONTROLLER_FILE
    if not file.is_file():
        raise ControllerLoadError(
            f"An exported controller needs {CONTROLLER_FILE}. Received: "
            f"{str(file)!r} not found. {_REEXPORT_FIX}"
        )
    # Keras 3.15 reports a file that is not a zip archive as "File not
    # found", which misleads when the file exists but is corrupt.
    if not zipfile.is_zipfile(file):
        raise ControllerLoadError(
            f"{CONTROLLER_FILE} must be a Keras zip archive. Received: "
            f"{str(file)!r}, which is not a zip archive (corrupt or "
            f"truncated). {_REEXPORT_FIX}"
        )
    try:
        controller = keras.saving.load_model(file, compile=False)
    except _KERAS_LOAD_ERRORS as error:
        raise ControllerLoadError(
            f"{CONTROLLER_FILE} must be a readable Keras archive. Received: "
            f"{str(file)!r} failed to load ({type(error).__name__}: "
            f"{error}). {_REEXPORT_FIX}"
        ) from error
    _check_controller_matches_metadata(controller, metadata, file)
    return controller


def _check_controller_matches_metadata(controller, metadata, file):
    if not isinstance(controller, controllers_lib.Controller):
        raise ControllerLoadError(
            f"{CONTROLLER_FILE} must contain an autoloss_tf Controller. "
            f"Received: a {type(controller).__name__} in {str(file)!r}. "
            f"{_REEXPORT_FIX}"
        )
    saved = (metadata["num_features"], metadata["num_actions"])
    loaded = (controller.num_features, controller.num_actions)
    if saved != loaded:
        raise ControllerLoadError(
            f"{CONTROLLER_FILE} must match {METADATA_FILE}. Received: a "
            f"controller with (num_features, num_actions)={loaded} in "
            f"{str(file)!r}, metadata {saved}. {_REEXPORT_FIX}"
        )


def _load_serving(path, metadata):
    saved_model = path / SAVED_MODEL_DIR
    if not saved_model.is_dir():
        raise ControllerLoadError(
            f"An exported controller needs the SavedModel {SAVED_MODEL_DIR}/. "
            f"Received: {str(saved_model)!r} not found. {_REEXPORT_FIX}"
        )
    try:
        serving = tf.saved_model.load(str(saved_model))
    except _SAVED_MODEL_LOAD_ERRORS as error:
        raise ControllerLoadError(
            "The SavedModel of an exported controller must be readable. "
            f"Received: {str(saved_model)!r} failed to load "
            f"({type(error).__name__}: {error}). {_REEXPORT_FIX}"
        ) from error
    _check_serving_signature(serving, metadata, saved_model)
    return serving


def _check_serving_signature(serving, metadata, saved_model):
    signature = serving.signatures.get(SERVING_ENDPOINT)
    spec = None
    if signature is not None:
        spec = signature.structured_input_signature[1].get(SERVING_INPUT)
    expected_width = metadata["num_features"]
    if spec is None or spec.shape.rank != 2 or spec.shape[-1] != expected_width:
        raise ControllerLoadError(
            f"The SavedModel must have the signature {SERVING_ENDPOINT}("
            f"{SERVING_INPUT}: float32 [None, {expected_width}]). Received: "
            f"{str(saved_model)!r} with signatures "
            f"{list(serving.signatures.keys())}. {_REEXPORT_FIX}"
        )
