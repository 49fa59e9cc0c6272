import json
import re
import shutil
import warnings
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import autoloss_tf
from autoloss_tf import export
from autoloss_tf.controllers import LinearController
from autoloss_tf.controllers import MLPController
from autoloss_tf.export import ControllerLoadError
from autoloss_tf.export import ControllerMismatchError

ACTION_NAMES = ["task", "l1"]
FEATURE_NAMES = autoloss_tf.feature_names(ACTION_NAMES)
NUM_FEATURES = len(FEATURE_NAMES)
TRAINING = {
    "command": "python -m benchmarks.l1 --episodes 3",
    "seed": 7,
    "episodes": 3,
    "final_val_metric": 0.125,
    "notes": None,
}


def _make_controller(kind, temperature=1.0, seed=0):
    """Create a controller of `kind` with random, non-zero weights."""
    scale = [float(i + 1) for i in range(NUM_FEATURES)]
    if kind == "linear":
        controller = LinearController(
            NUM_FEATURES, len(ACTION_NAMES), temperature=temperature,
            feature_scale=scale,
        )
    else:
        controller = MLPController(
            NUM_FEATURES, len(ACTION_NAMES), hidden_units=5,
            temperature=temperature, feature_scale=scale,
        )
    rng = np.random.default_rng(seed)
    controller.set_weights([
        rng.normal(size=w.shape).astype("float32")
        for w in controller.get_weights()
    ])
    return controller


def _export(controller, directory, **kwargs):
    kwargs.setdefault("feature_names", FEATURE_NAMES)
    kwargs.setdefault("action_names", ACTION_NAMES)
    return export.export_controller(controller, directory, **kwargs)


def _features(batch_size, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=3.0, size=(batch_size, NUM_FEATURES)).astype(
        "float32"
    )


def _softmax(values):
    shifted = values - values.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def exported_mlp(tmp_path_factory):
    """A directory with an exported MLP controller; tests must not modify it."""
    directory = tmp_path_factory.mktemp("exported") / "mlp"
    _export(_make_controller("mlp"), directory, training=TRAINING)
    return directory


@pytest.fixture
def exported_copy(exported_mlp, tmp_path):
    """A private copy of `exported_mlp` that a test may damage."""
    directory = tmp_path / "copy"
    shutil.copytree(exported_mlp, directory)
    return directory


def _rewrite_metadata(directory, **changes):
    file = directory / export.METADATA_FILE
    metadata = json.loads(file.read_text())
    metadata.update(changes)
    file.write_text(json.dumps(metadata))


# Round trip.


