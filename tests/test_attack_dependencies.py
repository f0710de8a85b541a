"""torchattacks is installed without torchvision (see tools/install.sh); it must still import and attack."""

import pytest
import torch

from diffdefense.training.models import ModelA


def test_torchvision_is_not_needed():
    torchattacks = pytest.importorskip("torchattacks", reason="install it with tools/install.sh")
    model = ModelA().eval()
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    adversarial = torchattacks.PGD(model, eps=0.3, alpha=0.05, steps=3, random_start=True)(x, y)
    assert adversarial.shape == x.shape
    assert (adversarial - x).abs().max() <= 0.3 + 1e-6 and adversarial.min() >= 0 and adversarial.max() <= 1
