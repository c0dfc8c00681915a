"""Text on the device: a text discriminator's label, and offline generation with an exported one-token step.

The step (``text_step``, ``text_small_step``) is the character LSTM as ``(token, h, c) -> (logits, h, c)``; the
generator keeps the state, reads ``start_text`` first, then every character, and samples the next one with a
temperature and top-k like the server (the unknown symbol never sampled). A chat turn is written in the corpus's
dialogue form, ``"{speaker}.\\n{message}\\n\\n{persona}.\\n"``, and the reply ends at the blank line that ends the
persona's turn, as on the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edge_client.manifest import Model
from server.errors import InvalidArgument, ModelFileError

UNKNOWN = "\ufffd"
TURN_END = "\n\n"


def _vocabulary(model: Model) -> list[str]:
    vocab = model.entry.get("vocabulary")
    if not isinstance(vocab, list) or not vocab:
        raise ModelFileError(f"model {model.name!r}: the manifest has no vocabulary")
    return [str(c) for c in vocab]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Verdict:
    label: str
    score: float
    scores: dict[str, float]


class TextClassifier:
    """A text discriminator: the text's last ``window`` characters as ids by the manifest's vocabulary (0, or
    ``unknown_id``, for any other character), left-padded with the id of a newline (or ``pad_id``) when shorter,
    as ``server.textdisc.data.encode_window`` does."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.vocab = _vocabulary(model)
        self.index = {c: i for i, c in enumerate(self.vocab)}
        entry = model.entry
        self.unknown_id = int(entry.get("unknown_id", 0))
        self.pad_id = int(entry.get("pad_id", self.index.get("\n", 0)))
        self.length = int(entry.get("window", model.runner.inputs[0].shape[-1]))
        if not model.labels:
            raise ModelFileError(f"model {model.name!r}: the manifest has no labels")

    def encode(self, text: str) -> np.ndarray:
        ids = [self.index.get(c, self.unknown_id) for c in text[-self.length :]]
        ids = [self.pad_id] * (self.length - len(ids)) + ids
        return np.asarray(ids, dtype=np.int32)[None, :]  # (1, window)

    def classify(self, text: str) -> Verdict:
        if not text.strip():
            raise InvalidArgument("text", "empty text; give some text (or - to read it from standard input)")
        (logits,) = self.model.runner(self.encode(text))[:1]
        p = softmax(logits.reshape(-1).astype(np.float64))
        labels = self.model.labels
        best = int(p.argmax())
        return Verdict(labels[best], float(p[best]), {label: float(v) for label, v in zip(labels, p, strict=True)})


class Generator:
    """Offline generation with an exported one-token step (the state stays here between calls)."""

    def __init__(self, model: Model, seed: int | None = None) -> None:
        self.model = model
        self.vocab = _vocabulary(model)
        self.index = {c: i for i, c in enumerate(self.vocab)}
        entry = model.entry
        shapes = {t.name: t.shape for t in model.runner.inputs}
        self.state_shape = tuple(shapes.get("h", [entry.get("layers", 1), 1, entry.get("hidden_size", 1)]))
        self.start_text = str(entry.get("start_text", "\n"))
        self.rng = np.random.default_rng(seed)
        self.turn_open = False  # a chat reply ended by max_tokens, not by its blank line
        self.tail = ""  # the last characters the model read
        self.stopped = False
        self.mask = np.zeros(len(self.vocab), dtype=np.float64)
        if self.vocab[0] == UNKNOWN:
            self.mask[0] = -np.inf
        self.reset()

    def reset(self) -> None:
        self.h = np.zeros(self.state_shape, dtype=np.float32)
        self.c = np.zeros(self.state_shape, dtype=np.float32)
        self.logits = np.zeros(len(self.vocab), dtype=np.float64)
        self.read(self.start_text)

    def _step(self, token: int) -> None:
        logits, self.h, self.c = self.model.runner(np.asarray([token], dtype=np.int32), self.h, self.c)
        self.tail = (self.tail + self.vocab[token])[-len(TURN_END) :]
        self.logits = logits.reshape(-1).astype(np.float64)

    def read(self, text: str) -> int:
        """Feed ``text``; returns the number of tokens read."""
        for ch in text:
            self._step(self.index.get(ch, 0))
        return len(text)

    def sample(self, temperature: float = 0.8, top_k: int = 0) -> str:
        logits = self.logits + self.mask
        if temperature <= 0:
            token = int(np.argmax(logits))
        else:
            z = logits / temperature
            if 0 < top_k < len(z):
                kth = np.partition(z, -top_k)[-top_k]
                z = np.where(z < kth, -np.inf, z)
            p = softmax(z)
            token = int(np.searchsorted(np.cumsum(p), self.rng.random() * p.sum(), side="right"))
            token = min(token, len(p) - 1)
        self._step(token)
        return self.vocab[token]

    def generate(
        self, max_tokens: int, temperature: float = 0.8, top_k: int = 0, stop: str | None = None
    ) -> Iterator[str]:
        """Up to ``max_tokens`` characters; stops before ``stop`` (which is read but not yielded)."""
        self.stopped = False
        held = ""
        for _ in range(max_tokens):
            held += self.sample(temperature, top_k)
            if stop and stop in held:
                before = held[: held.index(stop)]
                self.stopped = True
                if before:
                    yield before
                return
            if stop and any(held.endswith(stop[:k]) for k in range(1, len(stop))):
                continue  # may be the start of the stop text: hold it back
            yield held
            held = ""
        if held:
            yield held

    def chat_turn(
        self, message: str, persona: str, speaker: str, max_tokens: int = 256, temperature: float = 0.8, top_k: int = 0
    ) -> Iterator[str]:
        """The persona's reply to ``message``; the state keeps the conversation for the next turn."""
        if not message.strip() or TURN_END in message:
            raise InvalidArgument("message", "must be non-empty and contain no blank line")
        if self.turn_open:  # the last reply stopped at max_tokens: close it with the newlines still missing
            self.read(TURN_END[len(self.tail) - len(self.tail.rstrip("\n")) :])
        self.read(f"{speaker}.\n{message}{TURN_END}{persona}.\n")
        self.turn_open = True
        yield from self.generate(max_tokens, temperature, top_k, stop=TURN_END)
        self.turn_open = not self.stopped
