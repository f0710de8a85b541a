"""diffdefense bench: a quick latency measurement of the runtime on this machine, with no pytest needed.

For the full grid with pytest-benchmark (the latency table of docs/performance.md), see
benchmarks/test_bench_latency.py."""

from __future__ import annotations

import json
import time

import click
import numpy as np

from diffdefense.cli.common import main
from diffdefense.cli.defender_options import defender_options, make_defender


def timed(call, rounds: int, warmup: int) -> np.ndarray:
    """Seconds per call over `rounds` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return np.array(times)


def percentiles_ms(seconds: np.ndarray, per: int) -> dict:
    return {f"p{q}_ms": 1000 * float(np.percentile(seconds, q)) / per for q in (50, 99)}


def _batch_sizes(ctx, param, value):
    try:
        sizes = [int(v) for v in value.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"expected positive integers separated by commas, but got {value!r}")
    return sizes


@main.command("bench")
@defender_options
@click.option("--batch-sizes", callback=_batch_sizes, default="1,8", show_default=True, help="Images per call.")
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def bench_command(bundle, dataset, preset, provider, threshold, batch_sizes, rounds, warmup, as_json) -> None:
    """Time the defence end to end (per image) and the U-Net alone (per call on B x R candidates) on the shipped
    sample images; print p50 and p99."""
    from diffdefense.cli.info import environment
    from diffdefense.runtime.backends import resolve_shards
    from diffdefense.shipped import SAMPLES_DIR

    defender = make_defender(bundle, dataset, preset, provider, threshold)
    with np.load(SAMPLES_DIR / f"{defender.bundle.manifest.dataset}.npz", allow_pickle=False) as samples:
        pool = samples["images"]
    rows = []
    for batch in batch_sizes:
        images = np.resize(pool, (batch, *pool.shape[1:]))  # repeats the samples when the batch is larger
        n = batch * defender.settings.num_candidates
        x = np.random.default_rng(0).standard_normal((n, *pool.shape[1:]), dtype=np.float32)
        t = np.full(n, defender.chain.timesteps[0], dtype=np.int64)
        end_to_end = timed(lambda images=images: defender(images), rounds, warmup)
        engine = timed(lambda x=x, t=t: defender.unet.run(x, t), rounds, warmup)
        rows.append(
            {
                "batch": batch,
                "end_to_end_per_image": percentiles_ms(end_to_end, batch),
                "unet_call": percentiles_ms(engine, 1),
            }
        )
    env = environment()
    backend = defender.backend
    shards, _ = resolve_shards(backend.shards, backend.threads, backend.provider)  # parts per U-Net call
    report = {
        "provider": defender.unet.provider,
        "precision": defender.precision,
        "unet_graphs": defender.unet_graphs,
        "shards": shards,
        "step_ops": defender.step_ops_name,
        "settings": defender.settings.to_dict(),
        "unet_evaluations_per_image": defender.settings.unet_evaluations,
        "rounds": rounds,
        "machine": env["platform"],
        "rows": rows,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    s = defender.settings
    click.echo(
        f"{report['provider']}, {defender.precision} U-Net graphs ({defender.unet_graphs}, each call in {shards} "
        f"part{'s' if shards > 1 else ''}), steps by "
        f"{report['step_ops']}; R {s.num_candidates}, L {s.iterations}, "
        f"T* {s.num_steps} ({s.unet_evaluations} U-Net evaluations per image); {rounds} rounds"
    )
    for row in rows:
        e, u = row["end_to_end_per_image"], row["unet_call"]
        click.echo(
            f"batch {row['batch']:>3}: {e['p50_ms']:8.1f} ms per image p50, {e['p99_ms']:8.1f} p99; one U-Net call on "
            f"{row['batch'] * s.num_candidates} candidates {u['p50_ms']:.1f} ms p50, {u['p99_ms']:.1f} p99"
        )
