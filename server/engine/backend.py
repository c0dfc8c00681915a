"""What runs the model for the text engine: a prefill pass and a batched advance of several tokens.

The engine schedules; a backend computes. The engine only calls the methods of :class:`TextBackend` and treats
the rows (recurrent state plus each row's next-token scores) as opaque, so a faster backend can replace another
without touching the scheduling. Every backend is built from the same checkpoint and gives the logits of eager
PyTorch (to float rounding):

- ``fast`` (the default on the CPU): the compiled step of ``server/text/fast.py``, sampling included;
- ``fused``: :class:`FusedStep`, a handful of torch matrix products per token (the choice on CUDA);
- ``eager``: ``nn.LSTM`` itself, the reference.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from server.errors import InvalidArgument
from server.sampling import RowRules, sample_tokens
from server.text.fast import FastLSTM, FastState
from server.text.model import CharLSTM, State
from server.text.step import FusedStep


class TextBackend(Protocol):
    """Batched recurrent text model over rows of opaque state, one row per stream."""

    vocab_size: int
    # What the engine times a step with to size its bursts: the calling thread's CPU time on the CPU, so that a
    # step's cost reads the same however busy the cores are with the transports; wall time on CUDA.
    clock: Callable[[], float]

    def zero_state(self, batch: int) -> Any: ...

    def prefill(self, sequences: Sequence[Sequence[int]], state: Any) -> Any:
        """Read each sequence (non-empty, lengths may differ) from its row of ``state`` in one pass; the rows
        after it, holding the scores of the token that follows."""
        ...

    def advance(self, state: Any, rows: Sequence[int], rules: Sequence[RowRules], steps: int) -> list[list[int]]:
        """Draw up to ``steps`` tokens for each of ``rows`` under its rules, reading each one in; each row stops
        early when its budget runs out or a stop sequence completes (the token that completes it is read, so the
        row's state holds it). Updates ``state`` in place and each rule's random source; returns each row's
        tokens."""
        ...

    def select(self, state: Any, rows: Sequence[int]) -> Any: ...

    def concat(self, states: Sequence[Any]) -> Any: ...

    def dump_row(self, state: Any) -> RowArrays:
        """One row's state as float32 arrays (for a session kept outside this process); exact."""
        ...

    def load_row(self, arrays: RowArrays) -> Any:
        """The row :meth:`dump_row` gave, as this backend's state of one row."""
        ...

    def close(self) -> None:
        """Release threads; the backend is not used afterwards."""
        ...


@dataclass(frozen=True)
class RowArrays:
    """One row of recurrent state, whatever the backend: what a shared session store keeps."""

    h: np.ndarray  # (L, 1, H) float32
    c: np.ndarray  # (L, 1, H) float32
    logits: np.ndarray  # (1, V) float32: the next token's scores


@dataclass
class TorchRows:
    h: torch.Tensor  # (L, B, H)
    c: torch.Tensor  # (L, B, H)
    logits: torch.Tensor  # (B, V) float32 on the CPU: each row's next-token scores


class EagerLSTMBackend:
    """The checkpoint's :class:`CharLSTM` run by eager PyTorch (the reference every backend must match)."""

    def __init__(self, model: CharLSTM) -> None:
        self.model = model.eval()
        self.device = model.head.weight.device
        self.vocab_size = model.config.vocab_size
        self.clock = time.perf_counter if self.device.type == "cuda" else time.thread_time

    def zero_state(self, batch: int) -> TorchRows:
        h, c = self.model.init_state(batch, self.device)
        return TorchRows(h, c, torch.zeros(batch, self.vocab_size))

    @torch.no_grad()
    def prefill(self, sequences: Sequence[Sequence[int]], state: TorchRows) -> TorchRows:
        model = self.model
        seqs = [torch.tensor(list(s), dtype=torch.long, device=self.device) for s in sequences]
        packed = nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
        emb = nn.utils.rnn.PackedSequence(
            model.embed(packed.data),  # (sum T, E)
            packed.batch_sizes,
            packed.sorted_indices,
            packed.unsorted_indices,
        )
        _, (h, c) = model.lstm(emb, (state.h, state.c))  # each (L, N, H), rows in the order of ``sequences``
        logits = model.head(h[-1])  # (N, V): the top layer's output after each sequence's last token
        return TorchRows(h, c, logits.float().cpu())

    @torch.no_grad()
    def step(self, tokens: Sequence[int], state: State) -> tuple[torch.Tensor, State]:
        """Read one token per row: logits (B, V) on the CPU and the new state."""
        x = torch.tensor(list(tokens), dtype=torch.long, device=self.device)[:, None]  # (B, 1)
        logits, state = self.model(x, state)  # (B, 1, V)
        return logits[:, -1].float().cpu(), state

    def advance(self, state: TorchRows, rows: Sequence[int], rules: Sequence[RowRules], steps: int) -> list[list[int]]:
        tokens: list[list[int]] = [[] for _ in rows]
        live = [i for i in range(len(rows)) if rules[i].budget > 0]
        for _ in range(steps):
            if not live:
                break
            index = [rows[i] for i in live]
            scores = state.logits[index].clone()  # (R, V)
            scores[:, 0] = -torch.inf  # never emit the unknown symbol
            drawn = sample_tokens(scores.numpy(), [rules[i].params for i in live], [rules[i].random for i in live])
            for i, token in zip(live, drawn, strict=True):
                tokens[i].append(token)
            if len(index) == len(state.logits) and index == list(range(len(index))):  # the whole batch, in order
                state.logits, (state.h, state.c) = self.step(drawn, (state.h, state.c))
            else:
                where = torch.tensor(index, dtype=torch.long, device=self.device)
                logits, (h, c) = self.step(drawn, (state.h.index_select(1, where), state.c.index_select(1, where)))
                state.h.index_copy_(1, where, h)
                state.c.index_copy_(1, where, c)
                state.logits[index] = logits
            live = [
                i
                for i in live
                if len(tokens[i]) < rules[i].budget and not rules[i].stopped((*rules[i].recent, *tokens[i]))
            ]
        return tokens

    def select(self, state: TorchRows, rows: Sequence[int]) -> TorchRows:
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        return TorchRows(state.h.index_select(1, index), state.c.index_select(1, index), state.logits[list(rows)])

    def close(self) -> None:
        pass

    def dump_row(self, state: TorchRows) -> RowArrays:
        def arr(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().float().cpu().numpy())

        return RowArrays(arr(state.h), arr(state.c), arr(state.logits))

    def load_row(self, arrays: RowArrays) -> TorchRows:
        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(a, dtype=np.float32)).to(self.device)

        return TorchRows(tensor(arrays.h), tensor(arrays.c), torch.from_numpy(np.array(arrays.logits, np.float32)))

    def concat(self, states: Sequence[TorchRows]) -> TorchRows:
        if len(states) == 1:
            return states[0]
        return TorchRows(
            torch.cat([s.h for s in states], dim=1),
            torch.cat([s.c for s in states], dim=1),
            torch.cat([s.logits for s in states]),
        )


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


