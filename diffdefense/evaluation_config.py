"""What an evaluation runs: the data, the attacks, the defence's settings and the adaptive attacks' budget. Apart
from the evaluation itself (which needs torch), so that the CLI reads its defaults from here without importing it."""

from __future__ import annotations

from dataclasses import dataclass, field

from diffdefense.settings import DefenseSettings

# The adaptive attacks (reference/adaptive.py) and the gradients they take through the defence
ADAPTIVE_ATTACKS = ("PGD", "APGD-CE", "APGD-DLR")
ADAPTIVE_GRADIENTS = ("bpda", "bpda-eot", "true")


@dataclass(frozen=True)
class EvaluationConfig:
    dataset: str = "mnist"
    num_images: int = 1000
    seed: int = 0
    attacks: tuple[str, ...] = ("FGSM", "PGD", "DeepFool", "Square", "AutoAttack", "EAD")
    black_box: bool = True
    batch_size: int = 50
    settings: DefenseSettings = field(default_factory=DefenseSettings)
    preset: str = "custom"
    unet: str = "unet"  # the shipped noise predictor, one of diffdefense.shipped.UNET_NAMES
    adaptive_images: int = 0  # the first N of the chosen images; 0 skips the adaptive attacks
    adaptive_eps: tuple[float, ...] = (0.3, 0.1)
    adaptive_steps: int = 20
    adaptive_gradients: tuple[str, ...] = ("bpda", "true")  # BPDA-PGD and true-gradient EOT-PGD
    adaptive_attacks: tuple[str, ...] = ("PGD",)
    eot_iter: int = 4
