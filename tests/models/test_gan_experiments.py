"""Tests of the GAN experiments on 8x8 images, tiny networks and a fake
classifier, so every GAN run takes a few dozen updates."""

import json

import keras
import numpy as np
import pytest

from autoloss_models import dcgan
from autoloss_models import gan_experiments as ge
from autoloss_tf import CyclicSchedule
from autoloss_tf import cli

D, G = dcgan.DISCRIMINATOR, dcgan.GENERATOR
TINY = dict(
    total_updates=12, eval_interval=4, segment_length=4, eval_samples=32,
    batch_size=8, latent_dim=4, kernel_size=3, base_filters=4,
    image_shape=(8, 8, 1), generator_ratios=(3,), discriminator_ratios=(2,),
    final_evaluations=2, collapse_limit=500,
)


def _tiny_settings(**overrides):
    return ge.settings_for("quick", **dict(TINY, **overrides))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, size=(48, 8, 8, 1)).astype("float32")


@pytest.fixture(scope="module")
def classifier():
    """A fake IS classifier: a seeded linear softmax over 8x8 pixels.

    Its IS of the near-zero images of a freshly initialized tiny generator
    is close to 1, which is enough to drive the code paths.
    """
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Flatten(),
        keras.layers.Dense(
            10, activation="softmax",
            kernel_initializer=keras.initializers.RandomNormal(
                stddev=3.0, seed=1),
        ),
    ])
    return model


# Segment reward.

def test_segment_reward_hand_computed():
    # k = 3 with only one earlier boundary: rate (2 - 1) / 1.
    assert ge.segment_reward([1.0, 2.0, 4.0], 3, 1.0, 0.01) == pytest.approx(2.0)
    # Full k = 3: P(t+T) 6, P(t) 4, P(t-3T) 1, rate 1, C 2.
    assert ge.segment_reward([1.0, 2.0, 3.0, 4.0, 6.0], 3, 2.0, 0.01) == (
        pytest.approx(4.0)
    )
    # Only the last k + 2 scores matter: P(t-2T) = 2, rate (5 - 2) / 2.
    assert ge.segment_reward([9.0, 2.0, 3.0, 5.0, 4.0], 2, 1.0, 0.01) == (
        pytest.approx(-1.0 / 1.5)
    )


def test_segment_reward_falling_rate_keeps_sign():
    # P fell from 3 to 2 before the segment; |rate| = 1 keeps R's sign.
    assert ge.segment_reward([3.0, 2.0, 2.5], 1, 1.0, 0.01) == (
        pytest.approx(0.5)
    )


def test_segment_reward_rate_floor_and_clip():
    # Flat history: the rate is floored at 0.1.
    assert ge.segment_reward([2.0, 2.0, 2.5], 1, 1.0, 0.1) == (
        pytest.approx(5.0)
    )
    assert ge.segment_reward([2.0, 2.0, 2.5], 1, 1.0, 0.1, clip=3.0) == 3.0
    assert ge.segment_reward([2.0, 2.0, 1.0], 1, 1.0, 0.1, clip=3.0) == -3.0


def test_segment_reward_per_time():
    scores, k = [10.0, 8.0, 6.0, 5.0], 2
    # Rate |6 - 10| / 2 = 2 per segment; the last gain -1 took 20 s
    # against a mean of 10 s per earlier segment, so it counts as -0.5.
    assert ge.segment_reward(scores, k, 1.0, 0.01,
                             times=[0.0, 10.0, 20.0, 40.0]) == (
        pytest.approx(-0.25))
    assert ge.segment_reward(scores, k, 1.0, 0.01) == pytest.approx(-0.5)
    # Equal durations give the reward without times.
    assert ge.segment_reward(scores, k, 1.0, 0.01,
                             times=[0.0, 7.0, 14.0, 21.0]) == (
        pytest.approx(-0.5))


@pytest.mark.parametrize("times, message", [
    ([0.0, 1.0, 2.0], "one entry per score"),
    ([0.0, 1.0, 2.0, 2.0], "must increase"),
])
def test_segment_reward_rejects_bad_times(times, message):
    with pytest.raises(ValueError, match=message):
        ge.segment_reward([10.0, 8.0, 6.0, 5.0], 2, 1.0, 0.01, times=times)


def test_segment_reward_needs_history():
    assert ge.segment_reward([1.0, 2.0], 3, 1.0, 0.01) is None
    assert ge.segment_reward([], 3, 1.0, 0.01) is None


