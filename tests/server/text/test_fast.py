"""The compiled CPU step computes the model's own function, samples as server.sampling does, and gives a stream
the same tokens whatever else shares its batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from server.engine.backend import EagerLSTMBackend
from server.sampling import RowRules, SamplingParams, StreamRandom
from server.text.fast import FastLSTM
from server.text.model import CharLSTM, CharLSTMConfig


def rules(params: SamplingParams, seed: int, budget: int, stops: tuple[str, ...] = (), vocab: Any = None) -> RowRules:
    stop_ids = tuple(tuple(vocab.encode(s)) for s in stops) if stops else ()
    return RowRules(params, StreamRandom(seed), budget, stop_ids)


@pytest.mark.parametrize(("layers", "hidden", "vocab"), [(1, 24, 30), (2, 24, 31), (3, 20, 7)])
def test_prefill_and_steps_match_the_model_forward(layers: int, hidden: int, vocab: int) -> None:
    """Prompts of different lengths, then 20 greedy steps: the logits and state of nn.LSTM on the same tokens."""
    torch.manual_seed(layers)
    model = CharLSTM(CharLSTMConfig(vocab_size=vocab, embed_dim=8, hidden_size=hidden, num_layers=layers)).eval()
    fast = FastLSTM(model, threads=2)
    prompts = [torch.randint(1, vocab, (n,)).tolist() for n in (1, 5, 300, 17, 2, 9, 40, 3, 11)]
    state = fast.prefill(prompts, fast.zero_state(len(prompts)))
    with torch.no_grad():
        for r, prompt in enumerate(prompts):
            logits, (h, c) = model(torch.tensor([prompt]), model.init_state(1))
            np.testing.assert_allclose(state.logits[r], logits[0, -1].numpy(), rtol=0, atol=2e-5)
            np.testing.assert_allclose(state.h[:, r], h[:, 0].numpy(), rtol=0, atol=2e-5)
            np.testing.assert_allclose(state.c[:, r], c[:, 0].numpy(), rtol=0, atol=2e-5)
    greedy = [rules(SamplingParams(temperature=0), 0, 20) for _ in prompts]
    drawn = fast.advance(state, list(range(len(prompts))), greedy, 20)
    with torch.no_grad():
        for r, prompt in enumerate(prompts):
            assert len(drawn[r]) == 20
            logits, _ = model(torch.tensor([prompt + drawn[r]]), model.init_state(1))
            scores = logits[0, len(prompt) - 1 : -1].clone()  # the scores each drawn token was chosen from
            scores[:, 0] = -torch.inf
            assert drawn[r] == scores.argmax(dim=1).tolist()
            np.testing.assert_allclose(state.logits[r], logits[0, -1].numpy(), rtol=0, atol=2e-5)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.8),
        SamplingParams(temperature=1.3, top_k=3),
        SamplingParams(temperature=1.0, top_p=0.6),
        SamplingParams(temperature=0.7, top_k=10, top_p=0.9),
        SamplingParams(temperature=0),
    ],
)
def test_sampling_draws_what_numpy_sampling_draws(tiny_text_model: Any, params: SamplingParams) -> None:
    """Compiled sampling and the eager backend's NumPy sampling pick the same 150 tokens and take the same number
    of random draws."""
    model, vocab = tiny_text_model
    prompt = [vocab.encode("\nLear.\n")]
    fast, eager = FastLSTM(model), EagerLSTMBackend(model)
    ours, theirs = rules(params, 11, 150), rules(params, 11, 150)
    a = fast.advance(fast.prefill(prompt, fast.zero_state(1)), [0], [ours], 150)
    b = eager.advance(eager.prefill(prompt, eager.zero_state(1)), [0], [theirs], 150)
    assert a == b
    assert ours.random.count == theirs.random.count == (0 if params.temperature == 0 else 150)


def test_a_stream_draws_the_same_alone_batched_and_across_threads(tiny_text_model: Any) -> None:
    """Row 5 of a 13-row batch split over two threads: the same tokens and bit-identical state as alone."""
    model, vocab = tiny_text_model
    params = SamplingParams(temperature=1.0, top_p=0.95)
    prompts = [vocab.encode(f"\nLear.\n{'a' * r}") for r in range(13)]
    together = FastLSTM(model, threads=2)
    batch = together.prefill(prompts, together.zero_state(13))
    drawn = together.advance(batch, list(range(13)), [rules(params, r, 200) for r in range(13)], 200)
    alone = FastLSTM(model, threads=1)
    single = alone.prefill([prompts[5]], alone.zero_state(1))
    assert alone.advance(single, [0], [rules(params, 5, 200)], 200)[0] == drawn[5]
    assert np.array_equal(single.h[:, 0], batch.h[:, 5]) and np.array_equal(single.logits[0], batch.logits[5])


def test_rows_stop_at_their_budget_and_stop_sequences(tiny_text_model: Any) -> None:
    """A row ends with the token that completes a stop sequence (and reads it); another ends at its budget; a row
    not named is left alone."""
    model, vocab = tiny_text_model
    fast = FastLSTM(model)
    params = SamplingParams(temperature=1.0)
    prompt = vocab.encode("\nLear.\n")
    state = fast.prefill([prompt, prompt], fast.zero_state(2))
    free = fast.advance(fast.prefill([prompt], fast.zero_state(1)), [0], [rules(params, 3, 100)], 100)[0]
    text = vocab.decode(free)
    stop = text[30:33]
    untouched = state.h[:, 0].copy()
    [stopped] = fast.advance(state, [1], [rules(params, 3, 100, ("zzzz", stop), vocab)], 100)
    assert vocab.decode(stopped).endswith(stop) and stopped == free[: text.find(stop) + 3]
    assert np.array_equal(state.h[:, 0], untouched)
    with torch.no_grad():  # the row read the stop sequence's last token
        logits, _ = model(torch.tensor([prompt + stopped]), model.init_state(1))
    np.testing.assert_allclose(state.logits[1], logits[0, -1].numpy(), rtol=0, atol=2e-5)
    [short] = fast.advance(fast.prefill([prompt], fast.zero_state(1)), [0], [rules(params, 3, 7)], 100)
    assert short == free[:7]


def test_a_stop_sequence_spanning_calls_is_found_from_the_recent_tokens(tiny_text_model: Any) -> None:
    """One token per call, the tokens drawn before passed as ``recent``: the row still stops on the sequence."""
    model, vocab = tiny_text_model
    fast = FastLSTM(model)
    params = SamplingParams(temperature=1.0)
    prompt = vocab.encode("\nLear.\n")
    free = fast.advance(fast.prefill([prompt], fast.zero_state(1)), [0], [rules(params, 8, 80)], 80)[0]
    stop_ids = (tuple(free[40:44]),)
    state = fast.prefill([prompt], fast.zero_state(1))
    source = StreamRandom(8)
    drawn: list[int] = []
    while True:
        rule = RowRules(params, source, 80 - len(drawn), stop_ids, tuple(drawn[-3:]))
        [tokens] = fast.advance(state, [0], [rule], 1)
        drawn += tokens
        if rule.stopped(drawn) or not tokens:
            break
    text = vocab.decode(free)
    assert drawn == free[: text.find(text[40:44]) + 4]
