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
from tqdm import tqdm

from diffdefense.data import load_dataset
from diffdefense.runtime.defender import Defender
from diffdefense.settings import DefenseSettings
from diffdefense.shipped import bundle_dir


def runtime_run(defender: Defender, images: np.ndarray, labels: np.ndarray, batch: int, label: str) -> dict:
    """Accuracy, the detection scores, and the defence's seconds per image on one set."""
    results = [
        defender(images[i : i + batch])
        for i in tqdm(range(0, len(images), batch), desc=label, leave=False, disable=None)
    ]
    predictions = np.concatenate([r.labels for r in results])
    return {
        "accuracy": float((predictions == labels).mean()),
        "scores": np.concatenate([r.reconstruction_error for r in results]),
        "seconds_per_image": sum(r.timings["total"] for r in results) / len(images),
    }


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
    from diffdefense.reference.detection import evaluate_detection

    record = json.loads((report / "results.json").read_text())
    dataset, indices = record["dataset"], np.array(record["indices"])
    settings = DefenseSettings.from_dict(record["settings"])
    test = load_dataset(dataset, "test")
    images, labels = test.subset(indices).float_images(), test.subset(indices).labels.astype(np.int64)
    bundle = bundle or bundle_dir(dataset)
    defender = Defender(bundle, settings, precision=precision, unet_graphs=unet_graphs)
    attack_cache = attack_cache or report / "cache" / "attacks"
    started = time.perf_counter()
    clipped, aurocs, timing = {}, {}, {}
    clean = runtime_run(defender, images, labels, batch_size, "clean")
    timing["clean"] = clean["seconds_per_image"]
    rows = {"clean": (clean["accuracy"], record["results"]["clean"])}
    for setting in ("white_box", "black_box"):
        for attack, reference in record["results"].get(setting, {}).items():
            with np.load(attack_cache / f"adversarial_{setting}_{attack}.npz") as stored:
                # Sets cached before run_attack clipped its output (EAD strays up to 3e-5 outside [0, 1]) would be
                # refused by the runtime: clip them, and record by how much.
                adversarial = np.clip(stored["array"], 0.0, 1.0)
                clipped[f"{setting}_{attack}"] = float(np.abs(stored["array"] - adversarial).max())
            tag = f"{setting}_{attack}"
            run = runtime_run(defender, adversarial, labels, batch_size, tag)
            rows[tag] = (run["accuracy"], reference)
            aurocs[tag] = {
                "runtime": evaluate_detection(clean["scores"], run["scores"]).auroc,
                "reference": reference.get("detection_auroc"),
            }
            timing[tag] = run["seconds_per_image"]
    table = {
        tag: {"runtime": runtime, "reference": reference["accuracy_defended"]}
        for tag, (runtime, reference) in rows.items()
    }
    gap = max(abs(v["runtime"] - v["reference"]) for v in table.values())
    out = {
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
    (report / f"{out_name}.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        f"# Runtime against reference: {record['dataset']}, preset `{record['preset']}`",
        "",
        f"{record['data']}. Accuracy of Model A after the defence, in %: the lean runtime (onnxruntime CPU, "
        f"{out['bundle']}, {precision} U-Net graphs: {defender.unet_graphs}) and the PyTorch reference "
        f"(results.json), same settings and seeds; detection AUROC against the clean images. `{out['command']}`.",
        "",
        "| images | runtime | reference | gap (points) | AUROC runtime | AUROC reference |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for tag, v in table.items():
        gap_points = 100 * (v["runtime"] - v["reference"])
        auroc = aurocs.get(tag, {})
        cells = " | ".join(f"{auroc[k]:.3f}" if auroc.get(k) is not None else "-" for k in ("runtime", "reference"))
        lines.append(
            f"| {tag} | {100 * v['runtime']:.1f} | {100 * v['reference']:.1f} | {gap_points:+.1f} | {cells} |"
        )
    lines += ["", f"Largest gap: {out['largest_gap_points']} points.", ""]
    (report / f"{out_name}.md").write_text("\n".join(lines))
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
