"""diffdefense evaluate-baseline: Defense-GAN and DiffDefense side by side on the evaluation's adversarial sets."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from diffdefense.cli.common import data_root_option, dataset_option, main, seed_option

# The choices without importing torch (the reference modules do): the presets of each defence.
GAN_PRESET_NAMES = ("cheap", "paper")


def _defense_names() -> list[str]:
    from diffdefense.settings import PRESETS

    return [f"defense-gan:{p}" for p in GAN_PRESET_NAMES] + [f"diffdefense:{p}" for p in sorted(PRESETS)]


@main.command("evaluate-baseline")
@click.option(
    "--defense",
    "defenses",
    type=click.Choice(_defense_names()),
    multiple=True,
    help="Defence and preset to run (repeat); default: defense-gan:cheap and diffdefense:default. defense-gan:paper "
    "is the Defense-GAN paper's L = 200 steps and R = 10 restarts; cheap is L = 50, R = 4.",
)
@dataset_option
@click.option(
    "-n",
    "--num-images",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="The image set the attack cache was made for (chosen with --seed).",
)
@click.option(
    "--first",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="How many of those images (the first ones) each defence reconstructs.",
)
@click.option("--attack", "attacks", multiple=True, help="Attack to run (repeat); default: FGSM and PGD.")
@click.option(
    "--bpda-images",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also attack the first N images through each defence with BPDA-PGD (eps 0.3, 20 steps; 0: skip).",
)
@click.option("--chunk", type=click.IntRange(min=1), default=50, show_default=True, help="Images per defence call.")
@click.option(
    "--attack-cache",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder of adversarial sets made by `diffdefense evaluate --attack-cache` for the same images and seed; "
    "an attack it lacks is made and added.",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder of the defences' cached reconstructions; default OUT/cache. Runs on the same images and chunk "
    "may share one, whatever their --first, attacks or defences.",
)
@seed_option
@data_root_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Report folder.")
def evaluate_baseline(
    defenses, dataset, num_images, first, attacks, bpda_images, chunk, attack_cache, cache, seed, data_root, out
):
    """Accuracy with 95 % intervals, detection AUROC and time per image of each defence, on the same images.

    Writes OUT/results.json and OUT/report.md; reconstructions are cached (--cache), so a stopped run resumes."""
    from diffdefense.reference.baseline_evaluation import BaselineRun, run_baseline
    from diffdefense.reference.baseline_report import markdown_report

    run = BaselineRun(
        defenses=tuple(defenses) or BaselineRun.defenses,
        dataset=dataset,
        num_images=num_images,
        first=first,
        seed=seed,
        attacks=tuple(attacks) or BaselineRun.attacks,
        chunk=chunk,
        bpda_images=bpda_images,
    )
    record = run_baseline(run, cache or out / "cache", attack_cache, data_root)
    command = shlex.join(["diffdefense", *sys.argv[1:]])
    record["command"] = command
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    report = markdown_report(record, command)
    (out / "report.md").write_text(report)
    click.echo(report)
