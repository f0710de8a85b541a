"""diffdefense defend: the runtime on image files."""

from __future__ import annotations

from pathlib import Path

import click

from diffdefense.cli.common import (
    PRESET_NAMES,
    dataset_option,
    main,
)


@main.command("defend")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--bundle",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Bundle folder [default: the shipped bundle of --dataset].",
)
@dataset_option
@click.option("--preset", type=click.Choice(sorted(PRESET_NAMES)), default=None, help="[default: the bundle's].")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def defend_command(inputs, bundle, dataset, preset, provider, batch_size, as_json) -> None:
    """Defend and classify images from .npy / .npz files; print labels, attack flags and latency."""
    import json

    import numpy as np

    from diffdefense.runtime.defender import Defender
    from diffdefense.runtime.inputs import read_image_file
    from diffdefense.shipped import bundle_dir

    defender = Defender(bundle or bundle_dir(dataset), preset)
    rows, per_image = [], []
    for path in inputs:
        file = read_image_file(path)
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
        return
    for r in rows:
        truth = f"  true {r['true_label']}" if "true_label" in r else ""
        attacked = f"  {'attacked' if r['attacked'] else 'clean':>8}" if "attacked" in r else ""
        flag = "FLAGGED" if r["attack_flag"] else "ok"
        click.echo(
            f"{Path(r['file']).name}[{r['index']:>2}]  label {r['label']} (p {r['probability']:.2f}){truth}"
            f"{attacked}  error {r['reconstruction_error']:.4f}  {flag}"
        )
    click.echo(
        f"{latency['images']} images, {latency['per_image_ms_median']:.0f} ms per image (median, batches of "
        f"{batch_size}, {latency['provider']}, {defender.settings.unet_evaluations} U-Net image evaluations "
        f"each); attack threshold {defender.threshold}"
    )
