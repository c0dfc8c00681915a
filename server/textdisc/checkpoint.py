"""Save and load the text discriminator with its vocabulary and labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from server.checkpoint import load_checkpoint, rebuilding, save_checkpoint
from server.errors import CheckpointError
from server.text.vocab import Vocabulary
from server.textdisc.model import TextDiscConfig, TextDiscriminator

KIND = "text_discriminator"


def save_textdisc_model(
    path: Path, model: TextDiscriminator, vocab: Vocabulary, labels: list[str], info: dict[str, Any]
) -> None:
    meta = {"kind": KIND, "config": model.config.to_dict(), "vocab": vocab.chars, "labels": labels, **info}
    save_checkpoint(path, model.state_dict(), meta)


def load_textdisc_model(
    path: Path, device: torch.device | str = "cpu"
) -> tuple[TextDiscriminator, Vocabulary, dict[str, Any]]:
    """Model (eval mode, on ``device``), vocabulary and metadata of a checkpoint."""
    state, meta = load_checkpoint(path, KIND)
    with rebuilding(path, KIND):
        config = TextDiscConfig(**{"ngram_orders": (), **meta["config"]})  # checkpoints before n-grams had none
        vocab = Vocabulary(meta["vocab"])
        model = TextDiscriminator(config)
        model.load_state_dict(state)
        labels = meta["labels"]
    if config.vocab_size != len(vocab) or len(labels) != config.num_classes:
        raise CheckpointError(f"checkpoint {path}: vocabulary or labels do not fit the config")
    return model.to(device).eval(), vocab, meta
