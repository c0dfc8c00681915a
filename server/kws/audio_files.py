"""WAV files for keyword spotting: any rate, channels and sample format -> one second of 16 kHz mono, and a label
from the file's place (Speech Commands layout ``DIR/seven/xxx.wav``, or a name prefix ``seven_xxx.wav``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import wavfile

from server.audio.constants import SAMPLE_RATE
from server.audio.resample import resample
from server.errors import InvalidArgument
from server.kws.data import LABELS, SILENCE, UNKNOWN

CLIP = SAMPLE_RATE
SILENCE_NAMES = frozenset({"silence", "_silence_", "_background_noise_", "background", "noise"})


def read_wav(path: Path) -> np.ndarray:
    """Mono float32 in [-1, 1] at 16 kHz, whatever the file's rate, channel count and sample format."""
    try:
        rate, data = wavfile.read(path)
    except FileNotFoundError:
        raise InvalidArgument("FILE", f"{path} does not exist") from None
    except (ValueError, OSError) as exc:
        raise InvalidArgument("FILE", f"{path} is not a readable WAV file: {exc}") from None
    x = np.asarray(data)
    if x.ndim == 2:
        x = x.astype(np.float64).mean(axis=1) if x.dtype.kind == "f" else x.mean(axis=1).astype(x.dtype)
    if x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128) / 128
    elif x.dtype.kind == "i":
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        raise InvalidArgument("FILE", f"{path} holds no samples")
    return np.clip(resample(x, int(rate)), -1.0, 1.0)


def one_second(x: np.ndarray) -> np.ndarray:
    """(16000,): a shorter clip centred in zeros; of a longer one the loudest second (10 ms steps)."""
    if len(x) <= CLIP:
        out = np.zeros(CLIP, dtype=np.float32)
        start = (CLIP - len(x)) // 2
        out[start : start + len(x)] = x
        return out
    energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    starts = np.arange(0, len(x) - CLIP + 1, 160)
    best = int(starts[np.argmax(energy[starts + CLIP] - energy[starts])])
    return x[best : best + CLIP].astype(np.float32)


def label_of(path: Path) -> int:
    """The label index a file's parent folder or name prefix gives; any other word is "unknown"."""
    for name in (path.parent.name.lower(), path.stem.lower().replace("-", "_").split("_")[0]):
        if name in LABELS:
            return LABELS.index(name)
        if name in SILENCE_NAMES:
            return LABELS.index(SILENCE)
    parent = path.parent.name.lower()
    if parent and parent not in (".", ""):
        return LABELS.index(UNKNOWN)
    raise InvalidArgument("FILE", f"{path}: no label in its folder or name (e.g. seven/a.wav or seven_a.wav)")


def collect(paths: list[Path]) -> list[Path]:
    """The WAV files of each path (folders searched recursively), sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())
            if not found:
                raise InvalidArgument("FILE", f"{path} holds no .wav files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidArgument("FILE", f"{path} does not exist")
    return files
