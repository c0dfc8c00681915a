"""The image generators and the GAN discriminator as exported graphs (batch 1, static shapes).

Batch norms (eval mode) are folded into the layer before them here, in torch: the TFLite converter otherwise fuses a
batch norm into a transposed convolution with a (1, 1, 1, C) bias, which the LiteRT quantizer gives per-channel
scales along its first axis, a file no interpreter loads.

- :class:`ConditionalGenerator`: the DCGAN's generator, ``z`` (1, Z) float32 and ``label`` (1,) int32 ->
  ``images`` (1, H, W) float32 in [0, 1].
- :class:`LatentDecoder`: an unconditional generator (a DCGAN without classes, the VAE's decoder: the pixels'
  Bernoulli means), ``z`` (1, Z) -> ``images`` (1, H, W) in [0, 1].
- :class:`RealnessGraph`: the DCGAN's discriminator with its spectral norms baked into plain weights, ``images``
  (1, H, W) in [0, 1] -> ``logits`` (1, K): the realness logit under each of the K classes (projection: the shared
  score plus ``<embed(k), features>``; K = 1 for an unconditional one). One call judges an image under every class.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from server.image.gan import Discriminator, Generator
from server.image.vae import ConvVAE


@torch.no_grad()
def fold_batch_norm(layer: nn.Module, norm: nn.Module) -> nn.Linear:
    """A copy of ``layer`` (a linear layer or a transposed convolution) whose weights and bias include the
    eval-mode batch norm ``norm`` that follows it."""
    if not isinstance(layer, nn.Linear | nn.ConvTranspose2d) or not isinstance(norm, nn.BatchNorm1d | nn.BatchNorm2d):
        raise TypeError(f"cannot fold a {type(norm).__name__} into a {type(layer).__name__}")
    mean, var = norm.running_mean, norm.running_var
    if mean is None or var is None:
        raise ValueError("a batch norm without running statistics")
    scale = norm.weight / torch.sqrt(var + norm.eps)  # (C,)
    folded = copy.deepcopy(layer)
    bias = layer.bias if layer.bias is not None else torch.zeros_like(mean)
    if isinstance(layer, nn.ConvTranspose2d):  # weight (C_in, C_out, k, k): the output channel is axis 1
        folded.weight.mul_(scale[None, :, None, None])
    else:  # weight (C_out, C_in)
        folded.weight.mul_(scale[:, None])
    folded.bias = nn.Parameter((bias - mean) * scale + norm.bias)
    return cast(nn.Linear, folded)  # a linear layer or a transposed convolution: both map their input by weight


def folded_generator(generator: Generator) -> tuple[nn.Linear, nn.Sequential, nn.Sequential]:
    """The generator's layers after its label embedding, batch norms folded, as (project, body, to_pixels):
    (B, Z [+ E]) -> (B, 2C * H/4 * W/4) before its ReLU -> (B, C, H/2, W/2) -> (B, 1, H, W) in [-1, 1]."""
    project, body = generator.eval().project, generator.body
    return (
        fold_batch_norm(project[0], project[1]),
        nn.Sequential(
            nn.ReLU(),
            body[0],  # (B, 2C, H/4, W/4)
            fold_batch_norm(body[1], body[2]),  # (B, C, H/2, W/2)
            nn.ReLU(),
        ).eval(),
        nn.Sequential(copy.deepcopy(body[4]), nn.Tanh()).eval(),  # (B, 1, H, W)
    )


class ConditionalGenerator(nn.Module):
    """The label's embedding is folded through the first linear layer into a (K, P) table of its contribution
    (with the bias and the batch norm), so the graph adds a gathered row to the latent's product instead of
    concatenating the embedding to the latent: an int8 concatenation shares one scale between the latent and the
    embedding (TFLite), which moved pixels by up to 0.6. ``to_pixels`` (the last transposed convolution and its
    squashing) is the spec's float tail."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        if generator.embed is None:
            raise ValueError("an unconditional generator exports as a LatentDecoder")
        first, self.body, self.to_pixels = folded_generator(generator)
        latent = generator.config.latent
        with torch.no_grad():
            self.project = nn.Linear(latent, first.out_features, bias=False)
            self.project.weight.copy_(first.weight[:, :latent])  # (P, Z)
            table = generator.embed.weight @ first.weight[:, latent:].t() + first.bias  # (K, P)
        self.register_buffer("table", table.detach().clone())

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Latents (B, Z) and int32 labels (B,) -> images (B, H, W) in [0, 1]."""
        x = self.project(z) + F.embedding(label, self.get_buffer("table"))  # (B, P): embedding() takes int32 ids
        return (self.to_pixels(self.body(x)).squeeze(1) + 1) / 2  # (B, H, W)


class LatentDecoder(nn.Module):
    """An unconditional DCGAN generator or the VAE's decoder: ``from_latent`` (the VAE's first linear layer; none
    for a generator), ``body``, ``to_pixels`` (for the VAE: both transposed convolutions and the sigmoid). The
    spec keeps the VAE's ``from_latent`` and ``to_pixels`` float, so that int8 is its (Z... -> 2C * H/4 * W/4)
    linear layer, three quarters of its weights."""

    def __init__(self, model: Generator | ConvVAE) -> None:
        super().__init__()
        self.vae = isinstance(model, ConvVAE)
        if isinstance(model, ConvVAE):
            decoder = copy.deepcopy(model.eval().decoder)
            self.from_latent = decoder[:2]  # (B, hidden)
            self.body = decoder[2:5]  # (B, 2C, H/4, W/4)
            self.to_pixels = nn.Sequential(*list(decoder)[5:], nn.Sigmoid())  # (B, 1, H, W): Bernoulli means
        else:
            project, body, self.to_pixels = folded_generator(model)
            self.from_latent = nn.Sequential(project)
            self.body = body

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, Z) -> images (B, H, W) in [0, 1]."""
        x = self.to_pixels(self.body(self.from_latent(z))).squeeze(1)  # (B, H, W)
        return x if self.vae else (x + 1) / 2


