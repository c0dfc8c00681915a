"""Accuracy and confusion matrix."""

from __future__ import annotations

import numpy as np

from server.classifier_metrics import format_confusion, score


def test_confusion_matrix_counts_true_rows_and_predicted_columns() -> None:
    """confusion[true][predicted] counts each pair; accuracy is the diagonal's share."""
    result = score(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3)
    assert result.confusion == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert result.accuracy == 0.75
    assert result.count == 4


def test_format_confusion_labels_rows_and_columns() -> None:
    """The text matrix has a header of predicted labels and one row per true label."""
    text = format_confusion([[1, 1], [0, 2]], ["a", "b"])
    assert text.splitlines() == ["      a   b   <- predicted", "  a   1   1", "  b   0   2"]
