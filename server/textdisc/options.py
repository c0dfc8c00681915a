"""The options of ``antiphon train textdisc``: what :func:`server.textdisc.train.train_textdisc` reads, validated
before any sampling so that a bad option is named at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.errors import InvalidArgument
from server.textdisc.data import TEST_SAMPLES, TRAIN_SAMPLES, WINDOW, split_held_out
from server.textdisc.model import TextDiscConfig
from server.textdisc.samples import SampleSet


@dataclass
class TextDiscTrainOptions:
    text_checkpoint: Path  # the generator whose samples are the "generated" class
    scorer_checkpoint: Path | None = None  # a character LSTM (frozen) whose view of each window the model reads
    pool_windows: int = 0  # with a scorer: generated training windows in the fixed pool (0: all)
    # The share of the held-out text (from its start) whose windows are the real class instead of the training
    # plays', the test's real windows coming from the rest (data.split_held_out); 0: the training plays.
    real_train_share: float = 0.0
    real_train_plays: float = 0.0  # with real_train_share and a scorer: the share of real windows from the plays
    lexicon: bool = True  # the training documents' words, in the graph (server.textdisc.lexicon)
    # A trained discriminator without a scorer whose embedding, lexicon and convolutions are copied and frozen:
    # only the head trains, over their pooled vector and the scorer's window statistics (scorer_pooled).
    base_checkpoint: Path | None = None
    # With a base: a second character LSTM (same vocabulary; the small one), frozen inside the model, whose view
    # of the window beside the scorer's enters the head (model.REFERENCE_STATISTICS).
    reference_checkpoint: Path | None = None
    out: Path = Path("runs/textdisc/text_disc.safetensors")
    corpus: Path | None = None  # None: Shakespeare (held-out plays test); a file: its last 5% tests
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-2
    seed: int = 0
    train_samples: SampleSet = field(default_factory=lambda: TRAIN_SAMPLES)
    test_samples: SampleSet = field(default_factory=lambda: TEST_SAMPLES)
    model: dict[str, Any] | None = None  # TextDiscConfig fields
    check_every: int = 1000  # steps between logs of the trained / unseen streams check
    progress: bool = True

    def validate(self) -> None:
        if self.steps < 1:
            raise InvalidArgument("steps", f"must be at least 1, got {self.steps}")
        if self.batch_size < 2:
            raise InvalidArgument("batch_size", f"must be at least 2, got {self.batch_size}")
        if not 0 < self.lr < 1:
            raise InvalidArgument("lr", f"must be in (0, 1), got {self.lr}")
        TextDiscConfig(vocab_size=2, **(self.model or {}))  # names a bad model option before any sampling
        split_held_out("\n" * (4 * WINDOW), self.real_train_share)  # names a bad share before any work
        if not 0 <= self.real_train_plays < 1:
            raise InvalidArgument("real_train_plays", f"must be in [0, 1), got {self.real_train_plays}")
        if self.pool_windows < 0:
            raise InvalidArgument("pool_windows", f"must be 0 (all) or more, got {self.pool_windows}")
        if not (self.model or {}).get("characters", True) and self.scorer_checkpoint is None:
            raise InvalidArgument("characters", "a model without characters needs a scorer")
        if self.scorer_checkpoint is not None and not self.scorer_checkpoint.is_file():
            raise InvalidArgument("scorer", f"no such checkpoint: {self.scorer_checkpoint}")
        if self.base_checkpoint is not None:
            if self.scorer_checkpoint is None:
                raise InvalidArgument("base", "a base model is the frozen part beside a scorer: give --scorer")
            if not self.base_checkpoint.is_file():
                raise InvalidArgument("base", f"no such checkpoint: {self.base_checkpoint}")
        if self.reference_checkpoint is not None:
            if self.base_checkpoint is None:
                raise InvalidArgument("reference", "a reference model reads beside the scorer over a base: give --base")
            if not self.reference_checkpoint.is_file():
                raise InvalidArgument("reference", f"no such checkpoint: {self.reference_checkpoint}")
        self.train_samples.validate()
        self.test_samples.validate()
        if set(self.train_samples.temperatures) & set(self.test_samples.temperatures):
            raise InvalidArgument("test_samples", "test temperatures must differ from the training ones")
        if self.train_samples.seed == self.test_samples.seed:
            raise InvalidArgument("test_samples", "test seeds must differ from the training ones")