# Collapse guard.

def test_collapse_guard_counts_across_calls():
    guard = ge.CollapseGuard(limit=5)
    assert not guard.update([0, 0, 0])
    assert not guard.update([0, 0])
    assert guard.update([0])
    assert guard.run_length == 0
    assert not guard.update([0] * 5)


def test_collapse_guard_alternating_never_fires():
    guard = ge.CollapseGuard(limit=2)
    assert not guard.update([0, 1, 1, 0, 0, 1, 0])
    assert guard.state() == {"last_action": 0, "run_length": 1}


def test_collapsed_controller_is_reset(images, classifier, tmp_path):
    settings = _tiny_settings(total_updates=4, collapse_limit=3)
    trainer = ge.OnlineControllerTrainer(settings, tmp_path, images,
                                         classifier)
    bias = trainer.controller.output_layer.bias
    generator = ge.ACTION_NAMES.index(G)
    bias.assign(np.where(np.arange(2) == generator, 20.0, -20.0))
    trainer.train(1)
    (entry,) = trainer.history
    assert entry["collapsed"]
    assert entry["generator_fraction"] == 1.0
    assert entry["reward"] == settings.collapse_reward
    assert trainer.updater.baseline.value is None
    # Reset to zero weights, then one penalty step of Adam (about lr).
    assert np.abs(bias.numpy()).max() < 2 * settings.controller_learning_rate
    probabilities = trainer.controller.probabilities(np.zeros((1, 11)))
    assert probabilities.numpy()[0, generator] < 0.5


# Fixed ratios.

@pytest.mark.parametrize("name, pattern", [
    ("1:1", [D, G]),
    ("1:3", [D, G, G, G]),
    ("3:1", [D, D, D, G]),
    ("2:5", [D, D, G, G, G, G, G]),
])
def test_fixed_ratio_pattern(name, pattern):
    assert ge.fixed_ratio_pattern(name) == pattern


@pytest.mark.parametrize("name", ["1-3", "0:1", "1:x", "1:2:3", ""])
def test_fixed_ratio_rejects_bad_name(name):
    with pytest.raises(ValueError, match="D:G"):
        ge.fixed_ratio_pattern(name)


def test_fixed_ratio_methods_of_modes():
    assert ge.fixed_ratio_methods(ge.settings_for("quick")) == [
        "1:1", "1:3", "1:5", "3:1"
    ]
    full = ge.fixed_ratio_methods(ge.settings_for("full"))
    assert len(full) == 11
    assert "1:11" in full
    assert "11:1" in full


def test_fixed_ratio_run_updates_in_order(images, classifier):
    settings = _tiny_settings(total_updates=8, eval_interval=8,
                              segment_length=8)
    run = ge.GanRun(settings, ge.fixed_ratio_schedule("1:3"), images,
                    classifier, seed=0)
    schedule = run.model.schedule
    features = np.zeros((1, len(ge.FEATURE_NAMES)), "float32")
    names = [ge.ACTION_NAMES[int(schedule.select(features, step)[0])]
             for step in range(8)]
    assert names == [D, G, G, G, D, G, G, G]
    run.train_chunk()
    assert int(run.model.discriminator_optimizer.iterations) == 2
    assert int(run.model.generator_optimizer.iterations) == 6


# Data order and settings.

def test_batch_indices_resume_and_cover():
    whole = ge.batch_indices(20, 4, seed=3, start_step=0, steps=10)
    tail = ge.batch_indices(20, 4, seed=3, start_step=6, steps=4)
    np.testing.assert_array_equal(whole[6:], tail)
    assert sorted(whole[:5].ravel().tolist()) == list(range(20))
    assert not np.array_equal(whole[:5], whole[5:])


def test_settings_reject_misaligned_segment():
    with pytest.raises(ValueError, match="multiple of `eval_interval`"):
        ge.settings_for("quick", segment_length=150)
    with pytest.raises(ValueError, match="Unknown GanSettings fields"):
        ge.settings_for("quick", segment=100)
    with pytest.raises(ValueError, match="Unknown GAN mode"):
        ge.settings_for("fast")


# Updates to reach a reference.

