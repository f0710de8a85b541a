"""Soak test: stream many frames through the whole streaming path and watch the process's memory.

    nice -n 10 python tools/soak.py --frames 20000 --out docs/results/soak_20000.json

A synthetic camera renders each frame afresh as tools/make_video.py does (simulated_camera: a shipped sample digit
as ink on lit paper, with drifting light, shake and sensor noise; 320 x 240 BGR uint8) and feeds the real path:
FrameReader's thread and queue (every frame kept), FramePreprocessor (the video's ROI, inversion, auto range),
defend_stream with warm start, and with --annotate the AnnotatedVideoWriter. The resident set size (VmRSS in
/proc/self/status) is read after --warmup frames and every --interval frames after; the run fails (exit 1) when any
reading after the warm-up is more than --max-growth-mb above the first, or when the first frame, defended again
after all the others, does not give the same answer bit for bit. The JSON record holds the frames, the readings,
the settings, the command and the wall time. Accuracy is not the point here: the cheap default setting (R 2, L 2)
is a load, not a defence.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import click
import numpy as np

from diffdefense.runtime.defender import Defender
from diffdefense.runtime.stream import FrameReader, defend_stream
from diffdefense.runtime.stream.annotate import AnnotatedVideoWriter
from diffdefense.runtime.stream.frames import FramePreprocessor, defend_frames, import_cv2
from diffdefense.runtime.stream.simulated_camera import FRAMES_PER_DIGIT, PREPROCESSING, ROI, SyntheticCamera
from diffdefense.runtime.stream.warm_start import WarmStart
from diffdefense.settings import PRESETS
from diffdefense.shipped import bundle_dir


def rss_mb() -> float:
    """This process's resident set size in MiB, from /proc/self/status (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmRSS line: the soak test needs Linux.")


def soak(
    frames: int,
    warmup: int,
    interval: int,
    max_growth_mb: float,
    candidates: int,
    iterations: int,
    warm_iterations: int,
    annotate: Path | None = None,
) -> dict:
    """Stream `frames` frames and return the record (see the module docstring); record['ok'] says whether the
    memory stayed within the bound and the first frame, defended again at the end, gave the same answer."""
    if not 0 < warmup < frames:
        raise ValueError(f"Expected 0 < warmup < frames, but got warmup={warmup} and frames={frames}.")
    settings = PRESETS["default"].with_(num_candidates=candidates, iterations=iterations)
    defender = Defender(bundle_dir("mnist"), settings)
    camera = SyntheticCamera(frames)
    preprocessor = FramePreprocessor(**PREPROCESSING)
    latency = np.zeros((frames, 2))  # capture to answer, and the defence alone; allocated up front, since a
    # growing list would itself be growth
    samples: list[tuple[int, float]] = []
    start = time.perf_counter()
    count = 0
    with FrameReader(camera, queue_size=4, drop_oldest=False, read_timeout=30.0) as reader:
        writer = AnnotatedVideoWriter(annotate, 30.0, ROI) if annotate else None
        for result in defend_stream(defender, reader, preprocessor, WarmStart(iterations=warm_iterations)):
            if writer:
                writer.write(result)
            latency[count] = result.timings["latency"], result.timings["defense"]
            if count == 0:
                first = result
            count += 1
            if count == warmup or (count > warmup and (count - warmup) % interval == 0) or count == frames:
                samples.append((count, round(rss_mb(), 2)))
        if writer:
            writer.close()
        dropped = reader.dropped
    wall = time.perf_counter() - start
    # the first frame (cold) again, after all the others: a defender that kept state between calls would differ
    again = defend_frames(defender, first.frame, preprocessor)
    same = (
        again.reconstructions[0, 0].tobytes() == first.reconstruction.tobytes() and int(again.labels[0]) == first.label
    )
    written = _frames_in(annotate) if annotate else None  # OpenCV drops frames it cannot write without a word
    after = [rss for frame, rss in samples if frame >= warmup]
    growth = max(after) - after[0]
    return {
        "frames": count,
        "dropped": dropped,
        "warmup_frames": warmup,
        "rss_mb": {
            "start": after[0],
            "end": after[-1],
            "max": max(after),
            "end_minus_start": round(after[-1] - after[0], 2),
        },
        "growth_mb": round(growth, 2),
        "max_growth_mb": max_growth_mb,
        "bound": "every VmRSS reading after the warm-up at most max_growth_mb above the first",
        "ok": growth <= max_growth_mb and count == frames and same and written in (None, count),
        "first_frame_same_after_soak": same,
        "samples": [{"frame": frame, "rss_mb": rss} for frame, rss in samples],
        "wall_s": round(wall, 1),
        "fps": round(count / wall, 1),
        "ms": {  # latency: from capture to answer, queueing included (every frame is kept, 4 may wait)
            stage: {
                "p50": round(1000 * float(np.median(latency[:count, k])), 2),
                "p99": round(1000 * float(np.percentile(latency[:count, k], 99)), 2),
            }
            for k, stage in enumerate(("latency", "defense"))
        },
        "settings": settings.to_dict(),
        "unet_evaluations_per_cold_frame": settings.unet_evaluations,
        "warm_start": {"carried": 1, "iterations": warm_iterations},
        "preprocessing": {**PREPROCESSING, "roi": list(ROI)},
        "source": f"synthetic 320 x 240 BGR camera (tools/make_video.py's render_frame), {FRAMES_PER_DIGIT} frames "
        "per digit over the 16 shipped samples",
        "annotated_video": {"path": str(annotate), "frames": written} if annotate else None,
        "provider": defender.unet.provider,
        "step_ops": defender.step_ops_name,
        "command": " ".join(["python", *sys.argv]),
        "niceness": os.nice(0),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "versions": {"python": platform.python_version(), "numpy": np.__version__, **_library_versions()},
    }


