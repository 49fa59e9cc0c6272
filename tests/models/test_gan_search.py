"""Tests of the run-level GAN controller search (antithetic perturbations)."""

import json
import multiprocessing
import pathlib

import numpy as np
import pytest

from autoloss_models import gan_experiments as ge
from autoloss_models import gan_search as gs
from autoloss_tf import cli

from test_gan_experiments import TINY
from test_gan_experiments import _tiny_settings
from test_gan_experiments import classifier  # noqa: F401 (fixture)
from test_gan_experiments import images  # noqa: F401 (fixture)
from test_gan_experiments import tiny_cli  # noqa: F401 (fixture)

TESTS_DIR = str(pathlib.Path(__file__).resolve().parent)
NMT_CONTROLLER = str(
    pathlib.Path(__file__).resolve().parents[2] / "saved_controllers" / "nmt")


class _Interrupted(Exception):
    pass


def test_search_step_hand_computed():
    center = np.array([1.0, -1.0, 0.5])
    noises = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
    plus, minus = [5.0, 4.0], [3.0, 4.0]
    scales = np.array([0.1, 0.2, 0.5])
    # Rewards 5, 4, 3, 4: mean 4, std sqrt(0.5).
    new, std = gs.search_step(center, noises, plus, minus, scales, 0.8)
    assert std == pytest.approx(np.sqrt(0.5))
    # Differences (2, 0): direction = 2 * noise_0 = (2, 0, 4).
    step = 0.8 / (2 * np.sqrt(0.5)) * scales * np.array([2.0, 0.0, 4.0])
    np.testing.assert_allclose(new, center + step)


def test_search_step_keeps_center_for_equal_rewards():
    center = np.array([0.3, 0.7])
    new, std = gs.search_step(center, [[1.0, 1.0]], [2.0], [2.0],
                              np.ones(2), 1.0)
    assert std == 0.0
    np.testing.assert_array_equal(new, center)


def test_parameters_set_the_logit_difference():
    controller = ge.make_controller()
    size = controller.num_features + 1
    parameters = np.linspace(-1.0, 1.0, size)
    gs.set_controller_parameters(controller, parameters)
    np.testing.assert_allclose(gs.controller_parameters(controller),
                               parameters, rtol=1e-6, atol=1e-7)
    features = np.arange(controller.num_features, dtype="float32")[None]
    logits = controller.logits(features).numpy()[0]
    scaled = features[0] / np.asarray(ge.FEATURE_SCALE)
    generator = ge.ACTION_NAMES.index("generator")
    difference = logits[generator] - logits[1 - generator]
    assert difference == pytest.approx(
        scaled @ parameters[:-1] + parameters[-1], rel=1e-5)
    with pytest.raises(ValueError, match="12 numbers"):
        gs.set_controller_parameters(controller, np.zeros(3))


def test_members_are_antithetic_pairs_with_one_seed(images, classifier,
                                                    tmp_path):
    search = gs.SearchSettings(pairs=2)
    trainer = gs.ControllerSearch(_tiny_settings(), search, tmp_path, images,
                                  classifier, seed=7)
    trainer.center = np.full(len(trainer.center), 0.5)
    members = trainer.members()
    assert [m["key"] for m in members] == ["0+", "0-", "1+", "1-"]
    assert [m["seed"] for m in members] == [7, 7, 8, 8]
    for plus, minus in (members[0:2], members[2:4]):
        np.testing.assert_allclose(
            (plus["parameters"] + minus["parameters"]) / 2, trainer.center)
        np.testing.assert_allclose(
            plus["parameters"] - trainer.center,
            trainer.scales * plus["noise"])
    assert trainer.scales[-1] == search.bias_sigma
    assert trainer.scales[0] == search.weight_sigma


