"""Reading a bundle (the only thing the torch side and the runtime share): manifest.json and the files it lists.

A bundle is untrusted input. load_bundle refuses it with a BundleError that names the file, before any graph runs:

1. the manifest is missing, a symbolic link, not a regular file, over MAX_MANIFEST_BYTES (checked before it is
   parsed), not UTF-8 JSON, nested too deep, or has a repeated key;
2. BundleManifest.from_json (runtime/manifest.py) refuses what it holds: a format version other than
   FORMAT_VERSION; a field of the wrong type or value; a role the runtime needs (unet, classifier) missing, a role
   unknown or naming an unlisted file; a listed name that is not a plain file name inside the bundle folder
   (absolute, '..', a subfolder); a declared size that is not positive, or sizes that add up to more than
   MAX_BUNDLE_BYTES (refused before any file is opened);
3. a listed file is missing, a symbolic link, or not a regular file, or its size differs from its declared size;
4. a file's sha256 differs from the manifest (reading at most the declared size plus one byte);
5. a graph with tensors in external files (onnxruntime would read them, unverified), a graph that onnxruntime
   cannot load from the verified bytes (a truncated or corrupt protobuf), or one whose inputs and outputs (names,
   element types, shapes against the manifest's image shape and labels) are not what its role needs; read from
   the protobuf and the session's metadata (runtime/graph_checks.py), nothing is run.

The checksums catch damage and partial edits, not a consistent forgery: whoever can rewrite the manifest can
rewrite its checksums. Nothing is ever unpickled: the manifest is JSON and the graphs are ONNX protobufs.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from diffdefense.checksums import sha256_of
from diffdefense.runtime.graph_checks import external_tensors, signature_mismatch
from diffdefense.runtime.manifest import BundleError, BundleManifest, FileEntry
from diffdefense.shipped import BUNDLES_DIR

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20  # the shipped manifests are about 5 kB


@dataclass(frozen=True)
class Bundle:
    """root: the bundle folder; manifest: its checked manifest; data: each listed file's verified bytes."""

    root: Path
    manifest: BundleManifest
    data: dict[str, bytes] = field(default_factory=dict, repr=False)

    def path(self, role: str) -> Path:
        """The verified file for a role ('unet', 'classifier', ...)."""
        try:
            return self.root / self.manifest.roles[role]
        except KeyError as err:
            raise BundleError(f"The bundle at {self.root} has no {role!r} file in its manifest.") from err

    def graph(self, role: str) -> bytes:
        """The bytes of a role's graph as they were verified, so that what runs is what was checked."""
        return self.data[self.path(role).name]

    def file(self, name: str) -> bytes:
        """A listed file's bytes as they were verified (the folded timestep graphs are named by file)."""
        return self.data[name]


def load_bundle(root: str | Path) -> Bundle:
    """root: a bundle folder, or the name of a shipped bundle ('mnist', 'mnist-fast', 'kmnist')."""
    root = _shipped_by_name(Path(root))
    manifest_path = root / MANIFEST_NAME
    manifest = BundleManifest.from_json(_read_manifest(manifest_path), manifest_path)
    data = {name: _read_verified(root, name, entry, manifest_path) for name, entry in manifest.files.items()}
    for role, name in manifest.roles.items():
        _check_graph(name, data[name], role, manifest)
    for by_t in (manifest.timestep_graphs or {}).values():
        for name in by_t.values():
            _check_graph(name, data[name], "unet_folded", manifest)
    return Bundle(root, manifest, data)


def _shipped_by_name(root: Path) -> Path:
    if root.is_dir() or len(root.parts) != 1:
        return root
    shipped = BUNDLES_DIR / root.name
    return shipped if shipped.is_dir() else root


# 1. The manifest, read with a cap and parsed strictly; what it holds is BundleManifest.from_json's to check.


