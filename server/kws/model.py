"""A DS-CNN keyword spotter with its log-mel front end inside: raw PCM in, logits out.

``forward(wave)`` takes (B, 16000) float32 in [-1, 1] (one second at 16 kHz) and returns logits (B, classes), so
an exported graph needs nothing but the samples. The stages:

1. log-mel (``server.audio.features.LogMel``), band-limited to 4 kHz: an 8 kHz phone recording and a 16 kHz one
   give the same features, and the DFT basis keeps only the bins the mel filters read (a smaller file);
2. per-utterance normalisation: each mel band's mean over the second is subtracted, which removes the gain and
   any fixed colouring of the channel (microphone, phone line);
3. a depthwise-separable CNN after Arm's DS-CNN: a 10x4 convolution with stride 2, then blocks of depthwise 3x3
   (the first with stride 2: 25 x 10 positions, about Arm's 25 x 5) and pointwise 1x1 convolutions with batch
   norm and ReLU, average pooling and a linear layer.

Training applies SpecAugment-style masks between 2 and 3 (``classify(features(wave), masks)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from server.audio.features import LogMel, LogMelConfig

SAMPLE_RATE = 16_000
CLIP_SAMPLES = SAMPLE_RATE


def default_front_end() -> dict[str, Any]:
    return LogMelConfig(n_fft=256, win_length=256, hop_length=160, n_mels=40, f_min=20.0, f_max=4000.0).to_dict()


@dataclass(frozen=True)
class KWSConfig:
    num_classes: int = 12
    front_end: dict[str, Any] = field(default_factory=default_front_end)  # LogMelConfig fields
    channels: int = 64
    blocks: int = 4
    dropout: float = 0.2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def log_mel(self) -> LogMelConfig:
        return LogMelConfig.from_dict(self.front_end)


class BandLimitedLogMel(LogMel):
    """:class:`LogMel` without the frequency bins no mel filter reads (those above ``f_max``): the same numbers
    from a smaller DFT basis."""

    def __init__(self, config: LogMelConfig) -> None:
        super().__init__(config)
        used = torch.nonzero(self.mel.sum(dim=0) > 0).flatten()
        keep = int(used.max()) + 1
        n = config.n_freqs
        self.bins = keep
        self.basis = torch.cat([self.basis[:keep], self.basis[n : n + keep]])  # (2 * keep, 1, n_fft)
        self.mel = self.mel[:, :keep].contiguous()  # (n_mels, keep)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = nn.functional.conv1d(wave[:, None, :], self.basis, stride=self.config.hop_length)  # (B, 2K, F)
        real, imag = spec.split(self.bins, dim=1)
        power = real * real + imag * imag  # (B, K, F)
        return torch.log(torch.matmul(self.mel, power) + self.config.log_floor)  # (B, M, F)


def _block(channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False),  # depthwise
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 1, bias=False),  # pointwise
        nn.BatchNorm2d(channels),
        nn.ReLU(),
    )


class KWSNet(nn.Module):
    def __init__(self, config: KWSConfig) -> None:
        super().__init__()
        self.config = config
        self.front_end = BandLimitedLogMel(config.log_mel)
        c = config.channels
        self.stem = nn.Sequential(
            nn.Conv2d(1, c, (10, 4), stride=(2, 2), padding=(4, 1), bias=False),  # (time, mel)
            nn.BatchNorm2d(c),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(*(_block(c, 2 if i == 0 else 1) for i in range(config.blocks)))
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(c, config.num_classes)

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveform (B, T) -> per-utterance normalised log-mel (B, M, F)."""
        x = self.front_end(wave)  # (B, M, F)
        return x - x.mean(dim=2, keepdim=True)  # (B, M, F)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel (B, M, F) -> logits (B, classes)."""
        x = features.transpose(1, 2)[:, None]  # (B, 1, F, M)
        x = self.blocks(self.stem(x))  # (B, C, F / 4, M / 4)
        return self.head(self.drop(x.mean(dim=(2, 3))))  # (B, classes)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """PCM (B, 16000) float32 in [-1, 1] -> logits (B, classes)."""
        return self.classify(self.features(wave))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
