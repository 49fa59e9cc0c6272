"""Data sets and five-way partitions for the AutoLoss regression and MLP tasks.

The synthetic generators follow appendix A.2 of Xu et al., "AutoLoss: Learning
Discrete Schedules for Alternate Optimization" (ICLR 2019). Each data set is
cut into five partitions. The controller is trained on `controller_train` and
rewarded on `controller_val`. A new task model is then trained on `task_train`
under the trained controller, validated on `task_val` and assessed on `test`.

Every function takes an integer seed or a `numpy.random.Generator`, so the
same seed returns identical arrays. A generator that is passed in is advanced
by the call, so reusing it gives a new draw. All arrays are float32.
"""

import dataclasses
import numbers

import numpy as np
from sklearn import datasets

PARTITION_NAMES = (
    "controller_train",
    "controller_val",
    "task_train",
    "task_val",
    "test",
)

# Four cluster centres, two per class, as in scikit-learn's
# `make_classification` with `n_classes=2, n_clusters_per_class=2`.
_CENTRES_PER_CLASS = 2
_NUM_CLASSES = 2
_MIN_INFORMATIVE = 2
_MIN_COMBINATION = 1

_REGRESSION_WEIGHT_BOUND = 0.5
_REGRESSION_INPUT_BOUND = 5.0
_REGRESSION_NOISE_STD = 2.0


def _as_generator(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(
                "`seed` must be a non-negative integer or a "
                f"`numpy.random.Generator`. Received: seed={seed}. "
                "Pass a seed such as 0."
            )
        return np.random.default_rng(int(seed))
    raise ValueError(
        "`seed` must be a non-negative integer or a `numpy.random.Generator`. "
        f"Received: seed={seed!r}. Pass a seed such as 0."
    )


def _check_positive_int(name, value, example):
    is_integer = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not is_integer or value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. "
            f"Received: {name}={value!r}. Pass a value such as {example}."
        )


def _check_real(name, value, example):
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_real or not np.isfinite(value):
        raise ValueError(
            f"`{name}` must be a finite number. "
            f"Received: {name}={value!r}. Pass a value such as {example}."
        )


