"""A DS-CNN keyword spotter with its log-mel front end inside: raw PCM in, logits out.

``forward(wave)`` takes (B, 16000) float32 in [-1, 1] (one second at 16 kHz) and returns logits (B, classes), so
an exported graph needs nothing but the samples. The stages:

1. log-mel: ``server.audio.features.LogMel``'s numbers, band-limited to 4 kHz (an 8 kHz phone recording and a
   16 kHz one give the same features), computed by a factorized DFT of the bins the mel filters read
   (:class:`FactorizedLogMel`: a few kilobytes of float constants, so an int8 file keeps the front end float);
2. per-utterance normalisation: a clip quieter than any that training draws (a peak below -30 dBFS) is first
   raised to that level (:func:`lift_quiet`), and each mel band's mean over the second is subtracted, which
   removes the gain and any fixed colouring of the channel (microphone, phone line);
3. a depthwise-separable CNN after Arm's DS-CNN: a 10x4 convolution with stride 2, then blocks of depthwise 3x3
   (the first with stride 2: 25 x 10 positions, about Arm's 25 x 5) and pointwise 1x1 convolutions with batch
   norm and ReLU, average pooling and a linear layer.

Training applies SpecAugment-style masks between 2 and 3 (``classify(features(wave), masks)``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from server.audio.constants import SAMPLE_RATE
from server.audio.features import LogMel, LogMelConfig
from server.errors import InvalidArgument

CLIP_SAMPLES = SAMPLE_RATE
QUIET_PEAK_DB = -30.0  # the quietest peak training's gain augmentation draws (server.kws.augment.AugmentConfig)
MAX_LIFT_DB = 40.0  # the most a quiet clip is raised: a room's noise floor stays near silence


def default_front_end() -> dict[str, Any]:
    return LogMelConfig(n_fft=256, win_length=256, hop_length=160, n_mels=40, f_min=20.0, f_max=4000.0).to_dict()


@dataclass(frozen=True)
class KWSConfig:
    num_classes: int = 12
    front_end: dict[str, Any] = field(default_factory=default_front_end)  # LogMelConfig fields
    channels: int = 88
    blocks: int = 4
    dropout: float = 0.2
    # every clip's peak moved to this level (dBFS) before the log-mel, by at most MAX_LIFT_DB up; None: only the
    # clips quieter than QUIET_PEAK_DB raised to it (lift_quiet)
    peak_db: float | None = None

    def __post_init__(self) -> None:
        for name in ("num_classes", "channels", "blocks"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise InvalidArgument("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.peak_db is not None and not -60.0 <= self.peak_db <= 0.0:
            raise InvalidArgument("peak_db", f"must be -60..0 dBFS, got {self.peak_db:g}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def log_mel(self) -> LogMelConfig:
        return LogMelConfig.from_dict(self.front_end)


class FactorizedLogMel(nn.Module):
    """:class:`~server.audio.features.LogMel`'s numbers for the bins below ``f_max``, from a factorized DFT.

    A frame of N = N1 x N2 samples (256 = 16 x 16) is transformed in three small steps (Cooley-Tukey): N2 DFTs of
    N1 points, a twiddle product, and DFTs of N2 points for only the output bins the mel filters read. The
    constants are about 1,300 numbers instead of LogMel's (2 N/2 + 2) x N basis, so the front end stays float32 in
    an int8 file at a few kilobytes: int8 weights for a DFT basis would leak about -70 dB of each frame's energy
    into every bin, above the quiet bands of speech, and move their log by whole units.

    Frames come from slices of the waveform (no convolution): with hop H and N <= 2H, frame i is chunk i of H
    samples followed by the first N - H samples of chunk i + 1.
    """

    def __init__(self, config: LogMelConfig) -> None:
        super().__init__()
        self.config = config
        n, hop = config.n_fft, config.hop_length
        n1 = 1 << (math.isqrt(n).bit_length() - 1)  # a power of two near sqrt(N)
        if n % n1 or n > 2 * hop:
            raise InvalidArgument("n_fft", f"needs a factor near its square root and n_fft <= 2 * hop, got {n}")
        n2 = n // n1
        reference = LogMel(config)
        mel = reference.mel  # (M, n_freqs)
        used = torch.nonzero(mel.sum(dim=0) > 0).flatten()
        self.bins = int(used.max()) + 1
        k2 = -(-self.bins // n1)  # output columns of the last step
        self.n1, self.n2, self.k2 = n1, n2, k2
        window = reference.basis[0, 0].double()  # row 0 of the basis: the window itself (cos 0 = 1)
        a = torch.arange(n1, dtype=torch.float64)
        b = torch.arange(n2, dtype=torch.float64)
        step1 = 2 * math.pi * a[:, None] * a[None] / n1  # (k1, n1)
        twiddle = 2 * math.pi * a[:, None] * b[None] / n  # (k1, n2)
        step3 = 2 * math.pi * b[:, None] * torch.arange(k2, dtype=torch.float64)[None] / n2  # (n2, k2)
        consts = {
            "window": window.reshape(n1, n2),  # (n1, n2): sample N2 n1 + n2
            "c1": torch.cos(step1),
            "s1": -torch.sin(step1),
            "tc": torch.cos(twiddle),
            "ts": -torch.sin(twiddle),
            "c3": torch.cos(step3),
            "s3": -torch.sin(step3),
            "mel_t": mel[:, : self.bins].T.double(),  # (K, M)
        }
        for name, value in consts.items():
            self.register_buffer(name, value.float().contiguous(), persistent=False)

    def _const(self, name: str) -> torch.Tensor:
        return self.get_buffer(name)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) waveform -> (B, n_mels, frames) natural-log mel power, frames = 1 + (T - n_fft) // hop."""
        hop, n = self.config.hop_length, self.config.n_fft
        frames = 1 + (wave.shape[1] - n) // hop
        need = (frames + 1) * hop
        if wave.shape[1] < need:
            wave = nn.functional.pad(wave, (0, need - wave.shape[1]))
        chunks = wave[:, :need].reshape(wave.shape[0], frames + 1, hop)  # (B, F + 1, H)
        x = torch.cat([chunks[:, :frames], chunks[:, 1:, : n - hop]], dim=2)  # (B, F, N)
        x = x.reshape(-1, frames, self.n1, self.n2) * self._const("window")  # (B, F, n1, n2)
        a_re = torch.matmul(self._const("c1"), x)  # (B, F, k1, n2)
        a_im = torch.matmul(self._const("s1"), x)
        tc, ts = self._const("tc"), self._const("ts")
        b_re = a_re * tc - a_im * ts  # (B, F, k1, n2)
        b_im = a_re * ts + a_im * tc
        c3, s3 = self._const("c3"), self._const("s3")
        x_re = torch.matmul(b_re, c3) - torch.matmul(b_im, s3)  # (B, F, k1, k2)
        x_im = torch.matmul(b_re, s3) + torch.matmul(b_im, c3)
        power = (x_re * x_re + x_im * x_im).transpose(2, 3).reshape(-1, frames, self.k2 * self.n1)  # (B, F, bins)
        mel = torch.matmul(power[:, :, : self.bins], self._const("mel_t"))  # (B, F, M)
        return torch.log(mel.transpose(1, 2) + self.config.log_floor)  # (B, M, F)


