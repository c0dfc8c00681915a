"""The discriminator's hashed n-gram embeddings: what they hash, and the checks on their options."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from server.errors import InvalidArgument
from server.textdisc.model import SCORER_FEATURES, TextDiscConfig, TextDiscriminator


def test_an_ngram_changes_only_the_positions_whose_ngrams_hold_it() -> None:
    """Changing one character moves the pre-convolution vectors of exactly the positions whose character or
    n-grams (orders 3 and 5) contain it: itself and the four after it."""
    torch.manual_seed(0)
    model = TextDiscriminator(TextDiscConfig(vocab_size=20, ngram_orders=(3, 5), ngram_buckets=97, dilations=(1,)))
    captured: list[torch.Tensor] = []
    model.convs[0].register_forward_hook(lambda _m, args, _o: captured.append(args[0]))
    ids = torch.randint(1, 20, (1, 32), dtype=torch.int32)
    changed = ids.clone()
    changed[0, 10] = 20 - ids[0, 10]  # another id in 1..19
    model(ids)
    model(changed)
    moved = (captured[0] - captured[1]).abs().sum(dim=1)[0] > 0  # (T,)
    assert moved.nonzero().flatten().tolist() == [10, 11, 12, 13, 14]


def test_characters_only_and_int64_ids_give_the_same_logits() -> None:
    """Without n-grams the model is the character model; int32 and int64 ids agree."""
    model = TextDiscriminator(TextDiscConfig(vocab_size=20, ngram_orders=(), dilations=(1, 2))).eval()
    assert not list(model.ngrams)
    ids = torch.randint(0, 20, (2, 40))
    full = TextDiscriminator(TextDiscConfig(vocab_size=20, ngram_orders=(3, 5), dilations=(1, 2))).eval()
    assert torch.equal(full(ids), full(ids.to(torch.int32)))
    assert model(ids).shape == (2, 2)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ngram_orders": (1,)}, "ngrams: give distinct orders in 2..8, got (1,)"),
        ({"ngram_orders": (3, 3)}, "ngrams: give distinct orders in 2..8, got (3, 3)"),
        ({"ngram_buckets": 0}, "ngram_buckets: must be in 1..25264512"),
    ],
)
def test_bad_ngram_options_are_named(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        TextDiscConfig(vocab_size=85, **fields)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_a_checkpoint_from_before_ngrams_loads_as_characters_only(tmp_path: Path) -> None:
    """A config without n-gram fields (the first committed checkpoints) rebuilds a characters-only model."""
    from server.checkpoint import save_checkpoint
    from server.text.vocab import Vocabulary
    from server.textdisc.checkpoint import KIND, load_textdisc_model

    vocab = Vocabulary.from_text("Kent.\nHo!")
    model = TextDiscriminator(TextDiscConfig(vocab_size=len(vocab), ngram_orders=(), dilations=(1,)))
    config = {k: v for k, v in model.config.to_dict().items() if not k.startswith("ngram")}
    path = tmp_path / "old.safetensors"
    save_checkpoint(
        path, model.state_dict(), {"kind": KIND, "config": config, "vocab": vocab.chars, "labels": ["a", "b"]}
    )
    loaded, _, _ = load_textdisc_model(path)
    assert loaded.config.ngram_orders == () and not list(loaded.ngrams)


def _scored_model() -> TextDiscriminator:
    scorer = {"vocab_size": 20, "embed_dim": 8, "hidden_size": 16, "num_layers": 2, "dropout": 0.1}
    torch.manual_seed(0)
    return TextDiscriminator(TextDiscConfig(vocab_size=20, dilations=(1, 2), scorer=scorer, scorer_start_id=3))


def test_scorer_features_are_the_lstms_view_of_each_character() -> None:
    """Position t holds the scorer's surprise at character t after the start id and the characters before it,
    the entropy of its prediction, the character's rank and the mass of the likelier characters."""
    from server.text.model import CharLSTM

    model = _scored_model().eval()
    ids = torch.randint(0, 20, (2, 30), dtype=torch.int32)
    features = model.score(ids)
    assert features.shape == (2, 30, len(SCORER_FEATURES))
    scorer = model.scorer
    assert isinstance(scorer, CharLSTM)
    inputs = torch.cat([torch.full((2, 1), 3), ids[:, :-1].long()], dim=1)
    logp = torch.log_softmax(scorer(inputs, scorer.init_state(2, "cpu"))[0], dim=-1)  # (2, 30, 20)
    actual = logp.gather(2, ids.long().unsqueeze(2)).squeeze(2)
    torch.testing.assert_close(features[..., 0], -actual)
    torch.testing.assert_close(features[..., 1], -(logp.exp() * logp).sum(dim=2))
    likelier = logp > actual.unsqueeze(2)
    torch.testing.assert_close(features[..., 3], torch.log1p(likelier.sum(dim=2).float()))
    torch.testing.assert_close(features[..., 5], (logp.exp() * likelier).sum(dim=2))


