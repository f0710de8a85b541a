"""tools/upsampling_variants.py: the rewrites of the U-Net's upsampling are the same function; the ReLU probe is not."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from diffdefense.export.onnx_export import export_graph
from diffdefense.export.upsampling_variants import REWRITES, rewritten, silu_as_relu
from diffdefense.training.models import FixedTimestepUNet, UNet


@pytest.mark.parametrize("variant", sorted(REWRITES))
def test_a_rewrite_is_the_upsampling_and_its_convolution(variant):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 3, 3, padding=1)
    h = torch.randn(2, 5, 7, 6)
    with torch.no_grad():
        expected = conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        got = REWRITES[variant](conv)(h)
    assert got.shape == expected.shape == (2, 3, 14, 12)
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("variant", sorted(REWRITES))
def test_a_rewritten_unet_is_the_folded_unet(variant):
    torch.manual_seed(0)
    net = FixedTimestepUNet(UNet(channels=(4, 8, 8), time_dim=16, norm="batch").eval(), 5).eval()
    x = 4 * torch.randn(3, 1, 28, 28)  # beyond the input bound too
    with torch.no_grad():
        assert torch.allclose(rewritten(net, variant)(x), net(x), atol=1e-5)
    assert isinstance(net.unet.up2, nn.Conv2d), "the rewrite changed the original net"


def test_the_relu_probe_replaces_every_silu_and_changes_the_function(tmp_path: Path):
    torch.manual_seed(0)
    net = FixedTimestepUNet(UNet(channels=(4, 8, 8), time_dim=16, norm="batch").eval(), 5).eval()
    export_graph(net, (torch.randn(2, 1, 28, 28),), tmp_path / "net.onnx", ["x"], "eps")
    # one SiLU per residual block and one before the output convolution
    assert silu_as_relu(tmp_path / "net.onnx", tmp_path / "relu.onnx") == 7
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    shipped, probe = (
        ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        for name in ("net.onnx", "relu.onnx")
    )
    ops = {node.op_type for node in onnx.load(str(tmp_path / "relu.onnx")).graph.node}
    assert "Sigmoid" not in ops and "Relu" in ops
    assert not np.allclose(shipped, probe, atol=1e-3)
