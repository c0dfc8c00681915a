"""The options of the image trainers (``antiphon train evaluator|dcgan|vae|vaegan|rbm``) and of Deep Dream.
Torch-free: the command line is generated from the fields that are flags (:mod:`server.options`), and the model
sizes that are flags are small dataclasses beside them (the configs live in the model files, which import torch;
the tests check that the defaults agree).

Every trainer runs :class:`server.training.TrainLoop` (a steps and/or minutes budget, warm-up and cosine decay,
resumable saves, SIGINT/SIGTERM, ``torchrun``), so they share :class:`ImageTrainOptions`' loop fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from server.errors import InvalidArgument
from server.options import LoopTrainOptions, at_least, loop_option, option, within
from server.paths import REPO_MODELS

DATASETS = ("fashion", "digits")  # Fashion-MNIST 28x28, scikit-learn's 8x8 digits
FAMILIES = ("evaluator", "dcgan", "vae", "vaegan", "rbm")
DATA_GROUP = "data"
MODEL_GROUP = "model"

# The judges of the quality metrics: the evaluator for Fashion-MNIST, the digits CNN for the 8x8 digits.
DEFAULT_JUDGES = {
    "fashion": REPO_MODELS / "image" / "evaluator.safetensors",
    "digits": REPO_MODELS / "digits" / "digits_cnn.safetensors",
}


def _dataset(text: str) -> str:
    if text not in DATASETS:
        raise InvalidArgument("dataset", f"must be one of {', '.join(DATASETS)}, got {text!r}")
    return text


# What every family's --dry-run shares (a few steps on the CPU, quiet), and the generators' tiny runs on the digits.
TINY: dict[str, Any] = {"device": "cpu", "warmup_steps": 5, "eval_every": 1000, "progress": False}
TINY_DIGITS: dict[str, Any] = {**TINY, "steps": 20, "minutes": None, "dataset": "digits", "batch_size": 32}


@dataclass
class ImageTrainOptions(LoopTrainOptions):
    """The loop's fields and the data every image trainer reads."""

    out: Path = loop_option("out", Path("runs/image/model.safetensors"))  # noqa: RUF009
    lr: float = loop_option("lr", 2e-4, optimizer="Adam")
    dataset: str = option("fashion", "fashion (Fashion-MNIST 28x28) or digits (8x8)", parse=_dataset, group=DATA_GROUP)
    train_limit: int | None = option(None, "train on the first N training images only", parse=int, group=DATA_GROUP)
    batch_size: int = option(64, "images per process and step", parse=int)
    min_lr_ratio: float = 0.1

    def validate(self) -> None:
        super().validate()
        at_least(self, 1, "batch_size", "warmup_steps", "eval_every", "train_limit")
        if self.train_limit is not None and self.train_limit < self.batch_size:  # a batch draws without replacement
            shown = f"must be at least --batch-size ({self.batch_size}), got {self.train_limit}"
            raise InvalidArgument("train_limit", shown)
        within(self, "lr", 0, 1, "(]")
        if self.dataset not in DATASETS:
            raise InvalidArgument("dataset", f"must be one of {', '.join(DATASETS)}, got {self.dataset!r}")


# -- the evaluator CNN -------------------------------------------------------------------------------------------
@dataclass
class EvaluatorSizes:
    """The flags of :class:`server.image.evaluator.EvaluatorConfig`."""

    channels: int = option(16, "the first block's channels (the second has twice as many)", parse=int)
    hidden: int = option(128, "the hidden layer: the quality metrics' feature space", parse=int)
    dropout: float = option(0.3, parse=float)


