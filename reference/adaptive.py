"""Adaptive attacks through the defence (the paper ran none; Athalye et al. 2018 broke Defense-GAN with them).

BPDA-PGD: PGD whose gradient treats the defence as the identity. EOT-PGD (true gradient): PGD whose gradient
runs through the whole unrolled optimisation, averaged over new draws of the defence's randomness.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torchattacks
from torch import nn

from diffdefense.reference.defended import DefendedClassifier
from diffdefense.reference.defense import ReferenceDefense


@dataclass(frozen=True)
class AdaptiveBudget:
    """name: for the report; gradient: 'bpda' or 'true'; eps, alpha, steps: PGD's; eot_iter: gradients averaged
    per step over the defence's randomness (1: none)."""

    name: str
    gradient: str
    eps: float
    alpha: float
    steps: int
    eot_iter: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def adaptive_budgets(eps: float, steps: int = 20, eot_iter: int = 4) -> list[AdaptiveBudget]:
    alpha = 2.5 * eps / steps  # Madry et al.'s rule of thumb: the walk can cross the ball 2.5 times
    return [
        AdaptiveBudget(f"BPDA-PGD eps {eps}", "bpda", eps, alpha, steps),
        AdaptiveBudget(f"EOT-PGD (true gradient) eps {eps}", "true", eps, alpha, steps, eot_iter),
    ]


def run_adaptive(
    budget: AdaptiveBudget,
    classifier: nn.Module,
    defense: ReferenceDefense,
    images: torch.Tensor,
    labels: torch.Tensor,
    seed: int = 0,
    batch_size: int = 25,
) -> torch.Tensor:
    """Adversarial images built through the defence, seeded."""
    torch.manual_seed(seed)
    model = DefendedClassifier(classifier, defense, budget.gradient, randomize=budget.eot_iter > 1)
    if budget.eot_iter > 1:
        attack = torchattacks.EOTPGD(
            model, eps=budget.eps, alpha=budget.alpha, steps=budget.steps, eot_iter=budget.eot_iter, random_start=True
        )
    else:
        attack = torchattacks.PGD(model, eps=budget.eps, alpha=budget.alpha, steps=budget.steps, random_start=True)
    out = [attack(images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat(out).detach()
