"""What every backend is: a Runner runs one model (an onnxruntime session, a TensorRT engine) and gives back its first
output; a BackendError says why one cannot be had or failed."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


class BackendError(RuntimeError):
    """A backend that is not installed or cannot run here."""


@runtime_checkable
class Runner(Protocol):
    """One model on one backend, owning its session or engine.

    name: the graph or engine it runs, for messages; provider: what runs it (an onnxruntime execution provider's
    name, or 'TensorRT')."""

    name: str
    provider: str

    def run(self, *inputs: np.ndarray) -> np.ndarray:
        """The model's first output for its inputs, given in the graph's input order."""
        ...

    def close(self) -> None:
        """Release the session or engine. A second call does nothing; run after it raises BackendError."""
        ...


class ClosedRunner:
    """What an owner that was closed keeps in place of a runner: run raises BackendError with the owner's sentence."""

    provider = "closed"

    def __init__(self, name: str, message: str) -> None:
        self.name, self.message = name, message

    def run(self, *inputs: np.ndarray) -> np.ndarray:
        raise BackendError(self.message)

    def close(self) -> None:
        pass
