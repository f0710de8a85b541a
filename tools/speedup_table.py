"""The README's runtime-against-reference table, from a pytest-benchmark JSON of benchmarks/test_bench_defense.py.

python tools/speedup_table.py benchmarks/results/defense_cpu.json

Where the run also measured the CPU's float32 matrix-product rate (test_sgemm_peak), each row gets the floor it
sets: the U-Net's FLOPs at that rate, the least time per image any backend could take, and so the largest ratio to
the reference that any backend could reach on that machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

PEAK_BACKEND = "sgemm float32"


def compute_peak(benchmarks: list[dict]) -> dict | None:
    """The fastest sgemm benchmark's record (GFLOP/s, library, threads, the U-Net's FLOPs per evaluation), or None
    where the run has none."""
    peaks = [b["extra_info"] for b in benchmarks if b["extra_info"].get("backend") == PEAK_BACKEND]
    return max(peaks, key=lambda info: info["gflops"], default=None)


def speedup_rows(benchmarks: list[dict]) -> list[dict]:
    """One row per (preset, batch size): both backends' milliseconds per image and reference / runtime, and where
    the peak was measured, floor_ms (U-Net FLOPs at the peak rate) and the ratio that floor would give."""
    cells: dict[tuple[str, int], dict[str, float]] = {}
    evaluations: dict[str, int] = {}
    for bench in benchmarks:
        info = bench["extra_info"]
        if info.get("backend") == PEAK_BACKEND:
            continue
        preset = info["preset"]
        side = "runtime" if info["backend"].startswith("runtime") else "reference"
        cells.setdefault((preset, info["batch_size"]), {})[side] = info["ms_per_image"]
        if "unet_evaluations" in info:
            evaluations[preset] = info["unet_evaluations"]
    peak = compute_peak(benchmarks)
    rows = []
    for (preset, batch_size), ms in sorted(cells.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        if {"runtime", "reference"} <= set(ms):
            row = dict(preset=preset, batch_size=batch_size, evaluations=evaluations.get(preset), **ms)
            row["ratio"] = ms["reference"] / ms["runtime"]
            if peak and row["evaluations"]:
                row["floor_ms"] = 1000 * row["evaluations"] * peak["unet_flops_per_evaluation"] / (peak["gflops"] * 1e9)
                row["largest_ratio"] = ms["reference"] / row["floor_ms"]
            rows.append(row)
    return rows


@click.command()
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def main(results: Path) -> None:
    """Print the markdown table of RESULTS (a --benchmark-json file of benchmarks/test_bench_defense.py)."""
    data = json.loads(results.read_text())
    click.echo(f"Machine: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}; {data['datetime']}.\n")
    peak = compute_peak(data["benchmarks"])
    if peak:
        click.echo(
            f"float32 matrix product: {peak['gflops']:.1f} GFLOP/s ({peak.get('library', '?')}, "
            f"{peak['threads']} threads); U-Net: {peak['unet_flops_per_evaluation'] / 1e6:.1f} MFLOP per evaluation.\n"
        )
    extra = " floor at that rate | largest possible ratio |" if peak else ""
    header = "| preset | U-Net evals / image | batch | runtime (onnxruntime CPU) | PyTorch reference | ratio |"
    click.echo(header + extra)
    click.echo("| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if peak else ""))
    for row in speedup_rows(data["benchmarks"]):
        batch = "1 (frame by frame)" if row["batch_size"] == 1 else str(row["batch_size"])
        line = (
            f"| `{row['preset']}` | {row['evaluations']} | {batch} | {row['runtime']:.1f} ms | "
            f"{row['reference']:.1f} ms | {row['ratio']:.2f} |"
        )
        if "floor_ms" in row:
            line += f" {row['floor_ms']:.1f} ms | {row['largest_ratio']:.2f} |"
        click.echo(line)


if __name__ == "__main__":
    main()
