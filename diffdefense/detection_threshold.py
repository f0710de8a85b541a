"""The detection score and the attack threshold on it, set on clean inputs: one rule for the exported bundle, the
evaluation and a camera's calibration (numpy only, so the torch-free runtime uses it too).

Scores: 'refined_l1', the mean absolute difference between the defence's output (after the refining pass, where the
settings have one) and its input, the default since it was found to separate attacked from clean inputs better on
every attack (AUROC on attacked training images, then on the test table: docs/evaluation.md); 'best_mse', the best
candidate's mean squared error before the refining pass, the paper's score and that of bundles from before the
choice."""

from __future__ import annotations

import numpy as np

TARGET_FALSE_POSITIVE_RATE = 0.05  # the share of clean inputs flagged: 5 %, as in the evaluation's tables
DETECTION_SCORES = ("refined_l1", "best_mse")
DEFAULT_DETECTION_SCORE = "refined_l1"


def refined_l1(inputs: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """(B,): the mean absolute difference between each output image and its input, (B, ...) each."""
    difference = np.asarray(outputs, np.float32) - np.asarray(inputs, np.float32)
    return np.abs(difference.reshape(len(difference), -1)).mean(axis=1)


def compute_score(name: str, inputs: np.ndarray, outputs: np.ndarray, best_errors: np.ndarray) -> np.ndarray:
    """The score `name` (one of DETECTION_SCORES) of a defence call; higher: more likely attacked."""
    if name == "refined_l1":
        return refined_l1(inputs, outputs)
    if name == "best_mse":
        return np.asarray(best_errors)
    raise ValueError(f"Expected a detection score in {DETECTION_SCORES}, but got {name!r}.")


def clean_threshold(clean_errors, target_fpr: float = TARGET_FALSE_POSITIVE_RATE) -> float:
    """The error above which target_fpr of these clean inputs lie: their (1 - target_fpr) quantile."""
    if not 0 < target_fpr < 1:
        raise ValueError(f"Expected a target false-positive rate in (0, 1), but got {target_fpr}.")
    errors = np.asarray(clean_errors, np.float64)
    if errors.size == 0 or not np.isfinite(errors).all():
        raise ValueError(f"Expected finite clean errors to set the threshold on, but got {errors.size} values.")
    return float(np.quantile(errors, 1 - target_fpr))
