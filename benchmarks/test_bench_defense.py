"""Per-image latency of the defence: the lean runtime (onnxruntime CPU) against the PyTorch reference, at the
same settings, in one run (pytest-benchmark; not in the default test run).

    python -m pytest benchmarks/test_bench_defense.py --benchmark-json benchmarks/results/defense_cpu.json

Each round defends the same 8 MNIST test images with the shipped bundle and weights, either as one batch or one
image at a time (batch 1: a camera pipeline's frame by frame); extra_info holds milliseconds per image.
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
