"""Held-out quality of the character LSTM in bits per character: static (the weights fixed, the figure reported)
and, as a second labelled figure, with dynamic evaluation (the weights adapted to the text as it is read)."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from server.text.model import CharLSTM
from server.text.options import DynamicEval
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


def dynamic_total_bits(model: CharLSTM, vocab: Vocabulary, text: str, settings: DynamicEval) -> float:
    """Bits to encode every character of ``text`` with dynamic evaluation (:class:`DynamicEval`), the state carried
    from start to end as in :func:`total_bits`. ``model`` itself is left as it was: a copy adapts."""
    adapted = copy.deepcopy(model).eval()  # eval: no dropout; the gradients still flow
    params = [p for p in adapted.parameters() if p.requires_grad]
    trained = [p.detach().clone() for p in params]
    device = adapted.head.weight.device
    ids = vocab.encode_tensor(START_TEXT + text).to(device)
    state = adapted.init_state(1)
    nats = 0.0
    for start in range(0, len(ids) - 1, settings.segment):
        y = ids[start + 1 : start + settings.segment + 1]  # (T,)
        x = ids[start : start + len(y)][None]  # (1, T)
        logits, (h, c) = adapted(x, state)  # (1, T, V)
        loss = F.cross_entropy(logits[0].float(), y, reduction="sum")
        nats += loss.item()
        adapted.zero_grad(set_to_none=True)
        (loss / len(y)).backward()
        with torch.no_grad():
            for p, p0 in zip(params, trained, strict=True):
                if p.grad is not None:
                    p.sub_(settings.lr * p.grad)
                if settings.decay:
                    p.add_(settings.decay * (p0 - p))
        state = (h.detach(), c.detach())
    return nats / LN2
