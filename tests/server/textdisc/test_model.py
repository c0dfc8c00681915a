"""The discriminator's hashed n-gram embeddings: what they hash, and the checks on their options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.errors import InvalidArgument
from server.textdisc.model import TextDiscConfig, TextDiscriminator


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
