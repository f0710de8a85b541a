"""Building the shipped PyTorch models from their checksummed safetensors files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from diffdefense import shipped
from diffdefense.schedule import NoiseSchedule
from diffdefense.training.models import CLASSIFIERS, UNet
from diffdefense.training.models.gan import Generator
from diffdefense.training.shipping import model_file


def _verified(dataset: str, name: str, weights_dir: Path | None) -> tuple[dict, dict]:
    path = shipped.verify_file(model_file(dataset, name), weights_dir)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return load_file(str(path)), metadata


def load_classifier(dataset: str, arch: str = "model_a", weights_dir: Path | None = None) -> torch.nn.Module:
    """A shipped classifier in eval mode: images (N, 1, 28, 28) in [0, 1] -> logits (N, 10)."""
    if arch not in CLASSIFIERS:
        raise ValueError(f"Expected a classifier in {sorted(CLASSIFIERS)}, but got {arch!r}.")
    state, _ = _verified(dataset, arch, weights_dir)
    model = CLASSIFIERS[arch]()
    model.load_state_dict(state)
    return model.eval()


UNETS = shipped.UNET_NAMES  # the GroupNorm net, the deployment-shaped BatchNorm nets (SiLU, ReLU), narrow ones


def load_unet(dataset: str, weights_dir: Path | None = None, name: str = "unet") -> tuple[UNet, NoiseSchedule]:
    """A shipped DDPM noise predictor (EMA weights) in eval mode, and the schedule it was trained on.

    name: 'unet' (GroupNorm), 'unet_bn' (BatchNorm, folded into the convolutions at export), 'unet_bn_relu' (the
    same with ReLU), 'unet_bn_small' (8-16-32 channels wide), 'unet_bn_small_t15' (that net trained on t < 15 only)
    or 'unet_bn_small_distilled' (that one distilled from 'unet_bn')."""
    if name not in UNETS:
        raise ValueError(f"Expected a U-Net in {list(UNETS)}, but got {name!r}.")
    state, metadata = _verified(dataset, name, weights_dir)
    model = UNet(
        tuple(json.loads(metadata["channels"])),
        norm=metadata.get("norm", "group"),
        activation=metadata.get("activation", "silu"),  # weights from before the choice of activation: SiLU
    )
    model.load_state_dict(state)
    spec = json.loads(metadata["schedule"])
    schedule = NoiseSchedule.linear(spec["num_steps"], spec["beta_start"], spec["beta_end"])
    # a net trained on t < N only (train ddpm --max-timestep): the defence refuses to start at or above N
    model.trained_timesteps = int(metadata.get("trained_timesteps", spec["num_steps"]))
    return model.eval(), schedule


def load_generator(dataset: str = "mnist", weights_dir: Path | None = None) -> Generator:
    """The shipped WGAN generator of the Defense-GAN baseline in eval mode: z (N, latent_dim) -> (N, 1, 28, 28)."""
    state, metadata = _verified(dataset, "generator", weights_dir)
    model = Generator(int(metadata["latent_dim"]), int(metadata["width"]))
    model.load_state_dict(state)
    return model.eval()
