"""Sampling knobs: validation at the boundary and the sampling function itself."""

from __future__ import annotations

import math

import pytest
import torch

from server.errors import InvalidArgument
from server.sampling import SamplingParams, StreamRandom, draw_uniforms, sample_token, sample_tokens


@pytest.mark.parametrize(
    ("knobs", "field", "message"),
    [
        ({"temperature": -0.1}, "temperature", "must be between 0 and 100"),
        ({"temperature": math.nan}, "temperature", "must be between 0 and 100"),
        ({"top_k": -1}, "top_k", "must be in 0..10"),
        ({"top_k": 11}, "top_k", "must be in 0..10"),
        ({"top_p": 0.0}, "top_p", "must be in (0, 1]"),
        ({"top_p": 1.5}, "top_p", "must be in (0, 1]"),
        ({"seed": -1}, "seed", "must be in 0..2**64-1"),
        ({"seed": 2**64}, "seed", "must be in 0..2**64-1"),
        ({"max_tokens": 0}, "max_tokens", "must be in 1..100"),
        ({"max_tokens": 101}, "max_tokens", "must be in 1..100"),
        ({"stop": ("",)}, "stop", "1..64 characters"),
        ({"stop": ("x",) * 9}, "stop", "at most 8 sequences"),
    ],
)
def test_bad_knob_is_rejected_by_name(knobs: dict[str, object], field: str, message: str) -> None:
    """Each out-of-range knob raises InvalidArgument that names it and its range."""
    with pytest.raises(InvalidArgument) as info:
        SamplingParams(**{"max_tokens": 10, **knobs}).validated(max_tokens_limit=100, vocab_size=10)  # type: ignore[arg-type]
    assert info.value.field == field
    assert message in str(info.value)
    assert str(info.value).startswith(f"{field}: ")


def test_defaults_are_valid() -> None:
    """The default knobs pass validation."""
    assert SamplingParams().validated(vocab_size=10) == SamplingParams()


def test_temperature_zero_is_greedy() -> None:
    """Temperature 0 always picks the largest logit."""
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    source = StreamRandom(0)
    assert {sample_token(logits, SamplingParams(temperature=0), source) for _ in range(20)} == {1}


def test_top_k_keeps_only_the_k_likeliest() -> None:
    """With top_k=2 only the two largest logits are ever drawn."""
    logits = torch.tensor([1.0, 1.1, 0.9, 1.2])
    source = StreamRandom(1)
    drawn = {sample_token(logits, SamplingParams(temperature=5, top_k=2), source) for _ in range(200)}
    assert drawn == {1, 3}


def test_top_p_keeps_the_smallest_nucleus() -> None:
    """With top_p=0.5 a token holding 60% of the mass is the only one drawn."""
    logits = torch.log(torch.tensor([0.6, 0.3, 0.1]))
    source = StreamRandom(2)
    drawn = {sample_token(logits, SamplingParams(temperature=1, top_p=0.5), source) for _ in range(200)}
    assert drawn == {0}


def test_sampling_follows_the_distribution() -> None:
    """At temperature 1 frequencies match the softmax."""
    probs = torch.tensor([0.5, 0.25, 0.25])
    source = StreamRandom(3)
    counts = torch.zeros(3)
    for _ in range(4000):
        counts[sample_token(torch.log(probs), SamplingParams(temperature=1), source)] += 1
    assert torch.allclose(counts / 4000, probs, atol=0.03)


def test_same_seed_same_tokens() -> None:
    """Two sources with one seed draw the same sequence."""
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(temperature=1.0, seed=7)
    a, b = StreamRandom(7), StreamRandom(7)
    assert [sample_token(logits, params, a) for _ in range(30)] == [sample_token(logits, params, b) for _ in range(30)]


def test_batched_sampling_equals_row_by_row() -> None:
    """A batch of rows with mixed knobs draws what each row would draw alone."""
    logits = torch.randn(6, 40, generator=torch.Generator().manual_seed(4))
    params = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=1.0),
        SamplingParams(temperature=0.7, top_k=5),
        SamplingParams(temperature=1.3, top_p=0.8),
        SamplingParams(temperature=0.9, top_k=10, top_p=0.9),
        SamplingParams(temperature=2.0, top_k=1),
    ]
    batched = [StreamRandom(s) for s in range(6)]
    alone = [StreamRandom(s) for s in range(6)]
    for _ in range(50):
        rows = sample_tokens(logits, params, batched)
        assert rows == [sample_token(logits[r], params[r], alone[r]) for r in range(6)]


def test_stream_random_draws_do_not_depend_on_the_batch() -> None:
    """A source's n-th uniform is the same drawn alone or beside others, and lies in [0, 1)."""
    source = StreamRandom(2**64 - 1)
    alone = [draw_uniforms([source])[0] for _ in range(5)]
    crowd = [StreamRandom(s) for s in range(7)] + [StreamRandom(2**64 - 1)]
    together = [draw_uniforms(crowd)[-1] for _ in range(5)]
    assert alone == together
    values = draw_uniforms([StreamRandom(s) for s in range(20000)])
    assert values.min() >= 0 and values.max() < 1
    assert abs(values.mean() - 0.5) < 0.01


def test_unseeded_sources_differ() -> None:
    """Without a seed every stream gets its own random seed."""
    assert StreamRandom().seed != StreamRandom().seed
