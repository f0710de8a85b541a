"""Reading image files for the command line: .npy arrays and .npz archives (never pickled)."""

from __future__ import annotations

import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffdefense.runtime.validation import check_images

# What numpy and zipfile raise on a damaged file: empty or truncated, a broken archive or deflate stream, an unknown
# compression method or an encryption flag, a header declaring more than memory holds.
DAMAGE = (ValueError, OSError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)
# An .npz's optional per-image members: what each holds, and the dtype kinds that hold it.
PER_IMAGE = {"labels": ("an integer label", "iu"), "attacked": ("a bool", "b")}


@dataclass(frozen=True)
class ImageFile:
    """images float32 (N, 1, 28, 28) in [0, 1], N >= 1; labels (N,) integers and attacked (N,) bools, when the file
    has them (whether a label names a class is the bundle's to say)."""

    images: np.ndarray
    labels: np.ndarray | None = None
    attacked: np.ndarray | None = None


def to_unit_images(array: np.ndarray, source: str) -> np.ndarray:
    """uint8 0..255 or float 0..1, shaped (N, 28, 28) or (N, 1, 28, 28) -> float32 (N, 1, 28, 28); ValueError
    naming source otherwise (an empty array, NaN, values out of range included)."""
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise ValueError(f"{source}: expected images shaped (N, 28, 28) or (N, 1, 28, 28), but got {array.shape}.")
    try:
        return check_images(array)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err


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
    from diffdefense.runtime.stream.frames import import_cv2

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
        from diffdefense.runtime.stream.frames import FramePreprocessor

        return read_picture(path, preprocessor or FramePreprocessor())
    with _damage_named(path):
        loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.ndarray):
        return ImageFile(to_unit_images(loaded, str(path)))
    with loaded:
        if "images" not in loaded:
            raise ValueError(f"{path}: expected an array named 'images', but it holds {sorted(loaded.files)}.")
        with _damage_named(path):  # members are read (and inflated) only here
            arrays = {key: loaded[key] for key in ("images", *PER_IMAGE) if key in loaded}
    for key, array in arrays.items():
        if not isinstance(array, np.ndarray):  # numpy hands over a member that is no .npy as raw bytes
            raise ValueError(f"{path}: expected '{key}' to be a .npy array, but it is {len(array)} other bytes.")
    images = to_unit_images(arrays["images"], str(path))
    return ImageFile(images, *(_per_image(arrays.get(key), key, len(images), path) for key in PER_IMAGE))


@contextmanager
def _damage_named(path: Path):
    """numpy's and zipfile's errors on a damaged file -> ValueError naming it."""
    try:
        yield
    except DAMAGE as err:
        raise ValueError(
            f"Expected a .npy or .npz file that can be read without pickle at {path}, but reading it failed "
            f"({type(err).__name__}: {err})."
        ) from err


def _per_image(array: np.ndarray | None, key: str, count: int, path: Path) -> np.ndarray | None:
    """labels or attacked: one of PER_IMAGE's kind per image, else ValueError (None: the file has none)."""
    if array is None:
        return None
    what, kinds = PER_IMAGE[key]
    if array.dtype.kind not in kinds or array.shape != (count,):
        raise ValueError(
            f"{path}: expected '{key}' to hold {what} per image ({count}), but got {array.dtype} shaped {array.shape}."
        )
    return array
