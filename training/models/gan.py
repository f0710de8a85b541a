"""The WGAN generator and critic behind the Defense-GAN baseline (Samangouei et al., ICLR 2018, arXiv 1805.06605).

The shape of Defense-GAN's MNIST networks (those of Gulrajani et al.'s WGAN-GP, arXiv 1704.00028), at half their
width so that the generator ships in about 2 MB: a linear layer to 4 x 4, three 5 x 5 transposed convolutions to
8 (cropped to 7), 14 and 28 pixels, BatchNorm and ReLU in the generator, a sigmoid onto [0, 1]; the critic is three
5 x 5 stride-2 convolutions with LeakyReLU and no normalisation (the gradient penalty is per sample).
"""

from __future__ import annotations

import torch
from torch import nn

LATENT_DIM = 128
IMAGE_SHAPE = (1, 28, 28)


def _up(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    """A 5 x 5 transposed convolution that doubles the size (TensorFlow's 'SAME' deconvolution)."""
    return nn.ConvTranspose2d(c_in, c_out, 5, stride=2, padding=2, output_padding=1)


class Generator(nn.Module):
    """z (N, latent_dim) -> images (N, 1, 28, 28) in [0, 1]. Use it in eval mode (BatchNorm's running statistics)
    when reconstructing: the output of one image must not depend on the others in its batch."""

    def __init__(self, latent_dim: int = LATENT_DIM, width: int = 32) -> None:
        super().__init__()
        self.latent_dim, self.width = latent_dim, width
        self.project = nn.Sequential(nn.Linear(latent_dim, 4 * 4 * 4 * width), nn.BatchNorm1d(4 * 4 * 4 * width))
        self.to_7 = nn.Sequential(_up(4 * width, 2 * width), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.to_28 = nn.Sequential(_up(2 * width, width), nn.BatchNorm2d(width), nn.ReLU(), _up(width, 1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.project(z)).view(-1, 4 * self.width, 4, 4)
        return self.to_28(self.to_7(h)[:, :, :7, :7])  # 8 -> 7, as Defense-GAN's generator crops


class Critic(nn.Module):
    """images (N, 1, 28, 28) in [0, 1] -> scores (N,): the WGAN critic (unbounded; higher means more like data)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 5, stride=2, padding=2),  # 28 -> 14
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 5, stride=2, padding=2),  # 14 -> 7
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 5, stride=2, padding=2),  # 7 -> 4
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(4 * 4 * 4 * width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)
