"""The lean runtime's accuracy and detection AUROC on a folder of cached adversarial sets, per bundle variant.

    python tools/runtime_accuracy.py --attack-cache DIR --precision float32 --out docs/results/runtime_mnist_1000.json

The folder is an attack cache of `diffdefense evaluate` (its identity.json names the data set, the indices and the
seed; its adversarial_white_box_*.npz hold the sets). Each set is defended by the runtime Defender with the chosen
bundle, precision and U-Net graphs at the bundle's default settings; Model A's accuracy on the reconstructions and
the AUROC of the reconstruction error against the clean images' are printed as a markdown table.
"""

import json
import sys
import time
from pathlib import Path

import click
import numpy as np

from diffdefense.data import load_dataset
from diffdefense.reference.detection import evaluate_detection
from diffdefense.runtime.defender import Defender
from diffdefense.shipped import bundle_dir


def defend_all(defender: Defender, images: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    results = [defender(images[i : i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate([r.labels for r in results]), np.concatenate([r.reconstruction_error for r in results])


@click.command()
@click.option("--attack-cache", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True)
@click.option("--bundle", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None)
@click.option("--precision", type=click.Choice(["float32", "int8"]), default="float32", show_default=True)
@click.option("--unet-graphs", type=click.Choice(["folded", "general", "auto"]), default=None)
@click.option("-n", "--num-images", type=click.IntRange(min=1), default=None, help="The first N images [all].")
@click.option("--batch-size", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write JSON.")
def main(attack_cache, bundle, precision, unet_graphs, num_images, batch_size, out) -> None:
    """Accuracy and AUROC of the runtime on the clean images and every cached white-box set."""
    identity = json.loads((attack_cache / "identity.json").read_text())
    indices = np.array(identity["indices"])[:num_images]
    test = load_dataset(identity["dataset"], "test").subset(indices)
    images, labels = test.float_images(), test.labels.astype(np.int64)
    defender = Defender(bundle or bundle_dir(identity["dataset"]), precision=precision, unet_graphs=unet_graphs)
    started = time.perf_counter()
    clean_labels, clean_scores = defend_all(defender, images, batch_size)
    rows = {"clean": {"accuracy": float((clean_labels == labels).mean())}}
    for path in sorted(attack_cache.glob("adversarial_white_box_*.npz")):
        with np.load(path, allow_pickle=False) as stored:
            adversarial = np.clip(stored["array"][: len(indices)], 0.0, 1.0)
        predicted, scores = defend_all(defender, adversarial, batch_size)
        rows[path.stem.removeprefix("adversarial_white_box_")] = {
            "accuracy": float((predicted == labels).mean()),
            "detection_auroc": evaluate_detection(clean_scores, scores).auroc,
        }
    record = {
        "command": "python tools/runtime_accuracy.py " + " ".join(sys.argv[1:]),
        "data": f"{identity['dataset']} test, {len(indices)} images chosen with seed {identity['seed']}",
        "bundle": str(defender.bundle.root),
        "unet": defender.bundle.manifest.unet_source,
        "precision": precision,
        "unet_graphs": defender.unet_graphs,
        "settings": defender.settings.to_dict(),
        "results": rows,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    click.echo(f"{record['data']}; {record['bundle']} ({record['unet']}), {precision}, graphs {defender.unet_graphs}")
    click.echo("| images | accuracy (%) | detection AUROC |\n| --- | ---: | ---: |")
    for name, row in rows.items():
        auroc = f"{row['detection_auroc']:.3f}" if "detection_auroc" in row else "-"
        click.echo(f"| {name} | {100 * row['accuracy']:.1f} | {auroc} |")
    if out:
        out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
