"""The options of ``antiphon train textdisc``: what :func:`server.textdisc.train.train_textdisc` reads, validated
before any sampling so that a bad option is named at once. Torch-free: the command line is generated from the
fields that are flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from server.errors import InvalidArgument
from server.options import TrainOptions, at_least, comma_list, option, optional_path, within
from server.paths import DEFAULT_TEXT_CHECKPOINT, checkpoint_variable, default_checkpoint, shown
from server.textdisc.sample_sets import TEST_SAMPLES, TRAIN_SAMPLES, WINDOW, SampleSet, split_held_out


def _dilations(raw: str) -> tuple[int, ...]:
    values = comma_list(raw)
    try:
        dilations = tuple(int(v) for v in values)
    except ValueError:
        raise InvalidArgument("dilations", f"must be whole numbers, got {','.join(values)}") from None
    if not 1 <= len(dilations) <= 8 or any(not 1 <= d <= 64 for d in dilations):
        raise InvalidArgument("dilations", f"give one to eight values in 1..64, got {','.join(values)}")
    return dilations


def _ngram_orders(raw: str) -> tuple[int, ...]:
    values = comma_list(raw)
    if values == ("none",):
        return ()
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise InvalidArgument("ngrams", f"must be whole numbers or 'none', got {','.join(values)}") from None


@dataclass
class TextDiscModelOptions:
    """The flags of the model's config (:class:`server.textdisc.model.TextDiscConfig` fields; their defaults are
    the command's, some of them not the config's: the tests check those against the model's constants). None: the
    field is left to the model's assembly (:mod:`server.textdisc.assemble`)."""

    channels: int = option(64, "channels of every convolution", parse=int)
    dilations: tuple[int, ...] = option(
        (1, 2, 4, 8, 16), "one convolution (width 5) per dilation", parse=_dilations, shown="1,2,4,8,16"
    )
    ngram_orders: tuple[int, ...] = option(
        (),
        "orders of hashed character n-gram embeddings to add to each character's, e.g. 3,5 ('none': characters "
        "only; 3,5 learnt the training plays' n-grams and tested worse)",
        name="ngrams",
        parse=_ngram_orders,
        shown="none",
    )
    ngram_buckets: int = option(16381, "rows of each n-gram table", parse=int)
    characters: bool = option(
        True,
        "with --scorer: the scorer's features only, no character embedding (characters let the model learn the "
        "real training text by heart)",
        switch=False,
    )
    rank_width: float = option(  # server.textdisc.model.RANK_WIDTH
        0.01,
        "with --scorer: the width in nats of the soft comparisons that count the characters the scorer found "
        "likelier (their rank and mass); 0: hard comparisons, which a near tie can flip in an exported file",
        parse=float,
    )
    band_width: float = option(  # server.textdisc.model.BAND_WIDTH
        0.05,
        "with --base: the width in nats of the soft edges between the scorer's entropy bands (0: hard edges, which "
        "rounding in an exported file can cross)",
        parse=float,
    )
    scorer_skip: int | None = option(
        None,
        "with --base: the first character of the window whose scorer features the statistics count (the scorer "
        "reads each window from a newline, cold; default 8, the first models 32)",
        parse=int,
    )
    position_statistics: bool | None = option(
        None,
        "with --base: leave out the scorer's view by where a character stands in a word (first letter, other "
        "letters, other characters)",
        switch=False,
    )


@dataclass
class TrainSampleOptions:
    """The flag of the training sample set (the rest of :data:`~server.textdisc.sample_sets.TRAIN_SAMPLES` is
    fixed)."""

    streams: int = option(
        TRAIN_SAMPLES.streams,
        f"sampled training streams ({TRAIN_SAMPLES.length:,} characters each) per temperature and variant; "
        f"{len(TRAIN_SAMPLES.temperatures) * len(TRAIN_SAMPLES.variants)} settings",
        name="train_streams",
        parse=int,
    )


