"""Speech from espeak-ng: voices split without overlap, real renderings, the cache, word lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.audio.constants import SAMPLE_RATE
from server.data import speech
from server.data.speech import (
    HELD_OUT_ACCENTS,
    HELD_OUT_VARIANTS,
    NUMBER_WORDS,
    Rendering,
    random_rendering,
    render,
    render_many,
    trim_silence,
    voices,
)
from server.errors import InvalidArgument


def test_held_out_voices_share_neither_accent_nor_variant_with_training() -> None:
    train, held = voices("train"), voices("heldout")
    assert len(train) > 300 and len(held) >= 20
    train_accents = {v.split("+")[0] for v in train}
    train_variants = {v.split("+")[1] for v in train}
    for voice in held:
        accent, variant = voice.split("+")
        assert accent in HELD_OUT_ACCENTS and accent not in train_accents
        assert variant in HELD_OUT_VARIANTS and variant not in train_variants
    with pytest.raises(InvalidArgument, match="split"):
        voices("test")


def test_random_renderings_stay_in_their_split() -> None:
    rng = np.random.default_rng(0)
    held = set(voices("heldout"))
    for _ in range(50):
        r = random_rendering(rng, "heldout")
        assert r.voice in held
        assert speech.SPEED_RANGE[0] <= r.speed <= speech.SPEED_RANGE[1]


def test_render_speaks_at_16k_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTIPHON_CACHE", str(tmp_path))
    a = render("seven", Rendering(voice="en-us+f3", speed=150))
    assert a.dtype == np.float32 and a.ndim == 1
    assert 0.2 * SAMPLE_RATE < a.size < 1.5 * SAMPLE_RATE
    assert 0.05 < np.abs(a).max() <= 1.0
    cached = list((tmp_path / "speech").glob("*.npy"))
    assert len(cached) == 1
    np.testing.assert_array_equal(render("seven", Rendering(voice="en-us+f3", speed=150)), a)
    slower = render("seven", Rendering(voice="en-us+f3", speed=100))
    assert slower.size > a.size  # the settings reach espeak-ng
    # a text that starts like an option is spoken, not parsed
    assert render("-v nine", Rendering()).size > 0.2 * SAMPLE_RATE


def test_render_many_keeps_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTIPHON_CACHE", str(tmp_path))
    items = [(w, Rendering(voice="en-gb+m3")) for w in ("one", "seven", "zero")]
    together = render_many(items, workers=2)
    for (text, r), audio in zip(items, together, strict=True):
        np.testing.assert_array_equal(audio, render(text, r))


def test_empty_text_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="text"):
        render("  ", Rendering())


def test_trim_silence() -> None:
    x = np.zeros(1000, dtype=np.float32)
    x[400:500] = 0.5
    assert trim_silence(x, pad=10).size == 120
    assert trim_silence(np.zeros(10, dtype=np.float32)).size == 0


def test_word_lists_avoid_number_words() -> None:
    words = speech.other_words(500, seed=1)
    assert len(set(words)) == 500
    assert not set(words) & (set(NUMBER_WORDS) | speech.HOMOPHONES)
    assert speech.other_words(40, seed=1) == words[:40]
    lines = speech.play_lines(20, seed=1, max_chars=60)
    assert len(lines) == 20 and all(12 <= len(line) <= 60 for line in lines)
    assert speech.play_lines(5, seed=3) == speech.play_lines(5, seed=3)
