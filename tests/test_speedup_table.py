"""tools/speedup_table.py: the runtime-against-reference rows from a benchmark JSON."""

import json

from click.testing import CliRunner

from tests.tool_loading import load_tool


def bench(backend: str, preset: str, batch_size: int, ms: float, **extra) -> dict:
    info = dict(backend=backend, preset=preset, batch_size=batch_size, ms_per_image=ms, **extra)
    return {"name": f"test[{preset}-{batch_size}]", "extra_info": info}


def test_rows_pair_the_backends_per_preset_and_batch_and_leave_out_a_half_pair(tmp_path):
    benchmarks = [
        bench("runtime onnxruntime CPU", "default", 8, 50.0, unet_evaluations=120),
        bench("reference PyTorch CPU", "default", 8, 60.0, threads=2),
        bench("runtime onnxruntime CPU", "default", 1, 70.0, unet_evaluations=120),
        bench("reference PyTorch CPU", "default", 1, 210.0, threads=2),
        bench("runtime onnxruntime CPU", "paper", 8, 120.0, unet_evaluations=300),  # no reference: left out
    ]
    tool = load_tool("speedup_table")
    rows = tool.speedup_rows(benchmarks)
    assert [(r["preset"], r["batch_size"], round(r["ratio"], 3)) for r in rows] == [
        ("default", 8, 1.2),
        ("default", 1, 3.0),
    ]
    assert rows[0]["evaluations"] == 120
    path = tmp_path / "b.json"
    path.write_text(
        json.dumps({"machine_info": {"cpu": {"brand_raw": "CPU X"}}, "datetime": "now", "benchmarks": benchmarks})
    )
    result = CliRunner().invoke(tool.main, [str(path)])
    assert (
        result.exit_code == 0
        and "| `default` | 120 | 1 (frame by frame) | 70.0 ms | 210.0 ms | 3.00 |" in result.output
    )


def test_a_measured_peak_gives_each_row_its_floor_and_the_largest_possible_ratio(tmp_path):
    peak = {"backend": "sgemm float32", "library": "numpy", "gflops": 100.0, "unet_flops_per_evaluation": 50e6}
    slower = {**peak, "library": "torch", "gflops": 80.0}
    benchmarks = [
        bench("runtime onnxruntime CPU", "default", 8, 80.0, unet_evaluations=120),
        bench("reference PyTorch CPU", "default", 8, 90.0, threads=2),
        {"name": "test_sgemm_peak[torch]", "extra_info": {**slower, "threads": 2}},
        {"name": "test_sgemm_peak[numpy]", "extra_info": {**peak, "threads": 2}},
    ]
    tool = load_tool("speedup_table")
    (row,) = tool.speedup_rows(benchmarks)
    # the faster library's rate: 120 evaluations x 50 MFLOP at 100 GFLOP/s, 60 ms at best, so no backend is 2x
    # faster than the 90 ms reference
    assert abs(row["floor_ms"] - 60.0) < 1e-9 and abs(row["largest_ratio"] - 1.5) < 1e-9
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"machine_info": {}, "datetime": "now", "benchmarks": benchmarks}))
    result = CliRunner().invoke(tool.main, [str(path)])
    assert result.exit_code == 0, result.output
    assert "100.0 GFLOP/s (numpy, 2 threads)" in result.output and "| 60.0 ms | 1.50 |" in result.output
