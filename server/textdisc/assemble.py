"""Assemble the text discriminator to train from its optional sources, each switched on by an option of
:class:`~server.textdisc.options.TextDiscTrainOptions`: the model options, a scorer (a frozen character LSTM
read by the model, ``scorer_checkpoint``), a base (a trained discriminator without a scorer, frozen under the head,
``base_checkpoint``), a reference (a second frozen LSTM beside the scorer, ``reference_checkpoint``) and the
lexicon of the training documents (``lexicon``).

With a lexicon, a real window of a training document is read with that document taken off the lexicon's counts
(:class:`Unread`), as the test's held-out plays are. With a base, only the head trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from server.checkpoint import file_sha256
from server.errors import InvalidArgument
from server.text.checkpoint import load_text_model
from server.text.model import CharLSTM
from server.text.vocab import Vocabulary
from server.textdisc.checkpoint import load_textdisc_model
from server.textdisc.data import LABELS
from server.textdisc.lexicon import MAX_DOCUMENTS, document_lexicon, own_words
from server.textdisc.model import BAND_WIDTH, RANK_WIDTH, WARM_UP, TextDiscConfig, TextDiscriminator
from server.textdisc.options import TextDiscTrainOptions


def freeze_to_head(model: TextDiscriminator, base: TextDiscriminator) -> None:
    """Copy ``base``'s weights (embedding, lexicon, convolutions) into ``model`` and freeze them; ``model``'s head
    starts as ``base``'s, with zero weights for the scorer's statistics, so training starts from the base's
    answers."""
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("head.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen_elsewhere = ("head.", "scorer", "scorer_view.", "scorer_stats.", "reference.")
    if unexpected or any(not k.startswith(frozen_elsewhere) for k in missing):
        raise InvalidArgument("base", f"does not fit the model: missing {missing}, unexpected {unexpected}")
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith("head."))
    width = base.head.in_features
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.weight[:, :width] = base.head.weight
        model.head.bias.copy_(base.head.bias)


class Unread:
    """What training takes off the lexicon's counts so that a window of a training document reads as one of a
    document nobody read (the test's held-out plays): that document's own words (:func:`lexicon.own_words`)."""

    def __init__(self, model: TextDiscriminator, own: list[np.ndarray]) -> None:
        self.model = model
        self.own = own

    @torch.no_grad()
    def __call__(self, ids: np.ndarray, documents: np.ndarray) -> torch.Tensor | None:
        if not (documents >= 0).any():
            return None
        words = self.model.words(torch.from_numpy(ids))
        return torch.from_numpy(own_words(words.hashes.numpy(), words.ends.numpy(), documents, self.own))


def frozen_lstm(path: Path, vocab: Vocabulary, field: str) -> tuple[CharLSTM, dict[str, Any]]:
    """A character LSTM the model reads windows with (the scorer, the reference) and what the checkpoint records of
    it; ``field`` names it in errors."""
    model, its_vocab, meta = load_text_model(path)
    if its_vocab.chars != vocab.chars:
        raise InvalidArgument(field, f"{path.name} has another vocabulary than the generator")
    return model, {
        "file": path.name,
        "sha256": file_sha256(path),
        "kind": meta["kind"],
        "parameters": model.num_parameters(),
    }


def load_base(path: Path, vocab: Vocabulary) -> tuple[TextDiscriminator, dict[str, Any]]:
    """A trained discriminator without a scorer (``--base``) and what the checkpoint records of it."""
    model, its_vocab, meta = load_textdisc_model(path)
    if its_vocab.chars != vocab.chars or model.scorer is not None:
        raise InvalidArgument("base", f"{path.name} needs the generator's vocabulary and no scorer")
    return model, {"file": path.name, "sha256": file_sha256(path), "test_accuracy": meta["metrics"]["test_accuracy"]}


def stacked_config(config: dict[str, Any], base: TextDiscConfig, asked: dict[str, Any]) -> dict[str, Any]:
    """The config of a head over a frozen base: the base's own fields, the scorer's from ``config``, and the pooled
    statistics' options from ``asked`` (the model options) or their defaults."""
    keep = ("vocab_size", "num_classes", "scorer", "scorer_start_id", "rank_width")
    config = {k: v for k, v in config.items() if k in keep} | {k: v for k, v in base.to_dict().items() if k not in keep}
    return config | {
        "scorer_pooled": True,
        "band_width": asked.get("band_width", BAND_WIDTH),
        "position_statistics": asked.get("position_statistics", bool(config.get("lexicon_documents"))),
        "scorer_skip": asked.get("scorer_skip", WARM_UP),
    }


@dataclass
class Assembled:
    """The model to train and what the checkpoint records of each optional source (None: not used)."""

    model: TextDiscriminator
    unread: Unread | None  # with a lexicon: what training takes off its counts
    scorer: dict[str, Any] | None
    reference: dict[str, Any] | None
    lexicon: dict[str, Any] | None
    base: dict[str, Any] | None
    features_key: str | None  # with a scorer: what its cached features depend on (its and the reference's sha256)


def assemble_model(opts: TextDiscTrainOptions, vocab: Vocabulary, documents: list[str]) -> Assembled:
    """The model ``opts`` asks for, its frozen parts loaded; ``documents``: the training documents' texts, for the
    lexicon. The trained weights start from torch's generator: seed it first."""
    asked = opts.model or {}
    config = {"vocab_size": len(vocab), "num_classes": len(LABELS), **asked}
    scorer_model: CharLSTM | None = None
    scorer: dict[str, Any] | None = None
    if opts.scorer_checkpoint is not None:
        scorer_model, scorer = frozen_lstm(opts.scorer_checkpoint, vocab, "scorer")
        config |= {
            "scorer": scorer_model.config.to_dict(),
            "scorer_start_id": vocab.encode("\n")[0],
            "rank_width": asked.get("rank_width", RANK_WIDTH),
        }
    base_model: TextDiscriminator | None = None
    base: dict[str, Any] | None = None
    if opts.base_checkpoint is not None:
        base_model, base = load_base(opts.base_checkpoint, vocab)
        config = stacked_config(config, base_model.config, asked)
    reference_model: CharLSTM | None = None
    reference: dict[str, Any] | None = None
    if opts.reference_checkpoint is not None:
        reference_model, reference = frozen_lstm(opts.reference_checkpoint, vocab, "reference")
        config["reference"] = reference_model.config.to_dict()
    use_lexicon = bool(config.get("lexicon_documents")) if base is not None else opts.lexicon
    if use_lexicon and base is None:
        if len(documents) > MAX_DOCUMENTS:
            raise InvalidArgument(
                "lexicon", f"counts at most {MAX_DOCUMENTS} documents, the corpus has {len(documents)}"
            )
        config["lexicon_documents"] = len(documents)
    model = TextDiscriminator(TextDiscConfig(**config))
    unread: Unread | None = None
    lexicon: dict[str, Any] | None = None
    table: np.ndarray | None = None
    if use_lexicon:
        table, own = document_lexicon(vocab, documents)
        model.set_lexicon(vocab.chars, table)
        unread = Unread(model, own)
        lexicon = {"documents": len(documents), "words": int(np.count_nonzero(table)), "buckets": len(table)}
    if base_model is not None and base is not None:
        freeze_to_head(model, base_model)
        if table is not None and not torch.equal(model.lexicon, torch.from_numpy(table)):
            raise InvalidArgument("base", f"{base['file']}'s lexicon holds another corpus's words")
    features_key: str | None = None
    if model.scorer is not None:
        assert scorer_model is not None and scorer is not None
        model.scorer.load_state_dict(scorer_model.state_dict())
        features_key = scorer["sha256"]
        if model.reference is not None:
            assert reference_model is not None and reference is not None
            model.reference.load_state_dict(reference_model.state_dict())
            features_key += f"+{reference['sha256']}"
    return Assembled(model, unread, scorer, reference, lexicon, base, features_key)
