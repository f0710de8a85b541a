"""TensorRT engines for a bundle's ONNX graphs, built through polygraphy and kept in a cache keyed by what they
depend on.

An engine is valid only for the GPU model and the TensorRT version that built it, so the cache key holds the
graph's sha256, the GPU's name and compute capability, the TensorRT and polygraphy versions, the batch profile
and the precision. fp16: TensorRT 10 (and Jetson, which stays on it) takes the builder flag; TensorRT 11 builds
strongly typed networks, so there the ONNX graph itself is converted to fp16 (inputs and outputs kept float32).

Beside each engine lies a record (engine file + '.json') of what it was built from and of its own sha256 and size.
A cached engine is reused only when that record matches this machine and the engine's bytes; otherwise (an engine
copied from another GPU or TensorRT version, a renamed file, a half-written or corrupted one, no record) it is
rebuilt, and the reason is logged.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from diffdefense.checksums import sha256_of

# Engines belong to the machine that built them, not to the bundle: they live in a per-user cache.
DEFAULT_CACHE = Path(os.environ.get("DIFFDEFENSE_ENGINE_CACHE", Path.home() / ".cache" / "diffdefense" / "engines"))
log = logging.getLogger(__name__)


class EngineBuildError(RuntimeError):
    """No GPU, no TensorRT, or a graph TensorRT cannot build."""


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes (B x R candidates per U-Net call) one engine serves: min, the size it is tuned for, max."""

    min: int = 1
    opt: int = 96  # 8 images x 12 candidates: the default preset's call at the CLI's batch of 8
    max: int = 4096  # the graphs' dynamic batch range (export/onnx_export.py); a call beyond it is a BackendError

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"Expected 1 <= min <= opt <= max, but got {self.min}, {self.opt}, {self.max}.")


def gpu_identity() -> dict[str, str]:
    """The name and compute capability of the GPU this process runs on (CUDA's device 0: the first of
    CUDA_VISIBLE_DEVICES where that is set), from nvidia-smi; an engine does not move between GPU models."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    # nvidia-smi's --id takes an index or a UUID, as CUDA_VISIBLE_DEVICES does (MIG names excepted: left to it).
    select = [f"--id={visible}"] if visible and not visible.startswith("MIG") else []
    try:
        out = subprocess.run(
            ["nvidia-smi", *select, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        raise EngineBuildError(
            f"TensorRT engines need an NVIDIA GPU, and nvidia-smi could not name one ({err})."
        ) from err
    first = out.splitlines()[0] if out.strip() else ""
    name, _, capability = (part.strip() for part in first.rpartition(","))  # rpartition: a name may hold commas
    if not name or not capability:
        raise EngineBuildError(
            f"Expected nvidia-smi to print a GPU's name and compute capability, but it printed {out!r}."
        )
    return {"gpu": name, "compute_capability": capability}


def tensorrt_version() -> str:
    try:
        import tensorrt
    except ImportError as err:
        raise EngineBuildError("TensorRT is not installed: pip install 'diffdefense[tensorrt]'.") from err
    return tensorrt.__version__


def engine_parts(onnx_sha256: str, gpu: dict[str, str], trt_version: str, profile: BatchProfile, fp16: bool) -> dict:
    """What an engine depends on (the record kept beside it)."""
    try:
        import polygraphy
    except ImportError as err:
        raise EngineBuildError("TensorRT engines need polygraphy: pip install 'diffdefense[tensorrt]'.") from err

    return {
        "onnx": onnx_sha256,
        **gpu,
        "tensorrt": trt_version,
        "polygraphy": polygraphy.__version__,
        "profile": asdict(profile),
        "fp16": fp16,
    }


def engine_key(onnx_sha256: str, gpu: dict[str, str], trt_version: str, profile: BatchProfile, fp16: bool) -> str:
    """What an engine depends on, hashed: change any of it and the cache misses."""
    return _key(engine_parts(onnx_sha256, gpu, trt_version, profile, fp16))


def _key(parts: dict) -> str:
    return sha256_of(json.dumps(parts, sort_keys=True).encode())[:20]


def record_path(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


def stale_reason(engine_path: Path, parts: dict) -> str | None:
    """Why a cached engine must not be used for these parts, or None when it may."""
    return _check_cached(engine_path, parts)[0]


def _check_cached(engine_path: Path, parts: dict) -> tuple[str | None, bytes | None]:
    """(why the cached engine must not be used, None), or (None, its bytes as read and checked against its record)."""
    if not engine_path.is_file():
        return "no engine is cached", None
    try:
        record = json.loads(record_path(engine_path).read_text())
    except (OSError, ValueError) as err:
        return f"its record {record_path(engine_path).name} is missing or unreadable ({err})", None
    built = record.get("parts") if isinstance(record, dict) else None
    if not isinstance(built, dict):
        return f"its record {record_path(engine_path).name} does not say what it was built for", None
    if built != parts:
        changed = sorted(k for k in {*built, *parts} if built.get(k) != parts.get(k))
        reason = "it was built for " + ", ".join(f"{k}={built.get(k)!r} (here: {parts.get(k)!r})" for k in changed)
        return reason, None
    data = engine_path.read_bytes()
    if len(data) != record.get("bytes") or sha256_of(data) != record.get("sha256"):
        return (
            f"its {len(data)} bytes are not the {record.get('bytes')} bytes that were built (half-written or changed)",
            None,
        )
    return None, data


def _input_shapes(data: bytes) -> dict[str, list]:
    import onnx

    graph = onnx.load_model_from_string(data).graph
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}


def build_engine(data: bytes, profile: BatchProfile, fp16: bool, name: str = "the graph") -> bytes:
    """One engine from an ONNX graph's bytes, with an optimisation profile over the batch dimension of every input;
    returns the engine's bytes. name only names the graph in errors."""
    try:
        from polygraphy.backend.onnx import BytesFromOnnx, ConvertToFp16, OnnxFromBytes
        from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxBytes, Profile
    except ImportError as err:  # polygraphy without onnx, say
        raise EngineBuildError(f"Building a TensorRT engine needs polygraphy and onnx: {err}.") from err

    strongly_typed = int(tensorrt_version().split(".")[0]) >= 11
    trt_profile = Profile()
    for input_name, dims in _input_shapes(data).items():
        rest = [int(d) for d in dims[1:]]
        trt_profile.add(input_name, min=[profile.min, *rest], opt=[profile.opt, *rest], max=[profile.max, *rest])
    if fp16 and strongly_typed:  # precision lives in the graph: convert it, keep float32 at the edges
        network = NetworkFromOnnxBytes(BytesFromOnnx(ConvertToFp16(OnnxFromBytes(data))), strongly_typed=True)
        config = CreateConfig(profiles=[trt_profile])
    else:
        network = NetworkFromOnnxBytes(data, strongly_typed=strongly_typed)
        # A QDQ graph (the bundle's int8 U-Nets) is explicitly quantised: TensorRT 10 reads its scales once the
        # int8 flag allows int8 kernels; a strongly typed build (TensorRT 11) takes the types from the graph.
        int8 = not strongly_typed and _is_quantized(data)
        config = CreateConfig(fp16=fp16, int8=int8, profiles=[trt_profile])
    try:
        serialized = EngineBytesFromNetwork(network, config=config)()
    except Exception as err:  # polygraphy and TensorRT raise their own types
        raise EngineBuildError(f"TensorRT could not build an engine from {name}: {err}") from err
    return bytes(serialized)


