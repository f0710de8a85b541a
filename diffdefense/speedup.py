"""The side-by-side latency table from a pytest-benchmark JSON of benchmarks/test_bench_defense.py.

Every runtime and reference variant measured in the run, per batch size, in milliseconds per image, with its ratio
to the PyTorch reference on the same weights (eager and compiled), and the floors the run's matrix-product rates
set: the U-Net's FLOPs per image at the float32 rate and at the int8 rate, the least time any backend of that
precision could take on that CPU.

    python tools/speedup_table.py benchmarks/results/defense_cpu.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import click

FLOAT32_PEAK = "sgemm float32"
INT8_PEAK = "gemm int8"
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

    def floor_ms(self, evaluations: int, precision: str = "float32") -> float | None:
        rate = self.int8_gops if precision == "int8" else self.float32_gflops
        if not rate or not self.unet_flops:
            return None
        return 1000 * evaluations * self.unet_flops / (rate * 1e9)


def measured_peaks(benchmarks: list[dict]) -> Peaks:
    infos = [b["extra_info"] for b in benchmarks]
    float32 = max((i for i in infos if i.get("backend") == FLOAT32_PEAK), key=lambda i: i["gflops"], default=None)
    int8 = max((i for i in infos if i.get("backend") == INT8_PEAK), key=lambda i: i["gops"], default=None)
    flops = (float32 or int8 or {}).get("unet_flops_per_evaluation")
    source = f"{float32.get('library', '?')}, {float32.get('threads', '?')} threads" if float32 else ""
    return Peaks(float32 and float32["gflops"], source, int8 and int8["gops"], flops)


def speedup_rows(benchmarks: list[dict]) -> list[dict]:
    """One row per (variant, batch size) that the run measured: side ('runtime' or 'reference'), ms per image, the
    ratios eager / this and compiled / this (where the run has those references at that batch size), and the
    floor for the variant's precision."""
    peaks = measured_peaks(benchmarks)
    measured = [b["extra_info"] for b in benchmarks if "ms_per_image" in b["extra_info"]]
    by_key = {(info["variant"], info["batch_size"]): info for info in measured}
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
        for name, reference in (("vs_eager", EAGER), ("vs_compiled", COMPILED)):
            if (reference, batch) in by_key:
                row[name] = by_key[(reference, batch)]["ms_per_image"] / ms
        if evaluations:
            row["floor_ms"] = peaks.floor_ms(info.get("unet_evaluations") or evaluations, precision)
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
    if peaks.unet_flops:
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
