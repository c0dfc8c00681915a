"""Text sampled from a character LSTM, many streams at once, cached under the antiphon cache.

Every stream starts from the start text (as the serving engine's streams do) and samples with its own temperature
and its own counter-based seed (``server.sampling``), so a stream's text does not depend on which others share
its batch. One batched :class:`~server.text.step.FusedStep` per token serves all streams.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from server.checkpoint import file_sha256
from server.data.cache import cache_dir
from server.errors import InvalidArgument
from server.sampling import SamplingParams, StreamRandom, sample_tokens
from server.text.checkpoint import load_text_model
from server.text.generate import prefill
from server.text.model import CharLSTM
from server.text.step import FusedStep
from server.text.vocab import Vocabulary

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass(frozen=True)
class SampleSet:
    """``streams`` streams per temperature, each ``length`` characters; stream ``i`` of temperature ``k`` has seed
    ``seed * 1_000_000 + k * 1_000 + i``."""

    temperatures: tuple[float, ...]
    streams: int
    length: int
    seed: int

    def validate(self) -> None:
        if not self.temperatures or any(not 0 < t <= 10 for t in self.temperatures):
            raise InvalidArgument("temperatures", f"give temperatures in (0, 10], got {self.temperatures}")
        if not 1 <= self.streams <= 10_000:
            raise InvalidArgument("streams", f"must be in 1..10000, got {self.streams}")
        if not 1 <= self.length <= 1_000_000:
            raise InvalidArgument("length", f"must be in 1..1000000, got {self.length}")

    def rows(self) -> list[tuple[float, int]]:
        """(temperature, seed) of every stream."""
        return [
            (t, self.seed * 1_000_000 + k * 1_000 + i)
            for k, t in enumerate(self.temperatures)
            for i in range(self.streams)
        ]


@dataclass(frozen=True)
class Sample:
    temperature: float
    seed: int
    text: str


@torch.no_grad()
def generate_streams(
    model: CharLSTM,
    vocab: Vocabulary,
    rows: Sequence[tuple[float, int]],
    length: int,
    progress: bool = False,
) -> list[str]:
    """``length`` sampled characters for each (temperature, seed) row, all rows in one batch."""
    logits0, (h0, c0) = prefill(model, vocab, "")  # (V,), the state after the start text
    batch = len(rows)
    state = (h0.expand(-1, batch, -1).contiguous(), c0.expand(-1, batch, -1).contiguous())
    logits = logits0[None].expand(batch, -1).clone()  # (B, V)
    params = [SamplingParams(temperature=t, seed=s, max_tokens=length) for t, s in rows]
    sources = [StreamRandom(s) for _, s in rows]
    step = FusedStep(model)
    out = np.zeros((batch, length), dtype=np.int64)
    for i in tqdm(range(length), desc="sampling", unit="char", disable=not progress, mininterval=2.0):
        logits[:, 0] = -torch.inf  # never the unknown symbol
        tokens = sample_tokens(logits.float().numpy(), params, sources)
        out[:, i] = tokens
        logits, state = step(torch.tensor(tokens), state)
    return [vocab.decode(row.tolist()) for row in out]


def cache_path(checkpoint: Path, sample_set: SampleSet) -> Path:
    key = json.dumps(
        {"v": CACHE_VERSION, "checkpoint": file_sha256(checkpoint), **asdict(sample_set)}, sort_keys=True
    ).encode()
    return cache_dir() / "textdisc" / f"samples-{hashlib.sha256(key).hexdigest()[:20]}.json"


def load_samples(checkpoint: Path, sample_set: SampleSet, progress: bool = False) -> list[Sample]:
    """The sample set of the text model at ``checkpoint``: read from the cache, or generated and cached."""
    sample_set.validate()
    path = cache_path(checkpoint, sample_set)
    rows = sample_set.rows()
    if path.is_file():
        texts = json.loads(path.read_text(encoding="utf-8"))["texts"]
        if len(texts) == len(rows):
            return [Sample(t, s, text) for (t, s), text in zip(rows, texts, strict=True)]
    model, vocab, _ = load_text_model(checkpoint, "cpu")
    log.info("sampling %d streams of %d characters from %s", len(rows), sample_set.length, checkpoint.name)
    texts = generate_streams(model, vocab, rows, sample_set.length, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"set": asdict(sample_set), "texts": texts}), encoding="utf-8")
    tmp.replace(path)
    return [Sample(t, s, text) for (t, s), text in zip(rows, texts, strict=True)]
