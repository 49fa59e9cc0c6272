"""End-to-end tests of the `autoloss` command on tiny settings."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from autoloss_tf import cli
from autoloss_tf import export
from autoloss_tf import schedules

TINY = ["--max-steps", "40"]


def _train(out, *extra):
    argv = [
        "train-controller", "classification", "--episodes", "4",
        "--episodes-per-batch", "2", "--seed", "3", "--out", str(out),
        *TINY, *extra,
    ]
    assert cli.main(argv) == 0
    return argv


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("controller")
    argv = _train(out)
    return out, argv


def test_train_controller_exports_metadata(trained):
    out, argv = trained
    metadata = json.loads((out / "metadata.json").read_text())
    info = metadata["training"]
    assert info["command"] == "autoloss " + " ".join(argv)
    assert info["seed"] == 3
    assert info["episodes"] == 4
    assert info["task_model_batches"] > 0
    assert metadata["action_names"] == ["task", "l1"]
    assert (out / "saved_model").is_dir()
    history = json.loads((out / "training" / "history.json").read_text())
    assert len(history["episodes"]) == 4


def test_rerun_reproduces_controller(trained, tmp_path):
    out, _ = trained
    _train(tmp_path / "again")
    first = keras.saving.load_model(out / "controller.keras")
    second = keras.saving.load_model(tmp_path / "again" / "controller.keras")
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_existing_checkpoint_needs_resume(trained, capsys):
    out, _ = trained
    argv = [
        "train-controller", "classification", "--episodes", "6",
        "--out", str(out), *TINY,
    ]
    assert cli.main(argv) == 2
    assert "--resume" in capsys.readouterr().err


def test_compare_writes_json_and_plot(trained, tmp_path, capsys):
    out, _ = trained
    result_file = tmp_path / "result.json"
    argv = [
        "compare", "classification", "--trials", "2", "--seed", "1",
        "--controller", str(out), "--json", str(result_file), *TINY,
    ]
    assert cli.main(argv) == 0
    results = json.loads(result_file.read_text())
    for key in ("task", "metric", "higher_is_better", "trials", "seed",
                "command", "methods"):
        assert key in results
    assert set(results["methods"]) == {
        "without_l1", "S1", "S2", "S3", "DGS", "AutoLoss"
    }
    for entry in results["methods"].values():
        assert len(entry["values"]) == 2
        assert entry["mean"] == pytest.approx(np.mean(entry["values"]))
    assert len(results["methods"]["DGS"]["lambdas"]) == 2
    assert "AutoLoss" in capsys.readouterr().out
    assert cli.main(["plot", str(result_file)]) == 0
    assert (tmp_path / "result.png").stat().st_size > 1000


def test_plot_controller_history(trained, tmp_path):
    out, _ = trained
    png = tmp_path / "history.png"
    history = out / "training" / "history.json"
    assert cli.main(["plot", str(history), "--out", str(png)]) == 0
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("decoding", ["sample", "greedy", "dither"])
def test_guide_prints_test_metric(trained, capsys, decoding):
    out, _ = trained
    argv = ["guide", "classification", "--controller", str(out), *TINY,
            "--decoding", decoding]
    assert cli.main(argv) == 0
    assert "test error" in capsys.readouterr().out


def test_missing_controller_is_usage_error(tmp_path, capsys):
    argv = ["guide", "regression", "--controller", str(tmp_path / "none")]
    assert cli.main(argv) == 2
    assert "not found" in capsys.readouterr().err


def test_mismatched_controller_is_usage_error(trained, tmp_path, capsys):
    out, _ = trained
    loaded = export.load_controller(out)
    export.export_controller(
        loaded.controller, tmp_path / "renamed",
        feature_names=[f"f{i}" for i in range(8)],
        action_names=["task", "l1"],
    )
    argv = ["guide", "regression", "--controller", str(tmp_path / "renamed"),
            *TINY]
    assert cli.main(argv) == 2
    assert "feature" in capsys.readouterr().err


def test_controller_of_other_task_rejected(trained, capsys):
    out, _ = trained
    argv = ["guide", "regression", "--controller", str(out), *TINY]
    assert cli.main(argv) == 2
    assert "trained for classification" in capsys.readouterr().err


def test_resume_with_other_settings_rejected(trained, capsys):
    out, _ = trained
    argv = [
        "train-controller", "classification", "--episodes", "6",
        "--episodes-per-batch", "2", "--seed", "4", "--out", str(out),
        "--resume", *TINY,
    ]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert "'seed': (3, 4)" in error


def test_bad_training_arguments_rejected(tmp_path, capsys):
    file_path = tmp_path / "file"
    file_path.write_text("x")
    cases = [
        (["--episodes-per-batch", "0", "--out", str(tmp_path / "a")],
         "--episodes-per-batch"),
        (["--learning-rate", "-1", "--out", str(tmp_path / "b")],
         "--learning-rate"),
        (["--out", str(file_path)], "--out must be a directory"),
    ]
    for extra, message in cases:
        argv = ["train-controller", "classification", *TINY, *extra]
        assert cli.main(argv) == 2
        assert message in capsys.readouterr().err


def test_killed_training_resumes_without_loss(tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "autoloss_tf.cli", "train-controller",
        "classification", "--episodes", "8", "--episodes-per-batch", "2",
        "--seed", "5", "--out", str(out), "--max-steps", "150",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    history_file = out / "training" / "history.json"
    deadline = time.time() + 240
    finished_before_kill = []
    while time.time() < deadline and process.poll() is None:
        if history_file.exists():
            finished_before_kill = json.loads(history_file.read_text())["episodes"]
            if len(finished_before_kill) >= 2:
                break
        time.sleep(0.2)
    assert process.poll() is None, "training ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished_before_kill = json.loads(history_file.read_text())["episodes"]
    assert 2 <= len(finished_before_kill) < 8

    resumed = subprocess.run(command + ["--resume"], capture_output=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    history = json.loads(history_file.read_text())["episodes"]
    assert [entry["episode"] for entry in history] == list(range(8))
    assert history[:len(finished_before_kill)] == finished_before_kill


@pytest.mark.parametrize("content, out, message", [
    (5, None, "contains a JSON int, not an object"),
    ("text", None, "contains a JSON str, not an object"),
    ({"task": "gan", "methods": {}}, None,
     "incomplete or malformed for its kind of result (KeyError: 'trials')"),
    ({"methods": {}}, "plot.txt", "--out must be a path ending in .png"),
])
def test_plot_rejects_bad_input(content, out, message, tmp_path, capsys):
    path = tmp_path / "result.json"
    path.write_text(json.dumps(content))
    argv = ["plot", str(path)]
    if out is not None:
        argv += ["--out", str(tmp_path / out)]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_plot_rejects_directories(tmp_path, capsys):
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"methods": {}}))
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "Received: " + str(tmp_path) + ", a directory" in (
        capsys.readouterr().err)
    assert cli.main(["plot", str(path), "--out", str(tmp_path)]) == 2
    assert "--out must be a path ending in .png" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["guide", "compare"])
def test_decoding_choices_match_schedules(command):
    parser = cli.build_parser()
    option = next(action for action in parser.subcommands[command]._actions
                  if action.dest == "decoding")
    assert tuple(option.choices) == schedules.DECODINGS
