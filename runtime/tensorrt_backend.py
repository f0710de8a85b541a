"""TensorRT itself as a backend (not through onnxruntime): a serialized engine run by polygraphy's TrtRunner,
which keeps the device buffers between calls and sets the input shapes of each call within the engine's profile.

Imported lazily: the package works without TensorRT, and asking for this backend without it (or without a GPU)
raises BackendError saying what is missing.
"""

from __future__ import annotations

import numpy as np

from diffdefense.runtime.backends import BackendError


class TensorRTRunner:
    """run(*inputs) -> first output, like OnnxRunner, for one serialized engine (its bytes; name names it)."""

    def __init__(self, engine: bytes, name: str = "the engine") -> None:
        try:
            from polygraphy.backend.trt import EngineFromBytes, TrtRunner
        except ImportError as err:
            raise BackendError("The TensorRT backend needs polygraphy: pip install 'diffdefense[tensorrt]'.") from err
        try:
            import tensorrt  # noqa: F401
        except ImportError as err:
            raise BackendError("TensorRT is not installed: pip install 'diffdefense[tensorrt]'.") from err
        try:
            self.runner = TrtRunner(EngineFromBytes(engine))
            self.runner.activate()
        except Exception as err:  # an engine from another GPU or TensorRT version, or no GPU at all
            raise BackendError(f"TensorRT could not load the engine {name}: {err}") from err
        metadata = self.runner.get_input_metadata(use_numpy_dtypes=False)  # numpy dtypes here are deprecated
        self.input_names = list(metadata.keys())
        self.input_dtypes = [np.dtype(metadata[n].dtype.numpy()) for n in self.input_names]
        self.name = name
        self.provider = "TensorRT"

    def run(self, *inputs: np.ndarray) -> np.ndarray:
        feed = {
            name: np.ascontiguousarray(value, dtype=dtype)  # an fp16 engine takes fp16 inputs
            for name, value, dtype in zip(self.input_names, inputs, self.input_dtypes, strict=True)
        }
        try:
            outputs = self.runner.infer(feed, check_inputs=True)
        except Exception as err:  # a batch outside the engine's profile, a device lost: say which engine
            raise BackendError(f"TensorRT failed while running {self.name}: {err}") from err
        # a copy: polygraphy reuses its host output buffer on the next call
        return np.array(next(iter(outputs.values())), dtype=np.float32, copy=True)

    def close(self) -> None:
        self.runner.deactivate()
