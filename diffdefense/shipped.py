"""The trained weights that ship in ``diffdefense/weights``: a manifest with sha256 and training records.

Weights are safetensors files (no pickle). ``weight_file`` refuses a file whose checksum does not
match the manifest, naming it. This module is numpy-only so the runtime can use it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUNDLES_DIR = Path(__file__).resolve().parent / "bundles"
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


class ChecksumError(ValueError):
    """A shipped file whose bytes are not the ones the manifest records."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(weights_dir: Path | None = None) -> dict:
    path = (weights_dir or WEIGHTS_DIR) / MANIFEST_NAME
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "files": {}}
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path} has format {manifest.get('format')!r}, but format {MANIFEST_FORMAT} was expected.")
    return manifest


def verify_file(name: str, weights_dir: Path | None = None) -> Path:
    """Path of a shipped file after checking it against the manifest; raises if missing or changed."""
    weights_dir = weights_dir or WEIGHTS_DIR
    entry = read_manifest(weights_dir)["files"].get(name)
    if entry is None:
        raise FileNotFoundError(f"{name} is not listed in {weights_dir / MANIFEST_NAME}.")
    path = weights_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"The manifest lists {name}, but {path} does not exist.")
    actual = sha256_of(path)
    if actual != entry["sha256"]:
        raise ChecksumError(
            f"{path} has sha256 {actual}, but the manifest records {entry['sha256']}: "
            "the file was changed or corrupted after it was shipped."
        )
    return path


def verify_all(weights_dir: Path | None = None) -> list[str]:
    """Check every file in the manifest; return their names."""
    names = sorted(read_manifest(weights_dir)["files"])
    for name in names:
        verify_file(name, weights_dir)
    return names


def add_files(names: list[str], weights_dir: Path | None = None) -> None:
    """Record the sha256 and size of files already in ``weights_dir`` (locked, written atomically)."""
    weights_dir = weights_dir or WEIGHTS_DIR
    with open(weights_dir / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _add_files_locked(names, weights_dir)


def _add_files_locked(names: list[str], weights_dir: Path) -> None:
    manifest = read_manifest(weights_dir)
    for name in names:
        path = weights_dir / name
        manifest["files"][name] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
    manifest["files"] = dict(sorted(manifest["files"].items()))
    tmp = weights_dir / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, weights_dir / MANIFEST_NAME)


def bundle_dir(dataset: str) -> Path:
    """The shipped ONNX bundle of a data set (made by tools/export.py)."""
    path = BUNDLES_DIR / dataset
    if not path.is_dir():
        raise FileNotFoundError(f"There is no shipped bundle for {dataset!r} at {path}; make one with tools/export.py.")
    return path
