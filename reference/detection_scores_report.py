"""The detection scores of reference/detection_scores.py on a finished evaluation's test images, from its caches:

    python tools/detection_scores_report.py --report docs/results/mnist_default_bn_small_distilled_1000 \
        --attack-cache runs/attacks_mnist_1000 \
        --out docs/results/detection_scores_mnist_test1000_bn_small_distilled.json

The scores that need only what the defence returns (its refined image and best candidate's error) are computed
from the report's cached reconstructions and the cached adversarial sets, so no defence runs again: the check on the
test table of a score chosen on training images. The candidates' spread is not cached and is left out.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import torch

from diffdefense.cli.common import data_root_option
from diffdefense.data import load_dataset
from diffdefense.machine import cpu_model
from diffdefense.reference.detection_scores import auroc_table, scores_of_output, write_and_print
from diffdefense.reference.evaluation import ArrayCache
from diffdefense.training.loading import load_classifier

IMAGE_SHAPE = (1, 28, 28)


def defense_cache_folder(report: Path) -> Path:
    """The report's one folder of cached reconstructions (cache/defense-*)."""
    folders = sorted((report / "cache").glob("defense-*"))
    if len(folders) != 1:
        raise click.ClickException(
            f"Expected one cache/defense-* folder of reconstructions in {report}, but found {len(folders)}: run "
            "`diffdefense evaluate` with --out there first (the caches stay beside the report)."
        )
    return folders[0]


def report_scores(report: Path, attack_cache: Path, data_root: Path | None = None) -> tuple[dict, dict]:
    """{set: {score: (N,)}} for the clean images and each white-box attack of the report, and the report's record."""
    if not (report / "results.json").is_file():
        raise click.ClickException(f"Expected a `diffdefense evaluate` report in {report}, but it has no results.json.")
    reconstructions = defense_cache_folder(report)
    record = json.loads((report / "results.json").read_text())
    dataset, indices, seed = record["dataset"], np.asarray(record["indices"]), record["seed"]
    images = load_dataset(dataset, "test", data_root).subset(indices).float_images()
    identity = {"dataset": dataset, "indices": indices.tolist(), "seed": seed}
    adversarial_sets = ArrayCache(attack_cache, identity)
    stamp = json.loads((reconstructions / "identity.json").read_text())
    if stamp.get("indices") != indices.tolist() or stamp.get("dataset") != dataset:
        raise click.ClickException(f"{reconstructions} was made for other images than {report}/results.json's.")
    classifier = load_classifier(dataset, "model_a")

    def scores(inputs: np.ndarray, name: str) -> dict[str, np.ndarray]:
        with np.load(reconstructions / f"defended_{name}.npz", allow_pickle=False) as stored:
            rows = stored["array"]
        output = torch.from_numpy(rows[:, :-1].reshape(-1, *IMAGE_SHAPE))
        return scores_of_output(torch.from_numpy(inputs), output, torch.from_numpy(rows[:, -1]), classifier)

    table = {"clean": scores(images, "clean")}
    for attack in record["results"]["white_box"]:
        table[attack] = scores(adversarial_sets.load(f"adversarial_white_box_{attack}"), f"white_box_{attack}")
    return table, record


@click.command()
@click.option(
    "--report",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    required=True,
    help="A `diffdefense evaluate` report folder with its cache/ (results.json and cache/defense-*).",
)
@click.option(
    "--attack-cache",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="The adversarial sets the evaluation used (its --attack-cache; default REPORT/cache/attacks).",
)
@data_root_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="JSON to write.")
def main(report, attack_cache, data_root, out) -> None:
    """AUROC of each detection score, per attack, on an evaluation's test images (from its caches)."""
    started = time.perf_counter()
    scores, record = report_scores(report, attack_cache or report / "cache" / "attacks", data_root)
    table = auroc_table(scores)
    result = {
        "what": "AUROC of detection scores, white-box attacked against clean test images, from the report's caches",
        "report": str(report),
        "data": record["data"],
        "preset": record["preset"],
        "unet": record["config"].get("unet", "unet"),
        "auroc": table,
        "seconds": round(time.perf_counter() - started, 1),
        "cpu": cpu_model(),
    }
    write_and_print(result, out)
