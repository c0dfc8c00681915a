"""The character LSTM as a stateless one-token graph: ``(token, h, c) -> (logits, h, c)``.

The edge generates offline by feeding each step's state back in. The weights are
folded as in ``server.text.step.FusedStep`` (embedding and layer 0's input
projection and biases become one (V, 4H) table; later layers multiply ``[x, h]``
by stacked (2H, 4H) weights), but held as buffers of a module, so that
``torch.export`` sees one plain graph of gathers and matrix products.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from server.text.model import CharLSTM
from server.text.step import FusedStep


class TextStep(nn.Module):
    def __init__(self, model: CharLSTM) -> None:
        super().__init__()
        fused = FusedStep(model)
        self.layers = fused.layers
        self.hidden = fused.hidden
        self.vocab_size = model.config.vocab_size
        self.register_buffer("table0", fused.table0.clone())  # (V, 4H)
        self.register_buffer("recurrent0", fused.recurrent0.clone())  # (H, 4H)
        for k in range(1, self.layers):
            self.register_buffer(f"stacked{k}", fused.stacked[k - 1].clone())  # (2H, 4H)
            self.register_buffer(f"bias{k}", fused.biases[k - 1].detach().clone())  # (4H,)
        self.register_buffer("head_weight", fused.head_weight.clone())  # (H, V)
        self.register_buffer("head_bias", fused.head_bias.clone())  # (V,)

    def _buffer(self, name: str) -> torch.Tensor:
        return self.get_buffer(name)

    def _cell(self, gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.hidden
        i = torch.sigmoid(gates[:, :hidden])  # (B, H)
        f = torch.sigmoid(gates[:, hidden : 2 * hidden])  # (B, H)
        g = torch.tanh(gates[:, 2 * hidden : 3 * hidden])  # (B, H)
        o = torch.sigmoid(gates[:, 3 * hidden :])  # (B, H)
        c = f * c + i * g  # (B, H)
        return o * torch.tanh(c), c

    def forward(
        self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids (B,) int32 and state (L, B, H) x 2 -> logits (B, V) and the next state."""
        # embedding() rather than indexing: it exports as a Gather that takes int32 ids in both formats
        gates = F.embedding(token, self._buffer("table0")) + h[0] @ self._buffer("recurrent0")  # (B, 4H)
        h_k, c_k = self._cell(gates, c[0])
        hs, cs = [h_k], [c_k]
        for k in range(1, self.layers):
            x = torch.cat([h_k, h[k]], dim=1)  # (B, 2H)
            gates = x @ self._buffer(f"stacked{k}") + self._buffer(f"bias{k}")  # (B, 4H)
            h_k, c_k = self._cell(gates, c[k])
            hs.append(h_k)
            cs.append(c_k)
        logits = h_k @ self._buffer("head_weight") + self._buffer("head_bias")  # (B, V)
        return logits, torch.stack(hs), torch.stack(cs)

    def zero_state(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.layers, batch, self.hidden)
        return torch.zeros(shape), torch.zeros(shape)
