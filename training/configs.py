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
    seed: int = 0
    init_from: str | None = None  # a finished run folder whose weights (and EMA) this run starts from
