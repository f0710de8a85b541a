"""A small DDPM noise predictor eps(x_t, t) sized for CPUs.

Three resolutions (28, 14, 7; no padding to 32) with 16-32-64 channels, one residual block per
level, GroupNorm and SiLU, and a sinusoidal time embedding (Ho et al. 2020). About 0.3 M
parameters and some tens of MFLOP per image (``diffdefense model-stats`` measures both). Every
op (Conv, GroupNorm, SiLU, nearest upsampling, concat) exports to ONNX and has a plain input
gradient, which the full-gradient defence mode needs.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) time indices -> (N, dim) sin/cos features, as in the Transformer and DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels // 4), channels)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, time_dim: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_ch)
        self.norm2 = _norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(temb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """eps_theta(x_t, t): x_t (N, 1, 28, 28) in the model's [-1, 1] scale, t (N,) int64 in [0, T)."""

    def __init__(self, channels: tuple[int, int, int] = (16, 32, 64), time_dim: int = 128) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.channels = channels
        self.embed_dim = time_dim // 2
        self.time_mlp = nn.Sequential(nn.Linear(self.embed_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.conv_in = nn.Conv2d(1, c1, 3, padding=1)
        self.enc1 = ResBlock(c1, c1, time_dim)
        self.down1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)  # 28 -> 14
        self.enc2 = ResBlock(c2, c2, time_dim)
        self.down2 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)  # 14 -> 7
        self.mid1 = ResBlock(c3, c3, time_dim)
        self.mid2 = ResBlock(c3, c3, time_dim)
        self.up2 = nn.Conv2d(c3, c2, 3, padding=1)  # after nearest 7 -> 14
        self.dec2 = ResBlock(2 * c2, c2, time_dim)
        self.up1 = nn.Conv2d(c2, c1, 3, padding=1)  # after nearest 14 -> 28
        self.dec1 = ResBlock(2 * c1, c1, time_dim)
        self.norm_out = _norm(c1)
        self.conv_out = nn.Conv2d(c1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time_mlp(sinusoidal_embedding(t, self.embed_dim).to(x.dtype))
        h1 = self.enc1(self.conv_in(x), temb)
        h2 = self.enc2(self.down1(h1), temb)
        h = self.mid2(self.mid1(self.down2(h2), temb), temb)
        h = self.up2(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.dec2(torch.cat([h, h2], dim=1), temb)
        h = self.up1(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.dec1(torch.cat([h, h1], dim=1), temb)
        return self.conv_out(F.silu(self.norm_out(h)))