def _gain_to(wave: torch.Tensor, peak_db: float) -> torch.Tensor:
    """(B, 1): the gain that moves each clip's peak to ``peak_db``, at most ``MAX_LIFT_DB`` up (digital silence
    takes the most and stays silence)."""
    target = 10 ** (peak_db / 20)
    peak = wave.abs().amax(dim=1, keepdim=True)  # (B, 1)
    return target / torch.clamp(peak, min=target / 10 ** (MAX_LIFT_DB / 20))


def lift_quiet(wave: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, T): each clip whose peak is below ``QUIET_PEAK_DB`` raised to it (by at most ``MAX_LIFT_DB``),
    louder clips unchanged. Speech recorded far below full scale (a distant or badly set microphone) otherwise
    meets the log floor in its quiet frames, which the band means do not remove: at -46 dBFS the default spotter
    heard 82.5% of the people's number words and 44.5% of their other words as unknown, against 87.3% and 63.8%
    at their own levels and 92.1% and 67.6% raised to -30 dBFS. Digital silence stays silence."""
    return wave * torch.clamp(_gain_to(wave, QUIET_PEAK_DB), min=1.0)  # (B, T)


def to_peak(wave: torch.Tensor, peak_db: float) -> torch.Tensor:
    """(B, T) -> (B, T): each clip's peak moved to ``peak_db`` (raised by at most ``MAX_LIFT_DB``), so that the
    log floor sits at one depth below every clip's loudest sample. Digital silence stays silence."""
    return wave * _gain_to(wave, peak_db)  # (B, T)