class FastLSTMBackend:
    """The compiled CPU step (``server/text/fast.py``): prompts, sampling and steps in compiled code, a batch split
    across ``threads`` cores."""

    def __init__(self, model: CharLSTM, threads: int | None = None) -> None:
        if model.head.weight.device.type != "cpu":
            raise InvalidArgument("--text-backend", "fast runs on the CPU; use fused (or auto) with a CUDA device")
        self.fast = FastLSTM(model, threads or min(2, os.cpu_count() or 1))
        self.vocab_size = self.fast.vocab_size
        self.clock = time.thread_time
        self.zero_state = self.fast.zero_state
        self.prefill = self.fast.prefill
        self.advance = self.fast.advance
        self.select = self.fast.select
        self.concat = self.fast.concat
        self.close = self.fast.close
        self.warm_up()

    def dump_row(self, state: FastState) -> RowArrays:
        return RowArrays(state.h.copy(), state.c.copy(), state.logits.copy())

    def load_row(self, arrays: RowArrays) -> FastState:
        def own(a: np.ndarray) -> np.ndarray:
            return np.array(a, dtype=np.float32, order="C")  # a writable copy: rows are updated in place

        return FastState(own(arrays.h), own(arrays.c), own(arrays.logits))

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) every kernel now rather than in the first request."""
        from server.sampling import SamplingParams, StreamRandom

        state: FastState = self.fast.prefill([[1, 2]], self.fast.zero_state(1))
        rules = RowRules(SamplingParams(temperature=1.0, top_k=2, top_p=0.9), StreamRandom(0), 2, ((1, 2),), (1,))
        self.fast.advance(state, [0], [rules], 2)


BACKENDS: dict[str, Any] = {"fast": FastLSTMBackend, "fused": FusedLSTMBackend, "eager": EagerLSTMBackend}


def make_backend(name: str, model: CharLSTM, threads: int | None = None) -> TextBackend:
    """The backend ``name`` (auto: fast on the CPU, fused on CUDA) for ``model``."""
    if name == "auto":
        name = "fast" if model.head.weight.device.type == "cpu" else "fused"
    if name == "fast":
        return FastLSTMBackend(model, threads)
    backend: TextBackend = BACKENDS[name](model)
    return backend
