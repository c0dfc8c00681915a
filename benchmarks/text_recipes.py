"""Training throughput of text-model recipes: characters per second of one training step, forward and backward.

    OMP_NUM_THREADS=1 python benchmarks/text_recipes.py [--repeats 5] [--json PATH]

A recipe run for a fixed number of minutes sees as many characters as its step allows, so its throughput is half of
what it costs. This times the trainer's step (AdamW, bf16 autocast where native, as ``antiphon train text``) for
the shapes the experiment log compares (2x512, 3x512, 2x768; batch 64 and 128; with and without dropout between
the layers, which takes ``nn.LSTM`` off its fused multi-layer kernel) and for an LSTM with layer
normalisation inside the cell (Ba et al. 2016: the gates' two matrix products and the cell state normalised), which
``nn.LSTM``'s fused kernel cannot run: it is a loop over time steps of ``LayerNormLSTMCell`` below, the way such a
cell would have to be trained here. The figure is median characters per second over ``--repeats`` steps after one
warm-up step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from server.device import autocast_dtype
from server.text.model import CharLSTM, CharLSTMConfig

VOCAB = 85


class LayerNormLSTMCell(nn.Module):
    """One LSTM layer with layer normalisation of the input and recurrent products and of the cell state."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.ih = nn.Linear(inputs, 4 * hidden, bias=False)
        self.hh = nn.Linear(hidden, 4 * hidden)
        self.ln_ih, self.ln_hh, self.ln_c = nn.LayerNorm(4 * hidden), nn.LayerNorm(4 * hidden), nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gates = self.ln_ih(self.ih(x)) + self.ln_hh(self.hh(h))  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
        h = torch.sigmoid(o) * torch.tanh(self.ln_c(c))  # (B, H)
        return h, c


class LayerNormCharLSTM(nn.Module):
    def __init__(self, config: CharLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        sizes = [config.embed_dim] + [config.hidden_size] * (config.num_layers - 1)
        self.cells = nn.ModuleList(LayerNormLSTMCell(n, config.hidden_size) for n in sizes)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps = x.shape
        layer_in = self.embed(x)  # (B, T, E)
        for cell in self.cells:
            h = c = torch.zeros(batch, self.config.hidden_size)
            outs = []
            for t in range(steps):
                h, c = cell(layer_in[:, t], h, c)
                outs.append(h)
            layer_in = torch.stack(outs, dim=1)  # (B, T, H)
        return self.head(layer_in)  # (B, T, V)


def chars_per_second(model: nn.Module, batch: int, seq_len: int, repeats: int, recurrent: bool) -> float:
    amp = autocast_dtype("auto", torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(1, VOCAB, (batch, seq_len))
    y = torch.randint(1, VOCAB, (batch, seq_len))
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            if recurrent:
                logits, _ = model(x, model.init_state(batch))  # type: ignore[operator]
            else:
                logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        times.append(time.perf_counter() - start)
    return batch * seq_len / statistics.median(times[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per recipe (after one warm-up)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    recipes: list[tuple[str, dict[str, Any], int, bool]] = [
        ("2x512, batch 64", {"hidden_size": 512, "num_layers": 2}, 64, False),
        ("2x512 dropout 0.1, batch 64", {"hidden_size": 512, "num_layers": 2, "dropout": 0.1}, 64, False),
        ("2x512 output dropout 0.1 only, batch 64", {"hidden_size": 512, "output_dropout": 0.1}, 64, False),
        ("2x512, batch 128", {"hidden_size": 512, "num_layers": 2}, 128, False),
        ("3x512, batch 64", {"hidden_size": 512, "num_layers": 3}, 64, False),
        ("2x768, batch 64", {"hidden_size": 768, "num_layers": 2}, 64, False),
        ("2x512 layer-normalised cell, batch 64", {"hidden_size": 512, "num_layers": 2}, 64, True),
    ]
    results: dict[str, Any] = {"threads": torch.get_num_threads(), "seq_len": 128, "chars_per_second": {}}
    for name, shape, batch, layer_norm in recipes:
        config = CharLSTMConfig(vocab_size=VOCAB, **shape)
        model = LayerNormCharLSTM(config) if layer_norm else CharLSTM(config)
        rate = chars_per_second(model.train(), batch, 128, args.repeats, recurrent=not layer_norm)
        results["chars_per_second"][name] = round(rate)
        sys.stdout.write(f"{name}: {rate:,.0f} characters/s\n")
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
