"""Augmentation: one-second clips in range, the telephone band, noise at the asked SNR, silence."""

from __future__ import annotations

import numpy as np
import pytest

from server.audio.constants import SAMPLE_RATE
from server.kws.augment import (
    CLIP,
    add_noise,
    augment,
    colored_noise,
    in_context,
    place,
    resample,
    reverb,
    silence_clip,
    telephone,
)


def tone(seconds: float = 0.5, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
    return float(spectrum[(f >= lo) & (f < hi)].sum())


def test_augment_gives_one_second_in_range() -> None:
    """Every augmented clip, speech or silence, is (16000,) float32 within [-1, 1]."""
    rng = np.random.default_rng(0)
    pool = [tone(0.3, 300.0), tone(0.4, 700.0)]
    for speech in [tone(), tone(1.5), None] * 10:
        x = augment(rng, speech, pool)
        assert x.shape == (CLIP,) and x.dtype == np.float32
        assert np.all(np.abs(x) <= 1.0) and np.all(np.isfinite(x))


def test_in_context_keeps_the_word_and_adds_neighbours_apart_from_it() -> None:
    """The word lands whole and untouched; other words' parts come before and after it, a pause away, and most
    clips get at least one."""
    rng = np.random.default_rng(2)
    speech = np.full(4000, 0.1, dtype=np.float32)
    pool = [np.full(6000, 0.3, dtype=np.float32)]
    with_neighbours = 0
    for _ in range(40):
        x = in_context(rng, speech, pool, gap_s=(0.03, 0.25), level_db=(-8.0, 2.0))
        assert x.shape == (CLIP,)
        starts = [s for s in range(CLIP - len(speech) + 1) if np.all(x[s : s + len(speech)] == 0.1)]
        assert starts, "the word is not whole"
        start = starts[0]
        near = np.concatenate([x[max(start - 480, 0) : start], x[start + len(speech) : start + len(speech) + 480]])
        assert np.all(near == 0)  # at least 30 ms of pause on either side
        with_neighbours += bool(np.any(x[:start] != 0) or np.any(x[start + len(speech) :] != 0))
    assert with_neighbours >= 30
    assert np.array_equal(in_context(rng, tone(1.5), pool, (0.03, 0.25), (-8.0, 2.0)).shape, (CLIP,))


def test_in_context_keeps_a_longer_pause_before_the_word_after() -> None:
    """``gap_after_s`` holds the next word off for its whole range; the word before keeps the shorter pause."""
    rng = np.random.default_rng(3)
    speech = np.full(3000, 0.1, dtype=np.float32)
    pool = [np.full(8000, 0.3, dtype=np.float32)]
    for _ in range(40):
        x = in_context(rng, speech, pool, (0.03, 0.25), (-8.0, 2.0), gap_after_s=(0.15, 0.25))
        start = next(s for s in range(CLIP - len(speech) + 1) if np.all(x[s : s + len(speech)] == 0.1))
        end = start + len(speech)
        assert np.all(x[end : end + int(0.15 * SAMPLE_RATE)] == 0)
        assert np.all(x[max(start - 480, 0) : start] == 0)


def test_place_keeps_the_speech_whole() -> None:
    """A short clip lands whole inside the second; a long one gives a one-second part."""
    rng = np.random.default_rng(1)
    speech = tone(0.4)
    placed = place(rng, speech)
    assert np.isclose(np.sum(placed**2), np.sum(speech**2))
    assert place(rng, tone(1.7)).shape == (CLIP,)


def test_telephone_band_removes_everything_above_four_kilohertz() -> None:
    """The 8 kHz band limit leaves speech frequencies and drops the upper band."""
    x = colored_noise(np.random.default_rng(2), CLIP, "white")
    y = telephone(np.random.default_rng(3), x)
    assert band_energy(y, 4000, 8000) < 1e-6 * band_energy(x, 4000, 8000)
    assert band_energy(y, 500, 3000) > 0.9 * band_energy(x, 500, 3000)


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "babble"])
def test_noise_is_added_at_the_asked_snr(kind: str) -> None:
    """Speech RMS over noise RMS is the SNR asked for, within rounding of the RMS estimates."""
    rng = np.random.default_rng(4)
    speech = place(rng, tone(0.5))
    noisy = add_noise(rng, speech, 10.0, kind, [tone(0.3, 300.0)])
    noise = noisy - speech
    active = speech[np.abs(speech) > 0.025]
    snr = 20 * np.log10(np.sqrt(np.mean(active**2)) / np.sqrt(np.mean(noise**2)))
    assert snr == pytest.approx(10.0, abs=0.5)


def test_pink_and_brown_noise_tilt_down() -> None:
    """Pink and brown noise hold more energy in low bands than in high ones; white does not."""
    rng = np.random.default_rng(5)
    ratios = {
        k: band_energy(colored_noise(rng, CLIP, k), 100, 1000) / band_energy(colored_noise(rng, CLIP, k), 4000, 7000)
        for k in ("white", "pink", "brown")
    }
    assert ratios["white"] < 0.5 < ratios["pink"] < ratios["brown"]


def test_speed_and_reverb_keep_the_level() -> None:
    """Resampling changes the length by the factor; reverberation keeps the peak."""
    rng = np.random.default_rng(6)
    assert len(resample(tone(0.5), 1.25)) == 6400
    x = place(rng, tone(0.3))
    assert np.max(np.abs(reverb(rng, x, (0.3, 0.6)))) == pytest.approx(np.max(np.abs(x)), rel=1e-5)


def test_silence_is_quiet_noise() -> None:
    """Silence clips hold no more than -15 dBFS of noise."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        x = silence_clip(rng)
        assert np.sqrt(np.mean(x**2)) < 0.25