def _check_fraction(name, value):
    _check_real(name, value, example=0.05)
    if not 0 < value < 1:
        raise ValueError(
            f"`{name}` must be in (0, 1). "
            f"Received: {name}={value}. Pass a fraction such as 0.05."
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """Inputs and targets of one partition.

    Attributes:
        x: float32 inputs of shape `[num_samples, dimension]`.
        y: float32 targets of shape `[num_samples]`.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self):
        x = np.asarray(self.x, dtype=np.float32)
        y = np.asarray(self.y, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(
                "`x` must be a 2-D array of shape [num_samples, dimension]. "
                f"Received: x.shape={x.shape}. Reshape the inputs to 2-D."
            )
        if y.shape != (x.shape[0],):
            raise ValueError(
                "`y` must be a 1-D array with one target per row of `x`. "
                f"Received: y.shape={y.shape} with x.shape={x.shape}. "
                "Pass one target per input row."
            )
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)


@dataclasses.dataclass(frozen=True, eq=False)
class FiveWaySplit:
    """Five disjoint partitions of one data set.

    Attributes:
        controller_train: Data the task models are trained on while the
            controller is being trained.
        controller_val: Data that measures the reward for the controller.
        task_train: Data a new task model is trained on under a trained
            controller.
        task_val: Validation data for the new task model.
        test: Held-out data that assesses the new task model.
        noise_variance: Realised noise variance `mean(noise**2)` of each
            partition, keyed by partition name, or `None` when the data set
            has no known noise. A test mean squared error minus this value is
            the error above the noise floor.
    """

    controller_train: Split
    controller_val: Split
    task_train: Split
    task_val: Split
    test: Split
    noise_variance: dict[str, float] | None = None

    def partitions(self):
        """Return the five partitions keyed by name, in `PARTITION_NAMES` order."""
        return {name: getattr(self, name) for name in PARTITION_NAMES}


@dataclasses.dataclass(frozen=True)
class ClassificationSpec:
    """Parameters of the synthetic binary classification data set.

    The input has three groups of columns, in this order:
    `num_informative` columns drawn around four cluster centres,
    `num_combination` random linear combinations of the informative columns,
    and `num_noise` columns of standard normal noise.

    Attributes:
        dimension: Number of input columns, at least 3.
        informative_fraction: Share of `dimension` that is informative. The
            count is `max(2, round(informative_fraction * dimension))`, with
            Python's `round` (ties go to the even integer).
        combination_fraction: Share of `dimension` that is linear combinations
            of the informative columns. The count is
            `max(1, round(combination_fraction * dimension))`.
        class_separation: Half the edge length of the hypercube whose vertices
            are the cluster centres, so each informative coordinate of a
            centre is `+class_separation` or `-class_separation`.
        noise_std: Standard deviation of the Gaussian noise added to the
            informative columns around their centre.

    Raises:
        ValueError: If a field is out of range or the informative and
            combination columns do not fit in `dimension`.
    """

    dimension: int = 32
    informative_fraction: float = 0.05
    combination_fraction: float = 0.05
    class_separation: float = 1.0
    noise_std: float = 1.0

    def __post_init__(self):
        minimum_dimension = _MIN_INFORMATIVE + _MIN_COMBINATION
        _check_positive_int("dimension", self.dimension, example=32)
        if self.dimension < minimum_dimension:
            raise ValueError(
                f"`dimension` must be at least {minimum_dimension}, because "
                f"the data set has at least {_MIN_INFORMATIVE} informative "
                f"columns and {_MIN_COMBINATION} combination column. "
                f"Received: dimension={self.dimension}. "
                f"Pass dimension={minimum_dimension} or more."
            )
        _check_fraction("informative_fraction", self.informative_fraction)
        _check_fraction("combination_fraction", self.combination_fraction)
        _check_real("class_separation", self.class_separation, example=1.0)
        if not self.class_separation > 0:
            raise ValueError(
                "`class_separation` must be positive, because the cluster "
                "centres coincide at 0. "
                f"Received: class_separation={self.class_separation}. "
                "Pass a value such as 1.0."
            )
        _check_real("noise_std", self.noise_std, example=1.0)
        if self.noise_std < 0:
            raise ValueError(
                "`noise_std` must be non-negative. "
                f"Received: noise_std={self.noise_std}. "
                "Pass a standard deviation such as 1.0."
            )

        used = self.num_informative + self.num_combination
        if used > self.dimension:
            raise ValueError(
                "`informative_fraction` and `combination_fraction` must give "
                "at most `dimension` columns together. "
                f"Received: informative_fraction={self.informative_fraction}, "
                f"combination_fraction={self.combination_fraction}, "
                f"dimension={self.dimension}, which give "
                f"{self.num_informative} informative and "
                f"{self.num_combination} combination columns. "
                "Lower the fractions or raise `dimension`."
            )

    @property
    def num_informative(self):
        """Number of informative columns, the first columns of the input."""
        return max(
            _MIN_INFORMATIVE, round(self.informative_fraction * self.dimension)
        )

    @property
    def num_combination(self):
        """Number of columns that are linear combinations of the informative ones."""
        return max(
            _MIN_COMBINATION, round(self.combination_fraction * self.dimension)
        )

    @property
    def num_noise(self):
        """Number of standard normal noise columns, the last columns of the input."""
        return self.dimension - self.num_informative - self.num_combination


def make_regression(num_samples, dimension=16, *, seed):
    """Draw a noisy linear regression data set.

    A weight vector `w ~ Uniform[-0.5, 0.5]^dimension` is drawn once per call.
    Each sample has inputs `u ~ Uniform[-5, 5]^dimension` and target
    `v = w . u + xi`, where the noise `xi ~ Normal(0, 2)` has standard
    deviation 2, so its variance is 4.

    Args:
        num_samples: Number of samples, a positive integer.
        dimension: Number of input columns, a positive integer.
        seed: Integer seed or `numpy.random.Generator`.

    Returns:
        A tuple `(x, y, noise)` of float32 arrays with shapes
        `[num_samples, dimension]`, `[num_samples]` and `[num_samples]`.
        `noise` is the realised `xi`, so `y - noise == x @ w` up to float32
        rounding, and `mean(noise**2)` is the realised noise floor of a mean
        squared error on these samples.

    Raises:
        ValueError: If `num_samples` or `dimension` is not a positive integer,
            or `seed` is not an integer or generator.
    """
    _check_positive_int("num_samples", num_samples, example=200)
    _check_positive_int("dimension", dimension, example=16)
    rng = _as_generator(seed)

    weights = _draw_regression_weights(dimension, rng)
    return _sample_regression(weights, num_samples, rng)


def regression_splits(samples_per_split=200, dimension=16, seed=0):
    """Draw the regression data set and cut it into five partitions.

    All five partitions share one weight vector `w`, so they come from the
    same linear model. The sampling process is the one of `make_regression`.

    Args:
        samples_per_split: Number of samples in each partition, a positive
            integer.
        dimension: Number of input columns, a positive integer.
        seed: Integer seed or `numpy.random.Generator`.

    Returns:
        A `FiveWaySplit` whose `noise_variance` maps each partition name to
        the realised `mean(noise**2)` on that partition.

    Raises:
        ValueError: If `samples_per_split` or `dimension` is not a positive
            integer, or `seed` is not an integer or generator.
    """
    _check_positive_int("samples_per_split", samples_per_split, example=200)
    _check_positive_int("dimension", dimension, example=16)
    rng = _as_generator(seed)

    weights = _draw_regression_weights(dimension, rng)
    x, y, noise = _sample_regression(
        weights, samples_per_split * len(PARTITION_NAMES), rng
    )
    return five_way_split(x, y, rng, noise=noise)


def make_classification(
    num_samples,
    dimension=32,
    informative_fraction=0.05,
    combination_fraction=0.05,
    class_separation=1.0,
    noise_std=1.0,
    *,
    seed,
):
    """Draw a binary classification data set with four Gaussian clusters.

    The column layout and the meaning of each argument are described in
    `ClassificationSpec`. The four cluster centres are distinct vertices of
    the hypercube `{-class_separation, +class_separation}^num_informative`,
    so with 2 informative columns they are all four vertices of the square.
    The cluster centres, their labels and the combination matrix are drawn
    once per call. Each sample then draws its label uniformly from {0, 1} and
    its centre uniformly from the two centres of that label.

    Args:
        num_samples: Number of samples, a positive integer.
        dimension: Number of input columns, at least 3.
        informative_fraction: Share of `dimension` that is informative, in
            (0, 1).
        combination_fraction: Share of `dimension` that is linear combinations
            of the informative columns, in (0, 1).
        class_separation: Distance of each informative centre coordinate from
            0, positive.
        noise_std: Standard deviation of the noise around each centre,
            non-negative.
        seed: Integer seed or `numpy.random.Generator`.

    Returns:
        A tuple `(x, y)`: float32 inputs of shape `[num_samples, dimension]`
        and float32 labels of shape `[num_samples]` with values 0 and 1.

    Raises:
        ValueError: If an argument is out of range, the informative and
            combination columns do not fit in `dimension`, or `seed` is not an
            integer or generator.
    """
    _check_positive_int("num_samples", num_samples, example=200)
    spec = ClassificationSpec(
        dimension=dimension,
        informative_fraction=informative_fraction,
        combination_fraction=combination_fraction,
        class_separation=class_separation,
        noise_std=noise_std,
    )
    rng = _as_generator(seed)

    centres, mixing = _draw_classification_parameters(spec, rng)
    return _sample_classification(spec, centres, mixing, num_samples, rng)


def classification_splits(samples_per_split=200, spec=ClassificationSpec(), seed=0):
    """Draw the classification data set and cut it into five partitions.

    All five partitions share one set of cluster centres and one combination
    matrix, so they come from the same distribution.

    Args:
        samples_per_split: Number of samples in each partition, a positive
            integer.
        spec: `ClassificationSpec` of the data set.
        seed: Integer seed or `numpy.random.Generator`.

    Returns:
        A `FiveWaySplit` with float32 labels 0 and 1 and no `noise_variance`.

    Raises:
        ValueError: If `samples_per_split` is not a positive integer, `spec`
            is not a `ClassificationSpec`, or `seed` is not an integer or
            generator.
    """
    _check_positive_int("samples_per_split", samples_per_split, example=200)
    if not isinstance(spec, ClassificationSpec):
        raise ValueError(
            "`spec` must be a `ClassificationSpec`. "
            f"Received: spec={spec!r}. "
            "Pass `ClassificationSpec(dimension=..., ...)`."
        )
    rng = _as_generator(seed)

    centres, mixing = _draw_classification_parameters(spec, rng)
    x, y = _sample_classification(
        spec, centres, mixing, samples_per_split * len(PARTITION_NAMES), rng
    )
    return five_way_split(x, y, rng)


def breast_cancer_splits(seed=0, task_seed=None):
    """Load the Wisconsin breast cancer data set and cut it into five partitions.

    The data set ships with scikit-learn (`sklearn.datasets.load_breast_cancer`)
    and has 569 samples with 30 features and binary labels. The rows are
    shuffled with `seed` and cut into partitions of 114, 114, 114, 114 and 113
    rows, in `PARTITION_NAMES` order. Every partition is then standardized
    with the per-feature mean and standard deviation of `controller_train`
    and `task_train` combined, so no statistic comes from validation or test
    rows.

    With `task_seed`, the rows of `task_train`, `task_val` and `test` are
    pooled and shuffled again with `task_seed` into three partitions of the
    same sizes, while the controller partitions stay those of `seed`. So
    repeated trials on fresh task partitions never reuse a row that a
    controller trained on.

    Args:
        seed: Integer seed or `numpy.random.Generator` for the shuffle.
        task_seed: Optional integer seed for reshuffling the task and test
            rows. Defaults to None (no reshuffle).

    Returns:
        A `FiveWaySplit` with float32 labels 0 (malignant) and 1 (benign), as
        scikit-learn encodes them, and no `noise_variance`.

    Raises:
        ValueError: If `seed` is not an integer or generator.
    """
    rng = _as_generator(seed)
    bunch = datasets.load_breast_cancer()
    raw = five_way_split(bunch.data, bunch.target, rng)
    if task_seed is not None:
        raw = _reshuffle_task_partitions(raw, task_seed)

    training_x = np.concatenate([raw.controller_train.x, raw.task_train.x])
    mean = training_x.mean(axis=0)
    std = training_x.std(axis=0)
    standardized = {
        name: Split(x=(split.x - mean) / std, y=split.y)
        for name, split in raw.partitions().items()
    }
    return FiveWaySplit(**standardized)


def _reshuffle_task_partitions(split, task_seed):
    names = ("task_train", "task_val", "test")
    parts = [getattr(split, name) for name in names]
    x = np.concatenate([part.x for part in parts])
    y = np.concatenate([part.y for part in parts])
    order = _as_generator(task_seed).permutation(len(x))
    bounds = np.cumsum([len(part.x) for part in parts])[:-1]
    pieces = np.split(order, bounds)
    fresh = {
        name: Split(x=x[rows], y=y[rows]) for name, rows in zip(names, pieces)
    }
    return dataclasses.replace(split, **fresh)


def five_way_split(x, y, seed, noise=None):
    """Shuffle samples and cut them into five partitions.

    The partition sizes differ by at most 1. When the sample count is not a
    multiple of 5, the first partitions in `PARTITION_NAMES` order get the
    extra rows, as `numpy.array_split` does.

    Args:
        x: Inputs of shape `[num_samples, dimension]`, with at least 5 rows.
        y: Targets of shape `[num_samples]`.
        seed: Integer seed or `numpy.random.Generator` for the shuffle.
        noise: Optional realised noise of shape `[num_samples]`. When given,
            the result's `noise_variance` contains `mean(noise**2)` for each
            partition.

    Returns:
        A `FiveWaySplit` with float32 arrays.

    Raises:
        ValueError: If the shapes of `x`, `y` and `noise` do not match, `x`
            has fewer than 5 rows, or `seed` is not an integer or generator.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2:
        raise ValueError(
            "`x` must be a 2-D array of shape [num_samples, dimension]. "
            f"Received: x.shape={x.shape}. Reshape the inputs to 2-D."
        )
    num_samples = x.shape[0]
    if num_samples < len(PARTITION_NAMES):
        raise ValueError(
            f"`x` must have at least {len(PARTITION_NAMES)} rows, one per "
            f"partition. Received: x.shape={x.shape}. Pass more samples."
        )
    if y.shape != (num_samples,):
        raise ValueError(
            "`y` must be a 1-D array with one target per row of `x`. "
            f"Received: y.shape={y.shape} with x.shape={x.shape}. "
            "Pass one target per input row."
        )
    if noise is not None:
        noise = np.asarray(noise)
        if noise.shape != (num_samples,):
            raise ValueError(
                "`noise` must be a 1-D array with one value per row of `x`. "
                f"Received: noise.shape={noise.shape} with x.shape={x.shape}. "
                "Pass the realised noise of each sample, or None."
            )
    rng = _as_generator(seed)

    order = rng.permutation(num_samples)
    index_groups = np.array_split(order, len(PARTITION_NAMES))
    partitions = {
        name: Split(x=x[indices], y=y[indices])
        for name, indices in zip(PARTITION_NAMES, index_groups)
    }
    noise_variance = None
    if noise is not None:
        noise = noise.astype(np.float64)
        noise_variance = {
            name: float(np.mean(noise[indices] ** 2))
            for name, indices in zip(PARTITION_NAMES, index_groups)
        }
    return FiveWaySplit(**partitions, noise_variance=noise_variance)


def _draw_regression_weights(dimension, rng):
    return rng.uniform(
        -_REGRESSION_WEIGHT_BOUND, _REGRESSION_WEIGHT_BOUND, size=dimension
    )


def _sample_regression(weights, num_samples, rng):
    dimension = weights.shape[0]
    inputs = rng.uniform(
        -_REGRESSION_INPUT_BOUND,
        _REGRESSION_INPUT_BOUND,
        size=(num_samples, dimension),
    ).astype(np.float32)
    noise = rng.normal(0.0, _REGRESSION_NOISE_STD, size=num_samples).astype(
        np.float32
    )
    # The target is computed from the float32 inputs and noise that are
    # returned, so `y - noise` is linear in `x` up to the final float32 cast.
    targets = inputs.astype(np.float64) @ weights + noise.astype(np.float64)
    return inputs, targets.astype(np.float32), noise


def _draw_classification_parameters(spec, rng):
    """Draw the cluster centres and the combination matrix of one data set.

    Returns:
        A tuple `(centres, mixing)`. `centres` has shape
        `[4, num_informative]`, and rows `2 * label` and `2 * label + 1` are
        the two centres of `label`. `mixing` has shape
        `[num_informative, num_combination]`.
    """
    num_centres = _NUM_CLASSES * _CENTRES_PER_CLASS
    # Rejection sampling draws 4 distinct hypercube vertices uniformly. With
    # 2 informative columns there are exactly 4 vertices and a draw is
    # accepted with probability 4! / 4**4, about 0.09. More columns accept
    # more often.
    while True:
        bits = rng.integers(0, 2, size=(num_centres, spec.num_informative))
        if len(np.unique(bits, axis=0)) == num_centres:
            break
    # The rows are in random order, so giving rows 0-1 label 0 and rows 2-3
    # label 1 assigns the labels at random.
    centres = (2.0 * bits - 1.0) * spec.class_separation
    mixing = rng.standard_normal(size=(spec.num_informative, spec.num_combination))
    return centres, mixing


def _sample_classification(spec, centres, mixing, num_samples, rng):
    labels = rng.integers(0, _NUM_CLASSES, size=num_samples)
    cluster = rng.integers(0, _CENTRES_PER_CLASS, size=num_samples)
    centre_index = _CENTRES_PER_CLASS * labels + cluster

    informative = centres[centre_index] + rng.normal(
        0.0, spec.noise_std, size=(num_samples, spec.num_informative)
    )
    combination = informative @ mixing
    noise = rng.standard_normal(size=(num_samples, spec.num_noise))

    x = np.concatenate([informative, combination, noise], axis=1)
    return x.astype(np.float32), labels.astype(np.float32)
