"""The random numbers of one defence call, drawn in numpy so that every backend sees the same ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffdefense.settings import DefenseSettings

IMAGE_SHAPE = (1, 28, 28)


@dataclass(frozen=True)
class Draws:
    """latents float32 (B, R, 1, 28, 28); noise float32 (runs, T*, B, R, 1, 28, 28), where runs is
    L with fresh noise per run and 1 otherwise (the same n_t for every run); with settings.refine, the refining
    pass's noise float32 (1 + T*, B, 1, 28, 28): the diffusion of the chosen image, then each step's n_t."""

    latents: np.ndarray
    noise: np.ndarray
    refine_noise: np.ndarray | None = None

    def step_noise(self, run: int) -> np.ndarray:
        return self.noise[run if len(self.noise) > 1 else 0]


def draw(settings: DefenseSettings, batch: int, image_shape: tuple[int, ...] = IMAGE_SHAPE) -> Draws:
    """Seeded by settings.seed alone: the same seed and batch size give the same numbers (and refine's come after
    the others, so that it leaves them as they were)."""
    rng = np.random.default_rng(settings.seed)
    shape = (batch, settings.num_candidates, *image_shape)
    latents = rng.standard_normal(shape, dtype=np.float32)
    runs = settings.iterations if settings.fresh_noise else 1
    noise = rng.standard_normal((runs, settings.num_steps, *shape), dtype=np.float32)
    if not settings.refine:
        return Draws(latents, noise)
    return Draws(latents, noise, rng.standard_normal((1 + settings.num_steps, batch, *image_shape), dtype=np.float32))