@dataclass
class TextDiscTrainOptions(TrainOptions):
    # the generator whose samples are the "generated" class
    text_checkpoint: Path = option(  # noqa: RUF009
        help=f"the generator (default: {shown(DEFAULT_TEXT_CHECKPOINT)} or ${checkpoint_variable('text')})",
        parse=Path,
        fallback=lambda: default_checkpoint("text"),
    )
    # None: Shakespeare (held-out plays test); a file: its last 5% tests
    corpus: Path | None = option(  # noqa: RUF009
        None, "a UTF-8 text file instead of Shakespeare (last 5% tests)", parse=Path
    )
    steps: int = option(3000, "optimizer steps", parse=int)
    batch_size: int = option(64, "windows per step, half real", parse=int)
    lr: float = option(3e-3, "peak learning rate (AdamW, one-cycle)", parse=float)
    seed: int = option(0, "initialization and window draws", parse=int)
    train_samples: SampleSet = option(default_factory=lambda: TRAIN_SAMPLES, nested=TrainSampleOptions)  # noqa: RUF009
    # a character LSTM (frozen) whose view of each window the model reads
    scorer_checkpoint: Path | None = option(  # noqa: RUF009
        None,
        "a character LSTM checkpoint (same vocabulary) that reads each window inside the model: its surprise, "
        "entropy and rank of every character are the model's input beside the character ('none': characters only)",
        name="scorer",
        parse=optional_path,
        shown="none",
    )
    pool_windows: int = option(  # with a scorer: generated training windows in the fixed pool (0: all)
        0,
        "with --scorer: generated training windows (and as many real) whose scorer features are computed once and "
        "cached (0: every non-overlapping window of the training streams)",
        parse=int,
    )
    real_train_plays: float = option(  # with real_train_share and a scorer: the share of real windows from the plays
        0.0,
        "with --scorer and --real-train-share: the share of the real training windows taken from the training "
        "plays all the same",
        parse=float,
    )
    # The share of the held-out text (from its start) whose windows are the real class instead of the training
    # plays', the test's real windows coming from the rest (sample_sets.split_held_out); 0: the training plays.
    real_train_share: float = option(
        0.0,
        "the share of the held-out text (from its start, cut at a line start) whose windows are the real class "
        "instead of the training plays'; the test's real windows come from the rest (0: training plays; with a "
        "scorer trained on the training plays, 0.4434: Hamlet, which it never read)",
        parse=float,
    )
    # A trained discriminator without a scorer whose embedding, lexicon and convolutions are copied and frozen:
    # only the head trains, over their pooled vector and the scorer's window statistics (scorer_pooled).
    base_checkpoint: Path | None = option(  # noqa: RUF009
        None,
        "with --scorer: a trained discriminator without a scorer (characters, lexicon) whose weights are copied and "
        "frozen; only the head trains, over its pooled convolutions and statistics of the scorer's features over "
        "the window (their mean and spread, overall and by the scorer's entropy): too few weights to learn the real "
        "text by heart, so the real class can be held-out text the scorer never read (--real-train-share)",
        name="base",
        parse=Path,
    )
    # With a base: a second character LSTM (same vocabulary; the small one), frozen inside the model, whose view
    # of the window beside the scorer's enters the head (model.REFERENCE_STATISTICS).
    reference_checkpoint: Path | None = option(  # noqa: RUF009
        None,
        "with --base: a second, weaker character LSTM (e.g. models/text/char_lstm_small.safetensors) read beside "
        "the scorer; how its view of each character differs from the scorer's enters the head (text the generator "
        "sampled is likelier to it than to a weaker model; real text is hard for both)",
        name="reference",
        parse=Path,
    )
    lexicon: bool = option(  # the training documents' words, in the graph (server.textdisc.lexicon)
        True,
        "no lexicon: by default the model holds the training documents' words (a table of a million bytes) and sees "
        "at each word's end whether it is known and how common; made-up words are what hot samples give away",
        switch=False,
    )
    out: Path = option(Path("runs/textdisc/text_disc.safetensors"), "checkpoint to write", parse=Path)  # noqa: RUF009
    progress: bool = option(True, "no progress bar (logs only)", switch=False)
    # TextDiscConfig fields
    model: dict[str, Any] | None = option(None, nested=TextDiscModelOptions, group="model")  # noqa: RUF009
    weight_decay: float = 1e-2
    test_samples: SampleSet = TEST_SAMPLES
    check_every: int = 1000  # steps between logs of the trained / unseen streams check

    # 150 steps of a narrow model against a few short streams at two temperatures (seconds on the tiny corpus)
    DRY_RUN: ClassVar[dict[str, Any]] = {
        "steps": 150,
        "batch_size": 32,
        "progress": False,
        "model": {"embed_dim": 16, "channels": 32, "dilations": (1, 2, 4), "ngram_orders": (3,), "ngram_buckets": 1021},
        "train_samples": SampleSet((0.7, 1.0), 2, 800, 11, variants=((0, 1.0), (5, 1.0)), prompt=32),
        # other temperatures, seeds and top-p for the test
        "test_samples": SampleSet((0.8, 1.1), 2, 64 + 2 * WINDOW, 12, variants=((0, 1.0), (0, 0.9)), prompt=32),
    }

    def validate(self) -> None:
        from server.textdisc.model import TextDiscConfig  # torch: loaded when a run starts, not for the flags

        super().validate()
        at_least(self, 1, "steps", "check_every")
        at_least(self, 2, "batch_size")
        within(self, "lr", 0, 1, "()")
        if not 1 <= self.train_samples.streams <= 10_000:
            raise InvalidArgument("train_streams", f"must be in 1..10000, got {self.train_samples.streams}")
        TextDiscConfig(vocab_size=2, **(self.model or {}))  # names a bad model option before any sampling
        split_held_out("\n" * (4 * WINDOW), self.real_train_share)  # names a bad share before any work
        within(self, "real_train_plays", 0, 1, "[)")
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
