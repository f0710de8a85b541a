"""Where the runtime's time goes: the shipped U-Net under onnxruntime's own profiler, per operator type.

    python tools/profile_unet.py --batch 96 --out docs/results/unet_profile_cpu_batch96.json

The batch is what one U-Net call of the `default` preset carries for 8 images (8 x 12 candidates). onnxruntime
rewrites the graph before it runs it (on x86: convolutions in its blocked NCHWc layout, ReorderInput/ReorderOutput
where a node cannot take that layout, SiLU fused to QuickGelu), so the table names the kernels that ran. Its
"convolution share" bounds what any faster non-convolution code could give: if every other kernel took no time,
a call would take that share of what it takes now.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import click
import numpy as np

CONVOLUTION_OPS = {"Conv", "FusedConv", "QLinearConv"}  # float32, fused with its activation, int8


def op_time_shares(events: list[dict], calls: int) -> list[dict]:
    """Kernel time per operator type from onnxruntime profile events: one row per type, the slowest first, with
    the share of all kernel time, milliseconds per call and nodes per call."""
    if calls < 1:
        raise ValueError(f"Expected at least one profiled call, but got {calls}.")
    total_us: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event["args"]["op_name"]
            total_us[op] += event["dur"]
            count[op] += 1
    everything = sum(total_us.values())
    if everything <= 0:
        raise ValueError("Expected kernel events in the profile, but it holds none.")
    rows = [
        dict(op=op, share=us / everything, ms_per_call=us / calls / 1e3, nodes_per_call=count[op] / calls)
        for op, us in total_us.items()
    ]
    return sorted(rows, key=lambda row: -row["share"])


def profile_graph(graph: bytes, batch: int, calls: int, threads: int, seed: int, folded: bool = False) -> dict:
    """Run the U-Net graph `calls` times on one seeded batch (after two unprofiled warm-up calls) under the
    profiler; the per-operator rows, the convolution share and the wall time per call."""
    import onnxruntime

    rng = np.random.default_rng(seed)
    feed = {"x": rng.standard_normal((batch, 1, 28, 28)).astype(np.float32), "t": np.full(batch, 14, dtype=np.int64)}
    if folded:  # the timestep is in the graph
        del feed["t"]

    def cpu_session(profile_prefix: str | None = None):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        return onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    session = cpu_session()
    for _ in range(2):
        session.run(None, feed)
    start = time.perf_counter()
    for _ in range(calls):
        session.run(None, feed)
    wall_ms = (time.perf_counter() - start) / calls * 1e3

    with tempfile.TemporaryDirectory() as folder:
        profiled = cpu_session(os.path.join(folder, "unet"))
        for _ in range(calls):
            profiled.run(None, feed)
        events = json.loads(Path(profiled.end_profiling()).read_text())
    # The profiled session is not warmed up: its first call's one-off costs are in the shares, spread over `calls`.
    rows = op_time_shares(events, calls)
    convolution = sum(row["share"] for row in rows if row["op"] in CONVOLUTION_OPS)
    return dict(rows=rows, convolution_share=convolution, wall_ms_per_call=wall_ms)


@click.command()
@click.option(
    "--bundle",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("diffdefense/bundles/mnist"),
    show_default=True,
)
@click.option(
    "--batch", type=click.IntRange(min=1), default=96, show_default=True, help="Candidates per U-Net call (B x R)."
)
@click.option("--calls", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--timestep", type=int, default=None, help="The folded graph of this timestep [the general graph].")
@click.option("--precision", type=click.Choice(["float32", "int8"]), default="float32", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the numbers as JSON.")
def main(bundle: Path, batch: int, calls: int, threads: int, seed: int, timestep, precision, out: Path | None) -> None:
    """Profile the bundle's U-Net (verified as the runtime loads it) on onnxruntime's CPU provider."""
    import onnxruntime

    from diffdefense.runtime.bundle import load_bundle

    loaded = load_bundle(bundle)
    if timestep is None:
        name = loaded.manifest.roles["unet"]
    else:
        graphs = loaded.manifest.folded_graphs(precision)
        if timestep not in graphs:
            have = sorted(graphs)
            raise click.ClickException(f"The bundle has {precision} folded graphs for t in {have}, not t={timestep}.")
        name = graphs[timestep]
    result = profile_graph(loaded.file(name), batch, calls, threads, seed, folded=timestep is not None)
    click.echo(
        f"{batch} candidates per call, {threads} threads: {result['wall_ms_per_call']:.2f} ms per call "
        f"({result['wall_ms_per_call'] / batch:.3f} ms per candidate), without the profiler.\n"
    )
    click.echo("| kernel | share of kernel time | ms per call | nodes per call |")
    click.echo("| --- | ---: | ---: | ---: |")
    for row in result["rows"]:
        click.echo(
            f"| {row['op']} | {100 * row['share']:.1f} % | {row['ms_per_call']:.2f} | {row['nodes_per_call']:g} |"
        )
    click.echo(f"\nConvolutions: {100 * result['convolution_share']:.1f} % of kernel time.")
    if out:
        record = dict(
            bundle=str(bundle),
            graph=name,
            unet_sha256=loaded.manifest.files[name].sha256,
            batch=batch,
            calls=calls,
            threads=threads,
            seed=seed,
            machine=platform.processor() or platform.machine(),
            onnxruntime=onnxruntime.__version__,
            **result,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        click.echo(f"Wrote {out}")