def test_updates_to_reach_uses_the_final_smoothing():
    curve = [[0, 1.0], [10, 3.0], [20, 5.0], [30, 2.0], [40, 6.0]]
    # Means of two: 2.0 at 10, 4.0 at 20, 3.5 at 30, 4.0 at 40.
    assert ge.updates_to_reach(curve, 4.0, window=2) == 20
    assert ge.updates_to_reach(curve, 4.1, window=2) is None
    assert ge.updates_to_reach(curve, 5.5, window=1) == 40
    assert ge.updates_to_reach(curve, 0.5, window=3) == 20


def test_reach_reference_pairs_trials_by_seed():
    results = {
        "1:1": {"values": [2.0, 5.0],
                "curves": [[[0, 1.0], [10, 2.0]], [[0, 1.0], [10, 5.0]]]},
        "AutoLoss": {"values": [3.0, 4.0],
                     "curves": [[[0, 2.5], [10, 3.0]], [[0, 4.0], [10, 4.0]]]},
    }
    ge.reach_reference(results, "1:1", window=1)
    assert results["1:1"]["updates_to_reach"] == [10, 10]
    assert results["AutoLoss"]["updates_to_reach"] == [0, None]


# Online training, resume and guided runs.

class _Interrupted(Exception):
    pass


def test_resume_continues_identically(images, classifier, tmp_path):
    settings = _tiny_settings(total_updates=8)
    ge.set_determinism(0)
    whole = ge.OnlineControllerTrainer(settings, tmp_path / "whole", images,
                                       classifier)
    whole.train(2)

    ge.set_determinism(0)
    first = ge.OnlineControllerTrainer(settings, tmp_path / "cut", images,
                                       classifier)

    def stop_after_third(entry):
        if len(first.history) == 3:
            raise _Interrupted

    with pytest.raises(_Interrupted):
        first.train(2, progress=stop_after_third)

    second = ge.OnlineControllerTrainer(settings, tmp_path / "cut", images,
                                        classifier)
    assert second.resume() == 3
    assert second.updates_done == 12
    second.train(2)
    assert second.history == whole.history
    assert second.runs == whole.runs
    for resumed, reference in zip(second.controller.weights,
                                  whole.controller.weights):
        np.testing.assert_array_equal(resumed.numpy(), reference.numpy())
    for resumed, reference in zip(second.updater.optimizer.variables,
                                  whole.updater.optimizer.variables):
        np.testing.assert_array_equal(resumed.numpy(), reference.numpy())
    saved = json.loads((tmp_path / "cut" / ge.HISTORY_FILE).read_text())
    assert len(saved["history"]) == 4
    assert [r["run"] for r in saved["runs"]] == [0, 1]


def test_online_training_updates_controller(images, classifier, tmp_path):
    trainer = ge.OnlineControllerTrainer(_tiny_settings(), tmp_path, images,
                                         classifier)
    trainer.train(1)
    rewards = [entry["reward"] for entry in trainer.history]
    assert rewards[0] is None
    assert all(isinstance(r, float) for r in rewards[1:])
    assert np.abs(trainer.controller.output_layer.kernel.numpy()).max() > 0
    assert [e["step"] for e in trainer.history] == [4, 8, 12]


@pytest.mark.parametrize("baseline", ["progress", "moving_average"])
def test_segment_baselines(images, classifier, tmp_path, baseline):
    # 5 segments of 4 updates; the second one has the first reward.
    settings = _tiny_settings(total_updates=20, baseline=baseline,
                              baseline_decay=0.5, progress_decay=0.5)
    trainer = ge.OnlineControllerTrainer(settings, tmp_path, images,
                                         classifier)
    trainer.train(1)
    rewarded = [e for e in trainer.history if e["reward"] is not None]
    r = [e["reward"] for e in rewarded]
    b = [e["baseline"] for e in rewarded]
    assert len(r) == 4
    assert b[0] is None
    assert b[1] == pytest.approx(r[0])
    if baseline == "progress":
        # Fewer than 10 rewards: the weighted mean, weights 0.5^age.
        assert b[2] == pytest.approx((0.5 * r[0] + r[1]) / 1.5)
        assert b[3] == pytest.approx(
            (0.25 * r[0] + 0.5 * r[1] + r[2]) / 1.75)
        assert [p for p, _ in trainer.progress_baseline.points] == [
            0.2, 0.4, 0.6, 0.8]
    else:
        assert b[2] == pytest.approx(0.5 * r[0] + 0.5 * r[1])
        assert b[3] == pytest.approx(0.5 * b[2] + 0.5 * r[2])
        assert trainer.progress_baseline.points == []


def test_settings_reject_unknown_baseline():
    with pytest.raises(ValueError, match="baseline='median'"):
        _tiny_settings(baseline="median")