def test_export_writes_three_entries(tmp_path):
    _export(_make_controller("linear"), tmp_path / "out")

    assert (tmp_path / "out" / "saved_model" / "saved_model.pb").is_file()
    assert (tmp_path / "out" / "controller.keras").is_file()
    assert (tmp_path / "out" / "metadata.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_round_trip_probabilities_match(kind, tmp_path):
    controller = _make_controller(kind)
    _export(controller, tmp_path / kind)
    loaded = export.load_controller(tmp_path / kind)

    for batch_size in (1, 7, 33):
        features = _features(batch_size, seed=batch_size)
        original = controller.probabilities(features).numpy()
        served = loaded.probabilities(features).numpy()
        signature = loaded.serving.signatures["serve"](
            features=tf.constant(features)
        )["probabilities"].numpy()
        reloaded = loaded.controller.probabilities(features).numpy()

        assert served.shape == (batch_size, len(ACTION_NAMES))
        np.testing.assert_array_equal(reloaded, original)
        # The SavedModel runs a grappler-optimized graph, which may differ
        # from eager execution in the last float32 bit.
        np.testing.assert_allclose(served, original, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(signature, original, rtol=1e-6, atol=1e-7)
    assert not np.allclose(original, 0.5)


def test_probabilities_accept_float64_and_lists(exported_mlp):
    loaded = export.load_controller(exported_mlp)
    features = _features(3)

    from_float64 = loaded.probabilities(features.astype("float64")).numpy()
    from_list = loaded.probabilities(features.tolist()).numpy()
    expected = loaded.probabilities(features).numpy()

    np.testing.assert_array_equal(from_float64, expected)
    np.testing.assert_array_equal(from_list, expected)


def test_probabilities_reject_wrong_width(exported_mlp):
    loaded = export.load_controller(exported_mlp)

    with pytest.raises(ValueError, match=r"num_features=8.*shape \(3, 5\)"):
        loaded.probabilities(np.zeros((3, 5), "float32"))
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        loaded.probabilities(np.zeros((8,), "float32"))


def test_serving_honours_temperature(tmp_path):
    controller = _make_controller("mlp", temperature=0.25)
    _export(controller, tmp_path / "cold")
    loaded = export.load_controller(tmp_path / "cold")
    features = _features(9)
    logits = controller.logits(features).numpy()

    served = loaded.probabilities(features).numpy()

    np.testing.assert_allclose(
        served, _softmax(logits / 0.25), rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(served, _softmax(logits), rtol=1e-3)
    assert loaded.controller.temperature == 0.25


def test_reloaded_controller_is_trainable(exported_mlp):
    loaded = export.load_controller(exported_mlp)
    controller = loaded.controller
    features = tf.constant(_features(4))
    before = controller.probabilities(features).numpy()

    with tf.GradientTape() as tape:
        objective = -tf.reduce_mean(controller.probabilities(features)[:, 0])
    grads = tape.gradient(objective, controller.trainable_variables)
    keras.optimizers.SGD(0.5).apply(grads, controller.trainable_variables)
    after = controller.probabilities(features).numpy()

    assert isinstance(controller, MLPController)
    assert controller.trainable
    assert len(controller.trainable_variables) == 4
    assert all(g is not None for g in grads)
    assert after[:, 0].mean() > before[:, 0].mean()


def test_exported_controller_names_and_repr(exported_mlp):
    loaded = export.load_controller(exported_mlp)

    assert loaded.feature_names == FEATURE_NAMES
    assert loaded.action_names == ACTION_NAMES
    assert loaded.directory == exported_mlp
    assert "kind='mlp'" in repr(loaded)


# Metadata.


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_metadata_contents(kind, tmp_path):
    controller = _make_controller(kind, temperature=2.0)

    returned = _export(controller, tmp_path / kind, training=TRAINING)
    saved = json.loads((tmp_path / kind / "metadata.json").read_text())

    expected = {
        "format_version": 1,
        "library_version": autoloss_tf.__version__,
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
        "controller_kind": kind,
        "num_features": NUM_FEATURES,
        "num_actions": 2,
        "feature_names": FEATURE_NAMES,
        "action_names": ACTION_NAMES,
        "temperature": 2.0,
        "feature_scale": [float(i + 1) for i in range(NUM_FEATURES)],
        "feature_mask": [1.0] * NUM_FEATURES,
        "training": TRAINING,
    }
    if kind == "mlp":
        expected["hidden_units"] = 5
    assert saved == expected
    assert returned == expected
    assert export.load_controller(tmp_path / kind).metadata == expected


def test_training_none_is_stored_as_empty_dict(tmp_path):
    _export(_make_controller("linear"), tmp_path / "out", training=None)

    assert export.load_controller(tmp_path / "out").metadata["training"] == {}


def test_training_numpy_values_are_stored(tmp_path):
    training = {"final_val_metric": np.float32(0.5), "rewards": np.arange(3)}

    _export(_make_controller("linear"), tmp_path / "out", training=training)
    loaded = export.load_controller(tmp_path / "out")

    assert loaded.metadata["training"] == {
        "final_val_metric": 0.5, "rewards": [0, 1, 2]
    }


# Export argument checks.


def test_export_rejects_wrong_name_counts(tmp_path):
    controller = _make_controller("linear")

    with pytest.raises(ValueError, match="num_features=8"):
        _export(controller, tmp_path / "a", feature_names=FEATURE_NAMES[:-1])
    with pytest.raises(ValueError, match="num_actions=2"):
        _export(controller, tmp_path / "b", action_names=["task"])
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "b").exists()


def test_export_rejects_duplicate_names(tmp_path):
    with pytest.raises(ValueError, match=r"duplicates \['task'\]"):
        _export(
            _make_controller("linear"), tmp_path / "out",
            action_names=["task", "task"],
        )


def test_export_rejects_non_controller(tmp_path):
    model = keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(2)])

    with pytest.raises(ValueError, match="type Sequential"):
        _export(model, tmp_path / "out")