def test_bias_only_search_keeps_the_weights(images, classifier, tmp_path,
                                           monkeypatch):
    def reward(settings, parameters, seed, images, classifier,
               progress=None):
        return {"final": float(parameters[-1] + parameters[0]), "curve": [],
                "p_generator": 0.5}

    monkeypatch.setattr(gs, "evaluate_member", reward)
    search = gs.SearchSettings(pairs=2, weight_sigma=0.0)
    trainer = gs.ControllerSearch(_tiny_settings(), search, tmp_path, images,
                                  classifier)
    trainer.center = np.full(len(trainer.center), 0.25)
    trainer.train(2)
    np.testing.assert_array_equal(trainer.center[:-1], 0.25)
    assert trainer.center[-1] > 0.25
    first = trainer.history[0]
    assert first["step_norm"] == pytest.approx(
        abs(first["center"][-1] - first["center_before"][-1])
        / search.bias_sigma)


def test_search_climbs_a_known_reward(images, classifier, tmp_path,
                                      monkeypatch):
    """With a reward that peaks at bias 2, the center's bias moves there."""

    def reward(settings, parameters, seed, images, classifier,
               progress=None):
        return {"final": -(parameters[-1] - 2.0) ** 2, "curve": [],
                "p_generator": 0.5}

    monkeypatch.setattr(gs, "evaluate_member", reward)
    search = gs.SearchSettings(pairs=3, step_size=0.5)
    trainer = gs.ControllerSearch(_tiny_settings(), search, tmp_path, images,
                                  classifier)
    trainer.train(12)
    biases = [entry["center"][-1] for entry in trainer.history]
    assert biases[0] > 0
    assert abs(biases[-1] - 2.0) < 0.5
    assert len(trainer.history) == 12


def test_search_resumes_identically(images, classifier, tmp_path):
    settings = _tiny_settings(total_updates=8)
    search = gs.SearchSettings(pairs=1, bias_sigma=1.0)
    whole = gs.ControllerSearch(settings, search, tmp_path / "whole",
                                images, classifier, seed=3)
    whole.train(2)

    first = gs.ControllerSearch(settings, search, tmp_path / "cut", images,
                                classifier, seed=3)

    def stop_after_third(result):
        if first.runs_done == 3:
            raise _Interrupted

    with pytest.raises(_Interrupted):
        first.train(2, progress=stop_after_third)

    second = gs.ControllerSearch(settings, search, tmp_path / "cut", images,
                                 classifier, seed=3)
    assert second.resume() == 3
    assert second.generation == 1
    assert list(second.results) == ["0+"]
    second.train(2)
    np.testing.assert_array_equal(second.center, whole.center)
    assert second.history == json.loads(json.dumps(whole.history))
    first_generation = whole.history[0]
    assert first_generation["seeds"] == [3]
    assert len(first_generation["curves"]["0+"]) == 3
    assert first_generation["center"] != first_generation["center_before"]
    saved = json.loads((tmp_path / "cut" / gs.HISTORY_FILE).read_text())
    assert saved["estimator"] == "search"
    assert saved["generation"] == 2


def test_resume_reports_other_settings(images, classifier, tmp_path):
    settings = _tiny_settings(total_updates=4)
    search = gs.SearchSettings(pairs=1)
    gs.ControllerSearch(settings, search, tmp_path, images, classifier,
                        seed=0).train(1)
    other = gs.ControllerSearch(settings, gs.SearchSettings(pairs=2),
                                tmp_path, images, classifier, seed=0)
    other.resume()
    assert other.saved_settings["search_pairs"] == 1
    assert other.generation == 0


def test_worker_processes_train_a_generation(tmp_path):
    """Two spawned workers load the real MNIST images and the shipped
    classifier themselves and record every run of the generation."""
    settings = ge.settings_for("quick", **dict(
        TINY, image_shape=(28, 28, 1), total_updates=8))
    search = gs.SearchSettings(pairs=1)
    trainer = gs.ControllerSearch(settings, search, tmp_path, None, None,
                                  seed=5, workers=2)
    trainer.train(1)
    entry = trainer.history[0]
    assert entry["seeds"] == [5]
    assert sorted(entry["curves"]) == ["0+", "0-"]
    assert all(len(curve) == 3 for curve in entry["curves"].values())
    assert all(1.0 <= r <= 10.0 for r in
               entry["rewards_plus"] + entry["rewards_minus"])

    # An interrupt after the first finished run stops the other worker at
    # once and keeps the finished run in the checkpoint.
    cut = gs.ControllerSearch(settings, gs.SearchSettings(pairs=2),
                              tmp_path / "cut", None, None, seed=5,
                              workers=2)

    def interrupt(result):
        raise _Interrupted

    with pytest.raises(_Interrupted):
        cut.train(1, progress=interrupt)
    assert multiprocessing.active_children() == []
    resumed = gs.ControllerSearch(settings, gs.SearchSettings(pairs=2),
                                  tmp_path / "cut", None, None, seed=5)
    assert resumed.resume() == 1


