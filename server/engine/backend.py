"""What runs the model for the text engine: a prefill pass and one batched step.

The engine schedules; a backend computes. The engine only calls the methods of :class:`TextBackend` and treats
the recurrent state as opaque, so a faster backend (a fused or compiled LSTM step, another runtime) can replace
:class:`EagerLSTMBackend` without touching the scheduling. Every backend is built from the same checkpoint and
must give the logits of eager PyTorch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from server.text.model import CharLSTM, State
from server.text.step import FusedStep


class TextBackend(Protocol):
    """Batched recurrent text model. Rows of a state are streams; logits come back as float32 on the CPU."""

    vocab_size: int

    def zero_state(self, batch: int) -> State: ...

    def prefill(self, sequences: Sequence[Sequence[int]], state: State) -> tuple[torch.Tensor, State]:
        """Read each sequence (non-empty, lengths may differ) from its row of ``state`` in one pass;
        the logits after each one's last token (N, V) and the state after it."""
        ...

    def step(self, tokens: Sequence[int], state: State) -> tuple[torch.Tensor, State]:
        """Read one token per row: logits (B, V) and the new state."""
        ...

    def select(self, state: State, rows: Sequence[int]) -> State: ...

    def concat(self, states: Sequence[State]) -> State: ...

    def assign(self, state: State, rows: Sequence[int], part: State) -> State:
        """``state`` with ``rows`` replaced by ``part`` (may reuse ``state``'s storage)."""
        ...


class EagerLSTMBackend:
    """The checkpoint's :class:`CharLSTM` run by eager PyTorch (the reference every backend must match)."""

    def __init__(self, model: CharLSTM) -> None:
        self.model = model.eval()
        self.device = model.head.weight.device
        self.vocab_size = model.config.vocab_size

    def zero_state(self, batch: int) -> State:
        return self.model.init_state(batch, self.device)

    @torch.no_grad()
    def prefill(self, sequences: Sequence[Sequence[int]], state: State) -> tuple[torch.Tensor, State]:
        model = self.model
        seqs = [torch.tensor(list(s), dtype=torch.long, device=self.device) for s in sequences]
        packed = nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
        emb = nn.utils.rnn.PackedSequence(
            model.embed(packed.data),  # (sum T, E)
            packed.batch_sizes,
            packed.sorted_indices,
            packed.unsorted_indices,
        )
        _, (h, c) = model.lstm(emb, state)  # each (L, N, H), rows in the order of ``sequences``
        logits = model.head(h[-1])  # (N, V): the top layer's output after each sequence's last token
        return logits.float().cpu(), (h, c)

    @torch.no_grad()
    def step(self, tokens: Sequence[int], state: State) -> tuple[torch.Tensor, State]:
        x = torch.tensor(list(tokens), dtype=torch.long, device=self.device)[:, None]  # (B, 1)
        logits, state = self.model(x, state)  # (B, 1, V)
        return logits[:, -1].float().cpu(), state

    def select(self, state: State, rows: Sequence[int]) -> State:
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        return (state[0].index_select(1, index), state[1].index_select(1, index))

    def concat(self, states: Sequence[State]) -> State:
        return (torch.cat([s[0] for s in states], dim=1), torch.cat([s[1] for s in states], dim=1))

    def assign(self, state: State, rows: Sequence[int], part: State) -> State:
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        state[0].index_copy_(1, index, part[0])
        state[1].index_copy_(1, index, part[1])
        return state


class FusedLSTMBackend(EagerLSTMBackend):
    """Prefill as the eager backend (one packed ``nn.LSTM`` pass); each token through :class:`FusedStep`,
    which derives its weights from the same model and cuts the per-call overhead of ``nn.LSTM``."""

    def __init__(self, model: CharLSTM) -> None:
        super().__init__(model)
        self.fused = FusedStep(self.model)

    @torch.no_grad()
    def step(self, tokens: Sequence[int], state: State) -> tuple[torch.Tensor, State]:
        x = torch.tensor(list(tokens), dtype=torch.long, device=self.device)  # (B,)
        logits, state = self.fused(x, state)  # (B, V)
        return logits.float().cpu(), state


BACKENDS: dict[str, type[EagerLSTMBackend]] = {"fused": FusedLSTMBackend, "eager": EagerLSTMBackend}
