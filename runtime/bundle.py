"""Reading a bundle (the only thing the torch side and the runtime share): manifest.json and the files it lists.

A bundle is untrusted input. load_bundle refuses it with a BundleError that names the file, before any graph runs:

1. the manifest is missing, a symbolic link, not a regular file, over MAX_MANIFEST_BYTES (checked before it is
   parsed), not UTF-8 JSON, nested too deep, or has a repeated key;
2. its format version is not FORMAT_VERSION (older, newer, or not an integer);
3. a field has the wrong type or value: files, roles, labels, image (shape, dtype float32, range [0, 1]),
   model_range [-1, 1], schedule betas in (0, 1), default settings (every field as DefenseSettings checks it,
   at most SETTINGS_LIMITS candidates and iterations, a start step inside the schedule), detection (a finite
   threshold and valid settings);
4. a role the runtime needs (unet, classifier) is missing, a role is unknown, or names an unlisted file;
5. a listed name is not a plain file name inside the bundle folder (absolute, '..', a subfolder), or the file is
   missing, a symbolic link, or not a regular file;
6. a declared size is not positive or the sizes add up to more than MAX_BUNDLE_BYTES (refused before any file is
   opened), or a file's size differs from its declared size;
7. a file's sha256 differs from the manifest (reading at most the declared size plus one byte);
8. a graph with tensors in external files (onnxruntime would read them, unverified), a graph that onnxruntime
   cannot load from the verified bytes (a truncated or corrupt protobuf), or one whose inputs and outputs (names,
   element types, shapes against the manifest's image shape and labels) are not what its role needs; read from
   the protobuf and the session's metadata (runtime/graph_checks.py), nothing is run.

The checksums catch damage and partial edits, not a consistent forgery: whoever can rewrite the manifest can
rewrite its checksums. Nothing is ever unpickled: the manifest is JSON and the graphs are ONNX protobufs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from diffdefense.runtime.graph_checks import external_tensors, signature_mismatch
from diffdefense.settings import DefenseSettings

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 1 << 20  # the shipped manifests are about 5 kB
MAX_BUNDLE_BYTES = 1 << 29  # 512 MiB over all files; the shipped graphs total 7 MB
REQUIRED_ROLES = ("unet", "classifier")
KNOWN_ROLES = ("unet", "unet_vjp", "classifier")
# A manifest's settings size the runtime's arrays (B x R candidates, L runs): bounds far above any useful value.
SETTINGS_LIMITS = {"num_candidates": 1024, "iterations": 10_000}


class BundleError(ValueError):
    """A bundle that cannot be trusted or read."""


@dataclass(frozen=True)
class Bundle:
    """root: the bundle folder; manifest: its checked manifest; data: each listed file's verified bytes."""

    root: Path
    manifest: dict
    data: dict[str, bytes] = field(default_factory=dict, repr=False)

    def path(self, role: str) -> Path:
        """The verified file for a role ('unet', 'classifier', ...)."""
        try:
            return self.root / self.manifest["roles"][role]
        except KeyError as err:
            raise BundleError(f"The bundle at {self.root} has no {role!r} file in its manifest.") from err

    def graph(self, role: str) -> bytes:
        """The bytes of a role's graph as they were verified, so that what runs is what was checked."""
        return self.data[self.path(role).name]


def load_bundle(root: str | Path) -> Bundle:
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    manifest = _read_manifest(manifest_path)
    _check_fields(manifest, manifest_path)
    data = {name: _read_verified(root, name, entry, manifest_path) for name, entry in manifest["files"].items()}
    for role, name in manifest["roles"].items():
        _check_graph(name, data[name], role, manifest)
    return Bundle(root, manifest, data)


# 1. The manifest, read with a cap and parsed strictly.


def _read_manifest(manifest_path: Path) -> dict:
    if not os.path.lexists(manifest_path):
        raise BundleError(f"Expected a bundle manifest at {manifest_path}, but there is none.")
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
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object, but holds {type(manifest).__name__}.")
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:  # type(): True == 1 in Python
        hint = ""
        if type(version) is int:
            hint = (
                " Export it again with this version's tools." if version < FORMAT_VERSION else " Upgrade diffdefense."
            )
        raise BundleError(
            f"{manifest_path} has format version {_short(version)}; this runtime reads version {FORMAT_VERSION}.{hint}"
        )
    return manifest


def _no_repeated_keys(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"the key {repeated[0]!r} appears more than once, so its value is ambiguous")
    return dict(pairs)


# 2-4. Every field the runtime reads, with its type and range.


