"""Transfer of a trained GAN controller to new DCGAN architectures.

Section 5.3.1 of the AutoLoss paper (Xu et al., ICLR 2019) lets a controller
trained on one DCGAN guide new GANs whose architectures are sampled at
random (its appendix A.5): base filters from {32, 64, 128}, the latent size
from {64, 128}, batch normalization or not, and ReLU or LeakyReLU. That
gives 3 * 2 * 2 * 2 = 24 architectures. For each sampled architecture the
paper compares the final IS of a GAN trained with the controller against
one trained without it, where D and G alternate 1:1 (its Figure 4, left).

This module provides:

- `Architecture` and `sample_architectures`, the seeded sampling;
- `ArchitectureTransfer`, which trains both GANs of every architecture with
  the same GAN seed and writes a checkpoint after every finished run, so a
  killed experiment resumes where it stopped;
- `summarize_pairs`, the count of architectures the controller helps and
  the mean IS difference.

The sampled activation applies to both G and D, as the paper's count of 24
architectures implies. `sample_architectures` draws without replacement,
so the first 24 samples of a seed are the 24 distinct architectures in a
seeded order.

NOTE: the controller's gradient-norm inputs are not scale-free across
architectures. The normalized gradient norm ||g|| / sqrt(#params) is
divided by 0.01 in the controller (`gan_experiments.FEATURE_SCALE`), and
it was about 0.02 for G on the DCGAN the controller was trained on (64
filters, batch norm). In 300-update 1:1 runs of 13 architectures (MNIST,
3x3 kernels, batch 64, seed 0, readings at updates 200 and 300), G's norm
was 0.010 to 0.028 with batch norm but 0.0014 to 0.008 without it. D's
norm ranged from 0.001 to 0.04, with one reading of 0.97. So without
batch norm the controller receives G gradient norms 3 to 10 times smaller
than in its training. The losses, their ratio, D's error and the IS
inputs have the same meaning for every architecture. The progress input
t/T also grows faster in runs shorter than the 3,000-update runs the
shipped quick-mode controller was trained on.
"""

import dataclasses
import hashlib
import itertools
import json
import os
import time

import numpy as np

from autoloss_models import dcgan
from autoloss_models import gan_experiments

BASE_FILTERS = (32, 64, 128)
LATENT_DIMS = (64, 128)
BATCH_NORMS = (True, False)
ACTIVATIONS = dcgan.ACTIVATIONS
# The schedule without the controller, the paper's comparison in Figure 4.
BASELINE = "1:1"
WITHOUT, WITH = "without_controller", "with_controller"
METHODS = (WITHOUT, WITH)
STATE_FILE = "transfer_state.json"
# Updates per GAN run in quick mode, sized so that 40 runs take roughly
# 45-60 minutes on 2 CPU cores. Timing runs there (MNIST, 3x3 kernels,
# batch 64, 1:1, IS of 1,000 samples every 100 updates) shared the cores
# with other jobs. One update cost 25-26, 54-55 and 141-157 ms of process
# CPU time with 32, 64 and 128 base filters, and 25-28, 44-58 and 175-400
# ms of wall time at load averages of 2 to 7. The 20 architectures of
# seed 0 (7, 5 and 8 of the three sizes) average 82 ms of CPU time per
# update. So 40 runs of 700 updates need an estimated 40-50 minutes on
# cores free of other jobs, plus about 8 s of model building and tracing
# per run. Full mode keeps its 20,000.
QUICK_UPDATES = 700


class TransferResumeError(ValueError):
    """A work directory contains a checkpoint made with other settings."""


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One DCGAN architecture of the sampling space of appendix A.5.

    Attributes:
        base_filters: filters f of D's first and G's last hidden layer.
        latent_dim: size of the latent vector z.
        batch_norm: batch normalization in G and D.
        activation: `"relu"` or `"leaky_relu"`, used in both G and D.
    """

    base_filters: int
    latent_dim: int
    batch_norm: bool
    activation: str

    def __post_init__(self):
        for name, value, allowed in (
            ("base_filters", self.base_filters, BASE_FILTERS),
            ("latent_dim", self.latent_dim, LATENT_DIMS),
            ("batch_norm", self.batch_norm, BATCH_NORMS),
            ("activation", self.activation, ACTIVATIONS),
        ):
            if value not in allowed or type(value) is not type(allowed[0]):
                raise ValueError(
                    f"`{name}` must be one of {allowed}. "
                    f"Received: {name}={value!r}."
                )

    def apply(self, settings):
        """Return `settings` with this architecture's filters and z size."""
        return dataclasses.replace(settings, base_filters=self.base_filters,
                                   latent_dim=self.latent_dim)

    def model_options(self):
        """Return the further `dcgan.DCGAN` arguments of this architecture."""
        return {"batch_norm": self.batch_norm,
                "generator_activation": self.activation,
                "discriminator_activation": self.activation}

    def to_dict(self):
        return dataclasses.asdict(self)

    @property
    def label(self):
        """Short name such as `f64 z128 bn relu` for tables and plots."""
        norm = "bn" if self.batch_norm else "no-bn"
        return (f"f{self.base_filters} z{self.latent_dim} {norm} "
                f"{self.activation}")


