"""Confidence intervals of the report's accuracies, and the report rewritten from its results.json."""

import json
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from scipy.stats import norm

from diffdefense.cli import main
from diffdefense.reference.intervals import accuracy_interval

REPORT = Path(__file__).resolve().parents[1] / "docs" / "results" / "mnist_blank_start_1000"


def wilson_closed_form(correct: int, n: int, level: float) -> tuple[float, float]:
    """Wilson (1927), written out: the oracle for scipy's implementation."""
    z = norm.ppf(0.5 + level / 2)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@pytest.mark.parametrize(
    ("correct", "n", "level"), [(892, 1000, 0.95), (166, 200, 0.95), (0, 10, 0.9), (200, 200, 0.99)]
)
def test_the_interval_is_wilsons(correct, n, level):
    low, high = accuracy_interval(correct / n, n, level)
    expected = wilson_closed_form(correct, n, level)
    assert low == pytest.approx(expected[0], abs=1e-9) and high == pytest.approx(expected[1], abs=1e-9)
    assert low <= correct / n <= high


def test_more_images_give_a_narrower_interval():
    widths = [high - low for low, high in (accuracy_interval(0.9, n) for n in (100, 1000, 10000))]
    assert widths[0] > widths[1] > widths[2]
    assert widths[1] == pytest.approx(0.0372, abs=5e-4)  # about +-1.9 points on 1,000 images


@pytest.mark.parametrize(
    ("accuracy", "images", "level", "message"),
    [
        (0.9, 0, 0.95, "number of images"),
        (0.9, 10.0, 0.95, "number of images"),
        (1.2, 10, 0.95, "accuracy in \\[0, 1\\]"),
        (float("nan"), 10, 0.95, "accuracy in \\[0, 1\\]"),
        (0.8915, 1000, 0.95, "not k / 1000"),
        (0.9, 10, 1.0, "confidence level"),
    ],
)
def test_bad_arguments_are_refused_with_what_was_expected(accuracy, images, level, message):
    with pytest.raises(ValueError, match=message):
        accuracy_interval(accuracy, images, level)


def test_the_report_command_rewrites_the_table_from_results_json(tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    shutil.copy(REPORT / "results.json", folder / "results.json")
    result = CliRunner().invoke(main, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    fgsm = json.loads((folder / "results.json").read_text())["results"]["white_box"]["FGSM"]["accuracy_defended"]
    low, high = accuracy_interval(fgsm, 1000)
    row = next(line for line in (folder / "report.md").read_text().splitlines() if line.startswith("| FGSM |"))
    assert f"| {100 * fgsm:.1f} | {100 * low:.1f}-{100 * high:.1f} |" in row


def test_the_report_command_names_a_folder_without_results(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 1
    assert "results.json" in result.output and str(tmp_path) in result.output


@pytest.mark.parametrize(
    ("folder", "named"),
    [
        ("mnist_default_1000", "started 'blank', the chosen image refined by one more pass of the chain: 122 U-Net"),
        ("mnist_blank_start_1000", "latents started 'blank': 120 U-Net"),
        ("kmnist_default_refine20_2000", "refined by one more pass of the chain from index 20: 122 U-Net"),
    ],
)
def test_the_report_names_the_latent_start_and_the_refining_pass(tmp_path, folder, named):
    shutil.copy(REPORT.parent / folder / "results.json", tmp_path / "results.json")
    assert CliRunner().invoke(main, ["report", str(tmp_path)]).exit_code == 0
    assert named in (tmp_path / "report.md").read_text()
