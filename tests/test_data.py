import gzip

import numpy as np
import pytest

from diffdefense.data import (
    DATA_ENV_VAR,
    IMAGE_MAGIC,
    LABEL_MAGIC,
    DataError,
    dataset_labels,
    default_data_root,
    kmnist_split_indices,
    load_dataset,
    load_idx_folder,
    load_training_set,
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


def test_a_name_that_is_no_preset_and_no_folder_is_refused_saying_so(tiny_data_root):
    with pytest.raises(DataError, match=r"cifar, but it does not exist: 'cifar' is not a preset \(mnist, kmnist\)"):
        load_dataset("cifar", "train", tiny_data_root)


@pytest.mark.parametrize("name", ["../mnist", "a/b", "..", ".hidden", "", "x" * 65, "mnist\n"])
def test_a_dataset_name_that_is_not_a_safe_folder_name_is_refused(tiny_data_root, name):
    with pytest.raises(DataError, match="Expected a data set name of 1 to 64 letters, digits"):
        load_dataset(name, "train", tiny_data_root)


def test_a_folder_of_your_own_loads_by_its_name_with_digit_labels_by_default(tmp_path):
    write_idx_folder(tmp_path / "my-digits_2", n_train=20, n_test=10, gz=False)
    train = load_dataset("my-digits_2", "train", tmp_path)
    assert len(train) == 20 and train.name == "my-digits_2-train"
    assert dataset_labels("my-digits_2", tmp_path) == [str(d) for d in range(10)]
    assert dataset_labels("kmnist", tmp_path)[0] == "お"


def test_labels_txt_names_the_classes_of_a_folder_of_your_own(tmp_path):
    folder = write_idx_folder(tmp_path / "parts")
    (folder / "labels.txt").write_text("\n".join(f"part {d}" for d in range(10)) + "\n")
    assert dataset_labels("parts", tmp_path)[9] == "part 9"
    (folder / "labels.txt").write_text("bolt\nnut\n")
    with pytest.raises(DataError, match="Expected 10 class names in .*labels.txt, one a line .*, but got 2"):
        dataset_labels("parts", tmp_path)


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


def test_extra_training_data_is_appended_to_the_training_split_only(tiny_data_root):
    write_idx_folder(tiny_data_root / "more", n_train=16, seed=1)
    own = load_dataset("mnist", "train", tiny_data_root)
    both = load_training_set("mnist", tiny_data_root, extra="more")
    assert len(both) == len(own) + 16 and both.name == "mnist-train + more-train"
    np.testing.assert_array_equal(both.images[: len(own)], own.images)
    np.testing.assert_array_equal(both.labels[len(own) :], load_dataset("more", "train", tiny_data_root).labels)
    assert load_training_set("mnist", tiny_data_root).name == "mnist-train"
    with pytest.raises(DataError, match="another folder than 'mnist'"):
        load_training_set("mnist", tiny_data_root, extra="mnist")
    with pytest.raises(DataError, match="does not exist"):
        load_training_set("mnist", tiny_data_root, extra="nowhere")


def test_kmnist_with_the_official_training_images_it_has_makes_15011(real_data_root):
    if not (real_data_root / "kmnist-train-part").is_dir():
        pytest.skip(f"no kmnist-train-part/ (the first official KMNIST training images) in {real_data_root}")
    both = load_training_set("kmnist", real_data_root, extra="kmnist-train-part")
    assert len(both) == 15011
    official_labels = read_idx(real_data_root / "kmnist" / "train-labels-idx1-ubyte.gz", LABEL_MAGIC)
    np.testing.assert_array_equal(both.labels[8000:], official_labels[:7011])