def test_export_rejects_unserializable_training(tmp_path):
    with pytest.raises(ValueError, match="JSON-serializable"):
        _export(
            _make_controller("linear"), tmp_path / "out",
            training={"callback": object()},
        )
    with pytest.raises(ValueError, match="dict or None"):
        _export(
            _make_controller("linear"), tmp_path / "out", training=["seed"]
        )
    assert not (tmp_path / "out").exists()


# Overwrite.


def test_export_rejects_non_empty_directory(tmp_path):
    _export(_make_controller("linear", seed=0), tmp_path / "out")

    with pytest.raises(FileExistsError, match="overwrite=True"):
        _export(_make_controller("linear", seed=1), tmp_path / "out")


def test_export_into_empty_directory(tmp_path):
    (tmp_path / "out").mkdir()

    _export(_make_controller("linear"), tmp_path / "out")

    assert (tmp_path / "out" / "metadata.json").is_file()


def test_export_overwrite_replaces_controller(tmp_path):
    first = _make_controller("linear", seed=0)
    second = _make_controller("mlp", seed=1)
    features = _features(5)
    _export(first, tmp_path / "out")
    (tmp_path / "out" / "notes.txt").write_text("kept")

    _export(second, tmp_path / "out", overwrite=True)
    loaded = export.load_controller(tmp_path / "out")

    np.testing.assert_allclose(
        loaded.probabilities(features), second.probabilities(features),
        rtol=1e-6, atol=1e-7,
    )
    assert loaded.metadata["controller_kind"] == "mlp"
    assert (tmp_path / "out" / "notes.txt").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_overwrite_keeps_old_export(tmp_path, monkeypatch):
    first = _make_controller("linear", seed=0)
    features = _features(5)
    _export(first, tmp_path / "out")

    def fail_to_write(controller, path):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "_write_saved_model", fail_to_write)
    with pytest.raises(RuntimeError, match="disk full"):
        _export(_make_controller("mlp", seed=1), tmp_path / "out", overwrite=True)
    monkeypatch.undo()
    loaded = export.load_controller(tmp_path / "out")

    assert loaded.metadata["controller_kind"] == "linear"
    np.testing.assert_allclose(
        loaded.probabilities(features), first.probabilities(features),
        rtol=1e-6, atol=1e-7,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_export_rejects_file_path(tmp_path):
    (tmp_path / "out").write_text("not a directory")

    with pytest.raises(FileExistsError, match="which is a file"):
        _export(_make_controller("linear"), tmp_path / "out", overwrite=True)


# Name mismatches.


def _renamed(names, old, new):
    return [new if name == old else name for name in names]


def _swapped(names, first, second):
    result = list(names)
    i, j = result.index(first), result.index(second)
    result[i], result[j] = result[j], result[i]
    return result


FEATURE_MISMATCHES = {
    "renamed": (
        _renamed(FEATURE_NAMES, "loss/l1", "loss/l2"),
        [r"Missing \(saved, not received\): \['loss/l1'\]",
         r"Extra \(received, not saved\): \['loss/l2'\]"],
    ),
    "missing": (
        FEATURE_NAMES[:-1],
        [r"Missing \(saved, not received\): \['val_diff_ema'\]",
         r"Count difference: -1 \(7 received, 8 saved\)"],
    ),
    "extra": (
        FEATURE_NAMES + ["grad_norm/total"],
        [r"Extra \(received, not saved\): \['grad_norm/total'\]",
         r"Count difference: \+1 \(9 received, 8 saved\)"],
    ),
    "reordered": (
        _swapped(FEATURE_NAMES, "loss/task", "loss/l1"),
        [r"Reordered: \['loss/l1', 'loss/task'\]"],
    ),
}


@pytest.mark.parametrize("case", sorted(FEATURE_MISMATCHES))
def test_feature_mismatch_raises(case, exported_mlp):
    feature_names, patterns = FEATURE_MISMATCHES[case]

    with pytest.raises(ControllerMismatchError) as info:
        export.load_controller(exported_mlp, feature_names=feature_names)

    message = str(info.value)
    assert f"feature_names={feature_names}" in message
    assert f"trained on feature_names={FEATURE_NAMES}" in message
    for pattern in patterns:
        assert re.search(pattern, message), pattern
    assert "action_names" not in message.split("Received:")[1]
    assert "Train a controller for this model's features" in message
    assert str(exported_mlp) in message


def test_action_mismatch_raises(exported_mlp):
    with pytest.raises(ControllerMismatchError) as info:
        export.load_controller(exported_mlp, action_names=["task", "l2"])

    message = str(info.value)
    assert "action_names=['task', 'l2']" in message
    assert "Missing (saved, not received): ['l1']" in message
    assert "Extra (received, not saved): ['l2']" in message


def test_action_count_mismatch_raises(exported_mlp):
    with pytest.raises(ControllerMismatchError) as info:
        export.load_controller(
            exported_mlp, action_names=["task", "l1", "l2"]
        )

    message = str(info.value)
    assert "Count difference: +1 (3 received, 2 saved)" in message
    assert "Extra (received, not saved): ['l2']" in message


def test_mismatch_names_both_lists(exported_mlp):
    other_actions = ["task", "l2"]

    with pytest.raises(ControllerMismatchError) as info:
        export.load_controller(
            exported_mlp,
            feature_names=autoloss_tf.feature_names(other_actions),
            action_names=other_actions,
        )

    message = str(info.value)
    assert "Extra (received, not saved): ['grad_norm/l2', 'loss/l2']" in message
    assert "Extra (received, not saved): ['l2']" in message


def test_mismatch_error_is_value_error():
    assert issubclass(ControllerMismatchError, ValueError)
    assert issubclass(ControllerLoadError, ValueError)


def test_matching_names_load(exported_mlp):
    loaded = export.load_controller(
        exported_mlp, feature_names=FEATURE_NAMES,
        action_names=tuple(ACTION_NAMES),
    )

    assert loaded.controller.num_features == NUM_FEATURES


# Missing and corrupt files.


def test_load_missing_directory(tmp_path):
    with pytest.raises(ControllerLoadError, match="does not exist") as info:
        export.load_controller(tmp_path / "nowhere")

    assert str(tmp_path / "nowhere") in str(info.value)


def test_load_missing_metadata(exported_copy):
    (exported_copy / "metadata.json").unlink()

    with pytest.raises(ControllerLoadError, match="metadata.json.*not found"):
        export.load_controller(exported_copy)


def test_load_invalid_json(exported_copy):
    (exported_copy / "metadata.json").write_text("{not json")

    with pytest.raises(ControllerLoadError, match="readable JSON") as info:
        export.load_controller(exported_copy)

    assert "export_controller()" in str(info.value)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


def test_load_metadata_not_object(exported_copy):
    (exported_copy / "metadata.json").write_text("[1, 2]")

    with pytest.raises(ControllerLoadError, match="JSON object"):
        export.load_controller(exported_copy)


def test_load_metadata_missing_key(exported_copy):
    file = exported_copy / "metadata.json"
    metadata = json.loads(file.read_text())
    del metadata["feature_names"]
    file.write_text(json.dumps(metadata))

    with pytest.raises(ControllerLoadError, match=r"missing keys \['feature_names'\]"):
        export.load_controller(exported_copy)


def test_load_metadata_inconsistent_count(exported_copy):
    _rewrite_metadata(exported_copy, feature_names=FEATURE_NAMES[:3])

    with pytest.raises(ControllerLoadError, match="feature_names is not a list"):
        export.load_controller(exported_copy)


def test_load_unknown_format_version(exported_copy):
    _rewrite_metadata(exported_copy, format_version=2)

    with pytest.raises(ControllerLoadError, match="format_version=2"):
        export.load_controller(exported_copy)


def _current_version():
    major, minor = autoloss_tf.__version__.split(".")[:2]
    return int(major), int(minor)


def test_load_major_version_mismatch_raises(exported_copy):
    major, minor = _current_version()
    _rewrite_metadata(exported_copy, library_version=f"{major + 1}.{minor}.0")

    with pytest.raises(ControllerLoadError, match="same major version"):
        export.load_controller(exported_copy)


def test_load_minor_version_mismatch_warns(exported_copy):
    major, minor = _current_version()
    _rewrite_metadata(exported_copy, library_version=f"{major}.{minor + 1}.0")

    with pytest.warns(UserWarning, match="minor versions") as record:
        loaded = export.load_controller(exported_copy)

    assert record[0].filename == __file__
    assert loaded.controller.num_actions == 2


def test_load_schedule_version_warning_points_at_caller(exported_copy):
    major, minor = _current_version()
    _rewrite_metadata(exported_copy, library_version=f"{major}.{minor + 1}.0")

    with pytest.warns(UserWarning, match="minor versions") as record:
        export.load_schedule(exported_copy, FEATURE_NAMES, ACTION_NAMES)

    assert record[0].filename == __file__


def test_load_same_version_does_not_warn(exported_mlp):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        export.load_controller(exported_mlp)


def test_load_invalid_library_version(exported_copy):
    _rewrite_metadata(exported_copy, library_version="dev")

    with pytest.raises(ControllerLoadError, match="MAJOR.MINOR.PATCH"):
        export.load_controller(exported_copy)


def test_load_missing_keras_file(exported_copy):
    (exported_copy / "controller.keras").unlink()

    with pytest.raises(ControllerLoadError, match="controller.keras.*not found"):
        export.load_controller(exported_copy)


def test_load_garbage_keras_file(exported_copy):
    (exported_copy / "controller.keras").write_bytes(b"\x00garbage" * 10)

    with pytest.raises(ControllerLoadError, match="not a zip archive") as info:
        export.load_controller(exported_copy)

    assert str(exported_copy / "controller.keras") in str(info.value)


def test_load_truncated_keras_file(exported_copy):
    file = exported_copy / "controller.keras"
    file.write_bytes(file.read_bytes()[:100])

    with pytest.raises(ControllerLoadError, match="not a zip archive"):
        export.load_controller(exported_copy)


def test_load_keras_file_with_corrupt_weights(exported_copy):
    file = exported_copy / "controller.keras"
    with zipfile.ZipFile(file) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(file, "w") as archive:
        for name, content in entries.items():
            if name == "model.weights.h5":
                content = b"garbage"
            archive.writestr(name, content)

    with pytest.raises(ControllerLoadError, match="readable Keras archive") as info:
        export.load_controller(exported_copy)

    assert isinstance(info.value.__cause__, OSError)


def test_load_keras_file_with_other_sizes(exported_copy, tmp_path):
    other = LinearController(3, 2)
    other.save(tmp_path / "other.keras")
    shutil.copy(tmp_path / "other.keras", exported_copy / "controller.keras")

    with pytest.raises(ControllerLoadError, match="must match metadata.json"):
        export.load_controller(exported_copy)


def test_load_missing_saved_model(exported_copy):
    shutil.rmtree(exported_copy / "saved_model")

    with pytest.raises(ControllerLoadError, match="saved_model.*not found"):
        export.load_controller(exported_copy)


def test_load_corrupt_saved_model(exported_copy):
    (exported_copy / "saved_model" / "saved_model.pb").write_bytes(b"garbage")

    with pytest.raises(ControllerLoadError, match="SavedModel.*failed to load"):
        export.load_controller(exported_copy)


def test_load_saved_model_without_variables(exported_copy):
    shutil.rmtree(exported_copy / "saved_model" / "variables")

    with pytest.raises(ControllerLoadError, match="failed to load"):
        export.load_controller(exported_copy)


# Schedules and models.


class _TwoActionRegressor(autoloss_tf.ScheduledModel):
    """Linear regression with a task action and an L1 action on one layer."""

    def __init__(self, action_names=ACTION_NAMES, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(1, kernel_initializer="ones")
        self.dense.build((None, 4))
        self.built = True
        task_name, regularizer_name = action_names
        self.add_action(task_name, self.task_loss)
        self.add_action(regularizer_name, self.l1_loss)

    def call(self, x):
        return self.dense(x)[:, 0]

    def task_loss(self, data):
        x, y = data
        return keras.ops.mean((self(x) - y) ** 2)

    def l1_loss(self, data):
        del data
        return 0.1 * keras.ops.sum(keras.ops.abs(self.dense.kernel))


def _regression_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = (x @ np.array([1.0, 0.0, -2.0, 0.0], "float32")).astype("float32")
    return x, y


def test_loaded_schedule_drives_fit(exported_mlp):
    schedule = export.load_schedule(
        exported_mlp, FEATURE_NAMES, ACTION_NAMES, seed=3
    )
    model = _TwoActionRegressor()
    model.compile(optimizer=keras.optimizers.SGD(0.01), schedule=schedule)
    controller_weights = [w.copy() for w in schedule.controller.get_weights()]
    x, y = _regression_data()

    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)

    assert isinstance(schedule, autoloss_tf.LearnedSchedule)
    assert schedule.seed == 3
    assert schedule.decoding == "sample"
    assert len(history.history["loss"]) == 2
    assert np.all(np.isfinite(history.history["loss"]))
    assert set(history.history) >= {"action", "p_task", "p_l1"}
    assert int(model.training_state.step.numpy()) == 8
    assert not np.allclose(model.dense.kernel.numpy(), 1.0)
    for before, after in zip(controller_weights, schedule.controller.get_weights()):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("decoding", ["greedy", "dither"])
def test_load_schedule_decoding(exported_mlp, decoding):
    schedule = export.load_schedule(
        exported_mlp, FEATURE_NAMES, ACTION_NAMES, decoding=decoding
    )

    assert schedule.decoding == decoding


def test_load_schedule_rejects_other_names(exported_mlp):
    with pytest.raises(ControllerMismatchError, match="l2"):
        export.load_schedule(
            exported_mlp, autoloss_tf.feature_names(["task", "l2"]),
            ["task", "l2"],
        )


def test_check_controller_for_matching_model(exported_mlp):
    loaded = export.load_controller(exported_mlp)
    model = _TwoActionRegressor()
    model.compile(optimizer="sgd")

    export.check_controller_for_model(loaded, model)


def test_check_controller_for_other_actions(exported_mlp):
    loaded = export.load_controller(exported_mlp)
    model = _TwoActionRegressor(action_names=["task", "l2"])
    model.compile(optimizer="sgd")

    with pytest.raises(ControllerMismatchError) as info:
        export.check_controller_for_model(loaded, model)

    message = str(info.value)
    assert "Extra (received, not saved): ['l2']" in message
    assert "Extra (received, not saved): ['grad_norm/l2', 'loss/l2']" in message


def test_check_controller_for_uncompiled_model(exported_mlp):
    loaded = export.load_controller(exported_mlp)
    model = _TwoActionRegressor()

    with pytest.raises(ValueError, match="must be compiled"):
        export.check_controller_for_model(loaded, model)
