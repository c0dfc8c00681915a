"""The options of ``antiphon train kws``: what :func:`server.kws.train.train_kws` reads, validated before any
rendering. Torch-free: the command line is generated from the fields that are flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from server.errors import InvalidArgument
from server.kws.augment import AugmentConfig
from server.kws.data import MINE_POOLS, TEST_PER_LABEL, KWSDataConfig
from server.options import TrainOptions, at_least, comma_list, float_pair, option, within


@dataclass
class KWSModelOptions:
    """The flags of the model's config (:class:`server.kws.model.KWSConfig` fields; the tests check the
    defaults are its own)."""

    channels: int = option(88, "DS-CNN width (ignored with --init)", parse=int)
    blocks: int = option(4, "depthwise-separable blocks (ignored with --init)", parse=int)
    peak_db: float | None = option(
        None,
        "move every clip's peak to this level (dBFS, -60..0) inside the model, before the log-mel (raised by at "
        "most 40 dB); with --init it replaces the checkpoint's",
        parse=float,
        metavar="DB",
        shown="off: only clips below -30 dBFS raised to it",
    )


def _speed_range(raw: str) -> tuple[float, float]:
    return float_pair(raw, "speed_range")


@dataclass
class KWSTrainOptions(TrainOptions):
    steps: int = option(4000, "optimizer steps", parse=int)
    batch_size: int = option(64, "fresh augmented clips per step", parse=int)
    lr: float = option(4e-3, "peak learning rate (AdamW, one-cycle)", parse=float)
    seed: int = option(0, "initialization, clip draws and augmentation", parse=int)
    data: KWSDataConfig = option(default_factory=KWSDataConfig, nested=KWSDataConfig, group="data")  # noqa: RUF009
    test_per_label: int = option(  # the test set's clips of each label, scored once at the end (0: none)
        TEST_PER_LABEL,
        "clips of each label in the test set, scored once after training: the held-out voices again, with fresh "
        "renderings and other words that no training reads (0: none)",
        parse=int,
    )
    # share of training words cut from running speech (other words right before and after)
    context: float = option(
        0.5,
        "share of training words placed between parts of other words, as cut from running speech (0 to 1)",
        parse=float,
    )
    speed: tuple[float, float] = option(  # resampling factors of the speed/pitch augmentation
        AugmentConfig.speed,
        "resampling factors of the speed and pitch augmentation (> 1: faster and higher), drawn uniformly for 80% "
        "of the clips; a wider range hears slower, deeper and faster, higher voices than espeak-ng's",
        name="speed_range",
        parse=_speed_range,
        metavar="LOW,HIGH",
        shown=",".join(f"{v:g}" for v in AugmentConfig.speed),
    )
    unknown_share: float | None = option(  # None: 1/12, like every label
        None,
        "share of unknown clips in each batch, the other labels alike (default: 1/12, like every label)",
        parse=float,
    )
    hard_share: float = option(  # share of the "unknown" clips that are hard negatives (data.hard_renderings > 0)
        0.0, "share of the unknown clips drawn from the hard negatives (with --hard-renderings)", parse=float
    )
    balanced_loss: bool = option(  # logit-adjusted loss: the batches' label shares do not become the model's prior
        False,
        "logit-adjusted loss: the log of each label's share of the batches is added to its logit in the loss, so "
        "that a larger --unknown-share shows more unknown words without making unknown the likelier answer",
        switch=True,
    )
    mine_share: float = option(  # share of the unknown clips drawn by the model's error on them (0: no mining)
        0.0,
        "share of the unknown clips mined: drawn in proportion to the model's error on them (1 - p(unknown), every "
        "unknown training clip, other words and hard negatives, heard clean every --mine-every steps), so the words "
        "it takes for a number word come back more often; 0: no mining",
        parse=float,
    )
    mine_every: int = option(500, "steps between the scorings for --mine-share", parse=int)
    mine_pool: str = option(  # "unknown" (every unknown clip) or "hard" (hard negatives)
        "unknown",
        "what --mine-share draws from: every unknown training clip, or the hard negatives only (so that the ones "
        "the model still takes for their number word, 'seventeen', 'forty', come back far more often)",
        choices=MINE_POOLS,
    )
    keyword_gap: float = option(  # least pause (s) before the next word after a number word in running speech
        0.0,
        "seconds of pause at least between a number word and the next word when it is cut from running speech "
        "(--context), so that 'seven' and the next word's start do not sound like 'seventeen' with the label seven; "
        "0: the pause of the other words (30 ms or more)",
        parse=float,
    )
    unknown_bias: float = option(  # added to the trained head's unknown bias, before every figure of the card
        0.0,
        "added to the unknown logit once training ends (folded into the head's bias, so exports carry it): a larger "
        "value hears more other words as unknown and fewer number words; choose it on the development set",
        parse=float,
    )
    real_dev: bool = option(  # score server.kws.devset at the end (recordings of people, held-out voices)
        False,
        "score the development set of real people at the end (server.kws.devset: recordings from Debian packages "
        "and voices no run trains on; festival, flite and sox): its figures go on the card",
        switch=True,
    )
    # KWSConfig fields
    model: dict[str, Any] | None = option(None, None, nested=KWSModelOptions, group="model")  # noqa: RUF009
    eval_every: int = option(500, "steps between held-out scores", parse=int)
    render_workers: int = option(2, "espeak-ng processes while rendering", parse=int)  # once; cached
    # start from this checkpoint's weights (and its model config) instead of at random
    init: Path | None = option(None, "start from this kws checkpoint's weights (fine-tuning)", parse=Path)  # noqa: RUF009
    widen: int | None = option(
        None,
        "with --init: first widen the checkpoint's DS-CNN to this many channels, computing the same function "
        "(Net2WiderNet: channels copied, small noise to let them part), then train the wider network",
        parse=int,
        metavar="CHANNELS",
        shown="the checkpoint's width",
    )
    teachers: tuple[str, ...] = option(
        (),
        "kws checkpoints to distil from, comma-separated: the mean of their log-probabilities on each training clip "
        "(heard without SpecAugment's masks) is a second target beside the label (--distill-weight), so that one "
        "model learns what several agree on",
        parse=comma_list,
        metavar="CKPT[,CKPT...]",
        shown="none",
    )
    distill_weight: float = option(
        0.5,
        "with --teachers: the share of the loss that follows the teachers (the rest follows the labels)",
        parse=float,
    )
    distill_temperature: float = option(
        2.0,
        "with --teachers: both sides' logits divided by this before they are compared (softer targets)",
        parse=float,
    )
    out: Path = option(Path("runs/kws/kws_dscnn.safetensors"), "checkpoint to write", parse=Path)  # noqa: RUF009
    progress: bool = option(True, "no progress bar (logs only)", switch=False)
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    freq_masks: int = 2  # SpecAugment: masks of up to ``freq_mask`` mel bands...
    freq_mask: int = 6
    time_masks: int = 2  # ...and of up to ``time_mask`` frames
    time_mask: int = 12

    # 40 steps of a narrow model on 3 renderings of each number word (about 15 s with espeak-ng)
    DRY_RUN: ClassVar[dict[str, Any]] = {
        "steps": 40,
        "batch_size": 16,
        "eval_every": 20,
        "render_workers": 1,
        "data": KWSDataConfig(per_number=3, unknown_words=8, heldout_per_label=2),
        "test_per_label": 2,
        "model": {"channels": 16, "blocks": 2},
        "progress": False,
    }

    def validate(self) -> None:
        super().validate()
        at_least(self, 1, "steps")
        at_least(self, 2, "batch_size")
        within(self, "lr", 0, 1, "()")
        within(self, "label_smoothing", 0, 1, "[)")
        low, high = self.speed
        if not 0.5 <= low <= high <= 2.0:
            raise InvalidArgument("speed", f"must be two factors 0.5 <= low <= high <= 2, got {low:g},{high:g}")
        within(self, "context", 0, 1)
        within(self, "unknown_share", 0, 1, "()")
        within(self, "hard_share", 0, 1)
        within(self, "unknown_bias", -5, 5)
        within(self, "mine_share", 0, 1)
        if self.mine_pool not in MINE_POOLS:
            raise InvalidArgument("mine_pool", f"must be one of {', '.join(MINE_POOLS)}, got {self.mine_pool!r}")
        at_least(self, 1, "mine_every")
        within(self, "keyword_gap", 0, 0.5, unit="seconds")
        at_least(self, 0, "test_per_label")
        at_least(self, 1, "eval_every", "render_workers")
        at_least(self, 1, "widen")
        from server.kws.model import KWSConfig  # torch: loaded when a run starts, not for the flags

        KWSConfig(**(self.model or {}))  # its sizes and level, before any rendering
        within(self, "distill_weight", 0, 1)
        within(self, "distill_temperature", 0.1, 10)
        for teacher in self.teachers:
            if not Path(teacher).is_file():
                raise InvalidArgument("teachers", f"no such kws checkpoint: {teacher}")
        if self.widen is not None and self.init is None:
            raise InvalidArgument("widen", "widens the --init checkpoint: give --init too")
        self.data.validate()
