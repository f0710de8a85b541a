"""The README's runtime-against-reference table, from a pytest-benchmark JSON of benchmarks/test_bench_defense.py.

python tools/speedup_table.py benchmarks/results/defense_cpu.json
"""

from __future__ import annotations

import json
from pathlib import Path

import click


def speedup_rows(benchmarks: list[dict]) -> list[dict]:
    """One row per (preset, batch size): both backends' milliseconds per image and reference / runtime."""
    cells: dict[tuple[str, int], dict[str, float]] = {}
    evaluations: dict[str, int] = {}
    for bench in benchmarks:
        info = bench["extra_info"]
        preset = info["preset"]
        side = "runtime" if info["backend"].startswith("runtime") else "reference"
        cells.setdefault((preset, info["batch_size"]), {})[side] = info["ms_per_image"]
        if "unet_evaluations" in info:
            evaluations[preset] = info["unet_evaluations"]
    rows = []
    for (preset, batch_size), ms in sorted(cells.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        if {"runtime", "reference"} <= set(ms):
            ratio = ms["reference"] / ms["runtime"]
            rows.append(
                dict(preset=preset, batch_size=batch_size, evaluations=evaluations.get(preset), **ms, ratio=ratio)
            )
    return rows


@click.command()
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def main(results: Path) -> None:
    """Print the markdown table of RESULTS (a --benchmark-json file of benchmarks/test_bench_defense.py)."""
    data = json.loads(results.read_text())
    click.echo(f"Machine: {data['machine_info'].get('cpu', {}).get('brand_raw', '?')}; {data['datetime']}.\n")
    click.echo("| preset | U-Net evals / image | batch | runtime (onnxruntime CPU) | PyTorch reference | ratio |")
    click.echo("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in speedup_rows(data["benchmarks"]):
        batch = "1 (frame by frame)" if row["batch_size"] == 1 else str(row["batch_size"])
        click.echo(
            f"| `{row['preset']}` | {row['evaluations']} | {batch} | {row['runtime']:.1f} ms | "
            f"{row['reference']:.1f} ms | {row['ratio']:.2f} |"
        )


if __name__ == "__main__":
    main()
