"""Audio on the wire: G.711 against the standard's values, the WaveNet's mu-law, chunking, WAV files."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from server.audio.mulaw import decode as mulaw_expand
from server.errors import InvalidArgument
from server.transport.wire import (
    MULAW,
    PCM16,
    Chunker,
    Resampler,
    decode_bytes,
    encode_codes,
    g711_decode,
    g711_encode,
    wav_bytes,
)


def test_g711_known_values() -> None:
    # ITU-T G.711: 0 -> 0xFF, full scale -> 0x80 / 0x00, the 8 segment boundaries of the decoder
    pcm = np.array([0, 32767, -32768, 1, -1], dtype=np.int16)
    assert g711_encode(pcm).tolist() == [0xFF, 0x80, 0x00, 0xFF, 0x7E]
    assert g711_decode(np.array([0xFF, 0x7F, 0x80, 0x00, 0xEF], dtype=np.uint8)).tolist() == [
        0, 0, 32124, -32124, 132
    ]  # fmt: skip


def test_g711_round_trip_error_is_within_a_step() -> None:
    pcm = np.arange(-32768, 32768, 7, dtype=np.int16)
    back = g711_decode(g711_encode(pcm)).astype(np.int32)
    error = np.abs(back - pcm)
    # the step grows with the magnitude: 8 codes per doubling, 16 levels each
    assert (error <= np.maximum(8, np.abs(pcm.astype(np.int32)) // 16 + 8)).all()
    # every code decodes and re-encodes to itself (0x7F and 0xFF are both zero)
    codes = np.arange(256, dtype=np.uint8)
    again = g711_encode(g711_decode(codes))
    assert ((again == codes) | (codes == 0x7F)).all()


@pytest.mark.parametrize("encoding", [PCM16, MULAW])
def test_encode_and_decode(encoding: str) -> None:
    codes = np.arange(0, 256, 5, dtype=np.uint8)
    data = encode_codes(codes, encoding)
    assert len(data) == codes.size * (2 if encoding == PCM16 else 1)
    pcm = decode_bytes(data, encoding).astype(np.float64) / 32767
    np.testing.assert_allclose(pcm, mulaw_expand(codes), atol=0.04)
    with pytest.raises(InvalidArgument, match="encoding"):
        encode_codes(codes, "flac")


def test_chunker_cuts_exact_chunks_and_keeps_the_rest() -> None:
    chunker = Chunker(4)
    out = chunker.feed(np.arange(3, dtype=np.uint8))
    assert out == []
    out = chunker.feed(np.arange(3, 13, dtype=np.uint8))
    assert [c.tolist() for c in out] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert chunker.flush().tolist() == [12]
    assert chunker.flush().size == 0


def test_wav_bytes() -> None:
    pcm = (np.sin(np.arange(1600) / 5) * 1000).astype(np.int16)
    with wave.open(io.BytesIO(wav_bytes(pcm, 16_000))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (16_000, 1, 2, 1600)
        np.testing.assert_array_equal(np.frombuffer(w.readframes(1600), dtype="<i2"), pcm)


def tone(hz: float, seconds: float, rate: int) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(int(seconds * rate)) / rate)


def test_resampling_16_to_24_khz_keeps_a_tone() -> None:
    """A 1 kHz tone at 16 kHz comes out at 24 kHz, 1.5 times the samples, at 1 kHz and its amplitude within 1%."""
    out = Resampler(3, 2)(tone(1000, 1.0, 16_000))
    assert len(out) == 24_000
    steady = out[1000:-1000]
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady))))
    assert np.argmax(spectrum) * 24_000 / len(steady) == pytest.approx(1000, abs=2)
    assert np.abs(steady).max() == pytest.approx(1.0, abs=0.01)


def test_resampling_removes_what_24_khz_cannot_hold_from_upsampling_images() -> None:
    """Upsampling leaves no image of a 6 kHz tone above the 8 kHz band edge (attenuated at least 40 dB)."""
    out = Resampler(3, 2)(tone(6000, 1.0, 16_000))[1000:-1000]
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    freqs = np.fft.rfftfreq(len(out), 1 / 24_000)
    assert spectrum[freqs > 8500].max() < spectrum.max() / 100


def test_resampling_chunk_by_chunk_equals_resampling_the_whole() -> None:
    """Any chunking of the input, empty chunks included, gives exactly the samples of one call."""
    signal = np.random.default_rng(0).standard_normal(5000)
    whole = Resampler(3, 2)(signal)
    rng = np.random.default_rng(1)
    resampler, parts, i = Resampler(3, 2), [], 0
    while i < len(signal):
        n = int(rng.integers(0, 300))
        parts.append(resampler(signal[i : i + n]))
        i += n
    assert np.array_equal(np.concatenate(parts), whole)
