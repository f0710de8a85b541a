"""The trained weights that ship in ``diffdefense/weights``: a manifest with sha256 and training records.

``$DIFFDEFENSE_WEIGHTS`` names another folder of the same layout to train into and load from instead (your own
models, for a data set of your own). Weights are safetensors files (no pickle). ``weight_file`` refuses a file whose
checksum does not match the manifest, naming it. This module is numpy-only so the runtime can use it.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from diffdefense.checksums import sha256_of

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BUNDLES_DIR = Path(__file__).resolve().parent / "bundles"
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
FORMAT_KEY = "format_version"  # the key a bundle manifest uses too (runtime/manifest.py)
LEGACY_FORMAT_KEY = "format"  # the key's earlier name: still read, never written (add_files renames it)
WEIGHTS_ENV_VAR = "DIFFDEFENSE_WEIGHTS"
# The DDPM noise predictors a data set may ship (training/models/unet.py): the GroupNorm net, the deployment-shaped
# BatchNorm net (folded into its convolutions at export), a narrower BatchNorm net, 8-16-32 channels wide, and that
# net fine-tuned on the timesteps the defence uses (t < 15), which cannot sample from noise, and that net distilled
# from the wide BatchNorm net on the same timesteps.
UNET_NAMES = (
    "unet",
    "unet_bn",
    "unet_bn_small",
    "unet_bn_small_t15",
    "unet_bn_small_distilled",
    "unet_bn_relu",
)


class ChecksumError(ValueError):
    """A shipped file whose bytes are not the ones the manifest records."""


def weights_root() -> Path:
    """The weights folder in use: ``$DIFFDEFENSE_WEIGHTS`` if set, else the shipped ``WEIGHTS_DIR``."""
    env = os.environ.get(WEIGHTS_ENV_VAR)
    return Path(env).expanduser() if env else WEIGHTS_DIR


def read_manifest(weights_dir: Path | None = None) -> dict:
    path = (weights_dir or weights_root()) / MANIFEST_NAME
    if not path.is_file():
        return {FORMAT_KEY: MANIFEST_FORMAT, "files": {}}
    manifest = json.loads(path.read_text())
    if FORMAT_KEY not in manifest and LEGACY_FORMAT_KEY in manifest:
        manifest = {FORMAT_KEY: manifest.pop(LEGACY_FORMAT_KEY)} | manifest
    version = manifest.get(FORMAT_KEY)
    if type(version) is not int or version != MANIFEST_FORMAT:  # type(): True == 1 in Python
        raise ValueError(f"{path} has format version {version!r}, but format version {MANIFEST_FORMAT} was expected.")
    return manifest


def verify_file(name: str, weights_dir: Path | None = None) -> Path:
    """Path of a shipped file after checking it against the manifest; raises if missing or changed."""
    weights_dir = weights_dir or weights_root()
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
    weights_dir = weights_dir or weights_root()
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
        raise FileNotFoundError(
            f"There is no shipped bundle for {dataset!r} at {path}: export one with "
            f"`diffdefense export --dataset {dataset} --out DIR` and pass --bundle DIR."
        )
    return path
