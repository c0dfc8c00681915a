"""Save and load the keyword spotter with its labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from server.checkpoint import load_checkpoint, rebuilding, save_checkpoint
from server.errors import CheckpointError
from server.kws.model import KWSConfig, KWSNet

KIND = "kws_dscnn"


def save_kws_model(path: Path, model: KWSNet, labels: list[str], info: dict[str, Any]) -> None:
    meta = {"kind": KIND, "config": model.config.to_dict(), "labels": labels, **info}
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("front_end.")}  # rebuilt from config
    save_checkpoint(path, state, meta)


def load_kws_model(path: Path, device: torch.device | str = "cpu") -> tuple[KWSNet, dict[str, Any]]:
    """Model (eval mode, on ``device``) and metadata of a checkpoint."""
    state, meta = load_checkpoint(path, KIND)
    with rebuilding(path, KIND):
        model = KWSNet(KWSConfig(**meta["config"]))
        model.load_state_dict(state)
        labels = meta["labels"]
    if len(labels) != model.config.num_classes:
        raise CheckpointError(f"checkpoint {path}: {len(labels)} labels for {model.config.num_classes} classes")
    return model.to(device).eval(), meta
