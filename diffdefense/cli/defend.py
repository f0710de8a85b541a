"""diffdefense defend: the runtime on image files and folders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from diffdefense.cli.cluster_options import cluster_defend_options, defend_on_cluster
from diffdefense.cli.common import main
from diffdefense.cli.defender_options import defender_options, make_defender
from diffdefense.cli.frame_options import make_preprocessor, preprocessing_options

EXIT_ATTACK_FLAGGED = 3


@main.command("defend")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@defender_options
@preprocessing_options
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--fail-on-attack", is_flag=True, help=f"Exit with code {EXIT_ATTACK_FLAGGED} when any input is flagged.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cluster_defend_options
def defend_command(
    inputs, bundle, dataset, preset, provider, threshold, roi, invert, value_range, channel_order, batch_size,
    fail_on_attack, as_json,
) -> None:  # fmt: skip
    """Defend and classify INPUTS: .npy / .npz arrays of 28 x 28 images (uint8 or floats in [0, 1]; an .npz holds
    'images' and optionally 'labels' and 'attacked'), picture files (PNG, JPEG, ...: preprocessed like camera
    frames with --roi, --invert, --value-range), or folders of them. Prints labels, attack flags and latency.

    With --ray, the same calls run on a Ray cluster, a Defender per worker, and the results go to shards in --out
    (docs/cluster.md).

    Exit codes: 0 done, 1 bad input or model files, 2 bad usage, 3 with --fail-on-attack when an input is flagged."""
    from diffdefense.runtime.inputs import expand_inputs, read_image_file

    defender = make_defender(bundle, dataset, preset, provider, threshold)
    preprocessor = make_preprocessor(roi, invert, value_range, channel_order, defender.image_shape[1:])
    cluster_args = (batch_size, fail_on_attack, as_json, _check_labels, EXIT_ATTACK_FLAGGED)
    if defend_on_cluster(defender, preprocessor, inputs, *cluster_args):
        return
    rows, per_image = [], []
    for path in expand_inputs(inputs):
        file = read_image_file(path, preprocessor)
        _check_labels(file.labels, len(defender.label_names), path)
        for start in range(0, len(file.images), batch_size):
            result = defender(file.images[start : start + batch_size])
            per_image += [result.timings["total"] / len(result.labels)] * len(result.labels)
            for k, label in enumerate(result.labels):
                i = start + k
                rows.append(
                    {
                        "file": str(path),
                        "index": i,
                        "label": result.label_names[label],
                        "probability": round(float(result.probabilities[k, label]), 4),
                        "attack_flag": bool(result.attack_flag[k]),
                        "reconstruction_error": round(float(result.reconstruction_error[k]), 5),
                        "detection_score": round(float(result.detection_score[k]), 5),
                        **({"true_label": result.label_names[int(file.labels[i])]} if file.labels is not None else {}),
                        **({"attacked": bool(file.attacked[i])} if file.attacked is not None else {}),
                    }
                )
    latency = {
        "per_image_ms_median": 1000 * float(np.median(per_image)),
        "images": len(per_image),
        "settings": defender.settings.to_dict(),
        "provider": defender.unet.provider,
        "threshold": defender.threshold,
    }
    if as_json:
        click.echo(json.dumps({"results": rows, "latency": latency}, indent=2, ensure_ascii=False))
    else:
        _print_rows(rows, latency, batch_size, defender)
    if fail_on_attack and any(r["attack_flag"] for r in rows):
        sys.exit(EXIT_ATTACK_FLAGGED)


def _check_labels(labels, count: int, path: Path) -> None:
    """A file's true labels must name the bundle's classes (read_image_file checked one integer per image): -1 would
    index from the end, and print as another class."""
    if labels is not None and not ((labels >= 0) & (labels < count)).all():
        wrong = np.unique(labels[(labels < 0) | (labels >= count)])
        raise ValueError(f"{path}: expected labels from 0 to {count - 1}, but got {wrong[:5].tolist()}.")


def _print_rows(rows: list[dict], latency: dict, batch_size: int, defender) -> None:
    for r in rows:
        truth = f"  true {r['true_label']}" if "true_label" in r else ""
        attacked = f"  {'attacked' if r['attacked'] else 'clean':>8}" if "attacked" in r else ""
        flag = "FLAGGED" if r["attack_flag"] else "ok"
        click.echo(
            f"{Path(r['file']).name}[{r['index']:>2}]  label {r['label']} (p {r['probability']:.2f}){truth}"
            f"{attacked}  score {r['detection_score']:.4f}  {flag}"
        )
    click.echo(
        f"{latency['images']} images, {latency['per_image_ms_median']:.0f} ms per image (median, batches of "
        f"{batch_size}, {latency['provider']}, {defender.precision} U-Net graphs, {defender.settings.unet_evaluations} "
        f"U-Net image evaluations each); attack threshold {defender.threshold}"
    )
