"""Camera pipelines: frames to model inputs, a video source read on its own thread, each frame defended in turn.

One concern per module:
    frames       camera frames (any dtype, channels and size) to model inputs; defend_frames
    capture      opening a file, a camera index, a GStreamer pipeline or a capture-like object
    frame_queue  the bounded queue between the reader thread and the defence (drop the oldest, or wait)
    reader       FrameReader: the reader thread, its two modes, and each frame's capture time
    loop         defend_stream: each frame preprocessed, defended and classified, with its timings
    warm_start   starting a frame's candidates from the previous frame's winner
    summary      a run's frames per second, per-stage latency percentiles, and accuracy against ground truth
    annotate     an annotated copy of the stream as a video file
    errors       StreamError

Measurements of the path, each with its command under tools/ (not imported here):
    simulated_camera  digits printed on lit paper as a camera sees them; SyntheticCamera, a capture without a file
    warm_start_study  cold and warm starts over such a video (tools/warm_start_study.py)
    soak              a long stream with its memory watched (tools/soak.py)
    contact_sheet     a few frames of a video in one picture (tools/video_frames.py)
"""

from diffdefense.runtime.stream.annotate import AnnotatedVideoWriter
from diffdefense.runtime.stream.capture import open_capture
from diffdefense.runtime.stream.errors import StreamError
from diffdefense.runtime.stream.frame_queue import FrameQueue, QueueClosed
from diffdefense.runtime.stream.frames import FramePreprocessor, defend_frames
from diffdefense.runtime.stream.loop import FrameResult, defend_stream
from diffdefense.runtime.stream.reader import FrameReader
from diffdefense.runtime.stream.summary import FrameLog, check_truth, format_summary, summarize
from diffdefense.runtime.stream.warm_start import WarmStart

__all__ = [
    "AnnotatedVideoWriter",
    "FrameLog",
    "FramePreprocessor",
    "FrameQueue",
    "FrameReader",
    "FrameResult",
    "QueueClosed",
    "StreamError",
    "WarmStart",
    "check_truth",
    "defend_frames",
    "defend_stream",
    "format_summary",
    "open_capture",
    "summarize",
]
