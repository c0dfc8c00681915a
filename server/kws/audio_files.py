"""Audio files for keyword spotting: any rate, channels and sample format -> one second of 16 kHz mono, and a label
from the file's place (Speech Commands layout ``DIR/seven/xxx.wav``, or a name prefix ``seven_xxx.wav``). WAV files
of PCM or float samples are read directly; G.711 WAV files (8 kHz telephone recordings) and FLAC, Ogg, MP3, AIFF
and Sun audio files through sox, the Debian package."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from server.audio.constants import SAMPLE_RATE
from server.audio.resample import resample
from server.errors import InvalidArgument
from server.kws.data import LABELS, SILENCE, UNKNOWN

CLIP = SAMPLE_RATE
SILENCE_NAMES = frozenset({"silence", "_silence_", "_background_noise_", "background", "noise"})


# What ``collect`` finds in a folder: WAV, and what sox reads with the Debian packages the Makefile installs.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au")


def read_wav(path: Path) -> np.ndarray:
    """Mono float32 in [-1, 1] at 16 kHz, whatever the file's rate, channel count and sample format (a WAV file
    of PCM or float samples; any other file sox reads, G.711 WAV files included, through sox)."""
    try:
        rate, data = wavfile.read(path)
    except FileNotFoundError:
        raise InvalidArgument("FILE", f"{path} does not exist") from None
    except (ValueError, OSError) as exc:
        if path.is_dir():
            raise InvalidArgument("FILE", f"{path} is a folder, not an audio file") from None
        rate, data = _through_sox(path, str(exc))
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


def _through_sox(path: Path, why: str) -> tuple[int, np.ndarray]:
    """(rate, 16-bit samples) of a file the WAV reader refused (``why``), decoded by sox at its own rate."""
    if shutil.which("sox") is None:
        raise InvalidArgument("FILE", f"{path} is not a readable WAV file ({why}); install sox to read other formats")
    as_pcm16 = ["-t", "wav", "-e", "signed-integer", "-b", "16", "-"]
    done = subprocess.run(["sox", "-V1", str(path), *as_pcm16], capture_output=True, check=False)
    if done.returncode != 0 or len(done.stdout) < 44:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = said[-1].removeprefix("sox FAIL formats: ") if said else f"sox exited with {done.returncode}"
        raise InvalidArgument("FILE", f"{path} is not a readable audio file: {reason}")
    rate, data = wavfile.read(io.BytesIO(done.stdout))
    return int(rate), data


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
    """The audio files of each path (folders searched recursively for AUDIO_SUFFIXES), sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
            if not found:
                raise InvalidArgument("FILE", f"{path} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidArgument("FILE", f"{path} does not exist")
    return files
