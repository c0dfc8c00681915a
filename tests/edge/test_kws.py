"""Keyword spotting over a clip: the streamed reading gives exactly the whole clip's answer."""

from __future__ import annotations

import numpy as np
import pytest

from edge_client.kws import KeywordModel


class _Spotter(KeywordModel):
    """A keyword model whose posteriors are a fixed function of the window (no interpreter): three labels, the
    last a word scored by the window's energy in its second half."""

    def __init__(self, window: int) -> None:
        self.labels = ["silence", "unknown", "seven"]
        self.sample_rate = window
        self.window = window
        self.words = [2]

    def posteriors(self, window: np.ndarray) -> np.ndarray:
        assert window.shape == (self.window,)
        energy = float(np.square(window[self.window // 2 :]).sum())
        return np.array([1.0, 1.0, energy]) / (2.0 + energy)


def _reference(spotter: KeywordModel, clip: np.ndarray, hop: int) -> tuple[np.ndarray, float]:
    """The whole clip at once: centred in silence when no longer than a window, else windows from 0 by ``hop``
    while one starts before the end's last window + hop (the last padded), the first most word-like one kept."""
    if len(clip) <= spotter.window:
        pad = spotter.window - len(clip)
        return spotter.posteriors(np.pad(clip, (pad // 2, pad - pad // 2))), 0.0
    starts = range(0, len(clip) - spotter.window + hop, hop)
    padded = np.pad(clip, (0, spotter.window))
    windows = [padded[s : s + spotter.window] for s in starts]
    scores = [float(spotter.posteriors(w)[spotter.words].max()) for w in windows]
    best = int(np.argmax(scores))
    return spotter.posteriors(windows[best]), starts[best] / spotter.sample_rate


@pytest.mark.parametrize("length", [1, 99, 100, 101, 149, 150, 151, 333, 1000])
@pytest.mark.parametrize("chunk", [1, 7, 100, 5000])
def test_streamed_clip_gives_the_whole_clips_window(length: int, chunk: int) -> None:
    """classify_stream over chunks of any size picks the window, and the posteriors, of the whole clip read at once
    (centred in silence when short, the last window padded when cut off)."""
    spotter = _Spotter(window=100)
    clip = np.random.default_rng(length).normal(0, 1, length).astype(np.float32)
    whole_p, whole_at = _reference(spotter, clip, hop=25)
    assert spotter.classify_clip(clip, hop=25)[1] == whole_at
    p, at = spotter.classify_stream((clip[i : i + chunk] for i in range(0, length, chunk)), hop=25)
    assert at == whole_at and np.array_equal(p, whole_p)
