"""A Bernoulli restricted Boltzmann machine on binarised images, and its config.

Visible units v (B, V) and hidden units h (B, H), both binary; energy E(v, h) = -b.v - c.h - v.W.h. The hidden
units sum out in closed form, so the free energy F(v) = -b.v - sum_j softplus(c_j + (v.W)_j) gives
p(v) = exp(-F(v)) / Z. The conditionals factorise: p(h_j = 1 | v) = sigmoid(c_j + (v.W)_j) and
p(v_i = 1 | h) = sigmoid(b_i + (W.h)_i). Gibbs sampling alternates them. Training (CD-k, persistent CD) and the
likelihood (annealed importance sampling, exact enumeration) live in ``train_rbm.py`` and ``likelihood.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RBMConfig:
    image_size: int = 8  # the visible units are the image_size**2 pixels
    hidden: int = 100

    @property
    def visible(self) -> int:
        return self.image_size * self.image_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BernoulliRBM(nn.Module):
    def __init__(self, config: RBMConfig) -> None:
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.randn(config.visible, config.hidden) * 0.01)  # (V, H)
        self.visible_bias = nn.Parameter(torch.zeros(config.visible))  # (V,)
        self.hidden_bias = nn.Parameter(torch.zeros(config.hidden))  # (H,)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """Visible states (B, V) -> F(v) (B,)."""
        return -v @ self.visible_bias - F.softplus(v @ self.weight + self.hidden_bias).sum(dim=-1)

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """p(h = 1 | v): (B, V) -> (B, H)."""
        return torch.sigmoid(v @ self.weight + self.hidden_bias)

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        """p(v = 1 | h): (B, H) -> (B, V)."""
        return torch.sigmoid(h @ self.weight.T + self.visible_bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
