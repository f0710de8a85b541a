"""The paper's classifiers, from Defense-GAN (Samangouei et al. 2018, arXiv 1805.06605).

Model A is the attacked model; Model B is the black-box substitute that transfer attacks are
built on. Both take images (N, 1, 28, 28) in [0, 1], with no normalisation inside, and return
logits (N, 10).
"""

from __future__ import annotations

from torch import nn


class ModelA(nn.Module):
    """conv64 5x5, conv64 5x5 stride 2, dropout .25, fc128, dropout .5, fc10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 64, 5),
            nn.ReLU(),  # 28 -> 24
            nn.Conv2d(64, 64, 5, stride=2),
            nn.ReLU(),  # 24 -> 10
            nn.Dropout(0.25),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 10 * 10, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes)
        )

    def forward(self, x):
        return self.head(self.features(x))


class ModelB(nn.Module):
    """dropout .2, conv64 8x8 stride 2 (same padding), conv128 6x6 stride 2, conv128 5x5, dropout .5, fc10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Dropout(0.2),
            nn.Conv2d(1, 64, 8, stride=2, padding=3),
            nn.ReLU(),  # 28 -> 14
            nn.Conv2d(64, 128, 6, stride=2),
            nn.ReLU(),  # 14 -> 5
            nn.Conv2d(128, 128, 5),
            nn.ReLU(),  # 5 -> 1
            nn.Dropout(0.5),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


CLASSIFIERS = {"model_a": ModelA, "model_b": ModelB}
