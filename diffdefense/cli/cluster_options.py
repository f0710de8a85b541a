"""--ray [ADDRESS] and the options that go with it, for defend and evaluate; the work itself is diffdefense.cluster's.

The options reach the commands through the context (as defender_options' do), so that each command takes them with
one decorator and one call."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

FORMATS = ("parquet", "npz")


def _address(ctx, param, value):
    from diffdefense.cluster.connect import check_address

    if value is not None:
        try:
            check_address(value)
        except ValueError as err:
            raise click.BadParameter(str(err)) from None
    return _remember(ctx, param, value)


def _remember(ctx, param, value):
    ctx.meta[f"cluster.{param.name}"] = value
    return value


ray_option = click.option(
    "--ray",
    "ray",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    expose_value=False,
    callback=_address,
    help="Run on a Ray cluster: alone, one started on this machine (or $RAY_ADDRESS's); or the address of one "
    "('auto' on a node where `ray start` ran, HOST:PORT, ray://HOST:PORT). Needs the [cluster] extra.",
)


def _cpus_option(default, help):
    return click.option(
        "--cpus-per-worker",
        type=click.IntRange(min=1),
        default=default,
        expose_value=False,
        callback=_remember,
        help=help,
    )


def cluster_defend_options(command):
    """--ray, --out, --format, --reconstructions, --workers, --cpus-per-worker."""
    for option in reversed(
        [
            ray_option,
            click.option(
                "--out",
                type=click.Path(file_okay=False, path_type=Path),
                default=None,
                expose_value=False,
                callback=_remember,
                help="With --ray: a new folder for the results (shards and summary.json).",
            ),
            click.option(
                "--format",
                type=click.Choice(FORMATS),
                default="parquet",
                show_default=True,
                expose_value=False,
                callback=_remember,
                help="With --ray: the shards' format.",
            ),
            click.option(
                "--reconstructions",
                is_flag=True,
                expose_value=False,
                callback=_remember,
                help="With --ray: write each input's reconstruction too.",
            ),
            click.option(
                "--workers",
                type=click.IntRange(min=1),
                default=None,
                expose_value=False,
                callback=_remember,
                help="With --ray: Defender actors [default: as many as the cluster's CPUs hold].",
            ),
            _cpus_option(1, "With --ray: CPUs per worker, and onnxruntime's and OpenMP's threads in it [default: 1]."),
        ]
    ):
        command = option(command)
    return command


def cluster_evaluate_options(command):
    """--ray, --cpus-per-worker."""
    cpus = _cpus_option(
        None,
        "With --ray: CPUs per task, and torch's threads in it [default: torch's threads here, which makes the results "
        "those of a run without --ray bit for bit; other counts round float sums differently].",
    )
    return ray_option(cpus(command))


def _chosen(names: tuple[str, ...]) -> dict | None:
    """The cluster options given, or None without --ray (UsageError if others were given without it)."""
    ctx = click.get_current_context()
    values = {name: ctx.meta.get(f"cluster.{name}") for name in names}
    if values["ray"] is not None:
        return values
    given = [name for name in names if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        raise click.UsageError(f"--{given[0].replace('_', '-')} goes with --ray.")
    return None


def _progress(what: str):
    """progress(done, total, ...) printing to stderr at most every 2 seconds, and at the end."""
    last = [0.0]

    def report(done: int, total: int, *_) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= 2.0:
            last[0] = now
            click.echo(f"{what} {done}/{total}", err=True)

    return report


def defend_on_cluster(defender, preprocessor, inputs, batch_size, fail_on_attack, as_json, check_labels, exit_code):
    """defend --ray: the Defender's choices on every worker; the results as shards in --out. False without --ray."""
    options = _chosen(("ray", "out", "format", "reconstructions", "workers", "cpus_per_worker"))
    if options is None:
        return False
    from diffdefense.cluster.bulk import DefenderSpec, defend_on_ray
    from diffdefense.cluster.connect import RayMissing, ray_cluster
    from diffdefense.runtime.inputs import expand_inputs, read_image_file

    if options["out"] is None:
        raise click.UsageError("--ray writes its results into a folder: give it with --out DIR.")
    paths = expand_inputs(inputs)
    files = [read_image_file(path, preprocessor) for path in paths]
    for path, file in zip(paths, files, strict=True):
        check_labels(file.labels, len(defender.label_names), path)
    spec, label_names = DefenderSpec.of(defender), defender.label_names
    defender.close()
    try:
        with ray_cluster(options["ray"]):
            summary = defend_on_ray(
                spec,
                files,
                [str(path) for path in paths],
                options["out"],
                batch_size=batch_size,
                workers=options["workers"],
                cpus_per_worker=options["cpus_per_worker"],
                file_format=options["format"],
                reconstructions=options["reconstructions"],
                label_names=label_names,
                progress=_progress("defended images"),
            )
    except RayMissing as err:
        raise click.ClickException(str(err)) from err
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(
            f"{summary['images']} images defended on Ray ({summary['workers']} workers of {summary['cpus_per_worker']} "
            f"CPUs, {summary['images_per_second']} images/s): {summary['flagged']} flagged (threshold "
            f"{summary['threshold']}). Results: {options['out']} ({len(summary['shards'])} {summary['format']} "
            "shards, summary.json)"
        )
    if fail_on_attack and summary["flagged"]:
        sys.exit(exit_code)
    return True


def evaluation_runner(run_evaluation):
    """run_evaluation itself without --ray; with it, a function of the same arguments that runs on Ray."""
    options = _chosen(("ray", "cpus_per_worker"))
    if options is None:
        return run_evaluation

    def on_ray(config, out, data_root, attack_cache):
        from diffdefense.cluster.connect import RayMissing, ray_cluster
        from diffdefense.cluster.evaluation import evaluate_on_ray

        try:
            with ray_cluster(options["ray"]):
                return evaluate_on_ray(
                    config,
                    out,
                    data_root,
                    attack_cache,
                    cpus_per_task=options["cpus_per_worker"],
                    progress=_progress("tasks done"),
                )
        except RayMissing as err:
            raise click.ClickException(str(err)) from err

    return on_ray
