"""diffdefense.export.groupnorm_kernels (tools/probe_groupnorm_kernels.py): which GroupNorm kernels onnxruntime's
CPU provider has."""

import json

import numpy as np
import torch
from click.testing import CliRunner

from diffdefense.export import groupnorm_kernels as tool


def test_the_numpy_oracle_is_torchs_group_norm():
    rng = np.random.default_rng(0)
    x, gamma, beta = rng.standard_normal(tool.SHAPE), rng.standard_normal(tool.SHAPE[1]), rng.standard_normal(16)
    expected = torch.nn.functional.group_norm(
        torch.from_numpy(x), tool.GROUPS, torch.from_numpy(gamma), torch.from_numpy(beta), tool.EPSILON
    )
    np.testing.assert_allclose(tool.group_norm(x, gamma, beta, silu=False), expected.numpy(), atol=1e-12)
    np.testing.assert_allclose(
        tool.group_norm(x, gamma, beta, silu=True), torch.nn.functional.silu(expected).numpy(), atol=1e-12
    )


def test_every_candidate_either_runs_right_or_says_why_not(tmp_path):
    out = tmp_path / "kernels.json"
    result = CliRunner().invoke(tool.main, ["--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert all(name.endswith(".h") for name in record["package_c_headers"])
    findings = record["findings"]
    assert len(findings) == 2
    for found in findings:
        assert found["name"] in result.output
        if found["loads"]:
            assert found["nodes"] >= 1 and found["max_abs_error"] < 1e-5, found
        else:
            assert found["error"], found
