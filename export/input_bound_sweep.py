"""The U-Net's input bound against the defence's accuracy, in float32 and int8, on attacked training images.

    python tools/input_bound_sweep.py --bundle mnist --bound none --bound 4 --bound 3 --bound 2 -n 200 --seed 0 \
        --attacks runs/tune_mnist_bn/attacks --out docs/results/input_bound_sweep_mnist_train200.json

For each bound, the bundle's folded float32 graphs get that clamp on their input (none: no clamp), int8 versions of
them are calibrated as the export does (export/quantize.py) on the U-Net inputs a float32 Defender produces for
training images chosen with seed + 1 (clean and FGSM-attacked), and the runtime Defender, at the bundle's default
settings, defends the clean images and each attacked set with either. The attacked sets are the preset sweep's
(tools/tune_preset.py: the same seeded training images, attacks on Model A alone), computed and cached in --attacks
where missing. Test images stay out of it.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import onnx
from onnx import helper, numpy_helper

ATTACKS = ("FGSM", "PGD", "DeepFool", "Square", "AutoAttack", "EAD")


def with_input_bound(source: Path, target: Path, bound: float | None) -> None:
    """The graph at source, with its input clamped to +-bound (None: not clamped), written to target. A Clip that
    already opens the graph is removed first."""
    model = onnx.load(str(source))
    graph, name = model.graph, model.graph.input[0].name
    opening = [node for node in graph.node if node.op_type == "Clip" and node.input and node.input[0] == name]
    for clip in opening:  # undo it: its users read the input itself again
        for node in graph.node:
            node.input[:] = [name if value == clip.output[0] else value for value in node.input]
        graph.node.remove(clip)
    used = {value for node in graph.node for value in node.input}
    for initializer in [i for i in graph.initializer if i.name not in used]:  # the removed Clip's bounds
        graph.initializer.remove(initializer)
    if bound is not None:
        low, high = (f"{name}_bound_{side}" for side in ("low", "high"))
        graph.initializer.extend(
            numpy_helper.from_array(np.array(value, dtype=np.float32), key)
            for key, value in ((low, -bound), (high, bound))
        )
        for node in graph.node:
            node.input[:] = [f"{name}_bounded" if value == name else value for value in node.input]
        graph.node.insert(0, helper.make_node("Clip", [name, low, high], [f"{name}_bounded"]))
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def defended_accuracy(defender, sets: dict[str, np.ndarray], labels: np.ndarray, batch: int = 50) -> dict[str, float]:
    """Model A's accuracy (%) on the defender's reconstructions of each set."""
    accuracy = {}
    for name, images in sets.items():
        predicted = np.concatenate([defender(images[i : i + batch]).labels for i in range(0, len(images), batch)])
        accuracy[name] = round(100 * float((predicted == labels).mean()), 1)
    return accuracy


def sweep_bounds(bundle: Path, bounds: list[float | None], sets, labels, calibration: list[np.ndarray]) -> dict:
    """bound -> {'float32': accuracy per set, 'int8': the same}, the bundle's Defender with its U-Net swapped."""
    from diffdefense.export.quantize import capture_unet_inputs, quantize_unet_graph
    from diffdefense.runtime.bundle import load_bundle
    from diffdefense.runtime.defender import Defender

    shipped = {t: bundle / name for t, name in load_bundle(bundle).manifest.folded_graphs("float32").items()}
    results = {}
    defender = Defender(bundle, unet_graphs="folded", precision="float32")  # its U-Net is swapped per bound below
    with defender, tempfile.TemporaryDirectory() as scratch:
        shipped_runner = defender.unet
        for bound in bounds:
            tag = "none" if bound is None else f"{bound:g}"
            floats = {t: Path(scratch) / f"unet_t{t}_bound_{tag}.onnx" for t in shipped}
            for t, path in floats.items():
                with_input_bound(shipped[t], path, bound)
            defender.unet = _folded_unet(floats)
            captured = capture_unet_inputs(defender, calibration)
            row = {"float32": defended_accuracy(defender, sets, labels)}
            defender.unet.close()
            int8 = {t: path.with_suffix(".int8.onnx") for t, path in floats.items()}
            for t, path in floats.items():
                quantize_unet_graph(path, int8[t], captured[t])
            defender.unet = _folded_unet(int8)
            row["int8"] = defended_accuracy(defender, sets, labels)
            defender.unet.close()
            results[tag] = row
            click.echo(f"bound {tag}: float32 {row['float32']}\n          int8    {row['int8']}")
        defender.unet = shipped_runner
    return results


def _folded_unet(graphs: dict[int, Path]):
    """The runtime's U-Net over these folded graphs, one per timestep, on the CPU."""
    from diffdefense.runtime.backends import make_runner
    from diffdefense.runtime.unet_graphs import TimestepUNet

    return TimestepUNet({t: make_runner(path) for t, path in graphs.items()}, None)


def _bound(text: str) -> float | None:
    if text.lower() == "none":
        return None
    value = float(text)
    if not np.isfinite(value) or value <= 0:
        raise click.BadParameter(f"Expected a positive bound or 'none', but got {text!r}.")
    return value


@click.command()
@click.option("--bundle", required=True, help="A shipped bundle's name (mnist, mnist-fast) or a bundle folder.")
@click.option("--bound", "bounds", multiple=True, required=True, help="An input bound to try, or 'none' (repeat).")
@click.option("-n", "--num-images", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--calibration-images", type=click.IntRange(min=8), default=100, show_default=True)
@click.option("--attacks", type=click.Path(file_okay=False, path_type=Path), required=True, help="Attack cache.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(bundle, bounds, num_images, seed, calibration_images, attacks, out) -> None:
    """Accuracy of the defence per U-Net input bound, float32 and int8: OUT (JSON)."""
    from diffdefense.export.bundle import calibration_inputs
    from diffdefense.machine import cpu_model
    from diffdefense.reference.preset_sweep import attacked_training_sets
    from diffdefense.runtime.bundle import load_bundle
    from diffdefense.shipped import bundle_dir

    started = time.perf_counter()
    folder = Path(bundle) if Path(bundle).is_dir() else bundle_dir(bundle)
    dataset = load_bundle(folder).manifest.dataset
    sets, labels = attacked_training_sets(dataset, num_images, seed, ATTACKS, attacks)
    sets = {name: np.clip(images, 0.0, 1.0).astype(np.float32) for name, images in sets.items()}  # the runtime's range
    calibration = calibration_inputs(dataset, calibration_images, None, seed=seed + 1)
    record = {
        "command": " ".join(["python", "tools/input_bound_sweep.py", *sys.argv[1:]]),
        "bundle": bundle,
        "data": f"{dataset} train, {num_images} images chosen with seed {seed}, clean and attacked on Model A",
        "calibration": f"{calibration_images} training images chosen with seed {seed + 1}, clean and FGSM-attacked",
        "accuracy": sweep_bounds(folder, [_bound(b) for b in bounds], sets, labels.astype(np.int64), calibration),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu": cpu_model(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    click.echo(str(out))
