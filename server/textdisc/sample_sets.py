"""What a text discriminator's data is made of, as settings: the window, the sample sets (which streams of the
generator are the "generated" class) and the split of the held-out text. NumPy only, no torch: the options and the
command line read them; :mod:`server.textdisc.samples` samples the sets and :mod:`server.textdisc.data` cuts the
windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from server.errors import InvalidArgument

MAX_ROWS = 1_000_000  # seeds are seed * MAX_ROWS + row


@dataclass(frozen=True)
class Row:
    """One stream of a sample set: its sampling knobs, its seed and the offset of its prompt (-1: none)."""

    temperature: float
    top_k: int
    top_p: float
    seed: int
    prompt_at: int = -1

    @property
    def group(self) -> str:
        """Where a window came from, for accuracy by source: "T=0.9", "T=0.9 top-k 30", "T=0.9 top-p 0.95"."""
        variant = variant_name(self.top_k, self.top_p)
        return f"T={self.temperature:g}" + ("" if variant == "plain" else f" {variant}")


def variant_name(top_k: int, top_p: float) -> str:
    """ "plain", "top-k 30", "top-p 0.95" or "top-k 30 top-p 0.95"."""
    parts = ([f"top-k {top_k}"] if top_k else []) + ([f"top-p {top_p:g}"] if top_p < 1 else [])
    return " ".join(parts) or "plain"


@dataclass(frozen=True)
class SampleSet:
    """``streams`` streams of ``length`` characters for every (temperature, variant) pair; a variant is a
    (top_k, top_p) pair, (0, 1.0) being plain sampling. Row ``r`` has seed ``seed * 1_000_000 + r``. With
    ``prompt`` > 0 every stream first reads ``prompt`` characters of real text from a random line start."""

    temperatures: tuple[float, ...]
    streams: int
    length: int
    seed: int
    variants: tuple[tuple[int, float], ...] = ((0, 1.0),)
    prompt: int = 0

    def __post_init__(self) -> None:  # JSON gives lists
        object.__setattr__(self, "temperatures", tuple(self.temperatures))
        object.__setattr__(self, "variants", tuple((int(k), float(p)) for k, p in self.variants))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleSet:
        """The set a checkpoint's metadata records (``asdict`` of it, read back from JSON)."""
        return cls(**data)

    def validate(self) -> None:
        if not self.temperatures or any(not 0 < t <= 10 for t in self.temperatures):
            raise InvalidArgument("temperatures", f"give temperatures in (0, 10], got {self.temperatures}")
        if not self.variants or any(k < 0 or not 0 < p <= 1 for k, p in self.variants):
            raise InvalidArgument("variants", f"give (top_k >= 0, top_p in (0, 1]) pairs, got {self.variants}")
        if not 1 <= self.streams * len(self.temperatures) * len(self.variants) <= MAX_ROWS:
            raise InvalidArgument("streams", f"give 1..{MAX_ROWS} streams in all, got {self.streams} per setting")
        if not 1 <= self.length <= 1_000_000:
            raise InvalidArgument("length", f"must be in 1..1000000, got {self.length}")
        if not 0 <= self.prompt <= 10_000:
            raise InvalidArgument("prompt", f"must be in 0..10000 characters, got {self.prompt}")

    def rows(self, prompt_text: str = "") -> list[Row]:
        """Every stream, setting by setting; prompt offsets are line starts of ``prompt_text`` drawn from the
        set's seed."""
        settings = [(t, k, p) for t in self.temperatures for k, p in self.variants]
        count = len(settings) * self.streams
        offsets = prompt_offsets(prompt_text, self.prompt, count, self.seed) if self.prompt else [-1] * count
        return [
            Row(t, k, p, self.seed * MAX_ROWS + r, offsets[r])
            for r, (t, k, p) in enumerate(s for s in settings for _ in range(self.streams))
        ]


def prompt_offsets(text: str, length: int, count: int, seed: int) -> list[int]:
    """``count`` random line starts of ``text`` with ``length`` characters after them."""
    starts = np.flatnonzero(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) == ord("\n")) + 1
    starts = starts[starts + length <= len(text)]
    if len(starts) == 0:
        raise InvalidArgument("prompt", f"the prompt text has no line start with {length} characters after it")
    return np.random.default_rng(seed).choice(starts, size=count).tolist()


WINDOW = 256
BURN_IN = 64  # the first characters of a stream follow its prompt closely; windows begin after them
PROMPT = 128  # characters of real text each stream continues

# 18 settings x 400 streams x 1,088 characters: 7.8 million sampled characters, so that no stream is seen often
# enough to be memorised (the first models learnt their few training streams by heart and missed fresh ones).
TRAIN_SAMPLES = SampleSet(
    temperatures=(0.5, 0.6, 0.8, 1.0, 1.2, 1.3),
    streams=400,
    length=BURN_IN + 4 * WINDOW,
    seed=1,
    variants=((0, 1.0), (20, 1.0), (0, 0.9)),
    prompt=PROMPT,
)
TEST_SAMPLES = SampleSet(
    temperatures=(0.7, 0.9, 1.1),
    streams=48,
    length=BURN_IN + 4 * WINDOW,
    seed=2,
    variants=((0, 1.0), (30, 1.0), (0, 0.95)),
    prompt=PROMPT,
)


def split_held_out(text: str, share: float) -> tuple[str, str]:
    """The held-out text cut at the first line start after ``share`` of it: (the discriminator's real training
    text, the test's real text); (``""``, ``text``) for share 0.

    A scorer (a model inside the discriminator, :mod:`server.textdisc.model`) trained on the training plays finds
    them likelier than text it never read, so real windows of the training plays would teach the discriminator that
    real text is that likely, and text the scorer never read would look generated. With a scorer, the real class
    trains on the first part of the held-out text instead (Shakespeare, share 0.4434: Hamlet), and the test's real
    windows come from the rest (Macbeth and Twelfth Night)."""
    if not 0 <= share < 1:
        raise InvalidArgument("real_train_share", f"must be in [0, 1), got {share}")
    if share == 0:
        return "", text
    cut = text.find("\n", int(len(text) * share)) + 1
    if cut <= 0 or len(text) - cut < WINDOW or cut < WINDOW:
        raise InvalidArgument("real_train_share", f"{share} leaves less than {WINDOW} characters on one side")
    return text[:cut], text[cut:]
