"""diffdefense stream: defend a video file, a camera or a GStreamer pipeline frame by frame."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from diffdefense.cli.common import main
from diffdefense.cli.defender_options import defender_options, make_defender
from diffdefense.cli.frame_options import make_preprocessor, preprocessing_options


@main.command("stream")
@click.argument("source")
@defender_options
@preprocessing_options
@click.option(
    "--warm-start/--cold-start",
    default=False,
    show_default=True,
    help="Start one candidate from the last frame's winning latent (docs/streaming.md: it saved nothing at equal "
    "accuracy on the test video, so it is off by default).",
)
@click.option("--warm-iterations", type=click.IntRange(min=1), default=2, show_default=True, help="L on warm frames.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after this many frames.")
@click.option(
    "--queue-size",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Frames that may wait with --every-frame (--drop-oldest keeps only the newest).",
)
@click.option(
    "--drop-oldest/--every-frame",
    default=None,
    help="Keep only the newest frame waiting when the defence falls behind (a file is then paced at its frame "
    "rate), or defend every frame in order [cameras and pipelines drop, files do not unless --realtime].",
)
@click.option(
    "--realtime", is_flag=True, help="Read a file at its frame rate, as a camera delivers frames (and drop stale ones)."
)
@click.option(
    "--fresh-only",
    is_flag=True,
    help="With dropping: pass over a frame captured while the defence was busy and answer the next one, so that "
    "each answer comes one processing time after its capture, at the cost of frames (docs/streaming.md).",
)
@click.option(
    "--read-timeout", type=float, default=5.0, show_default=True, help="Seconds before a stalled source fails."
)
@click.option("--out-video", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Annotated copy.")
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON with each frame's label and attacked flag (tools/make_video.py writes one): adds accuracy.",
)
@click.option(
    "--calibrate",
    is_flag=True,
    help="Treat every frame as clean and report the threshold that flags 5% of them (then pass it as --threshold).",
)
@click.option("--quiet", is_flag=True, help="No line per frame.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def stream_command(
    source, bundle, dataset, preset, provider, threshold, roi, invert, value_range, channel_order, warm_start,
    warm_iterations, max_frames, queue_size, drop_oldest, realtime, fresh_only, read_timeout, out_video, truth,
    calibrate, quiet, as_json,
) -> None:  # fmt: skip
    """Defend SOURCE (a video file, a camera index such as 0, or a GStreamer pipeline ending in appsink) frame by
    frame; print each frame's answer and a summary: frames per second, the defence's time and each frame's latency
    from capture to answer (p50 and p95), attack flags.

    Exit codes: 0 done (the stream ended or --max-frames was reached), 1 bad input or a source that cannot be
    opened or stalls, 2 bad usage."""
    from diffdefense.detection_threshold import clean_threshold
    from diffdefense.machine import cpu_model
    from diffdefense.runtime.stream import (
        AnnotatedVideoWriter,
        FrameLog,
        FrameReader,
        StreamError,
        WarmStart,
        defend_stream,
        format_summary,
        summarize,
    )

    truth_data = _read_truth(truth) if truth else None  # a bad file fails now, not after the whole stream
    defender = make_defender(bundle, dataset, preset, provider, threshold)
    preprocessor = make_preprocessor(roi, invert, value_range, channel_order, defender.image_shape[1:])
    warm = WarmStart(iterations=warm_iterations) if warm_start else None
    results = FrameLog()  # not the FrameResults: they hold every frame
    skipped = 0
    try:
        with FrameReader(source, queue_size, drop_oldest, read_timeout, realtime) as reader:
            if fresh_only and not reader.drop_oldest:
                raise click.UsageError(
                    "--fresh-only passes over frames captured while the defence was busy, which needs a reader that "
                    "drops them: a camera or pipeline, or a file with --realtime, but this one keeps every frame."
                )
            writer = AnnotatedVideoWriter(out_video, reader.fps or 30.0, roi) if out_video else None
            start = time.perf_counter()
            try:
                for result in defend_stream(defender, reader, preprocessor, warm, max_frames, fresh_only):
                    results.append(result)
                    skipped += result.skipped
                    if writer:
                        writer.write(result)
                    if not quiet and not as_json:
                        click.echo(
                            f"frame {result.index:>5}  {result.label_name}  p {result.probability:.2f}  error "
                            f"{result.reconstruction_error:.4f}  {'FLAGGED' if result.attack_flag else 'ok':7}  "
                            f"{1000 * result.timings['latency']:.0f} ms{'  warm' if result.warm else ''}"
                        )
            finally:  # the frames written so far stay a playable video whatever ended the stream
                if writer:
                    writer.close()
            wall = time.perf_counter() - start
            mode = "every-frame" if not reader.drop_oldest else "fresh-only" if fresh_only else "drop-oldest"
            dropped, paced = reader.dropped, reader.pace
    except StreamError as err:
        raise click.ClickException(str(err)) from err
    summary = summarize(results, wall, dropped, truth_data)
    summary.update(
        source=str(source),
        mode=mode,
        skipped_while_busy=skipped,
        paced=paced,
        provider=defender.unet.provider,
        precision=defender.precision,
        bundle=str(defender.bundle.root),
        cpu=cpu_model(),
        settings=defender.settings.to_dict(),
        warm_start={"iterations": warm_iterations} if warm_start else None,
        threshold=defender.threshold,
        out_video=str(out_video) if out_video else None,
    )
    if calibrate and results:
        summary["calibrated_threshold"] = clean_threshold([r.detection_score for r in results])
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


def _read_truth(path: Path) -> dict:
    """The --truth file's ground truth, checked (runtime/stream/summary.py, check_truth); ValueError naming the file."""
    from diffdefense.runtime.stream.summary import check_truth

    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, or nested too deep
        raise ValueError(f"Expected --truth {path} to be a JSON file, but it is not ({err}).") from err
    try:
        check_truth(truth)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    return truth
