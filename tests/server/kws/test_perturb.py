"""Perturbations: same seed, same clip; lengths and levels; codecs that keep speech; VTLP moves formants."""

from __future__ import annotations

import numpy as np
import pytest

from server.audio.constants import SAMPLE_RATE
from server.errors import InvalidArgument
from server.kws.perturb import (
    PerturbConfig,
    a_law,
    band_limit,
    clip,
    g711,
    gsm,
    gsm_available,
    mu_law,
    perturb,
    pitch_shift,
    tight_trim,
    time_stretch,
    vtlp,
)


def vowel(seconds: float = 0.5, f0: float = 120.0, formant: float = 700.0) -> np.ndarray:
    """A harmonic tone whose harmonics near ``formant`` are loudest: a crude vowel."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = sum(np.exp(-(((k * f0 - formant) / 200) ** 2)) * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 40))
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def centroid(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    return float((np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE) * power).sum() / power.sum())


def test_perturb_is_deterministic_given_the_seed() -> None:
    """Two generators with one seed give the same perturbed clips; another seed gives others."""
    x = vowel()
    config = PerturbConfig(p_vtlp=1, p_tempo=1, p_pitch=1, p_codec=1, p_band=1, p_trim=1, p_clip=1)
    a = [perturb(np.random.default_rng(3), x, config) for _ in range(2)]
    b = perturb(np.random.default_rng(4), x, config)
    assert np.array_equal(a[0], a[1])
    assert len(a[0]) != len(b) or not np.allclose(a[0], b)


def test_perturbed_clips_are_float32_in_range() -> None:
    """Whatever the draws, a perturbed word is float32 within [-1, 1] and not empty."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = perturb(rng, vowel(float(rng.uniform(0.2, 0.8))))
        assert y.dtype == np.float32 and len(y) > 0 and np.max(np.abs(y)) <= 1.0


def test_vtlp_keeps_the_length_and_moves_the_spectrum_up() -> None:
    """A warp factor above 1 raises the spectral centroid; the clip keeps its length."""
    x = vowel()
    up, down = vtlp(x, 1.15), vtlp(x, 0.87)
    assert len(up) == len(down) == len(x)
    assert centroid(up) > centroid(x) > centroid(down)


def test_time_stretch_changes_the_length_not_the_pitch() -> None:
    """Slower by 0.7 is 1/0.7 as long, with the same fundamental."""
    x = vowel(0.6)
    y = time_stretch(x, 0.7)
    assert len(y) == round(len(x) / 0.7)
    peak = lambda s: np.fft.rfftfreq(len(s), 1 / SAMPLE_RATE)[np.argmax(np.abs(np.fft.rfft(s * np.hanning(len(s)))))]  # noqa: E731
    assert abs(peak(y) - peak(x)) < 15


def test_pitch_shift_keeps_the_length() -> None:
    """A pitch shift leaves the duration as it was."""
    x = vowel()
    assert len(pitch_shift(x, 4.0)) == len(x)


@pytest.mark.parametrize("law", ["mu", "a"])
def test_g711_keeps_speech_and_its_length(law: str) -> None:
    """Through 8 kHz G.711 and back: same length, the band below 3.4 kHz within 20 dB SNR."""
    x = vowel()
    y = g711(x, law)
    assert len(y) == len(x)
    assert 10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2)) > 20


def test_companding_round_trips_are_close() -> None:
    """mu-law and A-law quantise to about 8 bits: small errors, signs kept."""
    x = np.linspace(-0.9, 0.9, 1001, dtype=np.float32)
    for coded in (mu_law(x), a_law(x)):
        assert np.max(np.abs(coded - x)) < 0.03
        assert np.array_equal(np.sign(coded), np.sign(x))


@pytest.mark.skipif(not gsm_available(), reason="sox (the Debian package) is not installed")
def test_gsm_keeps_the_length_and_most_of_the_signal() -> None:
    """Through GSM full rate and back: the same length, recognisably the same signal."""
    x = vowel()
    y = gsm(x)
    assert len(y) == len(x)
    assert np.corrcoef(x, y)[0, 1] > 0.5


def test_band_limit_removes_what_is_above_the_band() -> None:
    """A 6 kHz tone is 18 dB down through a 300-3400 Hz band; a 1 kHz tone passes."""
    t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
    high, mid = np.sin(2 * np.pi * 6000 * t), np.sin(2 * np.pi * 1000 * t)
    assert np.std(band_limit(high, 300, 3400)) < 0.125 * np.std(high)
    assert np.std(band_limit(mid, 300, 3400)) > 0.9 * np.std(mid)


def test_clip_reaches_full_scale_and_refuses_a_drive_below_one() -> None:
    """Driven over its peak, a clip is clipped at +-1; a drive below 1 is refused by name."""
    assert np.max(np.abs(clip(vowel(), 2.0))) == 1.0
    with pytest.raises(InvalidArgument, match="drive"):
        clip(vowel(), 0.5)


def test_tight_trim_is_shorter_and_keeps_most_of_the_word() -> None:
    """Silence around the word goes, and at most 40 ms of each end."""
    x = np.concatenate([np.zeros(3200, np.float32), vowel(), np.zeros(3200, np.float32)])
    y = tight_trim(np.random.default_rng(0), x)
    assert len(vowel()) - 2 * 640 <= len(y) <= len(vowel())
