"""The runtime's commands on the shipped bundle: info, bench, and defend on pictures and folders."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from diffdefense.cli import main
from diffdefense.shipped import SAMPLES_DIR

cv2 = pytest.importorskip("cv2", reason="OpenCV (the [video] extra) is not installed")
CHEAP = ["--preset", "default"]


def test_info_lists_backends_and_verifies_the_bundle():
    result = CliRunner().invoke(main, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert "CPUExecutionProvider" in report["environment"]["onnxruntime_providers"]
    assert report["bundle"]["checksums"] == "verified" and len(report["bundle"]["labels"]) == 10
    text = CliRunner().invoke(main, ["info", "--dataset", "kmnist"])
    assert text.exit_code == 0 and "sha256 verified" in text.output


def test_a_shipped_bundle_is_chosen_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["info", "--bundle", "mnist-fast", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["bundle"]["checksums"] == "verified"


def test_info_refuses_a_folder_that_is_no_bundle(tmp_path):
    result = CliRunner().invoke(main, ["info", "--bundle", str(tmp_path)])
    assert result.exit_code == 1 and "manifest" in result.output


def test_bench_reports_percentiles_per_batch():
    result = CliRunner().invoke(main, ["bench", *CHEAP, "--batch-sizes", "1,2", "--rounds", "2", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [row["batch"] for row in report["rows"]] == [1, 2]
    for row in report["rows"]:
        assert 0 < row["end_to_end_per_image"]["p50_ms"] <= row["end_to_end_per_image"]["p99_ms"]
    bad = CliRunner().invoke(main, ["bench", "--batch-sizes", "0,x"])
    assert bad.exit_code == 2 and "positive integers" in bad.output


@pytest.mark.parametrize("shards", ["1", "2"])
def test_bench_reports_the_parts_each_u_net_call_runs_in(shards):
    result = CliRunner().invoke(main, ["bench", *CHEAP, "--batch-sizes", "1", "--rounds", "1", "--shards", shards])
    assert result.exit_code == 0, result.output
    assert f"each call in {shards} part" in result.output
    refused = CliRunner().invoke(main, ["bench", "--shards", "0"])
    assert refused.exit_code == 2 and "--shards" in refused.output


@pytest.fixture
def pictures(tmp_path):
    """Two shipped samples, one clean and one PGD-attacked, as dark-on-light PNGs at 3x in a folder."""
    samples = np.load(SAMPLES_DIR / "mnist.npz")
    chosen = [int(np.flatnonzero(~samples["attacked"])[0]), int(np.flatnonzero(samples["attacked"])[0])]
    for name, k in zip(("a_clean.png", "b_attacked.png"), chosen, strict=True):
        ink = np.kron(samples["images"][k, 0], np.ones((3, 3)))
        cv2.imwrite(str(tmp_path / name), (255 * (1 - ink)).round().astype(np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path, samples["labels"][chosen]


def test_defend_reads_a_folder_of_pictures_and_exit_code_3_flags_an_attack(pictures):
    folder, labels = pictures
    args = ["defend", str(folder), *CHEAP, "--invert", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["results"]
    assert [r["file"].rsplit("/", 1)[1] for r in rows] == ["a_clean.png", "b_attacked.png"]  # notes.txt skipped
    assert rows[0]["label"] == str(labels[0])
    flagged = CliRunner().invoke(main, [*args, "--fail-on-attack", "--threshold", "0"])
    assert flagged.exit_code == 3


def test_defend_reports_the_detection_score_it_was_asked_for(pictures):
    folder, _ = pictures
    args = ["defend", str(folder), *CHEAP, "--invert", "--json"]
    by_name = {}
    for score in ("refined_l1", "best_mse"):
        result = CliRunner().invoke(main, [*args, "--detection-score", score])
        assert result.exit_code == 0, result.output
        by_name[score] = json.loads(result.output)["results"]
    assert [r["detection_score"] for r in by_name["best_mse"]] == [
        r["reconstruction_error"] for r in by_name["best_mse"]
    ]
    assert [r["detection_score"] for r in by_name["refined_l1"]] != [r["detection_score"] for r in by_name["best_mse"]]


def test_defend_refuses_an_unreadable_picture_and_an_empty_folder(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    result = CliRunner().invoke(main, ["defend", str(tmp_path / "broken.png")])
    assert result.exit_code == 1 and "could not read" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["defend", str(empty)])
    assert result.exit_code == 1 and "holds none" in result.output
