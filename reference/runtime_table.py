"""The lean runtime's accuracy on an evaluation report's own images, beside the PyTorch reference's numbers.

    python tools/runtime_table.py --report docs/results/mnist_blank_start_1000
    python tools/runtime_table.py --report docs/results/mnist_default_bn_1000 --precision int8 --attack-cache DIR

Reads the report's results.json (data set, indices, settings) and the adversarial examples in its cache, runs the
runtime Defender with the shipped bundle under the same settings on the clean images and every attacked set, and
writes runtime_table.json and runtime_table.md into the report folder: accuracy per attack, runtime against
reference, and the largest gap in points.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import numpy as np

from diffdefense.data import load_dataset
from diffdefense.reference.detection import evaluate_detection
from diffdefense.reference.runtime_accuracy import defend_in_batches, load_attack_set
from diffdefense.runtime.defender import Defender
from diffdefense.settings import DefenseSettings
from diffdefense.shipped import bundle_dir


def runtime_against_reference(
    report: Path, record: dict, bundle: Path, precision: str, unet_graphs, attack_cache: Path, batch_size: int
) -> dict:
    """The runtime's accuracy, detection AUROC and seconds per image on the clean images and every attacked set of
    a report (`record`: its results.json), under the report's settings, beside the reference's numbers."""
    settings = DefenseSettings.from_dict(record["settings"])
    test = load_dataset(record["dataset"], "test").subset(np.array(record["indices"]))
    images, labels = test.float_images(), test.labels.astype(np.int64)
    defender = Defender(bundle, settings, precision=precision, unet_graphs=unet_graphs)
    started = time.perf_counter()
    clipped, aurocs, timing = {}, {}, {}
    clean = defend_in_batches(defender, images, batch_size, "clean")
    timing["clean"] = clean.seconds_per_image
    rows = {"clean": (float((clean.labels == labels).mean()), record["results"]["clean"])}
    for setting in ("white_box", "black_box"):
        for attack, reference in record["results"].get(setting, {}).items():
            tag = f"{setting}_{attack}"
            adversarial, clipped[tag] = load_attack_set(attack_cache / f"adversarial_{tag}.npz")
            run = defend_in_batches(defender, adversarial, batch_size, tag)
            rows[tag] = (float((run.labels == labels).mean()), reference)
            aurocs[tag] = {
                "runtime": evaluate_detection(clean.scores, run.scores).auroc,
                "reference": reference.get("detection_auroc"),
            }
            timing[tag] = run.seconds_per_image
    table = {
        tag: {"runtime": runtime, "reference": reference["accuracy_defended"]}
        for tag, (runtime, reference) in rows.items()
    }
    gap = max(abs(v["runtime"] - v["reference"]) for v in table.values())
    return {
        "command": "python tools/runtime_table.py " + " ".join(sys.argv[1:]),
        "report": str(report),
        "data": record["data"],
        "settings": settings.to_dict(),
        "bundle": str(bundle),
        "precision": precision,
        "unet_graphs": defender.unet_graphs,
        "step_ops": defender.step_ops_name,
        "detection_auroc": aurocs,
        "defense_seconds_per_image": timing,
        "accuracy": table,
        "largest_gap_points": round(100 * gap, 2),
        "clipped_to_unit_range_max_abs": clipped,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def markdown(table: dict, dataset: str, preset: str) -> str:
    """runtime_table.md: the accuracies side by side with their gaps and AUROCs, and the command."""
    lines = [
        f"# Runtime against reference: {dataset}, preset `{preset}`",
        "",
        f"{table['data']}. Accuracy of Model A after the defence, in %: the lean runtime (onnxruntime CPU, "
        f"{table['bundle']}, {table['precision']} U-Net graphs: {table['unet_graphs']}) and the PyTorch reference "
        f"(results.json), same settings and seeds; detection AUROC against the clean images. `{table['command']}`.",
        "",
        "| images | runtime | reference | gap (points) | AUROC runtime | AUROC reference |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for tag, v in table["accuracy"].items():
        gap_points = 100 * (v["runtime"] - v["reference"])
        auroc = table["detection_auroc"].get(tag, {})
        cells = " | ".join(f"{auroc[k]:.3f}" if auroc.get(k) is not None else "-" for k in ("runtime", "reference"))
        lines.append(f"| {tag} | {100 * v['runtime']:.1f} | {100 * v['reference']:.1f} | {gap_points:+.1f} | {cells} |")
    lines += ["", f"Largest gap: {table['largest_gap_points']} points.", ""]
    return "\n".join(lines)


@click.command()
@click.option("--report", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--bundle", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None)
@click.option("--precision", type=click.Choice(["float32", "int8"]), default="float32", show_default=True)
@click.option("--unet-graphs", type=click.Choice(["folded", "general", "auto"]), default=None)
@click.option(
    "--attack-cache",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Where the report's adversarial sets are [default: REPORT/cache/attacks].",
)
@click.option("--out-name", default="runtime_table", show_default=True, help="Name of the .json and .md written.")
def main(report: Path, batch_size: int, bundle, precision, unet_graphs, attack_cache, out_name) -> None:
    """Runtime accuracy on the report's clean and attacked images, beside the reference's."""
    record = json.loads((report / "results.json").read_text())
    bundle = bundle or bundle_dir(record["dataset"])
    attack_cache = attack_cache or report / "cache" / "attacks"
    table = runtime_against_reference(report, record, bundle, precision, unet_graphs, attack_cache, batch_size)
    (report / f"{out_name}.json").write_text(json.dumps(table, indent=2) + "\n")
    text = markdown(table, record["dataset"], record["preset"])
    (report / f"{out_name}.md").write_text(text)
    click.echo(text)
