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
) -> Runner:
    """An OnnxRunner, or for 'tensorrt-engine' a TensorRT engine built for this GPU (cached) and run natively; both
    from data, the verified bytes, when given (path then only names the graph), else from the file at path."""
    if provider != "tensorrt-engine":
        if fp16:
            raise BackendError(
                "fp16 applies to the 'tensorrt-engine' backend only; onnxruntime runs the float32 graphs."
            )
        return OnnxRunner(path, provider, threads, data, spin)
    from diffdefense.runtime.backends.tensorrt import engine_runner

    return engine_runner(Path(path), fp16, data)
