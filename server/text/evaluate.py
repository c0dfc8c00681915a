"""Held-out quality of the character LSTM in bits per character."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from server.text.model import CharLSTM
from server.text.vocab import START_TEXT, Vocabulary

LN2 = math.log(2.0)


@torch.no_grad()
def total_bits(model: CharLSTM, vocab: Vocabulary, text: str, chunk: int = 4096) -> float:
    """Bits to encode every character of ``text`` (state carried from start to end).

    The model first reads ``START_TEXT``, so the first character is scored as
    well; a character outside the vocabulary costs what the unknown symbol gets.
    """
    device = model.head.weight.device
    ids = vocab.encode_tensor(START_TEXT + text).to(device)
    state = model.init_state(1)
    nats = 0.0
    for start in range(0, len(ids) - 1, chunk):
        x = ids[start : start + chunk][None]  # (1, T)
        y = ids[start + 1 : start + chunk + 1]  # (T,)
        logits, state = model(x[:, : len(y)], state)  # (1, T, V)
        nats += F.cross_entropy(logits[0].float(), y, reduction="sum").item()
    return nats / LN2


def bits_per_char(model: CharLSTM, vocab: Vocabulary, text: str) -> float:
    if not text:
        raise ValueError("cannot score an empty text")
    return total_bits(model, vocab, text) / len(text)


@torch.no_grad()
def streamed_bits_per_char(model: CharLSTM, ids: torch.Tensor, streams: int = 32, chunk: int = 512) -> float:
    """Fast estimate for progress reports: ``ids`` cut into ``streams`` parallel rows."""
    device = model.head.weight.device
    n = (len(ids) - 1) // streams
    x_all = ids[: streams * n].view(streams, n).to(device)  # (S, n)
    y_all = ids[1 : streams * n + 1].view(streams, n).to(device)  # (S, n)
    state = model.init_state(streams)
    nats = 0.0
    for start in range(0, n, chunk):
        logits, state = model(x_all[:, start : start + chunk], state)  # (S, T, V)
        y = y_all[:, start : start + chunk]
        nats += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
    return nats / LN2 / (streams * n)
