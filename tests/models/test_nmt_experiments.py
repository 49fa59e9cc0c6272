"""Tests of the NMT experiments on a tiny synthetic corpus and tiny models.

Every run builds a new model whose train step takes several seconds to
trace on 2 cores, so the run tests use step limits of a few dozen steps.
"""

import json
import math
import shutil

import numpy as np
import pytest
import tensorflow as tf

from autoloss_models import nmt_experiments as ne
from autoloss_tf import FixedSchedule
from autoloss_tf import cli

from tiny_nmt_corpus import BOS
from tiny_nmt_corpus import EOS
from tiny_nmt_corpus import LENGTH
from tiny_nmt_corpus import make_tiny_corpus


@pytest.fixture(scope="module")
def tiny_corpus():
    """Return the default tiny corpus (64 / 16 / 16 sentences)."""
    return make_tiny_corpus()


TINY = dict(
    budget_seconds=1e6, segment_length=4, batch_size=8, embedding_dim=8,
    encoder_units=4, vocabulary_size=20, source_length=LENGTH,
    target_length=LENGTH, buffer_size=8, minibatch_size=4, expected_steps=16,
)


def _tiny_settings(**overrides):
    return ne.settings_for("quick", **dict(TINY, **overrides))


# Settings.

@pytest.mark.parametrize("overrides, message", [
    (dict(clock="cpu"), "`clock` must be one of"),
    (dict(budget_seconds=0.0), "`budget_seconds` must be > 0"),
    (dict(max_steps=0), "`max_steps` must be a positive integer"),
    (dict(min_word_count=0), "`min_word_count` must be a positive integer"),
    (dict(fixed_ratio=(1.0, 1.0)), "one non-negative weight per task"),
    (dict(fine_tune_fraction=1.0), "fine_tune_fraction"),
    (dict(optimizer_state="both"), "optimizer_state"),
    (dict(segment=3), "Unknown NmtSettings fields"),
])
def test_settings_reject_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        ne.settings_for("quick", **overrides)


def test_settings_of_modes():
    quick, full = ne.settings_for("quick"), ne.settings_for("full")
    assert (quick.encoder_layers, quick.dropout, quick.batch_size) == (
        1, 0.0, 64)
    assert (full.encoder_layers, full.decoder_layers, full.dropout) == (
        2, 2, 0.3)
    assert (full.buffer_size, full.minibatch_size, full.gamma) == (
        2000, 64, 0.95)
    assert (quick.min_word_count, full.min_word_count) == (10, 3)
    assert json.loads(json.dumps(quick.to_dict()))["mode"] == "quick"
    with pytest.raises(ValueError, match="Unknown NMT mode"):
        ne.settings_for("fast")


# Corpus helpers.

def test_special_ids_of_corpus(tiny_corpus):
    assert ne.special_ids(tiny_corpus.train) == (BOS, EOS)


def test_special_ids_reject_mixed_ends(tiny_corpus):
    split = ne.SplitView(tiny_corpus.valid)
    split.target_out = split.target_out.copy()
    lengths = (split.target_out != 0).sum(axis=1)
    split.target_out[0, lengths[0] - 1] = 7
    with pytest.raises(ValueError, match="same end id"):
        ne.special_ids(split)


def test_fixed_ratio_weighs_labelled_tokens(tiny_corpus):
    train = tiny_corpus.train
    source = np.count_nonzero(train.source)
    target = np.count_nonzero(train.target_out)
    # Every tiny source token has a POS and a lemma label.
    expected = np.array([source + target, source, source], "float64")
    probabilities = ne.fixed_ratio_probabilities(_tiny_settings(), tiny_corpus)
    np.testing.assert_allclose(probabilities, expected / expected.sum())
    explicit = ne.fixed_ratio_probabilities(
        _tiny_settings(fixed_ratio=(3, 1, 1)), tiny_corpus)
    np.testing.assert_allclose(explicit, [0.6, 0.2, 0.2])


