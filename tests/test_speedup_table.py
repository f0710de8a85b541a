"""tools/speedup_table.py: the runtime-against-reference rows from a benchmark JSON."""

import importlib.util
import json
from pathlib import Path

from click.testing import CliRunner

TOOL = Path(__file__).resolve().parents[1] / "tools" / "speedup_table.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("speedup_table", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    tool = load_tool()
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
