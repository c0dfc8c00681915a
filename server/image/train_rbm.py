"""Train the Bernoulli RBM on binarised images by contrastive divergence: CD-k from the data, or persistent CD
(Tieleman 2008: the negative phase's chains carry on from step to step). The gradient of the log-likelihood is
<v h>_data - <v h>_model; the model's expectation comes from the chains' states after k Gibbs steps. SGD with
momentum and an L2 penalty on the weights; the learning rate warms up and decays as every trainer's does.

The card's figure is the test NLL with log Z by annealed importance sampling
(:func:`server.image.likelihood.rbm_log_partition_ais`), and, for an RBM with few enough hidden units, the exact
log Z beside it. The options are :class:`~server.image.options.RBMTrainOptions`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from server.image.data import binarise
from server.image.likelihood import rbm_log_partition_ais, rbm_log_partition_exact, rbm_nll
from server.image.options import RBMTrainOptions
from server.image.rbm import BernoulliRBM, RBMConfig
from server.image.trainer import Batch, ImageTrainer

EXACT_HIDDEN = 20  # up to this many hidden units, the card also has the exact log Z


def gibbs(rbm: BernoulliRBM, v: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` block Gibbs steps v -> h -> v from binary states (B, V), with torch's generator."""
    for _ in range(steps):
        h = torch.bernoulli(rbm.hidden_probs(v))  # (B, H)
        v = torch.bernoulli(rbm.visible_probs(h))  # (B, V)
    return v


class RBMTrainer(ImageTrainer):
    model: BernoulliRBM
    opts: RBMTrainOptions
    family = "rbm"
    loss_name, unit = "recon", "nats per image (one-step reconstruction, test)"

    def __init__(self, opts: RBMTrainOptions) -> None:
        super().__init__(opts)
        self.model = BernoulliRBM(RBMConfig(image_size=self.train_set.size, **opts.model)).to(self.device)
        data = self.images.flatten(1)  # (N, V)
        mean = data.mean(dim=0).clamp(0.01, 0.99)
        with torch.no_grad():  # the visible biases start at the pixels' log odds (Hinton's practical guide)
            self.model.visible_bias.copy_(torch.log(mean) - torch.log1p(-mean))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=opts.lr, momentum=opts.momentum)
        self.chains = torch.bernoulli(mean.expand(opts.batch_size, -1)).to(self.device)  # (B, V) persistent
        self._finish_setup()
        self.test_binary = binarise(self.test_set.images).reshape(len(self.test_set), -1)
        self.train_binary = self.images.flatten(1).numpy()

    def prepare(self, images: np.ndarray) -> np.ndarray:
        return binarise(images)

    def _extra_state(self) -> dict[str, Any]:
        chains = self.chains.cpu()
        if self.dist.world > 1:
            gathered: list[Any] = [None] * self.dist.world
            dist.all_gather_object(gathered, chains)
            return {"chains": gathered}
        return {"chains": [chains]}

    def _restore_extra(self, saved: dict[str, Any]) -> None:
        self.chains = saved["chains"][self.dist.rank % len(saved["chains"])].to(self.device)

    def _losses(self, batch: Batch) -> float:
        images, _ = batch
        rbm, opts = self.model, self.opts
        with torch.no_grad():
            v_data = images.flatten(1)  # (B, V)
            h_data = rbm.hidden_probs(v_data)  # (B, H)
            if opts.persistent:
                self.chains = gibbs(rbm, self.chains, opts.k)
                v_model = self.chains
            else:
                v_model = gibbs(rbm, v_data, opts.k)
            h_model = rbm.hidden_probs(v_model)
            n = len(v_data)
            rbm.weight.grad = -(v_data.T @ h_data - v_model.T @ h_model) / n + opts.weight_decay * rbm.weight
            rbm.visible_bias.grad = -(v_data - v_model).mean(dim=0)
            rbm.hidden_bias.grad = -(h_data - h_model).mean(dim=0)
            recon = F.binary_cross_entropy(rbm.visible_probs(h_data), v_data, reduction="sum") / n
        self.reduce_grads(rbm)
        self.optimizer.step()
        return recon.item()

    @torch.no_grad()
    def _estimate(self) -> float:
        v = torch.from_numpy(self.test_binary).to(self.device)
        probs = self.model.visible_probs(self.model.hidden_probs(v))
        return float(F.binary_cross_entropy(probs, v, reduction="sum") / len(v))

    def _metrics(self) -> dict[str, Any]:
        rbm = self.model.cpu()
        ais = rbm_log_partition_ais(
            rbm, self.train_binary.mean(axis=0), runs=self.opts.ais_runs, betas=self.opts.ais_betas, seed=0
        )
        exact = rbm_log_partition_exact(rbm) if rbm.config.hidden <= EXACT_HIDDEN else None
        self.model.to(self.device)
        return {
            "test_nll": round(rbm_nll(rbm, self.test_binary, ais.log_z), 3),
            "train_nll": round(rbm_nll(rbm, self.train_binary, ais.log_z), 3),
            "ais": {k: round(v, 4) if isinstance(v, float) else v for k, v in vars(ais).items()},
            "exact_log_z": None if exact is None else round(exact, 4),
        }


def train_rbm(opts: RBMTrainOptions) -> dict[str, Any]:
    return RBMTrainer(opts).train()
