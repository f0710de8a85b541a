"""Measure warm start across frames on a video with ground truth (tools/make_video.py makes one): for cold starts
at several L and warm starts at several L, the accuracy on clean and attacked frames, the detection AUROC, the
U-Net image evaluations and the defence time per frame.

    python tools/warm_start_study.py runs/video/digits.mkv --out docs/results/warm_start_video.json

Every configuration runs the stream path itself (FrameReader, defend_stream) over every frame, in order.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np

from diffdefense.runtime.defender import Defender
from diffdefense.runtime.stream import FrameReader, defend_stream
from diffdefense.runtime.stream.frames import FramePreprocessor
from diffdefense.runtime.stream.summary import summarize
from diffdefense.runtime.stream.warm_start import WarmStart
from diffdefense.settings import PRESETS
from diffdefense.shipped import bundle_dir


def run_configuration(bundle: Path, settings, video: Path, preprocessor, iterations: int, warm: bool, truth: dict):
    """Cold: every frame at L = iterations. Warm: the first frame (and any after a reset) at the settings' L, the
    others at L = iterations, from the previous frame's winning latent."""
    defender = Defender(bundle, settings if warm else settings.with_(iterations=iterations))
    warm_start = WarmStart(iterations=iterations) if warm else None
    results, start = [], time.perf_counter()
    with FrameReader(str(video), queue_size=4, drop_oldest=False) as reader:
        for result in defend_stream(defender, reader, preprocessor, warm_start):
            results.append(result)
    summary = summarize(results, time.perf_counter() - start, truth=truth)
    per_run = settings.num_steps * settings.num_candidates
    warm_frames = summary["warm_frames"]
    cold_frames = len(results) - warm_frames
    evaluations = cold_frames * defender.settings.iterations * per_run + warm_frames * iterations * per_run
    return {
        "start": "warm" if warm else "cold",
        "iterations": iterations,
        "unet_evaluations_per_frame": evaluations / len(results),
        "defense_ms_p50": summary["ms"]["defense"]["p50"],
        "defense_ms_mean": summary["ms"]["defense"]["mean"],
        "median_error": float(np.median([r.reconstruction_error for r in results])),
        **summary["truth"],
    }


def undefended_accuracy(bundle: Path, video: Path, preprocessor, truth: dict) -> dict:
    """Model A on the preprocessed frames with no defence: how much of the attack survives the camera."""
    defender = Defender(bundle, "default")
    labels, attacked, predictions = [], [], []
    with FrameReader(str(video), queue_size=4, drop_oldest=False) as reader:
        for index, frame, _ in reader:
            logits = defender.classifier.run(preprocessor(frame)[None])
            predictions.append(int(logits.argmax()))
            labels.append(truth["frames"][index]["label"])
            attacked.append(truth["frames"][index]["attacked"])
    correct, attacked = np.array(predictions) == np.array(labels), np.array(attacked)
    return {
        "clean": {"frames": int((~attacked).sum()), "accuracy": float(correct[~attacked].mean())},
        "attacked": {"frames": int(attacked.sum()), "accuracy": float(correct[attacked].mean())},
    }


@click.command()
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--truth", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--dataset", default="mnist", show_default=True)
@click.option("--preset", default="default", show_default=True)
@click.option("--cold", "cold_iterations", default="5,4,3,2", show_default=True, help="L values for cold starts.")
@click.option("--warm", "warm_iterations", default="2,3,4", show_default=True, help="L values on warm frames.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(video, truth, dataset, preset, cold_iterations, warm_iterations, out) -> None:
    truth_path = truth or video.with_suffix(".json")
    truth_data = json.loads(truth_path.read_text())
    steps = truth_data["preprocessing"]
    preprocessor = FramePreprocessor(roi=tuple(steps["roi"]), invert=steps["invert"], value_range=steps["value_range"])
    settings = PRESETS[preset]
    rows = []
    plan = [(int(L), False) for L in cold_iterations.split(",")] + [(int(L), True) for L in warm_iterations.split(",")]
    for iterations, warm in plan:
        row = run_configuration(bundle_dir(dataset), settings, video, preprocessor, iterations, warm, truth_data)
        rows.append(row)
        click.echo(
            f"{row['start']:>4} L={iterations}: {row['unet_evaluations_per_frame']:.0f} U-Net evaluations per frame, "
            f"defence p50 {row['defense_ms_p50']:.0f} ms; clean accuracy {100 * row['clean']['accuracy']:.1f}%, "
            f"attacked {100 * row['attacked']['accuracy']:.1f}%, error AUROC {row.get('error_auroc', float('nan')):.3f}"
        )
    no_defense = undefended_accuracy(bundle_dir(dataset), video, preprocessor, truth_data)
    click.echo(
        f"no defence: clean accuracy {100 * no_defense['clean']['accuracy']:.1f}%, "
        f"attacked {100 * no_defense['attacked']['accuracy']:.1f}%"
    )
    record = {
        "no_defense": no_defense,
        "video": str(video),
        "video_command": truth_data.get("command"),
        "dataset": dataset,
        "settings": settings.to_dict(),
        "command": f"python tools/warm_start_study.py {video} --preset {preset} --cold {cold_iterations} "
        f"--warm {warm_iterations} --out {out}",
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
