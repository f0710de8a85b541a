"""Model runners behind one small interface: run(inputs) -> first output. onnxruntime with the CPU, CUDA or
TensorRT execution provider, or TensorRT itself ('tensorrt-engine'); a provider that is not available is refused,
naming those that are."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
# Behind TensorRT, the CUDA provider takes the nodes TensorRT does not, so that they stay on the GPU. (onnxruntime
# still keeps a few shape computations on its CPU provider, as it does with CUDA alone.)
PROVIDER_CHAINS = {"cpu": ["cpu"], "cuda": ["cuda"], "tensorrt": ["tensorrt", "cuda"]}


class BackendError(RuntimeError):
    """A backend that is not installed or cannot run here."""


def available_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


class OnnxRunner:
    """One ONNX graph in an onnxruntime session on the chosen provider (no silent fallback to the CPU).

    data: the graph's bytes as load_bundle verified them (Bundle.graph(role)); the session is built from them, so
    a file swapped on disk after the check is never run. Without it the session reads path.
    """

    def __init__(
        self, path: Path, provider: str = "cpu", threads: int | None = None, data: bytes | None = None
    ) -> None:
        try:
            import onnxruntime
        except ImportError as err:
            raise BackendError("onnxruntime is not installed: pip install 'diffdefense[cpu]' (or [gpu]).") from err
        if provider not in PROVIDERS:
            raise BackendError(
                f"Expected a provider in {sorted([*PROVIDERS, 'tensorrt-engine'])}, but got {provider!r}."
            )
        wanted = PROVIDERS[provider]
        chain = [PROVIDERS[p] for p in PROVIDER_CHAINS[provider]]
        installed = onnxruntime.get_available_providers()
        for needed in chain:
            if needed not in installed:
                raise BackendError(
                    f"The {needed} is not available in this onnxruntime; installed: {', '.join(installed)}."
                )
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.name = Path(path).name
        try:
            self.session = onnxruntime.InferenceSession(str(path) if data is None else data, options, providers=chain)
        except Exception as err:  # onnxruntime raises its own types (Fail, InvalidGraph, EPFail, ...)
            raise BackendError(f"onnxruntime's {wanted} could not load {self.name}: {err}") from err
        if self.session.get_providers()[0] != wanted:  # onnxruntime may fall back quietly: refuse instead
            raise BackendError(
                f"onnxruntime could not start {wanted} for {self.name}; it offered {self.session.get_providers()}."
            )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.provider = wanted

    def run(self, *inputs: np.ndarray) -> np.ndarray:
        feed = dict(zip(self.input_names, inputs, strict=True))
        try:
            return self.session.run(None, feed)[0]
        except Exception as err:  # a provider that fails mid-run (device lost, out of memory): say which and where
            raise BackendError(f"onnxruntime's {self.provider} failed while running {self.name}: {err}") from err


def make_runner(
    path: Path, provider: str = "cpu", threads: int | None = None, fp16: bool = False, data: bytes | None = None
):
    """An OnnxRunner, or for 'tensorrt-engine' a TensorRT engine built for this GPU (cached) and run natively; both
    from data, the verified bytes, when given (path then only names the graph), else from the file at path."""
    if provider != "tensorrt-engine":
        if fp16:
            raise BackendError(
                "fp16 applies to the 'tensorrt-engine' backend only; onnxruntime runs the float32 graphs."
            )
        return OnnxRunner(path, provider, threads, data)
    from diffdefense.runtime.tensorrt_backend import TensorRTRunner
    from diffdefense.runtime.tensorrt_engines import EngineBuildError, verified_engine

    try:
        engine_path, engine = verified_engine(Path(path), fp16=fp16, data=data)
    except EngineBuildError as err:
        raise BackendError(str(err)) from err
    return TensorRTRunner(engine, engine_path.name)
