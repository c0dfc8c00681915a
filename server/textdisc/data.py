"""Windows of 256 characters, real or generated, as id arrays for the text discriminator.

Training windows are drawn afresh each batch at random offsets of the training plays and of the training sample
streams (temperatures 0.5 to 1.3, plain, top-k and top-p sampling, their own seeds, prompted with training text).
The test set is fixed: evenly spaced windows of the held-out plays and the non-overlapping windows of fresh sample
streams (other temperatures, other seeds, other top-k and top-p values, prompted with held-out text), as many of
each. Generated windows never hold a prompt character: a sample's text is what the model sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.errors import InvalidArgument
from server.text.vocab import Vocabulary
from server.textdisc.sample_sets import BURN_IN, WINDOW
from server.textdisc.sample_sets import PROMPT as PROMPT  # the data's settings: read from here too
from server.textdisc.sample_sets import TEST_SAMPLES as TEST_SAMPLES
from server.textdisc.sample_sets import TRAIN_SAMPLES as TRAIN_SAMPLES
from server.textdisc.sample_sets import split_held_out as split_held_out
from server.textdisc.samples import Sample

LABELS = ("real", "generated")
CHECK_EVERY = 20  # one training stream in 20 is held back to check for memorisation


@dataclass(frozen=True)
class WindowSet:
    ids: np.ndarray  # (N, WINDOW) int32
    labels: np.ndarray  # (N,) int64: 0 real, 1 generated
    groups: list[str]  # (N,) where each window came from: "real", "T=0.7", "T=0.7 top-p 0.95", ...


def encode(vocab: Vocabulary, text: str) -> np.ndarray:
    return np.asarray(vocab.encode(text), dtype=np.int32)


def encode_window(vocab: Vocabulary, text: str) -> np.ndarray:
    """One window (WINDOW,) int32: ``text``'s last WINDOW characters, left-padded with newlines when shorter."""
    if not text:
        raise InvalidArgument("text", "an empty text has no window to classify")
    text = text[-WINDOW:].rjust(WINDOW, "\n")
    return encode(vocab, text)


def windows(vocab: Vocabulary, text: str, count: int) -> np.ndarray:
    """``count`` evenly spaced windows (count, WINDOW) of ``text``."""
    if len(text) < WINDOW:
        raise InvalidArgument("text", f"needs at least {WINDOW} characters, got {len(text)}")
    ids = encode(vocab, text)
    starts = np.linspace(0, len(ids) - WINDOW, count).astype(np.int64)
    return np.stack([ids[s : s + WINDOW] for s in starts])


def evenly(rows: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` rows, evenly spaced."""
    return rows[np.unique(np.linspace(0, len(rows) - 1, count).astype(np.int64))]


def stream_windows(vocab: Vocabulary, samples: list[Sample]) -> tuple[np.ndarray, list[str]]:
    """The non-overlapping windows (N, WINDOW) of each stream after its burn-in, and each one's group."""
    fake, groups = [], []
    for sample in samples:
        ids = encode(vocab, sample.text[BURN_IN:])
        for s in range(0, len(ids) - WINDOW + 1, WINDOW):
            fake.append(ids[s : s + WINDOW])
            groups.append(sample.group)
    if not fake:
        raise InvalidArgument("samples", f"no stream holds {BURN_IN} + {WINDOW} characters")
    return np.stack(fake), groups


def test_windows(vocab: Vocabulary, held_out: str, samples: list[Sample]) -> WindowSet:
    """Generated windows: the non-overlapping windows of each stream after its burn-in; as many real windows,
    evenly spaced over the held-out text."""
    fake, groups = stream_windows(vocab, samples)
    real = windows(vocab, held_out, len(fake))
    ids = np.concatenate([real, fake]).astype(np.int32)
    labels = np.concatenate([np.zeros(len(real)), np.ones(len(fake))]).astype(np.int64)
    return WindowSet(ids, labels, ["real"] * len(real) + groups)


class WindowSampler:
    """Random training batches: half real windows from the training text, half from the training streams.

    ``spans`` (start, end) of the training text's documents (:attr:`server.data.shakespeare.Corpus.spans`), when
    the real text is the training documents: each batch then names the document of each real window, so that the
    lexicon can leave that document out (:meth:`server.textdisc.model.TextDiscriminator.word_view`)."""

    def __init__(
        self,
        vocab: Vocabulary,
        train_text: str,
        samples: list[Sample],
        seed: int,
        spans: tuple[tuple[int, int], ...] = (),
    ) -> None:
        self.real = encode(vocab, train_text)
        self.fake = [encode(vocab, s.text[BURN_IN:]) for s in samples]
        if len(self.real) < WINDOW or any(len(f) < WINDOW for f in self.fake) or not self.fake:
            raise InvalidArgument("samples", f"every text must hold at least {WINDOW} characters")
        self.starts = np.array([start for start, _ in spans], dtype=np.int64)
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ids (size, WINDOW) int32, labels (size,) int64 and documents (size,) int64: the training document a real
        window starts in, -1 for a generated one (and for every window without ``spans``); shuffled together."""
        n_real = size // 2
        starts = self.rng.integers(0, len(self.real) - WINDOW + 1, n_real)
        rows = [self.real[s : s + WINDOW] for s in starts]
        for k in self.rng.integers(0, len(self.fake), size - n_real):
            stream = self.fake[k]
            s = int(self.rng.integers(0, len(stream) - WINDOW + 1))
            rows.append(stream[s : s + WINDOW])
        labels = np.concatenate([np.zeros(n_real), np.ones(size - n_real)]).astype(np.int64)
        documents = np.full(size, -1, dtype=np.int64)
        if len(self.starts):
            documents[:n_real] = np.searchsorted(self.starts, starts, side="right") - 1
        order = self.rng.permutation(size)
        return np.stack(rows)[order], labels[order], documents[order]
