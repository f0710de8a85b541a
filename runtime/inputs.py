"""Reading image files for the command line: .npy arrays and .npz archives (never pickled)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ImageFile:
    """images float32 (N, 1, 28, 28) in [0, 1]; labels and attacked: per image, when the file has them."""

    images: np.ndarray
    labels: np.ndarray | None = None
    attacked: np.ndarray | None = None


def to_unit_images(array: np.ndarray, source: str) -> np.ndarray:
    """uint8 0..255 or float 0..1, shaped (N, 28, 28) or (N, 1, 28, 28) -> float32 (N, 1, 28, 28)."""
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise ValueError(f"{source}: expected images shaped (N, 28, 28) or (N, 1, 28, 28), but got {array.shape}.")
    return array


ARRAY_SUFFIXES = (".npy", ".npz")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")


def expand_inputs(paths) -> list[Path]:
    """Files as given, and each folder's readable files (sorted; not recursive)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in (*ARRAY_SUFFIXES, *PICTURE_SUFFIXES))
            if not found:
                raise ValueError(
                    f"Expected .npy, .npz or picture files in the folder {path}, but it holds none of them."
                )
            files += found
        else:
            files.append(path)
    return files


def read_picture(path: Path, preprocessor) -> ImageFile:
    """A picture file (PNG, JPEG, ...) through the frame preprocessing, as one image."""
    from diffdefense.runtime.frames import import_cv2

    cv2 = import_cv2()
    frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if frame is None:
        raise ValueError(f"OpenCV could not read {path} as a picture.")
    return ImageFile(preprocessor(frame)[None])


def read_image_file(path: str | Path, preprocessor=None) -> ImageFile:
    """.npy / .npz arrays of model-sized images, or a picture file preprocessed as a camera frame."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Expected an image file at {path}, but there is none.")
    if path.suffix.lower() in PICTURE_SUFFIXES:
        from diffdefense.runtime.frames import FramePreprocessor

        return read_picture(path, preprocessor or FramePreprocessor())
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as err:
        raise ValueError(f"{path} is not a .npy or .npz file that can be read without pickle ({err}).") from err
    if isinstance(loaded, np.ndarray):
        return ImageFile(to_unit_images(loaded, str(path)))
    with loaded:
        if "images" not in loaded:
            raise ValueError(f"{path}: expected an array named 'images', but it holds {sorted(loaded.files)}.")
        return ImageFile(
            to_unit_images(loaded["images"], str(path)),
            loaded["labels"] if "labels" in loaded else None,
            loaded["attacked"] if "attacked" in loaded else None,
        )
