"""Multi-task NMT experiments: baselines and an online PPO controller.

Section 5.1.3 of the AutoLoss paper (Xu et al., ICLR 2019) trains a
German-to-English translation model with two auxiliary German tagging
tasks on one shared encoder, and compares how to schedule the three
tasks:

- `"MT"`: translation only;
- `"FixedRatio"`: each step's task drawn with fixed probabilities
  proportional to the size of each task's training data;
- `"FineTunedMT"`: FixedRatio, then translation only for the final part
  of the budget (`fine_tune_fraction`, a third by default);
- `"AutoLoss"`: an MLP controller picks the task of every step and is
  trained online, in the same run, by PPO with the segment reward of the
  paper's section 4.4,

      R = -C * (P(t+T) - P(t)) / max(|P(t) - P(t-kT)| / k, min_rate),

  where P is the translation perplexity of the first
  `feature_valid_sentences` validation sentences at segment boundaries
  (the sign is flipped because lower is better). Every step of
  the segment gets R. The first segment of a run has no earlier rate,
  so it gets no reward and adds no transitions. With `reward_per_second`
  (the default), P(t+T) - P(t) is first scaled by the mean counted
  seconds of the k earlier segments over those of the last one. Budgets
  are counted in seconds and a translation step costs about 4 tagging
  steps, so a gain per segment alone rewards translation-heavy segments
  for the compute they use.

Task size. All three tasks label the same sentences here, so FixedRatio
weighs a task by its labelled tokens in the training split. A translation
example counts its source and target subwords, and a tagging example its
source positions that have a label (one per German word). On the de-en
dictionary corpus with the quick settings this gives 0.604 / 0.198 /
0.198 for mt / pos / lemma (434,187 / 142,345 / 142,345 tokens). The
probabilities used are stated in the results.

Compute budget. Every method runs for the same budget of `clock` seconds
(wall-clock time by default), the compute a user pays for. Validation
evaluations every T steps give every method its learning curve and do not
count in the budget. AutoLoss's reward and features need an evaluation of
their own after every segment, which counts. It reads the first
`feature_valid_sentences` validation sentences (200 of 968 in quick mode),
so that it costs less of the budget than an evaluation of the whole
split. The reported perplexity always reads `valid_sentences`. Where the
feature evaluation reads all of those sentences (full mode, where
`feature_valid_sentences` is None), it is the reported evaluation too,
and AutoLoss's curve evaluations count. The controller's work (its
forward pass in every step, its PPO updates) counts too, and so does graph tracing in the first chunk of
every run. Curves are recorded against counted seconds, total steps and
translation steps. A run trains at least one chunk of T steps, and it
stops at the first chunk end past its budget. With `max_steps` set, a run
also stops at that many steps, and the progress feature t / T takes it as
its T. Otherwise that T is estimated from the step rate so far.

NOTE: on shared CPU cores the step rate depends on the other processes
running at the same time, so wall-clock budgets of runs made at
different times are not equally large in compute. `clock="process"`
counts this process's CPU time instead. On 2 shared cores, CPU time per
translation step varied by about 10% between rounds and wall time by
2.7x (benchmarks/nmt_step_times.py).

NOTE: a quick-mode run gives the online controller about 8-10 PPO
updates. In `compare nmt --clock process` on 2 cores (3 trials from a
uniform controller, one TensorFlow thread per run), P(mt) rose from 0.33
to 0.48-0.53 by the end of each run. AutoLoss's mean validation
perplexity was 64.4 against FixedRatio's 65.4, MT-only's 74.8 and
FineTunedMT's 61.8. With the whole validation split as the counted
evaluation it had been 70.6.
"""

import collections
import dataclasses
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from autoloss_models import seq2seq
from autoloss_models.gan_experiments import batch_indices
from autoloss_models.gan_experiments import segment_reward
from autoloss_tf import FixedSchedule
from autoloss_tf import LearnedSchedule
from autoloss_tf import MLPController
from autoloss_tf import RandomSchedule
from autoloss_tf import feature_names as standard_feature_names
from autoloss_tf import ppo
from autoloss_tf import schedules as schedules_lib
from autoloss_tf import training

MODES = ("quick", "full")
CLOCKS = ("wall", "process")
ACTION_NAMES = seq2seq.TASKS
FEATURE_NAMES = tuple(standard_feature_names(ACTION_NAMES,
                                             seq2seq.EXTRA_FEATURE_NAMES))
MT_ONLY, FIXED_RATIO, FINE_TUNED_MT, AUTOLOSS = (
    "MT", "FixedRatio", "FineTunedMT", "AutoLoss")
METHODS = (MT_ONLY, FIXED_RATIO, FINE_TUNED_MT, AUTOLOSS)
# Divisors of the controller's inputs, in FEATURE_NAMES order, so every
# input is of order 1. They come from the readings of a 600-step
# quick-mode FixedRatio run (seed 0) on the de-en corpus. The normalized
# gradient norms were 3e-4 to 1.1e-3. The training losses were 5.3-6.0
# (mt), 1.9-3.4 (pos) and 1.1-2.1 (lemma). The validation loss was 5.3-5.9,
# its EMA 6.8-7.7 and the EMA of its differences -0.19 to -0.16. The
# tagger validation losses were 1.3-4.0 and the gaps 0 to 1.9.
FEATURE_SCALE = (1.0, 1e-3, 1e-3, 1e-3, 5.0, 2.0, 2.0, 5.0, 5.0, 0.1,
                 2.0, 2.0, 1.0, 1.0, 1.0)
CHECKPOINT_FILE = "checkpoint.npz"
HISTORY_FILE = "history.json"
CORPUS_SEED = 1234


