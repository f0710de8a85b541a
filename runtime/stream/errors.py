"""The error of a stream's ends: a source that cannot be read, or an output video that cannot be written."""

from __future__ import annotations


class StreamError(RuntimeError):
    """A video source that cannot be opened, fails, or stalls; or an output video that cannot be written."""