def test_the_scorer_is_frozen_and_forward_is_classify_of_its_features() -> None:
    """Training touches only the discriminator's own weights, the scorer never drops out, and the forward pass
    equals the classifier on precomputed features (what training feeds it)."""
    model = _scored_model().train()
    assert model.scorer is not None and not model.scorer.training
    trainable = {id(p) for p in model.trainable_parameters()}
    assert not trainable & {id(p) for p in model.scorer.parameters()}
    assert model.num_parameters() == sum(p.numel() for p in model.trainable_parameters())
    assert model.scorer_parameters() == sum(p.numel() for p in model.scorer.parameters())
    model.eval()
    ids = torch.randint(0, 20, (3, 40))
    torch.testing.assert_close(model(ids), model.classify(ids, model.score(ids)))
    torch.testing.assert_close(model(ids), model(ids.to(torch.int32)))


def test_a_scorer_of_another_vocabulary_is_refused() -> None:
    scorer = {"vocab_size": 30, "embed_dim": 8, "hidden_size": 16, "num_layers": 1, "dropout": 0.0}
    with pytest.raises(InvalidArgument) as info:
        TextDiscConfig(vocab_size=20, scorer=scorer)
    assert str(info.value) == "scorer: the scorer's vocabulary must be the discriminator's"


def test_without_characters_only_the_scorer_features_count() -> None:
    """`characters=False`: the logits depend on the window only through the scorer's features, and the unused
    character embedding does not train."""
    scorer = {"vocab_size": 20, "embed_dim": 8, "hidden_size": 16, "num_layers": 1, "dropout": 0.0}
    model = TextDiscriminator(TextDiscConfig(vocab_size=20, dilations=(1,), scorer=scorer, characters=False)).eval()
    ids = torch.randint(0, 20, (2, 30))
    features = model.score(ids)
    torch.testing.assert_close(model.classify(ids, features), model.classify(torch.zeros_like(ids), features))
    assert not model.embed.weight.requires_grad
    with pytest.raises(InvalidArgument) as info:
        TextDiscConfig(vocab_size=20, scorer=scorer, characters=False, ngram_orders=(3,))
    assert str(info.value) == "characters: a model without characters has no n-grams either"


def test_a_soft_rank_counts_a_near_tie_by_half_and_clear_cases_as_the_hard_one() -> None:
    """With ``rank_width``, a likelier character counts by a logistic step of the log-probability gap: clear gaps
    count 0 or 1 as with hard comparisons, a tie counts 1/2, and the rounding of one logit moves the rank by about
    as much as the rounding (a hard count jumps by one)."""
    from server.textdisc.model import ScorerView

    logits = torch.tensor([[[2.0, 0.0, 2.0 + 1e-6, -3.0, 5.0]]])  # the character is id 0; id 2 ties it
    ids = torch.tensor([[0]])
    hard, soft = ScorerView(5)(ids, logits), ScorerView(5, rank_width=0.01)(ids, logits)
    assert hard[0, 0, 3].item() == pytest.approx(math.log1p(2))  # ids 2 and 4
    assert soft[0, 0, 3].item() == pytest.approx(math.log1p(1.5), abs=1e-3)  # id 4, and half of id 2
    nudged = logits.clone()
    nudged[0, 0, 2] -= 2e-6  # the tie the other way round
    moved_hard = (ScorerView(5)(ids, nudged) - hard).abs().max().item()
    moved_soft = (ScorerView(5, rank_width=0.01)(ids, nudged) - soft).abs().max().item()
    assert moved_hard > 0.1 and moved_soft < 1e-3
    far = torch.tensor([[[2.0, 0.0, 3.0, -3.0, 5.0]]])
    torch.testing.assert_close(ScorerView(5, rank_width=0.01)(ids, far), ScorerView(5)(ids, far), atol=1e-6, rtol=0)
