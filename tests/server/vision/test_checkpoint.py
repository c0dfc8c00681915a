"""Digits checkpoints: round trip, wrong kind, missing split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.checkpoint import save_checkpoint
from server.errors import CheckpointError
from server.vision.checkpoint import load_digits_model, save_digits_model
from server.vision.model import DigitsCNN, DigitsCNNConfig


def test_round_trip_gives_the_same_outputs(tmp_path: Path) -> None:
    """A saved and reloaded model has the same config, labels and outputs."""
    torch.manual_seed(0)
    model = DigitsCNN(DigitsCNNConfig(channels=8, hidden=16)).eval()
    path = tmp_path / "d.safetensors"
    save_digits_model(path, model, [str(d) for d in range(10)], {"data": {"test_indices": [1, 2]}})
    loaded, meta = load_digits_model(path)
    images = torch.rand(4, 8, 8) * 16
    assert loaded.config == model.config
    assert meta["labels"] == [str(d) for d in range(10)]
    assert not loaded.training
    torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)


def test_a_text_checkpoint_is_refused(tiny_text_checkpoint: Path) -> None:
    """Loading a checkpoint of another kind names both kinds."""
    with pytest.raises(CheckpointError) as info:
        load_digits_model(tiny_text_checkpoint)
    assert str(info.value) == f"checkpoint {tiny_text_checkpoint} holds a 'char_lstm' model, not 'digits_cnn'"


def test_a_checkpoint_without_its_split_is_refused(tmp_path: Path) -> None:
    """The recorded test split is part of a digits checkpoint."""
    model = DigitsCNN(DigitsCNNConfig(channels=8, hidden=16))
    path = tmp_path / "d.safetensors"
    meta = {"kind": "digits_cnn", "config": model.config.to_dict(), "labels": [str(d) for d in range(10)]}
    save_checkpoint(path, model.state_dict(), meta)
    with pytest.raises(CheckpointError) as info:
        load_digits_model(path)
    assert str(info.value) == f"checkpoint {path} does not rebuild a digits_cnn: 'data'"
