"""diffdefense train: the classifiers, the DDPM, and the Defense-GAN baseline's generator."""

from __future__ import annotations

import click

from diffdefense.cli.common import (
    CLASSIFIER,
    DDPM,
    data_root_option,
    dataset_option,
    extra_train_option,
    main,
    out_option,
    seed_option,
    ship_option,
)
from diffdefense.shipped import UNET_NAMES
from diffdefense.training.configs import ClassifierConfig, DDPMConfig, WGANConfig

WGAN = WGANConfig()


@main.group()
def train() -> None:
    """Train the classifiers and the DDPM (needs the [train] extra: torch)."""


@train.command("classifier")
@dataset_option
@click.option("--arch", type=click.Choice(["model_a", "model_b"]), default=CLASSIFIER.arch, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=CLASSIFIER.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=CLASSIFIER.batch_size, show_default=True)
@click.option("--lr", type=float, default=CLASSIFIER.lr, show_default=True)
@click.option("--augment/--no-augment", default=CLASSIFIER.augment, show_default=True, help="Random affine jitter.")
@extra_train_option
@seed_option
@data_root_option
@out_option
@ship_option
def train_classifier_command(out, data_root, ship, **settings) -> None:
    """Train Model A or Model B; resumes from OUT's checkpoint if there is one."""
    from diffdefense.training.train_classifier import train_classifier

    record = train_classifier(ClassifierConfig(**settings), out, data_root, do_ship=ship)
    click.echo(f"test accuracy {record['final_metrics']['test_accuracy']:.4f}")


@train.command("ddpm")
@dataset_option
@click.option("--epochs", type=click.IntRange(min=1), default=DDPM.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=DDPM.batch_size, show_default=True)
@click.option("--lr", type=float, default=DDPM.lr, show_default=True)
@click.option("--num-steps", type=click.IntRange(min=2), default=DDPM.num_steps, show_default=True, help="T.")
@click.option(
    "--beta-start",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=DDPM.beta_start,
    show_default=True,
)
@click.option(
    "--beta-end",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=DDPM.beta_end,
    show_default=True,
    help="The official DiffDefense code uses 1e-4 .. 0.02 (see docs/training.md).",
)
@click.option(
    "--channels",
    type=click.IntRange(min=8),
    nargs=3,
    default=DDPM.channels,
    show_default=True,
    help="U-Net widths at 28, 14 and 7 pixels; multiples of 8 suit GroupNorm and the CPU.",
)
@click.option(
    "--norm",
    type=click.Choice(["group", "batch"]),
    default=DDPM.norm,
    show_default=True,
    help="GroupNorm blocks (shipped as 'unet'), or BatchNorm after each convolution, folded into it at export "
    "(shipped as 'unet_bn', the deployment shape).",
)
@click.option(
    "--activation",
    type=click.Choice(["silu", "relu"]),
    default=DDPM.activation,
    show_default=True,
    help="The blocks' activation; int8 graphs fuse a ReLU into the convolution before it (shipped as "
    "'unet_bn_relu' with --norm batch).",
)
@click.option(
    "--init-from",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Start from this finished run's weights and EMA (a new learning-rate schedule).",
)
@click.option(
    "--init-from-shipped",
    type=click.Choice(UNET_NAMES),
    default=None,
    help="Start from this shipped U-Net's weights (same widths and normalisation; a new learning-rate schedule). "
    "The activation may differ: a SiLU net fine-tuned into a ReLU one.",
)
@click.option(
    "--distill-from",
    type=click.Choice(UNET_NAMES),
    default=None,
    help="Train against this shipped U-Net's noise prediction instead of the drawn noise (distillation, e.g. a "
    "narrow net from the wide one).",
)
@click.option(
    "--max-timestep",
    type=click.IntRange(min=1),
    default=None,
    help="Train on timesteps t < N only: a denoiser for the defence's start level and below (the presets start at "
    "index 14), which can no longer sample from noise. Default: every timestep.",
)
@click.option(
    "--ship-as",
    type=click.Choice(UNET_NAMES),
    default=None,
    help="The shipped name; default 'unet' for GroupNorm, 'unet_bn' for BatchNorm ('unet_bn_small': a narrower "
    "BatchNorm net).",
)
@extra_train_option
@seed_option
@data_root_option
@out_option
@ship_option
def train_ddpm_command(out, data_root, ship, ship_as, **settings) -> None:
    """Train the DDPM noise predictor; resumes from OUT's checkpoint if there is one."""
    from diffdefense.training.train_ddpm import train_ddpm

    record = train_ddpm(DDPMConfig(**settings), out, data_root, do_ship=ship, ship_as=ship_as)
    click.echo(f"final mean loss {record['final_metrics']['mean_loss_last_epoch']:.4f}")


@train.command("wgan")
@dataset_option
@click.option("--epochs", type=click.IntRange(min=1), default=WGAN.epochs, show_default=True, help="Critic passes.")
@click.option("--batch-size", type=click.IntRange(min=1), default=WGAN.batch_size, show_default=True)
@click.option("--lr", type=float, default=WGAN.lr, show_default=True)
@click.option("--critic-steps", type=click.IntRange(min=1), default=WGAN.critic_steps, show_default=True)
@click.option("--gradient-penalty", type=click.FloatRange(min=0), default=WGAN.gradient_penalty, show_default=True)
@click.option("--width", type=click.IntRange(min=4), default=WGAN.width, show_default=True, help="Channels.")
@seed_option
@data_root_option
@out_option
@ship_option
def train_wgan_command(out, data_root, ship, **settings) -> None:
    """Train the WGAN-GP generator of the Defense-GAN baseline; resumes from OUT's checkpoint if there is one.

    On a shared CPU, OMP_NUM_THREADS=1 is often much faster: the penalty's double backward syncs threads often."""
    from diffdefense.training.train_wgan import train_wgan

    record = train_wgan(WGANConfig(**settings), out, data_root, do_ship=ship)
    estimate = record["final_metrics"]["mean_wasserstein_estimate_last_epoch"]
    click.echo(f"Wasserstein estimate in the last epoch {estimate:.4f}")
