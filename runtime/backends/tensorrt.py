"""TensorRT itself as a backend (not through onnxruntime): a serialized engine, built for this GPU and cached
(tensorrt_engines.py), run by polygraphy's TrtRunner, which keeps the device buffers between calls and sets the
input shapes of each call within the engine's profile.

TensorRT and polygraphy are imported only when a runner is made: the package works without them, and asking for
this backend without them (or without a GPU) raises BackendError saying what is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffdefense.runtime.backends.base import BackendError
from diffdefense.runtime.backends.tensorrt_engines import EngineBuildError, verified_engine


class TensorRTRunner:
    """run(*inputs) -> first output, like OnnxRunner, for one serialized engine (its bytes; name names it).
    close() deactivates it; run after it raises BackendError."""

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
        if self.runner is None:
            raise BackendError(f"The TensorRT engine {self.name} was closed; make a new runner to run it.")
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
        """Deactivate the engine (freeing its device buffers); a second call does nothing."""
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.deactivate()


def engine_runner(path: Path, fp16: bool = False, data: bytes | None = None) -> TensorRTRunner:
    """The engine of the graph at path for this GPU (built on first use, then read from the cache), run natively;
    built from data, the verified bytes, when given (path then only names it)."""
    try:
        engine_path, engine = verified_engine(Path(path), fp16=fp16, data=data)
    except EngineBuildError as err:
        raise BackendError(str(err)) from err
    return TensorRTRunner(engine, engine_path.name)
