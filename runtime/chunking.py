"""Splitting one large defence call into chunks that fit a memory budget.

All R candidates of every image in a chunk go through the U-Net together, so a call's peak memory grows with its
images x R. A call is cut into chunks of at most images_per_chunk images, defended one after the other with the
call's own random draws (diffdefense.draws.draw_chunks), so the results are those of the whole call, bit for bit.
"""

from __future__ import annotations

import math
import numbers

from diffdefense.settings import DefenseSettings

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes: 1 GiB for a call's working memory, the models and libraries not counted
# The resident memory one candidate adds to a call at its peak, beyond its random draws: onnxruntime's CPU buffers
# for the U-Net's activations (and, for full gradients, its vector-Jacobian graph's), and the loop's arrays. Measured
# on the MNIST bundle (1 x 28 x 28) by `python tools/memory_table.py` (docs/runtime.md), rounded up.
BYTES_PER_CANDIDATE = {"straight-through": 800_000, "full": 5_400_000}
FLOAT32 = 4


def candidate_bytes(settings: DefenseSettings, image_shape: tuple[int, ...]) -> int:
    """Peak bytes per candidate: the measured cost, plus twice its random numbers (a chunk's are drawn, then
    stacked) and, for full gradients, the chain's inputs kept for the backward pass."""
    pixels = math.prod(image_shape)
    runs = settings.iterations if settings.fresh_noise else 1
    numbers_drawn = 1 + runs * settings.num_steps + ((1 + settings.num_steps) if settings.refine else 0)
    kept = settings.num_steps if settings.gradient == "full" else 0
    scale = pixels / (28 * 28)  # the measured cost was for 28 x 28 images; activations grow with the pixels
    return int(BYTES_PER_CANDIDATE[settings.gradient] * scale) + FLOAT32 * pixels * (2 * numbers_drawn + kept)


def images_per_chunk(
    settings: DefenseSettings,
    image_shape: tuple[int, ...],
    max_batch: int | None = None,
    memory_budget: int | None = None,
) -> int:
    """The most images one chunk may hold: as many as memory_budget bytes (None: DEFAULT_MEMORY_BUDGET) allow at
    settings.num_candidates candidates each, at most max_batch (None: no limit but the budget), and at least one
    (an image's candidates are never split, so a budget below one image's cost still defends one at a time)."""
    if max_batch is not None and not _positive_integer(max_batch):
        raise ValueError(f"Expected max_batch to be None or an integer of at least 1, but got {max_batch!r}.")
    if memory_budget is not None and not _positive_integer(memory_budget):
        raise ValueError(
            f"Expected memory_budget to be None or a whole number of bytes of at least 1, but got {memory_budget!r}."
        )
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    per_image = settings.num_candidates * candidate_bytes(settings, image_shape)
    fitting = max(1, budget // per_image)
    return fitting if max_batch is None else min(fitting, int(max_batch))


def chunk_bounds(batch: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) of each chunk of at most size images, in order, covering batch images."""
    return [(start, min(start + size, batch)) for start in range(0, batch, size)]


def _positive_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
