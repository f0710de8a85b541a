"""The paper's attacks through torchattacks (DeepFool through ART), with the settings of DESIGN section 1.

All take and return images (N, 1, 28, 28) in [0, 1] and attack the model they are given: Model A for
white-box attacks on the classifier, Model B for black-box transfer to Model A. torchattacks is
installed without torchvision (tools/install.sh).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torchattacks
from torch import nn

EPS = 0.3


@dataclass(frozen=True)
class AttackSpec:
    """name: as in the report; threat: the norm and budget; settings: the arguments used, for the record."""

    name: str
    threat: str
    settings: dict = field(default_factory=dict)
    build: Callable[[nn.Module, int], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] | None = None


def _pgd_with_restarts(model: nn.Module, steps: int = 20, restarts: int = 5) -> torchattacks.attack.Attack:
    # torchattacks' PGD has no restarts: MultiAttack runs each restart on the images still classified right.
    return torchattacks.MultiAttack(
        [torchattacks.PGD(model, eps=EPS, alpha=0.01, steps=steps, random_start=True) for _ in range(restarts)]
    )


def _apgd(model: nn.Module, seed: int, loss: str) -> torchattacks.attack.Attack:
    """AutoAttack's APGD with one loss (cross-entropy or the DLR margin): step size adapted, 100 steps."""
    return torchattacks.APGD(model, norm="Linf", eps=EPS, steps=100, n_restarts=1, loss=loss, seed=seed)


ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in [
        AttackSpec("FGSM", f"Linf {EPS}", {"eps": EPS}, lambda m, seed: torchattacks.FGSM(m, eps=EPS)),
        AttackSpec(
            "PGD",
            f"Linf {EPS}",
            {"eps": EPS, "alpha": 0.01, "steps": 20, "restarts": 5},
            lambda m, seed: _pgd_with_restarts(m),
        ),
        # The paper's PGD moves at most 20 x 0.01 = 0.2 from its random start: it cannot cross the 0.3 ball. These
        # converge: enough steps to reach the ball's surface from anywhere in it, and AutoAttack's adaptive-step APGD.
        AttackSpec(
            "PGD-100x5",
            f"Linf {EPS}",
            {"eps": EPS, "alpha": 0.01, "steps": 100, "restarts": 5},
            lambda m, seed: _pgd_with_restarts(m, steps=100),
        ),
        AttackSpec(
            "APGD-CE", f"Linf {EPS}", {"eps": EPS, "steps": 100, "loss": "ce"}, lambda m, seed: _apgd(m, seed, "ce")
        ),
        AttackSpec(
            "APGD-DLR", f"Linf {EPS}", {"eps": EPS, "steps": 100, "loss": "dlr"}, lambda m, seed: _apgd(m, seed, "dlr")
        ),
        AttackSpec(
            "DeepFool",
            "L2, minimal",
            {"steps": 100, "overshoot": 0.02, "library": "ART"},
            lambda m, seed: _art_deepfool(m, steps=100, overshoot=0.02),
        ),
        AttackSpec(
            "Square",
            f"Linf {EPS}",
            {"eps": EPS, "n_queries": 100},
            lambda m, seed: torchattacks.Square(m, norm="Linf", eps=EPS, n_queries=100, seed=seed),
        ),
        AttackSpec(
            "AutoAttack",
            f"Linf {EPS}",
            {"eps": EPS, "version": "standard"},
            lambda m, seed: torchattacks.AutoAttack(
                m, norm="Linf", eps=EPS, version="standard", n_classes=10, seed=seed
            ),
        ),
        AttackSpec(
            "EAD", "elastic net, minimal", {"defaults": "torchattacks EADEN"}, lambda m, seed: torchattacks.EADEN(m)
        ),
        AttackSpec(
            "EOT-PGD",
            f"Linf {EPS}",
            {"eps": EPS, "alpha": 0.01, "steps": 20, "eot_iter": 2},
            lambda m, seed: torchattacks.EOTPGD(m, eps=EPS, alpha=0.01, steps=20, eot_iter=2),
        ),
        AttackSpec(
            "CW-L2",
            "L2, minimal",
            {"c": 1.0, "kappa": 0, "steps": 100, "lr": 0.01},
            lambda m, seed: torchattacks.CW(m, c=1.0, kappa=0, steps=100, lr=0.01),
        ),
    ]
}


def _art_deepfool(model: nn.Module, steps: int, overshoot: float):
    """ART's DeepFool: batched, and it applies the overshoot to the whole perturbation as Moosavi-Dezfooli et al.
    do. torchattacks' DeepFool loops image by image and applies it to each step's increment before clipping to
    [0, 1], so on MNIST's saturated pixels it stalls: it leaves 58 % of test images correctly classified by
    Model A where the paper reports 1 % (docs/results/mnist_paper_200, the preliminary run that used it)."""
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10, clip_values=(0.0, 1.0)
    )
    attack = DeepFool(classifier, max_iter=steps, epsilon=overshoot, nb_grads=10, batch_size=250, verbose=False)
    return lambda images, labels: torch.from_numpy(attack.generate(images.numpy()))


def run_attack(
    name: str, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, seed: int = 0, batch_size: int = 250
) -> torch.Tensor:
    """Adversarial versions of images (N, 1, 28, 28) in [0, 1], in batches, seeded."""
    if name not in ATTACKS:
        raise ValueError(f"Expected an attack in {sorted(ATTACKS)}, but got {name!r}.")
    torch.manual_seed(seed)  # random starts of PGD and EOT-PGD, and any attack drawing from torch's RNG
    attack = ATTACKS[name].build(model.eval(), seed)
    out = [attack(images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    # Some attacks' arithmetic (torchattacks' EAD: 3e-5) leaves pixels just outside [0, 1], which the runtime
    # refuses as input: clip, as every attack's threat model asks.
    return torch.cat(out).detach().clamp_(0.0, 1.0)