def test_guided_run_under_learned_controller(images, classifier):
    settings = _tiny_settings()
    controller = ge.make_controller()
    result = ge.guided_run(settings, controller, images, classifier, seed=1)
    assert [step for step, _ in result["curve"]] == [0, 4, 8, 12]
    assert all(1.0 <= score <= 10.0 for _, score in result["curve"])
    expected_final = np.mean([score for _, score in result["curve"][-2:]])
    assert result["final"] == pytest.approx(expected_final)
    # A zero-weight linear controller is uniform over the two actions.
    assert [p for _, p in result["p_generator"]] == pytest.approx([0.5] * 3)
    assert result["samples"].shape == (64, 8, 8, 1)


def test_dithered_uniform_equals_alternating(images, classifier):
    # A zero-weight controller gives (1/2, 1/2). Dithering takes the first
    # action on the tie and then the other, so the run is G, D, G, D, ...
    settings = _tiny_settings()
    dithered = ge.guided_run(settings, ge.make_controller(), images,
                             classifier, seed=1, decoding="dither")
    alternating = ge.run_with_schedule(
        settings, CyclicSchedule([dcgan.GENERATOR, dcgan.DISCRIMINATOR]),
        images, classifier, seed=1)
    sampled = ge.guided_run(settings, ge.make_controller(), images,
                            classifier, seed=1)

    assert dithered["curve"] == alternating["curve"]
    np.testing.assert_array_equal(dithered["samples"], alternating["samples"])
    assert dithered["generator_share"] == 0.5
    assert not np.array_equal(sampled["samples"], alternating["samples"])


def test_greedy_share_differs_from_probability(images, classifier):
    # Equal logits: greedy decoding takes the first action, the generator,
    # on every step, while the policy's probability stays 1/2.
    settings = _tiny_settings()
    result = ge.guided_run(settings, ge.make_controller(), images,
                           classifier, seed=1, decoding="greedy")

    assert [p for _, p in result["p_generator"]] == pytest.approx([0.5] * 3)
    assert result["generator_share"] == 1.0


# Command line.

@pytest.fixture
def tiny_cli(monkeypatch, images, classifier):
    """Make `autoloss ... gan` use tiny quick-mode settings and data."""
    # Only 1:1 and AutoLoss, so a comparison trains two GANs per trial.
    tiny = dict(ge._MODE_SETTINGS["quick"], **TINY)
    tiny.update(generator_ratios=(), discriminator_ratios=())
    tiny.pop("image_shape")
    monkeypatch.setitem(ge._MODE_SETTINGS, "quick", tiny)
    monkeypatch.setitem(ge._COMMON, "image_shape", (8, 8, 1))
    from autoloss_tf import gan_commands

    monkeypatch.setattr(gan_commands, "load_data",
                        lambda: (images, classifier))


