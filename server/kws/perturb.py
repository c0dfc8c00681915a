"""Perturbations that move a voice toward the people and channels the keyword spotter meets, on trimmed words at
16 kHz (NumPy and SciPy; GSM through sox), each deterministic given its arguments or its generator.

Beyond :mod:`server.kws.augment`'s (speed resampling, synthetic rooms, EQ, noise, gain):

- :func:`vtlp`: vocal tract length perturbation, the spectrum warped by a factor (formants move, pitch stays);
- :func:`time_stretch`: tempo without pitch (WSOLA), :func:`pitch_shift`: pitch and formants without tempo;
- :func:`g711`: the telephone codecs, mu-law and A-law at 8 kHz; :func:`gsm`: GSM 06.10 full rate through sox;
- :func:`band_limit`: a channel's pass band; :func:`clip`: overdriven input;
- :func:`tight_trim`: the word cut tight, its onset or tail clipped as a hand-trimmed recording's.

:func:`perturb` chains them with the probabilities of :class:`PerturbConfig`.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
from scipy import fft
from scipy.signal import istft, resample_poly, stft

from server.audio.constants import SAMPLE_RATE
from server.errors import CorpusError, InvalidArgument
from server.kws.augment import resample

_N_FFT = 512
_HOP = 128


def vtlp(x: np.ndarray, alpha: float, boundary_hz: float = 4800.0) -> np.ndarray:
    """``x`` with its spectrum warped by ``alpha`` (> 1: formants higher, a shorter vocal tract), piecewise linear
    (Jaitly and Hinton, 2013): frequencies below ``boundary_hz * min(alpha, 1) / alpha`` scale by ``alpha``, the
    rest map linearly onto what is left up to Nyquist. The same length; each frame keeps its phases."""
    if not 0.5 <= alpha <= 2.0:
        raise InvalidArgument("alpha", f"must be in [0.5, 2], got {alpha}")
    if len(x) < _N_FFT:
        return x.astype(np.float32)
    _, _, spec = stft(x, nperseg=_N_FFT, noverlap=_N_FFT - _HOP)  # (bins, frames)
    nyq = SAMPLE_RATE / 2
    f = np.linspace(0, nyq, spec.shape[0])
    knee = boundary_hz * min(alpha, 1.0) / alpha
    warped = np.where(f <= knee, f * alpha, nyq - (nyq - knee * alpha) * (nyq - f) / (nyq - knee))
    # Each output bin takes the input bin whose warped frequency lands on it (inverse map, by interpolation).
    source = np.interp(f, warped, f) / nyq * (spec.shape[0] - 1)
    lo = np.floor(source).astype(int)
    hi = np.minimum(lo + 1, spec.shape[0] - 1)
    w = (source - lo)[:, None]
    mag = (1 - w) * np.abs(spec[lo]) + w * np.abs(spec[hi])
    out = istft(mag * np.exp(1j * np.angle(spec)), nperseg=_N_FFT, noverlap=_N_FFT - _HOP)[1][: len(x)]
    out = np.pad(out, (0, len(x) - len(out)))
    return (out * (np.max(np.abs(x)) / (np.max(np.abs(out)) + 1e-9))).astype(np.float32)


def time_stretch(x: np.ndarray, rate: float, frame: int = 384, hop: int = 96, search: int = 96) -> np.ndarray:
    """``x`` played ``rate`` times faster at the same pitch (WSOLA: Hann-windowed frames overlap-added, each taken
    where it best continues the last within ``search`` samples)."""
    if not 0.25 <= rate <= 4.0:
        raise InvalidArgument("rate", f"must be in [0.25, 4], got {rate}")
    x = x.astype(np.float32)
    n_out = max(1, round(len(x) / rate))
    if len(x) < frame + 2 * search:
        return resample(x, len(x) / n_out) if n_out > 1 else x[:1]
    window = np.hanning(frame).astype(np.float32)
    padded = np.pad(x, (search, frame + search))
    out = np.zeros(n_out + frame, dtype=np.float32)
    norm = np.zeros_like(out)
    prev = search  # where the last frame was taken from (in padded)
    for i, at in enumerate(range(0, n_out, hop)):
        centre = search + round(at * rate)
        if i == 0:
            pos = centre
        else:
            want = padded[prev + hop : prev + hop + frame]  # the natural continuation of the last frame
            lo, hi = max(0, centre - search), min(len(padded) - frame, centre + search)
            if hi <= lo:
                pos = min(max(centre, 0), len(padded) - frame)
            else:
                region = padded[lo : hi + frame]
                corr = np.correlate(region, want, mode="valid")
                pos = lo + int(np.argmax(corr))
        out[at : at + frame] += padded[pos : pos + frame] * window
        norm[at : at + frame] += window
        prev = pos
    return (out[:n_out] / np.maximum(norm[:n_out], 1e-3)).astype(np.float32)


def pitch_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    """``x`` ``semitones`` higher (pitch and formants together, as :func:`~server.kws.augment.resample`), at its
    own tempo."""
    factor = 2 ** (semitones / 12)
    return time_stretch(resample(x, factor), 1 / factor)[: len(x)]


def _to_8k(x: np.ndarray) -> np.ndarray:
    return resample_poly(x, 1, 2).astype(np.float32)


def _from_8k(x: np.ndarray, n: int) -> np.ndarray:
    y = resample_poly(x, 2, 1).astype(np.float32)
    return np.pad(y, (0, max(0, n - len(y))))[:n]


def mu_law(x: np.ndarray, mu: float = 255.0) -> np.ndarray:
    """Companded and quantised to 8 bits, and back (G.711 mu-law, continuous form)."""
    y = np.sign(x) * np.log1p(mu * np.minimum(np.abs(x), 1.0)) / np.log1p(mu)
    q = np.round(y * 127) / 127
    return (np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu).astype(np.float32)


def a_law(x: np.ndarray, a: float = 87.6) -> np.ndarray:
    """Companded and quantised to 8 bits, and back (G.711 A-law, continuous form)."""
    ax = np.minimum(np.abs(x), 1.0)
    small = ax < 1 / a
    y = np.where(small, a * ax / (1 + np.log(a)), (1 + np.log(np.maximum(a * ax, 1.0))) / (1 + np.log(a)))
    q = np.round(y * 127) / 127
    back = np.where(q < 1 / (1 + np.log(a)), q * (1 + np.log(a)) / a, np.exp(q * (1 + np.log(a)) - 1) / a)
    return (np.sign(x) * back).astype(np.float32)


def g711(x: np.ndarray, law: str = "mu") -> np.ndarray:
    """``x`` (16 kHz) through a G.711 line: 8 kHz, 8-bit mu-law or A-law, and back to 16 kHz (same length)."""
    if law not in ("mu", "a"):
        raise InvalidArgument("law", f"must be 'mu' or 'a', got {law!r}")
    narrow = _to_8k(x)
    peak = float(np.max(np.abs(narrow))) + 1e-9
    scale = min(1.0, 0.9 / peak)  # the codec sees the level it is given, below full scale
    coded = (mu_law if law == "mu" else a_law)(narrow * scale) / scale
    return _from_8k(coded, len(x))


def gsm_available() -> bool:
    return shutil.which("sox") is not None


def gsm(x: np.ndarray) -> np.ndarray:
    """``x`` (16 kHz) through GSM 06.10 full rate at 8 kHz (sox, the Debian package), back to 16 kHz."""
    if not gsm_available():
        raise CorpusError("sox is not installed; install the Debian package sox")
    narrow = _to_8k(x)
    pcm = (np.clip(narrow, -1, 1) * 32767).astype("<i2").tobytes()
    raw = ["-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1"]
    enc = subprocess.run(["sox", *raw, "-", "-t", "gsm", "-"], input=pcm, capture_output=True, check=False)
    dec = subprocess.run(["sox", "-t", "gsm", "-r", "8000", "-", *raw, "-"], input=enc.stdout, capture_output=True,
                         check=False)  # fmt: skip
    if enc.returncode or dec.returncode:
        raise CorpusError(f"sox GSM failed: {(enc.stderr or dec.stderr).decode('utf-8', 'replace').strip()}")
    return _from_8k(np.frombuffer(dec.stdout, dtype="<i2").astype(np.float32) / 32768.0, len(x))


def band_limit(x: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """``x`` through a zero-phase band pass (fourth-order slopes): a channel that passes ``low_hz`` to ``high_hz``."""
    if not 0 <= low_hz < high_hz:
        raise InvalidArgument("band", f"need 0 <= low < high, got {low_hz:g}, {high_hz:g}")
    f = np.maximum(fft.rfftfreq(len(x), 1 / SAMPLE_RATE), 1.0)
    gain = 1 / np.sqrt(1 + (f / high_hz) ** 8)
    if low_hz > 0:
        gain = gain / np.sqrt(1 + (low_hz / f) ** 4)
    return fft.irfft(fft.rfft(x) * gain, len(x)).astype(np.float32)


def clip(x: np.ndarray, drive: float) -> np.ndarray:
    """``x`` driven ``drive`` times over its peak into full scale and clipped there (>= 1)."""
    if drive < 1:
        raise InvalidArgument("drive", f"must be at least 1, got {drive}")
    peak = float(np.max(np.abs(x))) + 1e-9
    return np.clip(x * (drive / peak), -1.0, 1.0).astype(np.float32)


def trim_to_word(x: np.ndarray, db: float = -30.0) -> np.ndarray:
    """``x`` from its first to its last sample above ``db`` of its peak (all of it when none is)."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    loud = np.flatnonzero(np.abs(x) > peak * 10 ** (db / 20))
    return (x[loud[0] : loud[-1] + 1] if loud.size else x).astype(np.float32)


