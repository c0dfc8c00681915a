"""Accuracy and confusion matrix of any classifier, from true and predicted labels; NumPy only, no torch.

The model packages (vision, kws, textdisc) predict the labels and score them here, so the figures and the printed
matrix mean the same for every classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def format_confusion(confusion: list[list[int]], labels: list[str]) -> str:
    """The matrix as text: one row per true label, one column per predicted label."""
    width = max(3, *(len(str(v)) for row in confusion for v in row), *(len(label) for label in labels))
    head = " " * (width + 1) + " ".join(label.rjust(width) for label in labels) + "   <- predicted"
    rows = [
        f"{label.rjust(width)} " + " ".join(str(v).rjust(width) for v in row)
        for label, row in zip(labels, confusion, strict=True)
    ]
    return "\n".join([head, *rows])
