"""The fixed training pool of a text discriminator with a scorer (a character LSTM read by the model,
:mod:`server.textdisc.model`).

Reading every window with the LSTM at every step would cost most of the training, so the windows are fixed
instead: a pool of the trained streams' non-overlapping windows and as many real windows at random offsets, whose
scorer features are computed once (cached under the antiphon cache by the scorer's and the windows' sha256) and
passed to the model beside the ids. The scorer is frozen, so the features are what the model's own forward
computes; the test set goes through the forward.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from server.data.cache import cache_dir
from server.textdisc.data import WINDOW
from server.textdisc.model import TextDiscriminator

if TYPE_CHECKING:
    from server.textdisc.assemble import Unread

FEATURE_VERSION = 2
FEATURE_BATCH = 128  # windows read by the scorer at once


@torch.no_grad()
def scorer_features(model: TextDiscriminator, ids: np.ndarray, scorer_sha256: str, progress: bool) -> np.ndarray:
    """The scorer features (N, WINDOW, F) float16 of windows (N, WINDOW) (:meth:`TextDiscriminator.score`), cached
    by the scorer's (and the reference's) and the windows' sha256."""
    key = f"{FEATURE_VERSION}:{scorer_sha256}:{model.config.rank_width:g}:{ids.shape}"
    digest = hashlib.sha256(key.encode() + ids.tobytes()).hexdigest()
    path = cache_dir() / "textdisc" / f"features-{digest[:20]}.npy"
    if path.is_file():
        return np.load(path)
    out = []
    bar = tqdm(total=len(ids), desc="scoring", unit="window", disable=not progress, mininterval=2.0)
    for i in range(0, len(ids), FEATURE_BATCH):
        out.append(model.score(torch.from_numpy(ids[i : i + FEATURE_BATCH])).numpy().astype(np.float16))
        bar.update(len(out[-1]))
    bar.close()
    features = np.concatenate(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")  # two processes filling the same entry write apart
    np.save(tmp, features)
    tmp.replace(path)
    return features


class FeaturePool:
    """Fixed training windows with their scorer features: the generated windows ``fake`` (N, WINDOW) and as many
    real windows at random offsets of ``real_text`` (a share ``mix`` of them from ``other_text``); batches are half
    real."""

    def __init__(
        self,
        model: TextDiscriminator,
        fake: np.ndarray,
        real_text: np.ndarray,
        sha256: str,
        seed: int,
        progress: bool,
        other_text: np.ndarray | None = None,
        mix: float = 0.0,
        spans: tuple[tuple[int, int], ...] = (),
        other_spans: tuple[tuple[int, int], ...] = (),
    ) -> None:
        self.rng = np.random.default_rng(seed)
        rng = np.random.default_rng(seed + 1)
        n_other = round(len(fake) * mix) if other_text is not None else 0
        rows: list[np.ndarray] = []
        documents: list[np.ndarray] = []  # of each real window: see data.WindowSampler
        for text, count, text_spans in ((real_text, len(fake) - n_other, spans), (other_text, n_other, other_spans)):
            if count and text is not None:
                starts = np.sort(rng.integers(0, len(text) - WINDOW + 1, count))
                rows.extend(text[s : s + WINDOW] for s in starts)
                first = np.array([a for a, _ in text_spans], dtype=np.int64)
                found = np.searchsorted(first, starts, side="right") - 1 if len(first) else np.full(count, -1)
                documents.append(found)
        real = np.stack(rows)
        self.ids = np.concatenate([real, fake]).astype(np.int32)
        self.labels = np.concatenate([np.zeros(len(real)), np.ones(len(fake))]).astype(np.int64)
        self.documents = np.concatenate([*documents, np.full(len(fake), -1)]).astype(np.int64)
        self.features = scorer_features(model, self.ids, sha256, progress)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Ids (size, WINDOW), features (size, WINDOW, F) float32, labels (size,) and documents (size,), half
        real."""
        half = len(self.ids) // 2
        n_real = size // 2
        pick = np.concatenate(
            [self.rng.integers(0, half, n_real), half + self.rng.integers(0, len(self.ids) - half, size - n_real)]
        )
        pick = pick[self.rng.permutation(size)]
        return self.ids[pick], self.features[pick].astype(np.float32), self.labels[pick], self.documents[pick]


@torch.no_grad()
def standardise_statistics(model: TextDiscriminator, pool: FeaturePool, unread: Unread | None) -> None:
    """Set the window statistics' standardisation to their mean and spread over the training pool's windows."""
    raw = []
    for i in range(0, len(pool.ids), 512):
        ids = pool.ids[i : i + 512]
        exclude = unread(ids, pool.documents[i : i + 512]) if unread is not None else None
        view, words = (
            model.lexicon_view(torch.from_numpy(ids), exclude) if model.config.lexicon_documents else (None, None)
        )
        raw.append(model.scorer_stats.raw(torch.from_numpy(pool.features[i : i + 512]).float(), words, view))
    stats = torch.cat(raw)
    model.scorer_stats.mean.copy_(stats.mean(dim=0))
    # A statistic that barely varies over the pool (a band hardly any character falls in, with a small scorer)
    # must not be magnified: its rounding would move the output.
    model.scorer_stats.scale.copy_(stats.std(dim=0).clamp(min=1e-2))
