"""A small DDPM noise predictor eps(x_t, t) sized for CPUs.

Three resolutions (28, 14, 7; no padding to 32) with 16-32-64 channels, one residual block per
level, SiLU, and a sinusoidal time embedding (Ho et al. 2020). About 0.3 M parameters and some
tens of MFLOP per image (``diffdefense model-stats`` measures both). Every op exports to ONNX and
has a plain input gradient, which the full-gradient defence mode needs.

Two normalisations, one skeleton:
- ``norm="group"``: pre-activation blocks with GroupNorm, as DDPM codebases write them (the
  shipped ``unet``). At inference GroupNorm normalises every activation, which onnxruntime's CPU
  provider runs as a chain of primitive nodes wrapped in layout reorders.
- ``norm="batch"``: the deployment shape (the shipped ``unet_bn``). Every BatchNorm directly follows
  a convolution (conv -> BN -> SiLU, conv -> BN, + skip), so after training it folds into that
  convolution's weights and bias (``fold_batchnorm``) and the exported graph holds convolutions,
  SiLU, adds, upsampling and concatenations only.

The activation is SiLU, or ReLU (``activation="relu"``, the shipped ``unet_bn_relu``): in an int8 graph onnxruntime
fuses a ReLU into the convolution before it, while a SiLU stays a separate Sigmoid and Mul on every activation.
"""

from __future__ import annotations

import copy
import functools
import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) time indices -> (N, dim) sin/cos features, as in the Transformer and DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


# The blocks' activation (the time MLP keeps SiLU: a deployment graph folds it away with the timestep).
ACTIVATIONS = {"silu": F.silu, "relu": F.relu}


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels // 4), channels)


class ResBlock(nn.Module):
    """GroupNorm -> act -> conv, + time, GroupNorm -> act -> conv, + skip (pre-activation); act SiLU or ReLU."""

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, activation: str = "silu") -> None:
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_ch)
        self.norm2 = _norm(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        if temb is not None:  # None: folded into conv1's bias (fold_timestep)
            h = h + self.time_proj(temb)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + h


class FoldableResBlock(nn.Module):
    """conv -> BN -> SiLU or ReLU, + time, conv -> BN, + skip: each BatchNorm follows a convolution and folds into it.

    The second BatchNorm starts at zero scale, so each block starts as its skip path (Goyal et al. 2017), which
    keeps the unnormalised residual stream of a fresh network at the size of its input.
    """

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, activation: str = "silu") -> None:
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_ch)
        self.time_proj = nn.Linear(time_dim, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_ch)
        nn.init.zeros_(self.norm2.weight)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(self.conv1(x))
        if temb is not None:  # None: folded into conv1's bias (fold_timestep, after fold_batchnorm)
            h = h + self.time_proj(temb)[:, :, None, None]
        return self.skip(x) + self.norm2(self.conv2(self.act(h)))


NORMS = {"group": ResBlock, "batch": FoldableResBlock}
# The BatchNorm net's output is bounded to +-EPS_BOUND. GroupNorm before the output convolution bounds the GroupNorm
# net's prediction whatever the input's size, and the defence relies on that: its optimiser moves the latents to |x|
# of 20 and more, where an unnormalised net's prediction grows with the input and the chain's output no longer
# follows the latents' sign. The noise it learns to predict is N(0, 1), so on the inputs it was trained for the bound
# touches only rare predictions (a Clip after the last convolution, which onnxruntime fuses into it). It was added
# after training; a bound of 4 and one of 8 gave the same defended accuracy on attacked training images.
EPS_BOUND = 8.0
# The BatchNorm net's input is clamped to +-INPUT_BOUND. Its training inputs, noised images in [-1, 1], pass +-3 only
# where the noise draw passes 3 standard deviations (0.27 % of draws at the highest noise level), and at the defence's
# t < 15 (noise scale at most 0.45) only beyond 4.6 standard deviations. The defence's latents reach |x| of 20-30
# (median about 15), where the chain's output follows the latent's sign whatever the prediction (a step moves a pixel by
# at most EPS_BOUND times a coefficient well below 1). Unclamped, those pixels drive the activations into the thousands,
# and int8, one scale per tensor, then cannot resolve the pixels near zero that decide the reconstruction. Added after
# training; on 200 attacked MNIST training images the float32 defence's accuracy moved by at most 0.5 points with a
# bound of 4, 3 or 2, and the int8 defence's gap to float32 shrank as the bound did (docs/runtime.md, "Why int8 lost
# accuracy, and what keeps it").
INPUT_BOUND = 3.0


