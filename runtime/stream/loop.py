"""Defending the frames a FrameReader gives, one at a time (the lowest latency), in order, with per-stage timings."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from diffdefense.runtime.stream.frames import FramePreprocessor, defend_frames
from diffdefense.runtime.stream.reader import FrameReader
from diffdefense.runtime.stream.warm_start import WarmStart


@dataclass(frozen=True)
class FrameResult:
    """One frame's answer. timings in seconds: 'wait' (for the frame), 'preprocess', 'defense', 'classify', 'total'
    (the three together), and 'latency' from the frame's capture (as the reader stamps it) to its answer, any wait
    in the queue included. warm: started from the previous frame. skipped: the frames passed over just before this
    one because they were captured while the defence was busy (defend_stream's fresh_only)."""

    index: int
    frame: np.ndarray
    label: int
    label_name: str
    probability: float
    attack_flag: bool
    reconstruction_error: float
    detection_score: float
    reconstruction: np.ndarray
    timings: dict[str, float]
    warm: bool
    skipped: int = 0


def defend_stream(
    defender,
    reader: FrameReader,
    preprocessor: FramePreprocessor | None = None,
    warm_start: WarmStart | None = None,
    max_frames: int | None = None,
    fresh_only: bool = False,
) -> Iterator[FrameResult]:
    """Defend each frame the reader gives, one at a time, in order.

    fresh_only: pass over a frame captured while the previous one was being defended, and answer the next one
    captured after. With a dropping reader the frame waiting when the defence becomes free has waited up to a whole
    defence, and that wait adds to its latency; passed over, every answer comes one processing time after its
    capture, at the cost of frames (every other one when the defence takes longer than a frame interval)."""
    waited_since = time.perf_counter()
    free_since, skipped, count = -math.inf, 0, 0
    for index, frame, captured in reader:
        if max_frames is not None and count >= max_frames:
            return
        if fresh_only and captured < free_since:
            skipped += 1
            continue
        count += 1
        wait = time.perf_counter() - waited_since
        arguments = warm_start.arguments() if warm_start else {}
        result = defend_frames(defender, frame, preprocessor, **arguments)
        if warm_start:
            warm_start.update(result)
        label = int(result.labels[0])
        done = time.perf_counter()
        yield FrameResult(
            index=index,
            frame=frame,
            label=label,
            label_name=result.label_names[label],
            probability=float(result.probabilities[0, label]),
            attack_flag=bool(result.attack_flag[0]),
            reconstruction_error=float(result.reconstruction_error[0]),
            detection_score=float(result.detection_score[0]),
            reconstruction=result.reconstructions[0, 0],
            timings={"wait": wait, **result.timings, "latency": done - captured},
            warm=bool(arguments),
            skipped=skipped,
        )
        waited_since = free_since = time.perf_counter()
        skipped = 0