def test_model_sizes_cover_largest_ids(tiny_corpus):
    sizes = ne.model_sizes(tiny_corpus)
    assert sizes == {"source_vocabulary_size": 16,
                     "target_vocabulary_size": 19, "num_pos_tags": 5,
                     "num_lemma_classes": 4}


# Schedules.

def _actions(schedule, steps):
    features = tf.zeros([1, len(ne.FEATURE_NAMES)])
    schedule.bind(ne.ACTION_NAMES, ne.FEATURE_NAMES, 1)
    select = tf.function(lambda step: schedule.select(features, step)[0])
    return np.array([int(select(tf.constant(step, "int64")))
                     for step in range(steps)])


def test_fixed_ratio_schedule_proportions(tiny_corpus):
    settings = _tiny_settings(fixed_ratio=(0.6, 0.2, 0.2))
    schedule = ne.method_schedule(ne.FIXED_RATIO, settings, tiny_corpus, 3)
    actions = _actions(schedule, 3000)
    shares = np.bincount(actions, minlength=3) / len(actions)
    # Binomial standard deviation at n = 3000 is at most 0.009.
    np.testing.assert_allclose(shares, [0.6, 0.2, 0.2], atol=0.03)


def test_fine_tuned_schedule_switches_to_mt(tiny_corpus):
    settings = _tiny_settings(fixed_ratio=(0.6, 0.2, 0.2))
    schedule = ne.method_schedule(ne.FINE_TUNED_MT, settings, tiny_corpus, 3)
    assert schedule.switch_fraction == pytest.approx(2.0 / 3.0)
    before = _actions(schedule, 3000)
    shares = np.bincount(before, minlength=3) / len(before)
    np.testing.assert_allclose(shares, [0.6, 0.2, 0.2], atol=0.03)
    schedule.phase.assign(1)
    after = _actions(schedule, 500)
    assert (after == 0).all()
    features = tf.zeros([1, len(ne.FEATURE_NAMES)])
    np.testing.assert_array_equal(schedule.probabilities(features)[0],
                                  [1.0, 0.0, 0.0])


def test_mt_only_schedule(tiny_corpus):
    schedule = ne.method_schedule(ne.MT_ONLY, _tiny_settings(), tiny_corpus, 0)
    assert isinstance(schedule, FixedSchedule)
    assert (_actions(schedule, 10) == 0).all()


def test_starting_controller_is_copied():
    settings = _tiny_settings()
    source = ne.make_controller(settings, seed=5)
    source.output_layer.bias.assign([1.0, 2.0, 3.0])
    copy = ne._copy_controller(source, settings, seed=0)
    assert copy is not source
    for left, right in zip(copy.weights, source.weights):
        np.testing.assert_array_equal(left.numpy(), right.numpy())
    wider = ne.make_controller(ne.settings_for(
        "quick", controller_hidden_units=8), seed=0)
    with pytest.raises(ValueError, match="other layer sizes"):
        ne._copy_controller(wider, settings, seed=0)


# Rewards and BLEU.

class _Curve:
    """A run whose feature perplexities are given; the reported ones are flat.

    The reward must read `feature_curve`; a reward from the flat `curve`
    would be floored at min_rate and clipped instead.
    """

    def __init__(self, perplexities, seconds=None):
        if seconds is None:
            seconds = [10.0 * i for i in range(len(perplexities))]
        self.feature_curve = [[time, 0, 0, value]
                              for time, value in zip(seconds, perplexities)]
        self.curve = [[time, 0, 0, 1000.0] for time in seconds]


