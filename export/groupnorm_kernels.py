"""Does this onnxruntime's CPU provider have a fused GroupNorm kernel? (The U-Net's profile says that GroupNorm as
exported, with its layout changes, takes about half the non-convolution time: docs/performance.md, "Where the U-Net's
time goes".)

    python tools/probe_groupnorm_kernels.py --out docs/results/cpu_groupnorm_kernels.json

Each candidate is one node on a small seeded input: onnxruntime's contrib `com.microsoft.GroupNorm` (GroupNorm with
SiLU fused, as diffusion U-Nets use it) and ONNX's own `GroupNormalization` (opset 21). For each: whether a CPU
session loads it, and if so the nodes onnxruntime runs after its basic rewrites (a function op is expanded into
primitives) and the largest difference to numpy's GroupNorm. Also: the C headers the installed onnxruntime package
carries, which a custom-op library adding such a kernel would be built against.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click
import numpy as np

SHAPE, GROUPS, EPSILON = (2, 16, 7, 7), 4, 1e-5


def group_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, silu: bool) -> np.ndarray:
    n, c = x.shape[:2]
    grouped = x.reshape(n, GROUPS, -1).astype(np.float64)
    normalised = (grouped - grouped.mean(2, keepdims=True)) / np.sqrt(grouped.var(2, keepdims=True) + EPSILON)
    y = normalised.reshape(x.shape) * gamma[None, :, None, None] + beta[None, :, None, None]
    return y / (1 + np.exp(-y)) if silu else y


def candidates() -> tuple[dict[str, tuple[bytes, bool]], tuple[np.ndarray, np.ndarray]]:
    """name -> (a one-node model, whether the node applies SiLU after the norm); and the seeded gamma and beta."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    gamma, beta = rng.standard_normal(SHAPE[1]).astype(np.float32), rng.standard_normal(SHAPE[1]).astype(np.float32)

    def model(op: str, domain: str, opset: int, **attributes) -> bytes:
        node = helper.make_node(op, ["x", "gamma", "beta"], ["y"], domain=domain, **attributes)
        graph = helper.make_graph(
            [node],
            op,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
            [numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(beta, "beta")],
        )
        imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
        return helper.make_model(graph, opset_imports=imports, ir_version=10).SerializeToString()

    return {
        "com.microsoft.GroupNorm (SiLU fused)": (
            model("GroupNorm", "com.microsoft", 18, activation=1, channels_last=0, epsilon=EPSILON, groups=GROUPS),
            True,
        ),
        "GroupNormalization (ONNX opset 21)": (
            model("GroupNormalization", "", 21, epsilon=EPSILON, num_groups=GROUPS),
            False,
        ),
    }, (gamma, beta)


def probe(name: str, graph: bytes, silu: bool, gamma: np.ndarray, beta: np.ndarray) -> dict:
    import onnx
    import onnxruntime

    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = os.path.join(folder, "rewritten.onnx")
        try:
            session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own error types: NOT_IMPLEMENTED where no kernel exists
            return dict(name=name, loads=False, error=str(err).splitlines()[0])
        nodes = [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]
    got = session.run(None, {"x": x})[0]
    error = float(np.abs(got - group_norm(x, gamma, beta, silu)).max())
    return dict(name=name, loads=True, nodes=len(nodes), node_types=sorted(set(nodes)), max_abs_error=error)


@click.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the findings as JSON.")
def main(out: Path | None) -> None:
    """Probe the CPU provider for GroupNorm kernels; print what runs for each."""
    import onnxruntime

    models, (gamma, beta) = candidates()
    findings = [probe(name, graph, silu, gamma, beta) for name, (graph, silu) in models.items()]
    for found in findings:
        if not found["loads"]:
            click.echo(f"{found['name']}: no CPU kernel ({found['error']})")
        else:
            click.echo(
                f"{found['name']}: runs as {found['nodes']} node(s) of {', '.join(found['node_types'])}; "
                f"max abs error to numpy {found['max_abs_error']:.1e}"
            )
    headers = sorted(path.name for path in Path(onnxruntime.__file__).parent.rglob("*.h"))
    click.echo(f"C headers in the onnxruntime package: {', '.join(headers) or 'none'}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        record = dict(onnxruntime=onnxruntime.__version__, findings=findings, package_c_headers=headers)
        out.write_text(json.dumps(record, indent=2) + "\n")
        click.echo(f"Wrote {out}")
