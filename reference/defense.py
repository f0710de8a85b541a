"""Reference DiffDefense in PyTorch: latent optimisation through a respaced reverse chain.

Silva et al. 2023, arXiv 2309.03702, Algorithm 1; the official code's choices are in
docs/official_code_notes.md. Images in, images out: (B, 1, 28, 28) float32 in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from diffdefense.draws import Draws, draw
from diffdefense.respace import ReverseChain, reverse_chain
from diffdefense.schedule import NoiseSchedule
from diffdefense.settings import DefenseSettings


@dataclass(frozen=True)
class Reconstruction:
    """images (B, 1, 28, 28) in [0, 1]: the best candidate's output; latents (B, 1, 28, 28): its z;
    errors (B,): its mean squared error to the input (the detection score); candidate_errors (B, R): every
    candidate's. The names of the runtime's Reconstruction."""

    images: torch.Tensor
    latents: torch.Tensor
    errors: torch.Tensor
    candidate_errors: torch.Tensor


def to_image(x: torch.Tensor, output_map: str) -> torch.Tensor:
    """Chain output on the model's [-1, 1] scale -> image in [0, 1]."""
    unit = (x + 1.0) / 2.0
    return torch.sigmoid(unit) if output_map == "sigmoid" else unit.clamp(0.0, 1.0)


