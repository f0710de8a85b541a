"""diffdefense evaluate and report: the robustness report."""

from __future__ import annotations

from pathlib import Path

import click

from diffdefense.cli.cluster_options import cluster_evaluate_options, evaluation_runner
from diffdefense.cli.common import (
    PRESET_NAMES,
    data_root_option,
    dataset_option,
    main,
    seed_option,
)
from diffdefense.evaluation_config import ADAPTIVE_ATTACKS, ADAPTIVE_GRADIENTS, EvaluationConfig
from diffdefense.shipped import UNET_NAMES

DEFAULTS = EvaluationConfig()  # the options' defaults are the config's own


@main.command("evaluate")
@dataset_option
@click.option("--preset", type=click.Choice(sorted(PRESET_NAMES)), default="paper", show_default=True)
@click.option(
    "--set",
    "overrides",
    default="",
    metavar="KEY=VALUE,...",
    help="Defence settings over the preset's (DefenseSettings fields, docs/presets.md), e.g. "
    "'refine_start_step=20,num_candidates=24'; the report names the preset with them.",
)
@click.option("-n", "--num-images", type=click.IntRange(min=1), default=DEFAULTS.num_images, show_default=True)
@click.option(
    "--unet",
    type=click.Choice(UNET_NAMES),
    default=DEFAULTS.unet,
    show_default=True,
    help="The shipped noise predictor (docs/training.md): GroupNorm ('unet'), BatchNorm folded at export "
    "('unet_bn'), or the narrow BatchNorm net trained on every timestep ('unet_bn_small') or on t < 15 "
    "('unet_bn_small_t15', mnist-fast's).",
)
@click.option(
    "--attack",
    "attacks",
    multiple=True,
    help=f"Attack to run (repeat); default: the paper's six, {', '.join(DEFAULTS.attacks)}.",
)
@click.option(
    "--black-box/--no-black-box", default=DEFAULTS.black_box, show_default=True, help="Also transfer from Model B."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULTS.batch_size, show_default=True)
@click.option(
    "--adaptive-images",
    type=click.IntRange(min=0),
    default=DEFAULTS.adaptive_images,
    show_default=True,
    help="Run attacks through the defence on the first N images (0: skip): by default BPDA-PGD and true-gradient "
    "EOT-PGD.",
)
@click.option("--adaptive-steps", type=click.IntRange(min=1), default=DEFAULTS.adaptive_steps, show_default=True)
@click.option(
    "--adaptive-attack",
    "adaptive_attacks",
    type=click.Choice(ADAPTIVE_ATTACKS),
    multiple=True,
    help=f"Which attacks run through the defence (repeat); default {', '.join(DEFAULTS.adaptive_attacks)}. APGD-CE "
    "and APGD-DLR are AutoAttack's components (their step size adapts; their rows name the steps).",
)
@click.option(
    "--adaptive-gradient",
    "adaptive_gradients",
    type=click.Choice(ADAPTIVE_GRADIENTS),
    multiple=True,
    help="Which gradients through the defence (repeat); default bpda and true. bpda: the identity backward with "
    "the defence's own seed; bpda-eot: the identity averaged over --eot-iter draws of the defence's randomness; "
    "true: the unrolled optimisation's gradient with EOT (costs far more).",
)
@click.option("--eot-iter", type=click.IntRange(min=1), default=DEFAULTS.eot_iter, show_default=True)
@seed_option
@data_root_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Report folder; its cache/ makes an interrupted run resume.",
)
@click.option(
    "--attack-cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of adversarial sets to reuse and add to, shared by runs of other presets on the same images "
    "and seed (the attacks do not depend on the defence); default: the report's cache/attacks.",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Rewrite a report folder even where this run leaves out rows that its results.json holds.",
)
@cluster_evaluate_options
def evaluate_command(
    dataset,
    preset,
    overrides,
    num_images,
    unet,
    attacks,
    black_box,
    batch_size,
    adaptive_images,
    adaptive_steps,
    adaptive_attacks,
    adaptive_gradients,
    eot_iter,
    seed,
    data_root,
    out,
    attack_cache,
    replace,
) -> None:
    """Attack the classifier, defend, and write a report (JSON, markdown table, ROC curves, example grids)."""
    from diffdefense.reference.evaluation import rows_a_run_would_drop, run_evaluation
    from diffdefense.reference.report import write_report
    from diffdefense.settings import PRESETS, parse_overrides

    try:
        changes = parse_overrides(overrides)
        if "seed" in changes:
            raise ValueError("Expected the seed from --seed (it seeds the attacks too), but got seed in --set.")
        settings = PRESETS[preset].with_(**changes, seed=seed)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--set") from err
    config = EvaluationConfig(
        dataset=dataset,
        num_images=num_images,
        seed=seed,
        black_box=black_box,
        batch_size=batch_size,
        settings=settings,
        preset=f"{preset} + " + ",".join(f"{k}={v}" for k, v in changes.items()) if changes else preset,
        unet=unet,
        adaptive_images=adaptive_images,
        adaptive_steps=adaptive_steps,
        eot_iter=eot_iter,
        **({"adaptive_gradients": tuple(adaptive_gradients)} if adaptive_gradients else {}),
        **({"adaptive_attacks": tuple(adaptive_attacks)} if adaptive_attacks else {}),
        **({"attacks": tuple(attacks)} if attacks else {}),
    )
    try:
        dropped = rows_a_run_would_drop(out, config)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    if dropped and not replace:
        raise click.ClickException(
            f"{out / 'results.json'} holds rows this run would not write again: {', '.join(dropped)}. Run them too "
            "(sets still in its cache/ are reused), write to another --out, or pass --replace to drop them."
        )
    run = evaluation_runner(run_evaluation)  # on Ray with --ray (docs/cluster.md)
    click.echo(f"Report: {write_report(run(config, out, data_root, attack_cache), out)}")


@main.command("report")
@click.argument("folders", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
def report_command(folders) -> None:
    """Rewrite each report folder's report.md from its results.json (no attack or defence is rerun)."""
    from diffdefense.reference.report import rewrite_markdown

    for folder in folders:
        try:
            click.echo(f"Report: {rewrite_markdown(folder)}")
        except ValueError as err:
            raise click.ClickException(str(err)) from err
