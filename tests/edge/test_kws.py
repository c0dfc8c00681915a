"""Keyword spotting over a clip: the streamed reading gives exactly the whole clip's answer."""

from __future__ import annotations

import numpy as np
import pytest

from edge_client.kws import KeywordModel
from edge_client.manifest import Manifest
from server.errors import InvalidArgument
from tests.edge.conftest import EdgeFiles


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


def test_unknown_bias_moves_only_the_unknown_logit(edge_files: EdgeFiles) -> None:
    """With --unknown-bias B the exported spotter's log-posteriors move by B on unknown against every other label,
    and not at all between the others."""
    manifest = Manifest(edge_files.export)
    plain = KeywordModel(manifest.open("kws"))
    biased = KeywordModel(manifest.open("kws"), unknown_bias=-1.5)
    window = np.random.default_rng(0).normal(0, 0.1, plain.window).astype(np.float32)
    moved = np.log(biased.posteriors(window)) - np.log(plain.posteriors(window))
    unknown = plain.labels.index("unknown")
    others = np.delete(moved, unknown)
    np.testing.assert_allclose(others - others[0], 0, atol=1e-9)
    assert moved[unknown] - others[0] == pytest.approx(-1.5, abs=1e-9)


def test_the_exported_spotter_raises_a_quiet_word(edge_files: EdgeFiles) -> None:
    """The lift of quiet clips is inside the exported graph: the edge hears a word in digital silence at -50 dBFS
    as at -30 dBFS, the quietest level training draws."""
    kws = KeywordModel(Manifest(edge_files.export).open("kws"))
    window = np.zeros(kws.window, np.float32)
    middle = kws.window // 2
    window[middle - 2_500 : middle + 2_500] = np.random.default_rng(4).normal(0, 1, 5_000)
    window /= np.abs(window).max()
    quiet, at_floor = (kws.posteriors(window * np.float32(10 ** (db / 20))) for db in (-50, -30))
    np.testing.assert_allclose(quiet, at_floor, atol=1e-4)


def test_unknown_bias_needs_an_unknown_label(edge_files: EdgeFiles) -> None:
    """A model without an unknown label refuses a bias, naming the flag."""
    with pytest.raises(InvalidArgument, match="has no unknown label") as refused:
        KeywordModel(Manifest(edge_files.export).open("digits"), unknown_bias=1.0)
    assert refused.value.field == "--unknown-bias"
