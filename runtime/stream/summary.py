"""What a stream run comes to: frames per second, latency percentiles per stage (the defence's time and each
frame's latency from capture to answer among them), and, with the video's ground truth, accuracy and attack flags
on clean and on attacked frames."""

from __future__ import annotations

from array import array
from typing import NamedTuple

import numpy as np

from diffdefense.detection_threshold import TARGET_FALSE_POSITIVE_RATE

STAGES = ("wait", "preprocess", "defense", "classify", "total", "latency")  # as FrameResult.timings names them
PERCENTILES = (50, 95, 99)
SHOWN_STAGES = {"preprocess": "preprocess", "defense": "defense", "latency": "capture to answer"}


class FrameRecord(NamedTuple):
    """What a summary needs of one frame's FrameResult: not the frame, nor its reconstruction."""

    index: int
    label: int
    attack_flag: bool
    reconstruction_error: float
    detection_score: float
    warm: bool
    timings: dict[str, float]


class FrameLog:
    """The FrameRecords of a stream in columns of doubles (8 bytes a field, about 100 a frame): a camera stream has
    no end, and keeping its FrameResults would keep every frame. Iterates as FrameRecords, as summarize reads them."""

    FIELDS = tuple(name for name in FrameRecord._fields if name != "timings")

    def __init__(self) -> None:
        self.columns = {name: array("d") for name in (*self.FIELDS, *STAGES)}

    def append(self, result) -> None:
        for name in self.FIELDS:
            self.columns[name].append(float(getattr(result, name)))
        for stage in STAGES:  # a stage a frame lacks is NaN, and left out when read back
            self.columns[stage].append(float(result.timings.get(stage, np.nan)))

    def __len__(self) -> int:
        return len(self.columns["index"])

    def __iter__(self):
        c = self.columns
        for k in range(len(self)):
            timings = {stage: c[stage][k] for stage in STAGES if not np.isnan(c[stage][k])}
            yield FrameRecord(
                int(c["index"][k]),
                int(c["label"][k]),
                bool(c["attack_flag"][k]),
                c["reconstruction_error"][k],
                c["detection_score"][k],
                bool(c["warm"][k]),
                timings,
            )


def check_truth(truth) -> list[dict]:
    """A stream's ground truth, {'frames': [{'label': int, 'attacked': bool}, ...]} as tools/make_video.py writes
    it, -> its frames; ValueError naming the first thing amiss (so that a bad file fails before a long run, not
    after it, and never counts a frame whose 'attacked' is neither true nor false as neither)."""
    frames = truth.get("frames") if isinstance(truth, dict) else None
    if not isinstance(frames, list):
        raise ValueError(
            f"Expected ground truth as an object with a list 'frames', but got {type(truth).__name__}"
            + (f" whose 'frames' is {type(frames).__name__}." if isinstance(truth, dict) else ".")
        )
    for k, frame in enumerate(frames):
        label = frame.get("label") if isinstance(frame, dict) else None
        attacked = frame.get("attacked") if isinstance(frame, dict) else None
        if not (isinstance(label, int) and not isinstance(label, bool) and isinstance(attacked, bool)):
            raise ValueError(
                f"Expected ground-truth frame {k} to be {{'label': an integer, 'attacked': true or false}}, but got "
                f"{str(frame)[:80]}."
            )
    return frames


def summarize(results: list, wall_seconds: float, dropped: int = 0, truth: dict | None = None) -> dict:
    """results: FrameResults (or anything with their fields); truth: {'frames': [{'label', 'attacked'}, ...]},
    checked by check_truth. summary['ms'][stage] holds p50, p95, p99 and mean milliseconds of each stage a frame
    has: 'defense' is the defence's own time, 'latency' a frame's time from capture to answer."""
    frames = check_truth(truth) if truth is not None else None
    if not results:
        return {"frames": 0, "dropped": dropped, "wall_s": wall_seconds}
    summary = {
        "frames": len(results),
        "dropped": dropped,
        "wall_s": wall_seconds,
        "fps": len(results) / wall_seconds if wall_seconds > 0 else None,
        "warm_frames": sum(r.warm for r in results),
        "flagged": sum(r.attack_flag for r in results),
        "ms": {
            stage: {
                **{f"p{q}": 1000 * float(np.percentile(values, q)) for q in PERCENTILES},
                "mean": 1000 * float(np.mean(values)),
            }
            for stage in STAGES
            if (values := [r.timings[stage] for r in results if stage in r.timings])
        },
    }
    if frames is not None:
        summary["truth"] = _against_truth(results, frames)
    return summary


def _against_truth(results: list, frames: list[dict]) -> dict:
    if max(r.index for r in results) >= len(frames):
        raise ValueError(f"Expected ground truth for every frame, but it covers {len(frames)} and more were read.")
    out = {}
    for kind, attacked in (("clean", False), ("attacked", True)):
        chosen = [r for r in results if frames[r.index]["attacked"] == attacked]
        if chosen:
            out[kind] = {
                "frames": len(chosen),
                "accuracy": float(np.mean([r.label == frames[r.index]["label"] for r in chosen])),
                "flag_rate": float(np.mean([r.attack_flag for r in chosen])),
            }
    auroc = _auroc(results, frames)
    if auroc is not None:
        out["error_auroc"] = auroc
    return out


def _auroc(results: list, frames: list[dict]) -> float | None:
    """ROC AUC of the detection score for attacked against clean frames (needs scikit-learn)."""
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        return None
    attacked = [frames[r.index]["attacked"] for r in results]
    if len(set(attacked)) < 2:
        return None
    return float(roc_auc_score(attacked, [r.detection_score for r in results]))


def format_summary(summary: dict) -> str:
    """A few lines for people."""
    if not summary["frames"]:
        return "No frames were read."
    ms = summary["ms"]
    lines = [
        f"{summary['frames']} frames in {summary['wall_s']:.1f} s: {summary['fps']:.1f} frames per second "
        f"({summary['dropped']} dropped, {summary['warm_frames']} warm-started, {summary['flagged']} flagged)",
        "ms per frame   "
        + "  ".join(
            f"{name} p50 {ms[stage]['p50']:.1f} p95 {ms[stage]['p95']:.1f}"
            for stage, name in SHOWN_STAGES.items()
            if stage in ms
        ),
    ]
    truth = dict(summary.get("truth", {}))
    if "error_auroc" in truth:
        lines.append(f"detection score AUROC, attacked vs clean frames: {truth.pop('error_auroc'):.3f}")
    for kind, row in truth.items():
        lines.append(
            f"{kind:>8} frames: {row['frames']}, accuracy {100 * row['accuracy']:.1f}%, "
            f"flagged {100 * row['flag_rate']:.1f}%"
        )
    if "calibrated_threshold" in summary:
        rate = f"{100 * TARGET_FALSE_POSITIVE_RATE:g}%"
        lines.append(f"calibrated threshold (flags {rate} of these frames): {summary['calibrated_threshold']:.5f}")
    return "\n".join(lines)
