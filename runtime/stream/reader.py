"""Reading a video source on its own thread into a FrameQueue, each frame stamped with its capture time.

Two modes. Dropping the oldest (cameras, pipelines, paced files): the queue holds one frame, the newest, so the
defence, when it is free, always takes the newest frame there is, and a frame's latency is its own defence plus at
most one frame interval. Keeping every frame (files): up to queue_size frames wait, and each one's latency counts
its wait behind those before it.

Never a hang: a source that cannot be opened raises StreamError at once; a source that stops giving frames ends
the stream cleanly (a file's end, a camera unplugged); a source that stalls raises StreamError after read_timeout.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

import numpy as np

from diffdefense.runtime.stream.capture import CAP_PROP_FPS, open_capture
from diffdefense.runtime.stream.errors import StreamError
from diffdefense.runtime.stream.frame_queue import FrameQueue, QueueClosed, check_capacity, check_timeout


class FrameReader:
    """Reads frames on a daemon thread; iterate for (index, frame, capture time on time.perf_counter's clock).

    source: as open_capture takes it.
    drop_oldest: None picks by source: cameras, pipelines and capture objects drop, files keep every frame unless
        paced. Dropping, the queue holds only the newest frame whatever queue_size says.
    queue_size: the frames that may wait when every frame is kept.
    pace: deliver a file's frames at its frame rate, as a camera would (files are otherwise read as fast as decoded).
        A file read with drop_oldest is always paced, if its frame rate is known: read faster than real time it
        would drop nearly every frame, and its latencies would be no camera's.

    The capture time of a paced file's frame k is k / fps after the first frame was due (when a camera would have
    taken it); of a live source's frame, when its read() returned; of an unpaced file's frame, when it was read,
    so that its latency counts its wait in the queue.
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
        check_capacity(queue_size)
        self.source = source
        self.capture, self.kind = open_capture(source)
        try:
            fps = float(self.capture.get(CAP_PROP_FPS))
        except Exception:  # a wrapper that cannot say: unknown, like a backend's 0 or NaN
            fps = math.nan
        self.fps = fps if math.isfinite(fps) and fps > 0 else None  # some backends report 0 or NaN when unknown
        is_file = self.kind == "video file"
        drop = (not is_file or pace) if drop_oldest is None else bool(drop_oldest)
        self.pace = is_file and (pace or drop) and self.fps is not None
        self.queue = FrameQueue(1 if drop else queue_size, drop_oldest=drop)
        self.read_timeout = read_timeout
        self.frames_read = 0
        self.thread = threading.Thread(target=self._read, name="diffdefense-frame-reader", daemon=True)
        self.thread.start()

    @property
    def drop_oldest(self) -> bool:
        return self.queue.drop_oldest

    def _read(self) -> None:
        error = None
        started = time.perf_counter()
        try:
            while not self.queue.closed:
                due = started + self.frames_read / self.fps if self.pace else None  # frame k, k / fps after the first
                if due is not None:
                    time.sleep(max(0.0, due - time.perf_counter()))
                ok, frame = self.capture.read()
                if not ok:  # end of file, or a camera that went away: the end of the stream
                    break
                captured = due if due is not None else time.perf_counter()
                if not self.queue.put((self.frames_read, frame, captured)):
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
