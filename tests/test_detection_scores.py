"""Detection scores beyond the best candidate's error (reference/detection_scores.py)."""

import numpy as np
import pytest
import torch

from diffdefense.reference.defense import ReferenceDefense
from diffdefense.reference.detection_scores import auroc_table, detection_scores, jensen_shannon
from diffdefense.settings import PRESETS
from diffdefense.shipped import SAMPLES_DIR
from diffdefense.training.loading import load_classifier, load_unet

CHEAP = PRESETS["default"].with_(num_candidates=3, iterations=2)


def test_scores_follow_their_definitions_on_a_real_call():
    images = torch.from_numpy(np.load(SAMPLES_DIR / "mnist.npz")["images"][:3])
    result = ReferenceDefense(*load_unet("mnist", name="unet_bn"), CHEAP).reconstruct(images)
    classifier = load_classifier("mnist", "model_a")
    scores = detection_scores(images, result, classifier, top_pixels=5)
    difference = (result.images - images).flatten(1)
    np.testing.assert_allclose(scores["best_mse"], result.errors.double().numpy())
    np.testing.assert_allclose(scores["refined_mse"], difference.pow(2).mean(1).double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(scores["refined_max_pixel"], difference.abs().amax(1).double().numpy(), rtol=1e-6)
    top5 = np.sort(difference.abs().numpy(), axis=1)[:, -5:].mean(1)
    np.testing.assert_allclose(scores["refined_top_pixels"], top5, rtol=1e-5)
    assert (scores["refined_top_pixels"] <= scores["refined_max_pixel"] + 1e-12).all()
    with torch.no_grad():
        p, q = (torch.softmax(classifier(x), 1) for x in (images, result.images))
    np.testing.assert_allclose(scores["classifier_divergence"], jensen_shannon(p, q).double().numpy(), rtol=1e-6)
    losses = result.candidate_errors.double().numpy()
    np.testing.assert_allclose(scores["candidate_mean"], losses.mean(1), rtol=1e-6)
    np.testing.assert_allclose(scores["candidate_spread"], losses.std(1, ddof=1), rtol=1e-5)
    assert (scores["best_mse"] <= scores["candidate_mean"] + 1e-12).all()  # the best is no worse than the mean


def test_auroc_table_ranks_each_score_against_the_clean_ones():
    clean = {"a": np.array([0.1, 0.2, 0.3]), "b": np.array([0.5, 0.6, 0.7])}
    attacked = {"a": np.array([0.4, 0.5, 0.6]), "b": np.array([0.1, 0.2, 0.8])}
    table = auroc_table({"clean": clean, "FGSM": attacked})
    assert table == {"FGSM": {"a": 1.0, "b": pytest.approx(3 / 9, abs=1e-4)}}


def test_jensen_shannon_is_zero_on_equal_rows_and_log2_on_disjoint_ones():
    p = torch.tensor([[0.2, 0.8], [1.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.2, 0.8], [0.0, 1.0]], dtype=torch.float64)
    divergence = jensen_shannon(p, q)
    assert divergence[0].item() == pytest.approx(0.0, abs=1e-12)
    assert divergence[1].item() == pytest.approx(np.log(2), rel=1e-9)
    assert torch.allclose(divergence, jensen_shannon(q, p))  # symmetric


def test_report_scores_read_an_evaluations_caches_and_refuse_a_folder_without_them(tmp_path):
    import json

    import click

    from diffdefense.data import load_dataset
    from diffdefense.reference.detection_scores_report import report_scores
    from diffdefense.reference.evaluation import ArrayCache

    indices = [0, 1, 2, 3]
    images = load_dataset("mnist", "test").subset(np.array(indices)).float_images()
    report = tmp_path / "report"
    report.mkdir()
    with pytest.raises(click.ClickException, match="has no results.json"):
        report_scores(report, tmp_path / "attacks")
    record = {"dataset": "mnist", "indices": indices, "seed": 0, "results": {"white_box": {"FGSM": {}}}}
    (report / "results.json").write_text(json.dumps(record))
    with pytest.raises(click.ClickException, match="Expected one cache/defense-"):
        report_scores(report, tmp_path / "attacks")
    identity = {"dataset": "mnist", "indices": indices, "seed": 0}
    attacked = np.clip(images + 0.3 * np.sign(np.random.default_rng(0).normal(size=images.shape)), 0, 1)
    ArrayCache(tmp_path / "attacks", identity).get("adversarial_white_box_FGSM", lambda: attacked.astype(np.float32))
    defended = ArrayCache(report / "cache" / "defense-x", {**identity, "settings": {}})
    for name, outputs, error in (("clean", images, 0.01), ("white_box_FGSM", images, 0.05)):
        rows = np.concatenate([outputs.reshape(4, -1), np.full((4, 1), error)], axis=1).astype(np.float32)
        defended.get(f"defended_{name}", lambda r=rows: r)
    scores, _ = report_scores(report, tmp_path / "attacks")
    np.testing.assert_allclose(scores["clean"]["refined_l1"], 0.0)  # the output is the input
    expected = np.abs(attacked - images).reshape(4, -1).mean(1)
    np.testing.assert_allclose(scores["FGSM"]["refined_l1"], expected, rtol=1e-6)
    np.testing.assert_allclose(scores["FGSM"]["best_mse"], 0.05, rtol=1e-6)
    assert auroc_table(scores)["FGSM"]["refined_l1"] == 1.0
