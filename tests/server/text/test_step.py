"""The fused generation step computes the model's own function."""

from __future__ import annotations

import pytest
import torch

from server.text.model import CharLSTM, CharLSTMConfig
from server.text.step import FusedStep


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_fused_step_matches_the_model_forward(layers: int) -> None:
    """Twenty fused steps give the logits and state of nn.LSTM on the same tokens."""
    torch.manual_seed(layers)
    model = CharLSTM(CharLSTMConfig(vocab_size=30, embed_dim=8, hidden_size=24, num_layers=layers)).eval()
    tokens = torch.randint(0, 30, (5, 20))
    with torch.no_grad():
        expected, expected_state = model(tokens, model.init_state(5))
    step = FusedStep(model)
    state = model.init_state(5)
    for t in range(20):
        logits, state = step(tokens[:, t], state)
        torch.testing.assert_close(logits, expected[:, t], rtol=0, atol=1e-5)
    torch.testing.assert_close(state[0], expected_state[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(state[1], expected_state[1], rtol=0, atol=1e-5)
