"""A class-conditional DCGAN: the generator, the discriminator and the pair, with their config.

The generator maps a latent (B, Z) and a label (B,) to images (B, H, W) in [0, 1]: a linear layer to
(2C, H/4, W/4), then two stride-2 transposed convolutions (batch norm, ReLU between), tanh mapped to [0, 1]. The
label enters as a learned embedding concatenated to the latent. The discriminator reads images (B, H, W) in
[0, 1]: two stride-2 convolutions with leaky ReLU (spectral norm on every layer), a linear score, and the class
by projection (Miyato and Koyama 2018): score + <embed(label), features>. Its ``features`` are what the VAE-GAN's
reconstruction loss compares. ``classes = 0`` makes both unconditional. With ``aux_classifier`` the discriminator
also has an auxiliary classifier (AC-GAN, Odena et al. 2017): a linear layer from its features to class logits,
which the trainer fits on real images and the generator is rewarded by; the realness logits are unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


@dataclass(frozen=True)
class GANConfig:
    image_size: int = 28  # a multiple of 4: 28 (Fashion-MNIST) or 8 (digits)
    classes: int = 10  # 0: unconditional
    latent: int = 64
    g_channels: int = 32  # the generator's last hidden layer; its first has twice as many
    d_channels: int = 32  # the discriminator's first layer; its second has twice as many
    embed: int = 16  # the generator's label embedding
    aux_classifier: bool = False  # the discriminator's auxiliary classifier head (AC-GAN); needs classes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Generator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        c, s = config.g_channels, config.image_size // 4
        self.embed = nn.Embedding(config.classes, config.embed) if config.classes else None
        cond = config.embed if config.classes else 0
        self.project = nn.Sequential(
            nn.Linear(config.latent + cond, 2 * c * s * s, bias=False), nn.BatchNorm1d(2 * c * s * s), nn.ReLU()
        )
        self.body = nn.Sequential(
            nn.Unflatten(1, (2 * c, s, s)),
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1, bias=False),  # (B, C, H/2, W/2)
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.ConvTranspose2d(c, 1, 4, 2, 1),  # (B, 1, H, W)
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, Z) and labels (B,) -> images (B, H, W) in [0, 1]."""
        if self.embed is not None:
            if labels is None:
                raise ValueError("a class-conditional generator needs labels")
            z = torch.cat([z, self.embed(labels)], dim=1)  # (B, Z + E)
        return (self.body(self.project(z)).squeeze(1) + 1) / 2  # (B, H, W)


class Discriminator(nn.Module):
    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        c, s = config.d_channels, config.image_size // 4
        self.body = nn.Sequential(
            spectral_norm(nn.Conv2d(1, c, 4, 2, 1)),  # (B, C, H/2, W/2)
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(c, 2 * c, 4, 2, 1)),  # (B, 2C, H/4, W/4)
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        width = 2 * c * s * s
        self.score = spectral_norm(nn.Linear(width, 1))
        self.embed = spectral_norm(nn.Embedding(config.classes, width)) if config.classes else None
        aux = config.aux_classifier and config.classes
        self.classify = nn.Linear(width, config.classes) if aux else None

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, H, W) in [0, 1] -> the last convolution's activations (B, 2C * H/4 * W/4)."""
        return self.body(images.unsqueeze(1) * 2 - 1)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, H, W) and labels (B,) -> realness logits (B,)."""
        return self.realness(self.features(images), labels)

    def realness(self, h: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`features` (B, F) and labels (B,) -> realness logits (B,)."""
        out = self.score(h).squeeze(1)  # (B,)
        if self.embed is not None:
            if labels is None:
                raise ValueError("a class-conditional discriminator needs labels")
            out = out + (self.embed(labels) * h).sum(dim=1)
        return out

    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The auxiliary classifier: :meth:`features` (B, F) -> class logits (B, K)."""
        if self.classify is None:
            raise ValueError("this discriminator has no auxiliary classifier (GANConfig.aux_classifier)")
        return self.classify(features)


class DCGAN(nn.Module):
    """The pair a checkpoint holds."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