def all_architectures():
    """Return the 24 architectures in a fixed order."""
    return [Architecture(*values) for values in itertools.product(
        BASE_FILTERS, LATENT_DIMS, BATCH_NORMS, ACTIVATIONS
    )]


def sample_architectures(count, seed):
    """Sample `count` distinct architectures in a seeded random order.

    Sample i depends only on (seed, i), so a larger `count` extends a
    smaller one's list.

    Args:
        count: number of architectures, in [1, 24].
        seed: non-negative integer seed.

    Raises:
        ValueError: for a count outside [1, 24] or a negative seed.
    """
    space = all_architectures()
    if isinstance(count, bool) or not isinstance(count, int) or not (
        1 <= count <= len(space)
    ):
        raise ValueError(
            f"The number of architectures must be an integer in [1, "
            f"{len(space)}], because the sampling space has {len(space)} "
            f"distinct architectures. Received: {count!r}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(
            f"`seed` must be a non-negative integer. Received: seed={seed!r}."
        )
    order = np.random.default_rng(seed).permutation(len(space))
    return [space[index] for index in order[:count]]


def controller_fingerprint(controller):
    """Return a SHA-256 hex digest of the controller's weights."""
    digest = hashlib.sha256()
    for weight in controller.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


class ArchitectureTransfer:
    """Train each architecture with and without a controller; checkpoint.

    Architecture i uses GAN seed `seed + i` for both of its runs, so both
    start from the same weights and see the same batches, and the
    controller samples its actions from that seed too. The run without the
    controller alternates D and G 1:1. After every finished run the state
    is written to `directory/transfer_state.json` (atomically), and `run`
    skips the runs found there.

    Args:
        settings: common `GanSettings`; each architecture replaces its
            `base_filters` and `latent_dim`.
        controller: the trained controller.
        images: training images.
        classifier: the IS classifier.
        architectures: list of `Architecture`.
        seed: GAN seed of architecture 0.
        directory: work directory of the checkpoint.
        identity: JSON-ready dict that a resumed checkpoint must match, for
            example the controller's weight fingerprint. Defaults to {}.

    Attributes:
        entries: one dict per architecture: index, architecture, label,
            seed and the finished runs under `WITHOUT` and `WITH`.
    """

    def __init__(self, settings, controller, images, classifier,
                 architectures, seed, directory, identity=None):
        self.settings = settings
        self.controller = controller
        self.images = images
        self.classifier = classifier
        self.architectures = list(architectures)
        self.seed = int(seed)
        self.directory = directory
        self.identity = dict(identity or {})
        self.entries = [
            {"index": index, "architecture": architecture.to_dict(),
             "label": architecture.label, "seed": self.seed + index}
            for index, architecture in enumerate(self.architectures)
        ]
        # Checkpoint entries beyond this experiment's architectures, from
        # a run with a larger n. `save` writes them back unchanged.
        self._later_entries = []

    @property
    def state_path(self):
        return os.path.join(self.directory, STATE_FILE)

    @property
    def runs_total(self):
        return len(METHODS) * len(self.entries)

    @property
    def runs_done(self):
        return sum(method in entry for entry in self.entries
                   for method in METHODS)

    def config(self):
        """Return what a checkpoint must share with this experiment."""
        return {"settings": self.settings.to_dict(), "seed": self.seed,
                "baseline": BASELINE, **self.identity}

    def resume(self):
        """Load the finished runs of the checkpoint; return how many.

        Raises:
            TransferResumeError: if the checkpoint was made with another
                config, or its architecture i differs from this one's.
        """
        if not os.path.exists(self.state_path):
            return 0
        with open(self.state_path) as f:
            state = json.load(f)
        saved, current = state["config"], self.config()
        changed = {key: (saved.get(key), current.get(key))
                   for key in sorted(set(saved) | set(current))
                   if saved.get(key) != current.get(key)}
        if changed:
            raise TransferResumeError(
                f"{self.directory} contains a transfer checkpoint made with "
                f"other settings. Changed (checkpoint, now): {changed}. "
                "Rerun with the checkpoint's settings, pass another "
                f"--work-dir, or delete {self.directory}."
            )
        self._later_entries = []
        for stored in state["entries"]:
            index = stored["index"]
            if index >= len(self.entries):
                self._later_entries.append(stored)
                continue
            entry = self.entries[index]
            if stored["architecture"] != entry["architecture"]:
                raise TransferResumeError(
                    f"{self.state_path} has architecture {index} "
                    f"{stored['architecture']}, but this experiment samples "
                    f"{entry['architecture']}. Delete {self.directory} or "
                    "pass another --work-dir."
                )
            for method in METHODS:
                if method in stored:
                    entry[method] = stored[method]
        return self.runs_done

    def save(self):
        """Write every finished run to the state file, atomically."""
        os.makedirs(self.directory, exist_ok=True)
        state = {"config": self.config(),
                 "entries": self.entries + self._later_entries}
        temporary = self.state_path + ".tmp"
        with open(temporary, "w") as f:
            json.dump(state, f)
        os.replace(temporary, self.state_path)

    def run(self, progress=None, run_finished=None):
        """Train every run not in the checkpoint yet; return `entries`.

        Args:
            progress: optional callable(updates) after each IS chunk.
            run_finished: optional callable(entry, method) after a run's
                checkpoint is written.
        """
        for entry, architecture in zip(self.entries, self.architectures):
            settings = architecture.apply(self.settings)
            options = architecture.model_options()
            for method in METHODS:
                if method in entry:
                    continue
                started = time.perf_counter()
                if method == WITH:
                    result = gan_experiments.guided_run(
                        settings, self.controller, self.images,
                        self.classifier, entry["seed"], progress=progress,
                        model_options=options,
                    )
                else:
                    result = gan_experiments.run_with_schedule(
                        settings, gan_experiments.fixed_ratio_schedule(
                            BASELINE),
                        self.images, self.classifier, entry["seed"],
                        progress=progress, model_options=options,
                    )
                entry[method] = {
                    "final": result["final"], "curve": result["curve"],
                    "p_generator": result["p_generator"],
                    "seconds": round(time.perf_counter() - started, 1),
                }
                self.save()
                if run_finished is not None:
                    run_finished(entry, method)
        return self.entries


