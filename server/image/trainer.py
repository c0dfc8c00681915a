"""What the image trainers share on top of :class:`server.training.TrainLoop`: the data, random batches, the
gradient averaging under torchrun, the resumable state, and the checkpoint's common metadata.

A family subclasses :class:`ImageTrainer`: it builds ``self.model`` (everything the checkpoint holds, in one
module) and ``self.optimizer``, calls ``_finish_setup``, and implements ``_losses`` (one optimizer step on a batch,
most often by :meth:`~ImageTrainer.optimize`; returns the figure the progress bar shows), ``_estimate`` and
``_metrics`` (the exact figures for the checkpoint and its card, the one :data:`server.image.cards.CARDS` names for
its ``family``). Every random draw comes from ``self.rng`` (NumPy, per process) or torch's generator, both saved in
the state file, so a resumed run continues exactly.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from server.checkpoint import read_meta
from server.errors import InvalidArgument
from server.image.cards import CARDS
from server.image.checkpoint import save_image_model
from server.image.data import ImageSet, load_images
from server.image.options import ImageTrainOptions
from server.provenance import stamp
from server.training import TrainLoop, init_distributed, state_path

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]  # images (B, H, W) in [0, 1], labels (B,)


class ImageTrainer(TrainLoop):
    """The loop of one image family; see the module's docstring."""

    opts: ImageTrainOptions
    loss_name, rate_name, unit, seen_key = "loss", "images_s", "", "images_seen"
    family = ""  # the checkpoint's family: its card, and the log

    def __init__(self, opts: ImageTrainOptions) -> None:
        super().__init__()
        opts.validate()
        self.opts = opts
        self.dist = init_distributed(opts.device)
        from server.device import resolve_device

        self.device = resolve_device(opts.device, self.dist.local_rank)
        self.amp = None  # float32: these models are small
        self.train_set: ImageSet = load_images(opts.dataset, "train", opts.train_limit)
        self.test_set: ImageSet = load_images(opts.dataset, "test")
        self.images = torch.from_numpy(self.prepare(self.train_set.images))  # (N, H, W)
        self.labels = torch.from_numpy(self.train_set.labels)  # (N,)
        torch.manual_seed(opts.seed)
        self.rng = np.random.default_rng([opts.seed, self.dist.rank])
        self.resume = self._read_resume_state() if opts.resume else None
        if self.resume is not None and self.resume["data_sha256"] != self.train_set.sha256:
            raise InvalidArgument(  # the command line's mistake: exit 2
                "resume",
                f"{state_path(opts.out)} was trained on other data; give that run's --dataset and --train-limit, or "
                "train afresh without --resume",
            )

    # -- for families ------------------------------------------------------------------------------------------
    def prepare(self, images: np.ndarray) -> np.ndarray:
        """The training images as the model reads them (binarised for the likelihood models)."""
        return images

    def _losses(self, batch: Batch) -> float:
        raise NotImplementedError

    def _metrics(self) -> dict[str, Any]:
        raise NotImplementedError

    def _card_info(self) -> dict[str, Any]:
        """The family's own entries in the checkpoint's metadata (labels, judge, ...)."""
        return {}

    # -- shared ------------------------------------------------------------------------------------------------
    def _finish_setup(self) -> None:
        """After the family built ``model`` and ``optimizer``: take back a saved state, wrap for torchrun."""
        if self.resume is not None:
            self._restore_loop_state(self.resume)
            self._restore_random_state(self.resume)
            self._restore_extra(self.resume)
        self.ddp: torch.nn.Module = self.model  # gradients are averaged by reduce_grads, not by a wrapper

    def _restore_extra(self, saved: dict[str, Any]) -> None:
        """A family's own state (the RBM's persistent chains)."""

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def reduce_grads(self, module: torch.nn.Module) -> None:
        """Under torchrun, average the gradients of ``module``'s parameters over the processes (before each
        optimizer step). The families step parts of one model in turn (a GAN's two players), which a
        DistributedDataParallel wrapper of the whole model would not follow; every process runs the same code, so
        the same gradients exist on each."""
        if self.dist.world == 1:
            return
        for p in module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.dist.world

    def optimize(self, loss: torch.Tensor, module: torch.nn.Module) -> None:
        """One optimizer step on ``loss`` for ``module``'s parameters (the whole model, or one player)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.reduce_grads(module)
        self.optimizer.step()

    def batch(self) -> Batch:
        """``batch_size`` random training images (with replacement across steps, without within a batch)."""
        idx = torch.from_numpy(self.rng.choice(len(self.labels), self.opts.batch_size, replace=False))
        return self.images[idx].to(self.device), self.labels[idx].to(self.device)

    def _step(self) -> float:
        t0 = time.monotonic()
        self._set_lr()
        value = self._losses(self.batch())
        self.step += 1
        self.seen += self.opts.batch_size * self.dist.world
        self.elapsed += time.monotonic() - t0
        return value

    def _save_resume_state(self) -> None:
        random_state = self._random_state()  # on every rank: it gathers them
        if not self.dist.main:
            return
        self._write_resume_state(
            {
                **self._loop_state(),
                "data_sha256": self.train_set.sha256,
                **random_state,
                **self._extra_state(),
            }
        )

    def _finish(self) -> dict[str, Any]:
        """The exact figures, then the checkpoint and its card."""
        self.model.eval()
        metrics = self._metrics()
        train, test = self.train_set, self.test_set
        info = {
            "data": {
                "dataset": self.opts.dataset,
                "source": train.source,
                "licence": train.licence,
                "train_sha256": train.sha256,
                "test_sha256": test.sha256,
                "train": len(train),
                "test": len(test),
                "image_size": train.size,
            },
            "labels": list(train.label_names),
            "training": self._provenance().to_dict(),
            "metrics": metrics,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            **self._card_info(),
            **stamp(),
        }
        save_image_model(self.checkpoint_out, self.model, info)
        info = read_meta(self.checkpoint_out)  # the card is written from what the checkpoint holds, as a rewrite would
        CARDS[self.family](info).write(self.checkpoint_out)
        log.info("%s: %s; checkpoint %s", self.family, metrics, self.checkpoint_out)
        return info
