"""Defending a video stream frame by frame: an OpenCV source (a file, a camera index, or a GStreamer pipeline) read
on its own thread into a FrameQueue, each frame preprocessed, defended and classified, with per-stage timings.

Never a hang: a source that cannot be opened raises StreamError at once; a source that stops giving frames ends
the stream cleanly (a file's end, a camera unplugged); a source that stalls raises StreamError after read_timeout.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffdefense.runtime.frame_queue import FrameQueue, QueueClosed, check_timeout
from diffdefense.runtime.frames import FramePreprocessor, defend_frames, import_cv2
from diffdefense.runtime.warm_start import WarmStart


class StreamError(RuntimeError):
    """A video source that cannot be opened, fails, or stalls; or an output video that cannot be written."""


@dataclass(frozen=True)
class FrameResult:
    """One frame's answer. timings in seconds: 'wait' (for the frame), 'preprocess', 'defence', 'classify', and
    'latency' from the frame's capture to its answer (queueing included). warm: started from the previous frame."""

    index: int
    frame: np.ndarray
    label: int
    label_name: str
    probability: float
    attack_flag: bool
    reconstruction_error: float
    reconstruction: np.ndarray
    timings: dict[str, float]
    warm: bool


CAP_PROP_FPS = 5  # cv2.CAP_PROP_FPS, so that a capture wrapper needs no OpenCV


def open_capture(source):
    """cv2.VideoCapture for a camera index (an int or a string of digits), a GStreamer pipeline (a string with '!'),
    or a video file; StreamError if it does not open. An object that already has a capture's read(), get() and
    release() (a camera SDK's wrapper, a synthetic camera) is used as it is, as a live source."""
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


class FrameReader:
    """Reads frames on a daemon thread into a FrameQueue; iterate for (index, frame, capture time).

    source: as open_capture takes it.
    drop_oldest: None picks by source: drop for cameras and pipelines (stay current), wait for files (every frame),
        and drop for paced files.
    pace: deliver a file's frames at its frame rate, as a camera would (files are otherwise read as fast as taken).
    """

    def __init__(
        self,
        source,
        queue_size: int = 2,
        drop_oldest: bool | None = None,
        read_timeout: float = 5.0,
        pace: bool = False,
    ) -> None:
        check_timeout(read_timeout)  # the timeout and the queue are checked before the capture opens
        queue = FrameQueue(queue_size, drop_oldest=bool(drop_oldest))
        self.source = source
        self.capture, self.kind = open_capture(source)
        try:
            fps = float(self.capture.get(CAP_PROP_FPS))
        except Exception:  # a wrapper that cannot say: unknown, like a backend's 0 or NaN
            fps = math.nan
        self.fps = fps if math.isfinite(fps) and fps > 0 else None  # some backends report 0 or NaN when unknown
        self.pace = pace and self.kind == "video file" and self.fps is not None
        live = self.kind != "video file" or self.pace
        queue.drop_oldest = live if drop_oldest is None else drop_oldest
        self.queue = queue
        self.read_timeout = read_timeout
        self.frames_read = 0
        self.thread = threading.Thread(target=self._read, name="diffdefense-frame-reader", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        error = None
        started = time.perf_counter()
        try:
            while not self.queue.closed:
                if self.pace:  # frame k is due k / fps after the first
                    time.sleep(max(0.0, started + self.frames_read / self.fps - time.perf_counter()))
                ok, frame = self.capture.read()
                if not ok:  # end of file, or a camera that went away: the end of the stream
                    break
                if not self.queue.put((self.frames_read, frame, time.perf_counter())):
                    break
                self.frames_read += 1
        except Exception as err:  # handed to the consumer, which raises it as a StreamError
            error = err
        finally:
            self.queue.close(error)
            # The reader thread owns the capture and releases it once its last read() has returned: releasing
            # it from another thread under a blocked read() could crash some OpenCV backends, and a reader that
            # outlives close()'s wait must still free the camera when it gets out.
            try:
                self.capture.release()
            except Exception:  # a wrapper whose release fails has nothing more to give
                pass

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, float]]:
        while True:
            try:
                yield self.queue.get(self.read_timeout)
            except QueueClosed:
                return
            except TimeoutError as err:
                raise StreamError(f"The {self.kind} {self.source!r} stalled: {err}.") from err
            except Exception as err:
                raise StreamError(f"Reading the {self.kind} {self.source!r} failed: {err}") from err

    @property
    def dropped(self) -> int:
        return self.queue.dropped

    def close(self) -> None:
        """Stop reading; the reader thread releases the capture when its current read() returns."""
        self.queue.close()
        self.thread.join(timeout=self.read_timeout)

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def defend_stream(
    defender,
    reader: FrameReader,
    preprocessor: FramePreprocessor | None = None,
    warm_start: WarmStart | None = None,
    max_frames: int | None = None,
) -> Iterator[FrameResult]:
    """Defend each frame the reader gives, one at a time (the lowest latency), in order."""
    waited_since = time.perf_counter()
    for count, (index, frame, captured) in enumerate(reader):
        if max_frames is not None and count >= max_frames:
            return
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
            reconstruction=result.reconstructions[0, 0],
            timings={"wait": wait, **result.timings, "latency": done - captured},
            warm=bool(arguments),
        )
        waited_since = time.perf_counter()
