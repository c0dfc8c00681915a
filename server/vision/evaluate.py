"""Accuracy and confusion matrix of the digits CNN."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from server.vision.model import DigitsCNN


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    confusion: list[list[int]]  # confusion[true][predicted]
    count: int

    def to_dict(self) -> dict[str, object]:
        return {"accuracy": self.accuracy, "count": self.count, "confusion": self.confusion}


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> list[list[int]]:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix.tolist()


def score(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> Evaluation:
    accuracy = float(np.mean(labels == predicted)) if len(labels) else 0.0
    return Evaluation(accuracy, confusion_matrix(labels, predicted, num_classes), len(labels))


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


def format_confusion(confusion: list[list[int]], labels: list[str]) -> str:
    """The matrix as text: one row per true label, one column per predicted label."""
    width = max(3, *(len(str(v)) for row in confusion for v in row), *(len(label) for label in labels))
    head = " " * (width + 1) + " ".join(label.rjust(width) for label in labels) + "   <- predicted"
    rows = [
        f"{label.rjust(width)} " + " ".join(str(v).rjust(width) for v in row)
        for label, row in zip(labels, confusion, strict=True)
    ]
    return "\n".join([head, *rows])
