"""Adaptive attacks through the defence (the paper ran none; Athalye et al. 2018 broke Defense-GAN with them).

Three attacks, PGD and AutoAttack's APGD-CE and APGD-DLR (Croce and Hein 2020, step size adapted on the fly), each
with one of three gradients:
- 'bpda': the defence as the identity backward (BPDA), the defence's own seed in every forward pass: the attack sees
  the very function that is evaluated;
- 'bpda-eot': BPDA averaged over eot_iter new draws of the defence's randomness per step (EOT): the seeds of the
  draws vary per sample, so no one draw is fitted;
- 'true': the gradient through the whole unrolled optimisation, averaged over eot_iter draws (EOT).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torchattacks
from torch import nn
from tqdm import tqdm

from diffdefense.evaluation_config import ADAPTIVE_ATTACKS, ADAPTIVE_GRADIENTS
from diffdefense.reference.batch_checkpoints import BatchCheckpoints
from diffdefense.reference.defended import DefendedClassifier
from diffdefense.reference.defense import ReferenceDefense

APGD_LOSSES = {"APGD-CE": "ce", "APGD-DLR": "dlr"}


@dataclass(frozen=True)
class AdaptiveBudget:
    """name: for the report; gradient: one of ADAPTIVE_GRADIENTS; eps, alpha, steps: the attack's (alpha: PGD's
    step; APGD sets its own); eot_iter: gradients averaged per step over the defence's randomness (1: none); attack:
    one of ADAPTIVE_ATTACKS."""

    name: str
    gradient: str
    eps: float
    alpha: float
    steps: int
    eot_iter: int = 1
    attack: str = "PGD"

    def to_dict(self) -> dict:
        return asdict(self)


def budget_name(attack: str, gradient: str, eps: float, steps: int | None = None) -> str:
    """'BPDA-PGD eps 0.3', 'BPDA+EOT-APGD-CE eps 0.1', 'EOT-PGD (true gradient) eps 0.3'; with steps for APGD (its
    result depends on the step budget, which a convergence check varies)."""
    prefix = {"bpda": "BPDA", "bpda-eot": "BPDA+EOT", "true": "EOT"}[gradient]
    name = f"{prefix}-{attack}" + (" (true gradient)" if gradient == "true" else "") + f" eps {eps}"
    return name if attack == "PGD" or steps is None else f"{name}, {steps} steps"


def adaptive_budgets(
    eps: float,
    steps: int = 20,
    eot_iter: int = 4,
    attacks: tuple[str, ...] = ("PGD",),
    gradients: tuple[str, ...] = ("bpda", "true"),
) -> list[AdaptiveBudget]:
    """Every attack with every gradient at eps, in that order."""
    alpha = 2.5 * eps / steps  # Madry et al.'s rule of thumb: the walk can cross the ball 2.5 times
    return [
        AdaptiveBudget(
            budget_name(attack, gradient, eps, steps),
            gradient,
            eps,
            alpha,
            steps,
            1 if gradient == "bpda" else eot_iter,
            attack,
        )
        for attack in attacks
        for gradient in gradients
    ]


def run_adaptive(
    budget: AdaptiveBudget,
    classifier: nn.Module,
    defense: ReferenceDefense,
    images: torch.Tensor,
    labels: torch.Tensor,
    seed: int = 0,
    batch_size: int = 25,
    checkpoints: BatchCheckpoints | None = None,
) -> torch.Tensor:
    """Adversarial images built through the defence, seeded, batch by batch. With checkpoints, each finished batch is
    saved with the random state it leaves (torch's generator, the count of EOT draws), and a batch found saved is
    read back instead of attacked: a resumed run gives the images an uninterrupted one gives."""
    if budget.attack not in ADAPTIVE_ATTACKS or budget.gradient not in ADAPTIVE_GRADIENTS:
        raise ValueError(
            f"Expected an attack in {list(ADAPTIVE_ATTACKS)} and a gradient in {list(ADAPTIVE_GRADIENTS)}, but got "
            f"{budget.attack!r} and {budget.gradient!r}."
        )
    torch.manual_seed(seed)
    gradient = "true" if budget.gradient == "true" else "bpda"
    model = DefendedClassifier(classifier, defense, gradient, randomize=budget.eot_iter > 1)
    if budget.attack in APGD_LOSSES:
        attack = torchattacks.APGD(
            model,
            norm="Linf",
            eps=budget.eps,
            steps=budget.steps,
            n_restarts=1,
            seed=seed,
            loss=APGD_LOSSES[budget.attack],
            eot_iter=budget.eot_iter,
        )
    elif budget.eot_iter > 1:
        attack = torchattacks.EOTPGD(
            model, eps=budget.eps, alpha=budget.alpha, steps=budget.steps, eot_iter=budget.eot_iter, random_start=True
        )
    else:
        attack = torchattacks.PGD(model, eps=budget.eps, alpha=budget.alpha, steps=budget.steps, random_start=True)
    out = []
    starts = range(0, len(images), batch_size)
    for index, start in enumerate(tqdm(starts, desc=budget.name, leave=False, disable=None)):
        saved = checkpoints.load(index) if checkpoints is not None else None
        if saved is not None:
            torch.set_rng_state(torch.from_numpy(saved["torch_rng_state"]))
            model.calls = int(saved["eot_draws"])
            out.append(torch.from_numpy(saved["adversarial"]))
            continue
        out.append(attack(images[start : start + batch_size], labels[start : start + batch_size]).detach())
        if checkpoints is not None:
            checkpoints.save(
                index,
                adversarial=out[-1].numpy(),
                torch_rng_state=torch.get_rng_state().numpy(),
                eot_draws=np.array(model.calls),
            )
    return torch.cat(out)