def _read_manifest(manifest_path: Path) -> object:
    if not os.path.lexists(manifest_path):
        shipped = ", ".join(sorted(p.name for p in BUNDLES_DIR.iterdir() if p.is_dir())) if BUNDLES_DIR.is_dir() else ""
        raise BundleError(
            f"Expected a bundle manifest at {manifest_path}, but there is none"
            + (f" (the shipped bundles, by name: {shipped})." if shipped else ".")
        )
    size, raw = _read_regular_file(manifest_path, MAX_MANIFEST_BYTES, "the bundle manifest")
    if raw is None or len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{manifest_path} has {size} bytes, more than the {MAX_MANIFEST_BYTES} a bundle manifest may have "
            "(the shipped ones have about 5 kB)."
        )
    try:
        manifest = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_repeated_keys)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, huge integers, deep nesting
        raise BundleError(f"{manifest_path} is not valid JSON ({str(err)[:200]}).") from err
    return manifest


def _no_repeated_keys(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"the key {repeated[0]!r} appears more than once, so its value is ambiguous")
    return dict(pairs)


# 3-4. The files: plain files inside the folder, of the declared size and sha256, read no further than declared.


def _read_verified(root: Path, name: str, entry: FileEntry, manifest_path: Path) -> bytes:
    path = root / name
    if not os.path.lexists(path):
        raise BundleError(f"The bundle file {name} listed in {manifest_path} is missing.")
    declared = entry.bytes
    size, data = _read_regular_file(path, declared, f"the bundle file {name}")  # refuses symbolic links
    if path.resolve().parent != root.resolve():  # from_json already ensures it; kept against surprises
        raise BundleError(f"{manifest_path} lists {name!r}, a path outside the bundle folder.")
    if data is None or len(data) != declared:  # differs on disk, or changed while it was read
        shown = size if data is None else len(data)
        raise BundleError(
            f"The bundle file {name} has {shown} bytes, but the manifest says {declared}: it was changed after export."
        )
    if sha256_of(data) != entry.sha256:
        raise BundleError(
            f"The bundle file {name} does not match its sha256 in the manifest: it was changed after export."
        )
    return data


def _read_regular_file(path: Path, limit: int, what: str) -> tuple[int, bytes | None]:
    """A regular file's size and, when it is at most limit, its bytes (at most limit + 1 of them, in case it grows
    while it is read). Never through a symbolic link (O_NOFOLLOW), never blocking on a FIFO (O_NONBLOCK)."""
    if path.is_symlink():
        raise BundleError(f"{path} ({what}) is a symbolic link; a bundle holds plain files only.")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise BundleError(f"{path} ({what}) cannot be opened: {err.strerror}.") from err
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise BundleError(f"{path} ({what}) is not a regular file.")
    with os.fdopen(fd, "rb") as handle:
        if info.st_size > limit:  # refused without reading, however large
            return info.st_size, None
        return info.st_size, handle.read(limit + 1)


# 5. The graphs: loadable by onnxruntime from the verified bytes, with the inputs and outputs their role needs
# (runtime/graph_checks.py reads both).


def _check_graph(name: str, data: bytes, role: str, manifest: BundleManifest) -> None:
    try:
        import onnxruntime
    except ImportError as err:
        raise BundleError(
            f"Checking {name} needs onnxruntime, which is not installed: pip install 'diffdefense[cpu]'."
        ) from err
    try:
        external = external_tensors(data)
    except ValueError as err:
        raise BundleError(f"The bundle file {name} is not a well-formed ONNX protobuf ({err}).") from err
    if external:  # onnxruntime would read them unverified: beside the graph, or in the working directory for bytes
        raise BundleError(
            f"The bundle file {name} keeps {external} tensor(s) in external files, which the manifest cannot vouch "
            "for; a bundle's graphs hold all their weights."
        )
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL  # only read it
    options.intra_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own types (Fail, InvalidProtobuf, InvalidGraph, ...)
        raise BundleError(f"The bundle file {name} is not a graph onnxruntime can load: {str(err)[:300]}") from err
    mismatch = signature_mismatch(session, role, list(manifest.image_shape), len(manifest.labels))
    if mismatch:
        raise BundleError(
            f"The bundle file {name} does not have the inputs and outputs of the {role!r} role: {mismatch}."
        )
