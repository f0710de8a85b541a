"""Loading MNIST-format IDX files (torchvision's raw folder layout), gzipped or not.

A data set is a folder under the data root: the presets ``mnist`` and ``kmnist``, or any other name for
a folder of your own 28 x 28 images in the same four files. The loader is numpy-only so that the runtime
can use it without torch; ``as_tensors`` converts lazily for training. Every failure names the file and
says what was expected and what came.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension
DATA_ENV_VAR = "DIFFDEFENSE_DATA"

CACHE_FOLDER = "diffdefense"  # under $XDG_CACHE_HOME, else ~/.cache

Split = Literal["train", "test"]
DATASET_NAMES: tuple[str, ...] = ("mnist", "kmnist")  # the presets; any other safe name is a folder of your own
PRESET_LABELS = {
    "mnist": [str(d) for d in range(10)],
    "kmnist": ["お", "き", "す", "つ", "な", "は", "ま", "や", "れ", "を"],
}
# A data set's name is one folder under the data root (and under the weights folder): no separators, no "..".
DATASET_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LABELS_FILE = "labels.txt"  # optional in a folder of your own: its 10 class names, one a line

# KMNIST ships without its 60,000 training images here (see shared/data/README.md), so the project
# trains on a fixed split of the official test images: per class, in file order, the first 800 are
# for training and the remaining 200 for evaluation (DESIGN section 4).
KMNIST_TRAIN_PER_CLASS = 800
KMNIST_EVAL_PER_CLASS = 200


class DataError(ValueError):
    """A data folder or IDX file that cannot be read as MNIST-format data."""


@dataclass(frozen=True)
class ImageSet:
    """Images and labels as stored: ``images`` uint8 (N, 28, 28), 0 = background; ``labels`` uint8 (N,)."""

    images: np.ndarray
    labels: np.ndarray
    name: str

    def __len__(self) -> int:
        return len(self.labels)

    def float_images(self) -> np.ndarray:
        """Images as float32 (N, 1, 28, 28) in [0, 1]."""
        return (self.images.astype(np.float32) / 255.0)[:, None]

    def as_tensors(self):
        """(images float32 (N, 1, 28, 28) in [0, 1], labels int64 (N,)) as torch tensors."""
        import torch

        return torch.from_numpy(self.float_images()), torch.from_numpy(self.labels.astype(np.int64))

    def subset(self, indices: np.ndarray, name: str | None = None) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices], name or self.name)

    def concat(self, other: ImageSet) -> ImageSet:
        return ImageSet(
            np.concatenate([self.images, other.images]),
            np.concatenate([self.labels, other.labels]),
            f"{self.name} + {other.name}",
        )


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"Expected an IDX file at {path}, but there is no such file.")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"The gzip file {path} is truncated or corrupted ({err}).") from err
    return raw


def read_idx(path: str | os.PathLike, expected_magic: int) -> np.ndarray:
    """Read one IDX file (gzipped or not) of unsigned bytes; check its magic number and length."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"The IDX file {path} has {len(raw)} bytes, fewer than its 4-byte header.")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"The IDX file {path} has magic number 0x{magic:08x}, but 0x{expected_magic:08x} was "
            f"expected ({'images' if expected_magic == IMAGE_MAGIC else 'labels'} of unsigned bytes)."
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"The IDX file {path} is truncated inside its header.")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    got = len(raw) - header
    if got != expected:
        raise DataError(
            f"The IDX file {path} declares shape {dims} ({expected} bytes of data) but holds "
            f"{got} bytes: it is {'truncated' if got < expected else 'longer than declared'}."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DataError(f"Expected {stem}.gz or {stem} in {folder}, but neither is there.")


def load_idx_folder(folder: str | os.PathLike, split: Split, name: str | None = None) -> ImageSet:
    """Load ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` from any folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"Expected a folder of MNIST-format IDX files at {folder}, but it does not exist.")
    prefix = {"train": "train", "test": "t10k"}[split]
    images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"), IMAGE_MAGIC)
    labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"), LABEL_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"The {split} split in {folder} has {len(images)} images but {len(labels)} labels; the counts must agree."
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"The {split} labels in {folder} must be 0..9, but the largest is {labels.max()}.")
    return ImageSet(images, labels, name or f"{folder.name}-{split}")


def default_data_root() -> Path:
    """``$DIFFDEFENSE_DATA`` if set, else the user cache: ``$XDG_CACHE_HOME/diffdefense`` or ``~/.cache/diffdefense``.

    (``--data-root`` on the command line comes before both.) A relative ``$XDG_CACHE_HOME`` is ignored, as the XDG
    specification asks."""
    if env := os.environ.get(DATA_ENV_VAR):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    cache = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return cache / CACHE_FOLDER


def check_dataset_name(name: str) -> str:
    """``name`` if it can be a data set's folder name; a DataError saying what a name may hold otherwise."""
    if not isinstance(name, str) or not DATASET_NAME_PATTERN.fullmatch(name):
        raise DataError(
            "Expected a data set name of 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit "
            f"(it names a folder under the data root), but got {name!r}."
        )
    return name


def dataset_folder(dataset: str, root: str | os.PathLike | None = None) -> Path:
    """The folder a data set is read from: ``root / dataset``, the root defaulting to ``default_data_root()``."""
    return (Path(root) if root is not None else default_data_root()) / check_dataset_name(dataset)


def dataset_labels(dataset: str, root: str | os.PathLike | None = None) -> list[str]:
    """The 10 class names: a preset's, else those in the folder's labels.txt (one a line), else "0" .. "9"."""
    if dataset in PRESET_LABELS:
        return list(PRESET_LABELS[dataset])
    path = dataset_folder(dataset, root) / LABELS_FILE
    if not path.is_file():
        return [str(d) for d in range(10)]
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != 10:
        raise DataError(
            f"Expected 10 class names in {path}, one a line (the classifiers are 10-way), but got {len(names)}."
        )
    return names


def kmnist_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed KMNIST split: per class, in file order, the first 800 indices train, the next 200 evaluate."""
    train, held_out = [], []
    for cls in range(10):
        idx = np.flatnonzero(labels == cls)
        need = KMNIST_TRAIN_PER_CLASS + KMNIST_EVAL_PER_CLASS
        if len(idx) < need:
            raise DataError(f"The KMNIST split needs {need} images of class {cls}, but there are {len(idx)}.")
        train.append(idx[:KMNIST_TRAIN_PER_CLASS])
        held_out.append(idx[KMNIST_TRAIN_PER_CLASS:need])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held_out))


def load_dataset(dataset: str, split: Split, root: str | os.PathLike | None = None) -> ImageSet:
    """A data set's ``split`` ('train' or 'test') from ``root / dataset`` (root default: ``default_data_root()``).

    ``dataset``: 'mnist', 'kmnist', or the name of a folder of your own holding the four MNIST-format files. KMNIST's
    'train' and 'test' are the project's fixed 8,000 / 2,000 split of the official test images (see
    ``kmnist_split_indices``), since its training images are not available here.
    """
    folder = dataset_folder(dataset, root)
    if not folder.is_dir():
        hint = (
            f"fetch it with `diffdefense data fetch {dataset}`, or point"
            if dataset in DATASET_NAMES
            else f"{dataset!r} is not a preset ({', '.join(DATASET_NAMES)}), so it must be a folder of your own; point"
        )
        raise DataError(
            f"Expected a folder of MNIST-format IDX files at {folder}, but it does not exist: {hint} --data-root or "
            f"${DATA_ENV_VAR} at the folder that holds {dataset}/."
        )
    if dataset != "kmnist":
        return load_idx_folder(folder, split, name=f"{dataset}-{split}")
    official_test = load_idx_folder(folder, "test")
    train_idx, eval_idx = kmnist_split_indices(official_test.labels)
    chosen = train_idx if split == "train" else eval_idx
    return official_test.subset(chosen, name=f"kmnist-split-{split}")


def load_training_set(dataset: str, root: str | os.PathLike | None = None, extra: str | None = None) -> ImageSet:
    """A data set's training split, followed by the training split of the data folder ``extra`` where given (e.g.
    ``kmnist-train-part``: official KMNIST training images, which the preset's split of the test images lacks). The
    held-out ('test') split stays the data set's own."""
    train = load_dataset(dataset, "train", root)
    if extra is None:
        return train
    if extra == dataset:
        raise DataError(f"Expected extra training data from another folder than {dataset!r} itself, but got {extra!r}.")
    return train.concat(load_dataset(extra, "train", root))
