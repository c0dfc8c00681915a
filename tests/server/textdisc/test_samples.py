"""Sampled streams: reproducible by seed, independent of the batch, cached by generator and sample set."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.text.checkpoint import load_text_model
from server.textdisc.samples import SampleSet, cache_path, generate_streams, load_samples


def test_a_stream_is_the_same_alone_or_in_a_batch(tiny_text_checkpoint: Path) -> None:
    """A (temperature, seed) row gives the same text whatever other rows share its batch."""
    model, vocab, _ = load_text_model(tiny_text_checkpoint)
    alone = generate_streams(model, vocab, [(0.9, 5)], 120)
    batch = generate_streams(model, vocab, [(0.6, 1), (0.9, 5), (1.2, 9)], 120)
    assert batch[1] == alone[0]
    assert len(set(batch)) == 3
    assert all(len(t) == 120 and "\ufffd" not in t for t in batch)


def test_samples_are_cached(tiny_text_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second load reads the cache file named by the generator's hash and the set."""
    monkeypatch.setenv("ANTIPHON_CACHE", str(tmp_path))
    sample_set = SampleSet((0.8, 1.0), 2, 50, 3)
    first = load_samples(tiny_text_checkpoint, sample_set)
    path = cache_path(tiny_text_checkpoint, sample_set)
    assert path.is_file() and path.is_relative_to(tmp_path)
    assert [s.temperature for s in first] == [0.8, 0.8, 1.0, 1.0]
    assert len({s.seed for s in first}) == 4
    assert load_samples(tiny_text_checkpoint, sample_set) == first
    assert cache_path(tiny_text_checkpoint, SampleSet((0.8, 1.0), 2, 50, 4)) != path
