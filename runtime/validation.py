"""Checking images before they reach a model: full-sentence errors that say what was expected and what came."""

from __future__ import annotations

import numpy as np


def check_images(images, image_shape: tuple[int, ...] = (1, 28, 28)) -> np.ndarray:
    """A batch (B, *image_shape) of finite floats in [0, 1] -> contiguous float32. Raises ValueError otherwise."""
    if not isinstance(images, np.ndarray):
        raise ValueError(f"Expected a numpy array of images, but got {type(images).__name__}.")
    if images.dtype not in (np.float32, np.float64, np.float16):
        raise ValueError(
            f"Expected float images in [0, 1] (float32 or float64), but got dtype {images.dtype}"
            + ("; divide uint8 images by 255 first." if images.dtype == np.uint8 else ".")
        )
    if images.ndim != len(image_shape) + 1 or tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"Expected images of shape (B, {', '.join(map(str, image_shape))}), but got {images.shape}.")
    if images.shape[0] == 0:
        raise ValueError("Expected at least one image, but the batch is empty.")
    if not np.isfinite(images).all():
        raise ValueError("Expected finite pixel values, but the images contain NaN or infinity.")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"Expected pixel values in [0, 1], but they range from {low:g} to {high:g}.")
    return np.ascontiguousarray(images, dtype=np.float32)
