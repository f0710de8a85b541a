"""Respacing the trained schedule to T* steps, and the affine coefficients of each reverse step.

As improved-diffusion's ``respace.py``: keep T* of the trained time indices, evenly spaced up to a
chosen starting index, and derive each step from the kept cumulative alphas, so that the U-Net is
always called with the time index it was trained for. (The official DiffDefense code builds a fresh
15-step schedule and feeds the U-Net indices 14..0 instead; DESIGN section 1.)

Every step, DDPM (eta = 1) or DDIM (eta = 0), is affine in x_t and eps for fixed noise n:

    x_prev = a x_t + b eps(x_t, t) + s n

which is what lets the fused kernel, the straight-through gradient and both backends share it.
Song et al. 2021, "Denoising Diffusion Implicit Models", arXiv 2010.02502, formula (12).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from diffdefense.schedule import NoiseSchedule

if TYPE_CHECKING:
    from diffdefense.settings import DefenseSettings


def respaced_timesteps(start_step: int, num_steps: int) -> np.ndarray:
    """num_steps trained indices, evenly spaced over [0, start_step], ascending and distinct."""
    if not 1 <= num_steps <= start_step + 1:
        raise ValueError(
            f"Expected 1 <= num_steps <= start_step + 1 = {start_step + 1}, but got num_steps={num_steps}."
        )
    if num_steps == 1:
        return np.array([start_step])
    return np.round(np.linspace(0, start_step, num_steps)).astype(np.int64)


def settings_timesteps(settings: DefenseSettings) -> list[int]:
    """Every trained index the settings call the U-Net at, largest first: the chain's and, with the refining pass,
    the pass's (respaced from its own start)."""
    used = set(respaced_timesteps(settings.start_step, settings.num_steps).tolist())
    if settings.refine:
        used |= set(respaced_timesteps(settings.refine_start, settings.num_steps).tolist())
    return sorted((int(t) for t in used), reverse=True)


@dataclass(frozen=True)
class ReverseChain:
    """T* reverse steps in the order they run: step i calls eps(x, timesteps[i]) and then applies
    x <- a[i] x + b[i] eps + s[i] n. Arrays are float64 (T*,); ``timesteps`` int64, descending."""

    timesteps: np.ndarray
    a: np.ndarray
    b: np.ndarray
    s: np.ndarray
    eta: float

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)


def step_coefficients(
    abar_t: np.ndarray, abar_prev: np.ndarray, eta: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, s) of the generalised step from noise level abar_t to abar_prev (DDIM formula 12).

    1. predicted x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)                  (formula 9)
    2. sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)  (formula 16)
    3. x_prev = sqrt(abar_prev) x_0 + sqrt(1 - abar_prev - sigma^2) eps + sigma n
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"Expected eta in [0, 1] (0: DDIM, 1: DDPM), but got {eta}.")
    abar_t, abar_prev = np.asarray(abar_t, np.float64), np.asarray(abar_prev, np.float64)
    sigma = eta * np.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))
    a = np.sqrt(abar_prev / abar_t)
    b = np.sqrt(np.maximum(1 - abar_prev - sigma**2, 0.0)) - np.sqrt(abar_prev * (1 - abar_t) / abar_t)
    return a, b, sigma


def reverse_chain(schedule: NoiseSchedule, start_step: int, num_steps: int, eta: float = 1.0) -> ReverseChain:
    """The T*-step chain from trained index ``start_step`` down to x_0 (eta 1: DDPM, 0: DDIM)."""
    if not 0 <= start_step < schedule.num_steps:
        raise ValueError(f"Expected start_step in [0, {schedule.num_steps - 1}], but got {start_step}.")
    kept = respaced_timesteps(start_step, num_steps)
    abar = schedule.alphas_cumprod[kept]
    abar_prev = np.append(1.0, abar[:-1])  # the step below the lowest kept index lands on x_0
    a, b, s = step_coefficients(abar, abar_prev, eta)
    order = slice(None, None, -1)  # run from the noisiest kept index down
    return ReverseChain(kept[order].copy(), a[order].copy(), b[order].copy(), s[order].copy(), float(eta))
