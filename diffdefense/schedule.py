"""The DDPM noise schedule as float64 numpy arrays (backend-free, as improved-diffusion keeps it).

Training (PyTorch) and the runtime read the same arrays, so both mean the same noise level by the
same time index. Ho et al. 2020, "Denoising Diffusion Probabilistic Models", arXiv 2006.11239.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseSchedule:
    """betas (T,), float64; every derived quantity follows from them."""

    betas: np.ndarray

    def __post_init__(self) -> None:
        betas = np.asarray(self.betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError(f"Expected a non-empty 1-D array of betas, but got shape {betas.shape}.")
        if not np.all((betas > 0) & (betas < 1)):
            raise ValueError("Every beta must lie strictly between 0 and 1.")
        object.__setattr__(self, "betas", betas)

    @classmethod
    def linear(cls, num_steps: int = 100, beta_start: float = 1e-3, beta_end: float = 0.2) -> NoiseSchedule:
        """Betas linear from beta_start to beta_end.

        The defaults are Ho et al.'s 1e-4 .. 0.02 for T = 1000 scaled by 1000 / T, as improved-diffusion
        does for fewer steps, so that x_T is noise (sqrt(abar_T) = 0.0045 at T = 100). The official
        DiffDefense code keeps 1e-4 .. 0.02 at T = 100, whose last step still holds 60 % of the signal
        (sqrt(abar_T) = 0.60), so sampling from N(0, I) starts off the training distribution.
        """
        return cls(np.linspace(beta_start, beta_end, num_steps, dtype=np.float64))

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)

    def to_dict(self) -> dict:
        return {"kind": "explicit", "betas": self.betas.tolist()}

    def q_sample_coefficients(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sqrt(abar_t), sqrt(1 - abar_t)) so that x_t = c0 x_0 + c1 eps, formula (4) of Ho et al."""
        abar = self.alphas_cumprod[t]
        return np.sqrt(abar), np.sqrt(1.0 - abar)

    def q_sample(self, x0, t, noise):
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (formula 4 of Ho et al.), on numpy arrays or torch tensors
        alike: t one timestep for all (an int), or one per image (N,) broadcast over x0's other axes."""
        c0, c1 = self.q_sample_coefficients(np.asarray(t))
        if np.ndim(t) == 0:
            return float(c0) * x0 + float(c1) * noise
        shape = (-1,) + (1,) * (x0.ndim - 1)
        c0, c1 = c0.reshape(shape), c1.reshape(shape)
        if hasattr(x0, "new_tensor"):  # a torch tensor: the coefficients in its dtype (the runtime has no torch)
            c0, c1 = x0.new_tensor(c0), x0.new_tensor(c1)
        return c0 * x0 + c1 * noise

    def posterior_step_coefficients(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a_t, b_t, s_t) of the ancestral DDPM step x_{t-1} = a_t x_t + b_t eps + s_t n (Algorithm 2).

        s_t uses the posterior variance beta~_t (zero at t = 0, so the last step adds no noise).
        """
        alphas = 1.0 - self.betas
        abar = self.alphas_cumprod
        abar_prev = np.append(1.0, abar[:-1])
        a = 1.0 / np.sqrt(alphas)
        b = -self.betas / (np.sqrt(alphas) * np.sqrt(1.0 - abar))
        s = np.sqrt(self.betas * (1.0 - abar_prev) / (1.0 - abar))
        return a, b, s

    def posterior_mean_coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """(c0, ct) with mean of q(x_{t-1} | x_t, x_0) = c0 x_0 + ct x_t (Ho et al. formula 7)."""
        alphas = 1.0 - self.betas
        abar = self.alphas_cumprod
        abar_prev = np.append(1.0, abar[:-1])
        return self.betas * np.sqrt(abar_prev) / (1.0 - abar), (1.0 - abar_prev) * np.sqrt(alphas) / (1.0 - abar)
