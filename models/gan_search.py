"""Run-level search for a GAN controller: antithetic parameter perturbations.

The AutoLoss paper (Xu et al., ICLR 2019) trains the GAN controller
online: one policy-gradient update per segment of T updates, rewarded by
the segment's IS gain (`gan_experiments.OnlineControllerTrainer`). On 2 CPU cores that reward is
mostly noise: `benchmarks/gan_reward_signal.py` measured a residual of
0.21 IS per segment gain against an effect of 0.05 IS per segment per
unit of generator share. The final IS of a whole run is far less noisy
(fixed ratios vary 0.03-0.07 between seeds), so this module rewards whole
runs instead. This departs from the paper's method.

`ControllerSearch` keeps a center vector of linear-controller parameters.
Each generation draws `pairs` noise vectors. Pair i trains two new GANs
with the same seed (same initial weights, batches and sampling seed): one
under center + scale * noise_i and one under center - scale * noise_i.
The reward of each run is its final IS. The center then moves by

    step_size / (pairs * std(R)) * sum_i (R+_i - R-_i) * scale * noise_i,

where std(R) is the standard deviation of the generation's 2 * pairs
rewards, and `scale` has one entry per parameter. A generation whose
rewards are all equal does not move the center.

NOTE: dividing by std(R) keeps the step's size when the reward
differences are only seed noise, so the center keeps moving by about
`step_size` noise scales per generation whether or not the rewards carry
signal. With one pair the step is `step_size` times the noise vector,
with the sign of R+ - R-.

The parameters are those of the logit difference between a generator
update and a discriminator update, d(x) = w . x + b, with x the scaled
features; the linear controller holds w / 2 and b / 2 for the generator
and -w / 2 and -b / 2 for the discriminator, which gives the same policy
as any weights with that difference.

NOTE: in quick mode on 2 CPU cores, 36 runs (6 generations of 3 pairs,
starting from the online controller) moved the mean generator share
only from about 0.74 to 0.78, and GANs guided by the result scored
4.998 against 5.078 for the fixed 1:5 ratio (3 trials). Over those 18
pairs, the final-IS difference of a pair gave 0.62 +- 0.35 IS per unit
of share difference, so even whole runs need many more pairs to find
the ratio.
"""

import concurrent.futures
import dataclasses
import os

import numpy as np

from autoloss_models import dcgan
from autoloss_models import gan_experiments as experiments
from autoloss_tf import training

CHECKPOINT_FILE = "search_checkpoint.npz"
HISTORY_FILE = "search_history.json"
ESTIMATOR = "search"


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """Settings of the run-level controller search.

    Attributes:
        pairs: antithetic pairs (two GAN runs each) per generation.
        bias_sigma: noise scale of the bias of the logit difference.
        weight_sigma: noise scale of each feature weight of the logit
            difference. The scaled features are of order 1, so with 11
            features this moves the logit difference by about
            sqrt(11) * weight_sigma. With 0 only the bias is searched
            and the feature weights keep their starting values.
        step_size: the step of the center, in noise scales, for a
            generation whose reward differences are one reward standard
            deviation along one noise vector.
    """

    pairs: int = 3
    bias_sigma: float = 0.4
    weight_sigma: float = 0.15
    step_size: float = 0.8

    def __post_init__(self):
        if (isinstance(self.pairs, bool) or not isinstance(self.pairs, int)
                or self.pairs < 1):
            raise ValueError(
                "`pairs` must be a positive integer. "
                f"Received: pairs={self.pairs!r}."
            )
        for name in ("bias_sigma", "step_size"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"`{name}` must be > 0. Received: "
                    f"{name}={getattr(self, name)!r}."
                )
        if not self.weight_sigma >= 0:
            raise ValueError(
                "`weight_sigma` must be >= 0 (0 searches the bias only). "
                f"Received: weight_sigma={self.weight_sigma!r}."
            )

    @property
    def runs_per_generation(self):
        return 2 * self.pairs

    def to_dict(self):
        return dataclasses.asdict(self)


# Parameters and noise -------------------------------------------------------

_GENERATOR = experiments.ACTION_NAMES.index(dcgan.GENERATOR)
_DISCRIMINATOR = experiments.ACTION_NAMES.index(dcgan.DISCRIMINATOR)


