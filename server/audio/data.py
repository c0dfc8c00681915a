"""Training and held-out speech for the WaveNet: espeak-ng renderings, their mu-law codes and log-mel frames.

An utterance is a line of the training plays or a number word, rendered by espeak-ng in a random voice, speed,
pitch and loudness (``server/data/speech.py``). The WaveNet learns to produce the rendering's waveform from the
rendering's own log-mel frames (local conditioning) and voice id (global conditioning): at serving time it is a
vocoder of espeak's rendering of any text. Training utterances use training voices only; the held-out set is
spoken in held-out voices, which share neither accent nor variant with any training voice.

Frames: the waveform is padded by ``n_fft // 2`` zeros on both sides, so frame ``f`` is centred on sample
``f * hop`` and an utterance of ``T`` samples has ``1 + T // hop`` frames (``server.audio.features.MelFrames``).
:func:`~server.audio.features.pad_frames` then adds
``cond_context`` frames of silence on either side for the conditioning convolutions (and extra frames on the
right for segments that run past the end).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import torch

from server.audio.features import MelFrames, pad_frames
from server.audio.mulaw import encode as mulaw_encode
from server.data.speech import (
    NUMBER_WORDS,
    Rendering,
    play_lines,
    random_rendering,
    render_many,
    trim_silence,
    voices,
)

log = logging.getLogger(__name__)

UNSEEN_VOICE = "unseen"  # voice id 0: any voice the model was not trained on (held-out voices use it)


def voice_table() -> list[str]:
    """Voice names by id: id 0 is ``UNSEEN_VOICE``, then every training voice."""
    return [UNSEEN_VOICE, *voices("train")]


@dataclass
class Utterance:
    text: str
    rendering: Rendering
    voice_id: int
    codes: np.ndarray  # (T,) uint8 mu-law
    mel: np.ndarray  # (n_mels, 1 + T // hop) float32, unpadded

    @property
    def samples(self) -> int:
        return len(self.codes)


def _texts(split: str, lines: int, number_renderings: int, seed: int) -> list[str]:
    # Held-out lines come from other draws of the plays than the training lines (a different seed).
    texts = play_lines(lines, seed=seed if split == "train" else seed + 10_007)
    return texts + [w for _ in range(number_renderings) for w in NUMBER_WORDS]


def build_utterances(
    split: str,
    lines: int,
    number_renderings: int,
    n_mels: int,
    hop: int,
    seed: int,
    min_samples: int = 0,
    workers: int = 2,
    progress: bool = False,
) -> list[Utterance]:
    """``lines`` lines of the plays and ``number_renderings`` renderings of each number word, every one in a
    random rendering of ``split``'s voices (espeak-ng output is cached on disk). Silence beyond 10 ms is trimmed
    from both ends; an utterance shorter than ``min_samples`` is padded with silence at its end."""
    rng = np.random.default_rng(seed + (0 if split == "train" else 1))
    texts = _texts(split, lines, number_renderings, seed)
    renderings = [random_rendering(rng, split) for _ in texts]
    waves = render_many(list(zip(texts, renderings, strict=True)), workers=workers, progress=progress)
    ids = {name: i for i, name in enumerate(voice_table())}
    frames = MelFrames(n_mels, hop)
    out = []
    for text, rendering, wave in zip(texts, renderings, waves, strict=True):
        wave = trim_silence(wave, pad=160)
        if len(wave) < min_samples:
            wave = np.pad(wave, (0, min_samples - len(wave)))
        if len(wave) == 0:
            continue
        out.append(Utterance(text, rendering, ids.get(rendering.voice, 0), mulaw_encode(wave), frames(wave)))
    return out


def data_hash(utterances: list[Utterance]) -> str:
    """A hash of the utterances' codes and settings: a resumed run must see the same data."""
    h = hashlib.sha256()
    for u in utterances:
        h.update(f"{u.text}\0{u.rendering}\0{u.voice_id}\0".encode())
        h.update(u.codes.tobytes())
    return h.hexdigest()


def mel_stats(utterances: list[Utterance]) -> tuple[float, float]:
    """Mean and standard deviation of every log-mel value (the model's input normalization)."""
    values = np.concatenate([u.mel.ravel() for u in utterances])
    return float(values.mean()), float(values.std() + 1e-6)


class SegmentSampler:
    """Random training segments: ``segment`` samples starting at a frame boundary of a random utterance (chosen in
    proportion to its length), with the padded frames that condition them and the code before the segment."""

    def __init__(self, utterances: list[Utterance], segment: int, hop: int, context: int, floor: float) -> None:
        self.utterances = [u for u in utterances if u.samples >= segment]
        if not self.utterances:
            raise ValueError(f"no utterance has {segment} samples")
        self.segment, self.hop, self.context = segment, hop, context
        self.frames = (segment - 1) // hop + 2  # frames the segment's samples interpolate between
        self.padded = [pad_frames(u.mel, context, floor, self.frames) for u in self.utterances]
        lengths = np.array([u.samples for u in self.utterances], dtype=np.float64)
        self.weights = lengths / lengths.sum()

    def batch(
        self, rng: np.random.Generator, size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """inputs (B, T) int64 (the code before each target), targets (B, T) int64, padded mel
        (B, n_mels, frames + 2 * context) float32, voice ids (B,) int64."""
        seg, hop = self.segment, self.hop
        idx = rng.choice(len(self.utterances), size=size, p=self.weights)
        inputs, targets, mels, voice_ids = [], [], [], []
        for i in idx:
            u = self.utterances[i]
            first = int(rng.integers(0, (u.samples - seg) // hop + 1))
            start = first * hop
            codes = u.codes[start : start + seg].astype(np.int64)
            before = int(u.codes[start - 1]) if start > 0 else 128
            inputs.append(np.concatenate([[before], codes[:-1]]))
            targets.append(codes)
            mels.append(self.padded[i][:, first : first + self.frames + 2 * self.context])
            voice_ids.append(u.voice_id)
        return (
            torch.from_numpy(np.stack(inputs)),
            torch.from_numpy(np.stack(targets)),
            torch.from_numpy(np.stack(mels)),
            torch.tensor(voice_ids, dtype=torch.int64),
        )
