"""The random numbers of one defence call, drawn in numpy so that every backend sees the same ones."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from diffdefense.settings import DefenseSettings

IMAGE_SHAPE = (1, 28, 28)


@dataclass(frozen=True)
class Draws:
    """latents float32 (B, R, 1, 28, 28); noise float32 (runs, T*, B, R, 1, 28, 28), where runs is
    L with fresh noise per run and 1 otherwise (the same n_t for every run); with settings.refine, the refining
    pass's noise float32 (1 + T*, B, 1, 28, 28): the diffusion of the chosen image, then each step's n_t."""

    latents: np.ndarray
    noise: np.ndarray
    refine_noise: np.ndarray | None = None

    def step_noise(self, run: int) -> np.ndarray:
        return self.noise[run if len(self.noise) > 1 else 0]


# draw's numbers depend on (settings, batch, image shape) alone, so a camera's frame-by-frame calls would draw the
# same ones every frame, a share of an int8 frame's time that shows in a profile: a call in one chunk that draws at
# most this many numbers keeps them, read-only, for the next call with the same arguments
REUSED_DRAW_NUMBERS = 1 << 20


def draw(settings: DefenseSettings, batch: int, image_shape: tuple[int, ...] = IMAGE_SHAPE) -> Draws:
    """Seeded by settings.seed alone: the same seed and batch size give the same numbers (and refine's come after
    the others, so that it leaves them as they were). An image's latents depend on its index alone, but its noise
    also on the batch size (the noise comes after every latent): a chunk of a call is cut from the call's draws
    (draw_chunks), never drawn as a batch of its own."""
    rng = np.random.default_rng(settings.seed)
    shape = (batch, settings.num_candidates, *image_shape)
    latents = rng.standard_normal(shape, dtype=np.float32)
    runs = settings.iterations if settings.fresh_noise else 1
    noise = rng.standard_normal((runs, settings.num_steps, *shape), dtype=np.float32)
    if not settings.refine:
        return Draws(latents, noise)
    return Draws(latents, noise, rng.standard_normal((1 + settings.num_steps, batch, *image_shape), dtype=np.float32))


def draw_chunks(
    settings: DefenseSettings,
    batch: int,
    bounds: list[tuple[int, int]],
    image_shape: tuple[int, ...] = IMAGE_SHAPE,
) -> Iterator[Draws]:
    """draw(settings, batch, image_shape) cut into the images [start, stop) of each of bounds (consecutive, from 0
    to batch), bit for bit, while holding one chunk's numbers at a time rather than the whole call's.

    draw fills each array in C order from one generator, so a chunk's share of an array is one run of the stream
    per leading index (per (run, step) of the noise, per step of the refining noise). One pass through the
    generator, drawing and dropping each share, records the generator's state where each share begins; a chunk
    then draws its shares from those states. The price is drawing every number twice (one chunk: once). One chunk
    of at most REUSED_DRAW_NUMBERS numbers comes from a cache, read-only: the same arrays for the same arguments.
    """
    consecutive = bool(bounds) and [start for start, _ in bounds] == [0, *(stop for _, stop in bounds[:-1])]
    if not consecutive or any(start >= stop for start, stop in bounds) or bounds[-1][1] != batch:
        raise ValueError(f"Expected non-empty consecutive chunks from 0 to {batch}, but got {bounds}.")
    if len(bounds) == 1:
        per_image = sum(int(np.prod(shape)) * count for shape, count in _blocks(settings, image_shape))
        if batch * per_image <= REUSED_DRAW_NUMBERS:
            return iter([_reused_draw(settings, batch, tuple(image_shape))])
        return iter([draw(settings, batch, image_shape)])
    return _replayed_chunks(settings, bounds, image_shape)


@functools.lru_cache(maxsize=8)
def _reused_draw(settings: DefenseSettings, batch: int, image_shape: tuple[int, ...]) -> Draws:
    draws = draw(settings, batch, image_shape)
    for array in (draws.latents, draws.noise, draws.refine_noise):
        if array is not None:
            array.flags.writeable = False
    return draws


def _replayed_chunks(
    settings: DefenseSettings, bounds: list[tuple[int, int]], image_shape: tuple[int, ...]
) -> Iterator[Draws]:
    rng = np.random.default_rng(settings.seed)
    per_image = [shape for shape, count in _blocks(settings, image_shape) for _ in range(count)]
    starts = []  # starts[block][chunk]: the generator's state where that chunk's share of that block begins
    for shape in per_image:
        starts.append([])
        for start, stop in bounds:
            starts[-1].append(rng.bit_generator.state)
            rng.standard_normal((stop - start, *shape), dtype=np.float32)
    replay = np.random.Generator(type(rng.bit_generator)())
    for chunk, (start, stop) in enumerate(bounds):
        shares = []
        for block, shape in enumerate(per_image):
            replay.bit_generator.state = starts[block][chunk]
            shares.append(replay.standard_normal((stop - start, *shape), dtype=np.float32))
        yield _assemble(settings, shares)


def _blocks(settings: DefenseSettings, image_shape: tuple[int, ...]) -> list[tuple[tuple[int, ...], int]]:
    """draw's arrays in the generator's order, each as (one image's share of a block, number of blocks): the
    latents, one block; the step noise, one block per (run, step); the refining noise, one block per step."""
    candidates = (settings.num_candidates, *image_shape)
    runs = settings.iterations if settings.fresh_noise else 1
    blocks = [(candidates, 1), (candidates, runs * settings.num_steps)]
    return blocks + [(image_shape, 1 + settings.num_steps)] if settings.refine else blocks


def _assemble(settings: DefenseSettings, shares: list[np.ndarray]) -> Draws:
    """A chunk's Draws from its shares of every block, in _blocks' order."""
    runs = settings.iterations if settings.fresh_noise else 1
    steps = runs * settings.num_steps
    noise = np.stack(shares[1 : 1 + steps]).reshape(runs, settings.num_steps, *shares[1].shape)
    refine_noise = np.stack(shares[1 + steps :]) if settings.refine else None
    return Draws(shares[0], noise, refine_noise)
