"""tools/adaptive_convergence.py: one row per attack and step budget, cached, with intervals and a plot."""

import json

from click.testing import CliRunner

from diffdefense.reference import evaluation
from diffdefense.reference.adaptive_convergence import main


def test_rows_per_budget_with_intervals_a_plot_and_a_resume_from_the_cache(real_data_root, tmp_path, monkeypatch):
    args = ["-n", "2", "--unet", "unet_bn_small", "--attack", "APGD-CE", "--steps", "2", "--steps", "1"]
    args += ["--eps", "0.1", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "convergence.json").read_text())
    assert [(r["attack"], r["steps"]) for r in record["rows"]] == [("APGD-CE", 1), ("APGD-CE", 2)]
    for row in record["rows"]:
        low, high = row["interval_95"]
        assert 0 <= low <= row["accuracy_defended"] <= high <= 1
    assert (tmp_path / "convergence.png").stat().st_size > 0 and record["cpu"]

    def no_more_attacks(*_, **__):
        raise AssertionError("a cached adversarial set was made again")

    monkeypatch.setattr(evaluation, "run_adaptive", no_more_attacks)
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    rows = json.loads((tmp_path / "convergence.json").read_text())["rows"]
    assert [r["accuracy_defended"] for r in rows] == [r["accuracy_defended"] for r in record["rows"]]
