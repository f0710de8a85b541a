"""Runtime against PyTorch reference on the same seeds and settings, on real test images, clean and attacked.

    python tools/parity.py --dataset mnist -n 500 --preset paper --out docs/results/parity_mnist_paper.json

Reports the largest absolute difference between the two reconstructions, per image and overall, and how often the
two agree on the label. The attacked images are white-box PGD (eps 0.3) against the shipped Model A.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import torch
from tqdm import tqdm

from diffdefense.data import load_dataset
from diffdefense.reference.attacks import run_attack
from diffdefense.reference.defense import ReferenceDefense
from diffdefense.reference.evaluation import pick_indices
from diffdefense.runtime.defender import Defender
from diffdefense.settings import PRESETS
from diffdefense.shipped import bundle_dir
from diffdefense.training.loading import load_classifier, load_unet


def compare(defender: Defender, reference: ReferenceDefense, classifier, images: np.ndarray, batch: int) -> dict:
    diffs, same = [], []
    for i in tqdm(range(0, len(images), batch), leave=False, disable=None):
        chunk = images[i : i + batch]
        runtime = defender(chunk)
        with torch.no_grad():
            ref = reference.reconstruct(torch.from_numpy(chunk))
            ref_labels = classifier(ref.images).argmax(1).numpy()
        diffs.append(np.abs(runtime.reconstructions - ref.images.numpy()).reshape(len(chunk), -1).max(1))
        same.append(runtime.labels == ref_labels)
    diffs, same = np.concatenate(diffs), np.concatenate(same)
    return {
        "images": len(images),
        "max_abs_difference": float(diffs.max()),
        "images_within_1e-3": float((diffs <= 1e-3).mean()),
        "same_label": float(same.mean()),
        "median_abs_difference": float(np.median(diffs)),
    }


@click.command()
@click.option("--dataset", type=click.Choice(["mnist", "kmnist"]), default="mnist", show_default=True)
@click.option("-n", "--num-images", type=int, default=500, show_default=True)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="paper", show_default=True)
@click.option("--batch-size", type=int, default=25, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(dataset, num_images, preset, batch_size, seed, out) -> None:
    settings = PRESETS[preset].with_(seed=seed)
    test = load_dataset(dataset, "test")
    indices = pick_indices(len(test), num_images, seed)
    images, labels = test.subset(indices).as_tensors()
    classifier = load_classifier(dataset, "model_a")
    attacked = run_attack("PGD", classifier, images, labels, seed=seed).numpy()
    unet, schedule = load_unet(dataset)
    # float32: the reference computes in float32, and the mnist bundle would otherwise run its default int8 graphs
    defender = Defender(bundle_dir(dataset), settings, precision="float32")
    reference = ReferenceDefense(unet, schedule, settings)
    started = time.perf_counter()
    result = {
        "command": f"python tools/parity.py --dataset {dataset} -n {num_images} --preset {preset} --seed {seed}",
        "data": f"{test.name}, {num_images} images chosen with seed {seed}",
        "indices": indices.tolist(),
        "settings": settings.to_dict(),
        "attack": "PGD eps 0.3 white box on Model A",
        "clean": compare(defender, reference, classifier, images.numpy(), batch_size),
        "attacked": compare(defender, reference, classifier, attacked, batch_size),
    }
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo(json.dumps({k: result[k] for k in ("clean", "attacked")}, indent=2))
