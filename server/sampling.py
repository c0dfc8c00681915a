"""Sampling knobs and the one function that turns logits into a token.

Knobs are validated at the boundary (``SamplingParams.validated``) with a
message that names the knob. ``sample_token`` draws exactly one uniform number
from the stream's own generator per token, so a seeded stream produces the same
tokens whether it runs alone or batched beside other streams.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

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


def make_generator(seed: int | None) -> torch.Generator:
    """The stream's private random source: seeded, or seeded from the OS."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def sample_tokens(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator]
) -> list[int]:
    """One token id per row of ``logits`` (B, V), row ``r`` under ``params[r]`` with ``generators[r]``.

    Vectorized over the batch (the per-row work is one uniform draw), so sampling costs about the same for one
    stream or sixty-four. The inverse CDF runs over the vocabulary in its own order: a rounding-level change in
    the logits can move a token only when the uniform falls within that distance of a boundary.
    """
    greedy = [p.temperature == 0 for p in params]
    tokens = torch.argmax(logits, dim=-1)  # (B,)
    if all(greedy):
        return tokens.tolist()
    temperature = torch.tensor([p.temperature or 1.0 for p in params], dtype=torch.float64)
    scores = logits.double() / temperature[:, None]  # (B, V)
    top_k = [p.top_k for p in params]
    if any(top_k):
        k = torch.tensor([k or scores.shape[1] for k in top_k])
        ranked = torch.sort(scores, dim=-1, descending=True).values  # (B, V)
        kth = ranked.gather(1, (k - 1)[:, None])  # (B, 1)
        scores = scores.masked_fill(scores < kth, -math.inf)
    probs = torch.softmax(scores, dim=-1)  # (B, V)
    top_p = [p.top_p for p in params]
    if any(p < 1 for p in top_p):
        ranked_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        before = torch.cumsum(ranked_probs, dim=-1) - ranked_probs  # mass ranked above each token
        keep_mass = torch.tensor(top_p, dtype=torch.float64)[:, None]
        ranked_probs = ranked_probs.masked_fill(before >= keep_mass, 0.0)
        probs = torch.zeros_like(probs).scatter_(1, order, ranked_probs)
    cdf = torch.cumsum(probs, dim=-1)  # (B, V)
    # Exactly one draw per sampled (non-greedy) token from the stream's own generator.
    u = torch.stack(
        [
            torch.rand((), generator=g, dtype=torch.float64) if not gr else torch.zeros((), dtype=torch.float64)
            for g, gr in zip(generators, greedy, strict=True)
        ]
    )  # (B,)
    drawn = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0].clamp_(max=cdf.shape[1] - 1)
    return torch.where(torch.tensor(greedy), tokens, drawn).tolist()


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """One token id from ``logits`` (V,) under ``params`` (the batch function on one row)."""
    return sample_tokens(logits[None], [params], [generator])[0]
