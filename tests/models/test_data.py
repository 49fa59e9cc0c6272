import numpy as np
import pytest

from autoloss_models import data

LARGE_N = 20000


def _assert_splits_equal(first, second):
    for name in data.PARTITION_NAMES:
        np.testing.assert_array_equal(
            getattr(first, name).x, getattr(second, name).x, err_msg=name
        )
        np.testing.assert_array_equal(
            getattr(first, name).y, getattr(second, name).y, err_msg=name
        )


def _assert_float32_split(split, samples_per_split, dimension):
    for name, partition in split.partitions().items():
        assert partition.x.shape == (samples_per_split, dimension), name
        assert partition.y.shape == (samples_per_split,), name
        assert partition.x.dtype == np.float32, name
        assert partition.y.dtype == np.float32, name


def _least_squares_residual(design, target):
    design = design.astype(np.float64)
    target = target.astype(np.float64)
    coefficients, *_ = np.linalg.lstsq(design, target, rcond=None)
    return target - design @ coefficients


# Regression.


def test_make_regression_shapes_and_dtypes():
    x, y, noise = data.make_regression(50, dimension=7, seed=0)

    assert x.shape == (50, 7)
    assert y.shape == (50,)
    assert noise.shape == (50,)
    assert x.dtype == np.float32
    assert y.dtype == np.float32
    assert noise.dtype == np.float32


def test_make_regression_seed_reproducible():
    first = data.make_regression(100, seed=3)
    same = data.make_regression(100, seed=3)
    other = data.make_regression(100, seed=4)

    for array, same_array in zip(first, same):
        np.testing.assert_array_equal(array, same_array)
    for array, other_array in zip(first, other):
        assert not np.array_equal(array, other_array)


def test_make_regression_accepts_generator():
    from_int = data.make_regression(30, seed=5)
    from_generator = data.make_regression(30, seed=np.random.default_rng(5))

    for array, generator_array in zip(from_int, from_generator):
        np.testing.assert_array_equal(array, generator_array)


def test_make_regression_input_range():
    x, _, _ = data.make_regression(LARGE_N, dimension=4, seed=0)

    assert x.min() >= -5.0
    assert x.max() <= 5.0
    assert x.min() < -4.9
    assert x.max() > 4.9


def test_make_regression_noise_variance_near_4():
    _, _, noise = data.make_regression(LARGE_N, seed=1)

    assert abs(np.mean(noise)) < 0.1
    assert abs(np.mean(noise.astype(np.float64) ** 2) - 4.0) < 0.15


def test_make_regression_target_is_linear_plus_noise():
    x, y, noise = data.make_regression(500, dimension=16, seed=2)
    clean = y.astype(np.float64) - noise.astype(np.float64)

    coefficients, *_ = np.linalg.lstsq(x.astype(np.float64), clean, rcond=None)
    residual = clean - x.astype(np.float64) @ coefficients

    # float32 rounding of y and noise leaves errors near 1e-6.
    assert np.max(np.abs(residual)) < 1e-4
    assert np.all(np.abs(coefficients) <= 0.5 + 1e-4)


def test_make_regression_target_depends_on_noise():
    x, y, _ = data.make_regression(500, dimension=16, seed=2)

    residual = _least_squares_residual(x, y)

    assert np.mean(residual**2) > 3.0


def test_regression_splits_shapes_and_reproducible():
    split = data.regression_splits(samples_per_split=40, dimension=6, seed=7)
    same = data.regression_splits(samples_per_split=40, dimension=6, seed=7)
    other = data.regression_splits(samples_per_split=40, dimension=6, seed=8)

    _assert_float32_split(split, 40, 6)
    _assert_splits_equal(split, same)
    assert not np.array_equal(split.test.x, other.test.x)
    assert split.noise_variance == same.noise_variance


def test_regression_splits_default_sizes():
    split = data.regression_splits()

    _assert_float32_split(split, 200, 16)


def test_regression_splits_share_one_weight_vector():
    split = data.regression_splits(samples_per_split=100, dimension=8, seed=0)
    parts = split.partitions().values()
    x = np.concatenate([part.x for part in parts])
    y = np.concatenate([part.y for part in parts])

    # One linear model across all partitions leaves only the noise as
    # residual, with variance near 4. Different weight vectors would add
    # model mismatch on top.
    residual = _least_squares_residual(x, y)

    assert np.mean(residual**2) < 4.8


def test_regression_splits_noise_variance_per_partition():
    split = data.regression_splits(samples_per_split=200, seed=0)

    assert set(split.noise_variance) == set(data.PARTITION_NAMES)
    for name, variance in split.noise_variance.items():
        assert isinstance(variance, float), name
        assert 2.5 < variance < 5.5, name


