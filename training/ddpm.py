"""DDPM training loss and ancestral sampling in PyTorch, on the numpy schedule of diffdefense.schedule."""

from __future__ import annotations

import torch
from torch import nn

from diffdefense.schedule import NoiseSchedule


def to_model_range(x01: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> the DDPM's [-1, 1]."""
    return x01 * 2.0 - 1.0


def to_image_range(x: torch.Tensor) -> torch.Tensor:
    """The DDPM's [-1, 1] -> images in [0, 1], clipped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (Ho et al., formula 4), per image's timestep t (N,)."""
    return schedule.q_sample(x0, t.numpy(), noise)


def random_noising(
    schedule: NoiseSchedule, x0: torch.Tensor, generator=None, max_timestep: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training inputs: (x_t, t, noise) with t uniform over the trained steps (or over t < max_timestep) and noise
    N(0, I)."""
    t = torch.randint(0, max_timestep or schedule.num_steps, (x0.shape[0],), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    return q_sample(schedule, x0, t, noise), t, noise


def diffusion_loss(
    model: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, generator=None, max_timestep: int | None = None
) -> torch.Tensor:
    """L_simple of Ho et al. (formula 14): || eps - eps_theta(sqrt(abar) x0 + sqrt(1-abar) eps, t) ||^2."""
    x_t, t, noise = random_noising(schedule, x0, generator, max_timestep)
    return (model(x_t, t) - noise).pow(2).mean()


def distillation_loss(
    model: nn.Module,
    teacher: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    generator=None,
    max_timestep: int | None = None,
) -> torch.Tensor:
    """|| eps_teacher(x_t, t) - eps_theta(x_t, t) ||^2 on the training distribution of L_simple: the student learns
    the teacher's estimate of E[eps | x_t] instead of the drawn eps (the same minimiser, far less variance)."""
    x_t, t, _ = random_noising(schedule, x0, generator, max_timestep)
    with torch.no_grad():
        target = teacher(x_t, t)
    return (model(x_t, t) - target).pow(2).mean()


@torch.no_grad()
def sample(
    model: nn.Module,
    schedule: NoiseSchedule,
    n: int,
    generator: torch.Generator,
    batch_size: int = 250,
    clip_denoised: bool = True,
):
    """n images (n, 1, 28, 28) in [0, 1] by ancestral sampling (Algorithm 2 of Ho et al.), seeded.

    clip_denoised: at each step, predict x_0 from eps, clip it to [-1, 1], and step to the posterior mean given
    it, as Ho et al.'s and improved-diffusion's samplers do; without it, the plain step a x + b eps + s n.
    """
    a, b, s = (torch.as_tensor(c, dtype=torch.float32) for c in schedule.posterior_step_coefficients())
    c0, ct = (torch.as_tensor(c, dtype=torch.float32) for c in schedule.posterior_mean_coefficients())
    abar = torch.as_tensor(schedule.alphas_cumprod, dtype=torch.float32)
    out = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        x = torch.randn((m, 1, 28, 28), generator=generator)
        for t in reversed(range(schedule.num_steps)):
            eps = model(x, torch.full((m,), t, dtype=torch.long))
            if clip_denoised:
                x0 = ((x - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()).clamp(-1.0, 1.0)  # formula 15
                mean = c0[t] * x0 + ct[t] * x
            else:
                mean = a[t] * x + b[t] * eps
            x = mean + s[t] * torch.randn(x.shape, generator=generator)
        out.append(to_image_range(x))
    return torch.cat(out)
