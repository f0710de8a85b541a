"""Model runners behind one protocol (base.Runner: run(*inputs) -> first output, close(), name): onnxruntime with the
CPU, CUDA or TensorRT execution provider (onnxruntime_runner.py), or TensorRT itself, 'tensorrt-engine'
(tensorrt.py, imported only when asked for). make_runner is the one factory; BackendOptions (options.py) is a
Defender's choice among them."""

from __future__ import annotations

from pathlib import Path

from diffdefense.runtime.backends.base import BackendError, ClosedRunner, Runner
from diffdefense.runtime.backends.onnxruntime_runner import (
    PROVIDER_CHAINS,
    PROVIDERS,
    OnnxRunner,
    available_providers,
)
from diffdefense.runtime.backends.options import PROVIDER_NAMES, STEP_OPS, BackendOptions, Provider, StepOps
from diffdefense.runtime.backends.sharded import ShardedRunner, resolve_shards

__all__ = [
    "PROVIDERS",
    "PROVIDER_CHAINS",
    "PROVIDER_NAMES",
    "STEP_OPS",
    "BackendError",
    "BackendOptions",
    "ClosedRunner",
    "OnnxRunner",
    "Provider",
    "Runner",
    "ShardedRunner",
    "StepOps",
    "available_providers",
    "make_runner",
]


def make_runner(
    path: Path,
    provider: str = "cpu",
    threads: int | None = None,
    fp16: bool = False,
    data: bytes | None = None,
    spin: bool = True,
    shards: int | None = 1,
) -> Runner:
    """An OnnxRunner, or for 'tensorrt-engine' a TensorRT engine built for this GPU (cached) and run natively; both
    from data, the verified bytes, when given (path then only names the graph), else from the file at path. On the
    CPU provider, shards other than 1 make a ShardedRunner (BackendOptions.shards says how many; threads is then
    the budget they share)."""
    if provider != "tensorrt-engine":
        if fp16:
            raise BackendError(
                "fp16 applies to the 'tensorrt-engine' backend only; onnxruntime runs the float32 graphs."
            )
        parts, threads = resolve_shards(shards, threads, provider)
        if parts > 1:
            return ShardedRunner([OnnxRunner(path, provider, threads, data, spin) for _ in range(parts)])
        return OnnxRunner(path, provider, threads, data, spin)
    from diffdefense.runtime.backends.tensorrt import engine_runner

    return engine_runner(Path(path), fp16, data)
