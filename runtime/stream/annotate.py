"""Writing an annotated copy of a stream: each frame with its label, attack flag, reconstruction error and latency,
the region of interest outlined and the reconstruction the classifier saw inset in the corner."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffdefense.runtime.stream.errors import StreamError
from diffdefense.runtime.stream.frames import import_cv2

CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "FFV1"}
GREEN, RED, WHITE = (60, 180, 60), (40, 40, 230), (255, 255, 255)
INSET = 84  # the reconstruction, 3x


class AnnotatedVideoWriter:
    """write(result) for each FrameResult; opens the file on the first frame (its size comes from the frame).

    A frame of another size (a camera that changed resolution) is scaled to the video's: OpenCV would drop it
    without a word. A file that cannot be written raises StreamError, as a source that cannot be read does.
    """

    def __init__(self, path: str | Path, fps: float, roi: tuple[int, int, int, int] | None = None) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in CODECS:
            raise ValueError(f"Expected an output video ending in {', '.join(CODECS)}, but got {self.path.name}.")
        self.fps, self.roi, self.writer, self.size = fps, roi, None, None

    def write(self, result) -> None:
        cv2 = import_cv2()
        frame = _as_bgr(result.frame)
        if self.writer is None:
            self.writer = self._open(cv2, (frame.shape[1], frame.shape[0]))
        colour = RED if result.attack_flag else GREEN
        if self.roi is not None:
            x, y, w, h = self.roi
            cv2.rectangle(frame, (x, y), (x + w, y + h), colour, 2)
        inset = (255 * np.clip(result.reconstruction, 0, 1)).astype(np.uint8)
        inset = cv2.resize(inset, (INSET, INSET), interpolation=cv2.INTER_NEAREST)
        if frame.shape[0] > INSET and frame.shape[1] > INSET:
            frame[-INSET:, -INSET:] = inset[..., None]
        lines = [
            (f"{result.label_name}  p {result.probability:.2f}", colour),
            ("ATTACK?" if result.attack_flag else "ok", colour),
            (f"score {result.detection_score:.4f}", WHITE),
            (f"{1000 * result.timings['latency']:.0f} ms", WHITE),
        ]
        for i, (text, text_colour) in enumerate(lines):
            org = (6, 18 + 18 * i)
            cv2.putText(frame, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(frame, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, text_colour, 1, cv2.LINE_AA)
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(frame)

    def _open(self, cv2, size: tuple[int, int]):
        self.size = size
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StreamError(f"Could not make the folder for the annotated video {self.path}: {err}") from err
        fourcc = cv2.VideoWriter_fourcc(*CODECS[self.path.suffix.lower()])
        writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, size)
        if not writer.isOpened():
            raise StreamError(
                f"OpenCV could not open {self.path} for writing {size[0]} x {size[1]} frames at {self.fps:g} fps."
            )
        return writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()

    def __enter__(self) -> AnnotatedVideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    """A uint8 BGR copy to draw on, whatever the camera gave."""
    cv2 = import_cv2()
    if frame.dtype != np.uint8:
        scale = 255.0 / 65535.0 if frame.dtype == np.uint16 else 255.0
        frame = np.clip(frame.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    return frame.copy()