class UNet(nn.Module):
    """eps_theta(x_t, t): x_t (N, 1, 28, 28) in the model's [-1, 1] scale, t (N,) int64 in [0, T).

    norm: 'group' (pre-activation GroupNorm blocks) or 'batch' (BatchNorm after each convolution, folded into it
    for inference by fold_batchnorm). activation: 'silu' or 'relu', in the blocks and before the output convolution.
    """

    def __init__(
        self,
        channels: tuple[int, int, int] = (16, 32, 64),
        time_dim: int = 128,
        norm: str = "group",
        activation: str = "silu",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"Expected norm {' or '.join(map(repr, NORMS))}, but got {norm!r}.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"Expected activation {' or '.join(map(repr, ACTIVATIONS))}, but got {activation!r}.")
        ResBlock = functools.partial(NORMS[norm], activation=activation)  # noqa: N806 (a class, named as one)
        c1, c2, c3 = channels
        self.channels = channels
        self.norm = norm
        self.activation = activation
        self.act = ACTIVATIONS[activation]
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
        # The batch-norm net's output stream follows an add, not a convolution: nothing to fold a norm into there.
        self.norm_out = _norm(c1) if norm == "group" else nn.Identity()
        self.eps_bound = None if norm == "group" else EPS_BOUND
        self.input_bound = None if norm == "group" else INPUT_BOUND
        self.conv_out = nn.Conv2d(c1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.denoise(x, self.time_embedding(t, x.dtype))

    def time_embedding(self, t: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(N,) time indices -> (N, time_dim), the input of every block's time projection."""
        return self.time_mlp(sinusoidal_embedding(t, self.embed_dim).to(dtype))

    def denoise(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        """The network on a time embedding, or on None once the timestep is folded into the biases."""
        if self.input_bound is not None:
            x = x.clamp(-self.input_bound, self.input_bound)
        h1 = self.enc1(self.conv_in(x), temb)
        h2 = self.enc2(self.down1(h1), temb)
        h = self.mid2(self.mid1(self.down2(h2), temb), temb)
        h = self.dec2(torch.cat([upsampled(self.up2, h), h2], dim=1), temb)
        h = self.dec1(torch.cat([upsampled(self.up1, h), h1], dim=1), temb)
        eps = self.conv_out(self.act(self.norm_out(h)))
        return eps if self.eps_bound is None else eps.clamp(-self.eps_bound, self.eps_bound)


def upsampled(conv: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """conv after a nearest 2x upsampling of h; a module with `upsamples = True` (an export-time rewrite of both,
    export/upsampling_variants.py) takes h as it is."""
    if getattr(conv, "upsamples", False):
        return conv(h)
    return conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))


@torch.no_grad()
def fold_batchnorm(model: UNet) -> UNet:
    """A copy of an eval-mode 'batch' U-Net with every BatchNorm folded into the convolution before it (the same
    function to float rounding); a 'group' U-Net, or one already folded, is returned as a copy, unchanged."""
    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        if isinstance(block, FoldableResBlock) and isinstance(block.norm1, nn.BatchNorm2d):  # not folded yet
            block.conv1, block.norm1 = fuse_conv_bn_eval(block.conv1, block.norm1), nn.Identity()
            block.conv2, block.norm2 = fuse_conv_bn_eval(block.conv2, block.norm2), nn.Identity()
    return folded


class FixedTimestepUNet(nn.Module):
    """eps_theta(x, t) for one fixed t: x (N, 1, 28, 28) -> eps, with t's embedding folded into the biases.

    Every block adds its time projection right after its first convolution (and, in the 'batch' net, after that
    convolution's folded BatchNorm), so for a fixed t the projection is a constant per channel and joins that
    convolution's bias exactly: no time MLP and no broadcast add remain in the graph.
    """

    def __init__(self, unet: UNet, timestep: int) -> None:
        super().__init__()
        folded = fold_batchnorm(unet)
        with torch.no_grad():
            temb = folded.time_embedding(torch.tensor([timestep]))
            for block in folded.modules():
                if isinstance(block, ResBlock | FoldableResBlock):
                    shift = block.time_proj(temb)[0]
                    if block.conv1.bias is None:
                        block.conv1.bias = nn.Parameter(torch.zeros_like(shift))
                    block.conv1.bias += shift
                    block.time_proj = None
        folded.time_mlp = None
        self.unet = folded
        self.timestep = int(timestep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet.denoise(x, None)
