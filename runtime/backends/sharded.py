"""One graph as several CPU sessions that each run a part of the batch, at the same time.

A U-Net call of the defence is small (12 candidates for a frame, 96 for 8 images) and made of small convolutions:
when one session spreads each operator over all the cores, the threads meet at a barrier after every operator, and
that waiting grows with the thread count as the work per operator shrinks. Cutting the batch into parts, each run by
its own session with its share of the threads, lets the parts run through the graph without waiting for each other.
Every image's result is the same as in one session: the parts are independent images.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from diffdefense.runtime.backends.base import BackendError, Runner

# The parts a call is cut into when BackendOptions.shards is None: two where the thread budget allows. Two halves
# each with half the threads is the split that keeps the most intra-op parallelism per part on a machine of any size.
DEFAULT_SHARDS = 2


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_shards(shards: int | None, threads: int | None, provider: str) -> tuple[int, int | None]:
    """(parts per call, onnxruntime threads per part's session) for BackendOptions' shards and threads.

    threads is the thread budget of one call in all (None: the usable cores); a GPU provider runs one part."""
    if provider != "cpu":
        if shards not in (None, 1):
            raise BackendError(f"Sharded calls run on the CPU provider only, but provider is {provider!r}.")
        return 1, threads
    budget = threads or usable_cores()
    if shards is None:
        shards = min(DEFAULT_SHARDS, budget)
    if shards == 1:
        return 1, threads
    return shards, max(1, budget // shards)


class ShardedRunner:
    """run(*inputs): the batch (axis 0 of every input) cut into len(runners) near-equal parts, one per runner, run
    concurrently (onnxruntime releases the GIL), the outputs joined in order. A batch smaller than the number of
    runners runs on as many as it has images."""

    def __init__(self, runners: list[Runner]) -> None:
        if len(runners) < 2:
            raise ValueError(f"Expected at least 2 runners to shard over, but got {len(runners)}.")
        self.runners = runners
        self.name = runners[0].name
        self.provider = runners[0].provider
        self.pool: ThreadPoolExecutor | None = ThreadPoolExecutor(len(runners) - 1, thread_name_prefix="shard")

    def run(self, *inputs: np.ndarray) -> np.ndarray:
        if self.pool is None:
            raise BackendError(f"The sharded sessions of {self.name} were closed; make a new runner to run them.")
        batch = len(inputs[0])
        parts = min(len(self.runners), batch)
        if parts <= 1:
            return self.runners[0].run(*inputs)
        bounds = [batch * part // parts for part in range(parts + 1)]
        pieces = [[x[lo:hi] for x in inputs] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        others = [self.pool.submit(r.run, *p) for r, p in zip(self.runners[1:parts], pieces[1:], strict=True)]
        first = self.runners[0].run(*pieces[0])
        return np.concatenate([first, *(f.result() for f in others)])

    def close(self) -> None:
        """Release every session and the worker threads; a second call does nothing."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
        for runner in self.runners:
            runner.close()
