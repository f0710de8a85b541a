"""Training settings with their defaults in one place (torch-free, so the CLI reads them cheaply)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassifierConfig:
    dataset: str = "mnist"
    arch: str = "model_a"
    epochs: int = 8
    batch_size: int = 128
    lr: float = 1e-3
    augment: bool = False
    seed: int = 0
    extra_train: str | None = None  # a data folder whose training split is added (data.load_training_set)


@dataclass(frozen=True)
class DDPMConfig:
    dataset: str = "mnist"
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    num_steps: int = 100
    beta_start: float = 1e-3  # improved-diffusion's linear schedule for T = 100 (see NoiseSchedule.linear)
    beta_end: float = 0.2
    channels: tuple[int, int, int] = (16, 32, 64)
    norm: str = "group"  # 'group' ships as 'unet'; 'batch' (folded into the convolutions at export) as 'unet_bn'
    activation: str = "silu"  # 'relu': int8 fuses it into the convolution before it ('unet_bn_relu')
    seed: int = 0
    extra_train: str | None = None  # a data folder whose training split is added (data.load_training_set)
    init_from: str | None = None  # a finished run folder whose weights (and EMA) this run starts from
    # Train on t < max_timestep only (None: all T): a denoiser for the defence's start level and below, which gives
    # up sampling from noise (the defence starts at index 14 and never calls the net above it).
    max_timestep: int | None = None
    init_from_shipped: str | None = None  # a shipped U-Net of the same shape whose (EMA) weights this run starts from
    # A shipped U-Net as teacher: the loss is the distance to its noise prediction rather than to the drawn noise
    # (the teacher's prediction estimates E[noise | x_t], the minimiser of L_simple, with none of the draw's variance).
    distill_from: str | None = None


@dataclass(frozen=True)
class WGANConfig:
    """WGAN-GP (Gulrajani et al. 2017) as Defense-GAN trains its generator: Adam with betas (0.5, 0.9), 5 critic
    steps per generator step, gradient penalty 10. An epoch is one pass of the critic over the training images."""

    dataset: str = "mnist"
    epochs: int = 5
    batch_size: int = 32
    lr: float = 2e-4  # Defense-GAN's 1e-4 ran 30,000 generator steps; this budget allows about 2,000
    critic_steps: int = 5
    gradient_penalty: float = 10.0
    latent_dim: int = 128
    width: int = 32
    seed: int = 0
