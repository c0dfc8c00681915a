"""Log-mel features, in torch for training and exported graphs and in NumPy for code without torch, and the
WaveNet's conditioning frames built from them.

The STFT is a strided 1-D convolution with a fixed windowed DFT basis and the mel projection a matrix product, so
the module exports to ONNX and TFLite as plain conv, mul, matmul and log: an exported classifier takes raw PCM.
There is no centre padding: ``frames = 1 + (samples - n_fft) // hop_length``; callers pad as they need.
:class:`MelFrames` is the centred version the WaveNet uses (frame ``f`` centred on sample ``f * hop``), computed
by :meth:`LogMel.framed` (the frames cut out and multiplied by the basis: utterances come in every length, and the
convolution would compile a oneDNN kernel for each; see server/memory.py), and
:func:`utterance_features` turns those frames into the WaveNet's frame features, for training, evaluation and the
serving engine alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from server.audio.constants import SAMPLE_RATE
from server.audio.model import WaveNet
from server.errors import InvalidArgument

LOG_FLOOR = math.log(1e-6)  # the log-mel of silence (LogMelConfig.log_floor)


@dataclass(frozen=True)
class LogMelConfig:
    sample_rate: int = SAMPLE_RATE
    n_fft: int = 512
    win_length: int = 400  # a Hann window of this length, centred in the n_fft frame
    hop_length: int = 160
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float | None = None  # None: half the sample rate
    log_floor: float = 1e-6  # log(mel power + floor): silence stays finite

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft:
            raise InvalidArgument("win_length", f"must be at most n_fft ({self.n_fft}), got {self.win_length}")
        top = self.f_max if self.f_max is not None else self.sample_rate / 2
        if not 0 <= self.f_min < top <= self.sample_rate / 2:
            raise InvalidArgument("f_max", f"need 0 <= f_min < f_max <= {self.sample_rate / 2}")

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def frames(self, samples: int) -> int:
        return max(0, 1 + (samples - self.n_fft) // self.hop_length)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogMelConfig:
        return cls(**data)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    linear = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f < 1000.0, linear, log)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    linear = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m < 15.0, linear, log)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float, f_max: float) -> np.ndarray:
    """(n_mels, n_freqs) triangular filters, equal area (Slaney normalisation)."""
    freqs = np.linspace(0, sample_rate / 2, n_freqs)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(f_min)), _hz_to_mel(np.array(f_max)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None] - lower) / (centre - lower)
    falling = (upper - freqs[None]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    bank *= 2.0 / (upper - lower)  # equal area
    return bank.astype(np.float32)


def _window(config: LogMelConfig) -> np.ndarray:
    n = np.arange(config.win_length)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / config.win_length)  # periodic
    left = (config.n_fft - config.win_length) // 2
    window = np.zeros(config.n_fft)
    window[left : left + config.win_length] = hann
    return window


def dft_basis(config: LogMelConfig) -> np.ndarray:
    """(2 * n_freqs, n_fft): windowed cosines then sines; frame @ basis.T gives the real and imaginary parts."""
    k = np.arange(config.n_freqs)[:, None]
    n = np.arange(config.n_fft)[None]
    angle = 2 * np.pi * k * n / config.n_fft
    window = _window(config)[None]
    return np.concatenate([np.cos(angle) * window, -np.sin(angle) * window]).astype(np.float32)


def _filterbank(config: LogMelConfig) -> np.ndarray:
    top = config.f_max if config.f_max is not None else config.sample_rate / 2
    return mel_filterbank(config.n_freqs, config.n_mels, config.sample_rate, config.f_min, top)


class LogMel(nn.Module):
    """(batch, samples) waveform in [-1, 1] -> (batch, n_mels, frames) natural-log mel power."""

    basis: torch.Tensor
    mel: torch.Tensor

    def __init__(self, config: LogMelConfig | None = None) -> None:
        super().__init__()
        self.config = config or LogMelConfig()
        self.register_buffer("basis", torch.from_numpy(dft_basis(self.config))[:, None, :], persistent=False)
        self.register_buffer("mel", torch.from_numpy(_filterbank(self.config)), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = nn.functional.conv1d(wave[:, None, :], self.basis, stride=self.config.hop_length)
        real, imag = spec.split(self.config.n_freqs, dim=1)
        power = real * real + imag * imag  # (batch, n_freqs, frames)
        mel = torch.matmul(self.mel, power)
        return torch.log(mel + self.config.log_floor)

    def framed(self, wave: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with the frames cut out and multiplied by the basis rather than convolved with it: the
        same numbers, one matrix product for any length."""
        frames = wave.unfold(-1, self.config.n_fft, self.config.hop_length)  # (batch, frames, n_fft)
        spec = torch.matmul(frames, self.basis[:, 0, :].T).transpose(1, 2)  # (batch, 2 * n_freqs, frames)
        real, imag = spec.split(self.config.n_freqs, dim=1)
        mel = torch.matmul(self.mel, real * real + imag * imag)
        return torch.log(mel + self.config.log_floor)


def log_mel_numpy(wave: np.ndarray, config: LogMelConfig | None = None) -> np.ndarray:
    """The same features as :class:`LogMel` for one 1-D waveform, without torch: (n_mels, frames)."""
    config = config or LogMelConfig()
    wave = np.asarray(wave, dtype=np.float32)
    frames = config.frames(wave.shape[-1])
    if frames == 0:
        return np.zeros((config.n_mels, 0), dtype=np.float32)
    index = np.arange(config.n_fft)[None] + config.hop_length * np.arange(frames)[:, None]
    spec = wave[index] @ dft_basis(config).T  # (frames, 2 * n_freqs)
    real, imag = spec[:, : config.n_freqs], spec[:, config.n_freqs :]
    mel = _filterbank(config) @ (real * real + imag * imag).T
    return np.log(mel + config.log_floor).astype(np.float32)


def mel_config(n_mels: int, hop: int) -> LogMelConfig:
    return LogMelConfig(sample_rate=SAMPLE_RATE, n_mels=n_mels, hop_length=hop)


class MelFrames:
    """Log-mel frames of whole waveforms, frame ``f`` centred on sample ``f * hop``."""

    def __init__(self, n_mels: int, hop: int) -> None:
        self.config = mel_config(n_mels, hop)
        self.module = LogMel(self.config)

    @property
    def floor(self) -> float:
        return float(np.log(self.config.log_floor))

    @torch.no_grad()
    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """(T,) float waveform -> (n_mels, 1 + T // hop) float32."""
        half = self.config.n_fft // 2
        x = torch.from_numpy(np.pad(np.asarray(wave, np.float32), (half, half)))[None]
        return self.module.framed(x)[0].numpy()


def pad_frames(mel: np.ndarray, context: int, floor: float, right_extra: int = 0) -> np.ndarray:
    """``context`` frames of silence (the log floor) before, ``context + right_extra`` after."""
    return np.pad(mel, ((0, 0), (context, context + right_extra)), constant_values=floor)


def utterance_features(model: WaveNet, mel: np.ndarray, voice_id: int) -> torch.Tensor:
    """Frame features (1, F, C) of a whole utterance's unpadded log-mel frames (n_mels, F)."""
    device = model.embed.weight.device
    padded = torch.from_numpy(pad_frames(mel, model.config.cond_context, LOG_FLOOR))[None].to(device)
    return model.frame_features(padded, torch.tensor([voice_id], device=device))
