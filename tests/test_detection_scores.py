"""Detection scores beyond the best candidate's error (reference/detection_scores.py)."""

import numpy as np
import pytest
import torch

from diffdefense.reference.defense import ReferenceDefense
from diffdefense.reference.detection_scores import auroc_table, detection_scores
from diffdefense.settings import PRESETS
from diffdefense.shipped import SAMPLES_DIR
from diffdefense.training.loading import load_unet

CHEAP = PRESETS["default"].with_(num_candidates=3, iterations=2)


def test_scores_follow_their_definitions_on_a_real_call():
    images = torch.from_numpy(np.load(SAMPLES_DIR / "mnist.npz")["images"][:3])
    result = ReferenceDefense(*load_unet("mnist", name="unet_bn"), CHEAP).reconstruct(images)
    scores = detection_scores(images, result)
    difference = (result.images - images).flatten(1)
    np.testing.assert_allclose(scores["best_mse"], result.errors.double().numpy())
    np.testing.assert_allclose(scores["refined_mse"], difference.pow(2).mean(1).double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(scores["refined_max_pixel"], difference.abs().amax(1).double().numpy(), rtol=1e-6)
    losses = result.candidate_errors.double().numpy()
    np.testing.assert_allclose(scores["candidate_mean"], losses.mean(1), rtol=1e-6)
    np.testing.assert_allclose(scores["candidate_spread"], losses.std(1, ddof=1), rtol=1e-5)
    assert (scores["best_mse"] <= scores["candidate_mean"] + 1e-12).all()  # the best is no worse than the mean


def test_auroc_table_ranks_each_score_against_the_clean_ones():
    clean = {"a": np.array([0.1, 0.2, 0.3]), "b": np.array([0.5, 0.6, 0.7])}
    attacked = {"a": np.array([0.4, 0.5, 0.6]), "b": np.array([0.1, 0.2, 0.8])}
    table = auroc_table({"clean": clean, "FGSM": attacked})
    assert table == {"FGSM": {"a": 1.0, "b": pytest.approx(3 / 9, abs=1e-4)}}