@dataclasses.dataclass(frozen=True)
class NmtSettings:
    """Settings of NMT runs and of online controller training.

    Attributes:
        mode: `"quick"`, `"full"` or a caller's label.
        budget_seconds: counted seconds per run.
        max_steps: optional step limit per run (None: the budget only).
        clock: `"wall"` (wall-clock time) or `"process"` (CPU time of this
            process).
        segment_length: T, steps between two validation evaluations; also
            the controller's segment.
        expected_steps: T of the progress feature before the first chunk
            has measured the step rate.
        vocabulary_size: requested subword vocabulary size per language.
        min_word_count: the WordPiece learner's minimum word count; a word
            seen fewer times gets no subword of its own.
        source_length: source positions per sentence.
        target_length: target positions per sentence; also the greedy
            decoding length.
        lemma_classes: lemma-edit classes kept by the corpus.
        valid_sentences: validation sentences of the reported perplexity
            (the first ones of the split), or None for all. They are
            evaluated every segment, and the evaluation counts in the
            budget only where it is also a controller's feature evaluation.
        feature_valid_sentences: validation sentences of the counted
            evaluation after every segment that gives a controller its
            validation features and its reward (the first ones of the
            split), or None for the same as `valid_sentences`. Runs of
            fixed schedules do not make this evaluation.
        test_sentences: test sentences for test perplexity and BLEU, or
            None for all.
        batch_size: sentences per step.
        embedding_dim, encoder_units, encoder_layers, decoder_layers,
            tagger_layers, dropout, learning_rate, global_clipnorm,
            optimizer_state: `Seq2SeqMultiTask` arguments.
        fixed_ratio: FixedRatio probabilities of mt, pos and lemma, or None
            to weigh the tasks by their labelled training tokens.
        fine_tune_fraction: final fraction of the budget that FineTunedMT
            trains translation only.
        reward_k, reward_scale, min_rate, reward_clip: k, C, the floor of
            the denominator (perplexity per segment) and the clip of the
            segment reward.
        reward_per_second: whether the reward compares perplexity gains
            per counted second instead of per segment. A translation step
            costs about 4 times a tagging step, so per segment a
            translation-heavy policy gains most, while per second of the
            budget it need not.
        controller_hidden_units: hidden units of the controller and the
            critic.
        controller_learning_rate: Adam learning rate of PPO.
        buffer_size, minibatch_size, ppo_epochs, clip_ratio, gamma,
            entropy_coefficient, value_coefficient: `PPOUpdater`
            arguments.
    """

    mode: str
    budget_seconds: float
    max_steps: object
    clock: str
    segment_length: int
    expected_steps: int
    vocabulary_size: int
    min_word_count: int
    source_length: int
    target_length: int
    lemma_classes: int
    valid_sentences: object
    feature_valid_sentences: object
    test_sentences: object
    batch_size: int
    embedding_dim: int
    encoder_units: int
    encoder_layers: int
    decoder_layers: int
    tagger_layers: int
    dropout: float
    learning_rate: float
    global_clipnorm: float
    optimizer_state: str
    fixed_ratio: object
    fine_tune_fraction: float
    reward_k: int
    reward_scale: float
    min_rate: float
    reward_clip: float
    reward_per_second: bool
    controller_hidden_units: int
    controller_learning_rate: float
    buffer_size: int
    minibatch_size: int
    ppo_epochs: int
    clip_ratio: float
    gamma: float
    entropy_coefficient: float
    value_coefficient: float

    def __post_init__(self):
        _check_settings(self)

    def to_dict(self):
        """Return the settings as a JSON-serializable dict."""
        values = dataclasses.asdict(self)
        if values["fixed_ratio"] is not None:
            values["fixed_ratio"] = list(values["fixed_ratio"])
        return values


# Quick mode is sized for 2 CPU cores: embedding 128, 64 units per encoder
# direction, one layer each, Dense taggers, vocabularies of about 2,600,
# length 30, batch 64. 360 counted seconds per run leave room for the
# uncounted evaluations, so the 12 runs of `compare nmt --trials 3` take
# about 90 minutes. On 2 shared cores (load average 4.4-5.5,
# benchmarks/nmt_step_times.py) a translation step took 130-350 ms and a
# tagging step 45-90 ms of wall time, so a run makes roughly 2,000-4,000
# steps. Segments of 50 steps and a PPO buffer of 500 transitions, a
# quarter of the paper's, give such a run several PPO updates. One
# validation evaluation (968 sentences) took 0.8 s there. Full mode uses
# the paper's appendix A.3: a 2-layer encoder of 256 units (read here as
# 128 per direction, so that the 256-unit decoder can take dot attention
# over it), 2-layer decoders of 256 units, batch 128 and dropout 0.3. It
# requests 10,000 subwords with a minimum word count of 3, which gives
# 10,000 German and 8,104 English tokens on the de-en dictionary corpus.
# Quick mode's count of 10 gives 2,684 / 2,576 for any larger target. A
# count of 2 gave 6,945 / 10,000, because the learner searches between
# its count bounds for a threshold that fits the target. Full mode also
# uses PPO buffer 2,000 and minibatch 64.
_COMMON = dict(
    clock="wall", max_steps=None, source_length=30, target_length=30,
    lemma_classes=40, embedding_dim=128, learning_rate=5e-4,
    global_clipnorm=1.0, optimizer_state="shared", fixed_ratio=None,
    fine_tune_fraction=1.0 / 3.0, reward_k=3, reward_scale=1.0,
    reward_clip=5.0, reward_per_second=True, controller_hidden_units=32,
    controller_learning_rate=1e-3, minibatch_size=64, ppo_epochs=4,
    clip_ratio=0.2, gamma=0.95, entropy_coefficient=0.01,
    value_coefficient=0.5,
)
_MODE_SETTINGS = {
    "quick": dict(
        mode="quick", budget_seconds=360.0, segment_length=50,
        expected_steps=4000, vocabulary_size=3000, min_word_count=10,
        valid_sentences=None, feature_valid_sentences=200,
        test_sentences=None, batch_size=64, encoder_units=64,
        encoder_layers=1, decoder_layers=1, tagger_layers=0, dropout=0.0,
        min_rate=0.5, buffer_size=500,
    ),
    # NOTE: the one-hour budget is an estimate of what a GPU needs to get
    # near convergence on this corpus; it was not measured.
    "full": dict(
        mode="full", budget_seconds=3600.0, segment_length=200,
        expected_steps=40000, vocabulary_size=10000, min_word_count=3,
        valid_sentences=None, feature_valid_sentences=None,
        test_sentences=None, batch_size=128, encoder_units=128,
        encoder_layers=2, decoder_layers=2, tagger_layers=2, dropout=0.3,
        min_rate=0.05, buffer_size=2000,
    ),
}


