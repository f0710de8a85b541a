"""Sweep defence settings on attacked *training* images, so that the test numbers stay untouched by tuning.

    python tools/tune_preset.py --dataset mnist -n 200 --out runs/tune_mnist \
        --try "num_steps=10" --try "num_candidates=3,iterations=3"

Each --try is a list of DefenseSettings overrides on top of --base. The attacks (on Model A alone, as the
paper's) run once and are cached in OUT; each candidate's accuracy per attack, clean accuracy and U-Net
evaluations per input go to OUT/sweep.json and print as a table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import torch

from diffdefense.data import load_dataset
from diffdefense.reference.attacks import run_attack
from diffdefense.reference.defense import ReferenceDefense
from diffdefense.reference.evaluation import ArrayCache, binarized, defend, pick_indices, predict
from diffdefense.settings import PRESETS, DefenseSettings, parse_overrides
from diffdefense.shipped import UNET_NAMES
from diffdefense.training.loading import load_classifier, load_unet

ATTACKS = ("FGSM", "PGD", "DeepFool", "Square", "AutoAttack", "EAD")


def attacked_training_sets(
    dataset: str, num_images: int, seed: int, attacks, cache_dir: Path
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """{'clean': images, attack: adversarial images} and the labels of num_images *training* images chosen with seed,
    each attack on Model A alone; the attacked sets are cached in cache_dir (made and reused by every sweep)."""
    train = load_dataset(dataset, "train")
    indices = pick_indices(len(train), num_images, seed)
    images, labels = (t.numpy() for t in train.subset(indices).as_tensors())
    model_a = load_classifier(dataset, "model_a")
    cache = ArrayCache(cache_dir, {"dataset": dataset, "split": "train", "indices": indices.tolist()})
    inputs, targets = torch.from_numpy(images), torch.from_numpy(labels)
    sets = {"clean": images}
    for name in attacks:
        sets[name] = cache.get(name, lambda a=name: run_attack(a, model_a, inputs, targets, seed).numpy())
    return sets, labels


def candidate_settings(base: str, tries) -> list[tuple[str, DefenseSettings]]:
    """Each --try's text and settings, all checked before any attack or defence runs."""
    try:
        return [(text, PRESETS[base].with_(**parse_overrides(text))) for text in tries or ("",)]
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--try") from err


@click.command()
@click.option("--dataset", type=click.Choice(["mnist", "kmnist"]), default="mnist", show_default=True)
@click.option("-n", "--num-images", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--base", type=click.Choice(sorted(PRESETS)), default="paper", show_default=True)
@click.option("--try", "tries", multiple=True, help="Overrides on --base, e.g. 'num_steps=10,lr=0.5' (repeat).")
@click.option("--attack", "attacks", multiple=True, default=ATTACKS, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--unet", type=click.Choice(UNET_NAMES), default="unet", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def main(dataset, num_images, base, tries, attacks, seed, unet, batch_size, out) -> None:
    """Accuracy of Model A after the defence, per attack, for each candidate setting."""
    candidates = candidate_settings(base, tries)
    inputs, labels = attacked_training_sets(dataset, num_images, seed, attacks, out / "attacks")
    model_a = load_classifier(dataset, "model_a")
    unet_name, (unet, schedule) = unet, load_unet(dataset, name=unet)
    images = inputs["clean"]
    sweep_path = out / "sweep.json"
    rows = json.loads(sweep_path.read_text()) if sweep_path.is_file() else []
    baseline = {k: round(100 * float((predict(model_a, binarized(v)) == labels).mean()), 1) for k, v in inputs.items()}
    click.echo(
        "   0 evals  " + " ".join(f"{k} {v:5.1f}" for k, v in baseline.items()) + "  [threshold 0.5, no diffusion]"
    )
    for text, settings in candidates:
        started = time.perf_counter()
        defense = ReferenceDefense(unet, schedule, settings)
        accuracy = {}
        for name, batch in inputs.items():
            recon = defend(defense, batch, batch_size, name)[:, :-1].reshape(batch.shape)
            accuracy[name] = round(100 * float((predict(model_a, recon) == labels).mean()), 1)
        row = {
            "base": base,
            "unet": unet_name,
            "overrides": text,
            "unet_evaluations": settings.unet_evaluations,
            "accuracy": accuracy,
            "threshold_0.5": baseline,
            "no_defense": {k: round(100 * float((predict(model_a, v) == labels).mean()), 1) for k, v in inputs.items()},
            "seconds_per_image": round((time.perf_counter() - started) / (len(inputs) * len(images)), 4),
            "settings": settings.to_dict(),
        }
        rows.append(row)
        sweep_path.write_text(json.dumps(rows, indent=1))
        cells = " ".join(f"{k} {v:5.1f}" for k, v in accuracy.items())
        click.echo(f"{settings.unet_evaluations:4d} evals  {cells}  [{text or base}]")
    click.echo(f"data: {dataset} train, {len(labels)} images chosen with seed {seed}; results in {sweep_path}")
