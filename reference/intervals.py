"""How far an accuracy measured on a sample of images can be from the accuracy on all such images.

Every robust accuracy in a report is a proportion of n images; its Wilson score interval (scipy) says which
differences the sample can tell apart: on 1,000 images a 90 % accuracy has the interval 88.0-91.7 %.
"""

from __future__ import annotations

import math

from scipy.stats import binomtest


def accuracy_interval(accuracy: float, images: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval (low, high) at confidence ``level`` for ``accuracy``, the share of ``images``
    images that were classified right. accuracy must be a count over images: k / images for a whole k."""
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ValueError(f"Expected the number of images as a whole number >= 1, but got {images!r}.")
    if not (isinstance(accuracy, float | int) and 0.0 <= accuracy <= 1.0):
        raise ValueError(f"Expected an accuracy in [0, 1], but got {accuracy!r}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"Expected a confidence level in (0, 1), but got {level!r}.")
    correct = round(accuracy * images)
    if not math.isclose(correct / images, accuracy, rel_tol=0, abs_tol=1e-9):
        raise ValueError(
            f"Expected an accuracy that is a count over {images} images, but {accuracy!r} is not k / {images}."
        )
    interval = binomtest(correct, images).proportion_ci(confidence_level=level, method="wilson")
    return float(interval.low), float(interval.high)
