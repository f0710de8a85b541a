"""PyTorch models to ONNX with a dynamic batch dimension, each graph checked against PyTorch.

torch.onnx's dynamo exporter (torch.export, then onnxscript); then onnx.checker, then onnxruntime on the CPU
against PyTorch on random and on real inputs, the largest absolute error recorded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

OPSET = 18


class Logits(nn.Module):
    """A classifier in eval mode with named output, for export."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images)


def export_graph(module: nn.Module, example: tuple, path: Path, input_names: list[str], output_name: str) -> None:
    """module in eval mode to ONNX, the first dimension of every input a dynamic batch (1 to 4096)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        module.eval(),
        example,
        str(path),
        input_names=input_names,
        output_names=[output_name],
        dynamic_shapes={name: {0: batch} for name in input_names},
        dynamo=True,
        opset_version=OPSET,
        external_data=False,
        verbose=False,
    )


def export_unet(unet: nn.Module, path: Path) -> None:
    """eps = unet(x (N, 1, 28, 28) float32, t (N,) int64), N dynamic."""
    export_graph(unet, (torch.randn(2, 1, 28, 28), torch.tensor([0, 1])), path, ["x", "t"], "eps")


def export_classifier(classifier: nn.Module, path: Path) -> None:
    """logits (N, 10) = classifier(images (N, 1, 28, 28) float32 in [0, 1]), N dynamic."""
    export_graph(Logits(classifier), (torch.rand(2, 1, 28, 28),), path, ["images"], "logits")


def max_abs_error(path: Path, model: nn.Module, inputs: dict[str, np.ndarray]) -> float:
    """onnx.checker, then onnxruntime (CPU) against PyTorch on the same inputs."""
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, inputs)[0]
    with torch.no_grad():
        expected = model.eval()(*(torch.from_numpy(v) for v in inputs.values())).numpy()
    if got.shape != expected.shape:
        raise RuntimeError(f"{path.name}: onnxruntime gave shape {got.shape}, PyTorch {expected.shape}.")
    return float(np.abs(got - expected).max())
