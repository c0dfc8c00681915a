"""A small CNN for scikit-learn's 8x8 digits.

The input is the raw pixel intensities as ``load_digits`` gives them (0 to 16),
so an exported graph takes exactly what the data set holds; the scaling to
[0, 1] is the model's first operation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

IMAGE_SIZE = 8
MAX_INTENSITY = 16.0  # load_digits pixels are counts of a 4x4 block of a 32x32 bitmap


@dataclass(frozen=True)
class DigitsCNNConfig:
    num_classes: int = 10
    channels: int = 32  # the first block; the second has twice as many
    hidden: int = 64
    dropout: float = 0.1

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


class DigitsCNN(nn.Module):
    def __init__(self, config: DigitsCNNConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(c, 2 * c, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4 -> 2x2
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(2 * c * 4, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, config.num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pixel intensities (B, 8, 8) in [0, 16] -> class logits (B, num_classes)."""
        x = (images / MAX_INTENSITY).unsqueeze(1)  # (B, 1, 8, 8)
        return self.classifier(self.features(x))  # (B, num_classes)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
