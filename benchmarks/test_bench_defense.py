"""Per-image latency of the defence at the `default` preset, side by side in one run (pytest-benchmark; not in the
default test run):

    python -m pytest benchmarks/test_bench_defense.py --benchmark-json benchmarks/results/defense_cpu.json
    python tools/speedup_table.py benchmarks/results/defense_cpu.json

The contenders (reference/side_by_side.py): the lean runtime (onnxruntime CPU) on each shipped U-Net's graphs
(general, folded timesteps, int8; each U-Net call in two parts at the same time, the default, or unsharded), and
the PyTorch reference with the same weights and settings, eager and under torch.compile (Inductor, freezing). Here
they run one after another; `python tools/side_by_side.py` times the same contenders in turns, which a shared cloud
CPU's drift cannot favour.

Each round defends the same 8 MNIST test images as one batch or one image at a time (batch 1: a camera pipeline's
frame by frame); extra_info holds milliseconds per image. The same run measures the CPU's float32 and int8
matrix-product rates, the floors that tools/speedup_table.py sets beside them.
"""

import numpy as np
import pytest
import torch

from diffdefense.reference.side_by_side import (
    BATCH,
    BATCH_SIZES,
    REFERENCE_VARIANTS,
    RUNTIME_VARIANTS,
    has_weights,
    int8_gemm_session,
    reference_contender,
    runtime_contender,
)

# the median of 9 rounds: one round's time moves by up to a third on a shared cloud CPU
ROUNDS = 9


def record(benchmark, info: dict) -> None:
    """The row's record, with milliseconds per image (a round's median over the BATCH images it defended)."""
    benchmark.extra_info.update(info, ms_per_image=1000 * benchmark.stats.stats.median / BATCH)


def shipped_or_skip(unet_name: str) -> None:
    if not has_weights(unet_name):
        pytest.skip(f"no shipped MNIST {unet_name} weights: train them (docs/training.md)")


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("variant", list(RUNTIME_VARIANTS))
def test_runtime_onnxruntime_cpu(benchmark, images, variant, batch_size):
    shipped_or_skip(RUNTIME_VARIANTS[variant][0])
    defender, defend_and_classify, info = runtime_contender(variant, images, batch_size)
    with defender:
        labels = benchmark.pedantic(defend_and_classify, rounds=ROUNDS, warmup_rounds=1)
    record(benchmark, info)
    assert labels.shape == (BATCH,)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("variant", list(REFERENCE_VARIANTS))
def test_reference_pytorch_cpu(benchmark, images, variant, batch_size):
    shipped_or_skip(REFERENCE_VARIANTS[variant][0])
    defend_and_classify, info = reference_contender(variant, images, batch_size)
    # torch.compile compiles once per input shape, in the warm-up round
    labels = benchmark.pedantic(defend_and_classify, rounds=ROUNDS, warmup_rounds=1)
    record(benchmark, info)
    assert labels.shape == (BATCH,)


@pytest.mark.parametrize("library", ["torch", "numpy"])
def test_sgemm_peak(benchmark, library):
    """The float32 rate this CPU attains at its best (a 2048 x 2048 matrix product, all threads, through torch's and
    numpy's BLAS; tools/speedup_table.py takes the faster), and the U-Net's FLOPs per evaluation: together the least
    time any float32 backend needs per image with each row's U-Net (its small convolutions reach less than a large
    matrix product does)."""
    n = 2048
    a, b = torch.randn(n, n, generator=torch.Generator().manual_seed(0)), torch.randn(n, n)
    multiply = torch.mm if library == "torch" else np.matmul
    if library == "numpy":
        a, b = a.numpy(), b.numpy()
    benchmark.pedantic(multiply, args=(a, b), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(
        backend="sgemm float32",
        library=library,
        gflops=2 * n**3 / benchmark.stats.stats.min / 1e9,
        threads=torch.get_num_threads(),
    )
    assert benchmark.extra_info["gflops"] > 0


def test_int8_gemm_peak(benchmark):
    """The int8 rate of onnxruntime's own kernel (MatMulInteger, uint8 x int8 -> int32, 2048 x 2048, the kernel
    family its QLinearConv uses): the floor for the int8 graphs, measured the same way as the float32 one."""
    n = 2048
    session, feed, library = int8_gemm_session(n)
    benchmark.pedantic(session.run, args=(None, feed), rounds=5, warmup_rounds=1)
    benchmark.extra_info.update(backend="gemm int8", library=library, gops=2 * n**3 / benchmark.stats.stats.min / 1e9)
    assert benchmark.extra_info["gops"] > 0
