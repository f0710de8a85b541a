"""Small random affine jitter for the KMNIST classifiers, which see only 8,000 training images."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    max_degrees: float = 10.0,
    max_shift: float = 0.1,
    scale_range: tuple[float, float] = (0.9, 1.1),
) -> torch.Tensor:
    """Rotate, scale and shift each image of (N, C, H, W) by its own random amount (shift as a fraction of size)."""
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    angle = uniform(-max_degrees, max_degrees) * math.pi / 180
    scale = uniform(*scale_range)
    shift = torch.stack([uniform(-max_shift, max_shift), uniform(-max_shift, max_shift)], dim=1) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
