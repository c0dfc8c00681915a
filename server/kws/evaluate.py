"""Accuracy and confusion of the keyword spotter on one-second clips."""

from __future__ import annotations

import numpy as np
import torch

from server.classifier_metrics import Evaluation, score
from server.kws.model import KWSNet


@torch.no_grad()
def predict_logits(model: KWSNet, waves: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Logits (N, classes) of clips (N, 16000)."""
    was_training = model.training
    model.eval()
    out = [model(torch.from_numpy(waves[i : i + batch_size])).float() for i in range(0, len(waves), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, model.config.num_classes), dtype=np.float32)


def evaluate(model: KWSNet, waves: np.ndarray, labels: np.ndarray) -> Evaluation:
    return score(labels, predict_logits(model, waves).argmax(axis=1), model.config.num_classes)
