"""The character LSTM: explicit state and checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.errors import CheckpointError
from server.text.checkpoint import load_text_model, save_text_model
from server.text.model import CharLSTM, CharLSTMConfig
from server.text.vocab import UNKNOWN, Vocabulary


def test_state_carried_across_chunks_equals_one_forward() -> None:
    """Feeding a sequence in chunks with the state carried gives the logits of one long forward."""
    torch.manual_seed(0)
    model = CharLSTM(CharLSTMConfig(vocab_size=20, embed_dim=8, hidden_size=16, num_layers=2)).eval()
    x = torch.randint(0, 20, (3, 50))
    full, full_state = model(x, model.init_state(3))
    state = model.init_state(3)
    pieces = []
    for start in (0, 1, 17, 40):
        end = {0: 1, 1: 17, 17: 40, 40: 50}[start]
        logits, state = model(x[:, start:end], state)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-6)
    torch.testing.assert_close(state[0], full_state[0], rtol=0, atol=1e-6)


def test_vocabulary_maps_unknown_characters_to_id_zero() -> None:
    """Characters the training text lacked become the unknown symbol."""
    vocab = Vocabulary.from_text("abca")
    assert vocab.chars == [UNKNOWN, "a", "b", "c"]
    assert vocab.encode("abz") == [1, 2, 0]
    assert vocab.decode([3, 0]) == "c" + UNKNOWN


def test_checkpoint_round_trips(tmp_path: Path) -> None:
    """Weights, config and vocabulary survive save and load."""
    torch.manual_seed(1)
    vocab = Vocabulary.from_text("hello world")
    model = CharLSTM(CharLSTMConfig(vocab_size=len(vocab), embed_dim=4, hidden_size=8, num_layers=1))
    path = tmp_path / "m.safetensors"
    save_text_model(path, model, vocab, {"steps": 3})
    loaded, loaded_vocab, meta = load_text_model(path)
    assert loaded.config == model.config
    assert loaded_vocab.chars == vocab.chars
    assert meta["steps"] == 3
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_loading_a_corrupt_checkpoint_names_the_file(tmp_path: Path) -> None:
    """A file that is not a checkpoint is a CheckpointError, not a crash."""
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"broken\.safetensors"):
        load_text_model(path)


def test_loading_a_missing_checkpoint_says_so(tmp_path: Path) -> None:
    """A missing checkpoint is reported as missing."""
    with pytest.raises(CheckpointError, match="does not exist"):
        load_text_model(tmp_path / "none.safetensors")
