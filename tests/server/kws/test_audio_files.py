"""WAV input of any rate and format, one-second windows, labels from folders and names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from server.errors import InvalidArgument
from server.kws.audio_files import collect, label_of, one_second, read_wav
from server.kws.data import LABELS


def test_an_8_khz_stereo_int16_file_becomes_16_khz_mono(tmp_path: Path) -> None:
    """Rate, channels and sample format are converted; the tone keeps its frequency."""
    t = np.arange(8000) / 8000
    left = (0.5 * np.sin(2 * np.pi * 500 * t) * 32767).astype(np.int16)
    path = tmp_path / "seven_a.wav"
    wavfile.write(path, 8000, np.stack([left, left], axis=1))
    x = read_wav(path)
    assert x.dtype == np.float32 and len(x) == 16_000
    assert np.argmax(np.abs(np.fft.rfft(x))) == 500  # 1 Hz bins over one second
    assert np.max(np.abs(x)) == pytest.approx(0.5, abs=0.02)


def test_one_second_keeps_the_loudest_part() -> None:
    """A long recording gives the second around its loudest part; a short one is centred."""
    x = np.zeros(48_000, dtype=np.float32)
    x[30_000:31_000] = 0.5
    window = one_second(x)
    assert len(window) == 16_000 and np.sum(window**2) == pytest.approx(np.sum(x**2))
    short = one_second(np.ones(8000, dtype=np.float32))
    assert short[:4000].sum() == 0 and short[4000:12_000].sum() == 8000


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("data/seven/0a1b.wav", "seven"),
        ("data/yes/0a1b.wav", "unknown"),
        ("data/_background_noise_/white.wav", "silence"),
        ("rec/zero_take2.wav", "zero"),
        ("rec/nine-01.wav", "nine"),
    ],
)
def test_labels_come_from_folder_or_prefix(path: str, label: str) -> None:
    """Speech Commands folders, name prefixes, other words as unknown, noise folders as silence."""
    assert LABELS[label_of(Path(path))] == label


def test_missing_and_unreadable_files_are_named(tmp_path: Path) -> None:
    """A missing path or a file that is not audio (not WAV, nothing sox reads) is an InvalidArgument naming it."""
    with pytest.raises(InvalidArgument, match="does not exist"):
        collect([tmp_path / "nope"])
    bad = tmp_path / "one_x.wav"
    bad.write_bytes(b"not a wav file at all")
    with pytest.raises(InvalidArgument, match=r"one_x\.wav is not a readable audio file"):
        read_wav(bad)