def _check_fields(m: dict, manifest_path: Path) -> None:
    def need(ok: bool, what: str, got: object) -> None:
        if not ok:
            raise BundleError(f"{manifest_path}: expected {what}, but got {_short(got)}.")

    files, roles = m.get("files"), m.get("roles")
    need(isinstance(files, dict) and len(files) > 0, "'files' to map file names to their sha256 and size", files)
    for name, entry in files.items():
        if not _plain_name(name):
            raise BundleError(
                f"{manifest_path} lists {_short(name)}, a path outside the bundle folder or a hidden file; a bundle "
                "lists plain file names."
            )
        need(isinstance(entry, dict), f"an object with 'sha256' and 'bytes' for {name}", entry)
        digest, size = entry.get("sha256"), entry.get("bytes")
        need(isinstance(digest, str), f"a sha256 string for {name}", digest)
        need(type(size) is int and size > 0, f"a positive integer size in bytes for {name}", size)
    total = sum(entry["bytes"] for entry in files.values())
    need(total <= MAX_BUNDLE_BYTES, f"files of at most {MAX_BUNDLE_BYTES} bytes in all (declared sizes)", total)
    need(isinstance(roles, dict), "'roles' to map roles to file names", roles)
    for role in REQUIRED_ROLES:
        need(role in roles, f"a {role!r} role in 'roles'", sorted(roles))
    for role, name in roles.items():
        need(role in KNOWN_ROLES, f"roles among {list(KNOWN_ROLES)}", role)
        if not isinstance(name, str) or name not in files:
            raise BundleError(f"{manifest_path} gives role {role!r} to {_short(name)}, which it does not list.")

    labels, image = m.get("labels"), m.get("image")
    need(isinstance(labels, list) and 0 < len(labels) <= 10_000, "a non-empty list of labels", labels)
    need(all(isinstance(label, str) for label in labels), "labels that are strings", labels)
    need(isinstance(image, dict), "an 'image' object with shape, dtype and range", image)
    shape = image.get("shape")
    need(
        isinstance(shape, list) and len(shape) == 3 and all(type(d) is int and 0 < d <= 4096 for d in shape),
        "an image shape of three positive integers (channels, height, width)",
        shape,
    )
    need(image.get("dtype") == "float32", "image dtype 'float32'", image.get("dtype"))
    need(
        image.get("range") == [0, 1],
        "image range [0, 1], the range this runtime checks inputs against",
        image.get("range"),
    )
    need(
        m.get("model_range") == [-1, 1],
        "model_range [-1, 1], the scale the runtime's steps assume",
        m.get("model_range"),
    )

    dataset = m.get("dataset")
    need(isinstance(dataset, str) and 0 < len(dataset) <= 100, "a dataset name (a short string)", dataset)
    schedule = m.get("schedule")
    need(isinstance(schedule, dict), "a 'schedule' object with its 'betas'", schedule)
    betas = schedule.get("betas")
    need(
        isinstance(betas, list) and 0 < len(betas) <= 100_000 and all(_number(b) and 0 < b < 1 for b in betas),
        "schedule betas: a non-empty list of numbers strictly between 0 and 1",
        betas,
    )
    defaults = m.get("defaults")
    need(isinstance(defaults, dict), "a 'defaults' object with the default 'settings'", defaults)
    settings = _settings(defaults.get("settings"), "the default settings", manifest_path)
    need(
        settings.start_step < len(betas),
        f"a default start step below the schedule's {len(betas)} steps",
        settings.start_step,
    )
    detection = m.get("detection")
    if detection is not None:
        need(isinstance(detection, dict), "'detection' to be an object", detection)
        threshold = detection.get("threshold")
        need(_number(threshold) and threshold >= 0, "a finite, non-negative detection threshold", threshold)
        _settings(detection.get("settings"), "the detection settings", manifest_path)


def _settings(values: object, what: str, manifest_path: Path) -> DefenseSettings:
    """DefenseSettings from the manifest: the dataclass checks every field; the limits are the bundle's own."""
    if not isinstance(values, dict):
        raise BundleError(f"{manifest_path}: expected {what} as an object, but got {_short(values)}.")
    try:
        settings = DefenseSettings.from_dict(values)
    except ValueError as err:
        raise BundleError(f"{manifest_path}: {what} are refused. {err}") from err
    for name, limit in SETTINGS_LIMITS.items():
        if getattr(settings, name) > limit:
            raise BundleError(
                f"{manifest_path}: expected {name} in {what} to be at most {limit}, but got {getattr(settings, name)}."
            )
    return settings


def _plain_name(name: object) -> bool:
    """A file name in the bundle folder itself: no folders, no '..', nothing absolute, nothing hidden."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 255
        and name == os.path.basename(name)
        and not name.startswith(".")
        and "\\" not in name
        and "\0" not in name
    )


def _number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


# 5-7. The files: plain files inside the folder, of the declared size and sha256, read no further than declared.


def _read_verified(root: Path, name: str, entry: dict, manifest_path: Path) -> bytes:
    path = root / name
    if not os.path.lexists(path):
        raise BundleError(f"The bundle file {name} listed in {manifest_path} is missing.")
    declared = entry["bytes"]
    size, data = _read_regular_file(path, declared, f"the bundle file {name}")  # refuses symbolic links
    if path.resolve().parent != root.resolve():  # _plain_name already ensures it; kept against surprises
        raise BundleError(f"{manifest_path} lists {name!r}, a path outside the bundle folder.")
    if data is None or len(data) != declared:  # differs on disk, or changed while it was read
        shown = size if data is None else len(data)
        raise BundleError(
            f"The bundle file {name} has {shown} bytes, but the manifest says {declared}: it was changed after export."
        )
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
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


# 8. The graphs: loadable by onnxruntime from the verified bytes, with the inputs and outputs their role needs
# (runtime/graph_checks.py reads both).


def _check_graph(name: str, data: bytes, role: str, manifest: dict) -> None:
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
    mismatch = signature_mismatch(session, role, manifest["image"]["shape"], len(manifest["labels"]))
    if mismatch:
        raise BundleError(
            f"The bundle file {name} does not have the inputs and outputs of the {role!r} role: {mismatch}."
        )
