"""Keyword spotting on the device: one-second windows of float PCM -> posteriors over the manifest's labels.

``Listener`` slides the window by a hop (250 ms) over a stream, averages the posteriors of the last few windows,
and reports a word when its smoothed posterior passes a threshold, at most one word per refractory time; the same
word again only once its posterior has fallen below half the threshold in between (a word stays in view for
about a second of windows, longer than the refractory time). The
labels ``unknown`` and ``silence`` (and any label starting with ``_``) are background: never reported.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from edge_client.manifest import Model
from edge_client.text import softmax
from server.errors import InvalidArgument, ModelFileError

BACKGROUND = ("unknown", "silence")


def is_background(label: str) -> bool:
    return label in BACKGROUND or label.startswith("_")


class KeywordModel:
    """Runs a KWS model on windows of its input length at its sample rate."""

    def __init__(self, model: Model, unknown_bias: float = 0.0) -> None:
        """``unknown_bias`` is added to the ``unknown`` label's logit: below 0 the model takes more clips for words
        (hears more of them, and takes more other words for them), above 0 fewer."""
        self.model = model
        self.labels = model.labels
        if not self.labels:
            raise ModelFileError(f"model {model.name!r}: the manifest has no labels")
        self.sample_rate = int(model.entry.get("sample_rate", 16000))
        self.window = int(model.runner.inputs[0].shape[-1])
        self.words = [i for i, label in enumerate(self.labels) if not is_background(label)]
        self.shift = np.zeros(len(self.labels))
        if unknown_bias:
            if "unknown" not in self.labels:
                raise InvalidArgument("--unknown-bias", f"model {model.name!r} has no unknown label")
            self.shift[self.labels.index("unknown")] = unknown_bias

    def posteriors(self, window: np.ndarray) -> np.ndarray:
        """(window,) float PCM -> (labels,) probabilities."""
        x = np.asarray(window, dtype=np.float32).reshape(1, self.window)
        (logits,) = self.model.runner(x)[:1]
        return softmax(logits.reshape(-1).astype(np.float64) + self.shift)

    def classify_clip(self, clip: np.ndarray, hop: int) -> tuple[np.ndarray, float]:
        """A clip of any length -> (posteriors of its most word-like window, that window's start in seconds).

        A clip shorter than a window is centred in silence; a longer one is read window by window."""
        return self.classify_stream([clip], hop)

    def classify_stream(self, chunks: Iterable[np.ndarray], hop: int) -> tuple[np.ndarray, float]:
        """:meth:`classify_clip` of the chunks' concatenation, holding no more than a window and a chunk at once."""
        buffer = np.zeros(0, dtype=np.float32)  # the stream from sample ``start`` on
        start, total = 0, 0
        best, best_score, best_at = None, -1.0, 0

        def consider(window: np.ndarray, at: int) -> None:
            nonlocal best, best_score, best_at
            p = self.posteriors(np.pad(window, (0, self.window - len(window))))
            score = float(p[self.words].max()) if self.words else float(p.max())
            if score > best_score:
                best, best_score, best_at = p, score, at

        for chunk in chunks:
            buffer = np.concatenate([buffer, np.asarray(chunk, dtype=np.float32)])
            total += len(chunk)
            # windows start at 0, hop, ...; once the clip is longer than a window, every whole one counts
            while total > self.window and len(buffer) >= self.window:
                consider(buffer[: self.window], start)
                buffer, start = buffer[hop:], start + hop
        if total <= self.window:
            pad = self.window - total
            return self.posteriors(np.pad(buffer, (pad // 2, pad - pad // 2))), 0.0
        if start < total - self.window + hop:  # the last window, cut off by the end and padded with silence
            consider(buffer, start)
        assert best is not None
        return best, best_at / self.sample_rate


@dataclass(frozen=True)
class Detection:
    word: str
    time: float  # seconds from the start of the stream to the end of the window that fired
    score: float  # smoothed posterior

    def to_dict(self) -> dict[str, object]:
        return {"word": self.word, "time": round(self.time, 3), "score": round(self.score, 4)}


@dataclass
class ListenOptions:
    hop_s: float = 0.25
    smooth: int = 3  # windows averaged
    threshold: float = 0.6
    refractory_s: float = 1.0

    def validate(self) -> None:
        if not 0.01 <= self.hop_s <= 1.0:
            raise InvalidArgument("hop", f"must be in [0.01, 1] seconds, got {self.hop_s}")
        if not 1 <= self.smooth <= 20:
            raise InvalidArgument("smooth", f"must be 1..20 windows, got {self.smooth}")
        if not 0.0 < self.threshold <= 1.0:
            raise InvalidArgument("threshold", f"must be in (0, 1], got {self.threshold}")
        if not 0.0 <= self.refractory_s <= 10.0:
            raise InvalidArgument("refractory", f"must be 0..10 seconds, got {self.refractory_s}")


class Listener:
    """Feed chunks of PCM at the model's rate; yields a Detection per spotted word."""

    def __init__(self, kws: KeywordModel, options: ListenOptions) -> None:
        options.validate()
        self.kws = kws
        self.options = options
        self.hop = max(1, round(options.hop_s * kws.sample_rate))
        self.buffer = np.zeros(kws.window, dtype=np.float32)  # the stream starts after a window of silence
        self.pending = np.zeros(0, dtype=np.float32)
        self.recent: deque[np.ndarray] = deque(maxlen=options.smooth)
        self.samples = 0  # stream samples consumed into windows
        self.last_fired = -np.inf
        self.last_word = -1
        self.rearmed = True  # the last word's posterior fell below half the threshold since it fired
        self.windows = 0

    def push(self, chunk: np.ndarray) -> Iterator[Detection]:
        self.pending = np.concatenate([self.pending, np.asarray(chunk, dtype=np.float32)])
        while len(self.pending) >= self.hop:
            hop, self.pending = self.pending[: self.hop], self.pending[self.hop :]
            self.buffer = np.concatenate([self.buffer[self.hop :], hop])
            self.samples += self.hop
            found = self._window()
            if found is not None:
                yield found

    def finish(self) -> Iterator[Detection]:
        """The end of the stream: slide on through a window of silence so that a last word is heard whole."""
        tail = np.zeros(self.kws.window + (-len(self.pending)) % self.hop, dtype=np.float32)
        yield from self.push(tail)

    def _window(self) -> Detection | None:
        self.windows += 1
        self.recent.append(self.kws.posteriors(self.buffer))
        smoothed = np.mean(self.recent, axis=0)
        words = self.kws.words
        if not words:
            return None
        best = words[int(np.argmax(smoothed[words]))]
        now = self.samples / self.kws.sample_rate
        if self.last_word >= 0 and smoothed[self.last_word] < self.options.threshold / 2:
            self.rearmed = True
        if smoothed[best] < self.options.threshold or now - self.last_fired < self.options.refractory_s:
            return None
        if best == self.last_word and not self.rearmed:
            return None
        self.last_fired, self.last_word, self.rearmed = now, best, False
        return Detection(self.kws.labels[best], now, float(smoothed[best]))

    def run(self, chunks: Iterable[np.ndarray]) -> Iterator[Detection]:
        for chunk in chunks:
            yield from self.push(chunk)
        yield from self.finish()
