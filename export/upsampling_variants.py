"""Can the int8 U-Net lose its Resize? Exact rewrites of the decoder's upsampling, timed side by side.

    python tools/upsampling_variants.py --bundle mnist --timestep 14 -n 64 --seed 0 --rounds 21 \
        --out docs/results/upsampling_variants_mnist_t14.json

In the int8 folded graph the two nearest 2x upsamplings (Resize on uint8) are the largest cost besides the
convolutions (docs/performance.md): onnxruntime runs the int8 graph channels-last, where its Resize has no 2x fast
path. Each upsampling is followed by a 3x3 convolution, and the pair has exact rewrites without a Resize:

- `transposed`: one ConvTranspose2d (kernel 4, stride 2, padding 1) whose kernel sums the 3x3 taps each output
  phase sees;
- `subpixel`: a 3x3 convolution at the low resolution with four output channels per channel (one per output phase,
  each a 2x2 window embedded in the 3x3 kernel) and a DepthToSpace (pixel shuffle);
- `expand`: the upsampling as Unsqueeze, Expand and Reshape, then the convolution as before.

`relu` is a timing probe, not a model: the exported graph with every SiLU replaced by ReLU, which int8 folds into the
convolution before it. It bounds what retraining the net with ReLU could gain; its output is not the trained net's.

Every variant is exported from the same folded timestep net (of the shipped U-Net the bundle was exported from),
checked against the shipped graph's function, quantised on the same inputs (those the float32 defence gives the
U-Net on seeded training images) and timed in float32 and int8, in turns, at a batch-8 call (96 candidates) and a
frame's call (12).
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import onnx
import torch
from onnx import helper
from torch import nn
from torch.nn import functional as F

CALL_BATCHES = (96, 12)  # a batch of 8 images and one frame, 12 candidates each
EXACT_TOLERANCE = 1e-4


class TransposedUpsamplingConv(nn.Module):
    """conv(nearest 2x upsampling of h) as one ConvTranspose2d(kernel 4, stride 2, padding 1).

    Along each axis, output row 2i sees the conv taps (w0 | w1 + w2) on input rows (i - 1 | i), and row 2i + 1 sees
    (w0 + w1 | w2) on rows (i | i + 1); in the transposed convolution's indexing that is the kernel
    (w2, w1 + w2, w0 + w1, w0)."""

    upsamples = True

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        taps = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=conv.weight.dtype)  # (4, 3)
        kernel = torch.einsum("pm,qn,oimn->iopq", taps, taps, conv.weight)
        self.conv = nn.ConvTranspose2d(conv.in_channels, conv.out_channels, 4, stride=2, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(kernel)
            self.conv.bias.copy_(conv.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(h)


class SubpixelUpsamplingConv(nn.Module):
    """conv(nearest 2x upsampling of h) as a 3x3 convolution at h's resolution with one output channel per output
    phase (a, b), followed by a pixel shuffle (DepthToSpace): phase 0 of an axis uses the taps (w0, w1 + w2) on rows
    (i - 1, i), phase 1 (w0 + w1, w2) on rows (i, i + 1)."""

    upsamples = True

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        phases = torch.tensor(
            [[[1, 0, 0], [0, 1, 1], [0, 0, 0]], [[0, 0, 0], [1, 1, 0], [0, 0, 1]]], dtype=conv.weight.dtype
        )  # (phase, new tap, original tap)
        out_channels = conv.out_channels
        kernel = torch.einsum("akm,bln,oimn->oabikl", phases, phases, conv.weight)
        self.conv = nn.Conv2d(conv.in_channels, 4 * out_channels, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(kernel.reshape(4 * out_channels, conv.in_channels, 3, 3))
            self.conv.bias.copy_(conv.bias.repeat_interleave(4))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(h), 2)


class ExpandUpsamplingConv(nn.Module):
    """conv(nearest 2x upsampling of h), the upsampling written as a broadcast (Unsqueeze, Expand, Reshape)."""

    upsamples = True

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, c, height, width = h.shape
        wide = h[:, :, :, None, :, None].expand(n, c, height, 2, width, 2)
        return self.conv(wide.reshape(n, c, 2 * height, 2 * width))


REWRITES = {"transposed": TransposedUpsamplingConv, "subpixel": SubpixelUpsamplingConv, "expand": ExpandUpsamplingConv}


def rewritten(net: nn.Module, variant: str) -> nn.Module:
    """A copy of a FixedTimestepUNet whose two upsampling convolutions are replaced by the variant's rewrite."""
    copied = copy.deepcopy(net).eval()
    rewrite = REWRITES[variant]
    copied.unet.up2 = rewrite(copied.unet.up2)
    copied.unet.up1 = rewrite(copied.unet.up1)
    return copied


