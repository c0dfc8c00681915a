"""The exported graphs of the image models compute what the checkpoint's modules compute."""

from __future__ import annotations

import torch

from export.image_graphs import ConditionalGenerator, LatentDecoder, RealnessGraph
from server.image.checkpoint import load_image_model

from .conftest import DCGAN_CHECKPOINT, VAE_CHECKPOINT


@torch.no_grad()
def test_conditional_generator_is_the_generator() -> None:
    """Batch norms folded and the label's embedding folded into a table: the same images, int32 labels in."""
    model, _ = load_image_model(DCGAN_CHECKPOINT, "dcgan")
    z = torch.randn(20, model.config.latent, generator=torch.Generator().manual_seed(0)) * 1.5
    labels = torch.arange(20) % 10
    graph = ConditionalGenerator(model.generator)
    assert (graph(z, labels.int()) - model.generator(z, labels)).abs().max() < 1e-5


@torch.no_grad()
def test_latent_decoder_is_the_vaes_decoder() -> None:
    """The VAE's decoder in three parts, the last with the sigmoid: its pixel means."""
    model, _ = load_image_model(VAE_CHECKPOINT, "conv_vae")
    z = torch.randn(20, model.config.latent, generator=torch.Generator().manual_seed(0))
    assert (LatentDecoder(model)(z) - model.decode(z)).abs().max() < 1e-5


@torch.no_grad()
def test_realness_graph_judges_under_every_class_at_once() -> None:
    """Column k of the graph's logits is the discriminator's logit with label k; the checkpoint is unchanged."""
    model, _ = load_image_model(DCGAN_CHECKPOINT, "dcgan")
    images = torch.rand(8, 28, 28, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    logits = RealnessGraph(model.discriminator)(images)  # (8, 10)
    for k in range(10):
        want = model.discriminator(images, torch.full((8,), k))
        assert (logits[:, k] - want).abs().max() < 1e-5
    after = model.discriminator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
