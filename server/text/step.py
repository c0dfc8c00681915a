"""A fused one-token step of the character LSTM for a batch of streams.

``nn.LSTM`` pays a large fixed cost per call (about 10 ms for one token on one
CPU core), which dominates token-by-token generation. This step computes the
same function from the same weights with a handful of matrix products:

- the embedding and layer 0's input projection (plus both biases) are folded
  into one table lookup, ``table0[token]`` of shape (V, 4H);
- every later layer multiplies ``[x, h]`` by its input and hidden weights
  stacked into one (2H, 4H) matrix;
- one sigmoid covers all four gates (the cell gate's slice is recomputed with tanh).

The checkpoint stays the single source of truth: the fused weights are derived
from a loaded ``CharLSTM`` and the outputs match its ``forward`` to float rounding.
"""

from __future__ import annotations

import torch

from server.text.model import CharLSTM, State


class FusedStep:
    def __init__(self, model: CharLSTM) -> None:
        weight = model.lstm.get_parameter  # "weight_ih_l0", "bias_hh_l1", ...
        self.layers = model.config.num_layers
        self.hidden = model.config.hidden_size
        with torch.no_grad():
            bias0 = weight("bias_ih_l0") + weight("bias_hh_l0")  # (4H,)
            self.table0 = (model.embed.weight @ weight("weight_ih_l0").T + bias0).contiguous()  # (V, 4H)
            self.recurrent0 = weight("weight_hh_l0").T.contiguous()  # (H, 4H)
            self.stacked = [
                torch.cat([weight(f"weight_ih_l{k}"), weight(f"weight_hh_l{k}")], dim=1).T.contiguous()
                for k in range(1, self.layers)
            ]  # (2H, 4H) each
            self.biases = [weight(f"bias_ih_l{k}") + weight(f"bias_hh_l{k}") for k in range(1, self.layers)]
            self.head_weight = model.head.weight.T.contiguous()  # (H, V)
            self.head_bias = model.head.bias.detach().clone()  # (V,)

    def _cell(self, gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.hidden
        act = torch.sigmoid(gates)  # (B, 4H): i, f, (g), o
        g = torch.tanh(gates[:, 2 * hidden : 3 * hidden])  # (B, H)
        c = torch.addcmul(act[:, hidden : 2 * hidden] * c, act[:, :hidden], g)  # (B, H)
        h = act[:, 3 * hidden :] * torch.tanh(c)  # (B, H)
        return h, c

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Token ids (B,) and state (L, B, H) x 2 -> logits (B, V) and the next state."""
        h_prev, c_prev = state
        gates = torch.addmm(self.table0[tokens], h_prev[0], self.recurrent0)  # (B, 4H)
        h, c = self._cell(gates, c_prev[0])
        hs, cs = [h], [c]
        for k in range(1, self.layers):
            x = torch.cat([h, h_prev[k]], dim=1)  # (B, 2H)
            h, c = self._cell(torch.addmm(self.biases[k - 1], x, self.stacked[k - 1]), c_prev[k])
            hs.append(h)
            cs.append(c)
        logits = torch.addmm(self.head_bias, h, self.head_weight)  # (B, V)
        return logits, (torch.stack(hs), torch.stack(cs))
