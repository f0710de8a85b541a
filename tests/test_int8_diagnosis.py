"""tools/int8_diagnosis.py: the output clamp read from the graph, activation ranges, errors inside the clamp."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from diffdefense.export.int8_diagnosis import largest_activations, output_clamp, output_errors


def scaled_clamped_graph(path: Path, scale: float, bound: float, constants_as_nodes: bool) -> onnx.ModelProto:
    """y = clip(scale * x, -bound, bound): one Mul, one Clip, the bounds as initializers or Constant nodes."""
    bounds = [
        numpy_helper.from_array(np.array(v, dtype=np.float32), name) for name, v in (("lo", -bound), ("hi", bound))
    ]
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["scaled"]),
        helper.make_node("Clip", ["scaled", "lo", "hi"], ["y"]),
    ]
    initializers = [numpy_helper.from_array(np.array(scale, dtype=np.float32), "scale")]
    if constants_as_nodes:
        nodes = [helper.make_node("Constant", [], [b.name], value=b) for b in bounds] + nodes
    else:
        initializers += bounds
    graph = helper.make_graph(
        nodes,
        "clamped",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1, 2, 2])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, path)
    return model


@pytest.mark.parametrize("constants_as_nodes", [False, True])
def test_output_clamp_is_read_from_the_clip_that_makes_the_output(tmp_path, constants_as_nodes):
    model = scaled_clamped_graph(tmp_path / "g.onnx", 100.0, 8.0, constants_as_nodes)
    assert output_clamp(model.graph) == (-8.0, 8.0)


def test_a_graph_without_an_output_clip_has_no_clamp(tmp_path):
    model = scaled_clamped_graph(tmp_path / "g.onnx", 100.0, 8.0, False)
    model.graph.output[0].name = "scaled"
    assert output_clamp(model.graph) is None


def test_largest_activations_sees_the_intermediate_tensor_before_the_clamp(tmp_path):
    path = tmp_path / "g.onnx"
    scaled_clamped_graph(path, 100.0, 8.0, False)
    x = np.array([0.5, -3.0, 0.01, 0.0], dtype=np.float32).reshape(1, 1, 2, 2)
    largest = largest_activations(path, x)
    assert largest["scaled"] == pytest.approx(300.0)


def test_output_errors_split_the_clamped_pixels_from_the_others():
    reference = np.array([8.0, -8.0, 1.0, -2.0], dtype=np.float32)
    quantized = np.array([8.0, 8.0, 1.5, -2.0], dtype=np.float32)
    errors = output_errors(reference, quantized, (-8.0, 8.0))
    assert errors["share_at_clamp"] == 0.5
    assert errors["relative_l2_inside_clamp"] == pytest.approx(0.5 / np.sqrt(5.0))
    assert errors["mean_abs_error_inside_clamp"] == pytest.approx(0.25)
    assert errors["relative_l2"] == pytest.approx(np.sqrt(16.0**2 + 0.25) / np.sqrt(64 + 64 + 1 + 4))


def test_diagnose_timestep_measures_a_graph_whose_output_is_mostly_at_its_clamp(tmp_path):
    from diffdefense.export.int8_diagnosis import diagnose_timestep

    path = tmp_path / "g.onnx"
    scaled_clamped_graph(path, 100.0, 8.0, False)
    inputs = np.random.default_rng(0).normal(0.0, 1.0, size=(256, 1, 2, 2)).astype(np.float32)
    row = diagnose_timestep(path, inputs, tmp_path, seed=0)
    assert row["inputs"]["calibration"] == 192 and row["inputs"]["held_out"] == 64
    assert row["output_clamp"] == (-8.0, 8.0)
    assert row["largest_activation"] > 100.0  # 100 x the largest |input|, before the clamp
    assert 0.9 < row["int8"]["share_at_clamp"] < 1.0  # |100 x| < 8 only for |x| < 0.08
    assert set(row["ms_per_call_batch_96"]) == {"float32", "int8"}
