"""Augmentation that makes espeak-ng renderings sound like people in rooms, on phones, in noise.

Everything works on float32 mono clips at 16 kHz in NumPy, one clip at a time, with an explicit
``numpy.random.Generator`` (so a seed reproduces a batch). :func:`augment` chains the steps with the
probabilities of :class:`AugmentConfig`:

speed/pitch (resampling) -> placement in the one-second window (time shift), sometimes between parts of other
words (running speech) -> reverberation (a synthetic
exponentially decaying impulse response) -> random EQ -> telephone band (8 kHz and back) -> noise at an SNR
(white, pink, brown, babble of other renderings) -> gain (with occasional clipping) -> DC offset / hum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from server.audio.constants import SAMPLE_RATE

CLIP = SAMPLE_RATE  # one second
NOISE_KINDS = ("white", "pink", "brown", "babble")


@dataclass(frozen=True)
class AugmentConfig:
    speed: tuple[float, float] = (0.85, 1.2)  # resampling factor: > 1 faster and higher
    p_speed: float = 0.8
    p_context: float = 0.0  # other words right before and after the word, as in running speech (training: 0.5)
    context_gap: tuple[float, float] = (0.03, 0.25)  # seconds of pause between the word and a neighbour
    context_gap_after: tuple[float, float] | None = None  # the pause before the word after it (None: context_gap)
    context_db: tuple[float, float] = (-8.0, 2.0)  # a neighbour's level against the word's
    p_reverb: float = 0.35
    rt60: tuple[float, float] = (0.15, 0.8)  # seconds
    p_eq: float = 0.5
    eq_db: float = 8.0  # random EQ: up to +-this many dB at a few log-spaced frequencies
    p_telephone: float = 0.25
    p_noise: float = 0.8
    snr_db: tuple[float, float] = (0.0, 30.0)
    gain_db: tuple[float, float] = (-30.0, 6.0)  # of the peak, relative to full scale
    p_clip: float = 0.05
    p_hum: float = 0.1


_FREQS = np.maximum(np.fft.rfftfreq(CLIP, 1 / SAMPLE_RATE), 20.0).astype(np.float32)  # (8001,) Hz, floored at 20


def colored_noise(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """Unit-RMS noise (n,): white (flat), pink (1/f power), brown (1/f^2 power)."""
    from scipy import fft  # on first use: the command line imports this module's config

    if kind == "white":
        x = rng.standard_normal(n, dtype=np.float32)
    else:
        spectrum = fft.rfft(rng.standard_normal(n, dtype=np.float32))
        f = np.maximum(fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0).astype(np.float32)
        spectrum /= np.sqrt(f) if kind == "pink" else f
        x = fft.irfft(spectrum, n)
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def babble(
    rng: np.random.Generator, pool: Sequence[np.ndarray], n: int, voices: tuple[int, int] = (3, 7)
) -> np.ndarray:
    """Unit-RMS babble (n,): several renderings of ``pool`` overlaid at random offsets."""
    out = np.zeros(n, dtype=np.float32)
    for _ in range(int(rng.integers(voices[0], voices[1] + 1))):
        clip = pool[int(rng.integers(len(pool)))]
        clip = clip / (np.sqrt(np.mean(clip**2)) + 1e-9)
        start = int(rng.integers(-len(clip) // 2, n))
        lo, hi = max(start, 0), min(start + len(clip), n)
        if hi > lo:
            out[lo:hi] += clip[lo - start : hi - start]
    rms = np.sqrt(np.mean(out**2))
    return out / rms if rms > 0 else colored_noise(rng, n, "pink")


def resample(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (shorter and higher), by linear interpolation."""
    n = max(2, round(len(x) / factor))
    return np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x).astype(np.float32)


def place(rng: np.random.Generator, speech: np.ndarray, n: int = CLIP) -> np.ndarray:
    """``speech`` at a random offset in ``n`` samples of silence (a random ``n``-long part if it is longer)."""
    out = np.zeros(n, dtype=np.float32)
    if len(speech) >= n:
        start = int(rng.integers(0, len(speech) - n + 1))
        return speech[start : start + n].astype(np.float32)
    start = int(rng.integers(0, n - len(speech) + 1))
    out[start : start + len(speech)] = speech
    return out


