"""Has an adaptive attack converged? Defended accuracy against the attack's number of steps.

An attack that is still gaining when it stops says nothing about the defence. This runs each chosen adaptive attack
(reference/adaptive.py) through the defence at several step budgets, on the same test images, and writes the
defended accuracy with its 95 % interval per budget (JSON) and the curves (PNG): where a curve has flattened, its
last point is the attack's number.

    python tools/adaptive_convergence.py --dataset mnist --preset default --unet unet_bn -n 200 \
        --attack APGD-CE --attack APGD-DLR --gradient bpda --eps 0.3 --steps 10 --steps 25 --steps 50 \
        --out docs/results/mnist_default_bn_convergence

Every adversarial set and reconstruction is cached under OUT/cache, and an attack keeps each finished batch of 25
images until its set is whole: a stopped run resumes where it stopped, with the images an uninterrupted run gives.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

from diffdefense.data import load_dataset
from diffdefense.evaluation_config import ADAPTIVE_ATTACKS, ADAPTIVE_GRADIENTS
from diffdefense.machine import cpu_model
from diffdefense.reference.adaptive import adaptive_budgets
from diffdefense.reference.defense import ReferenceDefense
from diffdefense.reference.evaluation import ArrayCache, adaptive_tag, cached_adaptive, defend, pick_indices, predict
from diffdefense.reference.intervals import accuracy_interval
from diffdefense.settings import PRESETS
from diffdefense.shipped import UNET_NAMES
from diffdefense.training.loading import load_classifier, load_unet


def convergence_rows(
    dataset: str,
    preset: str,
    unet_name: str,
    num_images: int,
    seed: int,
    attacks: tuple[str, ...],
    gradients: tuple[str, ...],
    eps_values: tuple[float, ...],
    steps: tuple[int, ...],
    eot_iter: int,
    out: Path,
    batch_size: int = 50,
) -> list[dict]:
    """One row per (attack, gradient, eps, steps): defended accuracy of Model A with its interval, and seconds."""
    test = load_dataset(dataset, "test")
    indices = pick_indices(len(test), num_images, seed)
    images, labels = (t.numpy() for t in test.subset(indices).as_tensors())
    classifier = load_classifier(dataset, "model_a")
    unet, schedule = load_unet(dataset, name=unet_name)
    settings = PRESETS[preset].with_(seed=seed)
    defense = ReferenceDefense(unet, schedule, settings)
    identity = {"dataset": dataset, "indices": indices.tolist(), "seed": seed, "unet": unet_name}
    cache = ArrayCache(out / "cache", {**identity, "settings": settings.to_dict()})
    rows = []
    for eps in eps_values:
        for n_steps in steps:
            for budget in adaptive_budgets(eps, n_steps, eot_iter, attacks, gradients):
                tag = adaptive_tag(budget)
                started = time.perf_counter()
                adversarial = cached_adaptive(
                    cache, f"adversarial_{tag}", budget, classifier, defense, images, labels, seed
                )
                defended = cache.get(f"defended_{tag}", lambda a=adversarial, t=tag: defend(defense, a, batch_size, t))
                recon = defended[:, :-1].reshape(images.shape)
                accuracy = float((predict(classifier, recon) == labels).mean())
                low, high = accuracy_interval(accuracy, len(images))
                row = {
                    "attack": budget.attack,
                    "gradient": budget.gradient,
                    "eps": eps,
                    "steps": n_steps,
                    "eot_iter": budget.eot_iter,
                    "name": budget.name,
                    "accuracy_defended": accuracy,
                    "interval_95": [low, high],
                    "accuracy_no_defense": float((predict(classifier, adversarial) == labels).mean()),
                    "seconds_this_run": round(time.perf_counter() - started, 1),
                }
                rows.append(row)
                click.echo(f"{budget.name:45s} {100 * accuracy:5.1f} % [{100 * low:.1f}, {100 * high:.1f}]")
    return rows


def plot_convergence(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    curves = sorted({(r["attack"], r["gradient"], r["eps"]) for r in rows})
    for attack, gradient, eps in curves:
        points = sorted(
            (r for r in rows if (r["attack"], r["gradient"], r["eps"]) == (attack, gradient, eps)),
            key=lambda r: r["steps"],
        )
        x = [r["steps"] for r in points]
        y = np.array([100 * r["accuracy_defended"] for r in points])
        low, high = (np.array([100 * r["interval_95"][i] for r in points]) for i in (0, 1))
        err = np.stack([y - low, high - y])
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{gradient} {attack}, eps {eps}")
    ax.set_xscale("log")
    ax.set_xlabel("attack steps")
    ax.set_ylabel("defended accuracy (%), 95 % interval")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@click.command()
@click.option("--dataset", default="mnist", show_default=True)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="default", show_default=True)
@click.option("--unet", type=click.Choice(UNET_NAMES), default="unet_bn", show_default=True)
@click.option("-n", "--num-images", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--attack", "attacks", type=click.Choice(ADAPTIVE_ATTACKS), multiple=True, default=("APGD-CE",))
@click.option("--gradient", "gradients", type=click.Choice(ADAPTIVE_GRADIENTS), multiple=True, default=("bpda",))
@click.option("--eps", "eps_values", type=float, multiple=True, default=(0.3,), show_default=True)
@click.option("--steps", type=click.IntRange(min=1), multiple=True, default=(10, 25, 50), show_default=True)
@click.option("--eot-iter", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def main(dataset, preset, unet, num_images, seed, attacks, gradients, eps_values, steps, eot_iter, out) -> None:
    """Defended accuracy against the number of attack steps, per adaptive attack: OUT/convergence.json and .png."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = convergence_rows(
        dataset, preset, unet, num_images, seed, attacks, gradients, eps_values, tuple(sorted(steps)), eot_iter, out
    )
    record = {
        "command": " ".join(["python", "tools/adaptive_convergence.py", *sys.argv[1:]]),
        "dataset": dataset,
        "data": f"{dataset} test, {num_images} images chosen with seed {seed}",
        "preset": preset,
        "unet": unet,
        "seed": seed,
        "rows": rows,
        "wall_seconds_this_run": round(time.perf_counter() - started, 1),
        "cpu": cpu_model(),
        "versions": {"torch": torch.__version__, "torchattacks": __import__("torchattacks").__version__},
    }
    (out / "convergence.json").write_text(json.dumps(record, indent=1))
    plot_convergence(rows, out / "convergence.png")
    click.echo(f"{out / 'convergence.json'}, {out / 'convergence.png'}")
