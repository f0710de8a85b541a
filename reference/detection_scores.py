"""Detection scores beyond the best candidate's error, compared by AUROC on attacked *training* images.

    python tools/detection_scores.py --dataset mnist -n 200 --unet unet_bn --attack-cache runs/tune_mnist_bn/attacks \
        --out docs/results/detection_scores_mnist_train200.json

The attacked images come from the preset sweep's cache (tools/tune_preset.py: same images, seed and classifier); an
attack missing from it is run on Model A and added to it.

The defence flags an input when its best candidate's mean squared error (before the refining pass) is high. Other
statistics of the same call may separate attacked from clean inputs better where that one is weak (minimal-norm
attacks such as EAD and DeepFool change few pixels, so a mean over 784 pixels hides them): the refined image's
error, its largest pixel difference, and how the R candidates' errors spread. Each is computed from one reference
defence call per image.
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
from diffdefense.detection_threshold import refined_l1
from diffdefense.machine import cpu_model
from diffdefense.reference.attacks import run_attack
from diffdefense.reference.defense import Reconstruction, ReferenceDefense
from diffdefense.reference.evaluation import ArrayCache, pick_indices
from diffdefense.settings import PRESETS
from diffdefense.shipped import UNET_NAMES
from diffdefense.training.loading import load_classifier, load_unet

ATTACKS = ("FGSM", "PGD", "DeepFool", "Square", "AutoAttack", "EAD")


def jensen_shannon(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats) between rows of two probability tables (B, K)."""
    m = (p + q) / 2

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * (a.clamp_min(1e-12).log() - b.clamp_min(1e-12).log())).sum(1)

    return (kl(p, m) + kl(q, m)) / 2


def detection_scores(
    images: torch.Tensor, result: Reconstruction, classifier: torch.nn.Module | None = None, top_pixels: int = 20
) -> dict[str, np.ndarray]:
    """Scores (B,) per statistic for images (B, 1, 28, 28) and their reconstruction; higher: more likely attacked.

    best_mse: the best candidate's error before the refining pass (the defence's score today); refined_mse and
    refined_l1: the returned (refined) image's mean squared and absolute error; refined_max_pixel and
    refined_top_pixels: its largest pixel difference and the mean of its `top_pixels` largest (per-pixel
    statistics: minimal-norm attacks change few pixels); candidate_mean and candidate_spread: the mean and standard
    deviation of the R candidates' errors; with a classifier, classifier_divergence: the Jensen-Shannon divergence
    between its class probabilities on the input and on the reconstruction (an attack that flips the label and is
    undone by the defence moves them apart; MagNet's detector uses the same statistic)."""
    losses = result.candidate_errors.detach()
    scores = scores_of_output(images, result.images.detach(), result.errors.detach(), classifier, top_pixels)
    scores["candidate_mean"] = losses.mean(1).double().numpy()
    scores["candidate_spread"] = (losses.std(1) if losses.shape[1] > 1 else torch.zeros(len(losses))).double().numpy()
    return scores


def scores_of_output(
    images: torch.Tensor,
    reconstructions: torch.Tensor,
    best_errors: torch.Tensor,
    classifier: torch.nn.Module | None = None,
    top_pixels: int = 20,
) -> dict[str, np.ndarray]:
    """The scores that need only what the defence returns (the refined images and the best candidate's error), so
    that they can also be computed from an evaluation's cached reconstructions."""
    difference = (reconstructions - images).flatten(1)
    scores = {
        "best_mse": best_errors,
        "refined_mse": difference.pow(2).mean(1),
        "refined_l1": torch.from_numpy(refined_l1(images.numpy(), reconstructions.numpy())),  # the runtime's score
        "refined_max_pixel": difference.abs().amax(1),
        "refined_top_pixels": difference.abs().topk(top_pixels, dim=1).values.mean(1),
    }
    if classifier is not None:
        with torch.no_grad():
            p, q = (torch.softmax(classifier(x), 1) for x in (images, reconstructions))
        scores["classifier_divergence"] = jensen_shannon(p, q)
    return {name: score.double().numpy() for name, score in scores.items()}


def scores_of(
    defense: ReferenceDefense, images: np.ndarray, batch_size: int, classifier: torch.nn.Module
) -> dict[str, np.ndarray]:
    parts = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size])
        with torch.no_grad():
            parts.append(detection_scores(batch, defense.reconstruct(batch), classifier))
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
    help="Cache of attacked training images, shared with tools/tune_preset.py (its --out DIR: DIR/attacks); "
    "missing attacks are run and added.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="JSON to write.")
def main(dataset, num_images, preset, unet, seed, attacks, attack_cache, batch_size, out) -> None:
    """AUROC of each detection score, per attack, on attacked training images."""
    train = load_dataset(dataset, "train")
    indices = pick_indices(len(train), num_images, seed)
    images, labels = train.subset(indices).as_tensors()
    cache = ArrayCache(attack_cache, {"dataset": dataset, "split": "train", "indices": indices.tolist()})
    model_a = load_classifier(dataset, "model_a")
    sets = {"clean": images.numpy()}
    for name in attacks:
        adversarial = cache.get(name, lambda a=name: run_attack(a, model_a, images, labels, seed).numpy())
        sets[name] = np.clip(adversarial, 0.0, 1.0)
    defense = ReferenceDefense(*load_unet(dataset, name=unet), PRESETS[preset].with_(seed=seed))
    started = time.perf_counter()
    scores = {name: scores_of(defense, batch, batch_size, model_a) for name, batch in sets.items()}
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
    write_and_print(record, out)


def write_and_print(record: dict, out: Path) -> None:
    """The record as JSON at out, and its AUROC table (attack by score) on the terminal."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    table = record["auroc"]
    names = list(next(iter(table.values())))
    click.echo("attack      " + " ".join(f"{name:>17}" for name in names))
    for attack, row in table.items():
        click.echo(f"{attack:<11} " + " ".join(f"{row[name]:17.3f}" for name in names))
    click.echo(f"written {out}")
