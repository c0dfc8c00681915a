"""Speech rendered by espeak-ng: the data of the audio models.

espeak-ng (a Debian package) turns text into speech with many English accents and voice variants. A voice is
``accent+variant`` ("en-us+f3"); the held-out voices share neither their accent nor their variant with any
training voice, so validation hears voices the models never heard. Every rendering is cached on disk, keyed by
its text, settings and the espeak-ng version, as 16 kHz float32.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import threading
import wave
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from server.audio.constants import SAMPLE_RATE
from server.audio.resample import resample
from server.data.cache import cache_dir
from server.errors import CorpusError, InvalidArgument

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Words a listener (or a classifier) could take for a number word.
HOMOPHONES = frozenset(
    {"oh", "won", "wan", "to", "too", "tu", "for", "fore", "four", "ate", "eight", "sics", "sicks", "nein", "heaven"}
)

ACCENTS = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-029", "en-us-nyc")
HELD_OUT_ACCENTS = ("en-gb-x-gbcwmd", "en-029")
# espeak-ng's voice variants (espeak-ng --voices=variant); a few of each kind are held out.
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
    "klatt4", "klatt5", "klatt6", "croak", "whisper", "whisperf", "grandma", "grandpa", "adam", "Alex", "Alicia",
    "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin", "boris", "caleb", "david", "Denis", "Diogo",
    "ed", "edward", "edward2", "Gene", "Gene2", "gustave", "Henrique", "Hugo", "iven", "iven2", "iven3", "iven4",
    "Jacky", "john", "kaukovalta", "Lee", "linda", "marcelo", "Marco", "Mario", "max", "Michael", "michel", "miguel",
    "Mike", "Mr", "Nguyen", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "sandro", "shelby",
    "steph", "steph2", "steph3", "travis", "victor", "zac", "anika", "announcer", "AnxiousAndy", "fast",
)  # fmt: skip
HELD_OUT_VARIANTS = (
    "m3", "f4", "klatt3", "whisperf", "grandma", "Annie", "edward", "iven3", "linda", "quincy", "steph2",
)  # fmt: skip

SPEED_RANGE = (120, 260)  # words per minute (espeak-ng -s)
PITCH_RANGE = (20, 80)  # espeak-ng -p, 0-99
AMPLITUDE_RANGE = (60, 140)  # espeak-ng -a, 0-200
SPLITS = ("train", "heldout")
_CACHE_VERSION = 1


class SpeechError(CorpusError):
    """espeak-ng is missing or failed."""


@dataclass(frozen=True)
class Rendering:
    """How espeak-ng speaks a text."""

    voice: str = "en-us"
    speed: int = 175
    pitch: int = 50
    amplitude: int = 100

    def args(self) -> list[str]:
        return ["-v", self.voice, "-s", str(self.speed), "-p", str(self.pitch), "-a", str(self.amplitude)]


def voices(split: str) -> list[str]:
    """The ``accent+variant`` voices of a split; no held-out voice shares its accent or variant with training."""
    if split not in SPLITS:
        raise InvalidArgument("split", f"must be one of {', '.join(SPLITS)}, got {split!r}")
    held = split == "heldout"
    return [
        f"{accent}+{variant}"
        for accent in ACCENTS
        for variant in VARIANTS
        if (accent in HELD_OUT_ACCENTS) == held and (variant in HELD_OUT_VARIANTS) == held
    ]


def random_rendering(rng: np.random.Generator, split: str) -> Rendering:
    pool = voices(split)
    return Rendering(
        voice=pool[int(rng.integers(len(pool)))],
        speed=int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1)),
        pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
        amplitude=int(rng.integers(AMPLITUDE_RANGE[0], AMPLITUDE_RANGE[1] + 1)),
    )


@cache
def espeak_version() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpeechError("espeak-ng is not installed; install the Debian package espeak-ng (make setup does)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    # "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/...": the version without where this machine keeps its data
    return out.stdout.split("Data at:")[0].strip() or "unknown"


def _speech_cache() -> Path:
    path = cache_dir() / "speech"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cache_key(text: str, rendering: Rendering, sample_rate: int) -> str:
    h = hashlib.sha256()
    for part in (str(_CACHE_VERSION), espeak_version(), text, *rendering.args(), str(sample_rate)):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:32]


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """espeak-ng streams its WAV, so the header's sizes are placeholders: read the format, take the rest as data."""
    with wave.open(io.BytesIO(data[:44] + b"\0\0"), "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
    if width != 2 or channels != 1:
        raise SpeechError(f"espeak-ng wrote {channels} channel(s) of {8 * width}-bit audio; expected mono 16-bit")
    pcm = np.frombuffer(data[44 : 44 + (len(data) - 44) // 2 * 2], dtype="<i2")
    return pcm.astype(np.float32) / 32768.0, rate


def synthesize(text: str, rendering: Rendering, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Run espeak-ng (no cache): float32 mono in [-1, 1] at ``sample_rate``."""
    espeak_version()
    try:
        proc = subprocess.run(
            ["espeak-ng", *rendering.args(), "--stdout", "-b", "1"],  # the text on stdin: it may start with "-"
            input=text.replace("\n", " ").encode("utf-8"),
            capture_output=True,
            check=False,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        raise SpeechError(f"espeak-ng took over 60 s for {len(text)} characters") from exc
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        message = proc.stderr.decode("utf-8", "replace").strip() or f"exit code {proc.returncode}"
        raise SpeechError(f"espeak-ng failed for voice {rendering.voice!r}: {message}")
    audio, rate = _read_wav(proc.stdout)
    return np.clip(resample(audio, rate, sample_rate), -1.0, 1.0)


_write_lock = threading.Lock()
# np.load parses a file's header with ast.literal_eval, which CPython 3.11 does not run safely in two threads at
# once ("SystemError: AST constructor recursion depth mismatch", seen once in a test run); reading is quick.
_load_lock = threading.Lock()


def render(text: str, rendering: Rendering, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``text`` spoken as ``rendering`` says, from the cache when it was rendered before (thread-safe)."""
    if not text.strip():
        raise InvalidArgument("text", "is empty")
    path = _speech_cache() / f"{_cache_key(text, rendering, sample_rate)}.npy"
    try:
        with _load_lock:
            return np.load(path)
    except (FileNotFoundError, ValueError, EOFError, OSError):
        pass
    audio = synthesize(text, rendering, sample_rate)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    with _write_lock, open(tmp, "wb") as f:
        np.save(f, audio)
    os.replace(tmp, path)
    return audio


def render_many(
    items: Sequence[tuple[str, Rendering]],
    sample_rate: int = SAMPLE_RATE,
    workers: int = 1,
    progress: bool = False,
) -> list[np.ndarray]:
    """Render every (text, rendering) pair, in order; espeak-ng runs in ``workers`` processes at once."""
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc="espeak-ng", unit="clip", disable=not progress, leave=False)

    def one(item: tuple[str, Rendering]) -> np.ndarray:
        audio = render(item[0], item[1], sample_rate)
        bar.update()
        return audio

    try:
        if workers <= 1:
            return [one(item) for item in items]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(one, items))
    finally:
        bar.close()


def trim_silence(audio: np.ndarray, threshold: float = 0.01, pad: int = 160) -> np.ndarray:
    """``audio`` without its leading and trailing samples quieter than ``threshold`` (keeping ``pad`` of each)."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio[:0]
    return audio[max(0, loud[0] - pad) : loud[-1] + 1 + pad]


_SPEAKER_LINE = re.compile(r"^[A-Z][A-Z .'-]*\.$")
_STAGE = re.compile(r"\[[^\]]*\]")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


@cache
def _training_lines() -> tuple[str, ...]:
    from server.data.shakespeare import load_shakespeare

    lines = []
    for raw in load_shakespeare().train.splitlines():
        line = _STAGE.sub("", raw).strip()
        if len(line) >= 12 and not _SPEAKER_LINE.match(line) and any(c.islower() for c in line):
            lines.append(line)
    return tuple(lines)


def play_lines(count: int, seed: int, max_chars: int = 80) -> list[str]:
    """``count`` distinct lines spoken in the training plays (no speaker headings or stage directions)."""
    pool = [line for line in _training_lines() if len(line) <= max_chars]
    if count > len(pool):
        raise InvalidArgument("count", f"at most {len(pool)} lines of at most {max_chars} characters exist")
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.choice(len(pool), size=count, replace=False)]


@cache
def _training_words() -> tuple[str, ...]:
    excluded = set(NUMBER_WORDS) | HOMOPHONES
    words = {w for line in _training_lines() for w in _WORD.findall(line.lower())}
    return tuple(sorted(w for w in words if w not in excluded and len(w) >= 2))


def other_word_count() -> int:
    """How many words :func:`other_words` can give."""
    return len(_training_words())


def other_words(count: int, seed: int) -> list[str]:
    """``count`` distinct words of the training plays that are neither number words nor sound like one: the first
    ``count`` of a seeded order, so that a larger count extends a smaller one."""
    pool = _training_words()
    if count > len(pool):
        raise InvalidArgument("count", f"at most {len(pool)} words exist")
    order = np.random.default_rng(seed).permutation(len(pool))
    return [pool[i] for i in order[:count]]
