"""diffdefense.export.unet_profile (tools/profile_unet.py): onnxruntime's profile of the U-Net, per operator type."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from diffdefense.export import unet_profile

ROOT = Path(__file__).resolve().parents[1]


def kernel(op: str, microseconds: float) -> dict:
    return {"cat": "Node", "name": f"node_{op}_kernel_time", "dur": microseconds, "args": {"op_name": op}}


def test_kernel_time_is_summed_per_operator_and_divided_by_the_calls():
    events = [kernel("Conv", 600), kernel("Conv", 200), kernel("Mul", 200), {"cat": "Session", "name": "x", "dur": 9e9}]
    rows = unet_profile.op_time_shares(events, calls=2)
    assert [(r["op"], r["share"], r["ms_per_call"], r["nodes_per_call"]) for r in rows] == [
        ("Conv", 0.8, 0.4, 1.0),
        ("Mul", 0.2, 0.1, 0.5),
    ]


def test_a_profile_without_kernels_or_calls_is_refused():
    with pytest.raises(ValueError, match="kernel events"):
        unet_profile.op_time_shares([{"cat": "Session", "name": "model_run", "dur": 5}], calls=1)
    with pytest.raises(ValueError, match="at least one profiled call"):
        unet_profile.op_time_shares([kernel("Conv", 1)], calls=0)


def test_the_shipped_unet_profiles_with_its_convolutions_named(tmp_path):
    out = tmp_path / "profile.json"
    result = CliRunner().invoke(
        unet_profile.main,
        [
            "--bundle",
            str(ROOT / "diffdefense/bundles/mnist"),
            "--batch",
            "2",
            "--calls",
            "1",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    ops = {row["op"]: row for row in record["rows"]}
    assert "Conv" in ops and ops["Conv"]["nodes_per_call"] >= 1
    assert sum(row["share"] for row in record["rows"]) == pytest.approx(1.0)
    assert 0 < record["convolution_share"] <= 1 and record["wall_ms_per_call"] > 0
    assert "| Conv |" in result.output
