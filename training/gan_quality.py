"""The shipped WGAN generator's samples judged by the shipped Model A, as the DDPM's are (training/quality.py).

    python -m diffdefense.training.gan_quality --dataset mnist -n 1000 --seed 0 --out docs/results/mnist_wgan_generator

writes samples.png (the first 64) and quality.json (class shares, mean top-class probability).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from diffdefense.training.loading import load_generator
from diffdefense.training.quality import judged_by_model_a


def generator_quality(dataset: str, n: int, seed: int, grid_path: Path) -> dict:
    generator = load_generator(dataset)
    z = torch.randn(n, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        images = generator(z)
    return {
        "dataset": dataset,
        "samples": n,
        "seed": seed,
        "sampler": "G(z), z ~ N(0, I), generator in eval mode",
        **judged_by_model_a(dataset, images, grid_path),
    }


@click.command()
@click.option("--dataset", default="mnist", show_default=True)
@click.option("-n", "--num-samples", type=click.IntRange(min=64), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def main(dataset: str, num_samples: int, seed: int, out: Path) -> None:
    """Sample the shipped generator: a 64-image grid and the shipped Model A's verdict on the samples."""
    result = generator_quality(dataset, num_samples, seed, out / "samples.png")
    (out / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
