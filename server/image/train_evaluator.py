"""Train the evaluator CNN on Fashion-MNIST's 60,000 training images; its test accuracy is on the standard 10,000.

AdamW with warm-up and cosine decay (:class:`server.training.TrainLoop`: resumable, ``torchrun``), label
smoothing, and light augmentation: random left-right flips and shifts of up to ``shift`` pixels. The options are
:class:`~server.image.options.EvaluatorTrainOptions`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from server.classifier_metrics import score
from server.image.evaluator import Evaluator, EvaluatorConfig
from server.image.options import EvaluatorTrainOptions
from server.image.trainer import Batch, ImageTrainer
from server.training import batched_logits


def augment(images: torch.Tensor, rng: np.random.Generator, shift: int, flip: bool) -> torch.Tensor:
    """Each image (B, H, W) flipped left-right with probability one half (if ``flip``) and moved by up to ``shift``
    pixels each way, zeros filling in."""
    b, h, w = images.shape
    if flip:
        flips = torch.from_numpy(rng.random(b) < 0.5).to(images.device)
        images = torch.where(flips[:, None, None], images.flip(-1), images)
    if shift == 0:
        return images
    padded = F.pad(images, (shift,) * 4)  # (B, H + 2s, W + 2s)
    dy, dx = (torch.from_numpy(rng.integers(0, 2 * shift + 1, b)).to(images.device) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, :]  # (B, 1, W)
    return padded[torch.arange(b, device=images.device)[:, None, None], rows, cols]  # (B, H, W)


def accuracy(model: Evaluator, images: np.ndarray, labels: np.ndarray) -> tuple[float, list[list[int]]]:
    """Accuracy and confusion matrix (rows true, columns predicted) of images (N, H, W)."""
    result = score(labels, batched_logits(model, images, batch_size=500).argmax(axis=1), model.config.num_classes)
    return result.accuracy, result.confusion


class EvaluatorTrainer(ImageTrainer):
    model: Evaluator
    opts: EvaluatorTrainOptions
    family = "evaluator"
    unit = "test accuracy (first 2,000)"

    def __init__(self, opts: EvaluatorTrainOptions) -> None:
        super().__init__(opts)
        config = EvaluatorConfig(
            num_classes=len(self.train_set.label_names), image_size=self.train_set.size, **opts.model
        )
        self.model = Evaluator(config).to(self.device)
        if self.device.type == "cpu":
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
        self._finish_setup()

    def _losses(self, batch: Batch) -> float:
        images, labels = batch
        images = augment(images, self.rng, self.opts.shift, self.opts.flip)
        loss = F.cross_entropy(self.model(images), labels, label_smoothing=self.opts.label_smoothing)
        self.optimize(loss, self.model)
        return loss.item()

    def _estimate(self) -> float:
        return accuracy(self.model, self.test_set.images[:2000], self.test_set.labels[:2000])[0]

    def _metrics(self) -> dict[str, Any]:
        test_acc, confusion = accuracy(self.model, self.test_set.images, self.test_set.labels)
        n = min(10000, len(self.train_set))
        train_acc, _ = accuracy(self.model, self.train_set.images[:n], self.train_set.labels[:n])
        return {"test_accuracy": round(test_acc, 4), "train_accuracy": round(train_acc, 4), "test_confusion": confusion}


def train_evaluator(opts: EvaluatorTrainOptions) -> dict[str, Any]:
    """Train, score on the test split, write the checkpoint and card; returns the checkpoint's info."""
    return EvaluatorTrainer(opts).train()
