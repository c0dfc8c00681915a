"""The options of ``antiphon train audio``: what :class:`server.audio.train.AudioTrainer` reads, validated before
any rendering. Torch-free: the command line is generated from the fields that are flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

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
class WaveNetSizes:
    """The flags of the model's config (:class:`server.audio.model.WaveNetConfig`'s sizes, ``SIZES``; the tests
    check the defaults are its own)."""

    layers: int = option(20, parse=int)
    cycle: int = option(10, "dilations 1..2**(cycle-1), repeated", parse=int)
    residual_channels: int = option(64, parse=int)
    gate_channels: int = option(64, parse=int)
    skip_channels: int = option(32, parse=int)
    out_channels: int = option(128, parse=int)
    n_mels: int = option(40, parse=int)
    hop: int = option(160, "samples per log-mel frame", parse=int)
    cond_channels: int = option(64, parse=int)
    cond_layers: int = option(2, parse=int)


@dataclass
class AudioTrainOptions(LoopTrainOptions):
    out: Path = loop_option("out", Path("runs/audio/wavenet.safetensors"))  # noqa: RUF009
    precision: str = loop_option("precision", "auto")
    seed: int = loop_option("seed", 1234)
    lr: float = loop_option("lr", 2e-3, optimizer="Adam")
    warmup_steps: int = loop_option("warmup_steps", 50)
    eval_every: int = loop_option("eval_every", 250)
    # start from this checkpoint's weights and config, with a fresh schedule
    init: Path | None = option(  # noqa: RUF009
        None,
        "start from this WaveNet checkpoint's weights and config (its model options win), with a fresh "
        "learning-rate schedule: more training for a committed model; the card names it",
        parse=Path,
    )
    batch_size: int = option(4, "segments per process and step", parse=int)
    # samples per segment (the receptive field is 2,048 for the default model)
    segment: int = option(2000, "samples per segment", parse=int)
    input_noise: float = option(  # std of Gaussian noise added to the input codes (in code steps) while training
        0.0,
        "std of Gaussian noise (in mu-law code steps) added to the codes the model reads while training",
        parse=float,
    )
    lines: int = option(2000, "lines of the plays rendered for training", group="data", parse=int)
    number_renderings: int = option(60, "training renderings of each number word", group="data", parse=int)
    heldout_lines: int = option(24, "held-out lines (held-out voices)", group="data", parse=int)
    heldout_number_renderings: int = option(2, "held-out renderings of each number", group="data", parse=int)
    workers: int = option(2, "espeak-ng processes while rendering", group="data", parse=int)
    # WaveNetConfig fields but voices and mel statistics
    model: dict[str, Any] = option(default_factory=dict, nested=WaveNetSizes, group="model")  # noqa: RUF009
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0

    # 30 steps of four small layers on a few espeak-ng renderings (seconds on one core)
    DRY_RUN: ClassVar[dict[str, Any]] = {
        "steps": 30,
        "device": "cpu",
        "precision": "fp32",
        "segment": 800,
        "lr": 1e-2,
        "warmup_steps": 5,
        "eval_every": 1000,
        "progress": False,
        "lines": 6,
        "number_renderings": 1,
        "heldout_lines": 2,
        "heldout_number_renderings": 0,
        "model": {
            "layers": 4,
            "cycle": 2,
            "residual_channels": 8,
            "gate_channels": 8,
            "skip_channels": 8,
            "out_channels": 16,
            "cond_channels": 8,
        },
    }

    def validate(self) -> None:
        from server.audio.model import WaveNetConfig  # torch: loaded when a run starts, not for the flags

        super().validate()
        at_least(self, 1, "batch_size", "eval_every", "warmup_steps", "lines", "heldout_lines", "workers")
        at_least(self, 0, "number_renderings", "heldout_number_renderings")
        if self.segment < 200:
            raise InvalidArgument("segment", f"must be at least 200 samples, got {self.segment}")
        within(self, "lr", 0, 1, "()")
        within(self, "input_noise", 0, 64, unit="code steps")
        check_init(self)
        WaveNetConfig(**self.model)  # each size at least 1, the cycle at most 14: before any rendering