def controller_parameters(controller):
    """Return [w, b] of the controller's generator-minus-discriminator logit.

    Returns:
        float64 array of length `num_features + 1`, the bias last.
    """
    kernel = controller.output_layer.kernel.numpy().astype("float64")
    bias = controller.output_layer.bias.numpy().astype("float64")
    weights = kernel[:, _GENERATOR] - kernel[:, _DISCRIMINATOR]
    return np.append(weights, bias[_GENERATOR] - bias[_DISCRIMINATOR])


def set_controller_parameters(controller, parameters):
    """Give a two-action linear controller the logit difference `parameters`.

    Raises:
        ValueError: if the length is not `num_features + 1`.
    """
    parameters = np.asarray(parameters, dtype="float64")
    expected = controller.num_features + 1
    if parameters.shape != (expected,):
        raise ValueError(
            f"The parameters of a linear GAN controller with "
            f"{controller.num_features} features are {expected} numbers "
            f"(the feature weights, then the bias). Received shape "
            f"{parameters.shape}."
        )
    kernel = np.zeros((controller.num_features, 2), "float32")
    bias = np.zeros(2, "float32")
    kernel[:, _GENERATOR] = parameters[:-1] / 2
    kernel[:, _DISCRIMINATOR] = -parameters[:-1] / 2
    bias[_GENERATOR] = parameters[-1] / 2
    bias[_DISCRIMINATOR] = -parameters[-1] / 2
    controller.output_layer.kernel.assign(kernel)
    controller.output_layer.bias.assign(bias)


def noise_scales(search, num_features):
    """Return the per-parameter noise scales: the weights', then the bias's."""
    return np.append(np.full(num_features, search.weight_sigma),
                     search.bias_sigma)


def pair_noise(seed, generation, pair, size):
    """Return the standard normal noise vector of one pair."""
    rng = np.random.default_rng([int(seed), int(generation), int(pair)])
    return rng.standard_normal(size)


def pair_seed(seed, generation, pair, pairs):
    """Return the GAN seed of a pair: both of its runs use it."""
    return int(seed) + int(generation) * int(pairs) + int(pair)


def search_step(center, noises, rewards_plus, rewards_minus, scales,
                step_size):
    """Return the next center and the reward spread of a generation.

    Args:
        center: the current parameters.
        noises: [pairs, parameters] standard normal noise.
        rewards_plus: the final IS of the runs under center + scales * noise.
        rewards_minus: the same under center - scales * noise.
        scales: the per-parameter noise scales.
        step_size: see `SearchSettings.step_size`.

    Returns:
        `(new_center, reward_std)`. With `reward_std` 0 the center stays.
    """
    noises = np.asarray(noises, "float64")
    plus = np.asarray(rewards_plus, "float64")
    minus = np.asarray(rewards_minus, "float64")
    reward_std = float(np.std(np.concatenate([plus, minus])))
    center = np.asarray(center, "float64")
    if reward_std == 0.0:
        return center.copy(), reward_std
    direction = ((plus - minus)[:, None] * noises).sum(axis=0)
    step = step_size / (len(plus) * reward_std) * np.asarray(scales) * direction
    return center + step, reward_std


# One member run ---------------------------------------------------------------

def evaluate_member(settings, parameters, seed, images, classifier,
                    progress=None):
    """Train one new GAN under the linear controller with `parameters`.

    The random state is reset from `seed` first, so the result depends
    only on (settings, parameters, seed) and the TensorFlow thread count
    of the process (see `gan_experiments.worker_pool`).

    Returns:
        dict: `final` (the run's final IS), `curve` and `p_generator` (the
        mean probability of a generator update over the run).
    """
    experiments.set_determinism(seed)
    controller = experiments.make_controller()
    set_controller_parameters(controller, parameters)
    result = experiments.guided_run(settings, controller, images, classifier,
                                    seed, progress=progress)
    shares = [p for _, p in result["p_generator"]]
    return {"final": result["final"], "curve": result["curve"],
            "p_generator": float(np.mean(shares))}


def _run_in_worker(settings, parameters, seed):
    images, classifier = experiments.worker_data()
    return evaluate_member(settings, parameters, seed, images, classifier)


