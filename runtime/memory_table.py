"""Peak resident memory of one Defender call against its batch size, each call in a fresh process.

    python tools/memory_table.py --batch-sizes 8,64,256 --compare-batch 8
    python tools/memory_table.py --batch-sizes 8,32 --memory-budget 1000000000000   # unchunked, as before chunking

Each row runs a child process (memory_probe) that loads the shipped bundle, defends one image (so that the models
are loaded and onnxruntime's buffers made), then defends the batch (the shipped samples repeated) in one call, and
reports its own peak resident set size (ru_maxrss) before and after that call. --compare-batch K runs each batch
again with max_batch=K and says whether labels, reconstructions, errors, latents and probabilities are the same
bits. The per-candidate costs in runtime/chunking.py are the growth of the peak between two unchunked rows, per
candidate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

FIELDS = ("labels", "reconstructions", "reconstruction_error", "latents", "probabilities")


def measure(batch: int, preset: str, gradient: str, max_batch, memory_budget, save: Path | None) -> dict:
    options = dict(
        batch=batch, preset=preset, gradient=gradient, max_batch=max_batch, memory_budget=memory_budget,
        save=str(save) if save else None, fields=FIELDS,
    )  # fmt: skip
    command = [sys.executable, "-m", "diffdefense.runtime.memory_probe", json.dumps(options)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise click.ClickException(f"The child process for batch {batch} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def same_results(first: Path, second: Path) -> bool:
    for field in FIELDS:
        a, b = np.load(first / f"{field}.npy"), np.load(second / f"{field}.npy")
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            return False
    return True


@click.command()
@click.option("--batch-sizes", default="8,64,256", show_default=True, help="Comma-separated images per call.")
@click.option("--preset", default="default", show_default=True)
@click.option("--gradient", type=click.Choice(["straight-through", "full"]), default="straight-through")
@click.option("--max-batch", type=click.IntRange(min=1), default=None, help="Defender's max_batch (None: budget).")
@click.option("--memory-budget", type=click.IntRange(min=1), default=None, help="Defender's memory_budget, bytes.")
@click.option("--compare-batch", type=click.IntRange(min=1), default=None, help="Also run with max_batch=K; compare.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(batch_sizes, preset, gradient, max_batch, memory_budget, compare_batch, json_path) -> None:
    rows = []
    header = "| batch | images per chunk | chunks | RSS before the call | peak RSS | seconds |"
    if compare_batch:
        header += f" same bits as max_batch={compare_batch} |"
    click.echo(header + "\n" + "|" + " --- |" * (header.count("|") - 1))
    for batch in (int(b) for b in batch_sizes.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            whole, cut = Path(folder) / "whole", Path(folder) / "cut"
            whole.mkdir(), cut.mkdir()
            row = {"batch": batch, **measure(batch, preset, gradient, max_batch, memory_budget, whole)}
            if compare_batch:
                measure(batch, preset, gradient, compare_batch, memory_budget, cut)
                row["same_bits_as_max_batch"] = {"max_batch": compare_batch, "same": same_results(whole, cut)}
        rows.append(row)
        line = (
            f"| {batch} | {row['images_per_chunk']} | {row['chunks']} | {row['before_mib']:.0f} MiB | "
            f"{row['peak_mib']:.0f} MiB | {row['seconds']:.1f} |"
        )
        if compare_batch:
            line += f" {'yes' if row['same_bits_as_max_batch']['same'] else 'NO'} |"
        click.echo(line)
    if json_path:
        record = dict(preset=preset, gradient=gradient, max_batch=max_batch, memory_budget=memory_budget, rows=rows)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(record, indent=2) + "\n")
