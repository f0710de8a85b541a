"""Results of a bulk defence as shards: part-NNNNN.parquet or .npz files of at most shard_size images each, in the
order of the inputs, and summary.json (what ran, the shards' names, the image shape). read_results puts them back
together."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

FORMATS = ("parquet", "npz")
SUMMARY = "summary.json"
RECONSTRUCTION = "reconstruction"  # the one column of images: (N, C, H, W), a flat list per row in Parquet


def prepare_folder(folder: Path) -> Path:
    """folder, made if missing; ValueError if it holds anything (shards of another run would mix with these)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"Expected --out to be a new or empty folder, but {folder} holds files already.")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class ShardWriter:
    """add(columns) rows in order; full shards are written as they fill, the rest by close()."""

    def __init__(self, folder: Path, file_format: str, shard_size: int) -> None:
        if file_format not in FORMATS:
            raise ValueError(f"Expected a shard format in {FORMATS}, but got {file_format!r}.")
        if not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"Expected at least 1 image per shard, but got {shard_size!r}.")
        self.folder, self.format, self.shard_size = Path(folder), file_format, shard_size
        self.pending: list[dict[str, np.ndarray]] = []
        self.pending_rows = 0
        self.names: list[str] = []

    def add(self, columns: dict[str, np.ndarray]) -> None:
        self.pending.append(columns)
        self.pending_rows += len(next(iter(columns.values())))
        while self.pending_rows >= self.shard_size:
            self._write(self.shard_size)

    def close(self) -> list[str]:
        if self.pending_rows:
            self._write(self.pending_rows)
        return self.names

    def _write(self, rows: int) -> None:
        joined = {name: np.concatenate([part[name] for part in self.pending]) for name in self.pending[0]}
        shard = {name: column[:rows] for name, column in joined.items()}
        rest = {name: column[rows:] for name, column in joined.items()}
        left = len(next(iter(rest.values())))
        self.pending, self.pending_rows = ([rest], left) if left else ([], 0)
        name = f"part-{len(self.names):05d}.{self.format}"
        path = self.folder / name
        tmp = path.with_name(f".{name}.tmp")
        if self.format == "npz":
            with open(tmp, "wb") as file:
                np.savez(file, **shard)
        else:
            _write_parquet(shard, tmp)
        tmp.replace(path)
        self.names.append(name)


def write_summary(folder: Path, summary: dict) -> None:
    (Path(folder) / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")


def read_results(folder: Path) -> dict[str, np.ndarray]:
    """Every column of a bulk defence's shards, concatenated in the inputs' order (reconstructions shaped
    (N, C, H, W) again), from the shards that its summary.json names."""
    folder = Path(folder)
    if not (folder / SUMMARY).is_file():
        raise ValueError(f"Expected a bulk defence's results folder holding {SUMMARY}, but {folder} has none.")
    summary = json.loads((folder / SUMMARY).read_text())
    parts = [_read_shard(folder / name) for name in summary["shards"]]
    if not parts:
        return {}
    columns = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    if RECONSTRUCTION in columns:
        columns[RECONSTRUCTION] = columns[RECONSTRUCTION].reshape(-1, *summary["image_shape"])
    return columns


def _write_parquet(shard: dict[str, np.ndarray], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for name, column in shard.items():
        if column.ndim > 1:  # images: one fixed-size list of float32 per row
            flat = column.reshape(len(column), -1)
            arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), math.prod(flat.shape[1:]))
        else:
            arrays[name] = pa.array(column)
    pq.write_table(pa.table(arrays), path)


def _read_shard(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    columns = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if hasattr(column, "flatten") and hasattr(column.type, "list_size"):
            columns[name] = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
        else:
            array = column.to_numpy(zero_copy_only=False)
            columns[name] = array.astype(str) if array.dtype == object else array  # strings, as in the .npz
    return columns
