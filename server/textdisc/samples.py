"""Text sampled from a character LSTM, many streams in batches, cached under the antiphon cache.

A sample set crosses temperatures with sampling variants (plain, top-k, top-p) and gives every setting the same
number of streams. Each stream starts from the start text (as the serving engine's streams do), optionally
followed by a prompt: a run of real text beginning at a random line start, so the sample continues a real
dialogue mid-way instead of opening a play. Only the sampled characters are kept, never the prompt. Each stream
samples with its own counter-based seed (``server.sampling``), so its text does not depend on which others share
its batch. A batch reads its prompts in one ``nn.LSTM`` pass and then takes one batched
:class:`~server.text.step.FusedStep` per character. The sets themselves, torch-free, are
:mod:`server.textdisc.sample_sets`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
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
from server.text.model import CharLSTM
from server.text.step import FusedStep
from server.text.vocab import START_TEXT, Vocabulary
from server.textdisc.sample_sets import Row, SampleSet

log = logging.getLogger(__name__)

CACHE_VERSION = 2
GENERATE_BATCH = 128  # streams sampled side by side


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
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two processes filling the same entry write apart
    tmp.write_text(json.dumps({"set": asdict(sample_set), "texts": texts}), encoding="utf-8")
    tmp.replace(path)
    return [Sample(r, text) for r, text in zip(rows, texts, strict=True)]
