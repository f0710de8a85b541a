"""Camera frames as OpenCV gives them (uint8 or uint16 or float, gray, BGR or BGRA, any size) to model inputs.

The steps, in order: region of interest, grayscale, value range to [0, 1], inversion, resize with area
interpolation (which averages pixels, so camera noise shrinks rather than aliases), clip to [0, 1].
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

CHANNEL_COUNTS = {1: None, 3: "BGR2GRAY", 4: "BGRA2GRAY"}
DTYPE_RANGES = {np.dtype(np.uint8): (0.0, 255.0), np.dtype(np.uint16): (0.0, 65535.0)}  # floats: (0, 1)
AUTO_PERCENTILES = (1.0, 99.0)


def import_cv2():
    try:
        import cv2
    except ImportError as err:
        raise ImportError(
            "Camera frames and video need OpenCV: pip install 'diffdefense[video]' (opencv-python-headless)."
        ) from err
    return cv2


@dataclass(frozen=True)
class FramePreprocessor:
    """frame -> float32 (1, H, W) in [0, 1]; see the module docstring for the order of the steps.

    roi: (x, y, width, height) in frame pixels, or None for the whole frame.
    channel_order: 'bgr' (OpenCV's) or 'rgb', for colour frames.
    value_range: (low, high) mapped to 0 and 1 (values beyond are clipped); None for the dtype's full range
        (uint8 0..255, uint16 0..65535, float 0..1); 'auto' for each frame's 1st and 99th percentile, which undoes
        lighting and exposure changes.
    invert: for dark-on-light input (ink on paper); the models saw light digits on black.
    size: the model's (height, width).
    """

    roi: tuple[int, int, int, int] | None = None
    channel_order: Literal["bgr", "rgb"] = "bgr"
    value_range: tuple[float, float] | Literal["auto"] | None = None
    invert: bool = False
    size: tuple[int, int] = (28, 28)

    def __post_init__(self) -> None:
        if self.roi is not None and (len(self.roi) != 4 or min(self.roi[2:]) < 1 or min(self.roi[:2]) < 0):
            raise ValueError(f"Expected roi as (x, y, width, height) with x, y >= 0 and sizes >= 1, got {self.roi}.")
        if self.channel_order not in ("bgr", "rgb"):
            raise ValueError(f"Expected channel_order 'bgr' or 'rgb', but got {self.channel_order!r}.")
        if self.value_range not in (None, "auto") and not (
            len(self.value_range) == 2 and float(self.value_range[0]) < float(self.value_range[1])
        ):
            raise ValueError(
                f"Expected value_range None, 'auto' or (low, high) with low < high, got {self.value_range}."
            )

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        cv2 = import_cv2()
        gray = self._grayscale(cv2, self._crop(check_frame(frame)))
        low, high = self._range(gray)
        image = np.clip((gray.astype(np.float32) - low) / (high - low), 0.0, 1.0)
        if self.invert:
            image = 1.0 - image
        height, width = self.size
        if image.shape != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        return np.clip(image, 0.0, 1.0)[None]

    def batch(self, frames) -> np.ndarray:
        """A sequence of frames (or an array shaped (B, H, W[, C])) -> (B, 1, H, W)."""
        if len(frames) == 0:
            raise ValueError("Expected at least one frame, but the batch is empty.")
        return np.stack([self(frame) for frame in frames])

    def _crop(self, frame: np.ndarray) -> np.ndarray:
        if self.roi is None:
            return frame
        x, y, w, h = self.roi
        if x + w > frame.shape[1] or y + h > frame.shape[0]:
            raise ValueError(
                f"Expected the region of interest (x={x}, y={y}, w={w}, h={h}) to lie inside the frame, but the "
                f"frame is {frame.shape[1]} wide and {frame.shape[0]} high."
            )
        return frame[y : y + h, x : x + w]

    def _grayscale(self, cv2, frame: np.ndarray) -> np.ndarray:
        if frame.ndim == 2:
            return frame
        code = CHANNEL_COUNTS[frame.shape[2]]
        if code is None:
            return frame[..., 0]
        if self.channel_order == "rgb":
            code = code.replace("BGR", "RGB")
        # cvtColor does not take float64; its weights are the same for every dtype it takes
        source = frame.astype(np.float32) if frame.dtype == np.float64 else np.ascontiguousarray(frame)
        return cv2.cvtColor(source, getattr(cv2, f"COLOR_{code}"))

    def _range(self, gray: np.ndarray) -> tuple[float, float]:
        if self.value_range == "auto":
            low, high = (float(v) for v in np.percentile(gray, AUTO_PERCENTILES))
            return (low, high) if high > low else (low, low + 1.0)  # a flat frame maps to 0
        if self.value_range is not None:
            return float(self.value_range[0]), float(self.value_range[1])
        return DTYPE_RANGES.get(gray.dtype, (0.0, 1.0))


def check_frame(frame) -> np.ndarray:
    """A camera frame: a non-empty array (H, W) or (H, W, C) with C in 1, 3, 4, of uint8, uint16 or finite floats."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"Expected a frame as a numpy array (H, W) or (H, W, C), but got {type(frame).__name__}.")
    if frame.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise ValueError(f"Expected a frame of dtype uint8, uint16, float32 or float64, but got {frame.dtype}.")
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in CHANNEL_COUNTS):
        raise ValueError(
            f"Expected a frame shaped (H, W) or (H, W, C) with C in 1, 3 or 4 (gray, BGR, BGRA), but got {frame.shape}."
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"Expected a frame with pixels, but got shape {frame.shape}.")
    if frame.dtype.kind == "f" and not np.isfinite(frame).all():
        raise ValueError("Expected finite pixel values, but the frame contains NaN or infinity.")
    return frame


def defend_frames(defender, frames, preprocessor: FramePreprocessor | None = None, **warm_start):
    """Preprocess one frame or a sequence of frames and defend them as one batch; the result's timings gain
    'preprocess'. warm_start: initial_latents / iterations, passed to the defender."""
    preprocessor = preprocessor or FramePreprocessor()
    start = time.perf_counter()
    single = isinstance(frames, np.ndarray) and frames.ndim in (2, 3) and not _is_frame_stack(frames)
    images = preprocessor.batch([frames] if single else frames)
    preprocessed = time.perf_counter() - start
    result = defender(images, **warm_start)
    timings = {"preprocess": preprocessed, **result.timings, "total": result.timings["total"] + preprocessed}
    return dataclasses.replace(result, timings=timings)


def _is_frame_stack(frames: np.ndarray) -> bool:
    """(B, H, W) gray frames are 3-D like one colour frame (H, W, C); a last axis of 1, 3 or 4 means colour."""
    return frames.ndim == 3 and frames.shape[2] not in CHANNEL_COUNTS
