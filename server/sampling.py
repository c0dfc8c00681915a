"""Sampling knobs and the one function that turns logits into a token.

Knobs are validated at the boundary (``SamplingParams.validated``) with a
message that names the knob. Sampling draws exactly one uniform number per
token from the stream's own counter-based source, so a seeded stream produces
the same tokens whether it runs alone or batched beside other streams. NumPy
only: the edge client samples with the same code.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike

from server.errors import InvalidArgument

MAX_SEED = 2**64 - 1
MAX_STOP_SEQUENCES = 8
MAX_STOP_LENGTH = 64


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8  # 0 means greedy
    top_k: int = 0  # 0 disables
    top_p: float = 1.0  # 1 disables
    seed: int | None = None  # None: a fresh random stream
    max_tokens: int = 256
    stop: tuple[str, ...] = ()

    def validated(self, max_tokens_limit: int = 4096, vocab_size: int | None = None) -> SamplingParams:
        """Self if every knob is in range; otherwise InvalidArgument naming the knob."""
        if not math.isfinite(self.temperature) or not 0 <= self.temperature <= 100:
            raise InvalidArgument("temperature", f"must be between 0 and 100 (0 is greedy), got {self.temperature}")
        if self.top_k < 0 or (vocab_size is not None and self.top_k > vocab_size):
            limit = f"0..{vocab_size}" if vocab_size is not None else "0 or more"
            raise InvalidArgument("top_k", f"must be in {limit} (0 disables), got {self.top_k}")
        if not math.isfinite(self.top_p) or not 0 < self.top_p <= 1:
            raise InvalidArgument("top_p", f"must be in (0, 1] (1 disables), got {self.top_p}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise InvalidArgument("seed", f"must be in 0..2**64-1, got {self.seed}")
        if not 1 <= self.max_tokens <= max_tokens_limit:
            raise InvalidArgument("max_tokens", f"must be in 1..{max_tokens_limit}, got {self.max_tokens}")
        if len(self.stop) > MAX_STOP_SEQUENCES:
            raise InvalidArgument("stop", f"at most {MAX_STOP_SEQUENCES} sequences, got {len(self.stop)}")
        for s in self.stop:
            if not 1 <= len(s) <= MAX_STOP_LENGTH:
                raise InvalidArgument("stop", f"each sequence must have 1..{MAX_STOP_LENGTH} characters, got {len(s)}")
        return self

    def with_defaults(self, **overrides: object) -> SamplingParams:
        return replace(self, **overrides)  # type: ignore[arg-type]


class StreamRandom:
    """A stream's own random source: draw ``n`` is ``splitmix64(seed + n * GAMMA)``.

    Counter-based, so a batch of streams draws all its uniforms in one vectorized pass, and a stream's draws do
    not depend on which other streams share its batch or on how many there are.
    """

    __slots__ = ("count", "seed")

    def __init__(self, seed: int | None = None) -> None:
        self.seed = secrets.randbits(64) if seed is None else seed
        self.count = 0


GAMMA = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's constants (the compiled steps use them too)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix_uniforms(seeds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Draw ``counts`` (uint64, counted from 1) of the sources seeded ``seeds``, broadcast: float64 in [0, 1)."""
    z = seeds.astype(np.uint64) + counts.astype(np.uint64) * GAMMA  # wraps modulo 2**64 (arrays do not warn)
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def draw_uniforms(sources: Sequence[StreamRandom]) -> np.ndarray:
    """The next uniform in [0, 1) of each source (B,), advancing each by one."""
    seeds = np.array([s.seed for s in sources], dtype=np.uint64)
    counts = np.array([s.count + 1 for s in sources], dtype=np.uint64)
    for source in sources:
        source.count += 1
    return splitmix_uniforms(seeds, counts)


def sample_tokens(logits: ArrayLike, params: Sequence[SamplingParams], sources: Sequence[StreamRandom]) -> list[int]:
    """One token id per row of ``logits`` (B, V), row ``r`` under ``params[r]`` drawing from ``sources[r]``.

    Vectorized over the batch in NumPy, so sampling costs about the same for one stream or sixty-four. Each
    sampled (non-greedy) token takes exactly one draw from its stream's source. The inverse CDF runs over the
    vocabulary in its own order: a rounding-level change in the logits can move a token only when the uniform
    falls within that distance of a boundary.
    """
    x = np.asarray(logits, dtype=np.float64)  # (B, V)
    rows = np.arange(len(x))
    best = x.argmax(axis=1)  # (B,)
    greedy = np.array([p.temperature == 0 for p in params])
    if greedy.all():
        return best.tolist()
    temperature = np.array([p.temperature or 1.0 for p in params])
    scores = x / temperature[:, None]  # (B, V)
    top_k = np.array([p.top_k or x.shape[1] for p in params])
    if (top_k < x.shape[1]).any():
        kth = -np.sort(-scores, axis=1)[rows, top_k - 1]  # (B,) the k-th largest score
        scores = np.where(scores < kth[:, None], -np.inf, scores)
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)  # (B, V)
    top_p = np.array([p.top_p for p in params])
    if (top_p < 1).any():
        order = np.argsort(-probs, axis=1, kind="stable")  # (B, V) likeliest first
        ranked = np.take_along_axis(probs, order, axis=1)
        before = np.cumsum(ranked, axis=1) - ranked  # mass ranked above each token
        ranked[before >= top_p[:, None]] = 0.0
        np.put_along_axis(probs, order, ranked, axis=1)
    cdf = np.cumsum(probs, axis=1)  # (B, V)
    sampled = [source for source, g in zip(sources, greedy, strict=True) if not g]
    u = np.zeros(len(x))
    u[~greedy] = draw_uniforms(sampled)
    drawn = np.minimum((cdf <= (u * cdf[:, -1])[:, None]).sum(axis=1), x.shape[1] - 1)
    return np.where(greedy, best, drawn).tolist()


@dataclass(frozen=True)
class RowRules:
    """How one stream draws its next tokens when a backend runs several steps in one call."""

    params: SamplingParams
    random: StreamRandom  # advanced by every draw
    budget: int  # tokens it may still produce
    stops: tuple[tuple[int, ...], ...] = ()  # its stop sequences as token ids
    recent: tuple[int, ...] = ()  # its last tokens, as many as its longest stop sequence needs

    def stopped(self, tokens: Sequence[int]) -> bool:
        """Whether ``tokens`` (everything drawn so far, or at least its tail) end with a stop sequence."""
        return any(len(s) <= len(tokens) and tuple(tokens[len(tokens) - len(s) :]) == s for s in self.stops)


def sample_token(logits: ArrayLike, params: SamplingParams, source: StreamRandom) -> int:
    """One token id from ``logits`` (V,) under ``params`` (the batch function on one row)."""
    return sample_tokens(np.asarray(logits)[None], [params], [source])[0]
