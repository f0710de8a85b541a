"""A bounded queue between a camera's reader thread and the defence: when full, either the oldest frame is dropped
(live sources: the defence always works on the newest frame) or the reader waits (files: every frame counts).
FrameReader gives a dropping queue a capacity of one, so that the one frame waiting is always the newest."""

from __future__ import annotations

import math
import numbers
import threading
from collections import deque


class QueueClosed(Exception):
    """The producer has finished and every item has been taken."""


class FrameQueue:
    """capacity: items that may wait; drop_oldest: when full, drop the oldest (True) or make put wait (False).
    dropped counts the items dropped; most_waiting, the most that ever waited at once."""

    def __init__(self, capacity: int, drop_oldest: bool) -> None:
        check_capacity(capacity)
        self.items: deque = deque()
        self.capacity = capacity
        self.drop_oldest = drop_oldest
        self.dropped = 0
        self.most_waiting = 0
        self.closed = False
        self.error: BaseException | None = None
        self.condition = threading.Condition()

    def put(self, item) -> bool:
        """Add an item; False when the queue was closed meanwhile (the consumer has gone)."""
        with self.condition:
            while not self.drop_oldest and len(self.items) >= self.capacity and not self.closed:
                self.condition.wait()
            if self.closed:
                return False
            if len(self.items) >= self.capacity:
                self.items.popleft()
                self.dropped += 1
            self.items.append(item)
            self.most_waiting = max(self.most_waiting, len(self.items))
            self.condition.notify_all()
            return True

    def get(self, timeout: float):
        """The oldest item; QueueClosed at the end; TimeoutError when nothing came within timeout seconds; the
        producer's exception, if it failed."""
        check_timeout(timeout)
        with self.condition:
            if not self.condition.wait_for(lambda: self.items or self.closed, timeout):
                raise TimeoutError(f"no frame arrived within {timeout:g} s")
            if self.items:
                item = self.items.popleft()
                self.condition.notify_all()
                return item
            if self.error is not None:
                raise self.error
            raise QueueClosed

    def close(self, error: BaseException | None = None) -> None:
        """No more items (those queued can still be taken); error, if given, is raised to the consumer after them."""
        with self.condition:
            self.closed = True
            self.error = self.error or error
            self.condition.notify_all()


def check_capacity(capacity) -> None:
    """A queue capacity: an integer of at least 1 (not a bool), or ValueError."""
    if isinstance(capacity, bool) or not isinstance(capacity, numbers.Integral) or capacity < 1:
        raise ValueError(f"Expected a queue capacity that is an integer of at least 1, but got {capacity!r}.")


def check_timeout(seconds) -> None:
    """A wait that threading can honour: a finite number of seconds from 0 to threading.TIMEOUT_MAX (a negative,
    NaN or infinite one would either not wait at all or raise from inside the lock)."""
    ok = isinstance(seconds, numbers.Real) and not isinstance(seconds, bool) and math.isfinite(seconds)
    if not (ok and 0 <= seconds <= threading.TIMEOUT_MAX):
        raise ValueError(f"Expected a timeout in seconds from 0 to {threading.TIMEOUT_MAX:g}, but got {seconds!r}.")