@pytest.mark.parametrize("argv, message", [
    (["guide", "gan"], "needs --controller"),
    (["train-controller", "gan", "--out", "x", "--episodes", "5"],
     "--episodes applies to the L1 tasks"),
    (["compare", "regression", "--mode", "full"],
     "--mode applies to the gan and nmt tasks only"),
    (["train-controller", "gan", "--out", "x", "--runs", "0"],
     "--runs must be >= 1"),
    (["compare", "gan", "--max-steps", "150"],
     "multiple of the segment length 100"),
    (["compare", "gan", "--trials", "0"], "--trials must be >= 1"),
    (["guide", "gan", "--controller", "no/such/dir"], "not found"),
    (["compare", "regression", "--methods", "DGS"],
     "--methods applies to the gan and nmt tasks only"),
    (["compare", "regression", "--mode", "full", "--methods", "DGS"],
     "--mode, --methods apply to the gan and nmt tasks only. Received "
     "them with task regression. Remove them."),
    (["compare", "gan", "--methods", "2:1"],
     "--methods must name methods of this comparison: 1:1, 1:3, 1:5, 3:1"),
    (["compare", "gan", "--methods", "1:1", "AutoLoss"],
     "--methods AutoLoss needs a trained controller"),
    (["compare", "gan", "--methods", "1:1", "1:1"],
     "names each method once"),
    (["compare", "nmt", "--decoding", "dither"],
     "--decoding applies to compare with the gan task only"),
    (["compare", "gan", "--methods", "1:1", "--decoding", "dither"],
     "this comparison runs no AutoLoss (methods: 1:1)"),
    (["guide", "regression", "--greedy"],
     "--greedy was replaced by --decoding"),
])
def test_gan_cli_argument_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_gan_cli_end_to_end(tiny_cli, tmp_path, capsys):
    out = tmp_path / "controller"
    assert cli.main(["train-controller", "gan", "--out", str(out),
                     "--runs", "1"]) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["training"]["task"] == "gan"
    assert metadata["training"]["runs"] == 1
    assert cli.main(["train-controller", "gan", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main(["train-controller", "gan", "--out", str(out),
                     "--runs", "1", "--resume", "--seed", "2"]) == 2
    assert "'seed': (0, 2)" in capsys.readouterr().err
    assert cli.main(["plot", str(out / "training" / ge.HISTORY_FILE),
                     "--out", str(tmp_path / "history.png")]) == 0

    result_file = tmp_path / "gan.json"
    assert cli.main(["compare", "gan", "--trials", "2", "--controller",
                     str(out), "--json", str(result_file)]) == 0
    results = json.loads(result_file.read_text())
    assert results["metric"] == "inception_score"
    assert results["higher_is_better"] is True
    assert results["trials"] == 2
    assert results["decoding"] == "sample"
    assert list(results["methods"]) == ["1:1", "AutoLoss"]
    for entry in results["methods"].values():
        assert len(entry["values"]) == 2
        assert len(entry["curves"]) == 2
        assert entry["mean"] == pytest.approx(np.mean(entry["values"]))
    assert cli.main(["plot", str(result_file)]) == 0
    for suffix in ("", "_p_generator", "_samples"):
        assert (tmp_path / f"gan{suffix}.png").stat().st_size > 1000

    # Without its samples file, plot stops before writing any PNG.
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "gan.json").write_text(result_file.read_text())
    assert cli.main(["plot", str(moved / "gan.json")]) == 2
    assert "Samples file not found" in capsys.readouterr().err
    assert not list(moved.glob("*.png"))

    # A subset reruns the same trials: trial 0 of AutoLoss again.
    subset_file = tmp_path / "subset.json"
    capsys.readouterr()
    assert cli.main(["compare", "gan", "--trials", "1", "--controller",
                     str(out), "--methods", "AutoLoss", "--json",
                     str(subset_file)]) == 0
    subset = json.loads(subset_file.read_text())
    assert list(subset["methods"]) == ["AutoLoss"]
    # Without 1:1 there is no final IS to reach.
    assert "updates_to_reach_note" in results
    assert "updates_to_reach_note" not in subset
    assert "reach" not in capsys.readouterr().out
    assert subset["methods"]["AutoLoss"]["values"] == (
        results["methods"]["AutoLoss"]["values"][:1])

    assert cli.main(["guide", "gan", "--controller", str(out),
                     "--decoding", "dither"]) == 0
    assert "final IS" in capsys.readouterr().out


def test_comparison_in_worker_processes_matches_its_layout():
    """Two spawned workers train every (method, trial) run of a comparison
    on the real MNIST images, AutoLoss under the shipped controller."""
    import pathlib

    controller_dir = str(pathlib.Path(__file__).resolve().parents[2]
                         / "saved_controllers" / "gan_mnist")
    settings = ge.settings_for("quick", **dict(
        TINY, image_shape=(28, 28, 1), total_updates=8))
    finished = []
    results = ge.run_comparison(
        settings, None, None, None, trials=2, seed=4,
        methods=["1:1", "AutoLoss"], workers=2,
        controller_dir=controller_dir, progress=finished.append)
    assert finished == [8] * 4
    assert list(results) == ["1:1", "AutoLoss"]
    for entry in results.values():
        assert len(entry["values"]) == 2
        assert [len(curve) for curve in entry["curves"]] == [3, 3]
        assert entry["samples"].shape == (64, 28, 28, 1)
    # The 1:1 pattern alternates, so half of each chunk's updates are G.
    assert [p for _, p in results["1:1"]["p_generator"][0]] == [0.5, 0.5]
    shares = [p for _, p in results["AutoLoss"]["p_generator"][0]]
    assert all(0.0 < p < 1.0 and p != 0.5 for p in shares)
    assert results["1:1"]["updates_to_reach"] is not None
    with pytest.raises(ValueError, match="controller_dir"):
        ge.run_comparison(settings, None, None, None, trials=1,
                          methods=["AutoLoss"], workers=2)
