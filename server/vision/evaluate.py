"""Accuracy and confusion matrix of the digits CNN (the metrics themselves: ``server/classifier_metrics.py``)."""

from __future__ import annotations

import numpy as np
import torch

from server.classifier_metrics import Evaluation, score
from server.vision.model import DigitsCNN


@torch.no_grad()
def predict(model: DigitsCNN, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Top labels (N,) of images (N, 8, 8)."""
    device = next(model.parameters()).device
    out = [
        model(torch.from_numpy(images[i : i + batch_size]).to(device)).argmax(dim=1).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def evaluate(model: DigitsCNN, images: np.ndarray, labels: np.ndarray) -> Evaluation:
    was_training = model.training
    model.eval()
    result = score(labels, predict(model, images), model.config.num_classes)
    model.train(was_training)
    return result
