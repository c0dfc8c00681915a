"""The keyword spotter's development set of real people: speakers that no training run reads.

Two parts, both kept apart from training by speaker (:data:`server.kws.recordings.DEVELOPMENT_SPEAKERS` and
:data:`DEVELOPMENT_VOICES`):

- recorded people: asterisk's Allison (the ten digits and about 400 other prompts, 8 kHz), the TIDIGITS speaker's
  five digits, the speakers of pocketsphinx-testdata, a talking clock's, a table-tennis umpire's and a chess
  announcer's number words and other words (saytime, csmash-data, scid-data), and the English object names and
  letters of ktuberling and klettres (other words);
- voices built from recorded speakers that training leaves out (:data:`~server.kws.sources.DEVELOPMENT_VOICES`:
  flite's rms and festival's ked), each saying every
  number word :data:`VOICE_RENDERINGS` times with seeded durations and pitches, and the hard negatives once.

Each clip is heard as the edge client hears a clip no longer than its window: centred in one second of silence, at
the level it was recorded (a longer one: its loudest second). Choose runs by this set; the recordings held back by
the maintainers are the test.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.data.speech import NUMBER_WORDS
from server.kws.audio_files import one_second
from server.kws.data import HARD_NEGATIVES, HOLDERS, LABELS, UNKNOWN_INDEX
from server.kws.recordings import DEVELOPMENT_SPEAKERS, Utterance, recorded_speaker_names, recorded_speakers
from server.kws.sources import DEVELOPMENT_VOICES, available_voices, voice_utterances

VOICE_RENDERINGS = 8
SEED = 11


@dataclass
class DevSet:
    waves: np.ndarray  # (N, 16000) float32
    labels: np.ndarray  # (N,) int64
    speakers: list[str]
    texts: list[str]
    hard: np.ndarray  # (N,) bool
    recorded: np.ndarray  # (N,) bool: a recording of a person (not a voice built from one)


def window(audio: np.ndarray) -> np.ndarray:
    """(16000,): ``audio`` centred in silence at its own level, or its loudest second."""
    return one_second(audio)


def development_utterances(
    speakers: Sequence[str] = DEVELOPMENT_SPEAKERS, voices: Sequence[str] = DEVELOPMENT_VOICES
) -> list[tuple[Utterance, bool]]:
    """(utterance, recorded) of the installed development speakers and voices."""
    installed = set(recorded_speaker_names())
    out = [(u, True) for us in recorded_speakers([s for s in speakers if s in installed]).values() for u in us]
    numbers = [(w, k) for k, w in enumerate(NUMBER_WORDS)]
    hard = [(w, UNKNOWN_INDEX) for w in HARD_NEGATIVES]
    for speaker in [v for v in voices if v in available_voices()]:
        out += [(u, False) for u in voice_utterances(speaker, numbers, VOICE_RENDERINGS, SEED)]
        out += [(u, False) for u in voice_utterances(speaker, hard, 1, SEED + 1, hard=True)]
    return out


def development_set(
    speakers: Sequence[str] = DEVELOPMENT_SPEAKERS, voices: Sequence[str] = DEVELOPMENT_VOICES
) -> DevSet:
    found = development_utterances(speakers, voices)
    return DevSet(
        waves=np.stack([window(u.audio) for u, _ in found]) if found else np.zeros((0, 16000), np.float32),
        labels=np.asarray([u.label for u, _ in found], dtype=np.int64),
        speakers=[u.speaker for u, _ in found],
        texts=[u.text for u, _ in found],
        hard=np.asarray([u.hard for u, _ in found], dtype=bool),
        recorded=np.asarray([r for _, r in found], dtype=bool),
    )


def _share(right: np.ndarray) -> float | None:
    return round(float(right.mean()), 4) if len(right) else None


def score(predicted: np.ndarray, dev: DevSet, trained_on: Sequence[str] = ()) -> dict[str, Any]:
    """Number words right and other words heard as unknown (``predicted``: label indices, -1 for no answer): in
    all for the recordings of people and for the voices, per speaker, and (number words) per word; the number-word
    misses as ``speaker:word->answer``. The speakers ``trained_on`` (a run's ``--train-speakers``) keep their own
    line, marked, and stay out of every other figure."""
    numbers = dev.labels < UNKNOWN_INDEX
    right = predicted == dev.labels
    speakers = np.asarray(dev.speakers)
    unseen = ~np.isin(speakers, list(trained_on))
    holder = np.isin(np.asarray(dev.texts), HOLDERS) & ~numbers
    out: dict[str, Any] = {
        "recorded_numbers": _share(right[numbers & dev.recorded & unseen]),
        "recorded_unknown": _share(right[~numbers & dev.recorded & unseen]),
        "voices_numbers": _share(right[numbers & ~dev.recorded]),
        "voices_unknown": _share(right[~numbers & ~dev.recorded]),
        # the other words that hold a number word whole (HOLDERS: "sixteen", "ninety"), people and voices
        "holders_unknown": _share(right[holder & unseen]),
        "n_holders": int((holder & unseen).sum()),
        "trained_on": list(trained_on),
        "speakers": {},
        "words": {},
    }
    for speaker in dict.fromkeys(dev.speakers):
        mine = speakers == speaker
        out["speakers"][speaker] = {
            "numbers": _share(right[mine & numbers]),
            "n_numbers": int((mine & numbers).sum()),
            "unknown": _share(right[mine & ~numbers]),
            "n_unknown": int((mine & ~numbers).sum()),
            **({"trained_on": True} if speaker in trained_on else {}),
        }
    for k, word in enumerate(NUMBER_WORDS):
        out["words"][word] = _share(right[(dev.labels == k) & unseen])
    misses: dict[str, int] = defaultdict(int)
    for i in np.flatnonzero(numbers & ~right & unseen):
        answer = LABELS[predicted[i]] if predicted[i] >= 0 else "(none)"
        misses[f"{dev.speakers[i]}:{dev.texts[i]}->{answer}"] += 1
    out["number_misses"] = dict(misses)
    return out
