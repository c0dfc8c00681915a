"""The options of ``antiphon train digits``: what :func:`server.vision.train.train_digits` reads. Torch-free: the
command line is generated from the fields that are flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from server.options import DEVICES, TrainOptions, at_least, check_budget, option, within


@dataclass
class DigitsTrainOptions(TrainOptions):
    epochs: int | None = option(60, "passes over the training images", parse=int, exclusive="budget")
    steps: int | None = option(None, "optimizer steps instead of --epochs", parse=int, exclusive="budget")  # wins
    out: Path = option(Path("runs/digits/digits_cnn.safetensors"), "checkpoint to write", parse=Path)  # noqa: RUF009
    seed: int = option(0, "initialization, batch order and augmentation", parse=int)
    device: str = option("cpu", None, choices=DEVICES)
    split_seed: int = 0
    test_fraction: float = 0.2
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    shift: int = 1  # augmentation: random shift of up to this many pixels (0: off)
    model: dict[str, Any] | None = None  # DigitsCNNConfig fields

    DRY_RUN: ClassVar[dict[str, Any]] = {"steps": 200}  # about two seconds; nine test digits in ten

    def __post_init__(self) -> None:
        if self.steps is not None:  # the budget is the steps: the checkpoint records no epochs asked for
            self.epochs = None

    def validate(self) -> None:
        super().validate()
        check_budget(self, "epochs")
        at_least(self, 1, "epochs", "batch_size")
        within(self, "lr", 0, 1, "()")
        within(self, "shift", 0, 3)
