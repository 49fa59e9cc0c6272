"""Tests of the GAN transfer experiments and the `autoloss transfer` command.

The architecture tests train on 8x8 images with a fake classifier, so a GAN
run takes a few updates. The gan-data test uses the real Fashion-MNIST
images, the shipped Fashion-MNIST classifier and the shipped MNIST GAN
controller, with a tiny DCGAN.
"""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from autoloss_models import dcgan
from autoloss_models import gan_experiments as ge
from autoloss_models import gan_transfer as gt
from autoloss_tf import cli
from autoloss_tf import export

TINY = dict(
    total_updates=8, eval_interval=4, segment_length=4, eval_samples=32,
    batch_size=8, latent_dim=4, kernel_size=3, base_filters=4,
    final_evaluations=2, collapse_limit=500, generator_ratios=(),
    discriminator_ratios=(),
)
SHIPPED_CONTROLLER = cli.DEFAULT_CONTROLLERS + "/gan_mnist"
COMPARE_GAN_RESULT = (Path(cli.DEFAULT_CONTROLLERS).parent / "benchmarks"
                      / "results" / "gan_mnist.json")


def _tiny_settings(**overrides):
    return ge.settings_for("quick", **dict(TINY, image_shape=(8, 8, 1),
                                           **overrides))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, size=(48, 8, 8, 1)).astype("float32")