def _frames_in(video: Path) -> int:
    cv2 = import_cv2()
    capture = cv2.VideoCapture(str(video))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


def _library_versions() -> dict:
    import onnxruntime

    return {"onnxruntime": onnxruntime.__version__, "opencv": import_cv2().__version__}


@click.command()
@click.option("--frames", type=click.IntRange(min=2), default=20000, show_default=True)
@click.option(
    "--warmup", type=click.IntRange(min=1), default=200, show_default=True, help="Frames before the first reading."
)
@click.option("--interval", type=click.IntRange(min=1), default=250, show_default=True, help="Frames between readings.")
@click.option("--max-growth-mb", type=click.FloatRange(min=0), default=20.0, show_default=True)
@click.option("--candidates", type=click.IntRange(min=1), default=2, show_default=True, help="R.")
@click.option("--iterations", type=click.IntRange(min=1), default=2, show_default=True, help="L on cold frames.")
@click.option("--warm-iterations", type=click.IntRange(min=1), default=1, show_default=True, help="L on warm frames.")
@click.option("--annotate", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Annotated video.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="JSON record.")
def main(frames, warmup, interval, max_growth_mb, candidates, iterations, warm_iterations, annotate, out) -> None:
    try:
        record = soak(frames, warmup, interval, max_growth_mb, candidates, iterations, warm_iterations, annotate)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    text = json.dumps(record, indent=1)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    rss = record["rss_mb"]
    click.echo(
        f"{record['frames']} frames in {record['wall_s']} s ({record['fps']} per second); VmRSS after warm-up "
        f"{rss['start']:.1f} MiB, end {rss['end']:.1f}, max {rss['max']:.1f}: growth {record['growth_mb']:.1f} MiB, "
        f"bound {max_growth_mb:g} MiB; first frame the same after the soak: {record['first_frame_same_after_soak']}; "
        f"{'ok' if record['ok'] else 'FAILED'}"
    )
    if not record["ok"]:
        sys.exit(1)
