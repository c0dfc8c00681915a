"""Windows of 256 characters, real or generated, as id arrays for the text discriminator.

Training windows are drawn afresh each batch at random offsets of the training plays and of the training sample
streams (temperatures 0.6 to 1.2, their own seeds). The test set is fixed: evenly spaced windows of the held-out
plays and of fresh sample streams (other temperatures, other seeds), as many of each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.errors import InvalidArgument
from server.text.vocab import Vocabulary
from server.textdisc.samples import Sample, SampleSet

LABELS = ("real", "generated")
WINDOW = 256
BURN_IN = 64  # the first characters of a stream follow the start text closely; windows begin after them

TRAIN_SAMPLES = SampleSet(temperatures=(0.6, 0.8, 1.0, 1.2), streams=192, length=2_560, seed=1)
TEST_SAMPLES = SampleSet(temperatures=(0.7, 0.9, 1.1), streams=32, length=BURN_IN + 9 * WINDOW, seed=2)


@dataclass(frozen=True)
class WindowSet:
    ids: np.ndarray  # (N, WINDOW) int32
    labels: np.ndarray  # (N,) int64: 0 real, 1 generated
    groups: list[str]  # (N,) where each window came from: "real", "T=0.7", ...


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


def test_windows(vocab: Vocabulary, held_out: str, samples: list[Sample]) -> WindowSet:
    """Generated windows: the non-overlapping windows of each stream after its burn-in; as many real windows,
    evenly spaced over the held-out text."""
    fake, groups = [], []
    for sample in samples:
        ids = encode(vocab, sample.text[BURN_IN:])
        for s in range(0, len(ids) - WINDOW + 1, WINDOW):
            fake.append(ids[s : s + WINDOW])
            groups.append(f"T={sample.temperature:g}")
    real = windows(vocab, held_out, len(fake))
    ids = np.concatenate([real, np.stack(fake)]).astype(np.int32)
    labels = np.concatenate([np.zeros(len(real)), np.ones(len(fake))]).astype(np.int64)
    return WindowSet(ids, labels, ["real"] * len(real) + groups)


class WindowSampler:
    """Random training batches: half real windows from the training text, half from the training streams."""

    def __init__(self, vocab: Vocabulary, train_text: str, samples: list[Sample], seed: int) -> None:
        self.real = encode(vocab, train_text)
        self.fake = [encode(vocab, s.text[BURN_IN:]) for s in samples]
        if len(self.real) < WINDOW or any(len(f) < WINDOW for f in self.fake) or not self.fake:
            raise InvalidArgument("samples", f"every text must hold at least {WINDOW} characters")
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids (size, WINDOW) int32 and labels (size,) int64, real and generated shuffled together."""
        n_real = size // 2
        starts = self.rng.integers(0, len(self.real) - WINDOW + 1, n_real)
        rows = [self.real[s : s + WINDOW] for s in starts]
        for k in self.rng.integers(0, len(self.fake), size - n_real):
            stream = self.fake[k]
            s = int(self.rng.integers(0, len(stream) - WINDOW + 1))
            rows.append(stream[s : s + WINDOW])
        labels = np.concatenate([np.zeros(n_real), np.ones(size - n_real)]).astype(np.int64)
        order = self.rng.permutation(size)
        return np.stack(rows)[order], labels[order]
