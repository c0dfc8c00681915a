"""Character-level LSTM with explicit recurrent state.

The same ``forward(x, state) -> (logits, state)`` serves training (long
sequences), streaming (one token at a time), batching of many streams and
export to stateless graphs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from server.errors import InvalidArgument

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (layers, B, hidden)


@dataclass(frozen=True)
class CharLSTMConfig:
    vocab_size: int
    embed_dim: int = 64
    hidden_size: int = 512
    num_layers: int = 2
    dropout: float = 0.0  # between LSTM layers (and on the output unless ``output_dropout`` is given)
    # Fields added later default to what older checkpoints did, so their configs still rebuild them.
    embed_dropout: float = 0.0  # on the embedding, before the first layer
    output_dropout: float | None = None  # on the last layer's output, before the head; None: ``dropout``

    def __post_init__(self) -> None:
        """Raise :class:`InvalidArgument` naming the first field out of range (the vocabulary is the corpus's)."""
        for name in ("hidden_size", "num_layers", "embed_dim"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("dropout", "embed_dropout", "output_dropout"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise InvalidArgument(name, f"must be in [0, 1), got {value}")

    @property
    def head_dropout(self) -> float:
        """The dropout on the last layer's output."""
        return self.dropout if self.output_dropout is None else self.output_dropout

    def to_dict(self) -> dict[str, int | float | None]:
        return asdict(self)


class CharLSTM(nn.Module):
    def __init__(self, config: CharLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.embed_drop = nn.Dropout(config.embed_dropout)
        self.lstm = nn.LSTM(
            config.embed_dim,
            config.hidden_size,
            config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def init_state(self, batch: int, device: torch.device | str | None = None) -> State:
        """Zero state for ``batch`` independent streams."""
        device = device if device is not None else self.head.weight.device
        shape = (self.config.num_layers, batch, self.config.hidden_size)
        return (torch.zeros(shape, device=device), torch.zeros(shape, device=device))

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Token ids ``x`` (B, T) and state -> logits (B, T, V) and the state after ``x``."""
        emb = self.embed_drop(self.embed(x))  # (B, T, E)
        out, state = self.lstm(emb, state)  # (B, T, H)
        logits = self.head(self.drop(out))  # (B, T, V)
        return logits, state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
