"""Defense-GAN (Samangouei et al., ICLR 2018, arXiv 1805.06605): project each input onto a WGAN generator's range.

For an input x: draw R latents z0 ~ N(0, I), take L gradient steps on ||G(z) - x||^2 (the mean over pixels, per
restart), keep the restart with the lowest error and classify G(z*). That error is the detection score, as the
paper's detector uses it. The choices follow the official code (github kabkabm/defensegan, models/gan.py and
experiments/cfgs/gans/mnist.yml):

| item | official code | here |
| --- | --- | --- |
| L, R | 200, 10 (``REC_ITERS``, ``REC_RR``) | the same (``paper``); ``cheap`` is 50, 4 |
| optimiser | momentum 0.7, learning rate 10.0 on the per-pixel mean error | the same |
| rate decay | x0.1 after ceil(0.8 L) steps on a counter the loop never advances: it stays at 10 | none (lr_decay) |
| z0 | N(0, 1/128 I) | N(0, I), the distribution G was trained on; ``init_std`` sets the scale |
| output | G(z) of the restart with the lowest error, computed before the last update | the same |

Each image's restarts are drawn from its own generator seeded by (seed, key), key its index in the caller's set, so
a result does not depend on how the images are batched. The generator runs in eval mode (BatchNorm's running
statistics), so an image's reconstruction does not depend on the others in its batch either.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from diffdefense.training.models.gan import IMAGE_SHAPE


@dataclass(frozen=True)
class DefenseGANSettings:
    """steps: L, gradient steps per restart; restarts: R; lr and momentum: the optimiser's (momentum SGD as
    TensorFlow's MomentumOptimizer runs it); lr_decay: x0.1 after ceil(0.8 L) steps; init_std: z0's scale."""

    steps: int = 200
    restarts: int = 10
    lr: float = 10.0
    momentum: float = 0.7
    lr_decay: bool = False
    init_std: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "restarts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {name} to be a whole number >= 1, but got {value!r}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"Expected a finite learning rate > 0, but got {self.lr!r}.")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"Expected a momentum in [0, 1), but got {self.momentum!r}.")
        if not (math.isfinite(self.init_std) and self.init_std > 0):
            raise ValueError(f"Expected a finite init_std > 0, but got {self.init_std!r}.")

    def learning_rate(self, step: int) -> float:
        if not self.lr_decay:
            return self.lr
        return self.lr * 0.1 ** (step // math.ceil(0.8 * self.steps))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def generator_evaluations(self) -> int:
        """Generator forward passes per input (each with a backward pass but the last)."""
        return self.steps * self.restarts


PRESETS = {"paper": DefenseGANSettings(), "cheap": DefenseGANSettings(steps=50, restarts=4)}


@dataclass(frozen=True)
class GANReconstruction:
    """images (B, 1, 28, 28) in [0, 1]: G(z*); latents (B, latent_dim): z*; errors (B,): its mean squared error to
    the input (the detection score); restart_errors (B, R): every restart's error at the end."""

    images: torch.Tensor
    latents: torch.Tensor
    errors: torch.Tensor
    restart_errors: torch.Tensor


def check_images(images: torch.Tensor) -> None:
    """A ValueError, saying what came, unless images is a float tensor (B, 1, 28, 28) of finite values in [0, 1]."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ValueError(f"Expected a float tensor of images, but got {type(images).__name__}.")
    if images.dim() != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE or images.shape[0] == 0:
        raise ValueError(f"Expected images of shape (B, 1, 28, 28) with B >= 1, but got {tuple(images.shape)}.")
    if not torch.isfinite(images).all():
        raise ValueError("Expected finite images, but some pixels are NaN or infinite.")
    low, high = images.min().item(), images.max().item()
    if low < 0.0 or high > 1.0:
        raise ValueError(f"Expected pixels in [0, 1], but they span [{low:.4g}, {high:.4g}].")


def initial_latents(settings: DefenseGANSettings, keys: np.ndarray, latent_dim: int) -> torch.Tensor:
    """(B R, latent_dim): the R restarts of each image, drawn from a generator seeded by (seed, key)."""
    rows = [
        np.random.default_rng([settings.seed, int(key)]).standard_normal((settings.restarts, latent_dim))
        for key in keys
    ]
    return torch.from_numpy(np.concatenate(rows).astype(np.float32) * np.float32(settings.init_std))


class DefenseGAN:
    """reconstruct(x) projects a batch onto the generator's range; the generator runs on B x R latents at once."""

    def __init__(self, generator: nn.Module, settings: DefenseGANSettings | None = None) -> None:
        self.generator = generator.eval().requires_grad_(False)
        self.settings = settings or DefenseGANSettings()
        self.latent_dim = generator.latent_dim

    def reconstruct(self, images: torch.Tensor, keys: np.ndarray | None = None) -> GANReconstruction:
        """images (B, 1, 28, 28) float32 in [0, 1]; keys (B,): each image's index in the caller's set (default
        0 .. B-1), which with the seed fixes its restarts."""
        check_images(images)
        s, batch = self.settings, images.shape[0]
        keys = np.arange(batch) if keys is None else np.asarray(keys)
        if keys.shape != (batch,):
            raise ValueError(f"Expected one key per image ({batch}), but got keys of shape {keys.shape}.")
        target = images.repeat_interleave(s.restarts, dim=0)  # (B R, 1, 28, 28), an image's restarts together
        z = initial_latents(s, keys, self.latent_dim)
        velocity = torch.zeros_like(z)
        for step in range(s.steps):
            z.requires_grad_(True)
            with torch.enable_grad():
                out = self.generator(z)
                per_restart = (out - target).pow(2).flatten(1).mean(1)  # (B R,)
                if step == s.steps - 1:
                    break  # the official code's output: the images before the last update
                # Restarts are independent, so the gradient of the sum is each one's own gradient.
                (grad,) = torch.autograd.grad(per_restart.sum(), z)
            with torch.no_grad():
                velocity = s.momentum * velocity + grad
                z = z - s.learning_rate(step) * velocity
        restart_losses = per_restart.detach().view(batch, s.restarts)
        best = restart_losses.argmin(dim=1)
        pick = torch.arange(batch) * s.restarts + best
        return GANReconstruction(
            images=out.detach()[pick],
            latents=z.detach()[pick],
            errors=restart_losses[torch.arange(batch), best],
            restart_errors=restart_losses,
        )
