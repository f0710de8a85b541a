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
    """image (B, 1, 28, 28) in [0, 1]: the best candidate's output; latent (B, 1, 28, 28): its z;
    loss (B,): its mean squared error to the input (the detection score); candidate_losses (B, R)."""

    image: torch.Tensor
    latent: torch.Tensor
    loss: torch.Tensor
    candidate_losses: torch.Tensor


def to_image(x: torch.Tensor, output_map: str) -> torch.Tensor:
    """Chain output on the model's [-1, 1] scale -> image in [0, 1]."""
    unit = (x + 1.0) / 2.0
    return torch.sigmoid(unit) if output_map == "sigmoid" else unit.clamp(0.0, 1.0)


class ReferenceDefense:
    """reconstruct(x) runs Algorithm 1 on a batch; the U-Net is called on B x R candidates at once."""

    def __init__(self, unet: nn.Module, schedule: NoiseSchedule, settings: DefenseSettings) -> None:
        self.unet = unet.eval().requires_grad_(False)
        self.settings = settings
        self.chain: ReverseChain = reverse_chain(schedule, settings.start_step, settings.num_steps, settings.eta)

    def run_chain(self, z: torch.Tensor, noise: np.ndarray) -> torch.Tensor:
        """z (N, 1, 28, 28) at the chain's start -> x_0 on the model scale. noise: (T*, N, 1, 28, 28).

        Straight-through: eps is computed without a graph, so d x_0 / d z = prod(a), as the official code.
        Full: the U-Net is in the graph and its backward pass runs too.
        """
        x = z
        full = self.settings.gradient == "full"
        for i, t in enumerate(self.chain.timesteps):
            t_batch = torch.full((x.shape[0],), int(t), dtype=torch.long)
            with torch.set_grad_enabled(full and torch.is_grad_enabled()):
                eps = self.unet(x, t_batch)
            # x_prev = a x + b eps + s n  (DDIM formula 12; eta = 1 is the DDPM step)
            x = self.chain.a[i] * x + self.chain.b[i] * eps + self.chain.s[i] * torch.from_numpy(noise[i]).to(x.dtype)
        return x

    def reconstruct(self, images: torch.Tensor, draws: Draws | None = None) -> Reconstruction:
        s = self.settings
        batch = images.shape[0]
        draws = draws or draw(s, batch, tuple(images.shape[1:]))
        target = images.repeat_interleave(s.num_candidates, dim=0)  # (B R, 1, 28, 28), candidate-major per image
        z = torch.from_numpy(draws.latents.reshape(-1, *images.shape[1:]).copy()).requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=s.lr, betas=s.adam_betas)
        rates = s.learning_rates()

        for run in range(s.iterations):
            noise = draws.step_noise(run).reshape(s.num_steps, -1, *images.shape[1:])
            last = run == s.iterations - 1
            with torch.set_grad_enabled(not last):
                out = to_image(self.run_chain(z, noise), s.output_map)
                per_candidate = (out - target).pow(2).flatten(1).mean(1)  # (B R,)
            if last:
                break
            for group in optimizer.param_groups:
                group["lr"] = rates[run]
            optimizer.zero_grad(set_to_none=True)
            per_candidate.sum().backward()  # candidates are independent: each gets its own gradient
            optimizer.step()

        candidate_losses = per_candidate.detach().view(batch, s.num_candidates)
        best = candidate_losses.argmin(dim=1)
        pick = torch.arange(batch) * s.num_candidates + best
        return Reconstruction(
            image=out.detach()[pick],
            latent=z.detach()[pick],
            loss=candidate_losses[torch.arange(batch), best],
            candidate_losses=candidate_losses,
        )
