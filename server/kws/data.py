"""Keyword-spotting data: espeak-ng renderings of the number words and of other words, and noise for "silence".

A modest number of base clips is rendered once (cached by ``server.data.speech``) and trimmed; a share of the
number words is spoken from :data:`PRONUNCIATIONS` (how other English accents and learners say them, as espeak-ng
phonemes) rather than from the spelling, so that the model hears more vowels than the training accents' own and
leans on the consonants. Training draws
fresh one-second clips from them through heavy augmentation (:mod:`server.kws.augment`) every batch, a label
chosen uniformly among the twelve. The held-out set is fixed by its seed: held-out voices (neither accent nor
variant seen in training) saying the number words and other words, and noise clips; each word is placed at a
seeded offset in the second, either clean or through the same augmentation ("noisy").
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from server.data.speech import NUMBER_WORDS, Rendering, other_words, random_rendering, render_many, trim_silence
from server.errors import InvalidArgument
from server.kws.augment import CLIP, AugmentConfig, augment, place, silence_clip

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
SILENCE = "silence"
LABELS = (*NUMBER_WORDS, UNKNOWN, SILENCE)

# Accent and learner pronunciations of the number words, in espeak-ng's English phoneme mnemonics (spoken with
# ``[[...]]``): rhotic and non-rhotic "four", th-stopping and th-fronting "three" (tree, free), monophthong and
# shifted diphthongs ("eight" as [e:t] or [aIt], "nine" as [na:n] or [nOIn], "five" as [fa:v]), final devoicing
# ("five" as [faIf]), reduced and syllabic "seven". Each speaks the number word, so it keeps its label.
PRONUNCIATIONS: dict[str, tuple[str, ...]] = {
    "zero": ("z'i:roU", "z'e:ro", "s'i:roU", "z'i@ro"),
    "one": ("w'0n", "w'Vn", "w'Un", "w'an"),
    "two": ("t'u:", "t'U", "t'Uu"),
    "three": ("Tr'i:", "tr'i:", "fr'i:", "Tr'I"),
    "four": ("f'O@", "f'O:", "f'o@r", "f'O:r", "f'oU@"),
    "five": ("f'aIv", "f'a:v", "f'OIv", "f'aIf", "f'VIv"),
    "six": ("s'Iks", "s'Eks", "s'@ks", "s'i:ks"),
    "seven": ("s'Ev@n", "s'Evn", "s'Ebm", "s'Ef@n", "s'e:v@n"),
    "eight": ("'eIt", "'aIt", "'e:t", "'EIt", "'eI?"),
    "nine": ("n'aIn", "n'OIn", "n'a:n", "n'VIn"),
}
UNKNOWN_INDEX = LABELS.index(UNKNOWN)
SILENCE_INDEX = LABELS.index(SILENCE)


@dataclass(frozen=True)
class KWSDataConfig:
    per_number: int = 250  # training renderings of each number word
    unknown_words: int = 1500  # training renderings of other words (one each, distinct words)
    heldout_per_label: int = 40  # held-out clips of each of the twelve labels
    seed: int = 0
    accent_share: float = 0.25  # share of the number-word renderings spoken from PRONUNCIATIONS

    def validate(self) -> None:
        for name in ("per_number", "unknown_words", "heldout_per_label"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.accent_share <= 1:
            raise InvalidArgument("accent_share", f"must be in [0, 1], got {self.accent_share}")

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)

    @classmethod
    def from_meta(cls, data: dict[str, Any]) -> KWSDataConfig:
        """The data a checkpoint recorded (``meta["data"]``; older ones lack the accent share)."""
        return cls(
            data["per_number"], data["unknown_words"], data["heldout_per_label"], data["seed"],
            data.get("accent_share", 0.0),
        )  # fmt: skip


@dataclass(frozen=True)
class Clip:
    label: int
    text: str
    rendering: Rendering | None  # None for silence


@dataclass
class BaseClips:
    clips: list[Clip]
    audio: list[np.ndarray]  # trimmed speech (any length), or empty for silence

    def of_label(self, label: int) -> list[int]:
        return [i for i, c in enumerate(self.clips) if c.label == label]


def _render(items: list[Clip], workers: int, progress: bool) -> list[np.ndarray]:
    rendered = render_many(
        [(c.text, c.rendering) for c in items if c.rendering is not None], workers=workers, progress=progress
    )
    out, it = [], iter(rendered)
    for c in items:
        if c.rendering is None:
            out.append(np.zeros(0, dtype=np.float32))
            continue
        audio = trim_silence(next(it))
        out.append(audio if len(audio) else np.zeros(160, dtype=np.float32))
    return out


def _word_split(config: KWSDataConfig) -> tuple[list[str], list[str]]:
    """Distinct other words for training and for the held-out set (no word in both). The held-out words come
    first, so they do not change with the number of training words."""
    words = other_words(config.unknown_words + config.heldout_per_label, config.seed)
    return words[config.heldout_per_label :], words[: config.heldout_per_label]


def _number_texts(config: KWSDataConfig) -> list[str]:
    """What each number-word rendering speaks: the word, or for ``accent_share`` of them (spread evenly, with
    seeded choices) one of its :data:`PRONUNCIATIONS` as phonemes."""
    rng = np.random.default_rng([config.seed, 5])
    texts = []
    for word in NUMBER_WORDS:
        for i in range(config.per_number):
            accented = int((i + 1) * config.accent_share) > int(i * config.accent_share)
            options = PRONUNCIATIONS[word]
            texts.append(f"[[{options[int(rng.integers(len(options)))]}]]" if accented else word)
    return texts


def training_clips(config: KWSDataConfig, workers: int = 2, progress: bool = False) -> BaseClips:
    """Training voices: each number word ``per_number`` times (``accent_share`` of them from
    :data:`PRONUNCIATIONS`) and ``unknown_words`` other words."""
    config.validate()
    rng = np.random.default_rng([config.seed, 1])
    labels = [k for k in range(len(NUMBER_WORDS)) for _ in range(config.per_number)]
    texts = _number_texts(config)
    clips = [Clip(k, text, random_rendering(rng, "train")) for k, text in zip(labels, texts, strict=True)]
    train_words, _ = _word_split(config)
    clips += [Clip(UNKNOWN_INDEX, w, random_rendering(rng, "train")) for w in train_words]
    return BaseClips(clips, _render(clips, workers, progress))


def heldout_clips(config: KWSDataConfig, workers: int = 2, progress: bool = False) -> BaseClips:
    """Held-out voices: ``heldout_per_label`` clips of every label (silence clips hold no speech)."""
    config.validate()
    rng = np.random.default_rng([config.seed, 2])
    n = config.heldout_per_label
    clips = [Clip(k, w, random_rendering(rng, "heldout")) for k, w in enumerate(NUMBER_WORDS) for _ in range(n)]
    _, words = _word_split(config)
    clips += [Clip(UNKNOWN_INDEX, w, random_rendering(rng, "heldout")) for w in words]
    clips += [Clip(SILENCE_INDEX, "", None) for _ in range(n)]
    return BaseClips(clips, _render(clips, workers, progress))


def heldout_set(base: BaseClips, noisy: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One-second clips (N, 16000) float32 and labels (N,): each base clip placed at a seeded offset at a fixed
    level (clean), or through the training augmentation with a seeded generator (noisy)."""
    rng = np.random.default_rng([seed, 3 if noisy else 4])
    pool = [base.audio[i] for i in base.of_label(UNKNOWN_INDEX)]
    waves = []
    for clip, audio in zip(base.clips, base.audio, strict=True):
        if clip.label == SILENCE_INDEX:
            waves.append(silence_clip(rng))
        elif noisy:
            waves.append(augment(rng, audio, pool))
        else:
            x = place(rng, audio)
            waves.append((x * (0.5 / (np.max(np.abs(x)) + 1e-9))).astype(np.float32))
    return np.stack(waves), np.asarray([c.label for c in base.clips], dtype=np.int64)


class ClipSampler:
    """Training batches: labels uniform over the twelve, each clip freshly augmented."""

    def __init__(self, base: BaseClips, seed: int, augment_config: AugmentConfig | None = None) -> None:
        self.base = base
        self.by_label = [base.of_label(k) for k in range(len(LABELS))]
        missing = [LABELS[k] for k in range(len(LABELS)) if k != SILENCE_INDEX and not self.by_label[k]]
        if missing:
            raise InvalidArgument("clips", f"no training clips of {', '.join(missing)}")
        self.pool = [base.audio[i] for i in self.by_label[UNKNOWN_INDEX]]
        self.config = augment_config or AugmentConfig()
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Waves (size, 16000) float32 and labels (size,) int64."""
        labels = self.rng.integers(0, len(LABELS), size)
        waves = np.zeros((size, CLIP), dtype=np.float32)
        for row, label in enumerate(labels):
            if label == SILENCE_INDEX:
                waves[row] = silence_clip(self.rng, self.config)
            else:
                members = self.by_label[label]
                speech = self.base.audio[members[int(self.rng.integers(len(members)))]]
                waves[row] = augment(self.rng, speech, self.pool, self.config)
        return waves, labels.astype(np.int64)
