"""Attack detection from the reconstruction error: ROC AUC, and a threshold set on clean data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from diffdefense.detection_threshold import TARGET_FALSE_POSITIVE_RATE, clean_threshold


@dataclass(frozen=True)
class DetectionResult:
    """auroc: adversarial (positive) against clean (negative) by score; threshold: the clean scores'
    (1 - target_fpr) quantile; detection_rate: adversarial scores above it; clean_fpr: clean ones above it."""

    auroc: float
    threshold: float
    detection_rate: float
    clean_fpr: float
    fpr: np.ndarray
    tpr: np.ndarray


def evaluate_detection(
    clean_scores: np.ndarray,
    adversarial_scores: np.ndarray,
    target_fpr: float = TARGET_FALSE_POSITIVE_RATE,
    threshold: float | None = None,
) -> DetectionResult:
    """Scores are reconstruction errors (higher: more likely attacked). Pass ``threshold`` set on a separate
    clean calibration set to keep the false-positive rate honest; otherwise it is set on ``clean_scores``."""
    clean, adversarial = np.asarray(clean_scores, np.float64), np.asarray(adversarial_scores, np.float64)
    if clean.size == 0 or adversarial.size == 0:
        raise ValueError("Expected clean and adversarial scores, but one of them is empty.")
    if not (np.isfinite(clean).all() and np.isfinite(adversarial).all()):
        raise ValueError("Expected finite scores, but got NaN or infinity.")
    labels = np.concatenate([np.zeros(clean.size), np.ones(adversarial.size)])
    scores = np.concatenate([clean, adversarial])
    fpr, tpr, _ = roc_curve(labels, scores)
    threshold = clean_threshold(clean, target_fpr) if threshold is None else threshold
    return DetectionResult(
        auroc=float(roc_auc_score(labels, scores)),
        threshold=threshold,
        detection_rate=float((adversarial > threshold).mean()),
        clean_fpr=float((clean > threshold).mean()),
        fpr=fpr,
        tpr=tpr,
    )