def _is_quantized(data: bytes) -> bool:
    """Whether an ONNX graph holds QuantizeLinear nodes (a QDQ int8 graph)."""
    import onnx

    return any(node.op_type == "QuantizeLinear" for node in onnx.load_model_from_string(data).graph.node)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)  # a half-written file never looks whole


def cached_engine(
    onnx_path: Path,
    cache_dir: Path | None = None,
    profile: BatchProfile = BatchProfile(),
    fp16: bool = False,
    data: bytes | None = None,
) -> Path:
    """The engine file for this graph on this GPU and TensorRT (verified_engine's path)."""
    return verified_engine(onnx_path, cache_dir, profile, fp16, data)[0]


def verified_engine(
    onnx_path: Path,
    cache_dir: Path | None = None,
    profile: BatchProfile = BatchProfile(),
    fp16: bool = False,
    data: bytes | None = None,
) -> tuple[Path, bytes]:
    """The engine for this graph on this GPU and TensorRT, built on the first call and reused after while its
    record matches: its path, and its bytes as built or as read and checked against the record (the bytes to run,
    so that a file swapped after the check never runs). data: the graph's bytes as load_bundle verified them
    (onnx_path then only names the engine); without it the file is read once, so the sha256 in the key is that of
    the bytes the engine is built from."""
    if data is None:
        data = Path(onnx_path).read_bytes()
    onnx_path = Path(onnx_path)
    parts = engine_parts(sha256_of(data), gpu_identity(), tensorrt_version(), profile, fp16)
    path = (cache_dir or DEFAULT_CACHE) / f"{onnx_path.stem}-{_key(parts)}.engine"
    reason, engine = _check_cached(path, parts)
    if reason is None:
        return path, engine
    if path.exists():
        log.warning("Rebuilding the TensorRT engine %s: %s.", path, reason)
    engine = build_engine(data, profile, fp16, onnx_path.name)
    record_path(path).unlink(missing_ok=True)  # engine first, record last: a record always vouches for its engine
    _write_atomically(path, engine)
    record = {"parts": parts, "bytes": len(engine), "sha256": sha256_of(engine)}
    _write_atomically(record_path(path), json.dumps(record, indent=2).encode())
    return path, engine
