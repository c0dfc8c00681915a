"""Train the class-conditional DCGAN: each step one discriminator update and one generator update, with the
non-saturating GAN loss (softplus form), Adam with beta1 0.5 for both players, on random training batches; the
generator asks for the classes the real batch holds. With ``--aux-class-weight W > 0`` the discriminator also
has an auxiliary classifier (AC-GAN, Odena et al. 2017), fitted to the labels of the real images only (W times
their cross-entropy added to its loss), and the generator adds W times that classifier's cross-entropy of its
samples against the asked classes. The loop, budget, resume and ``torchrun`` are
:class:`server.training.TrainLoop`'s (gradients averaged per player); the options are
:class:`~server.image.options.DCGANTrainOptions`. The card's figures are measured in the judge's feature space
(:mod:`server.image.quality`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from server.image.gan import DCGAN, GANConfig
from server.image.options import DCGANTrainOptions, VAEGANTrainOptions
from server.image.quality import Judge, frechet_distance, load_judge, measure_generator, resolve_judge
from server.image.sampling import LatentSampler, sample_many
from server.image.trainer import Batch, ImageTrainer

log = logging.getLogger(__name__)


def drop_grads(module: nn.Module) -> None:
    """Forget ``module``'s gradients (the other player's, which this update must not move)."""
    for p in module.parameters():
        p.grad = None


class GeneratorTrainer(ImageTrainer):
    """What the DCGAN and the VAE-GAN trainers share: the players' optimizer, the judge, the quick estimate and the
    quality figures."""

    opts: DCGANTrainOptions | VAEGANTrainOptions
    unit = "Fréchet distance in judge features (1,000 samples)"

    def _setup_players(self, *players: nn.Module) -> None:
        """Adam (beta1 from the options) with a parameter group per player of ``model``, then the shared setup and
        the judge."""
        self.optimizer = torch.optim.Adam(
            [{"params": player.parameters()} for player in players], lr=self.opts.lr, betas=(self.opts.beta1, 0.999)
        )
        self._finish_setup()
        self._setup_judge()

    def _setup_judge(self) -> None:
        self.judge: Judge | None = None
        self.judge_path = resolve_judge(self.opts.judge, self.opts.dataset) if self.opts.quality else None
        if self.judge_path is not None:
            self.judge = load_judge(self.judge_path, self.device)
            self.test_features = self.judge.features(self.test_set.images[:1000])
        elif self.opts.quality:
            log.warning("no judge for %s: the card will have no quality figures", self.opts.dataset)

    def sampler(self) -> LatentSampler:
        return LatentSampler(self.model, self.train_set.label_names)  # type: ignore[arg-type]

    def _estimate(self) -> float:
        if self.judge is None:
            return float("nan")
        self.model.eval()
        images, _ = sample_many(self.sampler(), min(1000, len(self.test_features)), first_seed=10**9)
        return frechet_distance(self.judge.features(images), self.test_features[: len(images)])

    def _metrics(self) -> dict[str, Any]:
        if self.judge is None:
            return {"quality": None}
        report = measure_generator(self.sampler(), self.judge, self.train_set, self.test_set, self.opts.quality_samples)
        return {"quality": report.to_dict()}

    def _card_info(self) -> dict[str, Any]:
        return {"judge": None if self.judge_path is None else self.judge_path.name}


class DCGANTrainer(GeneratorTrainer):
    model: DCGAN
    opts: DCGANTrainOptions
    family = "dcgan"

    def __init__(self, opts: DCGANTrainOptions) -> None:
        super().__init__(opts)
        classes = len(self.train_set.label_names) if opts.conditional else 0
        aux = opts.aux_class_weight > 0
        config = GANConfig(image_size=self.train_set.size, classes=classes, aux_classifier=aux, **opts.model)
        self.model = DCGAN(config).to(self.device)
        self._setup_players(self.model.generator, self.model.discriminator)

    def _losses(self, batch: Batch) -> float:
        real, labels = batch  # (B, H, W), (B,)
        g, d = self.model.generator, self.model.discriminator
        asked = labels if self.model.config.classes else None
        z = torch.randn(len(real), self.model.config.latent, device=self.device)  # (B, Z)
        fake = g(z, asked)  # (B, H, W)
        # The discriminator: real images up, generated ones down (one forward over both halves).
        h = d.features(torch.cat([real, fake.detach()]))  # (2B, F)
        scores = d.realness(h, None if asked is None else torch.cat([asked, asked]))  # (2B,)
        loss_d = F.softplus(-scores[: len(real)]).mean() + F.softplus(scores[len(real) :]).mean()
        weight = self.opts.aux_class_weight
        if weight > 0:  # the auxiliary classifier learns the real images' labels only
            loss_d = loss_d + weight * F.cross_entropy(d.class_logits(h[: len(real)]), labels)
        self.optimize(loss_d, d)  # the generator has no gradients: Adam leaves it
        # The generator: its images scored as real.
        self.optimizer.zero_grad(set_to_none=True)
        h = d.features(fake)  # (B, F)
        loss_g = F.softplus(-d.realness(h, asked)).mean()
        if weight > 0:  # ... and should name the asked class for the generator's images
            loss_g = loss_g + weight * F.cross_entropy(d.class_logits(h), labels)
        loss_g.backward()
        drop_grads(d)
        self.reduce_grads(g)
        self.optimizer.step()
        return loss_g.item()


def train_dcgan(opts: DCGANTrainOptions) -> dict[str, Any]:
    """Train, measure, write the checkpoint and card; returns the checkpoint's info."""
    return DCGANTrainer(opts).train()
