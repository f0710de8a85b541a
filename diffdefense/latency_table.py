"""The latency table of docs/performance.md ("Latency per backend and setting") and a plot of latency against robust
accuracy, from a pytest-benchmark JSON of benchmarks/test_bench_latency.py.

    python tools/latency_table.py benchmarks/results/latency_cpu.json --plot docs/figures/latency_vs_accuracy.png

Robust accuracy comes from the preset sweep (tools/tune_preset.py: 200 attacked MNIST *training* images), joined
by the exact settings; settings the sweep did not measure are left out of the plot.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import click

SWEEP = Path("docs/results/preset_sweep_mnist_train200.json")


def table(benchmarks: list[dict], machine: str) -> str:
    rows = defaultdict(dict)
    for bench in benchmarks:
        info = bench["extra_info"]
        key = (info["backend"], info["setting"], info["unet_evaluations"], info.get("step_ops", ""))
        rows[key][(info["kind"], info["batch"])] = info
    columns = [("end-to-end", 1), ("end-to-end", 8), ("unet-engine", 8)]
    lines = [
        f"Machine: {machine}. Milliseconds per image end to end (defence + classifier), and per U-Net call on the "
        "B x R candidates of a batch of 8 (engine); p50 / p99 over the rounds.",
        "",
        "| backend | setting | U-Net evals / image | step ops | batch 1 p50 / p99 | batch 8 p50 / p99 "
        "| engine p50 / p99 |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for (backend, setting, evaluations, step_ops), cells in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][2])):
        values = [f"{cells[c]['p50_ms']:.1f} / {cells[c]['p99_ms']:.1f}" if c in cells else "" for c in columns]
        lines.append(f"| {backend} | {setting} | {evaluations} | {step_ops} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def plot(benchmarks: list[dict], sweep_path: Path, out: Path) -> int:
    """Latency (batch 8, per image) against the mean robust accuracy over the sweep's attacks; returns points drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = json.loads(sweep_path.read_text())["rows"]
    points = []
    for bench in benchmarks:
        info = bench["extra_info"]
        if info["kind"] != "end-to-end" or info["batch"] != 8:
            continue
        for row in sweep:
            if row["settings"] == info["settings"]:
                attacks = [v for k, v in row["accuracy"].items() if k != "clean"]
                points.append((info["p50_ms"], sum(attacks) / len(attacks), f"{info['backend']} {info['setting']}"))
    if not points:
        return 0
    figure, axes = plt.subplots(figsize=(6, 4))
    for latency, accuracy, label in points:
        axes.scatter(latency, accuracy)
        axes.annotate(label, (latency, accuracy), fontsize=7, xytext=(4, 2), textcoords="offset points")
    axes.set_xlabel("ms per image (batch 8, p50)")
    axes.set_ylabel("mean robust accuracy, %")
    axes.set_title(
        "Latency against robust accuracy\n(FGSM, PGD, Square, AutoAttack on 200 MNIST training images)", fontsize=9
    )
    axes.grid(alpha=0.3)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    return len(points)


@click.command()
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--sweep", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=SWEEP, show_default=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(results: Path, sweep: Path, plot_path: Path | None) -> None:
    record = json.loads(results.read_text())
    machine = record["machine_info"]
    cpu = machine.get("cpu", {}).get("brand_raw", machine.get("processor", "?"))
    name = f"{cpu}, {machine.get('cpu', {}).get('count', '?')} logical cores, {machine.get('system', '')}"
    click.echo(table(record["benchmarks"], name))
    if plot_path:
        click.echo(f"\n{plot(record['benchmarks'], sweep, plot_path)} points plotted in {plot_path}")
