"""Opening a video source with OpenCV: a file, a camera index or a GStreamer pipeline, or an object that already
reads like a capture (a camera SDK's wrapper, a synthetic camera)."""

from __future__ import annotations

from pathlib import Path

from diffdefense.runtime.stream.errors import StreamError
from diffdefense.runtime.stream.frames import import_cv2

CAP_PROP_FPS = 5  # cv2.CAP_PROP_FPS, so that a capture wrapper needs no OpenCV


def open_capture(source):
    """(capture, kind): cv2.VideoCapture for a camera index (an int or a string of digits), a GStreamer pipeline (a
    string with '!'), or a video file; StreamError if it does not open. An object that already has a capture's
    read(), get() and release() is used as it is, as a live source (kind 'capture')."""
    if all(callable(getattr(source, name, None)) for name in ("read", "get", "release")):
        return source, "capture"
    cv2 = import_cv2()
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        capture, kind = cv2.VideoCapture(int(source)), "camera"
    elif "!" in str(source):
        capture, kind = cv2.VideoCapture(str(source), cv2.CAP_GSTREAMER), "GStreamer pipeline"
    else:
        if not _is_file(source):
            raise StreamError(f"Expected a video file, a camera index or a GStreamer pipeline, but {source} is none.")
        capture, kind = cv2.VideoCapture(str(source)), "video file"
    if not capture.isOpened():
        capture.release()
        raise StreamError(f"OpenCV could not open the {kind} {source!r}.")
    return capture, kind


def _is_file(name) -> bool:
    try:
        return Path(name).is_file()
    except (OSError, ValueError):  # a name too long for the file system, or one with a NUL byte: no file
        return False