@torch.no_grad()
def _baked(module: nn.Module) -> nn.Module:
    """A plain copy of ``module`` whose weight is the value of its parametrized weight now (a spectral norm's W /
    sigma, sigma as estimated at the end of training; the module must be in eval mode, where the norm does no power
    iteration). ``parametrize.remove_parametrizations`` would do it in place, and on a copy it deletes the weight
    property from the parametrized class, which the original shares."""
    if not parametrize.is_parametrized(module, "weight"):
        return copy.deepcopy(module)
    plain: nn.Module
    if isinstance(module, nn.Conv2d):
        kernel, stride, padding = (
            cast(tuple[int, int], v) for v in (module.kernel_size, module.stride, module.padding)
        )
        plain = nn.Conv2d(
            module.in_channels, module.out_channels, kernel, stride, padding, bias=module.bias is not None
        )
    elif isinstance(module, nn.Linear):
        plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
    elif isinstance(module, nn.Embedding):
        plain = nn.Embedding(module.num_embeddings, module.embedding_dim)
    else:
        raise TypeError(f"cannot bake a parametrized {type(module).__name__}")
    plain.get_parameter("weight").copy_(module.weight)
    bias = getattr(module, "bias", None)
    if bias is not None:
        plain.get_parameter("bias").copy_(bias)
    return plain.eval()


class RealnessGraph(nn.Module):
    """``features`` (the convolutions) and ``head``: one linear layer whose row k is the score's weights plus class
    k's embedding (projection), so a call judges the image under every class; the head is the spec's float tail.
    Spectral norms are baked into plain weights."""

    def __init__(self, discriminator: Discriminator) -> None:
        super().__init__()
        discriminator = discriminator.eval()
        self.features = nn.Sequential(*(_baked(m) for m in discriminator.body))  # (B, 1, H, W) in [-1, 1] -> (B, F)
        score = cast(nn.Linear, _baked(discriminator.score))
        embed = None if discriminator.embed is None else cast(nn.Embedding, _baked(discriminator.embed))
        classes = 1 if embed is None else embed.num_embeddings
        self.head = nn.Linear(score.in_features, classes)
        with torch.no_grad():
            weight = score.weight if embed is None else score.weight + embed.weight  # (K, F)
            self.head.weight.copy_(weight)
            self.head.bias.copy_(score.bias.expand(classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, H, W) in [0, 1] -> realness logits (B, K) under each class (K = 1: unconditional)."""
        return self.head(self.features(images.unsqueeze(1) * 2 - 1))  # (B, K)
