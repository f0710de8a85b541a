"""The evaluation report end to end on a tiny data set, and its resume from the cache."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("torchattacks", reason="install it with tools/install.sh")

import diffdefense.reference.evaluation as evaluation  # noqa: E402
from diffdefense.reference.evaluation import (  # noqa: E402
    EvaluationConfig,
    pick_indices,
    rows_a_run_would_drop,
    run_evaluation,
)
from diffdefense.reference.report import write_report  # noqa: E402
from diffdefense.schedule import NoiseSchedule  # noqa: E402
from diffdefense.settings import DefenseSettings  # noqa: E402
from diffdefense.training.models import UNet  # noqa: E402


@pytest.fixture
def small_unet(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr(evaluation, "load_unet", lambda dataset, name="unet": (UNet((8, 8, 8)), NoiseSchedule.linear()))


def test_report_is_written_and_an_interrupted_run_resumes_from_the_cache(
    tiny_data_root, tmp_path, small_unet, monkeypatch
):
    config = EvaluationConfig(
        num_images=6,
        attacks=("FGSM", "PGD"),
        batch_size=4,
        adaptive_images=2,
        adaptive_eps=(0.1,),
        adaptive_steps=1,
        eot_iter=2,
        settings=DefenseSettings(num_candidates=2, iterations=2, num_steps=2, start_step=10),
    )
    first = run_evaluation(config, tmp_path / "report", tiny_data_root)
    write_report(first, tmp_path / "report")
    record = json.loads((tmp_path / "report" / "results.json").read_text())
    assert len(record["indices"]) == 6 and record["settings"]["num_candidates"] == 2
    assert set(record["results"]["white_box"]) == {"FGSM", "PGD"} and set(record["results"]["black_box"]) == {
        "FGSM",
        "PGD",
    }
    assert record["results"]["white_box"]["FGSM"]["linf_perturbation"] <= 0.3 + 1e-6
    for row in (record["results"]["clean"], *record["results"]["white_box"].values()):
        assert 0.0 <= row["accuracy_defended_model_b"] <= 1.0  # the other classifier on the same reconstructions
    for name in ("report.md", "roc.png", "examples.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| FGSM |" in report and "| BPDA-PGD eps 0.1 | 2 | 0.1 |" in report
    assert "| Model B on the output |" in report and "Model B on the defence's output:" in report
    for table in report.split("\n\n"):  # every row of a table has as many cells as its header
        rows = [line for line in table.splitlines() if line.startswith("|")]
        assert len({row.count("|") for row in rows}) <= 1, table
    adaptive = record["results"]["adaptive"]
    assert set(adaptive) == {"BPDA-PGD eps 0.1", "EOT-PGD (true gradient) eps 0.1"}
    assert (
        adaptive["BPDA-PGD eps 0.1"]["images"] == 2
        and adaptive["EOT-PGD (true gradient) eps 0.1"]["budget"]["eot_iter"] == 2
    )

    # What a narrower run into the same folder would drop: it is named row by row, and the full run drops none.
    folder = tmp_path / "report"
    assert rows_a_run_would_drop(folder, config) == []
    assert rows_a_run_would_drop(folder, replace(config, attacks=("PGD",), black_box=False)) == [
        "white_box FGSM",
        "black_box FGSM",
        "black_box PGD",
    ]
    assert rows_a_run_would_drop(folder, replace(config, adaptive_gradients=("bpda",))) == [
        "adaptive EOT-PGD (true gradient) eps 0.1"
    ]
    assert len(rows_a_run_would_drop(folder, replace(config, adaptive_images=0))) == 2

    def no_more_work(*args, **kwargs):
        raise AssertionError("a cached result was computed again")

    monkeypatch.setattr(evaluation, "run_attack", no_more_work)
    monkeypatch.setattr(evaluation, "run_adaptive", no_more_work)
    monkeypatch.setattr(evaluation, "defend", no_more_work)
    again = run_evaluation(config, tmp_path / "report", tiny_data_root)
    assert again["record"]["results"] == first["record"]["results"]
    # Other images in the same folder: the cache is refused rather than reused.
    with pytest.raises(ValueError, match="was made for other indices"):
        run_evaluation(replace(config, num_images=5), tmp_path / "report", tiny_data_root)


def test_unknown_attack_and_bad_counts_are_refused(tiny_data_root, tmp_path):
    with pytest.raises(ValueError, match="Expected attacks from"):
        run_evaluation(EvaluationConfig(attacks=("Magic",)), tmp_path, tiny_data_root)
    with pytest.raises(ValueError, match="between 1 and 10"):
        pick_indices(10, 11, 0)
    assert pick_indices(100, 5, 3).tolist() == pick_indices(100, 5, 3).tolist()


def test_adaptive_attacks_can_be_chosen(tiny_data_root, tmp_path, small_unet):
    config = EvaluationConfig(
        num_images=4,
        attacks=("FGSM",),
        black_box=False,
        batch_size=4,
        adaptive_images=2,
        adaptive_eps=(0.1,),
        adaptive_steps=1,
        adaptive_gradients=("bpda",),
        settings=DefenseSettings(num_candidates=2, iterations=2, num_steps=2, start_step=10),
    )
    record = run_evaluation(config, tmp_path / "report", tiny_data_root)["record"]
    assert set(record["results"]["adaptive"]) == {"BPDA-PGD eps 0.1"}


def test_the_cli_refuses_a_run_that_would_drop_rows_of_a_report_before_any_work(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from diffdefense.cli import main

    def no_work(*args, **kwargs):
        raise AssertionError("the evaluation ran")

    monkeypatch.setattr(evaluation, "run_evaluation", no_work)
    record = {"results": {"clean": {}, "white_box": {"FGSM": {}, "EAD": {}}, "black_box": {}}}
    (tmp_path / "results.json").write_text(json.dumps(record))
    args = ["evaluate", "--attack", "FGSM", "--no-black-box", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "would not write again: white_box EAD" in result.output
    assert "--replace" in result.output and json.loads((tmp_path / "results.json").read_text()) == record
    result = CliRunner().invoke(main, [*args, "--replace"])  # told to: it goes on to the evaluation
    assert isinstance(result.exception, AssertionError) and "the evaluation ran" in str(result.exception)
    (tmp_path / "results.json").write_text("{not json")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "could not be read" in result.output


def test_the_cli_sets_fields_over_the_preset_and_names_them_in_the_report(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from diffdefense.cli import main
    from diffdefense.settings import PRESETS

    seen = []

    def no_work(config, *args, **kwargs):
        seen.append(config)
        raise AssertionError("the evaluation ran")

    monkeypatch.setattr(evaluation, "run_evaluation", no_work)
    args = ["evaluate", "--preset", "default", "--seed", "3", "--attack", "FGSM", "--out", str(tmp_path)]
    CliRunner().invoke(main, [*args, "--set", "refine_start_step=20, num_candidates=24"])
    assert seen[0].settings == PRESETS["default"].with_(refine_start_step=20, num_candidates=24, seed=3)
    assert seen[0].preset == "default + refine_start_step=20,num_candidates=24"
    for bad, message in [("seed=1", "--seed"), ("start_step=one", "start_step to be an integer")]:
        result = CliRunner().invoke(main, [*args, "--set", bad])
        assert result.exit_code == 2 and message in result.output
    assert len(seen) == 1


def test_runs_of_other_presets_share_one_folder_of_adversarial_sets(tiny_data_root, tmp_path, small_unet, monkeypatch):
    config = EvaluationConfig(
        num_images=4,
        attacks=("FGSM",),
        black_box=False,
        batch_size=4,
        settings=DefenseSettings(num_candidates=2, iterations=2, num_steps=2, start_step=10),
    )
    shared = tmp_path / "attacks"
    first = run_evaluation(config, tmp_path / "first", tiny_data_root, attack_cache=shared)
    assert (shared / "adversarial_white_box_FGSM.npz").is_file()
    assert not (tmp_path / "first" / "cache" / "attacks").exists()

    def no_attack(*args, **kwargs):
        raise AssertionError("a shared adversarial set was computed again")

    monkeypatch.setattr(evaluation, "run_attack", no_attack)
    other = replace(config, settings=replace(config.settings, refine=True))
    second = run_evaluation(other, tmp_path / "second", tiny_data_root, attack_cache=shared)["record"]["results"]
    before = first["record"]["results"]["white_box"]["FGSM"]
    assert second["white_box"]["FGSM"]["accuracy_no_defense"] == before["accuracy_no_defense"]
    # Sets made against other classifier weights are refused, not reused.
    monkeypatch.setattr(evaluation, "classifier_checksums", lambda dataset: {"model_a": "0" * 64, "model_b": "1" * 64})
    with pytest.raises(ValueError, match="was made for other classifiers"):
        run_evaluation(other, tmp_path / "third", tiny_data_root, attack_cache=shared)


def test_reconstructions_cached_with_other_unet_weights_are_refused(tmp_path):
    """The defence's cache records the U-Net's sha256: weights retrained under the same name get no stale
    reconstructions."""
    config = EvaluationConfig(num_images=4)
    indices = np.arange(4)
    _, cache = evaluation.open_caches(config, tmp_path, indices)
    recorded = json.loads((cache.folder / "unet.json").read_text())
    assert len(recorded["unet"]) == 64  # the shipped file's sha256
    (cache.folder / "unet.json").write_text(json.dumps({"unet": "0" * 64}))
    with pytest.raises(ValueError, match="made for other unet"):
        evaluation.open_caches(config, tmp_path, indices)
