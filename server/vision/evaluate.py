"""Accuracy and confusion matrix of the digits CNN (the metrics themselves: ``server/classifier_metrics.py``)."""

from __future__ import annotations

import numpy as np

from server.classifier_metrics import Evaluation, score
from server.training import batched_logits
from server.vision.model import DigitsCNN


def predict(model: DigitsCNN, images: np.ndarray) -> np.ndarray:
    """Top labels (N,) of images (N, 8, 8)."""
    return batched_logits(model, images, batch_size=512).argmax(axis=1)


def evaluate(model: DigitsCNN, images: np.ndarray, labels: np.ndarray) -> Evaluation:
    return score(labels, predict(model, images), model.config.num_classes)