def in_context(
    rng: np.random.Generator,
    speech: np.ndarray,
    pool: Sequence[np.ndarray],
    gap_s: tuple[float, float],
    level_db: tuple[float, float],
    n: int = CLIP,
    gap_after_s: tuple[float, float] | None = None,
) -> np.ndarray:
    """``speech`` placed as :func:`place` does, with the end of another word of ``pool`` before it and the start of
    another after it (each three times in four), a short pause between (``gap_after_s`` before the word after, when
    given): a word cut from running speech. The neighbours never overlap the word."""
    if len(speech) >= n:
        return place(rng, speech, n)
    x = np.zeros(n, dtype=np.float32)
    start = int(rng.integers(0, n - len(speech) + 1))
    end = start + len(speech)
    x[start:end] = speech
    rms = float(np.sqrt(np.mean(speech**2))) + 1e-9
    for side in ("before", "after"):
        if rng.random() < 0.25:
            continue
        other = pool[int(rng.integers(len(pool)))]
        gain = rms / (float(np.sqrt(np.mean(other**2))) + 1e-9) * 10 ** (rng.uniform(*level_db) / 20)
        gap = int(rng.uniform(*(gap_after_s if side == "after" and gap_after_s else gap_s)) * SAMPLE_RATE)
        if side == "before" and start - gap > 0:
            room = start - gap
            piece = other[-room:]
            x[room - len(piece) : room] += piece * gain
        elif side == "after" and end + gap < n:
            piece = other[: n - end - gap]
            x[end + gap : end + gap + len(piece)] += piece * gain
    return x.astype(np.float32)


