"""The fused steps of cpp_ext against the numpy expressions they replace, in one run (pytest-benchmark; not in the
default test run):

    python -m pytest benchmarks/test_bench_fused.py --benchmark-json benchmarks/results/fused_cpu.json

Each op runs through the runtime's own ops objects (diffdefense.runtime.fused.load_step_ops) at the runtime's
shapes, one image (1 x 5 candidates x 1 x 28 x 28) and a batch of 8 (40 x 1 x 28 x 28), and at a large batch
(4096 x 1 x 28 x 28). extra_info holds, for cpp_ext, speedup_vs_numpy (the numpy median over this one's, both
measured in this run); at the large size, the bytes the op must move over its median time, against this
machine's memory bandwidth measured first (a 256 MB numpy copy). Last, the defender's per-image latency with
either implementation, and the time of it spent in the steps.
"""

import os
import time

import numpy as np
import pytest

from benchmarks.conftest import BATCH
from diffdefense.runtime.defender import Defender
from diffdefense.runtime.fused import load_step_ops
from diffdefense.shipped import BUNDLES_DIR

fused = pytest.importorskip("diffdefense_fused", reason="the compiled extension: python -m pip install ./cpp_ext")

SHAPES = {"1x5": (5, 1, 28, 28), "8x5": (40, 1, 28, 28), "4096": (4096, 1, 28, 28)}
LARGE = "4096"
# Arrays each op must read and write at least once (its output included): the bytes moved are this x the array size.
ARRAYS_MOVED = {"reverse_step": 4, "loss_sigmoid": 4, "loss_clip": 4, "adam_update": 7}
IMPLEMENTATIONS = ["numpy", "cpp_ext", "cpp_ext_1thread"]

medians: dict[tuple, float] = {}  # (what, shape, implementation) -> seconds, for ratios within this run
bandwidth: dict[str, float] = {}


def record(benchmark, key: tuple) -> float:
    median = benchmark.stats.stats.median
    medians[key] = median
    benchmark.extra_info.update(median_us=1e6 * median, load_average_1min=os.getloadavg()[0])
    numpy_median = medians.get((*key[:-1], "numpy"))
    if key[-1] != "numpy" and numpy_median is not None:
        benchmark.extra_info["speedup_vs_numpy"] = numpy_median / median
    return median


def test_memory_bandwidth_numpy_copy(benchmark):
    source = np.ones(64 << 20, np.float32)  # 256 MB: far beyond the caches
    destination = np.empty_like(source)
    benchmark.pedantic(np.copyto, args=(destination, source), rounds=10, warmup_rounds=1)
    bandwidth["copy"] = 2 * source.nbytes / benchmark.stats.stats.median / 1e9  # read + write
    benchmark.extra_info.update(bytes_moved=2 * source.nbytes, gb_per_s=bandwidth["copy"])


def step_call(op: str, shape: tuple, ops):
    rng = np.random.default_rng(0)
    x, eps, noise, z, grad = rng.standard_normal((5, *shape), dtype=np.float32)
    target = rng.random(shape, dtype=np.float32)
    m, v = np.zeros_like(z), np.zeros_like(z)
    return {
        "reverse_step": lambda: ops.reverse_step(x, eps, 0.97, -0.05, 0.1, noise),
        "loss_sigmoid": lambda: ops.loss_and_gradient(x, target, 0.3, "sigmoid"),
        "loss_clip": lambda: ops.loss_and_gradient(x, target, 0.3, "clip"),
        "adam_update": lambda: ops.adam_update(z, grad, m, v, 3, 0.1, 0.5, 0.999),
    }[op]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)  # innermost: numpy runs just before cpp_ext
@pytest.mark.parametrize("op", list(ARRAYS_MOVED))
@pytest.mark.parametrize("shape_name", list(SHAPES))
def test_step(benchmark, shape_name, op, implementation):
    if implementation == "cpp_ext_1thread" and shape_name != LARGE:
        pytest.skip("below the parallel threshold cpp_ext runs on one thread anyway")
    shape = SHAPES[shape_name]
    one_thread = implementation.endswith("_1thread")
    ops = load_step_ops(implementation.removesuffix("_1thread"))
    previous = fused.set_num_threads(1) if one_thread else None
    try:
        benchmark(step_call(op, shape, ops))
    finally:
        if one_thread:
            fused.set_num_threads(previous)
    median = record(benchmark, (op, shape_name, implementation))
    threads = 1 if one_thread else fused.build_info()["cpu_threads"]
    benchmark.extra_info.update(elements=int(np.prod(shape)), cpu_threads=threads)
    if shape_name == LARGE:
        moved = ARRAYS_MOVED[op] * 4 * int(np.prod(shape))
        gb_per_s = moved / median / 1e9
        benchmark.extra_info.update(bytes_moved=moved, gb_per_s=gb_per_s)
        if "copy" in bandwidth:
            benchmark.extra_info.update(copy_gb_per_s=bandwidth["copy"], fraction_of_copy=gb_per_s / bandwidth["copy"])


class TimedSteps:
    """The defender's step ops, timed: seconds spent in them."""

    def __init__(self, ops) -> None:
        self.ops, self.name, self.seconds = ops, ops.name, 0.0
        for method in ("reverse_step", "loss_and_gradient", "adam_update"):
            setattr(self, method, self.timed(getattr(ops, method)))

    def timed(self, function):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return call


@pytest.mark.parametrize("step_ops", ["numpy", "cpp_ext"])
@pytest.mark.parametrize("preset", ["default", "paper"])
def test_defender_per_image(benchmark, images, step_ops, preset):
    defender = Defender(BUNDLES_DIR / "mnist", preset, step_ops=step_ops)
    defender.steps = timed = TimedSteps(defender.steps)
    rounds, warmup_rounds = 3, 1
    result = benchmark.pedantic(defender, args=(images,), rounds=rounds, warmup_rounds=warmup_rounds)
    median = record(benchmark, ("defender", preset, step_ops))
    benchmark.extra_info.update(
        ms_per_image=1000 * median / BATCH,
        step_ops_ms_per_image=1000 * timed.seconds / ((rounds + warmup_rounds) * BATCH),  # mean over every call
        unet_evaluations=defender.settings.unet_evaluations,
    )
    assert result.step_ops == step_ops
