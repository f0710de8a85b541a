"""A bundle's manifest.json as a typed, frozen object, and the checks that make untrusted JSON into one.

BundleManifest.from_json checks every field the runtime reads (load_bundle calls it on the parsed manifest, before
any file is opened) and refuses a bad one with a BundleError naming the manifest: a format version other than
FORMAT_VERSION (older, newer, or not an integer); files, roles, labels, image (shape, dtype float32, range [0, 1]),
model_range [-1, 1], schedule betas in (0, 1), default settings (every field as DefenseSettings checks it, at most
SETTINGS_LIMITS candidates and iterations, a start step inside the schedule), detection (a finite threshold and valid
settings), and the optional records (parity, sources, versions) of the wrong type. Keys it does not know are left
alone, as an older runtime leaves a newer exporter's. The constructor trusts its caller (the exporter); to_json gives
the JSON written as manifest.json.

Adding an optional field: a BundleManifest field defaulting to None, read (and checked) in from_json's optional
part, and written in to_json's `optional`, where None is left out, so that manifests without it stay as they are.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from diffdefense.detection_threshold import DETECTION_SCORES
from diffdefense.respace import settings_timesteps
from diffdefense.schedule import NoiseSchedule
from diffdefense.settings import DefenseSettings

FORMAT_VERSION = 1
MAX_BUNDLE_BYTES = 1 << 29  # 512 MiB over all files; the shipped graphs total 7 MB
REQUIRED_ROLES = ("unet", "classifier")
KNOWN_ROLES = ("unet", "unet_vjp", "classifier")
# A manifest's settings size the runtime's arrays (B x R candidates, L runs): bounds far above any useful value.
SETTINGS_LIMITS = {"num_candidates": 1024, "iterations": 10_000}
# What the runtime's input checks and steps assume; a manifest must say so, and says nothing else.
IMAGE_DTYPE, IMAGE_RANGE, MODEL_RANGE = "float32", (0.0, 1.0), (-1.0, 1.0)


class BundleError(ValueError):
    """A bundle that cannot be trusted or read."""


@dataclass(frozen=True)
class FileEntry:
    """One listed file: the hex sha256 and the size in bytes of its exported bytes."""

    sha256: str
    bytes: int

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "bytes": self.bytes}


@dataclass(frozen=True)
class DetectionRecord:
    """The calibrated attack threshold: a detection score above it is flagged, under these settings only.
    target_fpr: the share of clean calibration images it flags; calibration: which images; clean_error_median: their
    median score (each None when the manifest leaves it out); score: which detection score
    (diffdefense/detection_threshold.py; 'best_mse' in bundles from before the field). threshold is calibrated on the
    float32 U-Net graphs; int8_threshold, where present, on the same images through the int8 graphs, whose clean
    scores run higher (None: bundles without int8 graphs, or from before the field)."""

    threshold: float
    settings: DefenseSettings
    target_fpr: float | None = None
    calibration: str | None = None
    clean_error_median: float | None = None
    score: str = "best_mse"
    int8_threshold: float | None = None

    def threshold_for(self, precision: str) -> float:
        """The threshold calibrated in this precision; float32's where int8 has none of its own (older bundles)."""
        return self.int8_threshold if precision == "int8" and self.int8_threshold is not None else self.threshold

    def to_json(self) -> dict:
        record = {
            "score": self.score,
            "threshold": self.threshold,
            "target_fpr": self.target_fpr,
            "calibration": self.calibration,
            "settings": _settings_json(self.settings),
            "clean_error_median": self.clean_error_median,
            "int8_threshold": self.int8_threshold,
        }
        return {key: value for key, value in record.items() if value is not None}


