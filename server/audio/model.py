"""WaveNet over 8-bit mu-law samples, conditioned on log-mel frames (local) and a voice id (global).

The network predicts sample ``t`` from the samples before it:

- the input at position ``t`` is the code of sample ``t - 1`` (``SILENCE`` at ``t = 0``), looked up in an
  embedding (a kernel-1 causal convolution of the one-hot code);
- ``layers`` residual layers, dilations ``1, 2, ..., 2**(cycle-1)`` repeated: a causal dilated convolution of
  kernel 2 to ``2 * gate_channels``, plus that layer's conditioning; gated ``tanh(a) * sigmoid(b)``; one 1x1
  convolution to the residual (added to the layer's input) and the skip path (summed over layers);
- ``relu -> 1x1 -> relu -> 1x1`` from the summed skips to 256 logits.

Conditioning is computed at frame rate, where it is cheap: a small non-causal stack of kernel-3 convolutions over
the log-mel frames (the whole rendering is known before generation starts), plus the voice's embedding, then one
1x1 projection per layer to ``2 * gate_channels``. The stack's convolutions are computed as matrix products over the
unfolded frames (:func:`valid_conv1d`): utterances come in every length, and oneDNN would compile a kernel for each.
Frame ``f`` sits at sample ``f * hop``; the projection at
sample ``t`` is the linear interpolation between frames ``t // hop`` and ``t // hop + 1``. A per-sample step thus
adds one interpolated vector per layer (see ``server/audio/fast.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from server.errors import InvalidArgument

CLASSES = 256  # 8-bit mu-law codes (server/transport/wire.py)
SILENCE = 128  # the code of 0.0: the input before the first sample
# The config's sizes, each at least 1, in the order they are checked (and declared).
SIZES = (
    "layers",
    "cycle",
    "residual_channels",
    "gate_channels",
    "skip_channels",
    "out_channels",
    "n_mels",
    "hop",
    "cond_channels",
    "cond_layers",
)


@dataclass(frozen=True)
class WaveNetConfig:
    layers: int = 20
    cycle: int = 10  # dilations 1..2**(cycle-1) (512), repeated layers // cycle times
    residual_channels: int = 64
    gate_channels: int = 64  # the dilated convolution makes 2 * gate_channels (tanh half, sigmoid half)
    skip_channels: int = 32
    out_channels: int = 128  # the hidden width of the output head
    n_mels: int = 40
    hop: int = 160  # samples per log-mel frame
    cond_channels: int = 64
    cond_layers: int = 2  # kernel-3 convolutions over frames (each sees one frame either side)
    voices: int = 1  # the voice-embedding table's size (voice ids 0..voices-1)
    mel_mean: float = 0.0  # log-mel normalization measured on the training data
    mel_std: float = 1.0

    def __post_init__(self) -> None:
        """Raise :class:`InvalidArgument` naming the first size out of range."""
        for name in SIZES:
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"must be at least 1, got {getattr(self, name)}")
        if self.cycle > 14:
            raise InvalidArgument("cycle", f"must be at most 14 (dilation 8192), got {self.cycle}")

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)

    @property
    def dilations(self) -> list[int]:
        return [2 ** (i % self.cycle) for i in range(self.layers)]

    @property
    def receptive_field(self) -> int:
        return 1 + sum(self.dilations) + 1  # + the input embedding's one step back

    @property
    def cond_context(self) -> int:
        """Frames the conditioning stack reads on either side of a frame."""
        return self.cond_layers


def valid_conv1d(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` (B, C, F) -> (B, O, F - k + 1) for an unpadded, undilated convolution of stride 1, as one matrix
    product over the unfolded input: the same numbers, without the kernel that oneDNN compiles for each new input
    length and keeps (see server/memory.py)."""
    (k,) = conv.kernel_size
    assert conv.stride == (1,) and conv.dilation == (1,) and conv.padding == (0,) and conv.groups == 1, conv
    b, c, _ = x.shape
    cols = x.unfold(2, k, 1).transpose(1, 2)  # (B, F - k + 1, C, k)
    y = F.linear(cols.reshape(b, cols.shape[1], c * k), conv.weight.reshape(conv.out_channels, c * k), conv.bias)
    return y.transpose(1, 2)  # (B, O, F - k + 1)


