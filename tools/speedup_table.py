"""The side-by-side latency table (runtime variants, eager and compiled PyTorch reference, floors) from a
pytest-benchmark JSON of benchmarks/test_bench_defense.py; the logic is diffdefense.speedup.

    python tools/speedup_table.py benchmarks/results/defense_cpu.json
"""

import json
from pathlib import Path

import click

from diffdefense.speedup import speedup_markdown


@click.command()
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def main(results: Path) -> None:
    """Print the markdown table of RESULTS."""
    click.echo(speedup_markdown(json.loads(results.read_text())))


if __name__ == "__main__":
    main()
