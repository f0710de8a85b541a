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


@pytest.mark.parametrize(
    ("provider", "installed", "chain"),
    [
        ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider"]),
        (
            "tensorrt",
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
            ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
        ),
    ],
)
def test_gpu_sessions_ask_for_gpu_providers_only(monkeypatch, tmp_path, provider, installed, chain):
    """What the session is asked for, checked here without a GPU: TensorRT is backed by CUDA (so the nodes it
    rejects stay on the GPU), and the CPU provider is never asked for."""
    import onnxruntime

    from diffdefense.runtime.backends import OnnxRunner

    asked = {}

    class Session:
        def __init__(self, model, options, providers):
            asked["providers"] = providers

        def get_providers(self):
            return [*asked["providers"], "CPUExecutionProvider"]

        def get_inputs(self):
            return []

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: installed)
    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    runner = OnnxRunner(tmp_path / "unet.onnx", provider, data=b"graph")
    assert asked["providers"] == chain and runner.provider == chain[0]


def test_the_tensorrt_provider_without_cuda_behind_it_is_refused(monkeypatch, tmp_path):
    import onnxruntime

    from diffdefense.runtime.backends import BackendError, OnnxRunner

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPU"])
    with pytest.raises(BackendError, match="The CUDAExecutionProvider is not available in this onnxruntime"):
        OnnxRunner(tmp_path / "unet.onnx", "tensorrt", data=b"graph")
