"""The runtime on onnxruntime's GPU providers gives the CPU's answer. Skips, saying why, without a GPU."""

import numpy as np
import pytest

from diffdefense.runtime.backends import PROVIDERS, available_providers
from diffdefense.runtime.defender import Defender
from diffdefense.settings import DefenseSettings

SETTINGS = DefenseSettings(num_candidates=3, iterations=3, num_steps=4, start_step=14, lr=0.1)


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_gpu_provider_matches_cpu(exported_bundle, provider):
    if PROVIDERS[provider] not in available_providers():
        pytest.skip(
            f"{PROVIDERS[provider]} is not available here (installed: {available_providers()}); "
            "it needs onnxruntime-gpu and an NVIDIA GPU"
        )
    images = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    cpu = Defender(exported_bundle.path, SETTINGS, provider="cpu")(images)
    gpu = Defender(exported_bundle.path, SETTINGS, provider=provider)(images)
    assert np.abs(gpu.reconstructions - cpu.reconstructions).max() < 1e-2  # TF32 / fp16 kernels round differently
    np.testing.assert_array_equal(gpu.labels, cpu.labels)
