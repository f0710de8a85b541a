"""The lean runtime's accuracy and detection AUROC on a folder of cached adversarial sets, per bundle variant.

    python tools/runtime_accuracy.py --attack-cache DIR --precision float32 --out docs/results/runtime_mnist_1000.json

The folder is an attack cache of `diffdefense evaluate` (its identity.json names the data set, the indices and the
seed; its adversarial_white_box_*.npz hold the sets). Each set is defended by the runtime Defender with the chosen
bundle, precision and U-Net graphs at the bundle's default settings; Model A's accuracy on the reconstructions and
the AUROC of the reconstruction error against the clean images' are printed as a markdown table.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

import click
import numpy as np
from tqdm import tqdm

from diffdefense.data import load_dataset
from diffdefense.reference.detection import evaluate_detection
from diffdefense.runtime.defender import Defender
from diffdefense.shipped import bundle_dir


class RuntimeRun(NamedTuple):
    """The runtime on one set of images: its labels, its detection scores (the reconstruction errors), and the
    defence's seconds per image."""

    labels: np.ndarray
    scores: np.ndarray
    seconds_per_image: float


def defend_in_batches(defender: Defender, images: np.ndarray, batch: int, progress: str | None = None) -> RuntimeRun:
    """The Defender on `images`, `batch` at a time; `progress` names a progress bar, shown on a terminal only."""
    starts = tqdm(range(0, len(images), batch), desc=progress, leave=False, disable=True if progress is None else None)
    results = [defender(images[i : i + batch]) for i in starts]
    return RuntimeRun(
        np.concatenate([r.labels for r in results]),
        np.concatenate([r.reconstruction_error for r in results]),
        sum(r.timings["total"] for r in results) / len(images),
    )


def load_attack_set(path: Path, count: int | None = None) -> tuple[np.ndarray, float]:
    """The first `count` images (all by default) of a cached adversarial set, clipped to [0, 1], and by how much
    clipping moved them. Sets cached before run_attack clipped its output (EAD strays up to 3e-5 outside [0, 1])
    would be refused by the runtime."""
    with np.load(path, allow_pickle=False) as stored:
        array = stored["array"][:count]
    clipped = np.clip(array, 0.0, 1.0)
    return clipped, float(np.abs(array - clipped).max())


@click.command()
@click.option("--attack-cache", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True)
@click.option("--bundle", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None)
@click.option("--precision", type=click.Choice(["float32", "int8"]), default="float32", show_default=True)
@click.option("--unet-graphs", type=click.Choice(["folded", "general", "auto"]), default=None)
@click.option(
    "--agreement-with",
    type=click.Choice(["float32", "int8"]),
    default=None,
    help="Also run the bundle's folded graphs in this precision on the same images and report the share of images "
    "given the same label.",
)
@click.option(
    "--extra-set",
    "extra_sets",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    multiple=True,
    help="Another adversarial set of the same images (e.g. an adaptive attack's, from an evaluation's cache), in "
    "their order; measured on as many of the first images as it holds.",
)
@click.option("-n", "--num-images", type=click.IntRange(min=1), default=None, help="The first N images [all].")
@click.option("--batch-size", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write JSON.")
def main(attack_cache, bundle, precision, unet_graphs, agreement_with, extra_sets, num_images, batch_size, out):
    """Accuracy and AUROC of the runtime on the clean images and every cached white-box set."""
    identity = json.loads((attack_cache / "identity.json").read_text())
    indices = np.array(identity["indices"])[:num_images]
    test = load_dataset(identity["dataset"], "test").subset(indices)
    images, labels = test.float_images(), test.labels.astype(np.int64)
    defender = Defender(bundle or bundle_dir(identity["dataset"]), precision=precision, unet_graphs=unet_graphs)
    other = Defender(defender.bundle.root, precision=agreement_with, unet_graphs="folded") if agreement_with else None
    started = time.perf_counter()
    sets = [("clean", images)]
    sets += [
        (path.stem.removeprefix("adversarial_white_box_"), load_attack_set(path, len(indices))[0])
        for path in sorted(attack_cache.glob("adversarial_white_box_*.npz"))
    ]
    sets += [(path.stem.removeprefix("adversarial_"), load_attack_set(path, len(indices))[0]) for path in extra_sets]
    rows, clean = {}, None
    for name, batch in sets:
        run = defend_in_batches(defender, batch, batch_size)
        truth = labels[: len(batch)]
        row = {"images": len(batch), "accuracy": float((run.labels == truth).mean())}
        if clean is None:
            clean = run
        else:
            row["detection_auroc"] = evaluate_detection(clean.scores[: len(batch)], run.scores).auroc
        if other is not None:
            theirs = defend_in_batches(other, batch, batch_size)
            row[f"accuracy_{agreement_with}"] = float((theirs.labels == truth).mean())
            row[f"same_label_as_{agreement_with}"] = float((theirs.labels == run.labels).mean())
        rows[name] = row
    record = {
        "command": "python tools/runtime_accuracy.py " + " ".join(sys.argv[1:]),
        "data": f"{identity['dataset']} test, {len(indices)} images chosen with seed {identity['seed']}",
        "bundle": str(defender.bundle.root),
        "unet": defender.bundle.manifest.unet_source,
        "precision": precision,
        "unet_graphs": defender.unet_graphs,
        "settings": defender.settings.to_dict(),
        "agreement_with": agreement_with,
        "results": rows,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    click.echo(f"{record['data']}; {record['bundle']} ({record['unet']}), {precision}, graphs {defender.unet_graphs}")
    header = ["images", "n", "accuracy (%)", "detection AUROC"]
    if agreement_with:
        header += [f"{agreement_with}: accuracy (%)", f"same label as {agreement_with} (%)"]
    click.echo("| " + " | ".join(header) + " |\n| --- |" + " ---: |" * (len(header) - 1))
    for name, row in rows.items():
        cells = [name, str(row["images"]), f"{100 * row['accuracy']:.1f}"]
        cells.append(f"{row['detection_auroc']:.3f}" if "detection_auroc" in row else "-")
        if agreement_with:
            keys = (f"accuracy_{agreement_with}", f"same_label_as_{agreement_with}")
            cells += [f"{100 * row[key]:.1f}" for key in keys]
        click.echo("| " + " | ".join(cells) + " |")
    if out:
        out.write_text(json.dumps(record, indent=2) + "\n")
