"""Token-by-token generation for one stream (the command line's ``sample``).

The serving engine batches many streams; this is the plain loop it must agree with. Both read the prompt with
one ``nn.LSTM`` pass and take each further token through :class:`FusedStep`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from server.sampling import SamplingParams, StreamRandom, sample_token
from server.text.model import CharLSTM, State
from server.text.step import FusedStep
from server.text.vocab import START_TEXT, Vocabulary


class StopMatcher:
    """Holds back text that may be the start of a stop sequence spanning several tokens."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.pending = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """Text safe to emit now, and whether a stop sequence was completed (it is not emitted)."""
        if not self.stops:
            return piece, False
        self.pending += piece
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending = self.pending[:cut], ""
            return out, True
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0)
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@torch.no_grad()
def prefill(model: CharLSTM, vocab: Vocabulary, text: str, state: State | None = None) -> tuple[torch.Tensor, State]:
    """Read ``text`` in one sequence pass; returns the last logits (V,) and the state."""
    device = model.head.weight.device
    if state is None:
        state = model.init_state(1, device)
        text = START_TEXT + text
    ids = vocab.encode_tensor(text).to(device)[None]  # (1, T)
    logits, state = model(ids, state)  # (1, T, V)
    return logits[0, -1], state


class TextGeneration:
    """Iterate for text pieces; ``finish_reason`` is "stop" or "length" once exhausted."""

    def __init__(self, model: CharLSTM, vocab: Vocabulary, prompt: str, params: SamplingParams) -> None:
        self.model, self.vocab, self.params = model, vocab, params
        self.prompt = prompt
        self.finish_reason: str | None = None
        self.tokens = 0

    @torch.no_grad()
    def __iter__(self) -> Iterator[str]:
        device = self.model.head.weight.device
        step = FusedStep(self.model)
        source = StreamRandom(self.params.seed)
        logits, state = prefill(self.model, self.vocab, self.prompt)
        stops = StopMatcher(self.params.stop)
        for _ in range(self.params.max_tokens):
            logits[0] = -torch.inf  # never emit the unknown symbol
            token = sample_token(logits.numpy(), self.params, source)
            self.tokens += 1
            out, stopped = stops.feed(self.vocab.chars[token])
            if out:
                yield out
            if stopped:
                self.finish_reason = "stop"
                return
            next_logits, state = step(torch.tensor([token], device=device), state)  # (1, V)
            logits = next_logits[0]
        tail = stops.flush()
        if tail:
            yield tail
        self.finish_reason = "length"
