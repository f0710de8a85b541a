"""Latency of the PyTorch models on this machine's CPU (pytest-benchmark; not in the default test run).

    python -m pytest benchmarks --benchmark-json benchmarks/results/torch_models.json

The U-Net batch sizes are those of the defence: R = 5 candidates for one image, and 8 images x 5.
"""

import pytest
import torch

from diffdefense.training.models import ModelA, UNet


@pytest.fixture(scope="module", autouse=True)
def no_grad():
    with torch.inference_mode():
        yield


@pytest.mark.parametrize("batch", [1, 5, 40])
def test_unet_forward(benchmark, batch):
    model = UNet().eval()
    x, t = torch.randn(batch, 1, 28, 28), torch.full((batch,), 10)
    benchmark.extra_info["threads"] = torch.get_num_threads()
    out = benchmark(model, x, t)
    assert out.shape == x.shape


@pytest.mark.parametrize("batch", [1, 64])
def test_model_a_forward(benchmark, batch):
    model = ModelA().eval()
    x = torch.rand(batch, 1, 28, 28)
    assert benchmark(model, x).shape == (batch, 10)
