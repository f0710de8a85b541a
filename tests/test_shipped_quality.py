"""The shipped models still do what their records say, on real data (a quick subset of the full checks)."""

import numpy as np
import pytest
import torch

from diffdefense.data import load_dataset
from diffdefense.training.loading import load_classifier, load_unet
from diffdefense.training.train_classifier import accuracy

# Issue thresholds for the full test sets; the subset check allows a little sampling slack.
THRESHOLDS = {
    ("mnist", "model_a"): 0.990,
    ("mnist", "model_b"): 0.985,
    ("kmnist", "model_a"): 0.93,
    ("kmnist", "model_b"): 0.90,
}


@pytest.mark.parametrize(("dataset", "arch"), sorted(THRESHOLDS))
def test_shipped_classifier_accuracy_on_real_test_images(real_data_root, dataset, arch):
    test = load_dataset(dataset, "test", real_data_root)
    subset = np.random.default_rng(0).permutation(len(test))[:2000]
    x, y = test.subset(subset).as_tensors()
    assert accuracy(load_classifier(dataset, arch), x, y) >= THRESHOLDS[(dataset, arch)] - 0.01


@pytest.mark.parametrize("dataset", ["mnist", "kmnist"])
def test_shipped_unet_denoises_real_images(real_data_root, dataset):
    """At a middle noise level the shipped U-Net's noise estimate must beat predicting zero by far."""
    unet, schedule = load_unet(dataset)
    x0 = load_dataset(dataset, "test", real_data_root).subset(np.arange(64)).as_tensors()[0] * 2 - 1
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.full((64,), schedule.num_steps // 2)
    c0, c1 = (float(c) for c in schedule.q_sample_coefficients(schedule.num_steps // 2))
    with torch.no_grad():
        error = (unet(c0 * x0 + c1 * noise, t) - noise).pow(2).mean().item()
    assert error < 0.25 * noise.pow(2).mean().item()