class ReferenceDefense:
    """reconstruct(x) runs Algorithm 1 on a batch; the U-Net is called on B x R candidates at once."""

    def __init__(self, unet: nn.Module, schedule: NoiseSchedule, settings: DefenseSettings) -> None:
        settings.check_trained_timesteps(getattr(unet, "trained_timesteps", None))  # set by load_unet
        self.unet = unet.eval().requires_grad_(False)
        self.schedule = schedule
        self.settings = settings
        self.chain: ReverseChain = reverse_chain(schedule, settings.start_step, settings.num_steps, settings.eta)
        # the refining pass's chain: the same T* steps, respaced from its own start
        self.refine_chain = reverse_chain(schedule, settings.refine_start, settings.num_steps, settings.eta)

    def run_chain(
        self, z: torch.Tensor, noise: np.ndarray, track_unet: bool = False, chain: ReverseChain | None = None
    ) -> torch.Tensor:
        """z (N, 1, 28, 28) at the chain's start -> x_0 on the model scale. noise: (T*, N, 1, 28, 28).

        track_unet: keep the U-Net in the autograd graph (full gradients); otherwise eps is a constant
        and x_0 depends on z only through the affine coefficients. chain: another chain than the settings' (the
        refining pass's).
        """
        chain = chain or self.chain
        x = z
        for i, t in enumerate(chain.timesteps):
            t_batch = torch.full((x.shape[0],), int(t), dtype=torch.long)
            with torch.set_grad_enabled(track_unet and torch.is_grad_enabled()):
                eps = self.unet(x, t_batch)
            # x_prev = a x + b eps + s n  (DDIM formula 12; eta = 1 is the DDPM step)
            x = chain.a[i] * x + chain.b[i] * eps + chain.s[i] * torch.from_numpy(noise[i]).to(x.dtype)
        return x

    def with_settings(self, settings: DefenseSettings) -> ReferenceDefense:
        """The same U-Net and schedule under other settings (another seed, say)."""
        return ReferenceDefense(self.unet, self.schedule, settings)

    @property
    def straight_through_gain(self) -> float:
        """d x_0 / d z with eps held constant: the product of the steps' a coefficients (a scalar)."""
        return float(np.prod(self.chain.a))

    def reconstruct(
        self, images: torch.Tensor, draws: Draws | None = None, differentiable: bool = False
    ) -> Reconstruction:
        """Algorithm 1 on images (B, 1, 28, 28) in [0, 1].

        differentiable: keep the whole optimisation in the graph (inner gradients with create_graph), so
        that the reconstruction can be differentiated with respect to the input: the true gradient that
        adaptive attacks use. The U-Net is then always in the graph, and in 'full' mode the outer gradient
        also runs through the U-Net's own backward pass (double backward).
        """
        s = self.settings
        batch, shape = images.shape[0], tuple(images.shape[1:])
        draws = draws or draw(s, batch, shape)
        target = images.repeat_interleave(s.num_candidates, dim=0)  # (B R, 1, 28, 28), candidates of an image together
        z = torch.from_numpy(draws.latents.reshape(-1, *shape).copy()).to(images.dtype)
        if s.latent_init != "noise":  # a canvas diffused to the start level, x_s = c0 (2 x - 1) + c1 n: the input
            canvas = target if s.latent_init == "input" else 0.0  # or all background ('blank')
            z = self.schedule.q_sample(2.0 * canvas - 1.0, s.start_step, z)
            z = z if differentiable else z.detach()
        z = z.requires_grad_(True) if not z.requires_grad else z
        adam = FunctionalAdam(s.adam_betas)
        rates = s.learning_rates()
        full = s.gradient == "full"

        for run in range(s.iterations):
            noise = draws.step_noise(run).reshape(s.num_steps, -1, *shape)
            last = run == s.iterations - 1
            # The updates need gradients whatever the caller's grad mode; the last run needs none unless
            # the caller differentiates through it.
            with torch.set_grad_enabled(differentiable or not last):
                x0 = self.run_chain(z, noise, track_unet=full or differentiable)
                out = to_image(x0, s.output_map)
                per_candidate = (out - target).pow(2).flatten(1).mean(1)  # (B R,)
                if not last:
                    # Candidates are independent, so the gradient of the sum is each one's own gradient.
                    if full:
                        (grad,) = torch.autograd.grad(per_candidate.sum(), z, create_graph=differentiable)
                    else:  # the official code's gradient: the U-Net's Jacobian left out
                        (grad_x0,) = torch.autograd.grad(per_candidate.sum(), x0, create_graph=differentiable)
                        grad = self.straight_through_gain * grad_x0
                    z = adam.step(z, grad, rates[run])
                    if not differentiable:
                        z = z.detach().requires_grad_(True)

        candidate_losses = per_candidate.view(batch, s.num_candidates)
        best = candidate_losses.detach().argmin(dim=1)
        pick = torch.arange(batch) * s.num_candidates + best
        keep = (lambda t: t) if differentiable else torch.Tensor.detach
        image = out[pick]
        if s.refine:
            with torch.set_grad_enabled(differentiable):
                image = self.refine(image, draws.refine_noise, track_unet=differentiable)
        return Reconstruction(
            images=keep(image),
            latents=z.detach()[pick],
            errors=keep(candidate_losses[torch.arange(batch), best]),
            candidate_errors=candidate_losses.detach(),
        )

    def refine(self, images: torch.Tensor, refine_noise: np.ndarray, track_unet: bool = False) -> torch.Tensor:
        """settings.refine's pass: images (B, 1, 28, 28) in [0, 1] diffused to the pass's start level with
        refine_noise[0], then its T* steps with refine_noise[1:], mapped back by 'clip'."""
        z = self.schedule.q_sample(
            2.0 * images - 1.0, self.settings.refine_start, torch.from_numpy(refine_noise[0]).to(images.dtype)
        )
        x0 = self.run_chain(z, refine_noise[1:], track_unet=track_unet, chain=self.refine_chain)
        return to_image(x0, "clip")


class FunctionalAdam:
    """Adam (Kingma and Ba 2015, Algorithm 1) as tensor arithmetic, the same as torch.optim.Adam with
    its defaults but able to stay in the autograd graph."""

    def __init__(self, betas: tuple[float, float], eps: float = 1e-8) -> None:
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.m = self.v = None
        self.t = 0

    def step(self, z: torch.Tensor, grad: torch.Tensor, lr: float) -> torch.Tensor:
        self.t += 1
        self.m = grad * (1 - self.beta1) if self.m is None else self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = (
            grad * grad * (1 - self.beta2) if self.v is None else self.beta2 * self.v + (1 - self.beta2) * grad * grad
        )
        m_hat = self.m / (1 - self.beta1**self.t)
        # clamp: where a gradient is exactly 0 (clipped pixels), sqrt's slope at 0 would put NaN into the
        # gradients of a differentiable reconstruction; the value moves by at most 1e-15, far below eps.
        denominator = (self.v / (1 - self.beta2**self.t)).clamp_min(1e-30).sqrt() + self.eps
        return z - lr * m_hat / denominator
