"""A small convolutional text discriminator: character and hashed n-gram embeddings, dilated 1-D convolutions,
mean and max pooling.

Input: character ids (B, 256) int32 in the text LSTM's vocabulary. Output: logits (B, 2) over ("real",
"generated"). Each position's vector is its character's embedding plus, for every n-gram order, the embedding of
the n characters ending there, hashed into ``ngram_buckets`` rows (``((id_1 * V + id_2) * V + ...) mod buckets``,
folded one character at a time so int32 never overflows): a lexicon of the character n-grams real text uses,
which is what sampled text gets wrong, at the cost of a few gathers. Plain integer arithmetic, gathers,
convolutions and reductions, so the graph exports to ONNX and TFLite as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from server.errors import InvalidArgument


@dataclass(frozen=True)
class TextDiscConfig:
    vocab_size: int
    num_classes: int = 2
    embed_dim: int = 32
    channels: int = 64
    kernel_size: int = 5
    dilations: tuple[int, ...] = (1, 2, 4, 8)  # receptive field 1 + (k - 1) * sum = 61 characters
    dropout: float = 0.1
    ngram_orders: tuple[int, ...] = ()  # e.g. (3, 5): hashed n-gram embeddings; () for characters only
    ngram_buckets: int = 16381  # a prime; rows of each n-gram table

    def __post_init__(self) -> None:
        object.__setattr__(self, "dilations", tuple(self.dilations))  # JSON gives a list
        object.__setattr__(self, "ngram_orders", tuple(self.ngram_orders))
        if any(not 2 <= n <= 8 for n in self.ngram_orders) or len(set(self.ngram_orders)) != len(self.ngram_orders):
            raise InvalidArgument("ngrams", f"give distinct orders in 2..8, got {self.ngram_orders}")
        if not 1 <= self.ngram_buckets <= 2**31 // max(self.vocab_size, 1) - 1:
            raise InvalidArgument("ngram_buckets", f"must be in 1..{2**31 // max(self.vocab_size, 1) - 1}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class TextDiscriminator(nn.Module):
    def __init__(self, config: TextDiscConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.ngrams = nn.ModuleList(nn.Embedding(config.ngram_buckets, config.embed_dim) for _ in config.ngram_orders)
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
        x = F.embedding(ids, self.embed.weight)  # (B, T, E)
        orders = self.config.ngram_orders
        if orders:
            width = ids.shape[1]
            padded = F.pad(ids, (max(orders) - 1, 0))  # (B, P + T), id 0 before the window
            start = max(orders) - 1
            h = ids
            for j in range(1, max(orders)):
                h = (h * self.config.vocab_size + padded[:, start - j : start - j + width]) % self.config.ngram_buckets
                if j + 1 in orders:
                    table = cast(nn.Embedding, self.ngrams[orders.index(j + 1)])
                    x = x + F.embedding(h, table.weight)
        x = x.transpose(1, 2)  # (B, E, T)
        for i, conv in enumerate(self.convs):
            y = F.relu(conv(x))  # (B, C, T)
            x = y if i == 0 else x + y  # residual from the second layer on
        pooled = torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)  # (B, 2C)
        return self.head(self.drop(pooled))  # (B, num_classes)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
