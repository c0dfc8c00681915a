"""The one-token step graph computes what CharLSTM.forward computes."""

from __future__ import annotations

from pathlib import Path

import torch

from export.text_step import TextStep
from server.text.checkpoint import load_text_model


def test_step_by_step_equals_the_lstm_over_a_sequence(tiny_text_checkpoint: Path) -> None:
    """Feeding the step its own state reproduces CharLSTM's logits and final state over a line of text to 1e-5."""
    model, vocab, _ = load_text_model(tiny_text_checkpoint)
    step = TextStep(model).eval()
    ids = torch.tensor([vocab.encode("\nKent.\nThe king is come, my lord; good night.\n")])  # (1, T)
    with torch.no_grad():
        want, (h_want, c_want) = model(ids, model.init_state(1))  # (1, T, V)
        h, c = step.zero_state()
        got = []
        for t in range(ids.shape[1]):
            logits, h, c = step(ids[:, t].to(torch.int32), h, c)
            got.append(logits)
    torch.testing.assert_close(torch.stack(got, dim=1), want, rtol=0, atol=1e-5)
    torch.testing.assert_close(h, h_want, rtol=0, atol=1e-5)
    torch.testing.assert_close(c, c_want, rtol=0, atol=1e-5)
