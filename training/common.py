"""Pieces both training commands share: seeding, seeded batches, the run record."""

from __future__ import annotations

import random
import sys
import time

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int):
    """Shuffled index batches; the order depends only on (seed, epoch), so a resumed run sees the same batches."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def command_line() -> str:
    return " ".join(["diffdefense", *sys.argv[1:]]) if sys.argv else ""


class WallClock:
    """Training wall time, carried over a resume through the checkpoint."""

    def __init__(self, already: float = 0.0) -> None:
        self.already = already
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.already + time.perf_counter() - self.start