def settings_for(mode="quick", **overrides):
    """Return the `NmtSettings` of a mode with some fields replaced.

    Raises:
        ValueError: for an unknown mode or field, or invalid values.
    """
    if mode not in MODES:
        raise ValueError(
            f"Unknown NMT mode. Received: mode={mode!r}. Choose one of "
            f"{MODES}."
        )
    values = dict(_COMMON, **_MODE_SETTINGS[mode])
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise ValueError(
            f"Unknown NmtSettings fields: {unknown}. Known fields: "
            f"{sorted(values)}."
        )
    values.update(overrides)
    if values["fixed_ratio"] is not None:
        values["fixed_ratio"] = tuple(float(p) for p in values["fixed_ratio"])
    return NmtSettings(**values)


def _check_settings(settings):
    positive_integers = (
        "segment_length", "expected_steps", "vocabulary_size",
        "min_word_count",
        "source_length", "target_length", "lemma_classes", "batch_size",
        "embedding_dim", "encoder_units", "encoder_layers", "decoder_layers",
        "reward_k", "controller_hidden_units", "buffer_size",
        "minibatch_size", "ppo_epochs",
    )
    for name in positive_integers:
        _check_positive_integer(name, getattr(settings, name))

    for name in ("max_steps", "valid_sentences", "feature_valid_sentences",
                 "test_sentences"):
        value = getattr(settings, name)
        if value is not None:
            _check_positive_integer(name, value, "or None for no limit")
    if isinstance(settings.tagger_layers, bool) or not isinstance(
            settings.tagger_layers, int) or settings.tagger_layers < 0:
        raise ValueError(
            "`tagger_layers` must be a non-negative integer. Received: "
            f"tagger_layers={settings.tagger_layers!r}."
        )

    for name in ("budget_seconds", "learning_rate", "global_clipnorm",
                 "min_rate", "reward_clip", "controller_learning_rate",
                 "clip_ratio"):
        if not getattr(settings, name) > 0:
            raise ValueError(
                f"`{name}` must be > 0. Received: "
                f"{name}={getattr(settings, name)!r}."
            )
    if not isinstance(settings.reward_per_second, bool):
        raise ValueError(
            "`reward_per_second` must be True or False. Received: "
            f"reward_per_second={settings.reward_per_second!r}."
        )
    if settings.clock not in CLOCKS:
        raise ValueError(
            f"`clock` must be one of {CLOCKS}. Received: "
            f"clock={settings.clock!r}."
        )

    if settings.optimizer_state not in seq2seq.OPTIMIZER_STATES:
        raise ValueError(
            f"`optimizer_state` must be one of {seq2seq.OPTIMIZER_STATES}. "
            f"Received: optimizer_state={settings.optimizer_state!r}."
        )
    if not 0.0 <= settings.dropout < 1.0:
        raise ValueError(
            "`dropout` must be in [0, 1). Received: "
            f"dropout={settings.dropout!r}."
        )
    if not 0.0 < settings.fine_tune_fraction < 1.0:
        raise ValueError(
            "`fine_tune_fraction` must be in (0, 1). Received: "
            f"fine_tune_fraction={settings.fine_tune_fraction!r}."
        )
    if not 0.0 <= settings.gamma <= 1.0:
        raise ValueError(
            f"`gamma` must be in [0, 1]. Received: gamma={settings.gamma!r}."
        )
    for name in ("entropy_coefficient", "value_coefficient"):
        if not getattr(settings, name) >= 0:
            raise ValueError(
                f"`{name}` must be >= 0. Received: "
                f"{name}={getattr(settings, name)!r}."
            )

    if settings.fixed_ratio is not None:
        ratio = settings.fixed_ratio
        if len(ratio) != len(ACTION_NAMES) or min(ratio) < 0 or not (
                sum(ratio) > 0):
            raise ValueError(
                "`fixed_ratio` must give one non-negative weight per task "
                f"{ACTION_NAMES} with a positive sum. Received: "
                f"fixed_ratio={ratio!r}. Pass for example (0.6, 0.2, 0.2)."
            )


