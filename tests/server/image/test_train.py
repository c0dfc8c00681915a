"""The image trainers: each tiny preset writes a loadable checkpoint and its card; an interrupted run resumes
exactly; bad options are named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from server.checkpoint import read_meta
from server.errors import InvalidArgument
from server.image.cards import command
from server.image.checkpoint import FAMILY_KINDS, load_image_model
from server.image.options import TRAIN_OPTIONS, DCGANTrainOptions, EvaluatorTrainOptions, RBMTrainOptions
from server.image.train_gan import DCGANTrainer
from server.image.train_rbm import RBMTrainer
from server.training import state_path


@pytest.mark.parametrize("family", sorted(TRAIN_OPTIONS))
def test_the_tiny_preset_writes_a_loadable_checkpoint(tiny_image_checkpoints: dict[str, Path], family: str) -> None:
    """The checkpoint rebuilds its model, records its data's licence, and its card names the command."""
    path = tiny_image_checkpoints[family]
    model, meta = load_image_model(path, FAMILY_KINDS[family])
    assert not model.training
    assert meta["data"]["licence"]
    assert meta["training"]["steps"] == TRAIN_OPTIONS[family].DRY_RUN["steps"]
    card = path.with_suffix(".md").read_text(encoding="utf-8")
    assert f"`{command(family, meta['training']['options'])} --out {path}`" in card
    assert meta["data"]["licence"] in card


def test_the_generators_cards_have_their_quality_beside_real_data(tiny_image_checkpoints: dict[str, Path]) -> None:
    """A DCGAN's card has every figure in the digits CNN's features, each with its real-data reference."""
    quality = read_meta(tiny_image_checkpoints["dcgan"])["metrics"]["quality"]
    assert quality["judge"] == "digits CNN (digits_cnn.safetensors)"
    assert quality["samples"] == 200
    assert quality["class_score_ceiling"] > 5  # the real test digits: confident and balanced
    assert 0.4 < quality["one_nn_real"] < 0.65  # two real sets are hard to tell apart
    assert quality["class_agreement_real"] > 0.9


def test_the_rbm_card_checks_ais_against_the_exact_partition_function(tiny_image_checkpoints: dict[str, Path]) -> None:
    """The tiny RBM (12 hidden units) is enumerated: its AIS estimate lies near the exact log Z."""
    metrics = read_meta(tiny_image_checkpoints["rbm"])["metrics"]
    assert abs(metrics["ais"]["log_z"] - metrics["exact_log_z"]) < 0.05


def _interrupt_at(trainer: Any, step: int) -> None:
    """Ask the trainer to stop (as SIGINT does) once it has taken ``step`` steps."""
    original = trainer._step

    def step_then_maybe_stop() -> float:
        value = original()
        if trainer.step == step:
            trainer._stop.set()
        return value

    trainer._step = step_then_maybe_stop


