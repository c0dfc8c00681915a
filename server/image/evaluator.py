"""The evaluator CNN: a Fashion-MNIST classifier that judges the generators (its features, its class
probabilities) and is Deep Dream's network.

Two blocks of two 3x3 convolutions (batch norm, ReLU) each followed by 2x2 max pooling, then one hidden layer: the
``hidden`` activations are the feature space the quality metrics measure in. Its input is images (B, H, W) in
[0, 1], as every generator here yields them; the standardisation is the model's first operation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

# The named activations Deep Dream may maximise, in order: block1 (C, H/2, W/2), block2 (2C, H/4, W/4), hidden (D,),
# logits (classes,).
LAYERS = ("block1", "block2", "hidden", "logits")


@dataclass(frozen=True)
class EvaluatorConfig:
    num_classes: int = 10
    image_size: int = 28  # a multiple of 4
    channels: int = 16  # the first block; the second has twice as many
    hidden: int = 128  # the feature space of the quality metrics
    dropout: float = 0.3
    mean: float = 0.286  # Fashion-MNIST's pixel mean and standard deviation (training split)
    std: float = 0.353

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class Evaluator(nn.Module):
    def __init__(self, config: EvaluatorConfig) -> None:
        super().__init__()
        self.config = config
        c, side = config.channels, config.image_size // 4
        self.block1 = _block(1, c)  # (B, C, H/2, W/2)
        self.block2 = _block(c, 2 * c)  # (B, 2C, H/4, W/4)
        self.hidden = nn.Sequential(
            nn.Flatten(), nn.Dropout(config.dropout), nn.Linear(2 * c * side * side, config.hidden), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.hidden, config.num_classes))

    def activations(self, images: torch.Tensor, upto: str = "logits") -> dict[str, torch.Tensor]:
        """The named activations (``LAYERS``) of images (B, H, W) in [0, 1], up to and including ``upto``."""
        x = ((images - self.config.mean) / self.config.std).unsqueeze(1)  # (B, 1, H, W)
        out: dict[str, torch.Tensor] = {}
        out["block1"] = x = self.block1(x)  # (B, C, H/2, W/2)
        if upto == "block1":
            return out
        out["block2"] = x = self.block2(x)  # (B, 2C, H/4, W/4)
        if upto == "block2":
            return out
        out["hidden"] = x = self.hidden(x)  # (B, D)
        if upto == "hidden":
            return out
        out["logits"] = self.head(x)  # (B, classes)
        return out

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The hidden layer (B, D) of images (B, H, W): the metrics' feature space."""
        return self.activations(images, "hidden")["hidden"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, H, W) in [0, 1] -> class logits (B, classes)."""
        return self.activations(images)["logits"]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
