"""The options that choose a Defender (bundle, preset, backend, precision, U-Net graphs, detection score and
threshold), shared by defend, stream and bench, and the Defender they make."""

from __future__ import annotations

import math
from pathlib import Path

import click

from diffdefense.cli.common import PRESET_NAMES, dataset_option
from diffdefense.detection_threshold import DETECTION_SCORES


def _threshold(ctx, param, value):
    if value is not None and not math.isfinite(value):  # FloatRange lets NaN and infinity through
        raise click.BadParameter(f"expected a finite number >= 0, but got {value!r}")
    return value


def _remember(ctx, param, value):
    """precision, fp16 and unet_graphs reach make_defender through the context, not every command's signature."""
    ctx.meta[f"defender.{param.name}"] = value
    return value


def defender_options(command):
    """--bundle, --dataset, --preset, --provider, --precision, --fp16, --shards, --unet-graphs, --detection-score,
    --threshold."""
    for option in reversed(
        [
            click.option(
                "--bundle",
                type=click.Path(file_okay=False, path_type=Path),
                default=None,
                help="Bundle folder, or a shipped bundle's name: mnist, mnist-fast (the narrow U-Net, for video "
                "frame rates) or kmnist [default: the shipped bundle of --dataset].",
            ),
            dataset_option,
            click.option(
                "--preset", type=click.Choice(sorted(PRESET_NAMES)), default=None, help="[default: the bundle's]"
            ),
            click.option(
                "--provider",
                type=click.Choice(["cpu", "cuda", "tensorrt", "tensorrt-engine"]),
                default="cpu",
                show_default=True,
                help="onnxruntime's CPU, CUDA or TensorRT provider, or TensorRT itself.",
            ),
            click.option(
                "--precision",
                type=click.Choice(["float32", "int8"]),
                default=None,
                expose_value=False,
                callback=_remember,
                help="The U-Net graphs' precision; int8: the bundle's int8 graphs (folded timesteps only). Default: "
                "the bundle's default precision on the CPU provider (int8 for the mnist bundle), else float32.",
            ),
            click.option(
                "--fp16/--no-fp16",
                default=False,
                show_default=True,
                expose_value=False,
                callback=_remember,
                help="Half-precision TensorRT engines (--provider tensorrt-engine).",
            ),
            click.option(
                "--shards",
                type=click.IntRange(min=1),
                default=None,
                expose_value=False,
                callback=_remember,
                help="The parts each U-Net call on the CPU cuts its batch into, run at the same time by graph "
                "instances of their own; every image's result is the same [default: 2 with 2 or more cores; 1: "
                "unsharded].",
            ),
            click.option(
                "--unet-graphs",
                type=click.Choice(["folded", "general", "auto"]),
                default=None,
                expose_value=False,
                callback=_remember,
                help="U-Net graphs with the timestep folded in (refusing settings that need a missing one), the "
                "general graph, or folded where the bundle has them [default: auto in float32, folded in int8].",
            ),
            click.option(
                "--detection-score",
                type=click.Choice(DETECTION_SCORES),
                default=None,
                expose_value=False,
                callback=_remember,
                help="What flags attacks: refined_l1, the mean absolute difference between the reconstruction and "
                "the input, or best_mse, the best candidate's error before the refining pass (the paper's) [default: "
                "the score the bundle's threshold was calibrated on].",
            ),
            click.option(
                "--threshold",
                type=click.FloatRange(min=0),
                callback=_threshold,
                default=None,
                help="Detection score above which an input is flagged [the bundle's, calibrated on clean training "
                "images; calibrate your camera with `diffdefense stream --calibrate`].",
            ),
        ]
    ):
        command = option(command)
    return command


def make_defender(bundle, dataset, preset, provider, threshold=None):
    """The Defender the options chose (precision and U-Net graphs from the current command's context)."""
    from diffdefense.runtime.backends import BackendOptions
    from diffdefense.runtime.defender import Defender
    from diffdefense.shipped import bundle_dir

    meta = click.get_current_context(silent=True)
    meta = meta.meta if meta is not None else {}
    backend = BackendOptions(
        provider=provider, fp16=bool(meta.get("defender.fp16")), shards=meta.get("defender.shards")
    )
    return Defender(
        bundle or bundle_dir(dataset),
        preset,
        threshold=threshold,
        backend=backend,
        precision=meta.get("defender.precision"),
        unet_graphs=meta.get("defender.unet_graphs"),
        detection_score=meta.get("defender.detection_score"),
    )
