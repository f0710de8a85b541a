"""diffdefense data: fetch the preset data sets, and show where data are read from."""

from __future__ import annotations

import click

from diffdefense.cli.common import data_root_option, main
from diffdefense.data import default_data_root
from diffdefense.data_sources import SOURCES


@main.group("data")
def data() -> None:
    """Fetch the MNIST and KMNIST IDX files, and show the data root in use."""


@data.command("fetch")
@click.argument("dataset", type=click.Choice(sorted(SOURCES)))
@click.option(
    "--from",
    "origin",
    default=None,
    help="Base URL or folder to fetch from (a folder: the data set's own, or one holding it) [default: the official "
    "mirrors].",
)
@data_root_option
def data_fetch(dataset, origin, data_root) -> None:
    """Download or copy DATASET's official IDX files into the data root, each checked against the sha256 the package
    records, and placed only once all are good. Files already there and good are kept."""
    from diffdefense.data_fetch import fetch_dataset

    root = data_root or default_data_root()
    try:
        result = fetch_dataset(dataset, root, origin, progress=lambda line: click.echo(line, err=True))
    except PermissionError as err:
        raise click.ClickException(f"Cannot write the {dataset} files under {root}: {err}") from err
    for name in result.placed:
        click.echo(f"placed   {name}")
    for name in result.present:
        click.echo(f"present  {name}")
    for name in result.skipped:
        click.echo(f"skipped  {name} (optional; the source does not have it)")
    click.echo(f"{dataset}: {result.folder}")


@data.command("path")
@data_root_option
def data_path(data_root) -> None:
    """Print the data root in use: --data-root, else $DIFFDEFENSE_DATA, else the user cache."""
    click.echo(str(data_root or default_data_root()))