@dataclass(frozen=True)
class BundleManifest:
    """What a bundle holds, checked. image_shape: (channels, height, width) of one float32 image in [0, 1] (the model
    works on [-1, 1]); betas: the training schedule; files: file name -> FileEntry; roles: role ('unet', 'unet_vjp',
    'classifier') -> file name; parity: each export check's largest absolute error against PyTorch; sources: the
    sha256 of the weights it was exported from; versions: the package versions that exported it;
    unet_trained_timesteps: N where the U-Net was trained on t < N only (a defence must start below it). Sequences
    are kept as tuples and mappings as read-only views, so a manifest cannot change once checked."""

    dataset: str
    labels: tuple[str, ...]
    image_shape: tuple[int, int, int]
    betas: tuple[float, ...]
    default_settings: DefenseSettings
    files: Mapping[str, FileEntry]
    roles: Mapping[str, str]
    default_preset: str | None = None
    detection: DetectionRecord | None = None
    parity: Mapping[str, float] | None = None
    sources: Mapping[str, str] | None = None
    versions: Mapping[str, str] | None = None
    unet_source: str | None = None
    timestep_graphs: Mapping[str, Mapping[int, str]] | None = None
    unet_trained_timesteps: int | None = None  # the U-Net saw t < this in training (None: every step)
    # The U-Net graphs a Defender runs on the CPU when not told: 'int8' only where its accuracy was measured to hold
    # (diffdefense export --default-precision); every other backend runs float32.
    default_precision: str = "float32"

    def __post_init__(self) -> None:
        for name in ("labels", "image_shape", "betas"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("files", "roles", "parity", "sources", "versions"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, MappingProxyType(dict(value)))
        if self.timestep_graphs is not None:
            graphs = {precision: MappingProxyType(dict(by_t)) for precision, by_t in self.timestep_graphs.items()}
            object.__setattr__(self, "timestep_graphs", MappingProxyType(graphs))

    def graph_files(self) -> list[str]:
        """Every ONNX graph the bundle holds: the roles' and the folded timestep graphs'."""
        folded = [name for by_t in (self.timestep_graphs or {}).values() for name in by_t.values()]
        return [*self.roles.values(), *folded]

    def folded_graphs(self, precision: str) -> dict[int, str]:
        """timestep -> file name of the graphs with that timestep folded in, in one precision (none: empty)."""
        return dict((self.timestep_graphs or {}).get(precision, {}))

    def schedule(self) -> NoiseSchedule:
        """The training schedule (float64 betas) the chain's coefficients come from."""
        return NoiseSchedule(np.array(self.betas))

    def to_json(self) -> dict:
        """The manifest as JSON values (what json.loads gives back from manifest.json), in manifest.json's order;
        optional fields that are None are left out."""
        defaults = {"preset": self.default_preset, "settings": _settings_json(self.default_settings)}
        if self.default_precision != "float32":  # manifests made before the field stay as they were
            defaults["precision"] = self.default_precision
        manifest = {
            "format_version": FORMAT_VERSION,
            "dataset": self.dataset,
            "labels": list(self.labels),
            "image": {"shape": list(self.image_shape), "dtype": IMAGE_DTYPE, "range": list(IMAGE_RANGE)},
            "model_range": list(MODEL_RANGE),
            "schedule": {"betas": list(self.betas)},
            "defaults": {key: value for key, value in defaults.items() if value is not None},
            "roles": dict(self.roles),
            "files": {name: entry.to_json() for name, entry in self.files.items()},
        }
        optional = {
            "parity": _plain(self.parity),
            "sources": _plain(self.sources),
            "versions": _plain(self.versions),
            "detection": self.detection.to_json() if self.detection is not None else None,
            "unet_source": self.unet_source,
            "timestep_graphs": (
                {p: {str(t): name for t, name in by_t.items()} for p, by_t in self.timestep_graphs.items()}
                if self.timestep_graphs is not None
                else None
            ),
            "unet_trained_timesteps": self.unet_trained_timesteps,
        }
        return manifest | {key: value for key, value in optional.items() if value is not None}

    @classmethod
    def from_json(cls, m: object, manifest_path: Path) -> BundleManifest:
        """The checked manifest from its parsed JSON, or a BundleError naming manifest_path."""
        need = _needs(manifest_path)
        if not isinstance(m, dict):
            raise BundleError(f"{manifest_path} must hold a JSON object, but holds {type(m).__name__}.")
        _check_version(m.get("format_version"), manifest_path)
        files = _files(m.get("files"), need, manifest_path)
        roles = _roles(m.get("roles"), files, need, manifest_path)
        labels, image_shape = _labels(m.get("labels"), need), _image(m.get("image"), need)
        model_range = m.get("model_range")
        need(model_range == list(MODEL_RANGE), "model_range [-1, 1], the scale the runtime's steps assume", model_range)
        dataset = m.get("dataset")
        need(isinstance(dataset, str) and 0 < len(dataset) <= 100, "a dataset name (a short string)", dataset)
        betas = _betas(m.get("schedule"), need)
        defaults = m.get("defaults")
        need(isinstance(defaults, dict), "a 'defaults' object with the default 'settings'", defaults)
        settings = _settings(defaults.get("settings"), "the default settings", manifest_path)
        need(
            settings.highest_step < len(betas),
            f"default start steps (the chain's and its refining pass's) below the schedule's {len(betas)} steps",
            settings.highest_step,
        )
        preset = defaults.get("preset")
        need(preset is None or isinstance(preset, str), "the default preset's name as a string", preset)
        optional = {  # absent (None) or checked
            "detection": _detection(m.get("detection"), need, manifest_path),
            "parity": _optional_map(m.get("parity"), _real, "'parity' to map checks to their errors", need),
            "sources": _optional_map(m.get("sources"), _text, "'sources' to map weights to their sha256", need),
            "versions": _optional_map(m.get("versions"), _text, "'versions' to map packages to versions", need),
            "unet_source": _optional_text(m.get("unet_source"), "the U-Net's shipped name as a string", need),
            "timestep_graphs": _timestep_graphs(m.get("timestep_graphs"), files, len(betas), need),
            "unet_trained_timesteps": _trained_timesteps(m.get("unet_trained_timesteps"), settings, len(betas), need),
        }
        precision = defaults.get("precision", "float32")
        _check_default_precision(precision, settings, optional["timestep_graphs"], need)
        return cls(
            dataset=dataset,
            labels=labels,
            image_shape=image_shape,
            betas=betas,
            default_settings=settings,
            files=files,
            roles=roles,
            default_preset=preset,
            default_precision=precision,
            **optional,
        )


# The fields, in the order they are checked (a manifest with several faults is refused for the first).

Need = Callable[[bool, str, object], None]


def _needs(manifest_path: Path) -> Need:
    def need(ok: bool, what: str, got: object) -> None:
        if not ok:
            raise BundleError(f"{manifest_path}: expected {what}, but got {_short(got)}.")

    return need


def _trained_timesteps(value: object, settings: DefenseSettings, steps: int, need: Need) -> int | None:
    if value is None:
        return None
    need(type(value) is int and 1 <= value <= steps, f"unet_trained_timesteps as an integer in [1, {steps}]", value)
    need(
        settings.highest_step < value,
        f"default start steps (the chain's and its refining pass's) below the U-Net's {value} trained timesteps",
        settings.highest_step,
    )
    return value


def _check_version(version: object, manifest_path: Path) -> None:
    if type(version) is int and version == FORMAT_VERSION:  # type(): True == 1 in Python
        return
    hint = ""
    if type(version) is int:
        hint = " Export it again with this version's tools." if version < FORMAT_VERSION else " Upgrade diffdefense."
    raise BundleError(
        f"{manifest_path} has format version {_short(version)}; this runtime reads version {FORMAT_VERSION}.{hint}"
    )


def _files(files: object, need: Need, manifest_path: Path) -> dict[str, FileEntry]:
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
    return {name: FileEntry(entry["sha256"], entry["bytes"]) for name, entry in files.items()}


def _roles(roles: object, files: dict, need: Need, manifest_path: Path) -> dict[str, str]:
    need(isinstance(roles, dict), "'roles' to map roles to file names", roles)
    for role in REQUIRED_ROLES:
        need(role in roles, f"a {role!r} role in 'roles'", sorted(roles))
    for role, name in roles.items():
        need(role in KNOWN_ROLES, f"roles among {list(KNOWN_ROLES)}", role)
        if not isinstance(name, str) or name not in files:
            raise BundleError(f"{manifest_path} gives role {role!r} to {_short(name)}, which it does not list.")
    return dict(roles)


def _labels(labels: object, need: Need) -> list[str]:
    need(isinstance(labels, list) and 0 < len(labels) <= 10_000, "a non-empty list of labels", labels)
    need(all(isinstance(label, str) for label in labels), "labels that are strings", labels)
    return labels


def _image(image: object, need: Need) -> tuple[int, int, int]:
    need(isinstance(image, dict), "an 'image' object with shape, dtype and range", image)
    shape = image.get("shape")
    need(
        isinstance(shape, list) and len(shape) == 3 and all(type(d) is int and 0 < d <= 4096 for d in shape),
        "an image shape of three positive integers (channels, height, width)",
        shape,
    )
    need(image.get("dtype") == IMAGE_DTYPE, f"image dtype {IMAGE_DTYPE!r}", image.get("dtype"))
    need(
        image.get("range") == list(IMAGE_RANGE),
        "image range [0, 1], the range this runtime checks inputs against",
        image.get("range"),
    )
    return tuple(shape)


def _betas(schedule: object, need: Need) -> tuple[float, ...]:
    need(isinstance(schedule, dict), "a 'schedule' object with its 'betas'", schedule)
    betas = schedule.get("betas")
    need(
        isinstance(betas, list) and 0 < len(betas) <= 100_000 and all(_number(b) and 0 < b < 1 for b in betas),
        "schedule betas: a non-empty list of numbers strictly between 0 and 1",
        betas,
    )
    return tuple(betas)


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


def _detection(detection: object, need: Need, manifest_path: Path) -> DetectionRecord | None:
    if detection is None:
        return None
    need(isinstance(detection, dict), "'detection' to be an object", detection)
    threshold = detection.get("threshold")
    need(_number(threshold) and threshold >= 0, "a finite, non-negative detection threshold", threshold)
    settings = _settings(detection.get("settings"), "the detection settings", manifest_path)
    target_fpr, calibration = detection.get("target_fpr"), detection.get("calibration")
    median = detection.get("clean_error_median")
    need(target_fpr is None or _number(target_fpr), "the detection's target_fpr as a finite number", target_fpr)
    need(calibration is None or isinstance(calibration, str), "the detection's calibration as a string", calibration)
    need(median is None or _number(median), "the detection's clean_error_median as a finite number", median)
    score = detection.get("score", "best_mse")
    need(score in DETECTION_SCORES, f"the detection's score to be one of {list(DETECTION_SCORES)}", score)
    int8 = detection.get("int8_threshold")
    need(int8 is None or (_number(int8) and int8 >= 0), "a finite, non-negative int8 detection threshold", int8)
    return DetectionRecord(
        float(threshold), settings, target_fpr, calibration, median, score, None if int8 is None else float(int8)
    )


def _optional_map(values: object, kind: Callable[[object], bool], what: str, need: Need) -> dict | None:
    if values is None:
        return None
    need(isinstance(values, dict) and all(kind(value) for value in values.values()), what, values)
    return values


# Small predicates and helpers.


def _optional_text(value: object, what: str, need: Need) -> str | None:
    need(value is None or (isinstance(value, str) and 0 < len(value) <= 100), what, value)
    return value


TIMESTEP_GRAPH_PRECISIONS = ("float32", "int8")


def _timestep_graphs(graphs: object, files: dict, num_steps: int, need: Need) -> dict | None:
    """precision -> {timestep: file}: U-Net graphs with one trained timestep folded in (input x only)."""
    if graphs is None:
        return None
    what = f"'timestep_graphs' to map {' or '.join(TIMESTEP_GRAPH_PRECISIONS)} to {{timestep: listed file}}"
    need(isinstance(graphs, dict) and set(graphs) <= set(TIMESTEP_GRAPH_PRECISIONS), what, graphs)
    checked = {}
    for precision, by_t in graphs.items():
        need(isinstance(by_t, dict) and len(by_t) > 0, what, by_t)
        for t, name in by_t.items():
            need(
                isinstance(t, str) and t.isdigit() and int(t) < num_steps,
                f"timesteps of the schedule's {num_steps} (as decimal strings) in 'timestep_graphs'",
                t,
            )
            need(isinstance(name, str) and name in files, f"a listed file for the {precision} graph at t={t}", name)
        checked[precision] = {int(t): name for t, name in by_t.items()}
    return checked


def _check_default_precision(precision: object, settings: DefenseSettings, graphs: dict | None, need: Need) -> None:
    """A default precision the bundle has folded graphs for, at every timestep its default settings use."""
    need(precision in TIMESTEP_GRAPH_PRECISIONS, f"a default precision in {list(TIMESTEP_GRAPH_PRECISIONS)}", precision)
    if precision != "float32":
        used = settings_timesteps(settings)
        have = sorted((graphs or {}).get(precision, {}), reverse=True)
        need(
            set(used) <= set(have),
            f"{precision} graphs for every timestep the default settings use ({used}), as the default precision",
            have,
        )


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


def _real(value: object) -> bool:
    """A JSON number (a parity error may be any float the export measured)."""
    return type(value) in (int, float)


def _text(value: object) -> bool:
    return isinstance(value, str)


def _settings_json(settings: DefenseSettings) -> dict:
    return {name: list(value) if isinstance(value, tuple) else value for name, value in settings.to_dict().items()}


def _plain(mapping: Mapping | None) -> dict | None:
    return dict(mapping) if mapping is not None else None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
