"""Accuracy of the text discriminator, overall and by where the windows came from."""

from __future__ import annotations

import numpy as np

from server.classifier_metrics import Evaluation, score
from server.textdisc.data import WindowSet
from server.textdisc.model import TextDiscriminator
from server.training import batched_logits


def predict_logits(model: TextDiscriminator, ids: np.ndarray) -> np.ndarray:
    """Logits (N, classes) of windows (N, T)."""
    return batched_logits(model, ids)


def evaluate(model: TextDiscriminator, data: WindowSet) -> tuple[Evaluation, dict[str, float]]:
    """Overall accuracy and confusion, and the accuracy on each group ("real", "T=0.7", ...)."""
    predicted = predict_logits(model, data.ids).argmax(axis=1)
    groups = np.asarray(data.groups)
    by_group = {
        g: round(float(np.mean(predicted[groups == g] == data.labels[groups == g])), 4)
        for g in sorted(set(data.groups))
    }
    return score(data.labels, predicted, model.config.num_classes), by_group
