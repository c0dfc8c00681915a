"""A convolutional VAE with a Bernoulli decoder, and the VAE-GAN that pairs it with a discriminator; their configs.

The encoder reads images (B, H, W) in [0, 1]: two stride-2 convolutions (ReLU), then the posterior's mean and log
variance (B, Z). The decoder mirrors the DCGAN generator (a linear layer to (2C, H/4, W/4), two stride-2 transposed
convolutions) and gives each pixel's Bernoulli logit (B, H, W); its image is their sigmoid. The VAE-GAN
(Larsen et al. 2016) is this VAE, its decoder the generator, with a :class:`~server.image.gan.Discriminator` whose
features replace the pixel likelihood in the reconstruction loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from server.image.gan import Discriminator, GANConfig


@dataclass(frozen=True)
class VAEConfig:
    image_size: int = 28  # a multiple of 4
    latent: int = 32
    channels: int = 32  # the encoder's first and the decoder's last hidden layer; the others twice as many
    hidden: int = 256

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ConvVAE(nn.Module):
    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        c, s = config.channels, config.image_size // 4
        width = 2 * c * s * s
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1),  # (B, C, H/2, W/2)
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 4, 2, 1),  # (B, 2C, H/4, W/4)
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(width, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, 2 * config.latent),  # (B, 2Z): mean, log variance
        )
        self.decoder = nn.Sequential(
            nn.Linear(config.latent, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, width),
            nn.ReLU(),
            nn.Unflatten(1, (2 * c, s, s)),
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1),  # (B, C, H/2, W/2)
            nn.ReLU(),
            nn.ConvTranspose2d(c, 1, 4, 2, 1),  # (B, 1, H, W)
        )

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, H, W) in [0, 1] -> the posterior's mean and log variance, each (B, Z)."""
        mean, logvar = self.encoder(images.unsqueeze(1) * 2 - 1).chunk(2, dim=1)
        return mean, logvar.clamp(-12.0, 8.0)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (..., Z) -> each pixel's Bernoulli logit (..., H, W)."""
        lead = z.shape[:-1]
        logits = self.decoder(z.reshape(-1, z.shape[-1])).squeeze(1)  # (N, H, W)
        return logits.reshape(*lead, *logits.shape[-2:])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, Z) -> images (B, H, W) in [0, 1] (the pixels' Bernoulli means)."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, images: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images (B, H, W) and standard normal noise (B, Z) -> reconstruction logits (B, H, W), mean, log variance."""
        mean, logvar = self.encode(images)
        z = mean + noise * (0.5 * logvar).exp()  # (B, Z)
        return self.decode_logits(z), mean, logvar

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass(frozen=True)
class VAEGANConfig:
    vae: VAEConfig
    discriminator: GANConfig  # unconditional (classes 0), the same image size

    def to_dict(self) -> dict[str, Any]:
        return {"vae": self.vae.to_dict(), "discriminator": self.discriminator.to_dict()}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> VAEGANConfig:
        return cls(VAEConfig(**saved["vae"]), GANConfig(**saved["discriminator"]))


class VAEGAN(nn.Module):
    def __init__(self, config: VAEGANConfig) -> None:
        super().__init__()
        if config.discriminator.classes or config.discriminator.image_size != config.vae.image_size:
            raise ValueError("the VAE-GAN's discriminator is unconditional, of the VAE's image size")
        self.config = config
        self.vae = ConvVAE(config.vae)
        self.discriminator = Discriminator(config.discriminator)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
