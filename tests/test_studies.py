"""The studies behind tools/: the latency table, cached attack sets as the runtime
takes them, contact sheets, and the memory table's same-bits comparison."""

import json

import click
import numpy as np
import pytest
from click.testing import CliRunner

from diffdefense.latency_table import table
from diffdefense.reference.runtime_accuracy import load_attack_set
from diffdefense.runtime import memory_table


def latency(backend, setting, kind, batch, p50):
    info = dict(backend=backend, setting=setting, unet_evaluations=122, kind=kind, batch=batch, p50_ms=p50, p99_ms=p50)
    return {"extra_info": info}


def test_the_latency_table_has_a_row_per_backend_and_setting():
    rows = table(
        [latency("cpu", "default", "end-to-end", 1, 70.0), latency("cpu", "default", "unet-engine", 8, 9.25)],
        "CPU X",
    ).splitlines()
    assert rows[0].startswith("Machine: CPU X.")
    assert rows[-1] == "| cpu | default | 122 |  | 70.0 / 70.0 |  | 9.2 / 9.2 |"


def test_a_cached_attack_set_is_clipped_to_the_unit_range_and_says_by_how_much(tmp_path):
    np.savez(tmp_path / "set.npz", array=np.array([[-2e-5, 0.5], [1.0, 1.00003]], np.float32))
    images, moved = load_attack_set(tmp_path / "set.npz")
    assert images.min() == 0.0 and images.max() == 1.0 and moved == pytest.approx(3e-5, rel=1e-2)
    first, _ = load_attack_set(tmp_path / "set.npz", 1)
    assert first.shape == (1, 2)


def test_the_contact_sheet_tiles_frames_in_rows(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV (the [video] extra) is not installed")
    from diffdefense.runtime.stream.contact_sheet import main

    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 30.0, (32, 24))
    for k in range(5):
        writer.write(np.full((24, 32, 3), 40 * k, np.uint8))
    writer.release()
    out = tmp_path / "sheet.png"
    result = CliRunner().invoke(main, [str(video), "--frames", "0,2,4", "--columns", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sheet = cv2.imread(str(out))
    assert sheet.shape == (48, 64, 3) and sheet[24:, 32:].max() == 0  # the fourth tile is blank
    assert sheet[0, 0, 0] == 0 and sheet[0, 32, 0] == 80 and sheet[24, 0, 0] == 160
    missing = CliRunner().invoke(main, [str(video), "--frames", "9", "--out", str(out)])
    assert missing.exit_code == 1 and "has no frame 9" in missing.output


def test_same_results_compares_every_field_bit_for_bit(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        for field in memory_table.FIELDS:
            np.save(folder / f"{field}.npy", np.arange(3, dtype=np.float32))
    assert memory_table.same_results(first, second)
    np.save(second / "latents.npy", np.arange(3, dtype=np.float64))
    assert not memory_table.same_results(first, second)


@pytest.mark.slow
def test_the_memory_table_measures_each_batch_in_a_child_process(tmp_path):
    """One row, batch 2, and again with max_batch=1: the child reports its chunks, and the results are the same."""
    out = tmp_path / "memory.json"
    result = CliRunner().invoke(memory_table.main, ["--batch-sizes", "2", "--compare-batch", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["rows"]
    assert row["batch"] == 2 and row["chunks"] == 1 and row["peak_mib"] >= row["before_mib"] > 0
    assert row["same_bits_as_max_batch"] == {"max_batch": 1, "same": True}
    assert f"| 2 | {row['images_per_chunk']} | 1 |" in result.output and result.output.rstrip().endswith("| yes |")


def test_the_preset_sweep_checks_every_try_before_any_attack_runs():
    from diffdefense.reference.preset_sweep import candidate_settings

    texts = [text for text, _ in candidate_settings("default", ["", "refine_start_step=20"])]
    assert texts == ["", "refine_start_step=20"]
    assert candidate_settings("default", [])[0][1] == candidate_settings("default", [""])[0][1]
    with pytest.raises(click.BadParameter, match="'steps'"):
        candidate_settings("default", ["num_steps=3", "steps=3"])
