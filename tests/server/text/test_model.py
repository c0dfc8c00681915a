"""The character LSTM: explicit state and checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.errors import CheckpointError, InvalidArgument
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


def test_config_of_an_older_checkpoint_keeps_its_dropout() -> None:
    """A config without the newer dropout fields drops its output at ``dropout`` and its embedding not at all."""
    config = CharLSTMConfig(**{"vocab_size": 20, "embed_dim": 8, "hidden_size": 16, "num_layers": 2, "dropout": 0.1})
    model = CharLSTM(config)
    assert model.drop.p == 0.1 and model.lstm.dropout == 0.1 and model.embed_drop.p == 0.0


def test_output_and_embedding_dropout_are_their_own() -> None:
    """output_dropout replaces dropout on the output only; embed_dropout acts on the embedding."""
    config = CharLSTMConfig(vocab_size=20, hidden_size=16, dropout=0.1, output_dropout=0.3, embed_dropout=0.2)
    model = CharLSTM(config)
    assert model.drop.p == 0.3 and model.lstm.dropout == 0.1 and model.embed_drop.p == 0.2
    assert CharLSTM(CharLSTMConfig(vocab_size=20, hidden_size=16, output_dropout=0.0)).drop.p == 0.0


def test_embedding_dropout_acts_in_training_only() -> None:
    """In training mode embedding dropout changes the logits; in eval mode the model is deterministic."""
    torch.manual_seed(0)
    model = CharLSTM(CharLSTMConfig(vocab_size=20, embed_dim=8, hidden_size=16, embed_dropout=0.5))
    x = torch.randint(0, 20, (2, 30))
    a, _ = model.train()(x, model.init_state(2))
    b, _ = model(x, model.init_state(2))
    assert not torch.allclose(a, b)
    c, _ = model.eval()(x, model.init_state(2))
    d, _ = model(x, model.init_state(2))
    torch.testing.assert_close(c, d, rtol=0, atol=0)


@pytest.mark.parametrize("field", ["dropout", "embed_dropout", "output_dropout"])
def test_dropout_out_of_range_names_its_field(field: str) -> None:
    """A dropout of 1 (or below 0) is an InvalidArgument naming the field."""
    for value in (1.0, -0.1):
        with pytest.raises(InvalidArgument, match=rf"^{field}: must be in \[0, 1\)") as caught:
            CharLSTMConfig(vocab_size=20, **{field: value})
        assert caught.value.field == field
