"""The lean runtime's accuracy on an evaluation report's own images, beside the PyTorch reference's numbers.

    python tools/runtime_table.py --report docs/results/mnist_blank_start_1000

Reads the report's results.json (data set, indices, settings) and the adversarial examples in its cache, runs the
runtime Defender with the shipped bundle under the same settings on the clean images and every attacked set, and
writes runtime_table.json and runtime_table.md into the report folder: accuracy per attack, runtime against
reference, and the largest gap in points.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from diffdefense.data import load_dataset
from diffdefense.runtime.defender import Defender
from diffdefense.settings import DefenseSettings
from diffdefense.shipped import bundle_dir


def runtime_accuracy(defender: Defender, images: np.ndarray, labels: np.ndarray, batch: int, label: str) -> float:
    predictions = [
        defender(images[i : i + batch]).labels
        for i in tqdm(range(0, len(images), batch), desc=label, leave=False, disable=None)
    ]
    return float((np.concatenate(predictions) == labels).mean())


@click.command()
@click.option("--report", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=50, show_default=True)
def main(report: Path, batch_size: int) -> None:
    """Runtime accuracy on the report's clean and attacked images, beside the reference's."""
    record = json.loads((report / "results.json").read_text())
    dataset, indices = record["dataset"], np.array(record["indices"])
    settings = DefenseSettings.from_dict(record["settings"])
    test = load_dataset(dataset, "test")
    images, labels = test.subset(indices).float_images(), test.subset(indices).labels.astype(np.int64)
    defender = Defender(bundle_dir(dataset), settings)
    started = time.perf_counter()
    clipped = {}
    rows = {"clean": (runtime_accuracy(defender, images, labels, batch_size, "clean"), record["results"]["clean"])}
    for setting in ("white_box", "black_box"):
        for attack, reference in record["results"].get(setting, {}).items():
            with np.load(report / "cache" / "attacks" / f"adversarial_{setting}_{attack}.npz") as stored:
                # Sets cached before run_attack clipped its output (EAD strays up to 3e-5 outside [0, 1]) would be
                # refused by the runtime: clip them, and record by how much.
                adversarial = np.clip(stored["array"], 0.0, 1.0)
                clipped[f"{setting}_{attack}"] = float(np.abs(stored["array"] - adversarial).max())
            tag = f"{setting}_{attack}"
            rows[tag] = (runtime_accuracy(defender, adversarial, labels, batch_size, tag), reference)
    table = {
        tag: {"runtime": runtime, "reference": reference["accuracy_defended"]}
        for tag, (runtime, reference) in rows.items()
    }
    gap = max(abs(v["runtime"] - v["reference"]) for v in table.values())
    out = {
        "command": f"python tools/runtime_table.py --report {report}",
        "report": str(report),
        "data": record["data"],
        "settings": settings.to_dict(),
        "bundle": str(bundle_dir(dataset)),
        "step_ops": defender.step_ops_name,
        "accuracy": table,
        "largest_gap_points": round(100 * gap, 2),
        "clipped_to_unit_range_max_abs": clipped,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    (report / "runtime_table.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        f"# Runtime against reference: {record['dataset']}, preset `{record['preset']}`",
        "",
        f"{record['data']}. Accuracy of Model A after the defence, in %: the lean runtime (onnxruntime CPU, shipped "
        f"bundle) and the PyTorch reference (results.json), same settings and seeds. `{out['command']}`.",
        "",
        "| images | runtime | reference | gap (points) |",
        "| --- | --- | --- | --- |",
    ]
    for tag, v in table.items():
        gap_points = 100 * (v["runtime"] - v["reference"])
        lines.append(f"| {tag} | {100 * v['runtime']:.1f} | {100 * v['reference']:.1f} | {gap_points:+.1f} |")
    lines += ["", f"Largest gap: {out['largest_gap_points']} points.", ""]
    (report / "runtime_table.md").write_text("\n".join(lines))
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
