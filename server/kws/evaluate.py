"""Accuracy and confusion of the keyword spotter on one-second clips."""

from __future__ import annotations

import numpy as np

from server.classifier_metrics import Evaluation, score
from server.kws.model import KWSNet
from server.training import batched_logits


def predict_logits(model: KWSNet, waves: np.ndarray) -> np.ndarray:
    """Logits (N, classes) of clips (N, 16000)."""
    return batched_logits(model, waves, batch_size=128)


def evaluate(model: KWSNet, waves: np.ndarray, labels: np.ndarray) -> Evaluation:
    return score(labels, predict_logits(model, waves).argmax(axis=1), model.config.num_classes)
