"""diffdefense.speedup: the side-by-side rows and floors from a benchmark JSON, and the tool that prints them."""

import json

from click.testing import CliRunner

from diffdefense.speedup import main, measured_peaks, speedup_markdown, speedup_rows


def bench(side: str, variant: str, batch_size: int, ms: float, **extra) -> dict:
    backend = "runtime onnxruntime CPU" if side == "runtime" else "reference PyTorch CPU"
    info = dict(backend=f"{backend}: {variant}", variant=variant, batch_size=batch_size, ms_per_image=ms, **extra)
    return {"name": f"test[{variant}-{batch_size}]", "extra_info": info}


PEAKS = [
    {
        "name": "sgemm[torch]",
        "extra_info": {
            "backend": "sgemm float32",
            "library": "torch",
            "gflops": 80.0,
            "threads": 2,
            "unet_flops_per_evaluation": 50e6,
        },
    },
    {
        "name": "sgemm[numpy]",
        "extra_info": {
            "backend": "sgemm float32",
            "library": "numpy",
            "gflops": 100.0,
            "threads": 2,
            "unet_flops_per_evaluation": 50e6,
        },
    },
    {"name": "int8", "extra_info": {"backend": "gemm int8", "gops": 400.0, "unet_flops_per_evaluation": 50e6}},
]
RUNS = [
    bench("runtime", "BatchNorm U-Net, folded timesteps", 8, 30.0, unet_evaluations=120),
    bench("runtime", "BatchNorm U-Net, folded timesteps, int8", 8, 20.0, unet_evaluations=120, precision="int8"),
    bench("reference", "BatchNorm U-Net, eager", 8, 90.0),
    bench("reference", "BatchNorm U-Net, torch.compile", 8, 60.0),
    bench("runtime", "BatchNorm U-Net, folded timesteps", 1, 40.0, unet_evaluations=120),
]


def test_rows_give_ratios_to_both_references_at_the_same_batch_and_leave_out_missing_ones():
    rows = {(r["variant"], r["batch_size"]): r for r in speedup_rows(RUNS + PEAKS)}
    folded = rows[("BatchNorm U-Net, folded timesteps", 8)]
    assert folded["vs_eager"] == 3.0 and folded["vs_compiled"] == 2.0
    frame = rows[("BatchNorm U-Net, folded timesteps", 1)]
    assert "vs_eager" not in frame and "vs_compiled" not in frame  # no reference ran frame by frame
    assert rows[("BatchNorm U-Net, eager", 8)]["side"] == "reference"


def test_floors_use_the_faster_float32_library_and_the_int8_rate_by_precision():
    peaks = measured_peaks(PEAKS)
    assert peaks.float32_gflops == 100.0 and peaks.int8_gops == 400.0
    rows = {(r["variant"], r["batch_size"]): r for r in speedup_rows(RUNS + PEAKS)}
    # 120 evaluations x 50 MFLOP: 60 ms at 100 GFLOP/s (float32), 15 ms at 400 GOP/s (int8)
    assert abs(rows[("BatchNorm U-Net, folded timesteps", 8)]["floor_ms"] - 60.0) < 1e-9
    assert abs(rows[("BatchNorm U-Net, folded timesteps, int8", 8)]["floor_ms"] - 15.0) < 1e-9


def test_without_peaks_there_are_no_floors():
    assert all(row["floor_ms"] is None for row in speedup_rows(RUNS))


def test_the_tool_prints_the_cpu_the_rates_and_the_rows(tmp_path):
    path = tmp_path / "b.json"
    data = {"machine_info": {"cpu": {"brand_raw": "CPU X"}}, "datetime": "now", "benchmarks": RUNS + PEAKS}
    path.write_text(json.dumps(data))
    result = CliRunner().invoke(main, [str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == speedup_markdown(data) + "\n"
    assert "CPU: CPU X" in result.output and "100.0 GFLOP/s (numpy, 2 threads)" in result.output
    assert (
        "| runtime: BatchNorm U-Net, folded timesteps | 8 | 30.0 | 3.00 | 2.00 | 60.0 ms (float32) |" in result.output
    )


def test_rows_that_name_their_unet_are_set_beside_that_nets_references_and_floor():
    def named(side, variant, unet, ms, flops, **extra):
        return bench(side, variant, 8, ms, unet=unet, unet_flops_per_evaluation=flops, **extra)

    runs = [
        named("runtime", "wide, folded", "wide", 30.0, 50e6, unet_evaluations=120),
        named("runtime", "narrow, folded", "narrow", 10.0, 10e6, unet_evaluations=120),
        named("reference", "wide, eager", "wide", 90.0, 50e6, reference="eager"),
        named("reference", "narrow, eager", "narrow", 40.0, 10e6, reference="eager"),
        named("reference", "narrow, compiled", "narrow", 20.0, 10e6, reference="torch.compile"),
    ]
    rows = {r["variant"]: r for r in speedup_rows(runs + PEAKS)}
    assert rows["wide, folded"]["vs_eager"] == 3.0 and "vs_compiled" not in rows["wide, folded"]
    assert rows["narrow, folded"]["vs_eager"] == 4.0 and rows["narrow, folded"]["vs_compiled"] == 2.0
    # 120 evaluations x 10 MFLOP at 100 GFLOP/s: the narrow net's own floor, not the peaks' 50 MFLOP net
    assert abs(rows["narrow, folded"]["floor_ms"] - 12.0) < 1e-9
