"""Save and load the digits CNN with its labels and data split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from server.checkpoint import load_checkpoint, rebuilding, save_checkpoint
from server.errors import CheckpointError
from server.vision.model import DigitsCNN, DigitsCNNConfig

KIND = "digits_cnn"


def save_digits_model(path: Path, model: DigitsCNN, labels: list[str], info: dict[str, Any]) -> None:
    meta = {"kind": KIND, "config": model.config.to_dict(), "labels": labels, **info}
    save_checkpoint(path, model.state_dict(), meta)


def load_digits_model(path: Path, device: torch.device | str = "cpu") -> tuple[DigitsCNN, dict[str, Any]]:
    """Model (eval mode, on ``device``) and metadata of a checkpoint."""
    state, meta = load_checkpoint(path, KIND)
    with rebuilding(path, KIND):
        config = DigitsCNNConfig(**meta["config"])
        model = DigitsCNN(config)
        model.load_state_dict(state)
        labels = meta["labels"]
        meta["data"]["test_indices"]  # the recorded split: evaluation and export read it
    if len(labels) != config.num_classes:
        raise CheckpointError(f"checkpoint {path}: {len(labels)} labels for {config.num_classes} classes")
    return model.to(device).eval(), meta
