"""Make the sample images that ship with the project: clean test images and PGD-attacked ones.

    python tools/make_samples.py --dataset mnist

Writes diffdefense/samples/<dataset>.npz (images float32 (N, 1, 28, 28) in [0, 1], labels, attacked) and a
JSON record of how it was made. The attack is white-box PGD against the shipped Model A (eps 0.3, 20 steps).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import torch

from diffdefense.data import load_dataset
from diffdefense.reference.attacks import run_attack
from diffdefense.reference.evaluation import pick_indices
from diffdefense.shipped import SAMPLES_DIR
from diffdefense.training.loading import load_classifier


@click.command()
@click.option("--dataset", type=click.Choice(["mnist", "kmnist"]), default="mnist", show_default=True)
@click.option("--clean", type=int, default=8, show_default=True)
@click.option("--attacked", type=int, default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=SAMPLES_DIR, show_default=True)
def main(dataset: str, clean: int, attacked: int, seed: int, out: Path) -> None:
    test = load_dataset(dataset, "test")
    indices = pick_indices(len(test), clean + attacked, seed)
    images, labels = test.subset(indices).as_tensors()
    adversarial = run_attack("PGD", load_classifier(dataset, "model_a"), images[clean:], labels[clean:], seed=seed)
    all_images = torch.cat([images[:clean], adversarial]).numpy().astype(np.float32)
    flags = np.array([False] * clean + [True] * attacked)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out / f"{dataset}.npz", images=all_images, labels=labels.numpy().astype(np.int64), attacked=flags
    )
    record = {
        "command": f"python tools/make_samples.py --dataset {dataset} --clean {clean} --attacked {attacked} "
        f"--seed {seed}",
        "data": test.name,
        "indices": indices.tolist(),
        "attack": "PGD eps 0.3, step 0.01, 20 steps, 5 restarts, white box on the shipped Model A",
        "first_clean": clean,
    }
    (out / f"{dataset}.json").write_text(json.dumps(record, indent=2) + "\n")
    click.echo(f"Wrote {out / f'{dataset}.npz'}")
