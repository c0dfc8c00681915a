"""Save and load the character LSTM with its vocabulary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from server.checkpoint import load_checkpoint, rebuilding, save_checkpoint
from server.errors import CheckpointError
from server.text.model import CharLSTM, CharLSTMConfig
from server.text.vocab import Vocabulary

KIND = "char_lstm"


def save_text_model(path: Path, model: CharLSTM, vocab: Vocabulary, info: dict[str, Any]) -> None:
    meta = {"kind": KIND, "config": model.config.to_dict(), "vocab": vocab.chars, **info}
    save_checkpoint(path, model.state_dict(), meta)


def load_text_model(path: Path, device: torch.device | str = "cpu") -> tuple[CharLSTM, Vocabulary, dict[str, Any]]:
    """Model (eval mode, on ``device``), vocabulary and metadata of a checkpoint."""
    state, meta = load_checkpoint(path, KIND)
    with rebuilding(path, KIND):
        config = CharLSTMConfig(**meta["config"])
        vocab = Vocabulary(meta["vocab"])
        model = CharLSTM(config)
        model.load_state_dict(state)
    if config.vocab_size != len(vocab):
        raise CheckpointError(f"checkpoint {path}: vocab_size {config.vocab_size} != {len(vocab)} symbols")
    return model.to(device).eval(), vocab, meta
