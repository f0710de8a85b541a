"""The ``diffdefense`` command line. Torch is imported inside the commands that need it, so
``diffdefense --help`` and the runtime commands work with the lean install."""

from __future__ import annotations

from pathlib import Path

import click

from diffdefense import __version__
from diffdefense.data import DATA_ENV_VAR, DATASET_NAMES

dataset_option = click.option("--dataset", type=click.Choice(DATASET_NAMES), default="mnist", show_default=True)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")
data_root_option = click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar=DATA_ENV_VAR,
    help=f"Folder holding mnist/ and kmnist/ IDX folders [env {DATA_ENV_VAR}; default ../shared/data].",
)


@click.group()
@click.version_option(__version__, prog_name="diffdefense")
def main() -> None:
    """DiffDefense: reconstruct inputs with a diffusion model before classifying them."""


@main.group()
def train() -> None:
    """Train the classifiers and the DDPM (needs the [train] extra: torch)."""


@train.command("classifier")
@dataset_option
@click.option("--arch", type=click.Choice(["model_a", "model_b"]), default="model_a", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option(
    "--augment/--no-augment", default=False, show_default=True, help="Random affine jitter of training images."
)
@seed_option
@data_root_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder (checkpoints; resumes from it).",
)
@click.option(
    "--ship/--no-ship", default=True, show_default=True, help="Write the final weights into the shipped weights folder."
)
def train_classifier_command(dataset, arch, epochs, batch_size, lr, augment, seed, data_root, out, ship) -> None:
    """Train Model A or Model B; resumes from OUT's checkpoint if there is one."""
    from diffdefense.training.train_classifier import ClassifierConfig, train_classifier

    config = ClassifierConfig(dataset, arch, epochs, batch_size, lr, augment, seed)
    record = train_classifier(config, out, data_root, do_ship=ship)
    click.echo(f"test accuracy {record['final_metrics']['test_accuracy']:.4f}")


@train.command("ddpm")
@dataset_option
@click.option("--epochs", type=click.IntRange(min=1), default=15, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@seed_option
@data_root_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder (checkpoints; resumes from it).",
)
@click.option(
    "--ship/--no-ship",
    default=True,
    show_default=True,
    help="Write the final EMA weights into the shipped weights folder.",
)
def train_ddpm_command(dataset, epochs, batch_size, lr, seed, data_root, out, ship) -> None:
    """Train the DDPM noise predictor; resumes from OUT's checkpoint if there is one."""
    from diffdefense.training.train_ddpm import DDPMConfig, train_ddpm

    record = train_ddpm(
        DDPMConfig(dataset=dataset, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed),
        out,
        data_root,
        do_ship=ship,
    )
    click.echo(f"final mean loss {record['final_metrics']['mean_loss_last_epoch']:.4f}")


@main.group()
def models() -> None:
    """Check and measure the shipped models."""


@models.command("verify")
def models_verify() -> None:
    """Check every shipped file against the sha256 in the manifest (exit 1 on a mismatch)."""
    from diffdefense import shipped

    try:
        names = shipped.verify_all()
    except (shipped.ChecksumError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    for name in names:
        click.echo(f"ok  {name}")


@models.command("accuracy")
@dataset_option
@click.option("--arch", type=click.Choice(["model_a", "model_b"]), multiple=True, default=("model_a", "model_b"))
@data_root_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_accuracy(dataset, arch, data_root, as_json) -> None:
    """Test accuracy of the shipped classifiers (KMNIST: the 2,000 held-out images of the split)."""
    import json

    from diffdefense.training.quality import classifier_accuracy

    results = [classifier_accuracy(dataset, a, data_root) for a in arch]
    for r in results:
        if not as_json:
            click.echo(f"{r['dataset']} {r['arch']}: {100 * r['accuracy']:.2f}% on {r['data']}")
    if as_json:
        click.echo(json.dumps(results, indent=2))


@models.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_stats(as_json) -> None:
    """The U-Net's parameter count and FLOPs per image."""
    import json

    from diffdefense.training.quality import unet_size

    size = unet_size()
    if as_json:
        click.echo(json.dumps(size))
    else:
        click.echo(
            f"U-Net {size['channels']}: {size['parameters']:,} parameters, "
            f"{size['flops_per_image'] / 1e6:.1f} MFLOP per image (conv + matmul, torch FlopCounterMode)"
        )


@models.command("sample")
@dataset_option
@click.option("-n", "--num-samples", type=click.IntRange(min=64), default=1000, show_default=True)
@seed_option
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("docs/figures"), show_default=True
)
def models_sample(dataset, num_samples, seed, out) -> None:
    """Sample the shipped DDPM: a 64-image grid PNG and the shipped Model A's verdict on the samples."""
    from diffdefense.training.quality import sample_quality, write_json

    result = sample_quality(dataset, num_samples, seed, out / f"{dataset}_ddpm_samples.png")
    write_json(result, out / f"{dataset}_ddpm_quality.json")
    click.echo(
        f"{dataset}: class shares {result['class_shares']}, mean top-class probability "
        f"{result['mean_top_probability']:.3f}; grid {result['grid']}"
    )