def reverb(rng: np.random.Generator, x: np.ndarray, rt60: tuple[float, float]) -> np.ndarray:
    """Convolve with a synthetic room: a direct path and exponentially decaying noise (60 dB down after RT60)."""
    from scipy import fft  # on first use: the command line imports this module's config

    t60 = rng.uniform(*rt60)
    n = int(min(t60, 0.5) * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir = (rng.standard_normal(n) * np.exp(-6.9 * t / t60) * rng.uniform(0.1, 0.5)).astype(np.float32)
    ir[0] = 1.0
    size = fft.next_fast_len(len(x) + n, real=True)
    wet = fft.irfft(fft.rfft(x, size) * fft.rfft(ir, size), size)[: len(x)]
    return (wet * np.max(np.abs(x)) / (np.max(np.abs(wet)) + 1e-9)).astype(np.float32)


_LOG_FREQS = np.log(_FREQS)
_EQ_POINTS = np.log(np.geomspace(50, SAMPLE_RATE / 2, 6))


def eq_curve(rng: np.random.Generator, max_db: float) -> np.ndarray:
    """A smooth random gain (8001,) over log frequency (a microphone or a loudspeaker's colouring), sometimes
    with little bass (a small speaker, a cheap microphone)."""
    gains = rng.uniform(-max_db, max_db, len(_EQ_POINTS))
    curve = 10 ** (np.interp(_LOG_FREQS, _EQ_POINTS, gains) / 20)
    if rng.random() < 0.5:
        curve /= np.sqrt(1 + (rng.uniform(100, 400) / _FREQS) ** 4)
    return curve.astype(np.float32)


def telephone_curve(rng: np.random.Generator) -> np.ndarray:
    """A phone line upsampled to 16 kHz: nothing above 3.4 to 4 kHz, a little below 200 to 300 Hz."""
    top = rng.uniform(3400, 4000)
    low = rng.uniform(200, 300)
    return ((top >= _FREQS) / np.sqrt(1 + (low / _FREQS) ** 4)).astype(np.float32)


def filter_clip(x: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """``x`` (16000,) through a zero-phase filter of gain ``curve`` (8001,)."""
    from scipy import fft  # on first use: the command line imports this module's config

    return fft.irfft(fft.rfft(x) * curve, len(x)).astype(np.float32)


def random_eq(rng: np.random.Generator, x: np.ndarray, max_db: float) -> np.ndarray:
    return filter_clip(x, eq_curve(rng, max_db))


def telephone(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    return filter_clip(x, telephone_curve(rng))


def add_noise(
    rng: np.random.Generator, x: np.ndarray, snr_db: float, kind: str, pool: Sequence[np.ndarray]
) -> np.ndarray:
    noise = babble(rng, pool, len(x)) if kind == "babble" else colored_noise(rng, len(x), kind)
    active = x[np.abs(x) > 0.05 * (np.max(np.abs(x)) + 1e-9)]  # the speech, not the silence around it
    signal_rms = np.sqrt(np.mean(active**2)) if len(active) else 0.0
    return (x + noise * signal_rms * 10 ** (-snr_db / 20)).astype(np.float32)


def set_gain(rng: np.random.Generator, x: np.ndarray, gain_db: tuple[float, float], p_clip: float) -> np.ndarray:
    """Scale to a random peak level; sometimes overdrive and clip, as a loud talker on a cheap input."""
    peak = float(np.max(np.abs(x)))
    if peak == 0:
        return x
    level = 10 ** (rng.uniform(*gain_db) / 20)
    if rng.random() < p_clip:
        level *= rng.uniform(1.5, 4.0)
    return np.clip(x * (level / peak), -1.0, 1.0).astype(np.float32)


def augment(
    rng: np.random.Generator,
    speech: np.ndarray | None,
    pool: Sequence[np.ndarray],
    config: AugmentConfig = AugmentConfig(),
) -> np.ndarray:
    """One augmented one-second clip (16000,) float32 in [-1, 1]: ``speech`` (trimmed, any length) placed and
    distorted, or with ``speech`` None a "silence" clip (noise of a random kind and level, sometimes none).
    ``pool`` holds renderings for babble noise."""
    if speech is None:
        return silence_clip(rng, config)
    x = speech.astype(np.float32)
    if rng.random() < config.p_speed:
        x = resample(x, rng.uniform(*config.speed))
    if config.p_context > 0 and rng.random() < config.p_context and pool:
        x = in_context(rng, x, pool, config.context_gap, config.context_db, gap_after_s=config.context_gap_after)
    else:
        x = place(rng, x)
    if rng.random() < config.p_reverb:
        x = reverb(rng, x, config.rt60)
    x = _colour(rng, x, config)
    if rng.random() < config.p_noise:
        kind = NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
        x = add_noise(rng, x, rng.uniform(*config.snr_db), kind, pool)
    x = set_gain(rng, x, config.gain_db, config.p_clip)
    if rng.random() < config.p_hum:
        x = add_hum(rng, x)
    return x


def _colour(rng: np.random.Generator, x: np.ndarray, config: AugmentConfig) -> np.ndarray:
    """Random EQ and telephone band, as one filter."""
    curve = None
    if rng.random() < config.p_eq:
        curve = eq_curve(rng, config.eq_db)
    if rng.random() < config.p_telephone:
        band = telephone_curve(rng)
        curve = band if curve is None else curve * band
    return x if curve is None else filter_clip(x, curve)


_T = np.arange(2 * CLIP) / SAMPLE_RATE
_HUM = {
    f0: np.sum([np.sin(2 * np.pi * f0 * k * _T) / k for k in (1, 2, 3)], axis=0).astype(np.float32) for f0 in (50, 60)
}


def add_hum(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Mains hum (50 or 60 Hz with harmonics) at a random phase and a DC offset, well below the signal."""
    hum = _HUM[50 if rng.random() < 0.5 else 60]
    start = int(rng.integers(0, SAMPLE_RATE // 50))
    level = np.max(np.abs(x)) * rng.uniform(0.005, 0.05)
    return np.clip(x + level * hum[start : start + len(x)] + rng.uniform(-0.01, 0.01), -1, 1).astype(np.float32)


def silence_clip(rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """No speech: coloured noise at a random level (digital silence now and then), sometimes band-limited or hummed."""
    if rng.random() < 0.1:
        return np.zeros(CLIP, dtype=np.float32)
    kind = ("white", "pink", "brown")[int(rng.integers(3))]
    x = _colour(rng, colored_noise(rng, CLIP, kind) * np.float32(10 ** (rng.uniform(-70, -15) / 20)), config)
    if rng.random() < config.p_hum:
        x = add_hum(rng, x)
    return np.clip(x, -1, 1).astype(np.float32)
