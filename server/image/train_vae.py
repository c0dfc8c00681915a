"""Train the convolutional VAE (on binarised images: its Bernoulli likelihood is then exact) and the VAE-GAN.

The VAE maximises the ELBO with Adam; its card's figure is the test NLL by importance sampling (k samples per image,
:func:`server.image.likelihood.vae_nll`) on a fixed subset of the binarised test split. The VAE-GAN (Larsen et al.
2016) trains on the grey images: the encoder minimises the KL to the prior plus the reconstruction error in the
discriminator's features; the decoder that error plus the GAN loss on its reconstructions and prior samples; the
discriminator tells real images from both. The options are :class:`~server.image.options.VAETrainOptions` and
:class:`~server.image.options.VAEGANTrainOptions`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from server.image.data import binarise, fixed_subset
from server.image.gan import GANConfig
from server.image.likelihood import vae_nll
from server.image.options import VAEGANTrainOptions, VAETrainOptions
from server.image.train_gan import GeneratorTrainer, drop_grads
from server.image.trainer import Batch, ImageTrainer
from server.image.vae import VAEGAN, ConvVAE, VAEConfig, VAEGANConfig


def kl_to_prior(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per image (B,) of the posterior's mean and log variance (B, Z)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1)


def negative_elbo(vae: ConvVAE, images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """-ELBO in nats per image (B,) of binary images (B, H, W), with the reparameterisation's noise (B, Z)."""
    logits, mean, logvar = vae(images, noise)
    recon = F.binary_cross_entropy_with_logits(logits, images, reduction="none").sum(dim=(1, 2))
    return recon + kl_to_prior(mean, logvar)


class VAETrainer(ImageTrainer):
    model: ConvVAE
    opts: VAETrainOptions
    family = "vae"
    loss_name, unit = "nelbo", "nats per image (-ELBO, 1,000 test images)"

    def __init__(self, opts: VAETrainOptions) -> None:
        super().__init__(opts)
        self.model = ConvVAE(VAEConfig(image_size=self.train_set.size, **opts.model)).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=opts.lr)
        self._finish_setup()
        self.test_binary = binarise(self.test_set.images)

    def prepare(self, images: np.ndarray) -> np.ndarray:
        return binarise(images)

    def _losses(self, batch: Batch) -> float:
        images, _ = batch
        noise = torch.randn(len(images), self.model.config.latent, device=self.device)
        loss = negative_elbo(self.model, images, noise).mean()
        self.optimize(loss, self.model)
        return loss.item()

    @torch.no_grad()
    def test_elbo(self, count: int) -> float:
        """Mean -ELBO (nats per image) of the first ``count`` binarised test images, one noise draw each."""
        self.model.eval()
        images = torch.from_numpy(self.test_binary[:count]).to(self.device)
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn(len(images), self.model.config.latent, generator=gen).to(self.device)
        return float(negative_elbo(self.model, images, noise).mean())

    def _estimate(self) -> float:
        return self.test_elbo(1000)

    def _metrics(self) -> dict[str, Any]:
        subset = fixed_subset(len(self.test_binary), self.opts.eval_images, seed=0)
        nats = vae_nll(self.model, self.test_binary[subset], k=self.opts.eval_k, seed=0)
        return {
            "test_nll": {"nats": round(nats, 3), "k": self.opts.eval_k, "images": len(subset), "subset_seed": 0},
            "test_elbo": round(-self.test_elbo(len(self.test_binary)), 3),
        }


class VAEGANTrainer(GeneratorTrainer):
    model: VAEGAN
    opts: VAEGANTrainOptions
    family = "vaegan"

    def __init__(self, opts: VAEGANTrainOptions) -> None:
        super().__init__(opts)
        size = self.train_set.size
        vae = VAEConfig(image_size=size, **opts.model)
        config = VAEGANConfig(vae, GANConfig(image_size=size, classes=0, d_channels=opts.d_channels))
        self.model = VAEGAN(config).to(self.device)
        self._setup_players(self.model.vae.encoder, self.model.vae.decoder, self.model.discriminator)

    def _losses(self, batch: Batch) -> float:
        real, _ = batch  # (B, H, W) grey
        vae, d, opts = self.model.vae, self.model.discriminator, self.opts
        noise = torch.randn(len(real), vae.config.latent, device=self.device)
        prior = torch.randn(len(real), vae.config.latent, device=self.device)
        # The discriminator: real up; reconstructions and prior samples down.
        with torch.no_grad():
            mean, logvar = vae.encode(real)
            recon = vae.decode(mean + noise * (0.5 * logvar).exp())
            sampled = vae.decode(prior)
        scores = d(torch.cat([real, recon, sampled]))  # (3B,)
        b = len(real)
        loss_d = F.softplus(-scores[:b]).mean() + F.softplus(scores[b:]).mean()
        self.optimize(loss_d, d)
        # The encoder and the decoder, each its own loss (through the updated discriminator).
        mean, logvar = vae.encode(real)
        recon = vae.decode(mean + noise * (0.5 * logvar).exp())  # (B, H, W)
        sampled = vae.decode(prior)
        feature_error = 0.5 * (d.features(recon) - d.features(real).detach()).pow(2).sum(dim=1).mean()
        kl = kl_to_prior(mean, logvar).mean()
        fake_scores = d(torch.cat([recon, sampled]))  # (2B,)
        gan = F.softplus(-fake_scores).mean()
        enc_params = list(vae.encoder.parameters())
        dec_params = list(vae.decoder.parameters())
        enc_grads = torch.autograd.grad(opts.kl_weight * kl + feature_error, enc_params, retain_graph=True)
        dec_grads = torch.autograd.grad(opts.feature_weight * feature_error + gan, dec_params)
        self.optimizer.zero_grad(set_to_none=True)
        drop_grads(d)
        for p, grad in zip(enc_params + dec_params, enc_grads + dec_grads, strict=True):
            p.grad = grad
        self.reduce_grads(vae)
        self.optimizer.step()
        return feature_error.item()


def train_vae(opts: VAETrainOptions) -> dict[str, Any]:
    return VAETrainer(opts).train()


def train_vaegan(opts: VAEGANTrainOptions) -> dict[str, Any]:
    return VAEGANTrainer(opts).train()