def test_reward_rises_when_perplexity_falls(tiny_corpus):
    trainer = ne.OnlineControllerTrainer(_tiny_settings(min_rate=0.5),
                                         tiny_corpus)
    assert trainer._reward(_Curve([100.0, 90.0])) is None
    # Drop 10 against an earlier rate of 10 per segment.
    assert trainer._reward(_Curve([100.0, 90.0, 80.0])) == pytest.approx(1.0)
    # k = 3 with two earlier segments: rate (100 - 80) / 2 = 10; rise of 5.
    assert trainer._reward(_Curve([100.0, 90.0, 80.0, 85.0])) == (
        pytest.approx(-0.5))
    # Flat history: the rate is floored at min_rate 0.5, then clipped at 5.
    assert trainer._reward(_Curve([50.0, 50.0, 40.0])) == pytest.approx(5.0)


def test_reward_per_second_weighs_segment_cost(tiny_corpus):
    # The last drop of 10 took 20 s against 10 s before: half the reward.
    slow = _Curve([100.0, 90.0, 80.0], seconds=[0.0, 10.0, 30.0])
    per_second = ne.OnlineControllerTrainer(
        _tiny_settings(min_rate=0.5), tiny_corpus)
    per_segment = ne.OnlineControllerTrainer(
        _tiny_settings(min_rate=0.5, reward_per_second=False), tiny_corpus)
    assert per_second._reward(slow) == pytest.approx(0.5)
    assert per_segment._reward(slow) == pytest.approx(1.0)


def test_corpus_bleu_by_hand():
    reference = "the cat is on the mat".split()
    hypothesis = "the cat the cat on the mat".split()
    # Clipped matches: 1-grams 5/7 (the 3 of 2 allowed... "the" x3 -> 2,
    # "cat" x2 -> 1, on, mat), 2-grams 3/6 (the cat, on the, the mat),
    # 3-grams 1/5 (on the mat), 4-grams 0/4.
    assert ne.corpus_bleu([reference], [hypothesis]) == 0.0
    bleu3 = ne.corpus_bleu([reference], [hypothesis], max_order=3)
    expected = math.exp((math.log(5 / 7) + math.log(3 / 6)
                         + math.log(1 / 5)) / 3)
    assert bleu3 == pytest.approx(expected)


def test_corpus_bleu_pools_counts_and_brevity():
    references = [["a", "b", "c", "d"], ["e", "f", "g", "h", "i", "j"]]
    hypotheses = [["a", "b", "c", "d"], ["e", "f", "g", "h"]]
    # Every n-gram matches; c = 8 < r = 10 gives exp(1 - 10 / 8).
    assert ne.corpus_bleu(references, hypotheses) == pytest.approx(
        math.exp(1 - 10 / 8))
    assert ne.corpus_bleu(references[:1], hypotheses[:1]) == 1.0
    with pytest.raises(ValueError, match="one reference per hypothesis"):
        ne.corpus_bleu(references, hypotheses[:1])


def test_corpus_bleu_matches_keras_hub():
    keras_hub = pytest.importorskip("keras_hub")
    references = ["the cat sat on the mat today", "a dog ran in the park"]
    hypotheses = ["the cat sat on a mat today", "a dog ran in a big park"]
    metric = keras_hub.metrics.Bleu(max_order=4)
    metric.update_state([[r] for r in references], hypotheses)
    ours = ne.corpus_bleu([r.split() for r in references],
                          [h.split() for h in hypotheses])
    assert ours == pytest.approx(float(metric.result()), rel=1e-5)


def test_target_tokens_cut_at_eos(tiny_corpus):
    tokens = ne.target_tokens(tiny_corpus, [5, 6, EOS, 7, 0], EOS)
    assert tokens == ["t5", "t6"]
    assert ne.target_tokens(object(), [5, 0, EOS], EOS) == ["5"]


# Runs, online training and resume.

