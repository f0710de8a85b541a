"""Per-image latency of the defence: the lean runtime (onnxruntime CPU) against the PyTorch reference, at the
same settings, in one run (pytest-benchmark; not in the default test run).

    python -m pytest benchmarks/test_bench_defense.py --benchmark-json benchmarks/results/defense.json

Each round defends a batch of 8 MNIST test images with the shipped bundle and weights; extra_info holds
milliseconds per image.
"""

import pytest
import torch

from benchmarks.conftest import BATCH
from diffdefense.reference.defense import ReferenceDefense
from diffdefense.runtime.defender import Defender
from diffdefense.settings import PRESETS
from diffdefense.shipped import BUNDLES_DIR
from diffdefense.training.loading import load_classifier, load_unet


def per_image_ms(benchmark) -> float:
    return 1000 * benchmark.stats.stats.median / BATCH


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_runtime_onnxruntime_cpu(benchmark, images, preset):
    defender = Defender(BUNDLES_DIR / "mnist", preset)
    result = benchmark.pedantic(defender, args=(images,), rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(
        ms_per_image=per_image_ms(benchmark),
        backend="runtime onnxruntime CPU",
        unet_evaluations=defender.settings.unet_evaluations,
    )
    assert result.labels.shape == (BATCH,)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_reference_pytorch_cpu(benchmark, images, preset):
    unet, schedule = load_unet("mnist")
    defense, classifier = ReferenceDefense(unet, schedule, PRESETS[preset]), load_classifier("mnist", "model_a")
    x = torch.from_numpy(images)

    def defend_and_classify():
        with torch.no_grad():
            return classifier(defense.reconstruct(x).image).argmax(1)

    labels = benchmark.pedantic(defend_and_classify, rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(
        ms_per_image=per_image_ms(benchmark), backend="reference PyTorch CPU", threads=torch.get_num_threads()
    )
    assert labels.shape == (BATCH,)
