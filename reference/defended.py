"""The defence as something attacks can go through (adaptive attacks, which the paper did not run).

``DefendedClassifier`` is an ``nn.Module`` (classifier after defence) for torchattacks; its gradient is
either BPDA's identity through the defence (Athalye et al. 2018, arXiv 1802.00420) or the true
gradient of the unrolled optimisation. With ``randomize`` each call draws new latents and noise, so
torchattacks' EOT-PGD averages gradients over the defence's randomness.
``DiffDefensePreprocessor`` is the same defence in ART's preprocessor shape.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from diffdefense.reference.defense import ReferenceDefense

GradientThrough = Literal["bpda", "true"]


class DefendedClassifier(nn.Module):
    """logits = classifier(defence(x)) for x (N, 1, 28, 28) in [0, 1].

    gradient 'bpda': forward through the defence, backward as if it were the identity.
    gradient 'true': backward through the whole unrolled optimisation (slow: several times a forward).
    randomize: a new seed for every call (for EOT); otherwise the defence's own seed every time.
    """

    def __init__(
        self,
        classifier: nn.Module,
        defense: ReferenceDefense,
        gradient: GradientThrough = "bpda",
        randomize: bool = False,
    ) -> None:
        super().__init__()
        if gradient not in ("bpda", "true"):
            raise ValueError(f"Expected gradient 'bpda' or 'true', but got {gradient!r}.")
        self.classifier = classifier.eval()
        self.defense = defense
        self.gradient = gradient
        self.randomize = randomize
        self.calls = 0
        # In eval mode like its classifier: torchattacks puts a model that was in training mode back into it after
        # each attack, and train() would reach the classifier too (its dropout on in every later prediction).
        self.eval()

    def _defense_for_this_call(self) -> ReferenceDefense:
        if not self.randomize:
            return self.defense
        self.calls += 1
        settings = self.defense.settings.with_(seed=self.defense.settings.seed + 1_000_003 * self.calls)
        return self.defense.with_settings(settings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        defense = self._defense_for_this_call()
        if self.gradient == "true" and torch.is_grad_enabled() and x.requires_grad:
            purified = defense.reconstruct(x, differentiable=True).images
        else:
            purified = defense.reconstruct(x.detach()).images
            if self.gradient == "bpda" and x.requires_grad:
                purified = x + (purified - x).detach()  # identity backward (BPDA)
        return self.classifier(purified)


class DiffDefensePreprocessor:
    """ART-style preprocessor: ``__call__(x, y=None) -> (x_purified, y)`` on numpy arrays (N, 1, 28, 28)
    in [0, 1], and ``estimate_gradient(x, grad)`` with BPDA's identity, as ART's preprocessors do."""

    apply_fit = False
    apply_predict = True

    def __init__(self, defense: ReferenceDefense) -> None:
        self.defense = defense

    def __call__(self, x: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return self.defense.reconstruct(images).images.numpy(), y

    def estimate_gradient(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        if grad.shape != x.shape:
            raise ValueError(f"Expected a gradient of the input's shape {x.shape}, but got {grad.shape}.")
        return grad
