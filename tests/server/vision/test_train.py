"""Digits training: accuracy on a small budget, the split, the model card, option checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.checkpoint import read_meta
from server.errors import InvalidArgument
from server.vision.data import split_digits
from server.vision.train import DigitsTrainOptions, random_shift, train_digits


def test_small_budget_reaches_a_sensible_accuracy(tiny_digits_checkpoint: Path) -> None:
    """200 steps already classify nine test digits in ten."""
    metrics = read_meta(tiny_digits_checkpoint)["metrics"]
    assert metrics["test_accuracy"] >= 0.9
    assert sum(map(sum, metrics["test_confusion"])) == 359


def test_checkpoint_records_the_split(tiny_digits_checkpoint: Path) -> None:
    """The test indices in the checkpoint are the fixed stratified split's."""
    data = read_meta(tiny_digits_checkpoint)["data"]
    assert data["test_indices"] == split_digits(0, 0.2).test_indices.tolist()
    assert data["split"] == {
        "method": "stratified by label",
        "seed": 0,
        "test_fraction": 0.2,
        "train": 1438,
        "test": 359,
    }


def test_model_card_is_written_beside_the_checkpoint(tiny_digits_checkpoint: Path) -> None:
    """The card names the command, the split and the accuracy."""
    card = tiny_digits_checkpoint.with_suffix(".md").read_text(encoding="utf-8")
    accuracy = read_meta(tiny_digits_checkpoint)["metrics"]["test_accuracy"]
    assert "antiphon train digits --steps 200 --seed 0" in card
    assert "1,438 train, 359 test" in card
    assert f"**{accuracy:.2%}**" in card


def test_random_shift_moves_whole_images() -> None:
    """A shift keeps every pixel's value and fills the border with zeros."""
    images = torch.arange(1, 65, dtype=torch.float32).view(1, 8, 8).repeat(50, 1, 1)
    shifted = random_shift(images, 1, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    for image in shifted:
        inner = image[image > 0]
        assert len(inner) in (49, 56, 64)
        assert set(inner.tolist()) <= set(range(1, 65))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": None, "steps": None}, "steps: give --steps or --epochs"),
        ({"steps": 0}, "steps: must be at least 1, got 0"),
        ({"epochs": 0}, "epochs: must be at least 1, got 0"),
        ({"lr": 2.0}, "lr: must be in (0, 1), got 2.0"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, options: dict[str, object], message: str) -> None:
    """Bad options raise InvalidArgument naming the option."""
    with pytest.raises(InvalidArgument) as info:
        train_digits(DigitsTrainOptions(out=tmp_path / "x.safetensors", **options))  # type: ignore[arg-type]
    assert str(info.value) == message
