"""Checkpoints of a long seeded computation that runs batch by batch (an adaptive attack on 500 images takes hours on
a CPU): each finished batch is saved with the random state it left behind, so that a run stopped part-way resumes
after its last finished batch and ends with exactly the arrays an uninterrupted run gives."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


class BatchCheckpoints:
    """Named arrays per batch index in one folder (plain .npz, never pickles); `clear` removes the folder once the
    whole result is stored elsewhere."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, index: int) -> Path:
        return self.folder / f"batch_{index:05d}.npz"

    def load(self, index: int) -> dict[str, np.ndarray] | None:
        """The arrays saved for batch `index`, or None when that batch has not finished."""
        path = self._path(index)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}

    def save(self, index: int, **arrays: np.ndarray) -> None:
        """Write batch `index` whole or not at all (a run killed mid-write leaves no half file behind)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(index)
        partial = path.with_suffix(".tmp.npz")
        np.savez(partial, **{name: np.asarray(value) for name, value in arrays.items()})
        partial.replace(path)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