def _check_positive_integer(name, value, alternative=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        rule = "a positive integer"
        if alternative:
            rule += f" {alternative}"
        raise ValueError(
            f"`{name}` must be {rule}. Received: {name}={value!r}."
        )


# Data -------------------------------------------------------------------------

def load_corpus(settings, progress=None):
    """Load the de-en corpus with the settings' vocabulary and lengths."""
    from autoloss_models import nmt_data

    return nmt_data.load_corpus(
        vocabulary_size=settings.vocabulary_size,
        source_length=settings.source_length,
        target_length=settings.target_length,
        lemma_classes=settings.lemma_classes, seed=CORPUS_SEED,
        progress=progress, min_word_count=settings.min_word_count,
    )


def validation_counts(settings, available):
    """Return the sentence counts of the reported and the feature evaluation.

    Both counts are capped at the `available` validation sentences, and
    the feature count also at the reported one.
    """
    valid = available
    if settings.valid_sentences is not None:
        valid = min(settings.valid_sentences, available)
    feature = valid
    if settings.feature_valid_sentences is not None:
        feature = min(settings.feature_valid_sentences, valid)
    return valid, feature


class SplitView:
    """The first `count` sentences of a split, as the arrays a model reads."""

    def __init__(self, split, count=None):
        available = len(split.source)
        count = available if count is None else min(int(count), available)
        for key in seq2seq.BATCH_KEYS:
            setattr(self, key, np.asarray(getattr(split, key)[:count],
                                          "int32"))

    def __len__(self):
        return len(self.source)


def model_sizes(corpus):
    """Return the id counts the model needs, padding 0 included.

    Each count is the larger of the corpus's list length and the largest
    id in any split plus one, so an id outside a list fails loudly in the
    corpus rather than in an embedding lookup.
    """
    splits = (corpus.train, corpus.valid, corpus.test)

    def largest(key):
        return max(int(np.max(getattr(split, key), initial=0))
                   for split in splits)

    return {
        "source_vocabulary_size": max(len(corpus.source_vocabulary),
                                      largest("source") + 1),
        "target_vocabulary_size": max(len(corpus.target_vocabulary),
                                      largest("target_in") + 1,
                                      largest("target_out") + 1),
        "num_pos_tags": max(len(corpus.pos_tags), largest("pos") + 1, 2),
        "num_lemma_classes": max(len(corpus.lemma_classes),
                                 largest("lemma") + 1, 2),
    }


def special_ids(split):
    """Return (beginning-of-sentence id, end-of-sentence id) of a split.

    The beginning id is the first entry of every `target_in` row, the end
    id the last non-padding entry of every `target_out` row.

    Raises:
        ValueError: if rows disagree or a row is empty.
    """
    target_in = np.asarray(split.target_in)
    target_out = np.asarray(split.target_out)
    lengths = (target_out != 0).sum(axis=1)
    if len(target_in) == 0 or lengths.min() == 0:
        raise ValueError(
            "Every target sentence needs at least its end-of-sentence id. "
            f"Received: {int((lengths == 0).sum())} empty target_out rows."
        )
    beginnings = np.unique(target_in[:, 0])
    ends = np.unique(target_out[np.arange(len(target_out)), lengths - 1])
    if len(beginnings) != 1 or len(ends) != 1:
        raise ValueError(
            "Every target_in row must start with the same beginning id and "
            "every target_out row must end with the same end id. Received: "
            f"beginnings {beginnings[:5].tolist()}, ends "
            f"{ends[:5].tolist()}."
        )
    return int(beginnings[0]), int(ends[0])


def labelled_tokens(split):
    """Return the labelled training tokens of mt, pos and lemma.

    A translation example counts its source and target tokens, a tagging
    example the source positions that have a label.
    """
    source = int(np.count_nonzero(split.source))
    target = int(np.count_nonzero(split.target_out))
    return {
        seq2seq.MT: source + target,
        seq2seq.POS: int(np.count_nonzero(split.pos)),
        seq2seq.LEMMA: int(np.count_nonzero(split.lemma)),
    }


def fixed_ratio_probabilities(settings, corpus):
    """Return the FixedRatio probability of each task, in task order."""
    if settings.fixed_ratio is not None:
        weights = np.asarray(settings.fixed_ratio, "float64")
    else:
        counts = labelled_tokens(corpus.train)
        weights = np.asarray([counts[task] for task in ACTION_NAMES],
                             "float64")
    return [float(w) for w in weights / weights.sum()]


# Schedules ----------------------------------------------------------------

@keras.saving.register_keras_serializable(package="autoloss_models")
class PhaseSchedule(schedules_lib.Schedule):
    """Follow one schedule, then another once `phase` is set to 1.

    The switch is made from outside (`NmtRun` sets it when the run has
    used `switch_fraction` of its budget), because under a wall-clock
    budget the switching step is not known in advance.

    Args:
        first: the `Schedule` of phase 0.
        second: the `Schedule` of phase 1.
        switch_fraction: the fraction of the budget after which phase 1
            starts, in (0, 1).
    """

    def __init__(self, first, second, switch_fraction, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < switch_fraction < 1.0:
            raise ValueError(
                "`switch_fraction` must be in (0, 1). Received: "
                f"switch_fraction={switch_fraction!r}."
            )
        self.first = first
        self.second = second
        self.switch_fraction = float(switch_fraction)
        self.phase = self.add_weight(name="phase", shape=(),
                                     initializer="zeros", dtype="int32",
                                     trainable=False)

    def bind(self, action_names, feature_names, population):
        super().bind(action_names, feature_names, population)
        self.first.bind(action_names, feature_names, population)
        self.second.bind(action_names, feature_names, population)

    def decide(self, features, step):
        first_actions, first_probabilities = schedules_lib.decide(
            self.first, features, step)
        second_actions, second_probabilities = schedules_lib.decide(
            self.second, features, step)
        later = tf.equal(self.phase, 1)
        return (tf.where(later, second_actions, first_actions),
                tf.where(later, second_probabilities, first_probabilities))

    def select(self, features, step):
        return self.decide(features, step)[0]

    def probabilities(self, features, step=0):
        return self.decide(features, step)[1]

    def get_config(self):
        config = super().get_config()
        config.update(
            first=keras.saving.serialize_keras_object(self.first),
            second=keras.saving.serialize_keras_object(self.second),
            switch_fraction=self.switch_fraction,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("first", "second"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def method_schedule(method, settings, corpus, seed):
    """Return the schedule of a baseline method name."""
    if method == MT_ONLY:
        return FixedSchedule(seq2seq.MT)
    probabilities = fixed_ratio_probabilities(settings, corpus)
    fixed = RandomSchedule(probabilities, seed=seed)
    if method == FIXED_RATIO:
        return fixed
    if method == FINE_TUNED_MT:
        return PhaseSchedule(fixed, FixedSchedule(seq2seq.MT),
                             1.0 - settings.fine_tune_fraction)
    raise ValueError(
        f"Unknown baseline method. Received: {method!r}. Choose one of "
        f"{METHODS[:3]}; {AUTOLOSS} trains a controller instead."
    )


# Runs ---------------------------------------------------------------------

def make_model(settings, corpus, seed):
    """Create the `Seq2SeqMultiTask` of `settings` for `corpus`."""
    return seq2seq.Seq2SeqMultiTask(
        **model_sizes(corpus), embedding_dim=settings.embedding_dim,
        encoder_units=settings.encoder_units,
        encoder_layers=settings.encoder_layers,
        decoder_layers=settings.decoder_layers,
        tagger_layers=settings.tagger_layers, dropout=settings.dropout,
        learning_rate=settings.learning_rate,
        global_clipnorm=settings.global_clipnorm,
        optimizer_state=settings.optimizer_state, seed=seed,
    )


def make_controller(settings, seed=0):
    """Create the MLP controller; its zero output layer makes it uniform."""
    return MLPController(
        num_features=len(FEATURE_NAMES), num_actions=len(ACTION_NAMES),
        hidden_units=settings.controller_hidden_units, seed=seed,
        feature_scale=list(FEATURE_SCALE),
    )


def _clock(kind):
    return time.process_time if kind == "process" else time.perf_counter


class NmtRun:
    """One training run under a schedule and a compute budget.

    The run trains in chunks of `segment_length` steps. Validation
    perplexity is evaluated before the first chunk and after every chunk
    (see the module docstring for which seconds count).

    Args:
        settings: `NmtSettings`.
        corpus: the corpus (train, valid and test splits).
        schedule: the `Schedule` over `ACTION_NAMES`.
        seed: seed of the initial weights, dropout and batch order.
        evaluations_count: whether the feature evaluation counts in the
            budget and reads `feature_valid_sentences`; without it the
            features read the reported split. Defaults to False.

    Attributes:
        model: the `Seq2SeqMultiTask`.
        step: steps done.
        seconds: counted seconds so far.
        curve: list of [seconds, steps, translation steps, validation
            perplexity], the reported curve.
        feature_curve: the same points with the perplexity of
            `feature_valid`, the split of the validation features.
        valid: the reported validation sentences (`valid_sentences`).
        feature_valid: the validation sentences of the features, the
            first `feature_valid_sentences` of the split when the run's
            evaluations count and that is fewer; otherwise `valid`.
        probabilities: list of [steps, p_mt, p_pos, p_lemma], the
            schedule's mean probability of each task over the chunk
            before.
    """

    def __init__(self, settings, corpus, schedule, seed,
                 evaluations_count=False):
        self.settings = settings
        self.seed = int(seed)
        self.evaluations_count = bool(evaluations_count)
        self.clock = _clock(settings.clock)
        self.train_arrays = {
            key: tf.constant(np.asarray(getattr(corpus.train, key), "int32"))
            for key in seq2seq.BATCH_KEYS
        }
        self.num_sentences = int(len(corpus.train.source))
        valid_count, feature_count = validation_counts(
            settings, len(corpus.valid.source))
        self.valid = SplitView(corpus.valid, valid_count)
        self.feature_valid = self.valid
        if self.evaluations_count and feature_count < valid_count:
            self.feature_valid = SplitView(corpus.valid, feature_count)
        self.step = 0
        self.seconds = 0.0
        self.curve = []
        self.feature_curve = []
        self.probabilities = []
        self.model = make_model(settings, corpus, self.seed)
        self.model.compile(schedule=schedule,
                           total_steps=self._progress_steps())

    @property
    def schedule(self):
        return self.model.schedule

    @property
    def mt_steps(self):
        return int(self.model.applied_steps.numpy()[0])

    def budget_fraction(self):
        """Return the used fraction of the budget (seconds or steps)."""
        fraction = self.seconds / self.settings.budget_seconds
        if self.settings.max_steps is not None:
            fraction = max(fraction, self.step / self.settings.max_steps)
        return fraction

    @property
    def finished(self):
        """True once the budget is used up; never before the first chunk."""
        return self.step > 0 and self.budget_fraction() >= 1.0

    def _progress_steps(self):
        """Return T of the progress feature t / T for the next chunk."""
        if self.settings.max_steps is not None:
            return self.settings.max_steps
        if self.step == 0 or self.seconds <= 0:
            return self.settings.expected_steps
        estimate = self.step * self.settings.budget_seconds / self.seconds
        return max(int(round(estimate)), self.step + 1)

    def timed(self, function, *args, counted=True):
        """Call `function(*args)`; add its duration to `seconds` if counted."""
        started = self.clock()
        result = function(*args)
        if counted:
            self.seconds += self.clock() - started
        return result

    def evaluate(self):
        """Evaluate the validation features and the reported perplexity.

        The features come from `feature_valid`; that evaluation counts in
        the budget when `evaluations_count` is set. Its perplexity is
        appended to `feature_curve`. When `feature_valid` is a subset of
        `valid`, an uncounted evaluation of `valid` gives the reported
        perplexity for `curve`. Otherwise both lists get the same value.

        Returns:
            The perplexity on `feature_valid`, which a reward compares.
        """
        result = self.timed(self.model.refresh_validation_features,
                            self.feature_valid,
                            counted=self.evaluations_count)
        feature_value = result["mt_perplexity"]
        point = [round(self.seconds, 3), self.step, self.mt_steps]
        self.feature_curve.append(point + [feature_value])
        value = feature_value
        if self.feature_valid is not self.valid:
            value = self.model.evaluate_split(self.valid)["mt_perplexity"]
        self.curve.append(point + [value])
        return feature_value

    def train_chunk(self):
        """Run the next chunk of steps (no evaluation); return its length."""
        steps = self.settings.segment_length
        if self.settings.max_steps is not None:
            steps = min(steps, self.settings.max_steps - self.step)
        schedule = self.schedule
        if isinstance(schedule, PhaseSchedule) and (
                self.budget_fraction() >= schedule.switch_fraction):
            schedule.phase.assign(1)
        self.model.total_steps_setting = self._progress_steps()
        indices = batch_indices(self.num_sentences, self.settings.batch_size,
                                self.seed, self.step, steps)
        arrays = self.train_arrays
        dataset = tf.data.Dataset.from_tensor_slices(indices).map(
            lambda rows: {key: tf.gather(values, rows)
                          for key, values in arrays.items()}
        )
        sums_before = self.model.probability_sums.numpy().copy()
        self.timed(lambda: self.model.fit(dataset, epochs=1, verbose=0,
                                          shuffle=False))
        self.step += steps
        mean = (self.model.probability_sums.numpy() - sums_before) / steps
        self.probabilities.append([self.step] + [float(p) for p in mean])
        return steps

    def test_results(self, corpus, bos_id, eos_id, examples=3):
        """Return test perplexity, corpus BLEU and a few translations.

        None of it is counted in the budget. `examples` lists the first
        test sentences with their reference and greedy translation.
        """
        test = SplitView(corpus.test, self.settings.test_sentences)
        result = self.model.evaluate_split(test)
        references, hypotheses = translate_split(
            self.model, corpus, test, bos_id, eos_id,
            self.settings.target_length,
        )
        sources = list(getattr(corpus.test, "german", []))
        example_rows = []
        for index in range(min(examples, len(references))):
            example_rows.append({
                "source": sources[index] if index < len(sources) else None,
                "reference": " ".join(references[index]),
                "translation": " ".join(hypotheses[index]),
            })
        return {"test_perplexity": result["mt_perplexity"],
                "bleu": corpus_bleu(references, hypotheses),
                "examples": example_rows}

    def summary(self):
        """Return the run's curves and counters as a JSON-ready dict.

        Its `feature_curve` equals `curve` when the features read the
        reported split, as in runs of fixed schedules.
        """
        return {
            "seed": self.seed, "steps": self.step, "mt_steps": self.mt_steps,
            "seconds": round(self.seconds, 3),
            "applied_steps": [int(v) for v in
                              self.model.applied_steps.numpy()],
            "curve": [list(point) for point in self.curve],
            "feature_curve": [list(point) for point in self.feature_curve],
            "probabilities": [list(point) for point in self.probabilities],
            "final": self.curve[-1][3] if self.curve else None,
        }

    # State ---------------------------------------------------------------

    def _state_variables(self):
        model = self.model
        excluded = {id(v) for v in model.schedule.variables}
        optimizers = {id(o): o for o in model.task_optimizers.values()}
        variables, seen = [], set(excluded)
        candidates = list(model.variables)
        for optimizer in optimizers.values():
            candidates += list(optimizer.variables)
        for variable in candidates:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
        return variables

    def state_arrays(self, prefix="nmt_"):
        """Return every value a run changes, as a dict of arrays.

        These are the weights, the optimizers, the features, the counters
        and the dropout seeds. Schedule variables are not included.
        """
        return training.variables_to_arrays(self._state_variables(), prefix)

    def load_state_arrays(self, arrays, prefix="nmt_"):
        """Restore values written by `state_arrays` into this run's model."""
        training.assign_from_arrays(self._state_variables(), arrays, prefix,
                                    "NMT")


def run_baseline(method, settings, corpus, seed, progress=None):
    """Train one run of a baseline method; return its summary and test results.

    Args:
        method: `"MT"`, `"FixedRatio"` or `"FineTunedMT"`.
        settings: `NmtSettings`.
        corpus: the corpus.
        seed: seed of weights, dropout, batch order and sampling.
        progress: optional callable(run) after every chunk.
    """
    schedule = method_schedule(method, settings, corpus, seed)
    run = NmtRun(settings, corpus, schedule, seed)
    run.evaluate()
    while not run.finished:
        run.train_chunk()
        run.evaluate()
        if progress is not None:
            progress(run)
    return _finish(run, corpus)


def guided_run(settings, corpus, controller, seed, decoding="sample",
               progress=None):
    """Train one run under a trained, frozen controller.

    `decoding` is `LearnedSchedule`'s: "sample", "greedy" or "dither".

    Its feature evaluations count in the budget (see `NmtRun.evaluate`).
    """
    schedule = LearnedSchedule(
        controller, seed=seed, decoding=decoding, feature_names=FEATURE_NAMES,
        action_names=ACTION_NAMES,
    )
    run = NmtRun(settings, corpus, schedule, seed, evaluations_count=True)
    run.evaluate()
    while not run.finished:
        run.train_chunk()
        run.evaluate()
        if progress is not None:
            progress(run)
    return _finish(run, corpus)


def _finish(run, corpus):
    bos_id, eos_id = special_ids(corpus.train)
    result = run.summary()
    result.update(run.test_results(corpus, bos_id, eos_id))
    return result


# Online controller training ---------------------------------------------------

class OnlineControllerTrainer:
    """Train the NMT controller online by PPO over one or more runs.

    Each run trains a new model (seed `seed + run`) under the controller,
    which samples every task. After each segment of T steps the trainer
    evaluates the feature sentences and the reported validation split
    (`NmtRun.evaluate`), computes the segment reward from the former and
    adds the segment's transitions to the PPO buffer. When the buffer is
    full, it runs one PPO update. The feature evaluation and PPO time
    count in the run's budget. With a `directory`, an atomic checkpoint is written
    after every segment (not counted), and `resume` continues from it.

    Args:
        settings: `NmtSettings`.
        corpus: the corpus.
        directory: where `checkpoint.npz` and `history.json` go, or None
            for no checkpoints.
        seed: seed of the first run; run r uses seed + r. Defaults to 0.
        controller: the controller to train. Defaults to
            `make_controller(settings, seed)`.

    Attributes:
        history: one dict per segment.
        runs: the finished runs' summaries.
        updater: the `PPOUpdater`.
    """

    def __init__(self, settings, corpus, directory=None, seed=0,
                 controller=None):
        self.settings = settings
        self.corpus = corpus
        self.directory = directory
        self.seed = int(seed)
        if controller is None:
            controller = make_controller(settings, self.seed)
        self.controller = controller
        self.updater = ppo.PPOUpdater(
            self.controller,
            critic=ppo.ValueNetwork(
                len(FEATURE_NAMES), settings.controller_hidden_units,
                feature_scale=list(FEATURE_SCALE), seed=self.seed + 1,
            ),
            learning_rate=settings.controller_learning_rate,
            clip_ratio=settings.clip_ratio, gamma=settings.gamma,
            epochs=settings.ppo_epochs,
            minibatch_size=settings.minibatch_size,
            buffer_size=settings.buffer_size,
            value_coefficient=settings.value_coefficient,
            entropy_coefficient=settings.entropy_coefficient,
            seed=self.seed,
        )
        self.history = []
        self.runs = []
        self.saved_settings = None
        self.saved_seed = None
        self._run = None
        self._finished_run = None
        self._run_index = 0

    @property
    def checkpoint_path(self):
        return os.path.join(self.directory, CHECKPOINT_FILE)

    @property
    def history_path(self):
        return os.path.join(self.directory, HISTORY_FILE)

    @property
    def current_run(self):
        """The unfinished `NmtRun`, or None."""
        return self._run

    def _new_run(self, index):
        schedule = LearnedSchedule(
            self.controller, seed=self.seed + index,
            record_steps=self.settings.segment_length,
            feature_names=FEATURE_NAMES, action_names=ACTION_NAMES,
        )
        return NmtRun(self.settings, self.corpus, schedule,
                      self.seed + index, evaluations_count=True)

    def train(self, runs, progress=None):
        """Train until `runs` runs are finished in total.

        Args:
            runs: total runs, counting those of a resumed checkpoint.
            progress: optional callable(entry, run) after each segment,
                called after that segment's checkpoint is written.

        Returns:
            `runs`, the finished runs' summaries.
        """
        while self._run_index < runs:
            if self._run is None:
                self._run = self._new_run(self._run_index)
                self._run.evaluate()
            while not self._run.finished:
                entry = self._train_segment()
                self.save()
                if progress is not None:
                    progress(entry, self._run)
            self.runs.append(dict(self._run.summary(),
                                  run=self._run_index))
            self._finished_run = self._run
            self._run = None
            self._run_index += 1
            self.save()
        return self.runs

    def finished_run(self):
        """Return the `NmtRun` that finished last, for test evaluation."""
        return self._finished_run

    def _train_segment(self):
        run = self._run
        buffer = run.schedule.buffer
        start = run.step
        buffer.start.assign(start)
        length = run.train_chunk()
        feature_perplexity = run.evaluate()
        perplexity = run.curve[-1][3]
        features, actions, _ = buffer.numpy()
        features, actions = features[:length, 0], actions[:length, 0]
        probabilities = run.probabilities[-1][1:]
        entry = {
            "run": self._run_index, "step": run.step,
            "mt_steps": run.mt_steps, "seconds": round(run.seconds, 3),
            "perplexity": perplexity,
            "feature_perplexity": feature_perplexity,
            "probabilities": probabilities,
            "action_fractions": action_fractions(actions),
        }
        reward = self._reward(run)
        entry["reward"] = reward
        if reward is not None:
            dones = np.zeros(length, bool)
            dones[-1] = run.finished
            self.updater.add(features, actions, reward, dones)
        entry["ppo"] = None
        if self.updater.ready:
            current = run.model.feature_tracker.values().numpy()[0]
            entry["ppo"] = run.timed(self.updater.update, current)
        self.history.append(entry)
        return entry

    def _reward(self, run):
        settings = self.settings
        scores = [point[3] for point in run.feature_curve]
        times = None
        if settings.reward_per_second:
            times = [point[0] for point in run.feature_curve]
        reward = segment_reward(scores, settings.reward_k,
                                settings.reward_scale, settings.min_rate,
                                clip=settings.reward_clip, times=times)
        return None if reward is None else -reward

    # Checkpoint ---------------------------------------------------------

    def _state(self):
        run = self._run
        return {
            "settings": self.settings.to_dict(),
            "seed": self.seed,
            "history": self.history,
            "runs": self.runs,
            "run_index": self._run_index,
            "run_in_progress": None if run is None else {
                "step": run.step, "seconds": run.seconds,
                "curve": run.curve, "feature_curve": run.feature_curve,
                "probabilities": run.probabilities,
            },
        }

    def save(self):
        """Write the checkpoint and the history, each atomically.

        Does nothing without a `directory`.
        """
        if self.directory is None:
            return
        state = self._state()
        arrays = dict(self.updater.state_arrays())
        if self._run is not None:
            arrays.update(self._run.state_arrays())
        history = {"task": "nmt"}
        history.update({key: state[key] for key in
                        ("settings", "seed", "history", "runs")})
        training.write_checkpoint(self.checkpoint_path, arrays, state=state,
                                  history_path=self.history_path,
                                  history=history)

    def resume(self):
        """Load the checkpoint if there is one; return segments done.

        `saved_settings` and `saved_seed` are set from the checkpoint. If
        either differs from this trainer's, nothing else is loaded, so the
        caller can report the difference. An unfinished run continues from
        its last segment boundary with the counted seconds it had then.
        """
        if self.directory is None or not os.path.exists(self.checkpoint_path):
            return 0
        state, arrays = training.read_checkpoint(self.checkpoint_path)
        self.saved_settings = state["settings"]
        self.saved_seed = state["seed"]
        if (self.saved_settings != self.settings.to_dict()
                or self.saved_seed != self.seed):
            return len(state["history"])
        self.updater.load_state_arrays(arrays)
        self.history = state["history"]
        self.runs = state["runs"]
        self._run_index = state["run_index"]
        in_progress = state["run_in_progress"]
        if in_progress is not None:
            self._run = self._new_run(self._run_index)
            self._run.load_state_arrays(arrays)
            self._run.step = int(in_progress["step"])
            self._run.seconds = float(in_progress["seconds"])
            self._run.curve = [list(p) for p in in_progress["curve"]]
            self._run.feature_curve = [
                list(p) for p in in_progress["feature_curve"]
            ]
            self._run.probabilities = [
                list(p) for p in in_progress["probabilities"]
            ]
        return len(self.history)


def action_fractions(actions):
    """Return the fraction of steps of each task in an action array."""
    actions = np.asarray(actions).reshape(-1)
    if actions.size == 0:
        return [0.0] * len(ACTION_NAMES)
    return [float(np.mean(actions == index))
            for index in range(len(ACTION_NAMES))]


def online_run(settings, corpus, seed, controller=None, progress=None):
    """Train one run with a controller trained online by PPO in that run.

    Args:
        settings: `NmtSettings`.
        corpus: the corpus.
        seed: seed of the run and of the controller's sampling.
        controller: optional controller to start from (for example an
            exported one). Defaults to a new uniform controller.
        progress: optional callable(run) after every segment.

    Returns:
        The run's summary with test results, plus `controller_history`
        (the per-segment entries).
    """
    trainer = OnlineControllerTrainer(settings, corpus, None, seed=seed,
                                      controller=controller)

    def report(entry, run):
        if progress is not None:
            progress(run)

    trainer.train(1, progress=report)
    result = _finish(trainer.finished_run(), corpus)
    result["controller_history"] = trainer.history
    return result


# Comparison ---------------------------------------------------------------

def run_comparison(settings, corpus, trials, seed=0, controller=None,
                   methods=METHODS, progress=None):
    """Train every method for `trials` trials; return results per method.

    Trial t of every method uses seed `seed + t`, so the methods of a trial
    start from the same weights and see the same batch order.

    Args:
        settings: `NmtSettings`.
        corpus: the corpus.
        trials: runs per method.
        seed: seed of trial 0. Defaults to 0.
        controller: optional exported controller whose weights start every
            AutoLoss run (copied, so every trial starts the same).
            Defaults to a new uniform controller.
        methods: the method names to run. Defaults to `METHODS`.
        progress: optional callable(method, trial, run) after each chunk.

    Returns:
        dict method -> {"runs": [run results]}.
    """
    results = {}
    for method in methods:
        runs = []
        for trial in range(trials):
            run_seed = seed + trial

            def report(run, method=method, trial=trial):
                if progress is not None:
                    progress(method, trial, run)

            if method == AUTOLOSS:
                runs.append(online_run(
                    settings, corpus, run_seed,
                    controller=_copy_controller(controller, settings,
                                                run_seed),
                    progress=report,
                ))
            else:
                runs.append(run_baseline(method, settings, corpus, run_seed,
                                         progress=report))
        results[method] = {"runs": runs}
    return results


def _copy_controller(controller, settings, seed):
    if controller is None:
        return None
    copy = make_controller(settings, seed)
    if len(copy.weights) != len(controller.weights):
        raise ValueError(
            "The starting controller must be an MLP with "
            f"{settings.controller_hidden_units} hidden units over "
            f"{len(FEATURE_NAMES)} features. Received: a controller with "
            f"{len(controller.weights)} weight arrays."
        )
    for target, source in zip(copy.weights, controller.weights):
        if tuple(target.shape) != tuple(source.shape):
            raise ValueError(
                "The starting controller has other layer sizes. Received: "
                f"{tuple(source.shape)} for {target.path}, expected "
                f"{tuple(target.shape)}."
            )
        target.assign(source)
    return copy


def set_seeds(seed):
    """Seed Python, numpy and TensorFlow (kernels stay nondeterministic)."""
    keras.utils.set_random_seed(seed)


# BLEU -------------------------------------------------------------------------

def _ngram_counts(tokens, order):
    return collections.Counter(
        tuple(tokens[i:i + order]) for i in range(len(tokens) - order + 1)
    )


def corpus_bleu(references, hypotheses, max_order=4):
    """Return the corpus BLEU of token lists, one reference each, in [0, 1].

    BLEU (Papineni et al., 2002) is the geometric mean of the clipped
    n-gram precisions for n = 1..max_order, each pooled over the whole
    corpus, times the brevity penalty exp(1 - r / c) when the hypotheses'
    total length c is below the references' total length r. There is no
    smoothing, so a corpus without a matching max_order-gram scores 0.

    Raises:
        ValueError: if the lists differ in length.
    """
    if len(references) != len(hypotheses):
        raise ValueError(
            "corpus_bleu needs one reference per hypothesis. Received: "
            f"{len(references)} references, {len(hypotheses)} hypotheses."
        )
    matches = np.zeros(max_order)
    possible = np.zeros(max_order)
    reference_length = hypothesis_length = 0
    for reference, hypothesis in zip(references, hypotheses):
        reference_length += len(reference)
        hypothesis_length += len(hypothesis)
        for order in range(1, max_order + 1):
            reference_counts = _ngram_counts(reference, order)
            hypothesis_counts = _ngram_counts(hypothesis, order)
            matches[order - 1] += sum(
                min(count, reference_counts[gram])
                for gram, count in hypothesis_counts.items()
            )
            possible[order - 1] += max(len(hypothesis) - order + 1, 0)
    if hypothesis_length == 0 or matches.min() == 0:
        return 0.0
    log_precision = np.mean(np.log(matches / possible))
    if hypothesis_length < reference_length:
        brevity = math.exp(1.0 - reference_length / hypothesis_length)
    else:
        brevity = 1.0
    return float(brevity * math.exp(log_precision))


def target_tokens(corpus, ids, eos_id):
    """Return the word tokens of target ids, cut before `eos_id`.

    With a corpus `detokenize_target(ids)` the words are its output split
    on whitespace. Otherwise the ids themselves are the tokens.
    """
    ids = [int(i) for i in ids]
    if eos_id in ids:
        ids = ids[:ids.index(eos_id)]
    ids = [i for i in ids if i != 0]
    detokenize = getattr(corpus, "detokenize_target", None)
    if detokenize is None:
        return [str(i) for i in ids]
    return str(detokenize(ids)).split()


def translate_split(model, corpus, split, bos_id, eos_id, max_length):
    """Return (references, hypotheses) word tokens of a split.

    The hypotheses are greedy translations. The references are the split's
    `target_out` ids, detokenized in the same way as the translations, so
    both sides went through the subword vocabulary.
    """
    hypotheses_ids = model.translate(split.source, bos_id, eos_id,
                                     max_length)
    references = [target_tokens(corpus, row, eos_id)
                  for row in split.target_out]
    hypotheses = [target_tokens(corpus, row, eos_id)
                  for row in hypotheses_ids]
    return references, hypotheses


def summarize_runs(runs):
    """Return mean, std and values of the final metrics of some runs."""
    def stats(key):
        values = [float(run[key]) for run in runs]
        return {"mean": float(np.mean(values)), "std": float(np.std(values)),
                "values": values}

    return {"perplexity": stats("final"),
            "test_perplexity": stats("test_perplexity"),
            "bleu": stats("bleu"), "steps": stats("steps"),
            "mt_steps": stats("mt_steps"), "seconds": stats("seconds")}
