"""A contact sheet of frames from a video (e.g. the stream command's annotated output), for docs: the video itself
is several MB and is made again by a command.

    python tools/video_frames.py runs/video/annotated.mp4 --frames 10,30,50,70,90,110 --out docs/figures/stream_demo.png
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from diffdefense.runtime.stream.frames import import_cv2


def contact_sheet(video: Path, indices: list[int], columns: int) -> np.ndarray:
    """The frames at `indices`, left to right and top to bottom in rows of `columns`; blank tiles fill the last."""
    cv2 = import_cv2()
    capture = cv2.VideoCapture(str(video))
    tiles = []
    for index in indices:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        if not ok:
            raise ValueError(f"{video} has no frame {index}.")
        tiles.append(frame)
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % columns)
    return np.vstack([np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)])


@click.command()
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--frames", default="0,20,40,60", show_default=True, help="Frame indices, comma-separated.")
@click.option("--columns", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(video: Path, frames: str, columns: int, out: Path) -> None:
    try:
        sheet = contact_sheet(video, [int(k) for k in frames.split(",")], columns)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    out.parent.mkdir(parents=True, exist_ok=True)
    import_cv2().imwrite(str(out), sheet)
    click.echo(f"Wrote {out}.")
