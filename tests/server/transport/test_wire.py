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
