"""Audio on the wire: the WaveNet's mu-law codes to PCM16 or G.711 mu-law bytes, chunking, WAV files. No torch.

The WaveNet predicts 8-bit mu-law codes (``server.audio.mulaw``: mu = 255, continuous companding quantised to 256
levels); clients get signed 16-bit little-endian PCM, or 8-bit G.711 mu-law (the telephony standard, what
``aplay -f MU_LAW`` and every telephony stack read) on request.
"""

from __future__ import annotations

import io
import math
import wave
from functools import cache

import numpy as np

from server.audio import mulaw
from server.errors import InvalidArgument

PCM16 = "pcm16"
MULAW = "mulaw"
ENCODINGS = (PCM16, MULAW)
BYTES_PER_SAMPLE = {PCM16: 2, MULAW: 1}


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")


_G711_BIAS = 0x84
_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


@cache
def _g711_table() -> np.ndarray:
    """G.711 mu-law code for every 16-bit sample (index: sample + 32768), as the reference coder computes it on
    14-bit magnitudes."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), 8159) + 0x21
    segment = np.searchsorted(_SEGMENT_ENDS, magnitude)  # first segment whose end is >= magnitude
    code = np.where(segment < 8, (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F), 0x7F)
    return (code ^ mask).astype(np.uint8)


def g711_encode(pcm16: np.ndarray) -> np.ndarray:
    return _g711_table()[pcm16.astype(np.int32) + 32768]


def g711_decode(codes: np.ndarray) -> np.ndarray:
    """G.711 mu-law bytes as 16-bit samples."""
    u = ~codes.astype(np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    magnitude = (((u & 0x0F) << 3) + _G711_BIAS) << exponent
    return np.where(u & 0x80, _G711_BIAS - magnitude, magnitude - _G711_BIAS).astype("<i2")


def encode_codes(codes: np.ndarray, encoding: str) -> bytes:
    """WaveNet codes as wire bytes in ``encoding``."""
    pcm = to_pcm16(mulaw.decode(codes))
    if encoding == PCM16:
        return pcm.tobytes()
    if encoding == MULAW:
        return g711_encode(pcm).tobytes()
    raise InvalidArgument("encoding", f"must be one of {', '.join(ENCODINGS)}, got {encoding!r}")


def decode_bytes(data: bytes, encoding: str) -> np.ndarray:
    """Wire bytes as 16-bit samples (what a client does)."""
    if encoding == PCM16:
        return np.frombuffer(data, dtype="<i2")
    if encoding == MULAW:
        return g711_decode(np.frombuffer(data, dtype=np.uint8))
    raise InvalidArgument("encoding", f"must be one of {', '.join(ENCODINGS)}, got {encoding!r}")


class Chunker:
    """Cuts a stream of codes into chunks of ``chunk_samples`` (the rest comes out with :meth:`flush`)."""

    def __init__(self, chunk_samples: int) -> None:
        self.chunk_samples = chunk_samples
        self._parts: list[np.ndarray] = []
        self._held = 0

    def feed(self, codes: np.ndarray) -> list[np.ndarray]:
        self._parts.append(codes)
        self._held += codes.size
        if self._held < self.chunk_samples:
            return []
        joined = np.concatenate(self._parts)
        whole = joined.size // self.chunk_samples * self.chunk_samples
        rest = joined[whole:]
        self._parts, self._held = ([rest] if rest.size else []), rest.size
        return list(joined[:whole].reshape(-1, self.chunk_samples))

    def flush(self) -> np.ndarray:
        joined = np.concatenate(self._parts) if self._parts else np.zeros(0, dtype=np.uint8)
        self._parts, self._held = [], 0
        return joined


def wav_bytes(pcm16: np.ndarray, sample_rate: int) -> bytes:
    """A mono 16-bit WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.asarray(pcm16, dtype="<i2").tobytes())
    return out.getvalue()


class Resampler:
    """Streaming rate conversion by ``up / down`` (16 kHz to OpenAI's 24 kHz: 3 / 2), chunk by chunk.

    A windowed-sinc low-pass at the upsampled rate, cut at the lower of the two Nyquist frequencies and applied in
    polyphase form: each output sample is one phase's ``taps``-sample dot product with the input before it. The
    filter's history carries across chunks, so any chunking of the input gives the same samples as one call on the
    whole (tested); the output lags by half the filter, ``taps / 2`` input samples (0.5 ms at 16 kHz).
    """

    def __init__(self, up: int, down: int, taps: int = 16, beta: float = 8.0) -> None:
        self.up, self.down, self.taps = up, down, taps
        n = up * taps
        cutoff = 0.5 / max(up, down)  # cycles per upsampled sample
        t = np.arange(n) - (n - 1) / 2
        prototype = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(n, beta) * up
        self.phases = prototype.reshape(taps, up).T[:, ::-1].copy()  # (up, taps): phase p, newest input last
        self.history = np.zeros(taps - 1)
        self.consumed = 0  # input samples read so far
        self.produced = 0  # output samples written so far

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """The output samples that the input read so far determines (float, in the input's scale)."""
        x = np.concatenate([self.history, np.asarray(samples, dtype=np.float64)])
        total = self.consumed + len(samples)
        end = -(-total * self.up // self.down)  # outputs whose newest input has been read
        k = np.arange(self.produced, end)
        position = k * self.down
        newest = position // self.up - self.consumed + self.taps - 1  # index in x of each output's newest input
        window = x[newest[:, None] - np.arange(self.taps - 1, -1, -1)]  # (outputs, taps), oldest first
        out = np.einsum("ij,ij->i", window, self.phases[position % self.up])
        self.history = x[len(x) - (self.taps - 1) :]
        self.consumed, self.produced = total, end
        return out


class Pcm16At:
    """WaveNet codes, chunk by chunk, as PCM16 bytes at ``rate`` (resampled from ``source_rate`` when they differ)."""

    def __init__(self, source_rate: int, rate: int) -> None:
        common = math.gcd(source_rate, rate)
        self.resample = Resampler(rate // common, source_rate // common) if rate != source_rate else None
        self.samples = 0  # samples written so far, at ``rate``

    def __call__(self, codes: np.ndarray) -> bytes:
        samples = mulaw.decode(codes)
        if self.resample is not None:
            samples = self.resample(samples)
        self.samples += len(samples)
        return to_pcm16(samples).tobytes()
