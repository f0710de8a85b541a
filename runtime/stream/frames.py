"""Camera frames as OpenCV gives them (uint8 or uint16 or float, gray, BGR or BGRA, any size) to model inputs.

The steps, in order: region of interest, grayscale, value range to [0, 1], inversion, resize with area
interpolation (which averages pixels, so camera noise shrinks rather than aliases), clip to [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

CHANNEL_COUNTS = {1: None, 3: "BGR2GRAY", 4: "BGRA2GRAY"}
DTYPE_RANGES = {np.dtype(np.uint8): (0.0, 255.0), np.dtype(np.uint16): (0.0, 65535.0)}  # floats: (0, 1)
AUTO_PERCENTILES = (1.0, 99.0)
FRAME_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.float64))
MAX_SIZE = 4096  # a model input side; larger is a mistake that would only allocate
F32_TINY, F32_MAX, F64_MAX = (
    float(np.finfo(np.float32).tiny),
    float(np.finfo(np.float32).max),
    float(np.finfo(np.float64).max),
)
GRAY_WEIGHTS = np.array([0.114, 0.587, 0.299])  # B, G, R: OpenCV's (ITU-R BT.601) for its BGR2GRAY


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
    value_range: finite (low, high) mapped to 0 and 1 (values beyond are clipped); None for the dtype's full range
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
        # normalised to tuples of ints and floats, so that the frozen instance holds plain, hashable values
        if self.roi is not None:
            roi = _integers(self.roi, 4)
            if roi is None or min(roi[2:]) < 1 or min(roi[:2]) < 0:
                raise ValueError(
                    f"Expected roi as (x, y, width, height) integers with x, y >= 0 and sizes >= 1, got {self.roi!r}."
                )
            object.__setattr__(self, "roi", roi)
        if not isinstance(self.channel_order, str) or self.channel_order not in ("bgr", "rgb"):
            raise ValueError(f"Expected channel_order 'bgr' or 'rgb', but got {self.channel_order!r}.")
        if not (self.value_range is None or isinstance(self.value_range, str) and self.value_range == "auto"):
            value_range = _finite_pair(self.value_range)
            if value_range is None or not value_range[0] < value_range[1]:
                raise ValueError(
                    f"Expected value_range None, 'auto' or finite (low, high) with low < high, but got "
                    f"{self.value_range!r}."
                )
            object.__setattr__(self, "value_range", value_range)
        if not isinstance(self.invert, bool | np.bool_):
            raise ValueError(f"Expected invert to be True or False, but got {self.invert!r}.")
        size = _integers(self.size, 2)
        if size is None or not all(1 <= side <= MAX_SIZE for side in size):
            raise ValueError(f"Expected size as (height, width) integers from 1 to {MAX_SIZE}, but got {self.size!r}.")
        object.__setattr__(self, "size", size)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        cv2 = import_cv2()
        gray = self._grayscale(cv2, self._crop(check_frame(frame)))
        image = _to_unit(gray, *self._range(gray))
        if self.invert:
            image = 1.0 - image
        height, width = self.size
        if image.shape != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        return np.clip(image, 0.0, 1.0)[None]

    def batch(self, frames) -> np.ndarray:
        """A sequence of frames (or an array shaped (B, H, W[, C])) -> (B, 1, H, W)."""
        if not hasattr(frames, "__len__") or isinstance(frames, np.ndarray) and frames.ndim < 3:
            shown = f"an array shaped {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
            raise ValueError(f"Expected a sequence of frames or an array (B, H, W[, C]), but got {shown}.")
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
        if frame.dtype == np.float64:  # cvtColor does not take float64, and float32 would lose its range and detail
            weights = GRAY_WEIGHTS if self.channel_order == "bgr" else GRAY_WEIGHTS[::-1]
            # at float64's very limit the weighted sum can round up to infinity: back to the largest float
            return np.clip(frame[..., :3] @ weights, -F64_MAX, F64_MAX)
        if self.channel_order == "rgb":
            code = code.replace("BGR", "RGB")
        return cv2.cvtColor(np.ascontiguousarray(frame), getattr(cv2, f"COLOR_{code}"))

    def _range(self, gray: np.ndarray) -> tuple[float, float]:
        """(low, high); 'auto' gives low == high for a flat frame, which _to_unit maps to 0."""
        if self.value_range == "auto":
            low, high = (float(v) for v in np.percentile(gray, AUTO_PERCENTILES))
            if not (math.isfinite(low) and math.isfinite(high)):  # the interpolation overflowed near float's limits
                low, high = (float(v) for v in np.percentile(gray, AUTO_PERCENTILES, method="nearest"))
            return low, high
        if self.value_range is not None:
            return self.value_range
        return DTYPE_RANGES.get(gray.dtype, (0.0, 1.0))


def _to_unit(gray: np.ndarray, low: float, high: float) -> np.ndarray:
    """(gray - low) / (high - low) clipped to [0, 1], as float32, never NaN. float32 arithmetic where the range fits
    it with room (the common case, and the fast one); float64 with the values clipped first where the range is tiny
    against its ends or near float's limits, which in float32 would give 0 / 0 or inf / inf."""
    span = high - low
    if not span > 0:
        return np.zeros(gray.shape, np.float32)
    if F32_TINY <= span <= F32_MAX and max(abs(low), abs(high)) <= min(F32_MAX, span * 2**10):
        with np.errstate(over="ignore"):  # float64 values beyond float32 become infinite, then clipped: as intended
            return np.clip((gray.astype(np.float32) - low) / span, 0.0, 1.0)
    clipped = np.clip(gray.astype(np.float64), low, high)
    if math.isinf(span):  # both ends near float64's limits: halving is exact there and makes the differences fit
        return ((clipped / 2 - low / 2) / (high / 2 - low / 2)).astype(np.float32)
    return ((clipped - low) / span).astype(np.float32)


def check_frame(frame) -> np.ndarray:
    """A camera frame: a non-empty array (H, W) or (H, W, C) with C in 1, 3, 4, of uint8, uint16 or finite floats."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"Expected a frame as a numpy array (H, W) or (H, W, C), but got {type(frame).__name__}.")
    if frame.dtype.newbyteorder("=") not in FRAME_DTYPES:
        raise ValueError(f"Expected a frame of dtype uint8, uint16, float32 or float64, but got {frame.dtype}.")
    if not frame.dtype.isnative:  # a big-endian array from a file: the same values in this machine's order
        frame = frame.astype(frame.dtype.newbyteorder("="))
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


def _integers(value, count: int) -> tuple[int, ...] | None:
    """count integers (Python's or numpy's, not bools) as a tuple of ints; None for anything else."""
    try:
        items = tuple(value)
    except TypeError:
        return None
    ok = len(items) == count and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items)
    return tuple(int(v) for v in items) if ok else None


def _finite_pair(value) -> tuple[float, float] | None:
    """Two finite real numbers as floats; None for anything else (a string is not a pair of numbers)."""
    if isinstance(value, str | bytes):
        return None
    try:
        items = tuple(value)
    except TypeError:
        return None
    if not (len(items) == 2 and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items)):
        return None
    try:
        pair = tuple(float(v) for v in items)
    except OverflowError:  # an integer beyond float's range
        return None
    return pair if all(map(math.isfinite, pair)) else None


def _is_frame_stack(frames: np.ndarray) -> bool:
    """(B, H, W) gray frames are 3-D like one colour frame (H, W, C); a last axis of 1, 3 or 4 means colour."""
    return frames.ndim == 3 and frames.shape[2] not in CHANNEL_COUNTS