def summarize_pairs(entries, fail_below=None):
    """Compare the final IS with and without the controller per architecture.

    Args:
        entries: `ArchitectureTransfer.entries` with both runs finished.
        fail_below: if set, architectures where both runs end below this
            IS count as failed and are left out of the `*_excluding_failed`
            fields, as the paper skips cases where both fail (IS < 6).
            Defaults to None.

    Returns:
        A dict: `compared`, `helped` (final IS higher with the controller),
        `hurt`, `ties`, `mean_difference` and `std_difference` (with minus
        without), `mean_without`, `mean_with`, `differences`, and with
        `fail_below` also `failed` (indices), `compared_excluding_failed`,
        `helped_excluding_failed` and `mean_difference_excluding_failed`.
    """
    without = np.asarray([entry[WITHOUT]["final"] for entry in entries])
    with_controller = np.asarray([entry[WITH]["final"] for entry in entries])
    differences = with_controller - without
    summary = {
        "compared": len(entries),
        "helped": int(np.sum(differences > 0)),
        "hurt": int(np.sum(differences < 0)),
        "ties": int(np.sum(differences == 0)),
        "mean_difference": float(differences.mean()),
        "std_difference": float(differences.std()),
        "mean_without": float(without.mean()),
        "mean_with": float(with_controller.mean()),
        "differences": differences.tolist(),
        "fail_below": fail_below,
    }
    if fail_below is None:
        return summary
    failed = (without < fail_below) & (with_controller < fail_below)
    remaining = differences[~failed]
    summary.update({
        "failed": [entry["index"] for entry, bad in zip(entries, failed)
                   if bad],
        "compared_excluding_failed": int(remaining.size),
        "helped_excluding_failed": int(np.sum(remaining > 0)),
        "mean_difference_excluding_failed": (
            float(remaining.mean()) if remaining.size else None
        ),
    })
    return summary
