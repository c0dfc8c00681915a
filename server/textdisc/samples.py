"""Text sampled from a character LSTM, many streams in batches, cached under the antiphon cache.

A sample set crosses temperatures with sampling variants (plain, top-k, top-p) and gives every setting the same
number of streams. Each stream starts from the start text (as the serving engine's streams do), optionally
followed by a prompt: a run of real text beginning at a random line start, so the sample continues a real
dialogue mid-way instead of opening a play. Only the sampled characters are kept, never the prompt. Each stream
samples with its own counter-based seed (``server.sampling``), so its text does not depend on which others share
its batch. A batch reads its prompts in one ``nn.LSTM`` pass and then takes one batched
:class:`~server.text.step.FusedStep` per character.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from server.checkpoint import file_sha256
from server.data.cache import cache_dir
from server.errors import InvalidArgument
from server.sampling import SamplingParams, StreamRandom, sample_tokens
from server.text.checkpoint import load_text_model
from server.text.model import CharLSTM
from server.text.step import FusedStep
from server.text.vocab import START_TEXT, Vocabulary

log = logging.getLogger(__name__)

CACHE_VERSION = 2
MAX_ROWS = 1_000_000  # seeds are seed * MAX_ROWS + row
GENERATE_BATCH = 128  # streams sampled side by side


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


@dataclass(frozen=True)
class Sample:
    row: Row
    text: str  # the sampled characters only

    @property
    def group(self) -> str:
        return self.row.group


@torch.no_grad()
def generate_streams(
    model: CharLSTM,
    vocab: Vocabulary,
    rows: Sequence[Row],
    length: int,
    prompts: Sequence[str] | None = None,
    batch: int = GENERATE_BATCH,
    progress: bool = False,
) -> list[str]:
    """``length`` sampled characters for each row, ``batch`` rows at a time. ``prompts`` (one per row, all of one
    length) are read after the start text."""
    if prompts is not None and (len(prompts) != len(rows) or len({len(p) for p in prompts}) > 1):
        raise InvalidArgument("prompts", "give one prompt per row, all of the same length")
    texts: list[str] = []
    step = FusedStep(model)
    bar = tqdm(total=len(rows) * length, desc="sampling", unit="char", disable=not progress, mininterval=2.0)
    for lo in range(0, len(rows), batch):
        chunk = rows[lo : lo + batch]
        heads = [START_TEXT + (prompts[lo + i] if prompts is not None else "") for i in range(len(chunk))]
        ids = torch.tensor([vocab.encode(h) for h in heads])  # (B, P)
        logits_seq, state = model(ids, model.init_state(len(chunk), "cpu"))  # (B, P, V)
        logits = logits_seq[:, -1].contiguous()  # (B, V)
        params = [SamplingParams(temperature=r.temperature, top_k=r.top_k, top_p=r.top_p, seed=r.seed) for r in chunk]
        sources = [StreamRandom(r.seed) for r in chunk]
        out = np.zeros((len(chunk), length), dtype=np.int64)
        for i in range(length):
            logits[:, 0] = -torch.inf  # never the unknown symbol
            tokens = sample_tokens(logits.float().numpy(), params, sources)
            out[:, i] = tokens
            logits, state = step(torch.tensor(tokens), state)
            bar.update(len(chunk))
        texts.extend(vocab.decode(row.tolist()) for row in out)
    bar.close()
    return texts


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_path(checkpoint: Path, sample_set: SampleSet, prompt_text: str = "") -> Path:
    key = {"v": CACHE_VERSION, "checkpoint": file_sha256(checkpoint), **asdict(sample_set)}
    if sample_set.prompt:
        key["prompt_text"] = text_sha256(prompt_text)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "textdisc" / f"samples-{digest}.json"


def load_samples(
    checkpoint: Path, sample_set: SampleSet, prompt_text: str = "", progress: bool = False
) -> list[Sample]:
    """The sample set of the text model at ``checkpoint`` (prompts from ``prompt_text`` if the set has any): read
    from the cache, or generated and cached."""
    sample_set.validate()
    rows = sample_set.rows(prompt_text)
    path = cache_path(checkpoint, sample_set, prompt_text)
    if path.is_file():
        texts = json.loads(path.read_text(encoding="utf-8"))["texts"]
        if len(texts) == len(rows):
            return [Sample(r, text) for r, text in zip(rows, texts, strict=True)]
    model, vocab, _ = load_text_model(checkpoint, "cpu")
    log.info("sampling %d streams of %d characters from %s", len(rows), sample_set.length, checkpoint.name)
    prompts = [prompt_text[r.prompt_at : r.prompt_at + sample_set.prompt] for r in rows] if sample_set.prompt else None
    texts = generate_streams(model, vocab, rows, sample_set.length, prompts, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"set": asdict(sample_set), "texts": texts}), encoding="utf-8")
    tmp.replace(path)
    return [Sample(r, text) for r, text in zip(rows, texts, strict=True)]
