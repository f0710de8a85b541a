"""Detection scores beyond the best candidate's error, compared by AUROC on attacked *training* images.

    python tools/detection_scores.py --dataset mnist -n 200 --unet unet_bn --attack-cache runs/tune_mnist_bn/attacks \
        --out docs/results/detection_scores_mnist_train200.json

The defence flags an input when its best candidate's mean squared error (before the refining pass) is high. Other
statistics of the same call may separate attacked from clean inputs better where that one is weak (minimal-norm
attacks such as EAD and DeepFool change few pixels, so a mean over 784 pixels hides them): the refined image's
error, its largest pixel difference, and how the R candidates' errors spread. Each is computed from one reference
defence call per image; the attacks come from the preset sweep's cache (same images, seed and classifier).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from diffdefense.data import load_dataset
from diffdefense.machine import cpu_model
from diffdefense.reference.defense import Reconstruction, ReferenceDefense
from diffdefense.reference.evaluation import ArrayCache, pick_indices
from diffdefense.settings import PRESETS
from diffdefense.shipped import UNET_NAMES
from diffdefense.training.loading import load_unet

ATTACKS = ("FGSM", "PGD", "DeepFool", "Square", "AutoAttack", "EAD")


def detection_scores(images: torch.Tensor, result: Reconstruction) -> dict[str, np.ndarray]:
    """Scores (B,) per statistic for images (B, 1, 28, 28) and their reconstruction; higher: more likely attacked.

    best_mse: the best candidate's error before the refining pass (the defence's score today); refined_mse and
    refined_l1: the returned (refined) image's mean squared and absolute error; refined_max_pixel: its largest pixel
    difference (a per-pixel statistic); candidate_mean and candidate_spread: the mean and standard deviation of the
    R candidates' errors."""
    difference = (result.images - images).flatten(1).detach()
    losses = result.candidate_errors.detach()
    scores = {
        "best_mse": result.errors.detach(),
        "refined_mse": difference.pow(2).mean(1),
        "refined_l1": difference.abs().mean(1),
        "refined_max_pixel": difference.abs().amax(1),
        "candidate_mean": losses.mean(1),
        "candidate_spread": losses.std(1) if losses.shape[1] > 1 else torch.zeros(len(losses)),
    }
    return {name: score.double().numpy() for name, score in scores.items()}


def scores_of(defense: ReferenceDefense, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    parts = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size])
        with torch.no_grad():
            parts.append(detection_scores(batch, defense.reconstruct(batch)))
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def auroc_table(scores: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """{attack: {score: AUROC of that attack's scores against the clean ones}}."""
    clean = scores["clean"]
    table = {}
    for attack, attacked in scores.items():
        if attack == "clean":
            continue
        table[attack] = {}
        for name, values in attacked.items():
            labels = np.r_[np.zeros(len(clean[name])), np.ones(len(values))]
            table[attack][name] = round(float(roc_auc_score(labels, np.r_[clean[name], values])), 4)
    return table


@click.command()
@click.option("--dataset", type=click.Choice(["mnist", "kmnist"]), default="mnist", show_default=True)
@click.option("-n", "--num-images", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="default", show_default=True)
@click.option("--unet", type=click.Choice(UNET_NAMES), default="unet_bn", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--attack", "attacks", multiple=True, default=ATTACKS, show_default=True)
@click.option(
    "--attack-cache",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The preset sweep's cache of attacked training images (tools/tune_preset.py --out DIR: DIR/attacks).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="JSON to write.")
def main(dataset, num_images, preset, unet, seed, attacks, attack_cache, batch_size, out) -> None:
    """AUROC of each detection score, per attack, on attacked training images."""
    train = load_dataset(dataset, "train")
    indices = pick_indices(len(train), num_images, seed)
    images = train.subset(indices).float_images()
    cache = ArrayCache(attack_cache, {"dataset": dataset, "split": "train", "indices": indices.tolist()})
    sets = {"clean": images}
    for name in attacks:
        if not (attack_cache / f"{name}.npz").is_file():
            raise click.ClickException(f"{attack_cache} has no {name} set: make it with tools/tune_preset.py first.")
        sets[name] = np.clip(cache.load(name), 0.0, 1.0)
    defense = ReferenceDefense(*load_unet(dataset, name=unet), PRESETS[preset].with_(seed=seed))
    started = time.perf_counter()
    scores = {name: scores_of(defense, batch, batch_size) for name, batch in sets.items()}
    table = auroc_table(scores)
    record = {
        "what": "AUROC of detection scores, attacked against clean training images (never test images)",
        "data": f"{dataset} train, {len(indices)} images chosen with seed {seed}",
        "preset": preset,
        "unet": unet,
        "auroc": table,
        "seconds": round(time.perf_counter() - started, 1),
        "cpu": cpu_model(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    names = list(next(iter(table.values())))
    click.echo("attack      " + " ".join(f"{name:>17}" for name in names))
    for attack, row in table.items():
        click.echo(f"{attack:<11} " + " ".join(f"{row[name]:17.3f}" for name in names))
    click.echo(f"written {out}")
