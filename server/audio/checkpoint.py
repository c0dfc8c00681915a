"""Save and load the WaveNet with its voice table and log-mel settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from server.audio.model import WaveNet, WaveNetConfig
from server.checkpoint import load_checkpoint, rebuilding, save_checkpoint
from server.errors import CheckpointError

KIND = "wavenet"


def save_audio_model(path: Path, model: WaveNet, voices: list[str], info: dict[str, Any]) -> None:
    """``voices``: voice names by id (id 0 stands for every voice the model was not trained on)."""
    meta = {"kind": KIND, "config": model.config.to_dict(), "voices": voices, **info}
    save_checkpoint(path, model.state_dict(), meta)


def load_audio_model(path: Path, device: torch.device | str = "cpu") -> tuple[WaveNet, list[str], dict[str, Any]]:
    """Model (eval mode, on ``device``), voice table and metadata of a checkpoint."""
    state, meta = load_checkpoint(path, KIND)
    with rebuilding(path, KIND):
        config = WaveNetConfig(**meta["config"])
        voices = list(meta["voices"])
        model = WaveNet(config)
        model.load_state_dict(state)
    if len(voices) != config.voices:
        raise CheckpointError(f"checkpoint {path}: {config.voices} voice embeddings but {len(voices)} voice names")
    return model.to(device).eval(), voices, meta
