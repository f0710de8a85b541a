"""One U-Net graph per timestep that a preset uses, with that timestep folded in.

Within a defence call every candidate shares the timestep, and a preset uses only a few (the default: 14 and 0).
A graph exported from FixedTimestepUNet has no time MLP, no per-call broadcast of the embedding, and no t input:
each block's time projection is a constant folded into its first convolution's bias, and with the BatchNorm U-Net
the normalisation is folded into the convolutions too, so onnxruntime keeps the whole graph in its blocked layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from diffdefense.export.onnx_export import export_graph
from diffdefense.training.models import FixedTimestepUNet


def timestep_graph_name(timestep: int, precision: str = "float32") -> str:
    return f"unet_t{timestep}.onnx" if precision == "float32" else f"unet_t{timestep}.{precision}.onnx"


def export_timestep_unet(unet: nn.Module, timestep: int, path: Path) -> None:
    """eps = graph(x (N, 1, 28, 28) float32) for the fixed timestep, N dynamic."""
    export_graph(FixedTimestepUNet(unet, timestep), (torch.randn(2, 1, 28, 28),), path, ["x"], "eps")


def timestep_max_abs_error(path: Path, unet: nn.Module, timestep: int, x: np.ndarray) -> float:
    """onnxruntime (CPU) on the folded graph against PyTorch's U-Net at that timestep, on the same inputs."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    with torch.no_grad():
        expected = unet.eval()(torch.from_numpy(x), torch.full((len(x),), timestep, dtype=torch.long)).numpy()
    return float(np.abs(got - expected).max())


def export_timestep_graphs(
    unet: nn.Module, timesteps: list[int], folder: Path, checks: dict[str, dict[str, np.ndarray]], parity: dict
) -> dict[int, str]:
    """A folded float32 graph per timestep in folder, each checked against PyTorch at that timestep on the parity
    inputs (checks: kind -> {'x': ...}); the errors go into parity. Returns timestep -> file name."""
    from diffdefense.export.bundle import PARITY_TOLERANCE

    graphs = {}
    for t in timesteps:
        name = timestep_graph_name(t)
        export_timestep_unet(unet, t, folder / name)
        for kind, inputs in checks.items():
            error = timestep_max_abs_error(folder / name, unet, t, inputs["x"])
            if error > PARITY_TOLERANCE:
                raise RuntimeError(
                    f"{name} differs from PyTorch at t={t} by {error:.2e} on {kind} inputs (tolerance "
                    f"{PARITY_TOLERANCE})."
                )
            parity[f"unet_t{t}_{kind}_max_abs_error"] = error
        graphs[t] = name
    return graphs