def silu_as_relu(graph_path: Path, out_path: Path) -> int:
    """Copy the ONNX graph with every SiLU (Sigmoid(x) feeding Mul(x, .)) replaced by Relu(x); the count replaced."""
    model = onnx.load(str(graph_path))
    nodes = list(model.graph.node)
    sigmoids = {node.output[0]: node for node in nodes if node.op_type == "Sigmoid"}
    replaced, kept = 0, []
    used_sigmoids = set()
    for node in nodes:
        gate = next((name for name in node.input if name in sigmoids), None)
        if node.op_type == "Mul" and gate is not None and sigmoids[gate].input[0] in node.input:
            kept.append(helper.make_node("Relu", [sigmoids[gate].input[0]], [node.output[0]], name=f"{node.name}_relu"))
            used_sigmoids.add(gate)
            replaced += 1
        else:
            kept.append(node)
    kept = [node for node in kept if not (node.op_type == "Sigmoid" and node.output[0] in used_sigmoids)]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    onnx.save(model, str(out_path))
    return replaced


def median_call_ms(runners: dict, x: np.ndarray, rounds: int, calls: int) -> dict[str, float]:
    """Median ms per call of each runner on x, the runners taking turns round by round (drift hits all alike)."""
    for runner in runners.values():
        runner.run(x)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            started = time.perf_counter()
            for _ in range(calls):
                runner.run(x)
            times[name].append(1e3 * (time.perf_counter() - started) / calls)
    return {name: round(float(np.median(values)), 3) for name, values in times.items()}


def compare_variants(
    net: nn.Module, inputs: np.ndarray, scratch: Path, threads: int, seed: int, rounds: int = 7
) -> dict:
    """Export, check, quantise and time every variant of the folded net on the captured U-Net inputs."""
    from diffdefense.export.onnx_export import export_graph
    from diffdefense.export.quantize import graph_outputs, quantize_unet_graph, relative_error
    from diffdefense.runtime.backends.onnxruntime_runner import OnnxRunner

    split = int(0.75 * len(inputs))
    calibration, held_out = inputs[:split], inputs[split:]
    example = (torch.randn(2, 1, 28, 28),)
    graphs = {"as shipped": scratch / "shipped.onnx"}
    export_graph(net, example, graphs["as shipped"], ["x"], "eps")
    for variant in REWRITES:
        graphs[variant] = scratch / f"{variant}.onnx"
        export_graph(rewritten(net, variant), example, graphs[variant], ["x"], "eps")
    graphs["relu"] = scratch / "relu.onnx"
    silus_replaced = silu_as_relu(graphs["as shipped"], graphs["relu"])

    reference = graph_outputs((graphs["as shipped"],), held_out)[0]
    rows = {}
    for name, path in graphs.items():
        int8_path = path.with_suffix(".int8.onnx")
        quantize_unet_graph(path, int8_path, calibration)
        output = graph_outputs((path,), held_out)[0]
        model = onnx.load(str(path))
        rows[name] = {
            "exact": name != "relu",
            "max_abs_difference_from_shipped": float(np.abs(output - reference).max()),
            "int8_against_its_float32": relative_error(path, int8_path, held_out),
            "ops": sorted({node.op_type for node in model.graph.node}),
        }
    rows["relu"]["silus_replaced"] = silus_replaced

    rng = np.random.default_rng(seed)
    for batch in CALL_BATCHES:
        x = held_out[rng.choice(len(held_out), size=batch, replace=True)]
        for precision in ("float32", "int8"):
            # the runtime's runner: threads that spin within a call and stop when it returns
            runners = {
                name: OnnxRunner(path if precision == "float32" else path.with_suffix(".int8.onnx"), "cpu", threads)
                for name, path in graphs.items()
            }
            for name, ms in median_call_ms(runners, x, rounds, calls=10 if batch > 12 else 40).items():
                rows[name].setdefault("ms_per_call", {})[f"{precision}_batch_{batch}"] = ms
    return rows


