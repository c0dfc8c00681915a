"""Audio in, with NumPy only: WAV files of any rate and channel count (PCM, float, or G.711 A-law and mu-law as
telephone recordings are stored), raw PCM16 from a pipe, and a microphone through ALSA's ``arecord``; everything
comes out as float32 mono in [-1, 1] at the model's rate.

Resampling is polyphase windowed-sinc (a Kaiser-windowed low-pass at the lower of the two Nyquist rates, 16 zero
crossings each side), streaming: the listen loop resamples a pipe chunk by chunk with the same numbers as a
whole-file resample.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from server.errors import DeviceError, InvalidArgument

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_IEEE_FLOAT = 3
WAVE_FORMAT_ALAW = 6  # G.711, as telephone recordings are stored
WAVE_FORMAT_MULAW = 7
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
STREAMED_SIZES = (0, 0xFFFFFFFF)  # a data chunk of unknown length (arecord to a pipe writes one of these)
MAX_PHASES = 1024  # the most terms of a resampling ratio used as is (44.1 kHz to 16 kHz: 160 / 441)
BLOCK_ELEMENTS = 1 << 20  # elements of each (outputs, taps) array the resampler holds at once
MAX_SAMPLE_RATE = 384_000  # the highest rate audio interfaces record; the resampler's filter grows with the rate
MAX_CHANNELS = 256  # more than any recording format carries
FMT_READ = 40  # bytes of a fmt chunk that are read (WAVE_FORMAT_EXTENSIBLE's); the rest is skipped
# a WAV file's first four bytes: RIFF, or RF64 / BW64 (EBU Tech 3306 and 3285's files past 4 GB, as ffmpeg writes
# them), whose 32-bit sizes are 0xFFFFFFFF and whose ds64 chunk holds the data chunk's 64-bit size
WAV_MAGICS = (b"RIFF", b"RF64", b"BW64")


def _g711_tables() -> dict[int, np.ndarray]:
    """Each G.711 byte's sample in [-1, 1], as ITU-T G.711 decodes it (the reference decoder's arithmetic)."""
    code = np.arange(256, dtype=np.int32)
    u = ~code & 0xFF  # mu-law stores the bits inverted
    mu = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7)
    mu = np.where(u & 0x80, 0x84 - mu, mu - 0x84)
    a = code ^ 0x55  # A-law inverts every other bit
    segment, mantissa = (a >> 4) & 7, (a & 0x0F) << 4
    magnitude = np.where(segment == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(segment - 1, 0))
    alaw = np.where(a & 0x80, magnitude, -magnitude)
    return {WAVE_FORMAT_MULAW: (mu / 32768.0).astype(np.float32), WAVE_FORMAT_ALAW: (alaw / 32768.0).astype(np.float32)}


G711 = _g711_tables()


@dataclass(frozen=True)
class WavFormat:
    encoding: int  # WAVE_FORMAT_PCM, WAVE_FORMAT_IEEE_FLOAT, WAVE_FORMAT_ALAW or WAVE_FORMAT_MULAW
    channels: int
    sample_rate: int
    bits: int
    data_bytes: int | None  # None: until the end of the stream

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits // 8


def check_format(name: str, rate: int, channels: int) -> None:
    """Refuse a sample rate or channel count out of range, naming ``name`` (the file, or the flag)."""
    if not 1 <= rate <= MAX_SAMPLE_RATE:
        raise InvalidArgument(name, f"sample rate must be in 1..{MAX_SAMPLE_RATE:,} Hz, got {rate:,}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidArgument(name, f"channel count must be in 1..{MAX_CHANNELS}, got {channels:,}")


def _skip(f: BinaryIO, n: int) -> bool:
    """Move past ``n`` bytes without holding them (seeking where the stream can); False when it ends first."""
    seekable = False
    with contextlib.suppress(OSError, ValueError):
        seekable = f.seekable()
    if seekable:
        here = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(min(here + n, end))
        return here + n <= end
    while n > 0:
        data = f.read(min(n, 1 << 16))
        if not data:
            return False
        n -= len(data)
    return True


def read_wav_header(f: BinaryIO, name: str) -> WavFormat:
    """Read up to the start of the data chunk; raises InvalidArgument naming ``name`` for anything unreadable."""

    def need(n: int, what: str) -> bytes:
        data = f.read(n)
        if len(data) != n:
            raise InvalidArgument(name, f"not a readable WAV file (it ends inside the {what})")
        return data

    head = f.read(12)
    if len(head) < 12 or head[:4] not in WAV_MAGICS or head[8:12] != b"WAVE":
        raise InvalidArgument(
            name,
            "not a WAV file (no RIFF/WAVE header); give a .wav file (`sox IN -c 1 OUT.wav` converts other formats)",
        )
    fmt: tuple[int, int, int, int] | None = None
    data_size64: int | None = None  # RF64's ds64 chunk: the data chunk's size
    while True:
        chunk_id, size = struct.unpack("<4sI", need(8, "chunk list"))
        if chunk_id == b"fmt ":
            if size < 16:
                raise InvalidArgument(name, "not a readable WAV file (short fmt chunk)")
            body = need(min(size, FMT_READ), "fmt chunk")
            if not _skip(f, size + (size & 1) - len(body)):
                raise InvalidArgument(name, "not a readable WAV file (it ends inside the fmt chunk)")
            encoding, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if encoding == WAVE_FORMAT_EXTENSIBLE and size >= 26:
                encoding = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID starts with the format code
            fmt = (encoding, channels, rate, bits)
        elif chunk_id == b"ds64" and head[:4] != b"RIFF":
            if size < 16:
                raise InvalidArgument(name, "not a readable WAV file (short ds64 chunk)")
            body = need(16, "ds64 chunk")
            if not _skip(f, size + (size & 1) - len(body)):
                raise InvalidArgument(name, "not a readable WAV file (it ends inside the ds64 chunk)")
            data_size64 = struct.unpack("<Q", body[8:16])[0]
        elif chunk_id == b"data":
            if fmt is None:
                raise InvalidArgument(name, "not a readable WAV file (data before the fmt chunk)")
            encoding, channels, rate, bits = fmt
            supported = (
                (encoding == WAVE_FORMAT_PCM and bits in (8, 16, 24, 32))
                or (encoding == WAVE_FORMAT_IEEE_FLOAT and bits in (32, 64))
                or (encoding in G711 and bits == 8)
            )
            if not supported:
                raise InvalidArgument(
                    name,
                    f"unsupported WAV encoding (format {encoding}, {bits} bits); "
                    "use PCM 8/16/24/32, float, or G.711 A-law / mu-law",
                )
            check_format(name, rate, channels)
            if size == 0xFFFFFFFF and data_size64:
                size = data_size64
            return WavFormat(encoding, channels, rate, bits, None if size in STREAMED_SIZES else size)
        elif not _skip(f, size + (size & 1)):  # skipped, never read into memory: its size may be anything
            label = chunk_id.decode("latin-1").strip()
            raise InvalidArgument(
                name, f"not a readable WAV file (no data chunk: a {label!r} chunk of {size:,} bytes runs past its end)"
            )


def decode_frames(data: bytes, fmt: WavFormat, name: str = "audio") -> np.ndarray:
    """Whole frames of ``data`` -> float32 mono (channels averaged) in [-1, 1]; a float sample that is NaN or
    infinite is refused, naming ``name``."""
    usable = len(data) - len(data) % fmt.frame_bytes
    raw = np.frombuffer(data[:usable], dtype=np.uint8)
    if fmt.encoding in G711:
        x = G711[fmt.encoding][raw]
    elif fmt.encoding == WAVE_FORMAT_IEEE_FLOAT:
        wide = raw.view("<f4" if fmt.bits == 32 else "<f8")
        if not np.isfinite(wide).all():
            raise InvalidArgument(name, "float samples must be finite numbers (found NaN or infinity)")
        x = wide.astype(np.float32)
    elif fmt.bits == 8:
        x = (raw.astype(np.float32) - 128.0) / 128.0
    elif fmt.bits == 16:
        x = raw.view("<i2").astype(np.float32) / 32768.0
    elif fmt.bits == 24:
        b = raw.reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    else:
        x = raw.view("<i4").astype(np.float32) / float(1 << 31)
    return x.reshape(-1, fmt.channels).mean(axis=1, dtype=np.float32)


class Resampler:
    """Polyphase windowed-sinc resampling from ``rate_in`` to ``rate_out``; ``push`` chunks, then ``flush``.

    Output sample m sits at input time m * rate_in / rate_out; it is the sum of the input samples k within
    ``zeros`` periods of the lower Nyquist rate, weighted by a Kaiser-windowed sinc. A ratio whose reduced terms
    pass MAX_PHASES (383,999 Hz to 16 kHz: 16,000 / 383,999) takes the nearest ratio within it instead (1 / 24: a
    0.0003% change of pace): the exact one would need a filter of millions of taps.
    """

    def __init__(self, rate_in: int, rate_out: int, zeros: int = 16, beta: float = 8.0, rolloff: float = 0.945):
        ratio = Fraction(rate_out, rate_in)
        if max(ratio.numerator, ratio.denominator) > MAX_PHASES:
            ratio = ratio.limit_denominator(MAX_PHASES)
        self.up, self.down = ratio.numerator, ratio.denominator
        self.identity = self.up == self.down
        step = max(self.up, self.down)
        self.center = zeros * step  # half-length of the filter on the upsampled grid
        n = np.arange(-self.center, self.center + 1, dtype=np.float64)
        cutoff = rolloff / (2.0 * step)  # cycles per upsampled sample
        self.filter = (2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(len(n), beta) * self.up).astype(np.float32)
        self.taps = 2 * self.center // self.up + 2
        # the filter by phase: output m reads inputs k0(m) .. k0(m) + taps - 1 with the weights of row
        # (m * down) % up, filter[m * down + center - k * up] (0 outside the filter): computed once, not per output
        phase = np.arange(self.up, dtype=np.int64)
        first = 2 * self.center - (self.center - phase) % self.up  # filter index of input k0 under each phase
        index = first[:, None] - self.up * np.arange(self.taps, dtype=np.int64)[None, :]  # (up, taps)
        inside = (index >= 0) & (index < len(self.filter))
        self.phases = np.where(inside, self.filter[np.clip(index, 0, len(self.filter) - 1)], 0.0).astype(np.float32)
        self.buffer = np.zeros(0, dtype=np.float32)
        self.offset = 0  # input index of buffer[0]
        self.received = 0  # input samples pushed
        self.produced = 0  # output samples returned

    def _outputs(self, stop: int, padded: np.ndarray) -> np.ndarray:
        """Output samples produced..stop-1; ``padded``: the buffer with ``taps`` zeros each side (input read as zero
        before the stream and past its end)."""
        m = np.arange(self.produced, stop, dtype=np.int64)
        k0 = -((self.center - m * self.down) // self.up)  # ceil((m*down - center) / up): first input in reach
        rows = sliding_window_view(padded, self.taps)[k0 - self.offset + self.taps]  # (M, taps): inputs k0 + t
        weights = self.phases[(m * self.down) % self.up]  # (M, taps)
        y = (weights * rows).sum(axis=1, dtype=np.float32)  # (M,)
        self.produced = stop
        return y

    def _run(self, final: bool) -> np.ndarray:
        if final:
            stop = -(-self.received * self.up // self.down)  # ceil: every output within the input's span
        else:
            # outputs whose last input (k <= (m*down + center) / up) has arrived
            stop = max(self.produced, (self.received * self.up - self.center - 1) // self.down + 1)
        parts = []
        block = max(256, BLOCK_ELEMENTS // self.taps)  # outputs at a time: the (M, taps) arrays stay small
        if self.produced < stop:
            pad = np.zeros(self.taps, dtype=np.float32)
            padded = np.concatenate([pad, self.buffer, pad])
        while self.produced < stop:
            parts.append(self._outputs(min(stop, self.produced + block), padded))
        keep_from = max(0, (self.produced * self.down - self.center) // self.up - 1)  # first input still needed
        if keep_from > self.offset:
            self.buffer = self.buffer[keep_from - self.offset :]
            self.offset = keep_from
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.identity:
            return x
        self.buffer = np.concatenate([self.buffer, x])
        self.received += len(x)
        return self._run(final=False)

    def flush(self) -> np.ndarray:
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        return self._run(final=True)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    r = Resampler(rate_in, rate_out)
    return np.concatenate([r.push(x), r.flush()])


def read_wav(path: Path, rate: int) -> np.ndarray:
    """A whole WAV file as float32 mono at ``rate``."""
    return np.concatenate(list(wav_chunks(path, rate)))


def wav_chunks(path: Path, rate: int, read_bytes: int = 1 << 20) -> Iterator[np.ndarray]:
    """A WAV file as float32 mono chunks at ``rate``, read about ``read_bytes`` at a time: memory stays bounded
    however long the recording. A file that cannot be opened, is not a readable WAV or holds no whole sample is an
    InvalidArgument naming it."""
    name = str(path)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise InvalidArgument(name, "no such file") from None
    except IsADirectoryError:
        raise InvalidArgument(name, "is a folder, not a WAV file") from None
    except PermissionError:
        raise InvalidArgument(name, "not readable (permission denied)") from None
    except OSError as exc:
        raise InvalidArgument(name, f"not readable ({exc.strerror or exc})") from None
    with f:
        if f.read(4) not in WAV_MAGICS and shutil.which("sox"):
            yield from _sox_chunks(path, rate, read_bytes)  # FLAC, Ogg, MP3...: what sox reads
            return
        f.seek(0)
        fmt = read_wav_header(f, name)
        produced = False
        for chunk in _decoded_chunks(f, fmt, name, rate, max(1, read_bytes // fmt.frame_bytes)):
            produced = True
            yield chunk
    if not produced:
        raise InvalidArgument(name, "no audio (the data chunk holds no whole sample)")


def _sox_chunks(path: Path, rate: int, read_bytes: int) -> Iterator[np.ndarray]:
    """A file that is not WAV, decoded by sox (the Debian package, where installed) to mono PCM16 at ``rate``;
    what sox cannot read is an InvalidArgument naming the file and sox's reason."""
    name = str(path)
    raw = ["-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1", "-r", str(rate), "-"]
    with subprocess.Popen(
        ["sox", "-V1", str(path), *raw], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        fmt = WavFormat(WAVE_FORMAT_PCM, 1, rate, 16, None)
        produced = False
        source: Any = proc.stdout  # a pipe's reader: BinaryIO's read
        for chunk in _decoded_chunks(source, fmt, name, rate, max(1, read_bytes // 2)):
            produced = True
            yield chunk
        said = proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
        code = proc.wait()
    if code != 0 or not produced:
        reason = said[-1].removeprefix("sox FAIL formats: ") if said else "no audio"
        raise InvalidArgument(name, f"not a WAV file, and sox cannot read it ({reason})")


def stream_chunks(
    f: BinaryIO, name: str, rate: int, raw_rate: int = 16000, raw_channels: int = 1, chunk_frames: int = 4000
) -> Iterator[np.ndarray]:
    """Float32 mono chunks at ``rate`` from a byte stream: a WAV (detected by its RIFF, RF64 or BW64 header) or raw
    PCM16 LE of ``raw_rate`` Hz and ``raw_channels`` channels (what ``arecord -t raw -f S16_LE`` writes)."""
    head = f.read(4)
    source: Any = _Prefixed(head, f)
    if head in WAV_MAGICS:
        fmt = read_wav_header(source, name)
    else:
        fmt = WavFormat(WAVE_FORMAT_PCM, raw_channels, raw_rate, 16, None)  # checked by the caller (--rate)
    yield from _decoded_chunks(source, fmt, name, rate, chunk_frames)


def _decoded_chunks(source: BinaryIO, fmt: WavFormat, name: str, rate: int, chunk_frames: int) -> Iterator[np.ndarray]:
    """The samples after a header of ``fmt``: decoded ``chunk_frames`` at a time and resampled to ``rate``."""
    resampler = Resampler(fmt.sample_rate, rate)
    left = fmt.data_bytes
    pending = b""
    while left is None or left > 0:
        want = chunk_frames * fmt.frame_bytes if left is None else min(left, chunk_frames * fmt.frame_bytes)
        data = source.read(want)
        if not data:
            break
        if left is not None:
            left -= len(data)
        data = pending + data
        usable = len(data) - len(data) % fmt.frame_bytes
        pending = data[usable:]
        out = resampler.push(decode_frames(data[:usable], fmt, name))
        if len(out):
            yield out
    tail = resampler.flush()
    if len(tail):
        yield tail


class _Prefixed(io.RawIOBase):
    """A byte stream with some bytes already read put back in front; ``read(n)`` returns up to n bytes, fewer
    only at the end of the stream."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self.prefix, self.rest = prefix, rest

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        n = -1 if n is None else n
        out = bytearray()
        if self.prefix:
            take = self.prefix if n < 0 else self.prefix[:n]
            self.prefix = self.prefix[len(take) :]
            out += take
        while n < 0 or len(out) < n:
            data = self.rest.read(-1 if n < 0 else n - len(out))
            if not data:
                break
            out += data
        return bytes(out)


class Microphone:
    """PCM16 mono from ALSA's ``arecord``; a missing program, a missing or busy device is a DeviceError."""

    def __init__(self, device: str | None, rate: int) -> None:
        cmd = ["arecord", "-q", "-t", "raw", "-f", "S16_LE", "-c", "1", "-r", str(rate)]
        if device:
            cmd[1:1] = ["-D", device]
        self.device = device or "default"
        self.rate = rate
        try:
            self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise DeviceError("arecord not found: install ALSA's tools (apt install alsa-utils)") from None
        self._stderr: list[bytes] = []
        self._reader = threading.Thread(target=self._drain_stderr, daemon=True)
        self._reader.start()

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    def chunks(self, chunk_frames: int = 4000) -> Iterator[np.ndarray]:
        assert self.process.stdout is not None
        while True:
            data = self.process.stdout.read(chunk_frames * 2)
            if not data:
                break
            yield np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        code = self.process.wait()
        self._reader.join(timeout=1)
        message = b"".join(self._stderr).decode(errors="replace").strip().splitlines()
        detail = message[-1] if message else f"arecord exited with status {code}"
        raise DeviceError(f"microphone {self.device!r}: {detail}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=2)


def encode_wav(samples: np.ndarray, rate: int) -> bytes:
    """Float mono in [-1, 1] -> a 16-bit PCM WAV file's bytes."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        len(pcm),
    )
    return header + pcm
