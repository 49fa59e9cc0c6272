"""Tests of the multi-task seq2seq model on a tiny synthetic corpus.

Each new model traces its train step once (several seconds on 2 cores),
so the step tests share one fitted model.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from autoloss_models import seq2seq
from autoloss_tf import CyclicSchedule
from autoloss_tf import feature_names

from tiny_nmt_corpus import BOS
from tiny_nmt_corpus import EOS
from tiny_nmt_corpus import make_tiny_corpus


@pytest.fixture(scope="module")
def tiny_corpus():
    """Return the default tiny corpus (64 / 16 / 16 sentences)."""
    return make_tiny_corpus()


TINY = dict(source_vocabulary_size=16, target_vocabulary_size=19,
            num_pos_tags=5, num_lemma_classes=4, embedding_dim=8,
            encoder_units=4)
CYCLE = [seq2seq.MT, seq2seq.POS, seq2seq.LEMMA]
GROUP_LAYERS = {
    seq2seq.MT: "translation_decoder",
    seq2seq.POS: "pos_tagger",
    seq2seq.LEMMA: "lemma_tagger",
}


def _dataset(split, batch_size=8):
    arrays = {key: np.asarray(getattr(split, key), "int32")
              for key in seq2seq.BATCH_KEYS}
    return tf.data.Dataset.from_tensor_slices(arrays).batch(
        batch_size, drop_remainder=True)


def _snapshot(model):
    return {
        name: [v.numpy().copy() for v in getattr(model, name).trainable_variables]
        for name in ("encoder",) + tuple(GROUP_LAYERS.values())
    }


class _Snapshots(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.values = []
        self.actions = []

    def on_train_begin(self, logs=None):
        self.values.append(_snapshot(self.model))

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(_snapshot(self.model))
        self.actions.append(int(logs["action"]))


def _changed(before, after):
    return [not np.array_equal(b, a) for b, a in zip(before, after)]


@pytest.fixture(scope="module")
def fitted(tiny_corpus):
    """A tiny model after 3 epochs of mt, pos, lemma in turn (24 steps)."""
    keras.utils.set_random_seed(0)
    model = seq2seq.Seq2SeqMultiTask(**TINY)
    before = model.evaluate_split(tiny_corpus.train)
    model.compile(schedule=CyclicSchedule(CYCLE))
    recorder = _Snapshots()
    model.fit(_dataset(tiny_corpus.train), epochs=3, verbose=0,
              callbacks=[recorder])
    return model, recorder, before


def test_fit_cycles_all_three_tasks(fitted):
    model, recorder, _ = fitted
    assert recorder.actions == [0, 1, 2] * 8
    np.testing.assert_array_equal(model.applied_steps.numpy(), [8, 8, 8])
    np.testing.assert_allclose(model.probability_sums.numpy(), [8, 8, 8])


def test_fit_lowers_every_task_loss(fitted, tiny_corpus):
    model, _, before = fitted
    after = model.evaluate_split(tiny_corpus.train)
    for task in seq2seq.TASKS:
        assert after[task]["loss"] < before[task]["loss"], task


def test_step_updates_only_its_group(fitted):
    _, recorder, _ = fitted
    for index, action in enumerate(recorder.actions):
        before, after = recorder.values[index], recorder.values[index + 1]
        chosen = CYCLE[action]
        for task, layer in GROUP_LAYERS.items():
            changed = _changed(before[layer], after[layer])
            if task == chosen:
                assert all(changed), (index, layer)
            else:
                assert not any(changed), (index, layer)
        assert any(_changed(before["encoder"], after["encoder"])), index


def test_shared_optimizer_counts_every_step(fitted):
    model, _, _ = fitted
    optimizers = [model.task_optimizers[task] for task in seq2seq.TASKS]
    assert optimizers[0] is optimizers[1] is optimizers[2]
    assert len(model.action_optimizers) == 1
    assert int(optimizers[0].iterations) == 24
    assert optimizers[0].global_clipnorm == 1.0
    assert optimizers[0].learning_rate.numpy() == pytest.approx(5e-4)


def test_per_action_optimizers_own_their_groups():
    model = seq2seq.Seq2SeqMultiTask(**TINY, optimizer_state="per_action")
    model.compile(schedule=CyclicSchedule(CYCLE))
    assert len(model.action_optimizers) == 3
    encoder = {id(v) for v in model.encoder.trainable_variables}
    for task, layer in GROUP_LAYERS.items():
        optimizer = model.task_optimizers[task]
        assert optimizer in model.action_optimizers
        tracked = {id(v) for v in optimizer._trainable_variables}
        group = {id(v) for v in getattr(model, layer).trainable_variables}
        # Each Adam keeps moments for the encoder and its own head only.
        assert tracked == encoder | group, task


def test_extra_features_use_validation_losses(fitted, tiny_corpus):
    model, _, _ = fitted
    result = model.refresh_validation_features(tiny_corpus.valid)
    tracker = model.feature_tracker
    assert tracker.names == feature_names(
        seq2seq.TASKS, seq2seq.EXTRA_FEATURE_NAMES)
    values = model.extra_features(None).numpy()[0]
    training = tracker.loss_values.numpy()[0]
    validation = [result[task]["loss"] for task in seq2seq.TASKS]
    np.testing.assert_allclose(values[:2], validation[1:], rtol=1e-6)
    np.testing.assert_allclose(values[2:],
                               np.subtract(validation, training), atol=1e-5)
    assert tracker.validation.numpy()[0, 0] == pytest.approx(validation[0])


# Losses, perplexity and evaluation.

def test_masked_cross_entropy_by_hand():
    probabilities = np.array([
        [0.1, 0.5, 0.2, 0.2],   # label 1: -log 0.5
        [0.1, 0.25, 0.25, 0.4],  # label 2: -log 0.25
        [0.7, 0.1, 0.1, 0.1],   # label 0: padding, ignored
    ])
    total, count = seq2seq.masked_cross_entropy(
        np.log(probabilities), np.array([1, 2, 0]))
    assert float(count) == 2.0
    assert float(total) == pytest.approx(math.log(2) + math.log(4), rel=1e-6)
    # exp((log 2 + log 4) / 2) = sqrt(8).
    assert seq2seq.perplexity(total, count) == pytest.approx(math.sqrt(8))


def test_perplexity_of_uniform_prediction():
    total, count = seq2seq.masked_cross_entropy(
        np.zeros((2, 3, 7)), np.array([[1, 2, 3], [4, 0, 0]]))
    assert seq2seq.perplexity(total, count) == pytest.approx(7.0)


def test_perplexity_rejects_no_tokens():
    with pytest.raises(ValueError, match="token_count=0"):
        seq2seq.perplexity(0.0, 0)


def test_evaluate_split_weighs_tokens(tiny_corpus):
    model = seq2seq.Seq2SeqMultiTask(**TINY, seed=3)
    split = tiny_corpus.valid
    logits = model.task_logits(seq2seq.split_batch(split, slice(None)))
    labels = {seq2seq.MT: split.target_out, seq2seq.POS: split.pos,
              seq2seq.LEMMA: split.lemma}
    result = model.evaluate_split(split, batch_size=3)
    for task in seq2seq.TASKS:
        log_probabilities = tf.nn.log_softmax(logits[task]).numpy()
        mask = labels[task] != 0
        picked = np.take_along_axis(log_probabilities,
                                    labels[task][..., None], axis=-1)[..., 0]
        expected = -picked[mask].mean()
        assert result[task]["loss"] == pytest.approx(expected, rel=1e-5)
        assert result[task]["tokens"] == int(mask.sum())
    assert result["mt_perplexity"] == pytest.approx(
        math.exp(result[seq2seq.MT]["loss"]))


def test_greedy_decoding_matches_teacher_forcing(tiny_corpus):
    model = seq2seq.Seq2SeqMultiTask(**TINY, seed=1)
    source = tiny_corpus.test.source
    decoded = model.translate(source, BOS, EOS, max_length=6, batch_size=5)
    assert decoded.shape == (len(source), 6)
    target_in = np.concatenate(
        [np.full((len(source), 1), BOS, "int32"), decoded[:, :-1]], axis=1)
    logits = model({"source": source, "target_in": target_in}).numpy()
    forced = logits.argmax(axis=-1)
    for row, ids in enumerate(decoded):
        ends = np.flatnonzero(ids == EOS)
        length = ends[0] + 1 if len(ends) else len(ids)
        np.testing.assert_array_equal(ids[:length], forced[row, :length])
        assert not ids[length:].any()


# Arguments.

@pytest.mark.parametrize("overrides, message", [
    (dict(optimizer_state="mixed"), "optimizer_state"),
    (dict(num_pos_tags=1), "padding id 0"),
    (dict(encoder_units=0), "encoder_units"),
    (dict(dropout=1.0), "dropout"),
    (dict(population=2), "population"),
])
def test_constructor_rejects_bad_arguments(overrides, message):
    with pytest.raises(ValueError, match=message):
        seq2seq.Seq2SeqMultiTask(**dict(TINY, **overrides))


def test_feature_validation_data_is_rejected():
    model = seq2seq.Seq2SeqMultiTask(**TINY)
    with pytest.raises(ValueError, match="refresh_validation_features"):
        model.validation_metric(None, None)
