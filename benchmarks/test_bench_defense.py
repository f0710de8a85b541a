"""Per-image latency of the defence: the lean runtime (onnxruntime CPU) against the PyTorch reference, at the
same settings, in one run (pytest-benchmark; not in the default test run).

    python -m pytest benchmarks/test_bench_defense.py --benchmark-json benchmarks/results/defense_cpu.json

Each round defends the same 8 MNIST test images with the shipped bundle and weights, either as one batch or one
image at a time (batch 1: a camera pipeline's frame by frame); extra_info holds milliseconds per image. The same run
measures the CPU's float32 matrix-product rate, the ceiling that tools/speedup_table.py sets beside them.
"""

import numpy as np
import pytest
import torch

from benchmarks.conftest import BATCH
from diffdefense.reference.defense import ReferenceDefense
from diffdefense.runtime.defender import Defender
from diffdefense.settings import PRESETS
from diffdefense.shipped import BUNDLES_DIR
from diffdefense.training.loading import load_classifier, load_unet
from diffdefense.training.quality import unet_size

BATCH_SIZES = (BATCH, 1)


def chunks(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [images[i : i + batch_size] for i in range(0, len(images), batch_size)]


def record(benchmark, batch_size: int, **info) -> None:
    """Milliseconds per image: a round's median over the BATCH images it defended."""
    benchmark.extra_info.update(ms_per_image=1000 * benchmark.stats.stats.median / BATCH, batch_size=batch_size, **info)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_runtime_onnxruntime_cpu(benchmark, images, preset, batch_size):
    defender = Defender(BUNDLES_DIR / "mnist", preset)
    labels = benchmark.pedantic(
        lambda: np.concatenate([defender(chunk).labels for chunk in chunks(images, batch_size)]),
        rounds=3,
        warmup_rounds=1,
    )
    record(
        benchmark,
        batch_size,
        preset=preset,
        backend="runtime onnxruntime CPU",
        unet_evaluations=defender.settings.unet_evaluations,
    )
    assert labels.shape == (BATCH,)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_reference_pytorch_cpu(benchmark, images, preset, batch_size):
    unet, schedule = load_unet("mnist")
    defense, classifier = ReferenceDefense(unet, schedule, PRESETS[preset]), load_classifier("mnist", "model_a")

    def defend_and_classify():
        with torch.no_grad():
            return torch.cat(
                [
                    classifier(defense.reconstruct(torch.from_numpy(chunk)).image).argmax(1)
                    for chunk in chunks(images, batch_size)
                ]
            )

    labels = benchmark.pedantic(defend_and_classify, rounds=3, warmup_rounds=1)
    record(benchmark, batch_size, preset=preset, backend="reference PyTorch CPU", threads=torch.get_num_threads())
    assert labels.shape == (BATCH,)


@pytest.mark.parametrize("library", ["torch", "numpy"])
def test_sgemm_peak(benchmark, library):
    """The float32 rate this CPU attains at its best (a 2048 x 2048 matrix product, all threads, through torch's and
    numpy's BLAS; tools/speedup_table.py takes the faster), and the U-Net's FLOPs per evaluation: together the least
    time any backend needs per image at a preset, whatever its kernels (the U-Net's small convolutions reach less
    than a large matrix product does)."""
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
        unet_flops_per_evaluation=unet_size(load_unet("mnist")[0])["flops_per_image"],
        threads=torch.get_num_threads(),
    )
    assert benchmark.extra_info["gflops"] > 0
