"""Options shared by the commands that take camera frames or image files: how a frame becomes an input."""

from __future__ import annotations

import click


def _roi(ctx, param, value):
    if value is None:
        return None
    try:
        roi = tuple(int(v) for v in value.split(","))
    except ValueError:
        roi = ()
    if len(roi) != 4:
        raise click.BadParameter(f"expected x,y,width,height as four integers, but got {value!r}")
    return roi


def _value_range(ctx, param, value):
    if value in (None, "auto"):
        return value
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected 'auto' or low,high, but got {value!r}") from None
    return low, high


def preprocessing_options(command):
    """--roi, --invert, --value-range, --channel-order: how a frame becomes a 28 x 28 input."""
    for option in reversed(
        [
            click.option(
                "--roi", callback=_roi, default=None, help="Region of interest x,y,width,height [whole frame]."
            ),
            click.option(
                "--invert/--no-invert", default=False, help="Dark-on-light input (ink on paper).", show_default=True
            ),
            click.option(
                "--value-range",
                callback=_value_range,
                default=None,
                help="'auto' (per-frame 1st-99th percentile) or low,high mapped to 0..1 [the dtype's range].",
            ),
            click.option("--channel-order", type=click.Choice(["bgr", "rgb"]), default="bgr", show_default=True),
        ]
    ):
        command = option(command)
    return command


def make_preprocessor(roi, invert, value_range, channel_order, size=(28, 28)):
    """size: the bundle's image (height, width), which frames are resized to."""
    from diffdefense.runtime.stream.frames import FramePreprocessor

    return FramePreprocessor(
        roi=roi, invert=invert, value_range=value_range, channel_order=channel_order, size=tuple(size)
    )
