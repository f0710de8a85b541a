"""tools/input_bound_sweep.py: a U-Net graph's input clamp set, replaced or removed, the rest of the graph as it was."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from diffdefense.export.input_bound_sweep import _bound, with_input_bound


def doubling_graph(path: Path, clamp: float | None) -> None:
    """y = 2 * x + x, with x clamped to +-clamp first where clamp is given (two uses of the input)."""
    initializers = [numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")]
    nodes = [helper.make_node("Mul", ["x", "two"], ["doubled"]), helper.make_node("Add", ["doubled", "x"], ["y"])]
    if clamp is not None:
        initializers += [
            numpy_helper.from_array(np.array(-clamp, dtype=np.float32), "lo"),
            numpy_helper.from_array(np.array(clamp, dtype=np.float32), "hi"),
        ]
        for node in nodes:
            node.input[:] = ["x_clamped" if value == "x" else value for value in node.input]
        nodes.insert(0, helper.make_node("Clip", ["x", "lo", "hi"], ["x_clamped"]))
    graph = helper.make_graph(
        nodes,
        "doubling",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("shipped_clamp", [None, 3.0])
@pytest.mark.parametrize("bound", [None, 2.0, 5.0])
def test_the_input_bound_is_set_whatever_clamp_the_graph_had(tmp_path, shipped_clamp, bound):
    doubling_graph(tmp_path / "g.onnx", shipped_clamp)
    with_input_bound(tmp_path / "g.onnx", tmp_path / "bounded.onnx", bound)
    x = np.array([[-30.0, 0.5, 4.0]], dtype=np.float32)
    expected = 3 * (x if bound is None else np.clip(x, -bound, bound))
    np.testing.assert_allclose(run(tmp_path / "bounded.onnx", x), expected)
    graph = onnx.load(str(tmp_path / "bounded.onnx")).graph
    assert len([node for node in graph.node if node.op_type == "Clip"]) == (0 if bound is None else 1)
    used = {value for node in graph.node for value in node.input}
    assert all(initializer.name in used for initializer in graph.initializer)  # no bounds left behind


def test_bounds_are_positive_numbers_or_none():
    assert _bound("none") is None and _bound("None") is None and _bound("2.5") == 2.5
    for text in ("0", "-1", "inf", "nan"):
        with pytest.raises(Exception, match="Expected a positive bound or 'none'"):
            _bound(text)
