"""A simulated camera: MNIST-sized digits printed as ink on lit paper, with drifting light, shake and sensor noise.

render_frame draws one 320 x 240 BGR uint8 frame; the digit's 28 x 28 pixels, 3x nearest-neighbour upscaled, fill
the 84 x 84 region of interest ROI, so that FramePreprocessor(roi=ROI, invert=True, value_range="auto") recovers
the digit. SyntheticCamera is a capture-like object (read, get, release) over the shipped sample digits, for
streaming without a video file.
"""

from __future__ import annotations

import numpy as np

from diffdefense.shipped import SAMPLES_DIR

FRAME_SIZE = (320, 240)  # width, height
ROI = (118, 78, 84, 84)  # x, y, width, height: the digit's 28 x 28 pixels at 3x
SCALE = 3
SHAKE_PX = 3  # hand-held shake, in frame pixels (1 model pixel)
INK = 0.85  # the darkest ink reflects 15% of the paper's light
FRAMES_PER_DIGIT = 20  # how long a digit is held before the next
PREPROCESSING = {"roi": ROI, "invert": True, "value_range": "auto"}  # what recovers the digit from a frame


def render_frame(digit: np.ndarray, k: int, rng: np.random.Generator, noise_std: float) -> np.ndarray:
    """One BGR uint8 frame: the digit (28 x 28 in [0, 1], light on dark) printed as ink on paper at frame k."""
    width, height = FRAME_SIZE
    gain = 0.9 + 0.1 * np.sin(2 * np.pi * k / 90)  # lighting drifts over 3 s at 30 fps
    slope = 0.15 * np.sin(2 * np.pi * k / 150)
    paper = 205.0 * gain * (1 + slope * np.linspace(-1, 1, width))[None, :].repeat(height, axis=0)
    ink = np.zeros((height, width))
    dx = int(round(SHAKE_PX * np.sin(2 * np.pi * k / 23)))
    dy = int(round(SHAKE_PX * np.cos(2 * np.pi * k / 31)))
    x, y, w, h = ROI
    ink[y + dy : y + dy + h, x + dx : x + dx + w] = np.kron(digit, np.ones((SCALE, SCALE)))
    gray = paper * (1 - INK * ink) + rng.normal(0, noise_std, (height, width))
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    # a slight colour cast, as a camera's white balance gives: the frames are BGR, not gray in disguise
    return np.stack([gray, gray, np.clip(gray.astype(np.int16) + 6, 0, 255).astype(np.uint8)], axis=-1)


class SyntheticCamera:
    """A capture (read, get, release) that gives `frames` frames and then ends; frame k shows sample digit
    k // frames_per_digit (cycling over the 16 shipped samples, 8 clean and 8 PGD-attacked)."""

    def __init__(
        self, frames: int, seed: int = 0, noise_std: float = 4.0, frames_per_digit: int = FRAMES_PER_DIGIT
    ) -> None:
        samples = np.load(SAMPLES_DIR / "mnist.npz")
        self.digits, self.labels, self.attacked = samples["images"][:, 0], samples["labels"], samples["attacked"]
        self.frames, self.index, self.noise_std = frames, 0, noise_std
        self.frames_per_digit = frames_per_digit
        self.rng = np.random.default_rng(seed)

    def digit(self, index: int) -> int:
        return (index // self.frames_per_digit) % len(self.digits)

    def read(self):
        if self.index >= self.frames:
            return False, None
        frame = render_frame(self.digits[self.digit(self.index)], self.index, self.rng, self.noise_std)
        self.index += 1
        return True, frame

    def get(self, prop) -> float:
        return 30.0  # frames per second, the only property FrameReader asks for

    def release(self) -> None:
        pass
