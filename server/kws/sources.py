"""Speech for the keyword spotter beyond espeak-ng: voices built from recordings of real speakers (festival and
flite), rendered at run time, and what training reads of them and of the recorded people
(:mod:`server.kws.recordings`).

Voices (:data:`VOICES`, one speaker each): flite's kal, awb, rms and slt, festival's kal and ked (diphone) and slt
(HTS). :func:`synthesize_many` renders words with a duration stretch and pitch target per rendering, cached on disk
like espeak-ng's renderings. :data:`DEVELOPMENT_VOICES` and the development speakers are not trained on unless a
run names the speakers (``--train-speakers``): a run is chosen by how it hears people it never heard, and the
speakers it trained on leave its development figures (:func:`server.kws.devset.score`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.data.cache import cache_dir
from server.data.speech import NUMBER_WORDS
from server.errors import InvalidArgument
from server.kws.audio_files import read_wav
from server.kws.data import UNKNOWN_INDEX, BaseClips, Clip, KWSDataConfig, hard_negatives, training_words
from server.kws.recordings import (
    _CACHE_VERSION,
    DEVELOPMENT_SPEAKERS,
    SourceError,
    Utterance,
    _trimmed,
    is_stamp_reader,
    recorded_speaker,
    recorded_speaker_names,
    recorded_speakers,
)

FESTIVAL_VOICES = Path("/usr/share/festival/voices")
DEVELOPMENT_VOICES = ("flite-rms", "festival-ked")  # voices (below) that no training run reads

# Voices built from recordings of real speakers: speaker -> (engine, voice, its mean F0 in Hz).
VOICES: dict[str, tuple[str, str, float]] = {
    "flite-kal": ("flite", "kal16", 105.0),
    "flite-awb": ("flite", "awb", 110.0),
    "flite-rms": ("flite", "rms", 100.0),
    "flite-slt": ("flite", "slt", 165.0),
    "festival-kal": ("festival", "kal_diphone", 105.0),
    "festival-ked": ("festival", "ked_diphone", 105.0),
    "festival-slt": ("festival", "cmu_us_slt_arctic_hts", 165.0),
}
VOICE_PACKAGES = {"flite": "flite", "festival": "festival, festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts"}
STRETCH_RANGE = (0.75, 1.5)  # duration stretch (> 1 slower)
PITCH_RANGE = (0.75, 1.35)  # times the voice's mean F0


@dataclass(frozen=True)
class VoiceRendering:
    """How a voice speaks a word: ``stretch`` times its durations, ``pitch`` times its mean F0."""

    speaker: str
    stretch: float = 1.0
    pitch: float = 1.0

    def validate(self) -> None:
        if self.speaker not in VOICES:
            raise InvalidArgument("speaker", f"must be one of {', '.join(VOICES)}, got {self.speaker!r}")


def random_voice_rendering(rng: np.random.Generator, speaker: str) -> VoiceRendering:
    return VoiceRendering(
        speaker, round(float(rng.uniform(*STRETCH_RANGE)), 2), round(float(rng.uniform(*PITCH_RANGE)), 2)
    )


def available_voices() -> list[str]:
    """The speakers of :data:`VOICES` whose engine and voice are installed."""

    def installed(engine: str, voice: str) -> bool:
        if shutil.which(engine) is None:
            return False
        return engine == "flite" or any(FESTIVAL_VOICES.glob(f"*/{voice}"))

    return [speaker for speaker, (engine, voice, _) in VOICES.items() if installed(engine, voice)]


def _voice_cache() -> Path:
    path = cache_dir() / "voices"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _key(text: str, r: VoiceRendering) -> str:
    h = hashlib.sha256(f"{_CACHE_VERSION}\0{text}\0{r.speaker}\0{r.stretch}\0{r.pitch}".encode())
    return h.hexdigest()[:32]


def _read(path: Path) -> np.ndarray:
    return read_wav(path)  # any rate -> 16 kHz mono


def _flite(items: Sequence[tuple[str, VoiceRendering]], folder: Path) -> list[Path]:
    if shutil.which("flite") is None:
        raise SourceError(f"flite is not installed; install the Debian package {VOICE_PACKAGES['flite']}")
    paths = []
    for i, (text, r) in enumerate(items):
        _, voice, f0 = VOICES[r.speaker]
        path = folder / f"{i}.wav"
        args = ["flite", "-voice", voice, "-t", text, "-o", str(path)]
        args += ["--setf", f"duration_stretch={r.stretch}", "--setf", f"int_f0_target_mean={f0 * r.pitch:.1f}"]
        proc = subprocess.run(args, capture_output=True, check=False, timeout=60)
        if proc.returncode != 0 or not path.exists():
            raise SourceError(f"flite failed for {r.speaker}: {proc.stderr.decode('utf-8', 'replace').strip()}")
        paths.append(path)
    return paths


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _festival(items: Sequence[tuple[str, VoiceRendering]], folder: Path) -> list[Path]:
    """One festival process per voice renders all of its items (a script of ``utt.save.wave`` calls)."""
    if shutil.which("festival") is None:
        raise SourceError(f"festival is not installed; install the Debian packages {VOICE_PACKAGES['festival']}")
    paths = [folder / f"{i}.wav" for i in range(len(items))]
    by_voice: dict[str, list[int]] = {}
    for i, (_, r) in enumerate(items):
        by_voice.setdefault(VOICES[r.speaker][1], []).append(i)
    for voice, indices in by_voice.items():
        lines = [f"(voice_{voice})"]
        for i in indices:
            text, r = items[i]
            f0 = VOICES[r.speaker][2] * r.pitch
            lines.append(f"(Parameter.set 'Duration_Stretch {r.stretch})")
            lines.append(f"(set! int_lr_params (list (list 'target_f0_mean {f0:.1f}) (list 'target_f0_std 12) "
                         "(list 'model_f0_mean 170) (list 'model_f0_std 34)))")  # fmt: skip
            lines.append(f'(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) "{paths[i]}" \'riff)')
        script = folder / f"{voice}.scm"
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        proc = subprocess.run(["festival", "-b", str(script)], capture_output=True, check=False, timeout=3600)
        missing = [i for i in indices if not paths[i].exists()]
        if proc.returncode != 0 or missing:
            message = proc.stderr.decode("utf-8", "replace").strip()[-500:]
            raise SourceError(f"festival failed for voice {voice} ({len(missing)} files missing): {message}")
    return paths


_write_lock = threading.Lock()


def synthesize_many(items: Sequence[tuple[str, VoiceRendering]]) -> list[np.ndarray]:
    """Every (text, rendering) spoken, 16 kHz float32 trimmed of silence, in order; from the cache where it was
    rendered before."""
    for _, r in items:
        r.validate()
    cached = _voice_cache()
    out: list[np.ndarray | None] = []
    todo: dict[str, list[int]] = {"flite": [], "festival": []}
    for i, (text, r) in enumerate(items):
        if not text.strip():
            raise InvalidArgument("text", "is empty")
        try:
            out.append(np.load(cached / f"{_key(text, r)}.npy"))
        except (FileNotFoundError, ValueError, EOFError, OSError):
            out.append(None)
            todo[VOICES[r.speaker][0]].append(i)
    for engine, indices in todo.items():
        if not indices:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            batch = [items[i] for i in indices]
            paths = (_flite if engine == "flite" else _festival)(batch, Path(tmp))
            for i, path in zip(indices, paths, strict=True):
                audio = _trimmed(_read(path))
                target = cached / f"{_key(*items[i])}.npy"
                part = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
                with _write_lock, open(part, "wb") as f:
                    np.save(f, audio)
                os.replace(part, target)
                out[i] = audio
    return [a for a in out if a is not None]


def voice_utterances(
    speaker: str, words: Sequence[tuple[str, int]], renderings: int, seed: int, hard: bool = False
) -> list[Utterance]:
    """``renderings`` of each (word, label) by the voice ``speaker``, each with a seeded stretch and pitch."""
    rng = np.random.default_rng([seed, *speaker.encode()])
    items = [(w, random_voice_rendering(rng, speaker)) for w, _ in words for _ in range(renderings)]
    labels = [k for _, k in words for _ in range(renderings)]
    audio = synthesize_many(items)
    return [Utterance(speaker, text, k, a, hard) for (text, _), k, a in zip(items, labels, audio, strict=True)]


def training_voices() -> list[str]:
    """The installed voices that training reads: :data:`VOICES` less :data:`DEVELOPMENT_VOICES`."""
    return [v for v in available_voices() if v not in DEVELOPMENT_VOICES]


def training_speakers() -> list[str]:
    """The installed recorded speakers that training reads: all but :data:`DEVELOPMENT_SPEAKERS`."""
    return [n for n in recorded_speaker_names() if n not in DEVELOPMENT_SPEAKERS]


def extra_training_clips(config: KWSDataConfig, base: BaseClips) -> BaseClips:
    """``base`` (espeak-ng's training clips) and after them the speech beyond espeak-ng that ``config`` asks for:
    the training voices' number words and other words, the recorded people's other words (Tux Paint's stamp readers
    only with ``config.stamp_unknown``), and perturbed copies
    (:mod:`server.kws.perturb`, a generator seeded by ``config.seed``) of every number-word clip and of the voices'
    and recordings' words. No development voice is read, nor a development speaker that ``config.train_speakers``
    does not name."""
    from server.kws.perturb import perturb  # scipy's STFT: only when asked for

    clips, audio = list(base.clips), list(base.audio)
    extra: list[Utterance] = []
    numbers = [(w, k) for k, w in enumerate(NUMBER_WORDS)]
    words = [(w, UNKNOWN_INDEX) for w in training_words(config)[: config.voice_words]]
    hard = [(w, UNKNOWN_INDEX) for w in hard_negatives(config)] if config.hard_renderings and config.voice_words else []
    voices = training_voices() if config.voice_renderings or config.voice_words else []
    if (config.voice_renderings or config.voice_words) and not voices:
        packages = ", ".join(VOICE_PACKAGES.values())
        raise SourceError(f"no festival or flite voice is installed (Debian packages {packages})")
    for speaker in voices:
        if config.voice_renderings:
            extra += voice_utterances(speaker, numbers, config.voice_renderings, config.seed)
        if words:
            extra += voice_utterances(speaker, words, 1, config.seed + 1)
        if hard:
            extra += voice_utterances(speaker, hard, 1, config.seed + 2, hard=True)
    wanted = {True: config.stamp_unknown, False: config.recorded_unknown}
    readers = [s for s in training_speakers() if wanted[is_stamp_reader(s)]]
    for us in recorded_speakers(readers).values():
        extra += [u for u in us if u.label == UNKNOWN_INDEX]
    for speaker in config.train_speakers:  # development speakers a run trains on: all their words
        if speaker not in recorded_speaker_names():
            raise SourceError(f"the recorded speaker {speaker} is not installed (make setup installs its package)")
        extra += recorded_speaker(speaker) * config.train_speaker_copies
    for u in extra:
        clips.append(Clip(u.label, u.text, None, hard=u.hard))
        audio.append(u.audio)
    if config.perturbed_copies:
        rng = np.random.default_rng([config.seed, 9])
        chosen = [i for i, c in enumerate(clips) if c.label < UNKNOWN_INDEX or i >= len(base.clips)]
        for _ in range(config.perturbed_copies):
            for i in chosen:
                clips.append(clips[i])
                audio.append(perturb(rng, audio[i]))
    return BaseClips(clips, audio)
