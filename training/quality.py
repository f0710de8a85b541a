"""Measurements of the shipped models: classifier accuracy, DDPM sample quality, U-Net size and FLOPs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from diffdefense.data import load_dataset
from diffdefense.training.ddpm import random_noising, sample, to_model_range
from diffdefense.training.loading import load_classifier, load_unet
from diffdefense.training.models import UNet


def classifier_accuracy(dataset: str, arch: str, data_root: Path | None = None) -> dict:
    """Accuracy on the test split, and the mean top-class probability (the scale for judging DDPM samples)."""
    test = load_dataset(dataset, "test", data_root)
    x, y = test.as_tensors()
    model = load_classifier(dataset, arch)
    with torch.no_grad():
        probs = torch.cat([torch.softmax(model(x[i : i + 1000]), 1) for i in range(0, len(y), 1000)])
    return {
        "dataset": dataset,
        "arch": arch,
        "data": f"{test.name} ({len(y)} images)",
        "accuracy": (probs.argmax(1) == y).double().mean().item(),
        "mean_top_probability": probs.max(1).values.mean().item(),
    }


def unet_size(model: UNet | None = None) -> dict:
    """Parameters, and FLOPs per image as torch's FlopCounterMode counts them (conv and matmul; 2 per MAC)."""
    model = model or UNet()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.long))
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "flops_per_image": counter.get_total_flops(),
        "channels": list(model.channels),
    }


def save_grid(images: np.ndarray, path: Path, columns: int = 8) -> None:
    """(N, 1, 28, 28) in [0, 1] -> one PNG grid with 2-pixel gaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    rows = -(-n // columns)
    grid = np.ones((rows * 30 + 2, columns * 30 + 2), dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[2 + 30 * r : 30 + 30 * r, 2 + 30 * c : 30 + 30 * c] = image[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, grid, cmap="gray", vmin=0.0, vmax=1.0)


def judged_by_model_a(dataset: str, images: torch.Tensor, grid_path: Path) -> dict:
    """Generated images (n, 1, 28, 28) in [0, 1] judged by the shipped Model A: its class shares and mean top-class
    probability; the first 64 saved as a grid."""
    with torch.no_grad():
        probs = torch.softmax(load_classifier(dataset, "model_a")(images), dim=1)
    shares = torch.bincount(probs.argmax(1), minlength=10).double() / len(images)
    save_grid(images[:64].numpy(), grid_path)
    return {
        "class_shares": [round(v, 4) for v in shares.tolist()],
        "min_share": shares.min().item(),
        "max_share": shares.max().item(),
        "mean_top_probability": probs.max(1).values.mean().item(),
    }


def sample_quality(dataset: str, n: int, seed: int, grid_path: Path, unet_name: str = "unet") -> dict:
    """Draw n samples from a shipped DDPM; the shipped Model A's class shares and mean top-class probability."""
    unet, schedule = load_unet(dataset, name=unet_name)
    images = sample(unet, schedule, n, torch.Generator().manual_seed(seed))
    return {
        "dataset": dataset,
        "samples": n,
        "unet": unet_name,
        "seed": seed,
        "sampler": f"ancestral DDPM, {schedule.num_steps} steps, predicted x_0 clipped to [-1, 1] at each step",
        **judged_by_model_a(dataset, images, grid_path),
        "grid": str(grid_path),
    }


def noise_prediction_error(
    dataset: str, unet_name: str, n: int, seed: int, max_timestep: int | None = None, data_root: Path | None = None
) -> dict:
    """Mean squared error of a shipped U-Net's noise prediction on the first n test images (held-out for KMNIST),
    at timesteps drawn uniformly below max_timestep (all trained steps if None): L_simple, measured, not trained on.
    The same seed draws the same timesteps and noise for every U-Net, so the errors compare pair by pair."""
    test = load_dataset(dataset, "test", data_root)
    if not 1 <= n <= len(test):
        raise ValueError(f"Expected 1 <= n <= {len(test)} ({test.name}), but got n={n}.")
    x0 = to_model_range(test.as_tensors()[0][:n])
    unet, schedule = load_unet(dataset, name=unet_name)
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for start in range(0, n, 500):
            x_t, t, noise = random_noising(schedule, x0[start : start + 500], generator, max_timestep)
            total += (unet(x_t, t) - noise).pow(2).sum().item()
    return {
        "dataset": dataset,
        "unet": unet_name,
        "images": f"the first {n} of {test.name}",
        "timesteps": f"uniform over t < {max_timestep or schedule.num_steps}",
        "seed": seed,
        "noise_mse": total / x0.numel(),
    }


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
