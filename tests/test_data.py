import gzip

import numpy as np
import pytest

from diffdefense.data import (
    DATA_ENV_VAR,
    IMAGE_MAGIC,
    LABEL_MAGIC,
    DataError,
    default_data_root,
    kmnist_split_indices,
    load_dataset,
    load_idx_folder,
    read_idx,
)
from tests.conftest import idx_bytes, write_idx_folder


def test_reads_gzipped_and_plain_folders_alike(tmp_path):
    gz = load_idx_folder(write_idx_folder(tmp_path / "gz", gz=True), "train")
    plain = load_idx_folder(write_idx_folder(tmp_path / "plain", gz=False), "train")
    assert gz.images.dtype == np.uint8 and gz.images.shape == (64, 28, 28)
    np.testing.assert_array_equal(gz.images, plain.images)
    np.testing.assert_array_equal(gz.labels, plain.labels)


def test_float_images_and_tensors_are_in_unit_range(tiny_data_root):
    data = load_dataset("mnist", "test", tiny_data_root)
    floats = data.float_images()
    assert floats.shape == (32, 1, 28, 28) and floats.dtype == np.float32
    assert floats.min() >= 0.0 and floats.max() == 1.0
    x, y = data.as_tensors()
    assert tuple(x.shape) == (32, 1, 28, 28) and str(y.dtype) == "torch.int64"


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_idx_folder(tmp_path / "nowhere", "train")


def test_missing_file_is_named(tmp_path):
    folder = write_idx_folder(tmp_path / "m")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz or t10k-labels-idx1-ubyte"):
        load_idx_folder(folder, "test")


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_file_is_refused(tmp_path, gz):
    raw = idx_bytes(np.zeros((10, 28, 28), np.uint8), IMAGE_MAGIC)[:-100]
    path = tmp_path / "images"
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DataError, match="truncated"):
        read_idx(path, IMAGE_MAGIC)


def test_truncated_gzip_stream_is_refused(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((10, 28, 28), np.uint8), IMAGE_MAGIC))[:-30])
    with pytest.raises(DataError, match="truncated or corrupted"):
        read_idx(path, IMAGE_MAGIC)


def test_wrong_magic_is_refused(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros(5, np.uint8), LABEL_MAGIC))
    with pytest.raises(DataError, match="magic number 0x00000801, but 0x00000803 was expected"):
        read_idx(path, IMAGE_MAGIC)


def test_count_mismatch_is_refused(tmp_path):
    folder = write_idx_folder(tmp_path / "m")
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(63, np.uint8), LABEL_MAGIC)))
    with pytest.raises(DataError, match="64 images but 63 labels"):
        load_idx_folder(folder, "train")


def test_unknown_dataset_is_refused(tiny_data_root):
    with pytest.raises(DataError, match="Expected a dataset name"):
        load_dataset("cifar", "train", tiny_data_root)


def test_environment_variable_sets_the_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert default_data_root() == tmp_path


def test_kmnist_split_is_first_800_then_200_per_class_in_file_order():
    labels = np.repeat(np.arange(10), 1000)[np.random.default_rng(0).permutation(10000)]
    train, held_out = kmnist_split_indices(labels)
    assert len(train) == 8000 and len(held_out) == 2000 and not set(train) & set(held_out)
    for cls in range(10):
        in_order = np.flatnonzero(labels == cls)
        np.testing.assert_array_equal(np.sort(train[labels[train] == cls]), in_order[:800])
        np.testing.assert_array_equal(np.sort(held_out[labels[held_out] == cls]), in_order[800:])


def test_real_data_matches_published_facts(real_data_root):
    mnist_train = load_dataset("mnist", "train", real_data_root)
    mnist_test = load_dataset("mnist", "test", real_data_root)
    assert mnist_train.labels[0] == 5 and len(mnist_train) == 60000
    assert np.bincount(mnist_test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    kmnist_train = load_dataset("kmnist", "train", real_data_root)
    kmnist_test = load_dataset("kmnist", "test", real_data_root)
    assert len(kmnist_train) == 8000 and np.bincount(kmnist_train.labels).tolist() == [800] * 10
    assert len(kmnist_test) == 2000 and np.bincount(kmnist_test.labels).tolist() == [200] * 10
    assert kmnist_train.labels[:8].tolist() == [2, 9, 3, 8, 3, 3, 8, 3]