@pytest.mark.parametrize(
    ("cls", "opts_cls", "common"),
    [
        (RBMTrainer, RBMTrainOptions, {"steps": 15}),
        (DCGANTrainer, DCGANTrainOptions, {"steps": 15, "quality": False}),
    ],
    ids=["rbm", "dcgan"],
)
def test_an_interrupted_run_resumes_exactly(tmp_path: Path, cls: Any, opts_cls: Any, common: dict[str, Any]) -> None:
    """Stopped at step 7 and resumed, a run ends with the weights of a run that was never stopped."""
    straight = cls(opts_cls.dry_run(out=tmp_path / "straight.safetensors", **common))
    straight.train()
    first = cls(opts_cls.dry_run(out=tmp_path / "resumed.safetensors", **common))
    _interrupt_at(first, 7)
    with pytest.raises(KeyboardInterrupt):
        first.train()
    assert state_path(tmp_path / "resumed.safetensors").is_file()
    second = cls(opts_cls.dry_run(out=tmp_path / "resumed.safetensors", resume=True, **common))
    assert second.step == 7
    second.train()
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_resuming_on_other_data_names_the_flags_to_give(tmp_path: Path) -> None:
    """--resume with other data than the run's (another --train-limit) is the command line's mistake: it names
    the flags to give, not a corrupt checkpoint."""
    out = tmp_path / "rbm.safetensors"
    RBMTrainer(RBMTrainOptions.dry_run(out=out, steps=3)).train()
    with pytest.raises(InvalidArgument, match=r"^resume: .* trained on other data; give that run's --dataset"):
        RBMTrainer(RBMTrainOptions.dry_run(out=out, steps=6, resume=True, train_limit=1000))


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (RBMTrainOptions.dry_run(steps=None), "steps: give --steps or --minutes"),
        (RBMTrainOptions.dry_run(k=0), "k: must be at least 1, got 0"),
        (RBMTrainOptions.dry_run(momentum=1.0), "momentum: must be in [0, 1), got 1.0"),
        (DCGANTrainOptions.dry_run(dataset="cifar"), "dataset: must be one of fashion, digits, got 'cifar'"),
        (DCGANTrainOptions.dry_run(quality_samples=10), "quality_samples: must be at least 100, got 10"),
        (
            EvaluatorTrainOptions.dry_run(dataset="digits"),
            "dataset: the evaluator is Fashion-MNIST's (the digits CNN judges the digits)",
        ),
        (EvaluatorTrainOptions.dry_run(lr=0), "lr: must be in (0, 1], got 0"),
        (DCGANTrainOptions.dry_run(aux_class_weight=-1), "aux_class_weight: must be at least 0, got -1"),
        (
            DCGANTrainOptions.dry_run(aux_class_weight=1, conditional=False),
            "aux_class_weight: needs a class-conditional GAN (drop --unconditional)",
        ),
    ],
)
def test_bad_options_are_named(opts: Any, message: str) -> None:
    """Options validate themselves, naming the field."""
    with pytest.raises(InvalidArgument) as info:
        opts.validate()
    assert str(info.value) == message


def test_a_missing_judge_is_named(tmp_path: Path) -> None:
    """A judge given that does not exist is refused before training."""
    opts = DCGANTrainOptions.dry_run(out=tmp_path / "g.safetensors", judge=tmp_path / "none.safetensors")
    with pytest.raises(InvalidArgument) as info:
        DCGANTrainer(opts)
    assert str(info.value) == f"judge: {tmp_path / 'none.safetensors'} does not exist"


def test_the_auxiliary_classifier_learns_the_real_labels(tmp_path: Path) -> None:
    """With --aux-class-weight the discriminator gains a classifier head that names real digits above chance,
    the checkpoint rebuilds it and the card says so; the realness logits keep their shape."""
    opts = DCGANTrainOptions.dry_run(
        out=tmp_path / "aux.safetensors", aux_class_weight=1.0, steps=60, lr=2e-3, quality=False
    )
    trainer = DCGANTrainer(opts)
    trainer.train()
    model, meta = load_image_model(opts.out, "dcgan")
    assert meta["config"]["aux_classifier"] is True
    d = model.discriminator
    images, labels = torch.from_numpy(trainer.test_set.images), torch.from_numpy(trainer.test_set.labels)
    with torch.no_grad():
        h = d.features(images)  # (N, F)
        named = d.class_logits(h).argmax(dim=1)  # (N,)
        assert d.realness(h, labels).shape == labels.shape
    assert (named == labels).float().mean().item() > 0.3  # ten classes: chance is 0.1
    card = opts.out.with_suffix(".md").read_text(encoding="utf-8")
    assert "--aux-class-weight 1.0" in card
    assert "auxiliary classifier (AC-GAN)" in card


def test_without_the_option_the_discriminator_has_no_classifier_head(tiny_image_checkpoints: dict[str, Path]) -> None:
    """The default DCGAN keeps the projection discriminator alone (what the export reads)."""
    model, meta = load_image_model(tiny_image_checkpoints["dcgan"], "dcgan")
    assert meta["config"]["aux_classifier"] is False
    assert model.discriminator.classify is None
    with pytest.raises(ValueError, match="no auxiliary classifier"):
        model.discriminator.class_logits(torch.zeros(1, 1))