def _step_norm(step, scales):
    """Return the length of a step in noise scales, over searched entries.

    Parameters with scale 0 are not searched and never move.
    """
    searched = scales > 0
    return float(np.linalg.norm(step[searched] / scales[searched]))


def read_checkpoint_summary(path):
    """Return the pairs and the runs done of a search checkpoint file."""
    state, _ = training.read_checkpoint(path)
    pairs = int(state["settings"]["search_pairs"])
    return {"pairs": pairs,
            "runs_done": int(state["generation"]) * 2 * pairs
            + len(state["results"])}


# The search -----------------------------------------------------------------

class ControllerSearch:
    """Train a linear GAN controller by antithetic run-level search.

    See the module docstring for the update. Every finished run is written
    to the checkpoint at once, so a killed search loses at most the runs in
    progress, and `resume` continues a generation where it stopped.

    Args:
        settings: `GanSettings` of every run.
        search: `SearchSettings`.
        directory: where the checkpoint and `search_history.json` go.
        images: training images, used when `workers` is 1.
        classifier: the IS classifier, used when `workers` is 1.
        seed: seed of the noise and of the GAN seeds (`pair_seed`). Use
            seeds that a later comparison does not use.
        controller: the linear controller to start from. Defaults to the
            uniform `gan_experiments.make_controller()`.
        workers: processes that train runs side by side. With more than 1,
            each worker loads `dataset`'s images and classifier itself and
            uses `threads` TensorFlow threads. Defaults to 1 (this
            process).
        dataset: the GAN dataset the workers load. Defaults to "mnist".
        threads: TensorFlow threads per worker. Defaults to 1.

    Attributes:
        center: the current parameters (see `controller_parameters`).
        generation: generations finished.
        history: one dict per finished generation.
        results: the runs of the unfinished generation, by `member_key`.
    """

    def __init__(self, settings, search, directory, images, classifier,
                 seed=0, controller=None, workers=1, dataset="mnist",
                 threads=1):
        if isinstance(workers, bool) or not isinstance(workers, int) or (
                workers < 1):
            raise ValueError(
                f"`workers` must be a positive integer. Received: "
                f"workers={workers!r}. Pass 1 to train runs in this process."
            )
        self.settings = settings
        self.search = search
        self.directory = directory
        self.images = images
        self.classifier = classifier
        self.seed = int(seed)
        self.workers = workers
        self.dataset = dataset
        self.threads = int(threads)
        self.controller = controller or experiments.make_controller()
        self.center = controller_parameters(self.controller)
        self.initial_center = self.center.copy()
        self.scales = noise_scales(search, self.controller.num_features)
        self.generation = 0
        self.history = []
        self.results = {}
        self.saved_settings = None
        self.saved_seed = None

    @property
    def checkpoint_path(self):
        return os.path.join(self.directory, CHECKPOINT_FILE)

    @property
    def history_path(self):
        return os.path.join(self.directory, HISTORY_FILE)

    @property
    def runs_done(self):
        """GAN runs finished so far, over all generations."""
        return (self.generation * self.search.runs_per_generation
                + len(self.results))

    @staticmethod
    def member_key(pair, sign):
        return f"{pair}{'+' if sign > 0 else '-'}"

    def members(self):
        """Return the runs of the current generation as dicts, in order."""
        size = len(self.center)
        entries = []
        for pair in range(self.search.pairs):
            noise = pair_noise(self.seed, self.generation, pair, size)
            seed = pair_seed(self.seed, self.generation, pair,
                             self.search.pairs)
            for sign in (1, -1):
                entries.append({
                    "key": self.member_key(pair, sign), "pair": pair,
                    "sign": sign, "seed": seed, "noise": noise,
                    "parameters": self.center + sign * self.scales * noise,
                })
        return entries

    def train(self, generations, progress=None):
        """Run until `generations` generations are finished in total.

        Args:
            generations: total generations, counting resumed ones.
            progress: optional callable(result) after each finished run,
                called after the checkpoint is written.

        Returns:
            `history`.
        """
        pool = None
        try:
            while self.generation < generations:
                pending = [member for member in self.members()
                           if member["key"] not in self.results]
                if self.workers > 1 and pool is None and pending:
                    pool = experiments.worker_pool(self.workers, self.dataset,
                                                   self.threads)
                for member, result in self._evaluate(pending, pool):
                    self.results[member["key"]] = dict(
                        result, seed=member["seed"], sign=member["sign"],
                        pair=member["pair"],
                    )
                    self.save()
                    if progress is not None:
                        progress(self.results[member["key"]])
                self._finish_generation()
                self.save()
        except BaseException:
            if pool is not None:
                # Runs in progress are lost either way, because only
                # finished runs are checkpointed, so stop them now.
                experiments.terminate_workers(pool)
            raise
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        return self.history

    def _evaluate(self, members, pool):
        if pool is None:
            for member in members:
                yield member, evaluate_member(
                    self.settings, member["parameters"], member["seed"],
                    self.images, self.classifier,
                )
            return
        futures = {
            pool.submit(_run_in_worker, self.settings, member["parameters"],
                        member["seed"]): member
            for member in members
        }
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()

    def _finish_generation(self):
        members = self.members()
        plus = [member for member in members if member["sign"] > 0]
        minus = [member for member in members if member["sign"] < 0]
        rewards_plus = [self.results[member["key"]]["final"]
                        for member in plus]
        rewards_minus = [self.results[member["key"]]["final"]
                         for member in minus]
        before = self.center
        self.center, reward_std = search_step(
            before, [member["noise"] for member in plus], rewards_plus,
            rewards_minus,
            self.scales, self.search.step_size,
        )
        self.history.append({
            "generation": self.generation,
            "seeds": [member["seed"] for member in plus],
            "rewards_plus": rewards_plus,
            "rewards_minus": rewards_minus,
            "p_generator_plus": [self.results[member["key"]]["p_generator"]
                                 for member in plus],
            "p_generator_minus": [self.results[member["key"]]["p_generator"]
                                  for member in minus],
            "mean_final_inception_score": float(
                np.mean(rewards_plus + rewards_minus)),
            "reward_std": reward_std,
            "center_before": before.tolist(),
            "center": self.center.tolist(),
            "step_norm": _step_norm(self.center - before, self.scales),
            "curves": {member["key"]: self.results[member["key"]]["curve"]
                       for member in members},
        })
        self.results = {}
        self.generation += 1

    def export_controller(self):
        """Return a new linear controller with the center's parameters."""
        controller = experiments.make_controller()
        set_controller_parameters(controller, self.center)
        return controller

    # Checkpoint ---------------------------------------------------------

    def settings_dict(self):
        """Return the GAN settings, the search settings (prefixed
        `search_`) and the starting parameters as one flat JSON dict."""
        values = self.settings.to_dict()
        values.update({f"search_{key}": value
                       for key, value in self.search.to_dict().items()})
        values["start_parameters"] = self.initial_center.tolist()
        return values

    def save(self):
        """Write the checkpoint and the history, each atomically."""
        state = {
            "estimator": ESTIMATOR,
            "settings": self.settings_dict(),
            "seed": self.seed,
            "generation": self.generation,
            "center": self.center.tolist(),
            "history": self.history,
            "results": self.results,
        }
        history = {key: state[key] for key in
                   ("estimator", "settings", "seed", "generation", "center",
                    "history")}
        training.write_checkpoint(self.checkpoint_path, {}, state=state,
                                  history_path=self.history_path,
                                  history=history)

    def resume(self):
        """Load the checkpoint if there is one; return runs done.

        `saved_settings` and `saved_seed` are set from the checkpoint. If
        either differs from this search's, nothing else is loaded, so the
        caller can report the difference.
        """
        if not os.path.exists(self.checkpoint_path):
            return 0
        state, _ = training.read_checkpoint(self.checkpoint_path)
        self.saved_settings = state["settings"]
        self.saved_seed = state["seed"]
        if (self.saved_settings != self.settings_dict()
                or self.saved_seed != self.seed):
            return state["generation"] * self.search.runs_per_generation
        self.generation = int(state["generation"])
        self.center = np.asarray(state["center"], "float64")
        self.history = state["history"]
        self.results = state["results"]
        return self.runs_done
