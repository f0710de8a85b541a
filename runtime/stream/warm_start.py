"""Warm start across frames: consecutive frames look alike, so the candidates for frame k can start from frame
k-1's winning latent (the rest stay fresh draws) and need fewer iterations.

A frame whose reconstruction error is above max_error (a scene change, an attack) does not seed the next one: that
frame starts cold again, with the full iterations.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np


@dataclass
class WarmStart:
    """carried: candidates started from the previous winner (the others stay fresh); iterations: L on warm frames
    (None keeps the settings' L); max_error: the largest previous error that still seeds the next frame."""

    carried: int = 1
    iterations: int | None = None
    max_error: float | None = None
    previous: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not _positive_integer(self.carried):
            raise ValueError(f"Expected carried to be an integer of at least 1, but got {self.carried!r}.")
        if self.iterations is not None and not _positive_integer(self.iterations):
            raise ValueError(f"Expected warm iterations to be None or an integer >= 1, but got {self.iterations!r}.")
        if self.max_error is not None and not (
            isinstance(self.max_error, numbers.Real) and not isinstance(self.max_error, bool) and self.max_error >= 0
        ):  # NaN fails >= 0: it would never stop a frame from seeding the next
            raise ValueError(f"Expected max_error to be None or a number >= 0, but got {self.max_error!r}.")
        self.carried = int(self.carried)
        self.iterations = None if self.iterations is None else int(self.iterations)

    def arguments(self) -> dict:
        """The defender's keyword arguments for the next frame: empty while cold."""
        if self.previous is None:
            return {}
        latents = np.repeat(self.previous[-1:, None], self.carried, axis=1)  # the last frame's winner, K times
        return {"initial_latents": latents, "iterations": self.iterations}

    def update(self, result) -> None:
        """Keep the winning latent of the newest frame, unless its error says the scene changed (or is not a
        number: nothing from a broken frame is carried into the next)."""
        error = float(result.reconstruction_error[-1])
        too_far = not math.isfinite(error) or self.max_error is not None and error > self.max_error
        latents = result.latents
        usable = latents is not None and np.isfinite(latents[-1:]).all()
        self.previous = latents if usable and not too_far else None

    def reset(self) -> None:
        self.previous = None


def _positive_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
