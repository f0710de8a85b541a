"""The U-Net's vector-Jacobian product as an ONNX graph of its own, for the runtime's full-gradient mode.

grad_x = (d eps(x, t) / d x)^T v. torch.onnx cannot export autograd itself, so the VJP is first traced into
a plain graph of aten ops (make_fx through torch.func.vjp). The one backward op that ONNX has no function
for, convolution_backward, is written as what it is: the input gradient of a convolution is the transposed
convolution with the same weights (output_padding restores the input size lost to a stride). The backward
of nearest upsampling, an index_put that accumulates, would export as ScatterND(reduction="add"), whose CPU
kernel in onnxruntime splits the updates over threads with no guard for repeated indices: the four
contributions to one pixel race, and the gradient comes out wrong now and then (docs/runtime.md). It is
written instead as two one-hot matrix products, which hold the same sums and no race. The other backward
ops (GroupNorm, SiLU) trace into elementwise ops and reductions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from diffdefense.export.onnx_export import export_graph

aten = torch.ops.aten


def _convolution_input_gradient(
    grad_out, inputs, weight, bias_sizes, stride, padding, dilation, transposed, output_padding, groups, mask
):
    if transposed or mask[1] or mask[2]:
        raise NotImplementedError("Only the input gradient of a plain convolution is traced.")
    lost = [
        inputs.shape[2 + i]
        - ((grad_out.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (weight.shape[2 + i] - 1) + 1)
        for i in range(2)
    ]
    grad_in = aten.convolution(grad_out, weight, None, stride, padding, dilation, True, lost, groups)
    return grad_in, None, None


def _nearest_index_put_as_matmuls(destination, indices, values, accumulate):
    """destination[:, :, rows, cols] += values, as destination + R^T values C with one-hot R (H', H), C (W', W).

    This is the pattern nearest upsampling's backward traces into (rows (H', 1), cols (W',)); any other
    index_put is refused rather than exported as a ScatterND that onnxruntime may race on."""
    pattern = (
        accumulate
        and len(indices) == 4
        and indices[0] is None
        and indices[1] is None
        and indices[2] is not None
        and indices[2].dim() == 2
        and indices[2].shape[1] == 1
        and indices[3] is not None
        and indices[3].dim() == 1
    )
    if not pattern:
        raise NotImplementedError("Only the accumulating index_put of nearest upsampling's backward is traced.")
    rows, cols = indices[2].reshape(-1, 1), indices[3].reshape(-1, 1)
    device, dtype = values.device, values.dtype
    row_hot = (rows == torch.arange(destination.shape[2], device=device)).to(dtype)
    col_hot = (cols == torch.arange(destination.shape[3], device=device)).to(dtype)
    return destination + row_hot.transpose(0, 1) @ values @ col_hot


class UNetVJP(nn.Module):
    """forward(x (N, 1, 28, 28), t (N,) int64, v (N, 1, 28, 28)) -> (d eps / d x)^T v, traced once."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet.eval().requires_grad_(False)
        named = dict(self.unet.named_parameters()) | dict(self.unet.named_buffers())
        self._names = list(named)
        example = (torch.randn(2, 1, 28, 28), torch.tensor([3, 7]), torch.randn(2, 1, 28, 28))
        self.graph = make_fx(
            lambda tensors, x, t, v: self._vjp(tensors, x, t, v),
            tracing_mode="symbolic",  # the batch stays a symbol, so the export keeps it dynamic
            decomposition_table={
                aten.convolution_backward.default: _convolution_input_gradient,
                aten._unsafe_index_put.default: _nearest_index_put_as_matmuls,
            },
        )([t.detach() for t in named.values()], *example)

    def _vjp(self, tensors, x, t, v):
        values = dict(zip(self._names, tensors, strict=True))
        _, pullback = torch.func.vjp(lambda inputs: torch.func.functional_call(self.unet, values, (inputs, t)), x)
        return pullback(v)[0]

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        named = dict(self.unet.named_parameters()) | dict(self.unet.named_buffers())
        return self.graph([named[n] for n in self._names], x, t, v)


def autograd_vjp(unet: nn.Module, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same product through torch's own autograd: what the exported graph is checked against."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(unet.eval()(x, t), x, v)
    return grad


def export_unet_vjp(unet: nn.Module, path: Path) -> None:
    """grad = vjp(x, t, v), N dynamic."""
    example = (torch.randn(2, 1, 28, 28), torch.tensor([0, 1]), torch.randn(2, 1, 28, 28))
    export_graph(UNetVJP(unet), example, path, ["x", "t", "v"], "grad")


def vjp_max_abs_error(path: Path, unet: nn.Module, inputs: dict[str, np.ndarray]) -> float:
    """onnx.checker, then onnxruntime (CPU) against torch.autograd on the same x, t, v."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)[0]
    expected = autograd_vjp(unet, *(torch.from_numpy(inputs[k]) for k in ("x", "t", "v")))
    if got.shape != tuple(expected.shape):
        raise RuntimeError(f"{path.name}: onnxruntime gave shape {got.shape}, autograd {tuple(expected.shape)}.")
    return float(np.abs(got - expected.numpy()).max())