@pytest.fixture(scope="module")
def classifier():
    """A fake IS classifier: a seeded linear softmax over 8x8 pixels."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Flatten(),
        keras.layers.Dense(
            10, activation="softmax",
            kernel_initializer=keras.initializers.RandomNormal(
                stddev=3.0, seed=1),
        ),
    ])


@pytest.fixture(scope="module")
def controller():
    return export.load_controller(SHIPPED_CONTROLLER).controller


# Architecture sampling.

def test_sampling_is_seeded():
    first = gt.sample_architectures(20, seed=3)
    assert gt.sample_architectures(20, seed=3) == first
    assert gt.sample_architectures(20, seed=4) != first
    # Sample i depends only on (seed, i).
    assert gt.sample_architectures(5, seed=3) == first[:5]


def test_sampling_covers_space_without_repeats():
    space = gt.all_architectures()
    assert len(space) == 24
    assert len(set(space)) == 24
    sampled = gt.sample_architectures(24, seed=0)
    assert set(sampled) == set(space)
    for architecture in sampled:
        assert architecture.base_filters in (32, 64, 128)
        assert architecture.latent_dim in (64, 128)
        assert architecture.batch_norm in (True, False)
        assert architecture.activation in ("relu", "leaky_relu")


def test_sampling_reaches_every_option():
    sampled = gt.sample_architectures(20, seed=0)
    assert {a.base_filters for a in sampled} == {32, 64, 128}
    assert {a.latent_dim for a in sampled} == {64, 128}
    assert {a.batch_norm for a in sampled} == {True, False}
    assert {a.activation for a in sampled} == {"relu", "leaky_relu"}


@pytest.mark.parametrize("count", [0, 25, -1, 2.0, True])
def test_sampling_rejects_bad_count(count):
    with pytest.raises(ValueError, match=r"\[1, 24\]"):
        gt.sample_architectures(count, seed=0)


def test_sampling_rejects_negative_seed():
    with pytest.raises(ValueError, match="seed=-1"):
        gt.sample_architectures(2, seed=-1)


@pytest.mark.parametrize("values, name", [
    ((48, 64, True, "relu"), "base_filters"),
    ((32, 100, True, "relu"), "latent_dim"),
    ((32, 64, 1, "relu"), "batch_norm"),
    ((32, 64, True, "tanh"), "activation"),
])
def test_architecture_rejects_value_outside_space(values, name):
    with pytest.raises(ValueError, match=f"`{name}` must be one of"):
        gt.Architecture(*values)


@pytest.mark.parametrize("architecture", [
    gt.Architecture(32, 64, False, "leaky_relu"),
    gt.Architecture(128, 128, True, "relu"),
], ids=lambda a: a.label)
def test_architecture_builds_and_steps(architecture, images):
    settings = architecture.apply(_tiny_settings())
    gan = ge.make_gan(settings, seed=0,
                      model_options=architecture.model_options())
    assert gan.base_filters == architecture.base_filters
    assert gan.latent_dim == architecture.latent_dim
    assert gan.generator_activation == architecture.activation
    assert gan.discriminator_activation == architecture.activation
    layers = gan.generator.chain + gan.discriminator.chain
    norms = [layer for layer in layers
             if isinstance(layer, dcgan.BatchNormalizationWithOptionalUpdate)]
    assert len(norms) == (3 if architecture.batch_norm else 0)
    activation_type = (keras.layers.LeakyReLU
                       if architecture.activation == "leaky_relu"
                       else keras.layers.ReLU)
    activations = [layer for layer in layers
                   if isinstance(layer, (keras.layers.ReLU,
                                         keras.layers.LeakyReLU))]
    assert len(activations) == 4
    assert all(type(layer) is activation_type for layer in activations)
    assert gan.discriminator.chain[0].filters == architecture.base_filters

    generator_before = [v.numpy().copy()
                        for v in gan.generator.trainable_variables]
    discriminator_before = [v.numpy().copy()
                            for v in gan.discriminator.trainable_variables]
    gan.compile(schedule=ge.fixed_ratio_schedule("1:1"), total_steps=1)
    gan.fit(images[:8], batch_size=8, epochs=1, verbose=0)
    # 1:1 starts with a discriminator update.
    assert int(gan.discriminator_optimizer.iterations) == 1
    assert int(gan.generator_optimizer.iterations) == 0
    for before, variable in zip(generator_before,
                                gan.generator.trainable_variables):
        np.testing.assert_array_equal(before, variable.numpy())
    changed = [not np.array_equal(before, variable.numpy())
               for before, variable in zip(
                   discriminator_before, gan.discriminator.trainable_variables)]
    assert all(changed)
    assert gan(np.zeros((2, architecture.latent_dim), "float32")).shape == (
        2, 8, 8, 1)


def test_make_gan_rejects_clashing_option():
    with pytest.raises(ValueError, match=r"\['latent_dim'\]"):
        ge.make_gan(_tiny_settings(), seed=0,
                    model_options={"latent_dim": 5})


# Summary.

def _entry(index, without, with_controller):
    return {"index": index, gt.WITHOUT: {"final": without},
            gt.WITH: {"final": with_controller}}


def test_summarize_pairs_hand_computed():
    entries = [_entry(0, 2.0, 3.0), _entry(1, 4.0, 3.5), _entry(2, 1.0, 1.0),
               _entry(3, 1.2, 1.1)]

    summary = gt.summarize_pairs(entries, fail_below=1.5)

    assert summary["differences"] == pytest.approx([1.0, -0.5, 0.0, -0.1])
    assert summary["helped"] == 1
    assert summary["hurt"] == 2
    assert summary["ties"] == 1
    assert summary["mean_difference"] == pytest.approx(0.1)
    assert summary["std_difference"] == pytest.approx(
        np.std([1.0, -0.5, 0.0, -0.1]))
    assert summary["mean_without"] == pytest.approx(2.05)
    assert summary["mean_with"] == pytest.approx(2.15)
    # Architectures 2 and 3 end below 1.5 with and without the controller.
    assert summary["failed"] == [2, 3]
    assert summary["compared_excluding_failed"] == 2
    assert summary["helped_excluding_failed"] == 1
    assert summary["mean_difference_excluding_failed"] == pytest.approx(0.25)


def test_summarize_pairs_without_threshold():
    summary = gt.summarize_pairs([_entry(0, 2.0, 3.0)])
    assert summary["fail_below"] is None
    assert "failed" not in summary


# Runs, checkpoint and resume.

ONE_ARCHITECTURE = [gt.Architecture(32, 64, True, "leaky_relu")]


def _runner(directory, images, classifier, controller, **overrides):
    arguments = dict(settings=_tiny_settings(), controller=controller,
                     images=images, classifier=classifier,
                     architectures=ONE_ARCHITECTURE, seed=5,
                     directory=str(directory),
                     identity={"controller": "shipped"})
    arguments.update(overrides)
    return gt.ArchitectureTransfer(**arguments)


def _without_seconds(entries):
    return [{key: ({k: v for k, v in value.items() if k != "seconds"}
                   if key in gt.METHODS else value)
             for key, value in entry.items()} for entry in entries]


def test_resume_rejects_changed_settings(images, classifier, controller,
                                         tmp_path):
    runner = _runner(tmp_path, images, classifier, controller)
    runner.save()
    changed = _runner(tmp_path, images, classifier, controller, seed=6)
    with pytest.raises(gt.TransferResumeError, match=r"'seed': \(5, 6\)"):
        changed.resume()
    other = _runner(tmp_path, images, classifier, controller,
                    identity={"controller": "retrained"})
    with pytest.raises(gt.TransferResumeError, match="retrained"):
        other.resume()
    architecture = _runner(
        tmp_path, images, classifier, controller,
        architectures=[gt.Architecture(64, 64, True, "leaky_relu")],
    )
    with pytest.raises(gt.TransferResumeError, match="architecture 0"):
        architecture.resume()


def test_smaller_n_keeps_later_entries(images, classifier, controller,
                                      tmp_path):
    two = gt.sample_architectures(2, seed=5)
    larger = _runner(tmp_path, images, classifier, controller,
                     architectures=two)
    larger.entries[0][gt.WITHOUT] = {"final": 1.5}
    larger.entries[1][gt.WITHOUT] = {"final": 1.25}
    larger.entries[1][gt.WITH] = {"final": 2.0}
    larger.save()

    smaller = _runner(tmp_path, images, classifier, controller,
                      architectures=two[:1])
    assert smaller.resume() == 1
    smaller.save()

    state = json.loads((tmp_path / gt.STATE_FILE).read_text())
    assert [entry["index"] for entry in state["entries"]] == [0, 1]
    assert state["entries"][1][gt.WITH] == {"final": 2.0}
    assert state["entries"][1][gt.WITHOUT] == {"final": 1.25}


def test_controller_fingerprint_tracks_weights(controller):
    fingerprint = gt.controller_fingerprint(controller)
    assert fingerprint == gt.controller_fingerprint(controller)
    copy = ge.make_controller()
    assert gt.controller_fingerprint(copy) != fingerprint


# Command line.

@pytest.fixture
def tiny_architectures_cli(monkeypatch, images, classifier):
    """Make `autoloss transfer gan-architectures` use 8x8 images."""
    tiny = dict(ge._MODE_SETTINGS["quick"], **TINY)
    monkeypatch.setitem(ge._MODE_SETTINGS, "quick", tiny)
    monkeypatch.setitem(ge._COMMON, "image_shape", (8, 8, 1))
    from autoloss_tf import gan_commands

    monkeypatch.setattr(gan_commands, "load_data",
                        lambda dataset="mnist": (images, classifier))


def test_architectures_cli_end_to_end(tiny_architectures_cli, tmp_path,
                                      monkeypatch, capsys):
    saved_runs = []
    save = gt.ArchitectureTransfer.save

    def recording_save(runner):
        save(runner)
        state = json.loads(open(runner.state_path).read())
        saved_runs.append(sum(method in entry for entry in state["entries"]
                              for method in gt.METHODS))

    monkeypatch.setattr(gt.ArchitectureTransfer, "save", recording_save)
    work_dir, result_file = tmp_path / "work", tmp_path / "arch.json"
    argv = ["transfer", "gan-architectures", "--n", "2", "--updates", "8",
            "--seed", "1", "--work-dir", str(work_dir), "--json",
            str(result_file)]
    assert cli.main(argv) == 0
    # The checkpoint is written after every finished run.
    assert saved_runs == [1, 2, 3, 4]
    results = json.loads(result_file.read_text())
    assert results["transfer"] == "gan-architectures"
    assert results["n"] == 2
    assert results["updates_per_run"] == 8
    assert results["settings"]["total_updates"] == 8
    assert results["baseline"] == "1:1"
    assert results["controller"] == "saved_controllers/gan_mnist (shipped)"
    metadata = json.loads(
        (Path(SHIPPED_CONTROLLER) / "metadata.json").read_text())
    assert results["controller_training"] == metadata["training"]
    scales = dict(zip(metadata["feature_names"], metadata["feature_scale"]))
    assert f"divided by {scales['grad_norm/generator']:g}" in results[
        "controller_inputs_note"]
    expected = gt.sample_architectures(2, seed=1)
    assert [e["architecture"] for e in results["architectures"]] == [
        a.to_dict() for a in expected]
    assert [e["seed"] for e in results["architectures"]] == [1, 2]
    differences = []
    for entry in results["architectures"]:
        without = entry["without_controller"]
        with_controller = entry["with_controller"]
        for run in (without, with_controller):
            assert [step for step, _ in run["curve"]] == [0, 4, 8]
            assert run["final"] == pytest.approx(
                np.mean([score for _, score in run["curve"][-2:]]))
        assert entry["difference"] == pytest.approx(
            with_controller["final"] - without["final"])
        differences.append(entry["difference"])
    summary = results["summary"]
    assert summary["compared"] == 2
    assert summary["helped"] == sum(d > 0 for d in differences)
    assert summary["mean_difference"] == pytest.approx(np.mean(differences))
    out = capsys.readouterr().out
    assert "0 of 4 runs already" in out
    assert f"higher final IS in {summary['helped']} of 2" in out

    assert cli.main(["plot", str(result_file)]) == 0
    assert (tmp_path / "arch.png").stat().st_size > 1000

    # A rerun finds every run in the checkpoint and reports the same.
    assert cli.main(argv) == 0
    assert "4 of 4 runs already" in capsys.readouterr().out
    rerun = json.loads(result_file.read_text())
    assert rerun["architectures"] == results["architectures"]
    assert rerun["summary"] == results["summary"]

    # A kill during the last run leaves the checkpoint of the first three,
    # written after each run. Resuming it trains only the last run, and
    # that run reproduces the uninterrupted one.
    state = json.loads((work_dir / gt.STATE_FILE).read_text())
    del state["entries"][1]["with_controller"]
    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    (killed_dir / gt.STATE_FILE).write_text(json.dumps(state))
    resumed_file = tmp_path / "resumed.json"
    resumed_argv = list(argv)
    resumed_argv[resumed_argv.index("--work-dir") + 1] = str(killed_dir)
    resumed_argv[resumed_argv.index("--json") + 1] = str(resumed_file)
    assert cli.main(resumed_argv) == 0
    assert "3 of 4 runs already" in capsys.readouterr().out
    resumed = json.loads(resumed_file.read_text())
    assert _without_seconds(resumed["architectures"]) == _without_seconds(
        results["architectures"])

    changed = list(argv)
    changed[changed.index("--updates") + 1] = "4"
    assert cli.main(changed) == 2
    error = capsys.readouterr().err
    assert "other settings" in error
    assert "'total_updates': 8" in error


@pytest.fixture
def tiny_fashion_cli(monkeypatch):
    """Make quick mode a tiny 28x28 DCGAN with only 1:1 and AutoLoss."""
    tiny = dict(ge._MODE_SETTINGS["quick"], **TINY)
    monkeypatch.setitem(ge._MODE_SETTINGS, "quick", tiny)


def test_data_cli_end_to_end(tiny_fashion_cli, tmp_path, capsys):
    result_file = tmp_path / "fashion.json"
    assert cli.main(["transfer", "gan-data", "--dataset", "fashion_mnist",
                     "--trials", "1", "--updates", "8", "--json",
                     str(result_file)]) == 0
    results = json.loads(result_file.read_text())
    reference = json.loads(COMPARE_GAN_RESULT.read_text())
    assert set(reference) <= set(results)
    assert results["dataset"] == "fashion_mnist"
    assert results["transfer"] == "gan-data"
    assert results["controller"] == "saved_controllers/gan_mnist (shipped)"
    assert "fashion_mnist classifier" in results["final_metric_note"]
    assert list(results["methods"]) == ["1:1", "AutoLoss"]
    for entry in results["methods"].values():
        assert len(entry["values"]) == 1
        assert [step for step, _ in entry["curves"][0]] == [0, 4, 8]
        assert 1.0 <= entry["mean"] <= 10.0
    assert "gan-data to fashion_mnist" in capsys.readouterr().out

    assert cli.main(["plot", str(result_file)]) == 0
    for suffix in ("", "_p_generator", "_samples"):
        assert (tmp_path / f"fashion{suffix}.png").stat().st_size > 1000


@pytest.mark.parametrize("argv, message", [
    (["gan-architectures", "--n", "0"], "--n must be in [1, 24]"),
    (["gan-architectures", "--n", "25"], "--n must be in [1, 24]"),
    (["gan-architectures", "--updates", "150"],
     "multiple of the segment length 100"),
    (["gan-architectures", "--updates", "0"],
     "multiple of the segment length 100"),
    (["gan-architectures", "--seed", "-1"], "--seed must be >= 0"),
    (["gan-architectures", "--fail-below", "0"], "--fail-below must be"),
    (["gan-architectures", "--dataset", "fashion_mnist"],
     "--dataset applies to `transfer gan-data` only"),
    (["gan-architectures", "--trials", "2"],
     "--trials applies to `transfer gan-data` only"),
    (["gan-architectures", "--controller", "no/such/dir"], "not found"),
    (["gan-data", "--dataset", "mnist"], "Run `autoloss compare gan`"),
    (["gan-data", "--dataset", "cifar10"], "Unknown data set"),
    (["gan-data", "--dataset", "svhn"], "Received: --dataset svhn"),
    (["gan-data", "--trials", "0"], "--trials must be >= 1"),
    (["gan-data", "--n", "3"],
     "--n applies to `transfer gan-architectures` only"),
    (["gan-data", "--work-dir", "w"],
     "--work-dir applies to `transfer gan-architectures` only"),
])
def test_transfer_cli_argument_errors(argv, message, capsys):
    assert cli.main(["transfer"] + argv) == 2
    assert message in capsys.readouterr().err


def test_transfer_cli_rejects_json_directory(tmp_path, capsys):
    assert cli.main(["transfer", "gan-data", "--json", str(tmp_path)]) == 2
    assert "--json must be a file path" in capsys.readouterr().err


def test_transfer_cli_rejects_unknown_experiment(capsys):
    with pytest.raises(SystemExit):
        cli.main(["transfer", "gan-cifar"])
    assert "invalid choice: 'gan-cifar'" in capsys.readouterr().err


def test_plot_rejects_unknown_transfer(tmp_path, capsys):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({"transfer": "gan-odd"}))
    assert cli.main(["plot", str(path)]) == 2
    assert "unknown transfer experiment 'gan-odd'" in capsys.readouterr().err