class KWSFrontEnd(nn.Module):
    """Waveform (B, T) -> per-utterance normalised log-mel (B, M, F): each band's mean over the clip subtracted.

    One submodule, so that an int8 export can keep all of it in float: the log-mel spans the log floor (-13.8) to
    about +5 and its mean depends on how much of the clip is silence; after the subtraction the range is what
    calibration sees."""

    def __init__(self, config: LogMelConfig, peak_db: float | None = None) -> None:
        super().__init__()
        self.log_mel = FactorizedLogMel(config)
        self.peak_db = peak_db

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = lift_quiet(wave) if self.peak_db is None else to_peak(wave, self.peak_db)
        x = self.log_mel(wave)  # (B, M, F)
        # The mean of each band taken relative to its first frame: the same number, but a band that never changes
        # (digital silence at the log floor) comes out exactly zero instead of as rounding residues, which the
        # network would amplify differently in torch and in each exported runtime.
        x = x - x[:, :, :1]  # (B, M, F)
        return x - x.mean(dim=2, keepdim=True)  # (B, M, F)


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
        self.front_end = KWSFrontEnd(config.log_mel, config.peak_db)
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
        return self.front_end(wave)  # (B, M, F)

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

    def widened(self, channels: int, seed: int = 0, noise: float = 0.02) -> KWSNet:
        """This network with ``channels`` channels in every layer, computing the same function (Net2WiderNet,
        Chen et al. 2016): each new channel copies an existing one, chosen at random per layer, and the next layer
        divides its weights from a copied channel by the number of copies. ``noise`` (a share of each weight
        matrix's standard deviation) on the pointwise and head weights lets the copies learn apart; 0 keeps the
        function exactly (to float rounding)."""
        old = self.config.channels
        if channels < old:
            raise ValueError(f"cannot widen {old} channels to {channels}")
        gen = torch.Generator().manual_seed(seed)
        src = self.state_dict()
        wide = KWSNet(replace(self.config, channels=channels))
        dst = wide.state_dict()

        def copies() -> tuple[torch.Tensor, torch.Tensor]:  # new channel -> old channel, and each old one's count
            picks = torch.cat([torch.arange(old), torch.randint(0, old, (channels - old,), generator=gen)])
            return picks, torch.bincount(picks, minlength=old).to(torch.float32)

        def norm(name: str, picks: torch.Tensor) -> None:
            for key in ("weight", "bias", "running_mean", "running_var"):
                dst[f"{name}.{key}"] = src[f"{name}.{key}"][picks].clone()
            dst[f"{name}.num_batches_tracked"] = src[f"{name}.num_batches_tracked"].clone()

        def spread(w: torch.Tensor, picks: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:  # (out, in)
            w = w[:, picks] / counts[picks][None, :]
            return w + noise * w.std() * torch.randn(w.shape, generator=gen)  # each copied row its own noise

        picks, counts = copies()
        dst["stem.0.weight"] = src["stem.0.weight"][picks].clone()
        norm("stem.1", picks)
        for b in range(self.config.blocks):
            dst[f"blocks.{b}.0.weight"] = src[f"blocks.{b}.0.weight"][picks].clone()  # depthwise: its own channel
            norm(f"blocks.{b}.1", picks)
            out_picks, out_counts = copies()
            pointwise = spread(src[f"blocks.{b}.3.weight"][out_picks, :, 0, 0], picks, counts)
            dst[f"blocks.{b}.3.weight"] = pointwise[:, :, None, None]
            norm(f"blocks.{b}.4", out_picks)
            picks, counts = out_picks, out_counts
        dst["head.weight"] = spread(src["head.weight"], picks, counts)
        dst["head.bias"] = src["head.bias"].clone()
        wide.load_state_dict(dst)
        return wide.train(self.training)