def test_workers_must_be_positive(images, classifier, tmp_path):
    with pytest.raises(ValueError, match="workers=0"):
        gs.ControllerSearch(_tiny_settings(), gs.SearchSettings(), tmp_path,
                            images, classifier, workers=0)
    with pytest.raises(ValueError, match="pairs=0"):
        gs.SearchSettings(pairs=0)


# Command line.

@pytest.mark.parametrize("argv, message", [
    (["train-controller", "gan", "--out", "x", "--pairs", "2"],
     "--pairs applies to --estimator search only"),
    (["train-controller", "regression", "--out", "x", "--estimator",
      "search"], "--estimator applies to the gan task only"),
    (["train-controller", "nmt", "--out", "x", "--pairs", "2"],
     "--pairs applies to the gan task only"),
    (["train-controller", "gan", "--out", "x", "--estimator", "search",
      "--runs", "4"], "positive multiple of 2 * pairs = 6"),
    (["train-controller", "gan", "--out", "x", "--estimator", "search",
      "--pairs", "0"],
     "--estimator search: `pairs` must be a positive integer"),
    (["train-controller", "gan", "--out", "x", "--estimator", "search",
      "--weight-sigma", "-1"],
     "`weight_sigma` must be >= 0 (0 searches the bias only)"),
    (["train-controller", "gan", "--out", "x", "--bias-sigma", "1"],
     "--bias-sigma applies to --estimator search only"),
    (["train-controller", "gan", "--out", "x", "--estimator", "search",
      "--start-controller", NMT_CONTROLLER],
     "was trained for nmt, but the task is gan; their features and actions "
     "differ. Pass --start-controller with a controller trained with"),
    (["train-controller", "gan", "--out", "x", "--estimator", "search",
      "--start-controller", TESTS_DIR],
     f"{TESTS_DIR} contains no metadata.json, so it is not an exported "
     "controller. Pass --start-controller"),
    (["train-controller", "gan", "--out", "x", "--estimator", "search",
      "--start-controller", "no/such/dir"],
     "Controller directory not found: no/such/dir. Pass --start-controller"),
    (["compare", "regression", "--workers", "2"],
     "--workers applies to the gan task only"),
    (["compare", "gan", "--workers", "0"], "--workers must be >= 1"),
    (["train-controller", "gan", "--out", "x", "--workers", "2",
      "--pairs", "2"],
     "--pairs, --workers apply to --estimator search only. Received them"),
    (["train-controller", "gan", "--out", "x", "--workers", "2"],
     "--workers applies to --estimator search only. Received it"),
])
def test_search_cli_argument_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_search_cli_end_to_end(tiny_cli, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "controller"
    argv = ["train-controller", "gan", "--estimator", "search", "--pairs",
            "1", "--runs", "2", "--seed", "100", "--out", str(out)]
    assert cli.main(argv) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    training = metadata["training"]
    assert training["estimator"] == "search"
    assert training["runs"] == 2
    assert training["generations"] == 1
    assert training["gan_seeds"] == [100, 100]
    history = json.loads(
        (out / "training" / gs.HISTORY_FILE).read_text())
    assert training["final_inception_score"] == pytest.approx(
        history["history"][0]["mean_final_inception_score"])
    # The exported controller has the search's center.
    loaded = ge.make_controller()
    from autoloss_tf import export

    exported = export.load_controller(str(out)).controller
    loaded.set_weights(exported.get_weights())
    np.testing.assert_allclose(gs.controller_parameters(loaded),
                               history["center"], rtol=1e-6, atol=1e-7)

    assert cli.main(argv + ["--resume", "--pairs", "2", "--runs", "4"]) == 2
    assert "'search_pairs': (1, 2)" in capsys.readouterr().err
    # Two more runs continue from the first generation's center.
    assert cli.main(argv[:7] + ["4"] + argv[8:] + ["--resume"]) == 0
    history = json.loads(
        (out / "training" / gs.HISTORY_FILE).read_text())
    assert history["history"][1]["center_before"] == \
        history["history"][0]["center"]
    assert cli.main(["plot", str(out / "training" / gs.HISTORY_FILE),
                     "--out", str(tmp_path / "search.png")]) == 0
    assert (tmp_path / "search.png").stat().st_size > 1000

    # A search can start from an exported linear controller.
    loaded.set_weights(export.load_controller(str(out)).controller.get_weights())
    second = tmp_path / "second"
    assert cli.main(argv[:-1] + [str(second), "--start-controller",
                                 str(out)]) == 0
    history = json.loads(
        (second / "training" / gs.HISTORY_FILE).read_text())
    np.testing.assert_allclose(history["history"][0]["center_before"],
                               gs.controller_parameters(loaded),
                               rtol=1e-6, atol=1e-7)


def _search_argv(out, *extra):
    return ["train-controller", "gan", "--estimator", "search", "--pairs",
            "1", "--runs", "2", "--out", str(out), *extra]


def test_search_rejects_an_out_with_another_export(tiny_cli, tmp_path,
                                                   capsys):  # noqa: F811
    online = tmp_path / "online"
    assert cli.main(["train-controller", "gan", "--out", str(online),
                     "--runs", "1"]) == 0
    before = (online / "metadata.json").read_text()
    assert cli.main(_search_argv(online)) == 2
    assert "contains the checkpoint checkpoint.npz of another estimator" in (
        capsys.readouterr().err)
    assert cli.main(_search_argv(online, "--resume")) == 2
    capsys.readouterr()

    exported_only = tmp_path / "exported"
    exported_only.mkdir()
    (exported_only / "metadata.json").write_text(before)
    assert cli.main(_search_argv(exported_only)) == 2
    assert "already contains an exported controller" in (
        capsys.readouterr().err)
    assert (online / "metadata.json").read_text() == before


def test_search_rejects_an_out_under_a_file(tiny_cli, tmp_path,
                                            capsys):  # noqa: F811
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert cli.main(_search_argv(blocker / "sub")) == 2
    assert "--out: cannot write to" in capsys.readouterr().err
    assert cli.main(["compare", "gan", "--trials", "1", "--json",
                     str(blocker / "x.json")]) == 2
    assert "--json: cannot write to" in capsys.readouterr().err


def test_search_resume_keeps_pairs_and_runs(tiny_cli, tmp_path,
                                            capsys):  # noqa: F811
    out = tmp_path / "search"
    assert cli.main(_search_argv(out)) == 0
    # Without --pairs, a resume takes the checkpoint's 1 pair, so 4 runs
    # are two generations.
    argv = ["train-controller", "gan", "--estimator", "search", "--runs",
            "4", "--out", str(out), "--resume"]
    assert cli.main(argv) == 0
    history = json.loads((out / "training" / gs.HISTORY_FILE).read_text())
    assert history["generation"] == 2
    assert "Trained 4 GAN runs (2 generations of 1 pair)" in (
        capsys.readouterr().out)
    assert cli.main(argv[:5] + ["2"] + argv[6:]) == 2
    assert "has 4 runs done, more than --runs 2" in capsys.readouterr().err


def test_plot_rejects_a_binary_checkpoint(tmp_path, capsys):
    path = tmp_path / "search_checkpoint.npz"
    np.savez(path, center=np.zeros(3))
    assert cli.main(["plot", str(path)]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