def test_regression_splits_noise_variance_matches_residual():
    split = data.regression_splits(samples_per_split=300, dimension=4, seed=3)
    parts = split.partitions()
    x = np.concatenate([part.x for part in parts.values()])
    y = np.concatenate([part.y for part in parts.values()])
    coefficients, *_ = np.linalg.lstsq(
        x.astype(np.float64), y.astype(np.float64), rcond=None
    )

    for name, part in parts.items():
        prediction = part.x.astype(np.float64) @ coefficients
        mse = np.mean((part.y - prediction) ** 2)
        assert abs(mse - split.noise_variance[name]) < 0.5, name


# Classification.


def test_classification_spec_default_counts():
    spec = data.ClassificationSpec()

    assert spec.dimension == 32
    assert spec.num_informative == 2
    assert spec.num_combination == 2
    assert spec.num_noise == 28


@pytest.mark.parametrize(
    "kwargs, informative, combination, noise",
    [
        ({"dimension": 3}, 2, 1, 0),
        ({"dimension": 100, "informative_fraction": 0.1}, 10, 5, 85),
        (
            {
                "dimension": 40,
                "informative_fraction": 0.5,
                "combination_fraction": 0.25,
            },
            20,
            10,
            10,
        ),
    ],
)
def test_classification_spec_counts(kwargs, informative, combination, noise):
    spec = data.ClassificationSpec(**kwargs)

    assert spec.num_informative == informative
    assert spec.num_combination == combination
    assert spec.num_noise == noise


def test_make_classification_shapes_and_dtypes():
    x, y = data.make_classification(60, dimension=10, seed=0)

    assert x.shape == (60, 10)
    assert y.shape == (60,)
    assert x.dtype == np.float32
    assert y.dtype == np.float32
    assert set(np.unique(y)) <= {0.0, 1.0}


def test_make_classification_seed_reproducible():
    x, y = data.make_classification(200, seed=11)
    same_x, same_y = data.make_classification(200, seed=11)
    other_x, other_y = data.make_classification(200, seed=12)

    np.testing.assert_array_equal(x, same_x)
    np.testing.assert_array_equal(y, same_y)
    assert not np.array_equal(x, other_x)
    assert not np.array_equal(y, other_y)


def test_make_classification_balanced_labels():
    _, y = data.make_classification(LARGE_N, seed=0)

    assert abs(np.mean(y) - 0.5) < 0.02


@pytest.mark.parametrize("num_informative_dims", [2, 5])
def test_make_classification_four_centres_two_per_label(num_informative_dims):
    dimension = 20
    separation = 3.0
    x, y = data.make_classification(
        2000,
        dimension=dimension,
        informative_fraction=num_informative_dims / dimension,
        combination_fraction=0.05,
        class_separation=separation,
        noise_std=0.1,
        seed=4,
    )
    informative = x[:, :num_informative_dims]

    # With noise 0.1 and centres at +-3, every sample sits near one vertex.
    vertices = np.sign(informative) * separation
    assert np.max(np.abs(informative - vertices)) < 1.0

    centres_by_label = {
        label: {tuple(row) for row in vertices[y == label]} for label in (0.0, 1.0)
    }
    assert len(centres_by_label[0.0]) == 2
    assert len(centres_by_label[1.0]) == 2
    assert not centres_by_label[0.0] & centres_by_label[1.0]


@pytest.mark.parametrize("separation", [1.0, 2.5])
def test_make_classification_label_means(separation):
    x, y = data.make_classification(
        LARGE_N, dimension=32, class_separation=separation, seed=5
    )
    informative = x[:, :2]

    # Each label mixes two distinct vertices of {-s, +s}^2 with equal weight,
    # so each coordinate of its mean is -s, 0 or +s. Both means are 0 when
    # the labels sit on opposite corners, as in XOR.
    for label in (0.0, 1.0):
        mean = informative[y == label].mean(axis=0)
        nearest = np.array([-separation, 0.0, separation])
        distance = np.min(np.abs(mean[:, None] - nearest[None, :]), axis=1)
        assert np.all(distance < 0.1), (label, mean)


def test_make_classification_noise_around_centre():
    noise_std = 0.5
    x, y = data.make_classification(
        LARGE_N, dimension=32, class_separation=4.0, noise_std=noise_std, seed=9
    )
    informative = x[:, :2].astype(np.float64)

    deviation = informative - np.sign(informative) * 4.0

    assert abs(np.std(deviation) - noise_std) < 0.02


