"""diffdefense export: the shipped models to a checksummed ONNX bundle (and TensorRT engines where a GPU is)."""

from __future__ import annotations

from pathlib import Path

import click

from diffdefense.cli.common import PRESET_NAMES, data_root_option, dataset_option, main
from diffdefense.shipped import UNET_NAMES


@main.command("export")
@dataset_option
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESET_NAMES)),
    default="default",
    show_default=True,
    help="Defence settings the bundle carries as its defaults.",
)
@click.option(
    "--calibration-images",
    type=click.IntRange(min=0),
    default=200,
    show_default=True,
    help="Clean training-split images that set the attack threshold at 5 % false positives (0: none).",
)
@click.option(
    "--tensorrt",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Also build TensorRT engines into the engine cache: where a GPU and TensorRT are present (auto), "
    "always (on: fail without them), or never.",
)
@click.option("--fp16/--no-fp16", default=False, show_default=True, help="Half-precision TensorRT engines.")
@click.option(
    "--unet",
    type=click.Choice(UNET_NAMES),
    default=None,
    help="The shipped U-Net to export: GroupNorm ('unet'), BatchNorm folded into the convolutions ('unet_bn'), "
    "or the narrow BatchNorm net, trained on every timestep ('unet_bn_small') or on the defence's (t < 15, "
    "'unet_bn_small_t15', the mnist-fast bundle's); default: unet_bn where it is shipped for DATASET.",
)
@click.option(
    "--folded/--no-folded",
    default=True,
    show_default=True,
    help="Also one float32 U-Net graph per timestep of the preset, with the timestep folded in.",
)
@click.option(
    "--int8/--no-int8",
    default=None,
    help="Also int8 versions of the folded graphs, calibrated on the defence's own U-Net inputs for the "
    "calibration images (clean and FGSM-attacked). Default: with a BatchNorm U-Net, which alone is quantised.",
)
@click.option(
    "--default-precision",
    type=click.Choice(["float32", "int8"]),
    default="float32",
    show_default=True,
    help="The U-Net graphs a Defender on the CPU runs when not told (int8 needs --int8): set int8 only where the "
    "int8 bundle's accuracy was measured to hold (tools/runtime_accuracy.py --agreement-with float32).",
)
@data_root_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Bundle folder.")
def export_command(
    dataset, preset, calibration_images, tensorrt, fp16, unet, folded, int8, default_precision, data_root, out
) -> None:
    """Export DATASET's models (from $DIFFDEFENSE_WEIGHTS, else the shipped weights) to an ONNX bundle, checked
    against PyTorch."""
    from diffdefense.export.bundle import export_bundle
    from diffdefense.runtime.backends.tensorrt_engines import EngineBuildError, cached_engine
    from diffdefense.runtime.bundle import load_bundle

    try:
        path = export_bundle(
            dataset, out, preset, data_root, calibration_images, unet, folded, int8, default_precision=default_precision
        )
    except ValueError as err:  # settings the bundle cannot be made with (nothing is written then)
        raise click.ClickException(str(err)) from err
    manifest = load_bundle(path).manifest  # loaded as the runtime will load it
    parity = manifest.parity
    click.echo(f"Bundle {path}: " + ", ".join(f"{k} {v:.1e}" for k, v in parity.items()))
    if tensorrt == "off":
        return
    try:
        for name in manifest.graph_files():  # an int8 QDQ graph builds an int8 engine
            click.echo(f"TensorRT engine: {cached_engine(path / name, fp16=fp16)}")
    except EngineBuildError as err:
        if tensorrt == "on":
            raise click.ClickException(str(err)) from err
        click.echo(f"No TensorRT engines: {err}")
