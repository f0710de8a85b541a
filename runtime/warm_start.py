"""Warm start across frames: consecutive frames look alike, so the candidates for frame k can start from frame
k-1's winning latent (the rest stay fresh draws) and need fewer iterations.

A frame whose reconstruction error is above max_error (a scene change, an attack) does not seed the next one: that
frame starts cold again, with the full iterations.
"""

from __future__ import annotations

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
        if self.carried < 1:
            raise ValueError(f"Expected at least one carried candidate, but got {self.carried}.")
        if self.iterations is not None and self.iterations < 1:
            raise ValueError(f"Expected warm iterations >= 1, but got {self.iterations}.")

    def arguments(self) -> dict:
        """The defender's keyword arguments for the next frame: empty while cold."""
        if self.previous is None:
            return {}
        latents = np.repeat(self.previous[-1:, None], self.carried, axis=1)  # the last frame's winner, K times
        return {"initial_latents": latents, "iterations": self.iterations}

    def update(self, result) -> None:
        """Keep the winning latent of the newest frame, unless its error says the scene changed."""
        too_far = self.max_error is not None and float(result.reconstruction_error[-1]) > self.max_error
        self.previous = None if too_far or result.latents is None else result.latents

    def reset(self) -> None:
        self.previous = None
