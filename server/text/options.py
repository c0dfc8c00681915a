"""The options of ``antiphon train text`` (what :class:`server.text.train.TextTrainer` reads, validated before the
corpus is read) and the settings of ``antiphon eval text --dynamic``. Torch-free: the command line is generated from
the fields that are flags."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from server.data.shakespeare import DEV_PLAYS, check_dev_plays
from server.errors import InvalidArgument
from server.options import (
    LoopTrainOptions,
    at_least,
    check_init,
    loop_option,
    option,
    within,
)


@dataclass
class CharLSTMSizes:
    """The flags of the model's config (:class:`server.text.model.CharLSTMConfig`'s fields but the vocabulary, which
    is the corpus's). Their defaults are the config's but ``dropout``'s: 0.1 here, 0.0 in the config (the tests
    check the others)."""

    hidden_size: int = option(512, "units in each LSTM layer", parse=int)
    num_layers: int = option(2, "stacked LSTM layers", name="layers", parse=int)
    embed_dim: int = option(64, "size of each character's embedding", parse=int)
    dropout: float = option(0.1, "between layers (and on the output)", parse=float)
    embed_dropout: float = option(0.0, "on the embedding", parse=float)
    output_dropout: float | None = option(None, "on the output (default: --dropout)", parse=float)


# The flag of each model config field, to name the flag a bad value came from (--layers, not num_layers).
MODEL_FLAGS = {f.name: f.metadata["flag"].dest(f.name) for f in fields(CharLSTMSizes)}


def _dev_plays(names: list[str]) -> tuple[str, ...]:
    """``--dev-plays`` alone: :data:`~server.data.shakespeare.DEV_PLAYS`; with names: those plays."""
    return tuple(names) or DEV_PLAYS


@dataclass
class TextTrainOptions(LoopTrainOptions):
    # None: the Shakespeare corpus
    corpus: Path | None = option(  # noqa: RUF009
        None, "a UTF-8 text file instead of Shakespeare (last 5% held out)", parse=Path
    )
    out: Path = loop_option("out", Path("runs/text/model.safetensors"))  # noqa: RUF009
    precision: str = loop_option("precision", "auto")
    seed: int = loop_option("seed", 1234)
    lr: float = loop_option("lr", 2e-3, optimizer="AdamW")
    # start from this checkpoint's weights, vocabulary and sizes, with a fresh schedule
    init: Path | None = option(  # noqa: RUF009
        None,
        "start from this character-LSTM checkpoint's weights, vocabulary and sizes (the size flags are ignored; "
        "the dropout flags are this run's), with a fresh learning-rate schedule: more training for a committed "
        "model, or fine-tuning it on --corpus; the card names it",
        parse=Path,
    )
    batch_size: int = option(64, "parallel text streams per process", parse=int)
    seq_len: int = option(128, "characters per truncated-BPTT chunk", parse=int)
    weight_decay: float = option(0.01, "AdamW decoupled weight decay on matrices", parse=float)
    min_lr_ratio: float = option(0.05, "the cosine's floor, a fraction of --lr", parse=float)
    # Training plays held out as a development split (DEV_PLAYS, say): the progress estimate reads them and the
    # checkpoint reports them beside the held-out plays. (): train on every play.
    dev_plays: tuple[str, ...] = option(
        (),
        "hold these training plays out as a development split, reported beside the held-out plays "
        f"(no PLAY: {' '.join(DEV_PLAYS)})",
        parse=_dev_plays,
        nargs="*",
        metavar="PLAY",
        shown="off",
    )
    # CharLSTMConfig fields but vocab_size
    model: dict[str, Any] = option(default_factory=dict, nested=CharLSTMSizes, group="model")  # noqa: RUF009
    grad_clip: float = 1.0

    # 60 steps of 8 x 32 characters for a 2 x 32 LSTM: seconds on one core (the tests give it their tiny corpus)
    DRY_RUN: ClassVar[dict[str, Any]] = {
        "steps": 60,
        "device": "cpu",
        "precision": "fp32",
        "batch_size": 8,
        "seq_len": 32,
        "lr": 1e-2,
        "warmup_steps": 5,
        "eval_every": 1000,
        "progress": False,
        "model": {"hidden_size": 32, "num_layers": 2, "embed_dim": 16, "dropout": 0.0},
    }

    def validate(self) -> None:
        from server.text.model import CharLSTMConfig  # torch: loaded when a run starts, not for the flags

        super().validate()
        try:  # before the corpus is read: the vocabulary comes with it, any size does to check the rest
            CharLSTMConfig(vocab_size=1, **self.model)
        except InvalidArgument as exc:
            raise InvalidArgument(MODEL_FLAGS.get(exc.field, exc.field), exc.reason) from None
        check_init(self)
        at_least(self, 1, "batch_size", "seq_len", "eval_every", "warmup_steps")
        within(self, "lr", 0, 1, "()")
        within(self, "weight_decay", 0, 1, "[)")
        within(self, "min_lr_ratio", 0, 1)
        if self.dev_plays and self.corpus is not None:
            raise InvalidArgument("dev_plays", "only the Shakespeare corpus has plays to hold out; drop --corpus")
        check_dev_plays(self.dev_plays)


@dataclass(frozen=True)
class DynamicEval:
    """Dynamic evaluation (Krause et al. 2018, the SGD form with a pull back to the trained weights): the text is
    scored in segments of ``segment`` characters; each segment is scored first, with the weights as the segments
    before it left them, and then the weights take one gradient step on that segment's mean loss,
    ``w <- w - lr * grad + decay * (w_trained - w)``. The score is a true online code, as a compressor's is: no
    character is scored by weights that have seen it."""

    lr: float = 0.03
    decay: float = 0.0
    segment: int = 20

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InvalidArgument("dynamic_lr", f"must be a positive number, got {self.lr}")
        if not (math.isfinite(self.decay) and 0 <= self.decay < 1):
            raise InvalidArgument("dynamic_decay", f"must be in [0, 1), got {self.decay}")
        if not 1 <= self.segment <= 10_000:
            raise InvalidArgument("segment", f"must be 1..10000 characters, got {self.segment}")