def tight_trim(rng: np.random.Generator, x: np.ndarray, max_cut_s: float = 0.04) -> np.ndarray:
    """The word trimmed at -30 dB of its peak, then up to ``max_cut_s`` more cut from its start and its end."""
    if not np.any(x):
        return x.astype(np.float32)  # silence: nothing to trim, nothing drawn
    y = trim_to_word(x)
    cut = int(max_cut_s * SAMPLE_RATE)
    a, b = int(rng.integers(0, cut + 1)), int(rng.integers(0, cut + 1))
    if len(y) - a - b < len(y) // 2:
        return y.astype(np.float32)
    return y[a : len(y) - b].astype(np.float32)


@dataclass(frozen=True)
class PerturbConfig:
    p_vtlp: float = 0.5
    vtlp: tuple[float, float] = (0.85, 1.18)
    p_tempo: float = 0.3
    tempo: tuple[float, float] = (0.7, 1.4)  # rate: > 1 faster
    p_pitch: float = 0.3
    pitch: tuple[float, float] = (-5.0, 5.0)  # semitones
    p_codec: float = 0.3  # mu-law, A-law or GSM (when sox is there), each alike
    p_band: float = 0.2
    p_trim: float = 0.3
    p_clip: float = 0.03

    def validate(self) -> None:
        for name in ("p_vtlp", "p_tempo", "p_pitch", "p_codec", "p_band", "p_trim", "p_clip"):
            if not 0 <= getattr(self, name) <= 1:
                raise InvalidArgument(name, f"must be in [0, 1], got {getattr(self, name)}")


def perturb(rng: np.random.Generator, x: np.ndarray, config: PerturbConfig = PerturbConfig()) -> np.ndarray:
    """One perturbed version of a trimmed word (any length, 16 kHz): trim, tempo, pitch, VTLP, band, codec, clip."""
    y = x.astype(np.float32)
    if rng.random() < config.p_trim:
        y = tight_trim(rng, y)
    if rng.random() < config.p_tempo:
        y = time_stretch(y, float(rng.uniform(*config.tempo)))
    if rng.random() < config.p_pitch:
        y = pitch_shift(y, float(rng.uniform(*config.pitch)))
    if rng.random() < config.p_vtlp:
        y = vtlp(y, float(rng.uniform(*config.vtlp)))
    if rng.random() < config.p_band:
        y = band_limit(y, float(rng.uniform(0, 400)), float(rng.uniform(2800, 7000)))
    if rng.random() < config.p_codec:
        kinds = ("mu", "a", "gsm") if gsm_available() else ("mu", "a")
        kind = kinds[int(rng.integers(len(kinds)))]
        y = gsm(y) if kind == "gsm" else g711(y, kind)
    if rng.random() < config.p_clip:
        y = clip(y, float(rng.uniform(1.5, 4.0)))
    return y
