"""Incremental WaveNet generation in PyTorch, batched over streams: the path for a GPU (and the eager baseline).

The same fast-WaveNet scheme as ``server/audio/fast.py`` (a ring buffer of past inputs per layer, conditioning
interpolated between two frame-rate projections), written as batched tensor operations so that one step advances
every stream on the device. Each step is about ten small kernels per layer, so on a GPU the step is bound by
launch overhead until it is captured as a CUDA graph (future work: the shapes are static for a fixed batch) or
fused into one kernel as nv-wavenet does; on a CPU it is the eager baseline the compiled loop is measured against.

Sampling takes the streams' counter-based uniforms (``server/sampling.py``) for a whole chunk at once, so a
chunk needs one host-to-device copy. Matrix products of different batch sizes may round differently on some
devices, so unlike the compiled loop this path does not promise identical samples alone and batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from server.audio.model import SILENCE, WaveNet
from server.sampling import splitmix_uniforms


def chunk_uniforms(seeds: np.ndarray, counts: np.ndarray, n: int) -> np.ndarray:
    """Draws ``counts + 1 .. counts + n`` of every stream's counter-based source: (B, n) float64 in [0, 1)."""
    k = counts[:, None].astype(np.uint64) + np.arange(1, n + 1, dtype=np.uint64)[None]
    return splitmix_uniforms(seeds[:, None], k)


@dataclass
class TorchStreams:
    queues: torch.Tensor  # (B, sum(dilations), R)
    last: torch.Tensor  # (B,) int64
    pos: torch.Tensor  # (B,) int64
    cond: torch.Tensor  # (B, F_max, L * 2G) every layer's conditioning at frame rate (rows padded by their last)
    frames: torch.Tensor  # (B,) int64 frames of each stream
    seeds: np.ndarray  # (B,) uint64
    counts: np.ndarray  # (B,) uint64
    temperature: torch.Tensor  # (B,) float64


class TorchWaveNetStep:
    def __init__(self, model: WaveNet) -> None:
        self.model = model.eval()
        c = model.config
        self.config = c
        device = model.embed.weight.device
        self.device = device
        self.dilations = torch.tensor(c.dilations, device=device)
        self.offsets = torch.cumsum(self.dilations, 0) - self.dilations
        with torch.no_grad():
            self.w_dil = [cast(nn.Linear, m).weight.T.contiguous() for m in model.dilated]  # (2R, 2G) each
            self.res_skip = list(model.res_skip)

    @torch.no_grad()
    def start(self, feats: list[torch.Tensor], seeds: list[int], temperatures: list[float]) -> TorchStreams:
        """Streams from their frame features (F_b, C) each."""
        c, device = self.config, self.device
        longest = max(len(f) for f in feats)
        padded = torch.stack([F.pad(f.T, (0, longest - len(f)), mode="replicate").T for f in feats]).to(device)
        batch = len(feats)
        return TorchStreams(
            queues=torch.zeros(batch, int(self.dilations.sum()), c.residual_channels, device=device),
            last=torch.full((batch,), SILENCE, dtype=torch.int64, device=device),
            pos=torch.zeros(batch, dtype=torch.int64, device=device),
            cond=self.model.cond_proj(padded),  # (B, F_max, L * 2G)
            frames=torch.tensor([len(f) for f in feats], device=device),
            seeds=np.array(seeds, dtype=np.uint64),
            counts=np.zeros(batch, dtype=np.uint64),
            temperature=torch.tensor(temperatures, dtype=torch.float64, device=device),
        )

    @torch.no_grad()
    def step(self, s: TorchStreams, forced: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, 256) of every stream's next sample; the state advances past ``forced`` codes (B,) if given,
        else the caller must call :meth:`advance` with the sampled codes."""
        c, model = self.config, self.model
        rows = torch.arange(len(s.pos), device=self.device)
        hop = c.hop
        f0 = torch.minimum(s.pos // hop, s.frames - 1)
        f1 = torch.minimum(s.pos // hop + 1, s.frames - 1)
        a = ((s.pos % hop).to(s.cond.dtype) / hop)[:, None]
        cond = torch.lerp(s.cond[rows, f0], s.cond[rows, f1], a).view(len(rows), c.layers, -1)  # (B, L, 2G)
        x = model.embed(s.last)  # (B, R)
        skip = x.new_zeros(len(rows), c.skip_channels)
        for layer in range(c.layers):
            slot = self.offsets[layer] + s.pos % self.dilations[layer]  # (B,)
            past = s.queues[rows, slot]  # (B, R)
            s.queues[rows, slot] = x
            z = torch.addmm(cond[:, layer], torch.cat([past, x], dim=1), self.w_dil[layer])  # (B, 2G)
            gated = torch.tanh(z[:, : c.gate_channels]) * torch.sigmoid(z[:, c.gate_channels :])
            rs = self.res_skip[layer](gated)  # (B, R + S)
            x = x + rs[:, : c.residual_channels]
            skip = skip + rs[:, c.residual_channels :]
        logits = model.out2(F.relu(model.out1(F.relu(skip))))  # (B, 256)
        if forced is not None:
            self.advance(s, forced)
        return logits

    def advance(self, s: TorchStreams, codes: torch.Tensor) -> None:
        s.last = codes.to(torch.int64)
        s.pos = s.pos + 1

    @torch.no_grad()
    def generate(self, s: TorchStreams, n: int) -> np.ndarray:
        """``n`` sampled codes of every stream (B, n) uint8 (temperature 0: the likeliest code)."""
        u = torch.from_numpy(chunk_uniforms(s.seeds, s.counts, n)).to(self.device)  # (B, n)
        sampled = s.temperature > 0
        s.counts = s.counts + np.where(sampled.cpu().numpy(), n, 0).astype(np.uint64)
        temperature = torch.where(sampled, s.temperature, torch.ones_like(s.temperature))[:, None]
        out = torch.empty(len(s.pos), n, dtype=torch.uint8, device=self.device)
        for i in range(n):
            logits = self.step(s).double()  # (B, 256)
            scores = (logits - logits.max(dim=1, keepdim=True).values) / temperature
            cdf = torch.cumsum(torch.exp(scores), dim=1)  # (B, 256)
            drawn = (cdf <= (u[:, i] * cdf[:, -1])[:, None]).sum(dim=1).clamp(max=255)
            codes = torch.where(sampled, drawn, logits.argmax(dim=1))
            self.advance(s, codes)
            out[:, i] = codes
        return out.cpu().numpy()
