"""onnxruntime as a backend: one graph in a session on the CPU, CUDA or TensorRT execution provider; a provider
that is not available is refused, naming those that are."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffdefense.runtime.backends.base import BackendError
from diffdefense.runtime.backends.options import PROVIDER_NAMES

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
# Behind TensorRT, the CUDA provider takes the nodes TensorRT does not, so that they stay on the GPU. (onnxruntime
# still keeps a few shape computations on its CPU provider, as it does with CUDA alone.)
PROVIDER_CHAINS = {"cpu": ["cpu"], "cuda": ["cuda"], "tensorrt": ["tensorrt", "cuda"]}


def available_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


class OnnxRunner:
    """One ONNX graph in an onnxruntime session on the chosen provider (no silent fallback to the CPU).

    data: the graph's bytes as load_bundle verified them (Bundle.graph(role)); the session is built from them, so
    a file swapped on disk after the check is never run. Without it the session reads path. close() releases the
    session; run after it raises BackendError.
    """

    def __init__(
        self,
        path: Path,
        provider: str = "cpu",
        threads: int | None = None,
        data: bytes | None = None,
        spin: bool = True,
    ) -> None:
        try:
            import onnxruntime
        except ImportError as err:
            raise BackendError("onnxruntime is not installed: pip install 'diffdefense[cpu]' (or [gpu]).") from err
        if provider not in PROVIDERS:
            raise BackendError(f"Expected a provider in {sorted(PROVIDER_NAMES)}, but got {provider!r}.")
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
        # A Defender holds several sessions (the U-Net's graphs, the classifier), each with its own thread pool, and
        # runs one at a time. With spin, threads spin between the operators of a call (waking a sleeping thread per
        # operator costs more than a small convolution) but stop when the call returns: threads that spun on after
        # their call would take the cores from the next session's.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.add_session_config_entry("session.force_spinning_stop", "1")
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
        if self.session is None:
            raise BackendError(f"The onnxruntime session of {self.name} was closed; make a new runner to run it.")
        feed = dict(zip(self.input_names, inputs, strict=True))
        try:
            return self.session.run(None, feed)[0]
        except Exception as err:  # a provider that fails mid-run (device lost, out of memory): say which and where
            raise BackendError(f"onnxruntime's {self.provider} failed while running {self.name}: {err}") from err

    def close(self) -> None:
        """Drop the session, which onnxruntime frees with its last reference; a second call does nothing."""
        self.session = None
