"""A small convolutional text discriminator: character embedding, dilated 1-D convolutions, mean and max pooling.

Input: character ids (B, 256) int32 in the text LSTM's vocabulary. Output: logits (B, 2) over ("real",
"generated"). Plain gathers, convolutions and reductions, so the graph exports to ONNX and TFLite as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TextDiscConfig:
    vocab_size: int
    num_classes: int = 2
    embed_dim: int = 32
    channels: int = 64
    kernel_size: int = 5
    dilations: tuple[int, ...] = (1, 2, 4, 8)  # receptive field 1 + (k - 1) * sum = 61 characters
    dropout: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "dilations", tuple(self.dilations))  # JSON gives a list

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class TextDiscriminator(nn.Module):
    def __init__(self, config: TextDiscConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        k = config.kernel_size
        convs, width = [], config.embed_dim
        for d in config.dilations:
            convs.append(nn.Conv1d(width, config.channels, k, dilation=d, padding=d * (k - 1) // 2))
            width = config.channels
        self.convs = nn.ModuleList(convs)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.channels, config.num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Character ids (B, T) int32 or int64 -> logits (B, num_classes)."""
        x = F.embedding(ids, self.embed.weight).transpose(1, 2)  # (B, E, T)
        for i, conv in enumerate(self.convs):
            y = F.relu(conv(x))  # (B, C, T)
            x = y if i == 0 else x + y  # residual from the second layer on
        pooled = torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)  # (B, 2C)
        return self.head(self.drop(pooled))  # (B, num_classes)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