def captured_inputs(loaded, timestep: int, num_images: int, seed: int) -> np.ndarray:
    """The inputs the bundle's float32 defence gives its U-Net at `timestep` on seeded training images, shuffled."""
    from diffdefense.export.quantize import training_unet_inputs

    captured = training_unet_inputs(loaded, num_images, seed)
    if timestep not in captured:
        raise click.BadParameter(
            f"Expected one of the bundle preset's timesteps {sorted(captured)}, but got {timestep}."
        )
    # they come in the defence's order, from the blank start to far-moved latents: shuffle before the split
    return captured[timestep][np.random.default_rng(seed).permutation(len(captured[timestep]))]


@click.command()
@click.option("--bundle", default="mnist", show_default=True, help="A shipped bundle's name or a bundle folder.")
@click.option("--timestep", type=int, default=14, show_default=True)
@click.option("-n", "--num-images", type=click.IntRange(min=8), default=64, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=7, show_default=True, help="Timed turns per graph.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(bundle, timestep, num_images, threads, rounds, seed, out) -> None:
    """Exact rewrites of the U-Net's upsampling (and a ReLU timing probe), in float32 and int8: OUT (JSON)."""
    from diffdefense.machine import cpu_model
    from diffdefense.runtime.bundle import load_bundle
    from diffdefense.training.loading import load_unet
    from diffdefense.training.models import FixedTimestepUNet

    started = time.perf_counter()
    loaded = load_bundle(bundle)
    if loaded.manifest.unet_source is None:
        raise click.BadParameter(
            f"Expected a bundle that names its shipped U-Net (unet_source), but {bundle} does not."
        )
    unet, _ = load_unet(loaded.manifest.dataset, name=loaded.manifest.unet_source)
    net = FixedTimestepUNet(unet, timestep).eval()
    inputs = captured_inputs(loaded, timestep, num_images, seed)
    with tempfile.TemporaryDirectory() as scratch:
        rows = compare_variants(net, inputs, Path(scratch), threads, seed, rounds)
    for name, row in rows.items():
        if row["exact"] and row["max_abs_difference_from_shipped"] > EXACT_TOLERANCE:
            raise RuntimeError(
                f"The {name} rewrite differs from the shipped graph by {row['max_abs_difference_from_shipped']:.2e} "
                f"(tolerance {EXACT_TOLERANCE})."
            )
    record = {
        "command": " ".join(["python", "tools/upsampling_variants.py", *sys.argv[1:]]),
        "unet": loaded.manifest.unet_source,
        "data": f"U-Net inputs of the float32 `{bundle}` defence at t={timestep} on {num_images} training images, "
        f"seed {seed}: three quarters calibrate int8, the last quarter is timed and compared",
        "threads": threads,
        "rounds": rounds,
        "variants": rows,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu": cpu_model(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    click.echo(f"{'variant':12s} {'exact':>6s} " + " ".join(f"{key:>19s}" for key in rows["as shipped"]["ms_per_call"]))
    for name, row in rows.items():
        times = " ".join(f"{ms:16.2f} ms" for ms in row["ms_per_call"].values())
        click.echo(f"{name:12s} {'yes' if row['exact'] else 'no':>6s} {times}")
    click.echo(str(out))