class _TickClock:
    """A clock that advances one second every time it is read."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def test_feature_subset_is_counted(tiny_corpus):
    settings = _tiny_settings(feature_valid_sentences=4)
    schedule = FixedSchedule(ne.ACTION_NAMES[0])
    run = ne.NmtRun(settings, tiny_corpus, schedule, seed=0,
                    evaluations_count=True)
    assert len(run.feature_valid) == 4
    assert len(run.valid) == len(tiny_corpus.valid.source) == 16
    run.clock = _TickClock()
    returned = run.evaluate()
    # Only the feature evaluation is timed: one tick pair is one second.
    assert run.seconds == 1.0
    subset = run.model.evaluate_split(ne.SplitView(tiny_corpus.valid, 4))
    whole = run.model.evaluate_split(ne.SplitView(tiny_corpus.valid))
    assert returned == pytest.approx(subset["mt_perplexity"])
    assert run.feature_curve == [[1.0, 0, 0, returned]]
    assert run.curve[0][3] == pytest.approx(whole["mt_perplexity"])
    assert run.curve[0][3] != pytest.approx(returned)
    # The validation features are the subset's losses.
    np.testing.assert_allclose(
        run.model.validation_losses.numpy(),
        [subset[task]["loss"] for task in ne.ACTION_NAMES],
        rtol=1e-5,
    )


def test_fixed_schedule_skips_feature_subset(tiny_corpus):
    settings = _tiny_settings(feature_valid_sentences=4)
    run = ne.NmtRun(settings, tiny_corpus, FixedSchedule(ne.ACTION_NAMES[0]),
                    seed=0)
    assert run.feature_valid is run.valid
    run.clock = _TickClock()
    run.evaluate()
    assert run.seconds == 0.0
    assert run.feature_curve == run.curve


def _without_seconds(history):
    return [{k: v for k, v in entry.items() if k != "seconds"}
            for entry in history]


def test_online_trainer_resume_continues_identically(tiny_corpus, tmp_path):
    # Rewards per counted second depend on timing, so they would differ
    # between the two runs; per segment they depend on perplexities only.
    settings = _tiny_settings(max_steps=24, reward_per_second=False)
    ne.set_seeds(0)
    tf.config.experimental.enable_op_determinism()
    whole = ne.OnlineControllerTrainer(settings, tiny_corpus,
                                       str(tmp_path / "whole"), seed=0)
    copy = tmp_path / "cut"

    def copy_after_fourth(entry, run):
        if len(whole.history) == 4:
            shutil.copytree(tmp_path / "whole", copy)

    whole.train(1, progress=copy_after_fourth)
    assert [e["step"] for e in whole.history] == [4, 8, 12, 16, 20, 24]
    # The first reward needs perplexities at steps 0, 4 and 8.
    assert [e["reward"] is None for e in whole.history] == (
        [True, False, False, False, False, False])
    # Rewarded segments add 4 transitions each; the buffer takes 8.
    assert [bool(e["ppo"]) for e in whole.history] == (
        [False, False, True, False, True, False])
    assert whole.updater.updates == 2
    assert whole.updater.size == 4

    resumed = ne.OnlineControllerTrainer(settings, tiny_corpus, str(copy),
                                         seed=0)
    assert resumed.resume() == 4
    assert resumed.current_run.step == 16
    assert resumed.updater.size == 4
    resumed.train(1)
    assert _without_seconds(resumed.history) == _without_seconds(
        whole.history)
    for name in ("controller", "critic"):
        for left, right in zip(getattr(resumed.updater, name).weights,
                               getattr(whole.updater, name).weights):
            np.testing.assert_array_equal(left.numpy(), right.numpy())
    saved = json.loads((copy / ne.HISTORY_FILE).read_text())
    assert saved["task"] == "nmt"
    assert len(saved["history"]) == 6
    assert saved["runs"][0]["steps"] == 24


def test_resume_reports_other_settings(tiny_corpus, tmp_path):
    first = ne.OnlineControllerTrainer(_tiny_settings(max_steps=4),
                                       tiny_corpus, str(tmp_path), seed=0)
    first.save()
    second = ne.OnlineControllerTrainer(_tiny_settings(max_steps=8),
                                        tiny_corpus, str(tmp_path), seed=0)
    assert second.resume() == 0
    assert second.saved_settings["max_steps"] == 4
    assert second.current_run is None


def test_resume_rejects_checkpoint_without_setting(tiny_corpus, tmp_path):
    from autoloss_tf import training
    from autoloss_tf.commands import UsageError
    from autoloss_tf.commands import resume_online_trainer

    settings = _tiny_settings(max_steps=4)
    first = ne.OnlineControllerTrainer(settings, tiny_corpus, str(tmp_path),
                                       seed=0)
    first.save()
    # A checkpoint written before `feature_valid_sentences` existed.
    state, arrays = training.read_checkpoint(first.checkpoint_path)
    del state["settings"]["feature_valid_sentences"]
    training.write_checkpoint(first.checkpoint_path, arrays, state=state)

    second = ne.OnlineControllerTrainer(settings, tiny_corpus, str(tmp_path),
                                        seed=0)

    class Args:
        out = str(tmp_path)

    with pytest.raises(UsageError) as raised:
        resume_online_trainer(second, Args, "--mode and --seed")
    message = str(raised.value)
    assert "without the settings ['feature_valid_sentences']" in message
    assert "Choose another --out" in message


# Command line.

@pytest.fixture
def tiny_cli(monkeypatch, tiny_corpus):
    """Make `autoloss ... nmt` use tiny quick-mode settings and data."""
    tiny = dict(ne._MODE_SETTINGS["quick"], **TINY)
    for key in ("source_length", "target_length"):
        tiny.pop(key)
    # A quarter of the 16 validation sentences, as quick mode reads 200 of
    # 968, so AutoLoss's feature evaluation reads a subset.
    tiny["feature_valid_sentences"] = 4
    monkeypatch.setitem(ne._MODE_SETTINGS, "quick", tiny)
    monkeypatch.setitem(ne._COMMON, "source_length", LENGTH)
    monkeypatch.setitem(ne._COMMON, "target_length", LENGTH)
    from autoloss_tf import nmt_commands

    monkeypatch.setattr(nmt_commands, "load_corpus",
                        lambda settings: tiny_corpus)


@pytest.mark.parametrize("argv, message", [
    (["guide", "nmt"], "needs --controller"),
    (["train-controller", "nmt", "--out", "x", "--episodes", "5"],
     "--episodes applies to the L1 tasks"),
    (["compare", "gan", "--budget-seconds", "5"],
     "--budget-seconds applies to the nmt task only"),
    (["compare", "nmt", "--budget-seconds", "0"], "must be > 0"),
    (["compare", "nmt", "--max-steps", "0"], "must be >= 1"),
    (["compare", "nmt", "--trials", "0"], "--trials must be >= 1"),
    (["guide", "nmt", "--controller", "no/such/dir"], "not found"),
    (["compare", "nmt", "--methods", "MT", "AutoLos"],
     "--methods must name methods of this comparison: MT, FixedRatio, "
     "FineTunedMT, AutoLoss. Received: 'AutoLos'"),
])
def test_nmt_cli_argument_errors(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_nmt_cli_compare_end_to_end(tiny_cli, tiny_corpus, tmp_path,
                                   capsys):
    result_file = tmp_path / "nmt.json"
    assert cli.main(["compare", "nmt", "--trials", "1", "--budget-seconds",
                     "2", "--json", str(result_file)]) == 0

    results = json.loads(result_file.read_text())
    gan_keys = {"task", "metric", "higher_is_better", "trials", "seed",
                "command", "mode", "settings", "final_metric_note",
                "controller", "controller_training", "machine",
                "elapsed_seconds", "methods"}
    assert gan_keys <= set(results)
    assert results["metric"] == "perplexity"
    assert results["higher_is_better"] is False
    assert results["settings"]["budget_seconds"] == 2.0
    assert list(results["methods"]) == list(ne.METHODS)

    for method, entry in results["methods"].items():
        assert len(entry["values"]) == 1
        assert entry["mean"] == entry["values"][0]
        (curve,) = entry["curves"]
        assert entry["mean"] == curve[-1][3]
        # Tracing alone takes longer than 2 s, so each run stops after
        # its first chunk of 4 steps.
        assert [point[1] for point in curve] == [0, 4]
        assert entry["steps"]["values"] == [4]
        assert curve[-1][2] == entry["mt_steps"]["values"][0]
        assert entry["seconds"]["values"][0] >= 2.0
        # Only AutoLoss pays for the evaluation before the first step.
        assert (curve[0][0] > 0.0) == (method == ne.AUTOLOSS)
        assert entry["test_perplexity"]["values"][0] > 1.0
        assert 0.0 <= entry["bleu"]["values"][0] <= 1.0
        (probabilities,) = entry["probabilities"]
        assert probabilities[0][0] == 4
        assert sum(probabilities[0][1:]) == pytest.approx(1.0)

    examples = results["methods"][ne.MT_ONLY]["examples"]
    assert len(examples) == 3
    assert examples[0]["reference"] == " ".join(
        ne.target_tokens(tiny_corpus, tiny_corpus.test.target_out[0], EOS))

    mt_only = results["methods"][ne.MT_ONLY]
    assert mt_only["mt_steps"]["values"] == [4]
    assert mt_only["probabilities"][0][0][1:] == [1.0, 0.0, 0.0]
    (history,) = results["methods"][ne.AUTOLOSS]["controller_history"]
    assert [entry["reward"] for entry in history] == [None]

    autoloss = results["methods"][ne.AUTOLOSS]
    (feature_curve,) = autoloss["feature_curves"]
    (curve,) = autoloss["curves"]
    assert [p[:3] for p in feature_curve] == [p[:3] for p in curve]
    assert feature_curve[-1][3] != pytest.approx(curve[-1][3])
    assert history[0]["feature_perplexity"] == feature_curve[-1][3]
    assert history[0]["perplexity"] == curve[-1][3]
    assert "feature_curves" not in mt_only
    assert "(the first 4)" in results["budget_note"]
    assert "16 validation sentences" in results["budget_note"]

    assert "valid PPL" in capsys.readouterr().out
    assert cli.main(["plot", str(result_file)]) == 0
    for suffix in ("", "_probabilities"):
        assert (tmp_path / f"nmt{suffix}.png").stat().st_size > 1000


@pytest.mark.slow
def test_nmt_cli_train_and_guide(tiny_cli, tmp_path, capsys):
    out = tmp_path / "controller"
    assert cli.main(["train-controller", "nmt", "--out", str(out),
                     "--max-steps", "12"]) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["training"]["task"] == "nmt"
    assert metadata["training"]["task_model_steps"] == 12
    assert metadata["feature_names"] == list(ne.FEATURE_NAMES)
    assert cli.main(["train-controller", "nmt", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main(["train-controller", "nmt", "--out", str(out),
                     "--resume", "--seed", "2"]) == 2
    assert "'seed': (0, 2)" in capsys.readouterr().err
    assert cli.main(["plot", str(out / "training" / ne.HISTORY_FILE),
                     "--out", str(tmp_path / "history.png")]) == 0
    assert (tmp_path / "history.png").stat().st_size > 1000

    assert cli.main(["guide", "nmt", "--controller", str(out),
                     "--max-steps", "8"]) == 0
    output = capsys.readouterr().out
    assert "test BLEU" in output
    assert "8 steps" in output


def test_nmt_cli_compare_subset(tiny_cli, tiny_corpus, tmp_path):
    result_file = tmp_path / "nmt.json"
    assert cli.main(["compare", "nmt", "--trials", "1", "--budget-seconds",
                     "2", "--methods", "AutoLoss", "MT", "--json",
                     str(result_file)]) == 0
    results = json.loads(result_file.read_text())
    # The comparison's own order, not the order given.
    assert list(results["methods"]) == ["MT", "AutoLoss"]
