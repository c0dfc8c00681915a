"""Accuracy of the text discriminator, overall and by where the windows came from."""

from __future__ import annotations

import numpy as np
import torch

from server.classifier_metrics import Evaluation, score
from server.textdisc.data import WindowSet
from server.textdisc.model import TextDiscriminator


@torch.no_grad()
def predict_logits(model: TextDiscriminator, ids: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits (N, classes) of windows (N, T)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [
        model(torch.from_numpy(ids[i : i + batch_size]).to(device)).float().cpu()
        for i in range(0, len(ids), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, model.config.num_classes), dtype=np.float32)


def evaluate(model: TextDiscriminator, data: WindowSet) -> tuple[Evaluation, dict[str, float]]:
    """Overall accuracy and confusion, and the accuracy on each group ("real", "T=0.7", ...)."""
    predicted = predict_logits(model, data.ids).argmax(axis=1)
    groups = np.asarray(data.groups)
    by_group = {
        g: round(float(np.mean(predicted[groups == g] == data.labels[groups == g])), 4)
        for g in sorted(set(data.groups))
    }
    return score(data.labels, predicted, model.config.num_classes), by_group
