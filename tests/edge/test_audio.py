"""Audio input with NumPy: WAV decoding of every PCM width and float, mixing down, and the resampler."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge_client.audio import (
    G711,
    WAVE_FORMAT_ALAW,
    WAVE_FORMAT_MULAW,
    Resampler,
    read_wav,
    resample,
    stream_chunks,
)
from server.errors import InvalidArgument


def wav_bytes(samples: np.ndarray, rate: int, bits: int = 16, floating: bool = False) -> bytes:
    """(frames, channels) float in [-1, 1] -> a WAV file (PCM of ``bits`` or IEEE float)."""
    _, channels = samples.shape
    if floating:
        data = samples.astype("<f4" if bits == 32 else "<f8").tobytes()
    elif bits == 8:
        data = np.clip(np.round(samples * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    elif bits == 24:
        v = np.round(samples * (2**23 - 1)).astype(np.int32).reshape(-1)
        data = np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], axis=1).astype(np.uint8).tobytes()
    else:
        dtype = "<i2" if bits == 16 else "<i4"
        data = np.round(samples * (2 ** (bits - 1) - 1)).astype(dtype).tobytes()
    fmt = struct.pack(
        "<HHIIHH", 3 if floating else 1, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits
    )
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", 4) + b"INFO"
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


@pytest.mark.parametrize(
    ("bits", "floating", "tolerance"),
    [(8, False, 1e-2), (16, False, 1e-4), (24, False, 1e-6), (32, False, 1e-6), (32, True, 1e-7), (64, True, 1e-7)],
)
def test_wav_widths_and_channels_mix_down(tmp_path: Path, bits: int, floating: bool, tolerance: float) -> None:
    """Every PCM width and float decode to the mean of the channels."""
    left, right = tone(440, 16000), tone(1000, 16000)
    path = tmp_path / "x.wav"
    path.write_bytes(wav_bytes(np.stack([left, right], axis=1), 16000, bits, floating))
    assert np.abs(read_wav(path, 16000) - (left + right) / 2).max() < tolerance


def test_g711_bytes_decode_as_the_standard_says() -> None:
    """Reference points of ITU-T G.711 on the 16-bit scale: mu-law's two zeros and its extremes, A-law's smallest
    steps and extremes; every other byte is a sample of its own."""
    mu, alaw = G711[WAVE_FORMAT_MULAW] * 32768, G711[WAVE_FORMAT_ALAW] * 32768
    assert (mu[0xFF], mu[0x7F], mu[0x80], mu[0x00]) == (0, 0, 32124, -32124)
    assert (alaw[0xD5], alaw[0x55], alaw[0xAA], alaw[0x2A]) == (8, -8, 32256, -32256)
    assert (len(set(mu.tolist())), len(set(alaw.tolist()))) == (255, 256)


def test_g711_wav_header_with_a_fact_chunk_is_read(tmp_path: Path) -> None:
    """A G.711 WAV as telephony tools write it: an 18-byte fmt chunk (cbSize 0) and a fact chunk before the data."""
    fmt = struct.pack("<HHIIHHH", WAVE_FORMAT_ALAW, 1, 8000, 8000, 1, 8, 0)
    data = bytes([0xD5, 0x55, 0xAA, 0x2A])
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<II", 4, len(data))
    body += b"data" + struct.pack("<I", len(data)) + data
    path = tmp_path / "alaw.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert (read_wav(path, 8000) * 32768).tolist() == [8, -8, 32256, -32256]


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox (a Debian package the Makefile installs) is missing")
@pytest.mark.parametrize("encoding", ["mu-law", "a-law"])
def test_telephone_wav_decodes_to_its_pcm(tmp_path: Path, encoding: str) -> None:
    """A G.711 WAV as sox writes it (8 kHz, 8 bits a sample, as telephone recordings are kept) reads back as the
    PCM it was made from, within G.711's step, and resampled to the model's rate like any WAV."""
    pcm, coded = tmp_path / "pcm.wav", tmp_path / "coded.wav"
    speechlike = tone(300, 8000) * np.linspace(0.05, 1.0, 8000, dtype=np.float32) + tone(1100, 8000) * 0.3
    pcm.write_bytes(wav_bytes(speechlike[:, None] * 0.9, 8000))
    subprocess.run(["sox", str(pcm), "-e", encoding, "-b", "8", str(coded)], check=True, capture_output=True)
    decoded = read_wav(coded, 8000)
    assert len(decoded) == 8000
    error = np.abs(decoded - read_wav(pcm, 8000))
    assert error.max() < 0.03 * np.abs(speechlike).max()  # G.711 keeps about 8 bits of each sample's magnitude
    assert np.corrcoef(decoded, speechlike)[0, 1] > 0.999
    assert len(read_wav(coded, 16000)) == 16000


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampled_tone_is_the_same_tone(rate: int) -> None:
    """A 440 Hz tone at any rate becomes the 440 Hz tone at 16 kHz (away from the edges)."""
    y = resample(tone(440, rate), rate, 16000)
    assert len(y) == 16000
    expected = tone(440, 16000)
    assert np.abs(y - expected)[300:-300].max() < 1e-3


@pytest.mark.parametrize("rate", [383_999, 7_919, 16_001])
def test_an_awkward_rate_takes_the_nearest_ratio_within_reach(rate: int) -> None:
    """A rate whose ratio to 16 kHz has huge terms (383,999 Hz: 16,000 / 383,999) is resampled by the nearest small
    ratio: a filter of thousands of taps, not millions (6 s and 1.3 GB for a short file before), and the tone
    keeps its pitch."""
    r = Resampler(rate, 16000)
    assert max(r.up, r.down) <= 2048 and len(r.filter) < 100_000
    y = resample(tone(440, rate), rate, 16000)
    assert abs(len(y) - 16000) <= 2
    spectrum = np.abs(np.fft.rfft(y[300:-300] * np.hanning(len(y) - 600)))
    assert abs(np.argmax(spectrum) * 16000 / (len(y) - 600) - 440) < 2.0  # within a bin of 440 Hz


def test_resampling_removes_what_16k_cannot_hold() -> None:
    """A 10 kHz tone at 44.1 kHz is above the new Nyquist rate: it is filtered out, not folded down to 6 kHz."""
    y = resample(tone(10000, 44100), 44100, 16000)
    assert np.sqrt(np.mean(y[300:-300] ** 2)) < 1e-3


@pytest.mark.parametrize(("rate_in", "rate_out"), [(44100, 16000), (8000, 16000), (48000, 16000), (7, 3)])
def test_resampler_computes_its_formula(rate_in: int, rate_out: int) -> None:
    """Output m is the sum over inputs k of x[k] * filter[m * down + center - k * up] (the filter's precomputed
    phases read the same taps as the formula)."""
    x = np.random.default_rng(rate_in).normal(0, 0.3, 300).astype(np.float32)
    r = Resampler(rate_in, rate_out)
    y = resample(x, rate_in, rate_out)
    taps = np.asarray(r.filter, dtype=np.float64)
    expected = []
    for m in range(len(y)):
        index = m * r.down + r.center - np.arange(len(x)) * r.up
        inside = (index >= 0) & (index < len(taps))
        expected.append(float((x[inside] * taps[index[inside]]).sum()))
    assert len(y) == -(-len(x) * r.up // r.down)
    assert np.abs(y - np.array(expected)).max() < 1e-5


def test_streaming_resampler_equals_one_call() -> None:
    """Chunks of any size give exactly the samples of one whole-signal call."""
    x = np.random.default_rng(0).normal(0, 0.1, 30000).astype(np.float32)
    whole = resample(x, 22050, 16000)
    r = Resampler(22050, 16000)
    parts = [r.push(x[i : i + 777]) for i in range(0, len(x), 777)]
    assert np.array_equal(np.concatenate([*parts, r.flush()]), whole)


def test_stream_reads_a_wav_or_raw_pcm() -> None:
    """A byte stream with a RIFF header is read as WAV; without one as raw PCM16 of the given rate."""
    x = tone(440, 22050)
    pcm = (x * 32767).round().astype("<i2")
    from_wav = np.concatenate(list(stream_chunks(io.BytesIO(wav_bytes(x[:, None], 22050)), "wav", 16000)))
    from_raw = np.concatenate(list(stream_chunks(io.BytesIO(pcm.tobytes()), "raw", 16000, raw_rate=22050)))
    assert len(from_wav) == len(from_raw) == 16000
    assert np.abs(from_wav - from_raw).max() < 1e-4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a WAV file"),
        (b"ID3\x03 some mp3", "not a WAV file"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt \x10\x00", "ends inside"),
        (wav_bytes(np.zeros((10, 1)), 16000)[:36] + b"junk\xff\xff\x00\x00", "no data chunk"),
    ],
)
def test_unreadable_wav_is_named(tmp_path: Path, data: bytes, message: str) -> None:
    """A file that is not a readable WAV is an InvalidArgument naming the file."""
    path = tmp_path / "bad.wav"
    path.write_bytes(data)
    with pytest.raises(InvalidArgument, match=message) as info:
        read_wav(path, 16000)
    assert info.value.field == str(path)


def rf64_bytes(samples: np.ndarray, rate: int, magic: bytes = b"RF64", trailer: bytes = b"") -> bytes:
    """Mono float samples as a 16-bit RF64 file (ffmpeg's form past 4 GB): 32-bit sizes of 0xFFFFFFFF, the data
    size in a ds64 chunk; ``trailer``: a chunk after the data."""
    data = np.round(samples * 32767).astype("<i2").tobytes()
    ds64 = struct.pack("<QQQI", 0, len(data), len(samples), 0)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"ds64" + struct.pack("<I", len(ds64)) + ds64 + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    return magic + b"\xff\xff\xff\xff" + body + b"data\xff\xff\xff\xff" + data + trailer


@pytest.mark.parametrize("magic", [b"RF64", b"BW64"])
def test_rf64_file_and_stream_are_read_to_their_data_size(tmp_path: Path, magic: bytes) -> None:
    """An RF64 (or BW64) WAV is read up to the ds64 chunk's data size, from a file and from a stream alike; not
    refused as a file, nor read as raw PCM from a pipe."""
    x = tone(440, 16000, 0.5)
    data = rf64_bytes(x, 16000, magic, trailer=b"LIST\x04\x00\x00\x00INFO")
    path = tmp_path / "long.wav"
    path.write_bytes(data)
    from_file = read_wav(path, 16000)
    from_stream = np.concatenate(list(stream_chunks(io.BytesIO(data), "standard input", 16000)))
    assert len(from_file) == len(from_stream) == len(x)
    assert np.abs(from_file - x).max() < 1e-4 and np.array_equal(from_file, from_stream)
