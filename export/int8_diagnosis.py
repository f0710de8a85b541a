"""Why a bundle's U-Net loses accuracy in int8: the dynamic range the defence's own inputs put through it.

    python tools/int8_diagnosis.py --bundle mnist-fast -n 64 --seed 0 --out docs/results/int8_diagnosis_mnist_fast.json

For each folded timestep graph, on the U-Net inputs a float32 Defender produces for seeded MNIST training images:
how large the inputs and the graph's intermediate activations get, which share of the predicted noise sits at the
U-Net's output clamp, and what static int8 quantisation (export/quantize.py, calibrated on the first three quarters
of the inputs) does to the output on the last quarter, over all pixels and over the unclamped pixels alone, with
the time of one batch-96 call in float32 and in int8.
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
from onnx import numpy_helper

CALL_BATCH = 96  # one default-preset U-Net call for 8 images: 8 x 12 candidates


def output_clamp(graph: onnx.GraphProto) -> tuple[float, float] | None:
    """The (min, max) of the Clip that produces the graph's output, or None when the output is not clamped."""
    output = graph.output[0].name
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    for node in graph.node:
        if node.op_type == "Clip" and node.output[0] == output:
            low, high = (float(constants[name]) if name in constants else None for name in node.input[1:3])
            if low is not None and high is not None:
                return low, high
    return None


def largest_activations(graph_path: Path, x: np.ndarray) -> dict[str, float]:
    """The largest magnitude of every intermediate tensor of the graph on input x, by tensor name."""
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    with tempfile.TemporaryDirectory() as scratch:
        augmented = Path(scratch) / "augmented.onnx"
        modify_model_output_intermediate_tensors(str(graph_path), str(augmented))
        session = ort.InferenceSession(str(augmented), providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        values = session.run(None, {"x": x})
    # the debugging outputs are the tensors flattened, named with a suffix
    names = [name.removesuffix("_ReshapedSavedOutput") for name in names]
    return {
        name: float(np.abs(value).max()) for name, value in zip(names, values, strict=True) if value.dtype.kind == "f"
    }


def output_errors(reference: np.ndarray, quantized: np.ndarray, clamp: tuple[float, float] | None) -> dict:
    """Relative L2 error of the int8 output against float32, over every pixel and over the pixels float32 leaves
    inside the clamp (where the noise prediction carries more than a sign), with the clamped share."""
    difference = quantized - reference
    errors = {"relative_l2": float(np.linalg.norm(difference) / np.linalg.norm(reference))}
    if clamp is not None:
        at_clamp = (reference <= clamp[0] + 1e-4) | (reference >= clamp[1] - 1e-4)
        errors["share_at_clamp"] = float(at_clamp.mean())
        inside = ~at_clamp
        if inside.any():
            errors["relative_l2_inside_clamp"] = float(
                np.linalg.norm(difference[inside]) / np.linalg.norm(reference[inside])
            )
            errors["mean_abs_error_inside_clamp"] = float(np.abs(difference[inside]).mean())
    return errors


def call_milliseconds(graph_path: Path, x: np.ndarray, repeats: int = 5) -> float:
    """Median wall time of one call on x, after a warm-up call."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph_path), providers=["CPUExecutionProvider"])
    session.run(None, {"x": x})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, {"x": x})
        times.append(1e3 * (time.perf_counter() - started))
    return float(np.median(times))


def diagnose_timestep(
    float_graph: Path, inputs: np.ndarray, scratch: Path, seed: int = 0, method: str = "percentile"
) -> dict:
    """One timestep graph: input magnitudes, the largest activation on a seeded batch of 96 held-out inputs, the
    clamp share, int8 errors and call times."""
    from diffdefense.export.quantize import graph_outputs, quantize_unet_graph

    split = int(0.75 * len(inputs))
    calibration, held_out = inputs[:split], inputs[split:]
    int8_graph = scratch / f"{float_graph.stem}.int8.onnx"
    quantize_unet_graph(float_graph, int8_graph, calibration, method=method)
    reference, quantized = graph_outputs((float_graph, int8_graph), held_out)
    # the inputs come in the defence's order, from the blank start to far-moved latents: sample across all of them
    batch = held_out[np.random.default_rng(seed).choice(len(held_out), size=CALL_BATCH, replace=True)]
    activations = largest_activations(float_graph, batch)
    clamp = output_clamp(onnx.load(str(float_graph)).graph)
    return {
        "inputs": {
            "calibration": len(calibration),
            "held_out": len(held_out),
            "median_abs": float(np.median(np.abs(inputs))),
            "max_abs": float(np.abs(inputs).max()),
        },
        "largest_activation": max(activations.values()),
        "output_clamp": clamp,
        "int8": output_errors(reference, quantized, clamp),
        "ms_per_call_batch_96": {
            "float32": round(call_milliseconds(float_graph, batch), 2),
            "int8": round(call_milliseconds(int8_graph, batch), 2),
        },
    }


def diagnose_bundle(bundle: Path, num_images: int, seed: int, method: str = "percentile") -> dict:
    """Every folded timestep graph of the bundle, on the inputs the defence gives it for seeded training images."""
    from diffdefense.export.quantize import training_unet_inputs
    from diffdefense.runtime.bundle import load_bundle

    loaded = load_bundle(bundle)
    captured = training_unet_inputs(loaded, num_images, seed)
    graphs = loaded.manifest.folded_graphs("float32")
    with tempfile.TemporaryDirectory() as scratch:
        return {
            str(t): diagnose_timestep(loaded.root / graphs[t], captured[t], Path(scratch), seed, method)
            for t in sorted(captured, reverse=True)
        }


@click.command()
@click.option("--bundle", required=True, help="A shipped bundle's name (mnist, mnist-fast) or a bundle folder.")
@click.option("-n", "--num-images", type=click.IntRange(min=8), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--method",
    type=click.Choice(["percentile", "minmax"]),
    default="percentile",
    show_default=True,
    help="How the int8 graphs' activation ranges are calibrated (percentile: what the export uses).",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(bundle: str, num_images: int, seed: int, method: str, out: Path) -> None:
    """Input and activation ranges, the clamp share and int8 errors per folded timestep graph: OUT (JSON)."""
    from diffdefense.machine import cpu_model

    started = time.perf_counter()
    record = {
        "command": " ".join(["python", "tools/int8_diagnosis.py", *sys.argv[1:]]),
        "bundle": bundle,
        "data": f"U-Net inputs of the float32 defence (bundle's preset) on {num_images} training images, seed {seed}",
        "calibration": method,
        "timesteps": diagnose_bundle(bundle, num_images, seed, method),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu": cpu_model(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    for t, row in record["timesteps"].items():
        int8, times = row["int8"], row["ms_per_call_batch_96"]
        click.echo(
            f"t={t}: |x| median {row['inputs']['median_abs']:.1f}, largest activation {row['largest_activation']:.0f}, "
            f"at the clamp {100 * int8.get('share_at_clamp', 0):.1f} %, int8 relative L2 {int8['relative_l2']:.3f} "
            f"(inside the clamp {int8.get('relative_l2_inside_clamp', float('nan')):.3f}), batch-96 call "
            f"{times['float32']:.1f} ms float32 / {times['int8']:.1f} ms int8"
        )
    click.echo(str(out))