class WaveNet(nn.Module):
    def __init__(self, config: WaveNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        gates = 2 * c.gate_channels
        self.embed = nn.Embedding(CLASSES, c.residual_channels)
        # Dilated convolutions as a (2R -> 2G) linear map of [x[t - d], x[t]]: one matmul, same as the kernel.
        self.dilated = nn.ModuleList(nn.Linear(2 * c.residual_channels, gates, bias=False) for _ in range(c.layers))
        self.res_skip = nn.ModuleList(
            nn.Linear(c.gate_channels, c.residual_channels + c.skip_channels) for _ in range(c.layers)
        )
        self.out1 = nn.Linear(c.skip_channels, c.out_channels)
        self.out2 = nn.Linear(c.out_channels, CLASSES)
        convs: list[nn.Module] = []
        width = c.n_mels
        for _ in range(c.cond_layers):
            convs += [nn.Conv1d(width, c.cond_channels, 3), nn.Tanh()]
            width = c.cond_channels
        self.cond_net = nn.Sequential(*convs)
        self.voice = nn.Embedding(c.voices, width)
        self.cond_width = width
        # Every layer's conditioning projection (and the dilated convolution's bias) in one (L * 2G, C) map.
        self.cond_proj = nn.Linear(width, c.layers * gates)
        self._init_embedding()

    @torch.no_grad()
    def _init_embedding(self) -> None:
        """Start each code's embedding from smooth functions of its amplitude, so neighbouring codes start alike and
        the layers can read the waveform's value at once (a random table learns this only code by code): the
        companded value, the linear value, then sinusoids of the companded value at random frequencies."""
        width = self.config.residual_channels
        y = torch.linspace(-1.0, 1.0, CLASSES)  # the companded value of each code
        x = torch.sign(y) * torch.expm1(y.abs() * math.log1p(CLASSES - 1)) / (CLASSES - 1)  # its linear value
        g = torch.Generator().manual_seed(0)
        freqs = torch.rand(width, generator=g) * 8.0 + 0.5
        phases = torch.rand(width, generator=g) * 2 * math.pi
        table = torch.cos(math.pi * freqs[None] * y[:, None] + phases[None])  # (256, R)
        table[:, 0] = y
        if width > 1:
            table[:, 1] = x
        self.embed.weight.copy_(table)

    # -- conditioning (frame rate) ------------------------------------------
    def frame_features(self, mel: torch.Tensor, voice: torch.Tensor) -> torch.Tensor:
        """Log-mel frames (B, n_mels, F + 2 * cond_context), padded by the caller, and voice ids (B,) ->
        conditioning features (B, F, C) of the F frames."""
        c = self.config
        x = (mel - c.mel_mean) / c.mel_std
        for module in self.cond_net:
            x = valid_conv1d(module, x) if isinstance(module, nn.Conv1d) else module(x)
        feats = x.transpose(1, 2)  # (B, F, C)
        return feats + self.voice(voice)[:, None, :]

    def layer_conditioning(self, feats: torch.Tensor) -> torch.Tensor:
        """Features (B, F, C) -> every layer's additive conditioning at frame rate (B, F, L, 2G)."""
        b, f, _ = feats.shape
        return self.cond_proj(feats).view(b, f, self.config.layers, 2 * self.config.gate_channels)

    def upsample(self, cond: torch.Tensor, start: int, length: int) -> torch.Tensor:
        """Frame-rate values (B, F, ...) -> samples ``start .. start + length - 1`` (B, length, ...), sample ``t``
        interpolated linearly between frames ``t // hop`` and ``t // hop + 1`` (the last frame is held)."""
        hop = self.config.hop
        t = torch.arange(start, start + length, device=cond.device)
        f0 = torch.clamp(t // hop, max=cond.shape[1] - 1)
        f1 = torch.clamp(t // hop + 1, max=cond.shape[1] - 1)
        a = ((t % hop).to(cond.dtype) / hop).view(1, length, *([1] * (cond.dim() - 2)))
        return torch.lerp(cond[:, f0], cond[:, f1], a)

    # -- teacher-forced forward ---------------------------------------------
    def forward(self, inputs: torch.Tensor, feats: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Input codes (B, T) (the code before each predicted sample) and frame features (B, F, C) whose frame 0
        is at sample 0 -> logits (B, T, 256) of samples ``start .. start + T - 1``.

        The layers start from silence: positions before the segment read zeros, as incremental generation does.
        """
        c = self.config
        _, length = inputs.shape
        cond = self.layer_conditioning(feats)  # (B, F, L, 2G)
        x = self.embed(inputs)  # (B, T, R)
        skip = x.new_zeros(*x.shape[:2], c.skip_channels)  # (B, T, S)
        for layer, d in enumerate(c.dilations):
            past = F.pad(x, (0, 0, d, 0))[:, :length]  # (B, T, R) x[t - d], zeros before the start
            z = self.dilated[layer](torch.cat([past, x], dim=2))  # (B, T, 2G)
            z = z + self.upsample(cond[:, :, layer], start, length)  # (B, T, 2G)
            gated = torch.tanh(z[..., : c.gate_channels]) * torch.sigmoid(z[..., c.gate_channels :])  # (B, T, G)
            rs = self.res_skip[layer](gated)  # (B, T, R + S)
            x = x + rs[..., : c.residual_channels]
            skip = skip + rs[..., c.residual_channels :]
        h = F.relu(self.out1(F.relu(skip)))  # (B, T, H)
        return self.out2(h)  # (B, T, 256)

    def logits_for(self, codes: torch.Tensor, mel: torch.Tensor, voice: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, 256) of whole utterances from their first sample: ``codes`` (B, T) are
        the targets, ``mel`` (B, n_mels, F + 2 * cond_context) the padded frames."""
        inputs = torch.cat([torch.full_like(codes[:, :1], SILENCE), codes[:, :-1]], dim=1)  # (B, T)
        return self(inputs, self.frame_features(mel, voice))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
