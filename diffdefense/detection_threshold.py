"""The attack threshold on the reconstruction error, set on clean inputs: one rule for the exported bundle, the
evaluation and a camera's calibration (numpy only, so the torch-free runtime uses it too)."""

from __future__ import annotations

import numpy as np

TARGET_FALSE_POSITIVE_RATE = 0.05  # the share of clean inputs flagged: 5 %, as in the evaluation's tables


def clean_threshold(clean_errors, target_fpr: float = TARGET_FALSE_POSITIVE_RATE) -> float:
    """The error above which target_fpr of these clean inputs lie: their (1 - target_fpr) quantile."""
    if not 0 < target_fpr < 1:
        raise ValueError(f"Expected a target false-positive rate in (0, 1), but got {target_fpr}.")
    errors = np.asarray(clean_errors, np.float64)
    if errors.size == 0 or not np.isfinite(errors).all():
        raise ValueError(f"Expected finite clean errors to set the threshold on, but got {errors.size} values.")
    return float(np.quantile(errors, 1 - target_fpr))