def test_make_classification_combination_columns_are_linear():
    spec = data.ClassificationSpec(
        dimension=30, informative_fraction=0.2, combination_fraction=0.1
    )
    x, _ = data.make_classification(
        1000,
        dimension=spec.dimension,
        informative_fraction=spec.informative_fraction,
        combination_fraction=spec.combination_fraction,
        seed=1,
    )
    informative = x[:, : spec.num_informative]
    start = spec.num_informative
    combination = x[:, start : start + spec.num_combination]

    for column in range(spec.num_combination):
        residual = _least_squares_residual(informative, combination[:, column])
        scale = np.max(np.abs(combination[:, column]))
        assert np.max(np.abs(residual)) < 1e-5 * max(scale, 1.0), column


def test_make_classification_noise_columns():
    spec = data.ClassificationSpec()
    x, y = data.make_classification(LARGE_N, seed=2)
    noise = x[:, spec.num_informative + spec.num_combination :].astype(np.float64)

    assert noise.shape[1] == spec.num_noise
    correlations = np.array(
        [np.corrcoef(noise[:, column], y)[0, 1] for column in range(spec.num_noise)]
    )
    assert np.max(np.abs(correlations)) < 0.05
    assert np.max(np.abs(noise.var(axis=0) - 1.0)) < 0.05
    assert np.max(np.abs(noise.mean(axis=0))) < 0.05


def test_classification_splits_shapes_and_reproducible():
    spec = data.ClassificationSpec(dimension=12)
    split = data.classification_splits(samples_per_split=30, spec=spec, seed=3)
    same = data.classification_splits(samples_per_split=30, spec=spec, seed=3)
    other = data.classification_splits(samples_per_split=30, spec=spec, seed=4)

    _assert_float32_split(split, 30, 12)
    _assert_splits_equal(split, same)
    assert not np.array_equal(split.test.x, other.test.x)
    assert split.noise_variance is None


def test_classification_splits_default_sizes():
    split = data.classification_splits()

    _assert_float32_split(split, 200, 32)


def test_classification_splits_share_centres_and_mixing():
    spec = data.ClassificationSpec(
        dimension=20, informative_fraction=0.15, class_separation=3.0, noise_std=0.1
    )
    split = data.classification_splits(samples_per_split=300, spec=spec, seed=0)
    parts = split.partitions()
    x = np.concatenate([part.x for part in parts.values()])
    y = np.concatenate([part.y for part in parts.values()])
    informative = x[:, : spec.num_informative]
    start = spec.num_informative
    combination = x[:, start : start + spec.num_combination]

    # One combination matrix across partitions keeps the pooled columns
    # exactly linear in the informative columns.
    for column in range(spec.num_combination):
        residual = _least_squares_residual(informative, combination[:, column])
        scale = np.max(np.abs(combination[:, column]))
        assert np.max(np.abs(residual)) < 1e-5 * max(scale, 1.0), column

    # One set of centres across partitions gives four vertices in total.
    vertices = np.sign(informative) * spec.class_separation
    assert len({tuple(row) for row in vertices}) == 4
    for label in (0.0, 1.0):
        assert len({tuple(row) for row in vertices[y == label]}) == 2


# Five-way split.


def test_five_way_split_balanced_sizes():
    x = np.arange(23 * 2, dtype=np.float64).reshape(23, 2)
    y = np.arange(23, dtype=np.float64)

    split = data.five_way_split(x, y, seed=0)
    sizes = [len(part.y) for part in split.partitions().values()]

    assert sizes == [5, 5, 5, 4, 4]
    assert split.noise_variance is None


def test_five_way_split_is_permutation_of_rows():
    x = np.arange(40 * 3, dtype=np.float64).reshape(40, 3)
    y = np.arange(40, dtype=np.float64)

    split = data.five_way_split(x, y, seed=1)
    all_y = np.concatenate([part.y for part in split.partitions().values()])
    all_x = np.concatenate([part.x for part in split.partitions().values()])

    np.testing.assert_array_equal(np.sort(all_y), y.astype(np.float32))
    np.testing.assert_array_equal(all_x[:, 0], all_y * 3)
    assert not np.array_equal(all_y, y)


def test_five_way_split_noise_follows_rows():
    y = np.arange(20, dtype=np.float64)
    x = y[:, None]
    noise = y / 10.0

    split = data.five_way_split(x, y, seed=2, noise=noise)

    for name, part in split.partitions().items():
        expected = np.mean((part.y.astype(np.float64) / 10.0) ** 2)
        assert split.noise_variance[name] == pytest.approx(expected), name