@dataclass
class EvaluatorTrainOptions(ImageTrainOptions):
    out: Path = loop_option("out", Path("runs/image/evaluator.safetensors"))  # noqa: RUF009
    steps: int | None = loop_option("steps", 7500)  # 16 epochs of 128
    lr: float = loop_option("lr", 3e-3, optimizer="AdamW")
    min_lr_ratio: float = 0.01
    batch_size: int = option(128, "images per process and step", parse=int)
    weight_decay: float = option(5e-4, parse=float)
    label_smoothing: float = option(0.05, parse=float)
    shift: int = option(2, "augmentation: random shifts of up to this many pixels (0: off)", parse=int)
    flip: bool = option(True, "no random left-right flips", switch=False)
    model: dict[str, Any] = option(default_factory=dict, nested=EvaluatorSizes, group=MODEL_GROUP)  # noqa: RUF009

    DRY_RUN: ClassVar[dict[str, Any]] = {
        **TINY,
        "steps": 30,
        "train_limit": 2000,
        "batch_size": 32,
        "model": {"channels": 4, "hidden": 16},
    }

    def validate(self) -> None:
        super().validate()
        within(self, "label_smoothing", 0, 1, "[)")
        within(self, "shift", 0, 4)
        if self.dataset != "fashion":
            raise InvalidArgument("dataset", "the evaluator is Fashion-MNIST's (the digits CNN judges the digits)")


# -- the DCGAN ---------------------------------------------------------------------------------------------------
@dataclass
class GANSizes:
    """The flags of :class:`server.image.gan.GANConfig` (the image size and classes come from the data)."""

    latent: int = option(64, parse=int)
    g_channels: int = option(32, "the generator's last hidden layer (the first has twice as many)", parse=int)
    d_channels: int = option(32, "the discriminator's first layer (the second has twice as many)", parse=int)


@dataclass
class QualityOptions:
    """How a generator's card measures it: in the judge's feature space, on this many samples."""

    judge: Path | None = option(  # noqa: RUF009
        None,
        "the classifier whose features measure the samples (default: models/image/evaluator.safetensors for "
        "fashion, models/digits/digits_cnn.safetensors for digits, when present)",
        parse=Path,
        group="quality",
        shown="per data set",
    )
    quality: bool = option(True, "no quality figures in the card", switch=False, group="quality")
    quality_samples: int = option(
        2000, "generated (and real) images the card's figures use", parse=int, group="quality"
    )


@dataclass
class DCGANTrainOptions(ImageTrainOptions, QualityOptions):
    out: Path = loop_option("out", Path("runs/image/dcgan.safetensors"))  # noqa: RUF009
    minutes: float | None = loop_option("minutes", 25.0)
    conditional: bool = option(True, "an unconditional GAN (no labels)", switch=False)
    beta1: float = option(0.5, "Adam's first moment decay", parse=float)
    aux_class_weight: float = option(
        0.0,
        "AC-GAN: the weight of a discriminator head that classifies real images, and of its cross-entropy on the "
        "generator's samples against the asked class in the generator's loss (0: no head)",
        parse=float,
    )
    model: dict[str, Any] = option(default_factory=dict, nested=GANSizes, group=MODEL_GROUP)  # noqa: RUF009

    DRY_RUN: ClassVar[dict[str, Any]] = {
        **TINY_DIGITS,
        "quality_samples": 200,
        "model": {"latent": 8, "g_channels": 8, "d_channels": 8},
    }

    def validate(self) -> None:
        super().validate()
        at_least(self, 100, "quality_samples")
        at_least(self, 0, "aux_class_weight")
        within(self, "beta1", 0, 1, "[)")
        if self.aux_class_weight > 0 and not self.conditional:
            raise InvalidArgument("aux_class_weight", "needs a class-conditional GAN (drop --unconditional)")


# -- the VAE and the VAE-GAN -------------------------------------------------------------------------------------
@dataclass
class VAESizes:
    """The flags of :class:`server.image.vae.VAEConfig`."""

    latent: int = option(32, parse=int)
    channels: int = option(32, "the encoder's first and decoder's last layer (the others twice as many)", parse=int)
    hidden: int = option(256, parse=int)


