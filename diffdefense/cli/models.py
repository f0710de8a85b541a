"""diffdefense models: check and measure the shipped models."""

from __future__ import annotations

from pathlib import Path

import click

from diffdefense.cli.common import (
    data_root_option,
    dataset_option,
    main,
    seed_option,
)
from diffdefense.shipped import UNET_NAMES


@main.group()
def models() -> None:
    """Check and measure the shipped models."""


@models.command("verify")
def models_verify() -> None:
    """Check every shipped file against the sha256 in the manifest (exit 1 on a mismatch)."""
    from diffdefense import shipped

    for name in shipped.verify_all():
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
            click.echo(
                f"{r['dataset']} {r['arch']}: {100 * r['accuracy']:.2f}% on {r['data']}; "
                f"mean top-class probability {r['mean_top_probability']:.3f}"
            )
    if as_json:
        click.echo(json.dumps(results, indent=2))


@models.command("stats")
@click.option(
    "--channels",
    type=click.IntRange(min=8),
    nargs=3,
    default=None,
    help="Measure a U-Net of these widths (as `train ddpm --channels`) instead of the shipped one's.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_stats(channels, as_json) -> None:
    """The U-Net's parameter count and FLOPs per image."""
    import json

    from diffdefense.training.models import UNet
    from diffdefense.training.quality import unet_size

    size = unet_size(UNet(channels=tuple(channels)) if channels else None)
    if as_json:
        click.echo(json.dumps(size))
    else:
        click.echo(
            f"U-Net {size['channels']}: {size['parameters']:,} parameters, "
            f"{size['flops_per_image'] / 1e6:.1f} MFLOP per image (conv + matmul, torch FlopCounterMode)"
        )


@models.command("noise-error")
@dataset_option
@click.option("--unet", "unets", type=click.Choice(UNET_NAMES), multiple=True, default=("unet",), show_default=True)
@click.option("-n", "--num-images", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--max-timestep", type=click.IntRange(min=1), default=None, help="Draw t below this (default: all).")
@seed_option
@data_root_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_noise_error(dataset, unets, num_images, max_timestep, seed, data_root, as_json) -> None:
    """Noise-prediction error (L_simple) of shipped U-Nets on held-out images, same draws for each."""
    import json

    from diffdefense.training.quality import noise_prediction_error

    try:
        results = [noise_prediction_error(dataset, u, num_images, seed, max_timestep, data_root) for u in unets]
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        click.echo(f"{r['unet']}: noise MSE {r['noise_mse']:.4f} ({r['images']}, {r['timesteps']}, seed {r['seed']})")


@models.command("sample")
@dataset_option
@click.option("-n", "--num-samples", type=click.IntRange(min=64), default=1000, show_default=True)
@click.option("--unet", type=click.Choice(UNET_NAMES), default="unet", show_default=True)
@seed_option
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("docs/figures"), show_default=True
)
def models_sample(dataset, num_samples, unet, seed, out) -> None:
    """Sample the shipped DDPM: a 64-image grid PNG and the shipped Model A's verdict on the samples."""
    from diffdefense.training.quality import sample_quality, write_json

    stem = dataset if unet == "unet" else f"{dataset}_{unet}"
    result = sample_quality(dataset, num_samples, seed, out / f"{stem}_ddpm_samples.png", unet)
    write_json(result, out / f"{stem}_ddpm_quality.json")
    click.echo(
        f"{dataset}: class shares {result['class_shares']}, mean top-class probability "
        f"{result['mean_top_probability']:.3f}; grid {result['grid']}"
    )