# Breast cancer.


def test_breast_cancer_splits_sizes():
    split = data.breast_cancer_splits(seed=0)
    sizes = [len(part.y) for part in split.partitions().values()]

    assert sizes == [114, 114, 114, 114, 113]
    assert sum(sizes) == 569
    for name, part in split.partitions().items():
        assert part.x.shape[1] == 30, name
        assert part.x.dtype == np.float32, name
        assert part.y.dtype == np.float32, name
        assert set(np.unique(part.y)) == {0.0, 1.0}, name


def test_breast_cancer_splits_disjoint():
    split = data.breast_cancer_splits(seed=0)
    rows_by_partition = {
        name: {part.x[row].tobytes() for row in range(len(part.y))}
        for name, part in split.partitions().items()
    }

    total = sum(len(rows) for rows in rows_by_partition.values())
    union = set().union(*rows_by_partition.values())
    assert total == 569
    assert len(union) == 569


def test_breast_cancer_splits_standardized():
    split = data.breast_cancer_splits(seed=0)
    training_x = np.concatenate([split.controller_train.x, split.task_train.x])

    np.testing.assert_allclose(training_x.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(training_x.std(axis=0), 1.0, atol=1e-4)


def test_breast_cancer_splits_reproducible():
    split = data.breast_cancer_splits(seed=3)
    same = data.breast_cancer_splits(seed=3)
    other = data.breast_cancer_splits(seed=4)

    _assert_splits_equal(split, same)
    assert not np.array_equal(split.test.y, other.test.y)


# Argument validation.


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: data.make_regression(0, seed=0), "num_samples"),
        (lambda: data.make_regression(-3, seed=0), "num_samples"),
        (lambda: data.make_regression(2.5, seed=0), "num_samples"),
        (lambda: data.make_regression(10, dimension=0, seed=0), "dimension"),
        (lambda: data.make_regression(10, seed=-1), "seed"),
        (lambda: data.make_regression(10, seed="a"), "seed"),
        (lambda: data.regression_splits(samples_per_split=0), "samples_per_split"),
        (lambda: data.regression_splits(dimension=-1), "dimension"),
        (lambda: data.make_classification(0, seed=0), "num_samples"),
        (lambda: data.make_classification(10, dimension=2, seed=0), "dimension"),
        (
            lambda: data.make_classification(10, informative_fraction=1.5, seed=0),
            "informative_fraction",
        ),
        (
            lambda: data.make_classification(10, informative_fraction=0.0, seed=0),
            "informative_fraction",
        ),
        (
            lambda: data.make_classification(10, combination_fraction=1.0, seed=0),
            "combination_fraction",
        ),
        (
            lambda: data.make_classification(10, combination_fraction=-0.2, seed=0),
            "combination_fraction",
        ),
        (
            lambda: data.make_classification(
                10, informative_fraction=0.6, combination_fraction=0.6, seed=0
            ),
            "informative_fraction",
        ),
        (
            lambda: data.make_classification(10, class_separation=0.0, seed=0),
            "class_separation",
        ),
        (
            lambda: data.make_classification(10, noise_std=-1.0, seed=0),
            "noise_std",
        ),
        (
            lambda: data.make_classification(10, noise_std=float("nan"), seed=0),
            "noise_std",
        ),
        (lambda: data.ClassificationSpec(dimension=1), "dimension"),
        (
            lambda: data.classification_splits(samples_per_split=0),
            "samples_per_split",
        ),
        (lambda: data.classification_splits(spec={"dimension": 8}), "spec"),
        (lambda: data.breast_cancer_splits(seed=1.5), "seed"),
        (lambda: data.five_way_split(np.zeros(10), np.zeros(10), seed=0), "x"),
        (lambda: data.five_way_split(np.zeros((4, 2)), np.zeros(4), seed=0), "x"),
        (lambda: data.five_way_split(np.zeros((10, 2)), np.zeros(9), seed=0), "y"),
        (
            lambda: data.five_way_split(
                np.zeros((10, 2)), np.zeros(10), seed=0, noise=np.zeros(3)
            ),
            "noise",
        ),
    ],
)
def test_invalid_argument_raises(call, name):
    with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}"):
        call()


def test_invalid_fraction_message():
    with pytest.raises(ValueError) as error:
        data.make_classification(10, informative_fraction=1.5, seed=0)

    assert str(error.value) == (
        "`informative_fraction` must be in (0, 1). "
        "Received: informative_fraction=1.5. Pass a fraction such as 0.05."
    )