@dataclass
class VAETrainOptions(ImageTrainOptions):
    out: Path = loop_option("out", Path("runs/image/vae.safetensors"))  # noqa: RUF009
    minutes: float | None = loop_option("minutes", 25.0)
    lr: float = loop_option("lr", 1e-3, optimizer="Adam")
    eval_k: int = option(1000, "importance samples per image of the test NLL", parse=int, group="likelihood")
    eval_images: int = option(2000, "the fixed test subset of the NLL", parse=int, group="likelihood")
    model: dict[str, Any] = option(default_factory=dict, nested=VAESizes, group=MODEL_GROUP)  # noqa: RUF009

    DRY_RUN: ClassVar[dict[str, Any]] = {
        **TINY_DIGITS,
        "eval_k": 20,
        "eval_images": 50,
        "model": {"latent": 4, "channels": 8, "hidden": 32},
    }

    def validate(self) -> None:
        super().validate()
        at_least(self, 1, "eval_k", "eval_images")


@dataclass
class VAEGANTrainOptions(ImageTrainOptions, QualityOptions):
    out: Path = loop_option("out", Path("runs/image/vaegan.safetensors"))  # noqa: RUF009
    minutes: float | None = loop_option("minutes", 25.0)
    feature_weight: float = option(
        1.0, "the decoder's weight of the feature reconstruction against the GAN loss", parse=float
    )
    kl_weight: float = option(1.0, "the prior's weight in the encoder's loss", parse=float)
    beta1: float = option(0.5, "Adam's first moment decay", parse=float)
    model: dict[str, Any] = option(default_factory=dict, nested=VAESizes, group=MODEL_GROUP)  # noqa: RUF009
    d_channels: int = option(32, "the discriminator's first layer", parse=int, group=MODEL_GROUP)

    DRY_RUN: ClassVar[dict[str, Any]] = {
        **TINY_DIGITS,
        "quality_samples": 200,
        "d_channels": 8,
        "model": {"latent": 4, "channels": 8, "hidden": 32},
    }

    def validate(self) -> None:
        super().validate()
        at_least(self, 100, "quality_samples")
        at_least(self, 0, "feature_weight", "kl_weight")


# -- the RBM -----------------------------------------------------------------------------------------------------
@dataclass
class RBMSizes:
    """The flags of :class:`server.image.rbm.RBMConfig` (the visible units are the image's pixels)."""

    hidden: int = option(100, parse=int)


@dataclass
class RBMTrainOptions(ImageTrainOptions):
    out: Path = loop_option("out", Path("runs/image/rbm.safetensors"))  # noqa: RUF009
    dataset: str = option("digits", "fashion (Fashion-MNIST 28x28) or digits (8x8)", parse=_dataset, group=DATA_GROUP)
    steps: int | None = loop_option("steps", 30000)
    lr: float = loop_option("lr", 0.05, optimizer="SGD with momentum")
    batch_size: int = option(32, "images (and persistent chains) per process and step", parse=int)
    k: int = option(1, "Gibbs steps per update (CD-k; with --persistent, steps of the persistent chains)", parse=int)
    persistent: bool = option(True, "CD-k from the data instead of persistent CD", switch=False)
    momentum: float = option(0.5, parse=float)
    weight_decay: float = option(1e-4, "L2 penalty on the weights", parse=float)
    ais_runs: int = option(500, "AIS chains of the test NLL", parse=int, group="likelihood")
    ais_betas: int = option(20000, "AIS temperatures", parse=int, group="likelihood")
    model: dict[str, Any] = option(default_factory=dict, nested=RBMSizes, group=MODEL_GROUP)  # noqa: RUF009

    DRY_RUN: ClassVar[dict[str, Any]] = {
        **TINY,
        "steps": 50,
        "dataset": "digits",
        "ais_runs": 50,
        "ais_betas": 500,
        "model": {"hidden": 12},
    }

    def validate(self) -> None:
        super().validate()
        at_least(self, 1, "k", "ais_runs", "ais_betas")
        within(self, "momentum", 0, 1, "[)")


TRAIN_OPTIONS: dict[str, type[ImageTrainOptions]] = {
    "evaluator": EvaluatorTrainOptions,
    "dcgan": DCGANTrainOptions,
    "vae": VAETrainOptions,
    "vaegan": VAEGANTrainOptions,
    "rbm": RBMTrainOptions,
}
