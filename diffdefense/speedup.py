"""The side-by-side latency table from a pytest-benchmark JSON of benchmarks/test_bench_defense.py.

Every runtime and reference variant measured in the run, per batch size, in milliseconds per image, with its ratio
to the PyTorch reference on the same weights (eager and compiled: the references of the row's own U-Net), and the
floors the run's matrix-product rates set: the row's U-Net FLOPs per image at the float32 rate and at the int8 rate,
the least time any backend of that precision could take on that CPU with that net.

    python tools/speedup_table.py benchmarks/results/defense_cpu.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import click

FLOAT32_PEAK = "sgemm float32"
INT8_PEAK = "gemm int8"
# The references of a run whose rows do not name their U-Net (results written before there was more than one)
EAGER = "BatchNorm U-Net, eager"
COMPILED = "BatchNorm U-Net, torch.compile"


@dataclass(frozen=True)
class Peaks:
    """The fastest float32 rate (GFLOP/s, with its library and threads), the int8 rate (GOP/s), and the U-Net's
    FLOPs per evaluation; a rate the run did not measure is None."""

    float32_gflops: float | None
    float32_source: str
    int8_gops: float | None
    unet_flops: float | None

    def floor_ms(self, evaluations: int, precision: str = "float32", unet_flops: float | None = None) -> float | None:
        """unet_flops: the row's net (default: the one the peaks recorded)."""
        rate = self.int8_gops if precision == "int8" else self.float32_gflops
        flops = unet_flops or self.unet_flops
        if not rate or not flops:
            return None
        return 1000 * evaluations * flops / (rate * 1e9)


def measured_peaks(benchmarks: list[dict]) -> Peaks:
    infos = [b["extra_info"] for b in benchmarks]
    float32 = max((i for i in infos if i.get("backend") == FLOAT32_PEAK), key=lambda i: i["gflops"], default=None)
    int8 = max((i for i in infos if i.get("backend") == INT8_PEAK), key=lambda i: i["gops"], default=None)
    flops = (float32 or int8 or {}).get("unet_flops_per_evaluation")
    source = f"{float32.get('library', '?')}, {float32.get('threads', '?')} threads" if float32 else ""
    return Peaks(float32 and float32["gflops"], source, int8 and int8["gops"], flops)


def _reference_key(info: dict, kind: str) -> tuple:
    """The key of the row's eager or compiled reference: the same U-Net's where rows name theirs."""
    if "unet" in info:
        return ("reference", info["unet"], kind, info["batch_size"])
    return ({"eager": EAGER, "torch.compile": COMPILED}[kind], info["batch_size"])


def speedup_rows(benchmarks: list[dict]) -> list[dict]:
    """One row per (variant, batch size) that the run measured: side ('runtime' or 'reference'), ms per image, the
    ratios eager / this and compiled / this (where the run has those references of the row's U-Net at that batch
    size), and the floor for the variant's precision and U-Net."""
    peaks = measured_peaks(benchmarks)
    measured = [b["extra_info"] for b in benchmarks if "ms_per_image" in b["extra_info"]]
    by_key = {(info["variant"], info["batch_size"]): info for info in measured}
    by_key |= {
        ("reference", info["unet"], info["reference"], info["batch_size"]): info
        for info in measured
        if "unet" in info and "reference" in info
    }
    evaluations = max((info.get("unet_evaluations") or 0 for info in measured), default=0) or None
    rows = []
    for info in sorted(
        measured, key=lambda i: (-i["batch_size"], not i["backend"].startswith("runtime"), -i["ms_per_image"])
    ):
        batch, ms = info["batch_size"], info["ms_per_image"]
        precision = info.get("precision", "float32")
        row = {
            "variant": info["variant"],
            "side": "runtime" if info["backend"].startswith("runtime") else "reference",
            "batch_size": batch,
            "precision": precision,
            "ms_per_image": ms,
        }
        for name, kind in (("vs_eager", "eager"), ("vs_compiled", "torch.compile")):
            if (reference := by_key.get(_reference_key(info, kind))) is not None:
                row[name] = reference["ms_per_image"] / ms
        if evaluations:
            row["floor_ms"] = peaks.floor_ms(
                info.get("unet_evaluations") or evaluations, precision, info.get("unet_flops_per_evaluation")
            )
        rows.append(row)
    return rows


def speedup_markdown(data: dict) -> str:
    """The table and the lines that say what it was measured on."""
    benchmarks = data["benchmarks"]
    peaks = measured_peaks(benchmarks)
    lines = [f"CPU: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}; {data['datetime']}.", ""]
    if peaks.float32_gflops:
        lines.append(f"float32 matrix product: {peaks.float32_gflops:.1f} GFLOP/s ({peaks.float32_source}).")
    if peaks.int8_gops:
        lines.append(f"int8 matrix product (onnxruntime MatMulInteger): {peaks.int8_gops:.1f} GOP/s.")
    nets = {
        i["unet"]: i["unet_flops_per_evaluation"]
        for b in benchmarks
        if "unet_flops_per_evaluation" in (i := b["extra_info"]) and "unet" in i
    }
    if nets:
        lines.append("U-Net MFLOP per evaluation: " + ", ".join(f"{n} {f / 1e6:.1f}" for n, f in nets.items()) + ".")
    elif peaks.unet_flops:
        lines.append(f"U-Net: {peaks.unet_flops / 1e6:.1f} MFLOP per evaluation.")
    lines += [
        "",
        f"| variant | batch | ms per image | eager / this | compiled / this | floor ({'float32 or int8'}) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def cell(value, fmt):
        return format(value, fmt) if value is not None else "-"

    for row in speedup_rows(benchmarks):
        batch = "1 (frame by frame)" if row["batch_size"] == 1 else str(row["batch_size"])
        side = "runtime" if row["side"] == "runtime" else "PyTorch reference"
        lines.append(
            f"| {side}: {row['variant']} | {batch} | {row['ms_per_image']:.1f} | {cell(row.get('vs_eager'), '.2f')} "
            f"| {cell(row.get('vs_compiled'), '.2f')} | {cell(row.get('floor_ms'), '.1f')} ms ({row['precision']}) |"
        )
    return "\n".join(lines) + "\n"


@click.command()
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def main(results: Path) -> None:
    """Print the markdown table of RESULTS."""
    click.echo(speedup_markdown(json.loads(results.read_text())))
