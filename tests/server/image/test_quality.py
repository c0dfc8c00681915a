"""The quality figures in a judge's feature space."""

from __future__ import annotations

import numpy as np
import pytest

from server.image.data import load_digits8
from server.image.options import DEFAULT_JUDGES
from server.image.quality import (
    class_score,
    frechet_distance,
    load_judge,
    measure,
    nearest_distances,
    one_nn_accuracy,
)


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift() -> None:
    """Same covariance, means 3 apart in one direction: about 9."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 4))
    b = rng.normal(size=(20000, 4)) + np.array([3.0, 0, 0, 0])
    assert frechet_distance(a, b) == pytest.approx(9.0, abs=0.15)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_class_score_runs_from_one_to_the_number_of_classes() -> None:
    """Identical predictions score 1; confident, balanced ones score the number of classes."""
    assert class_score(np.full((10, 4), 0.25)) == pytest.approx(1.0)
    assert class_score(np.eye(4)[np.arange(40) % 4]) == pytest.approx(4.0, rel=1e-6)


def test_one_nn_tells_apart_separated_sets_and_not_mixed_ones() -> None:
    """Far apart: accuracy 1; drawn from one distribution: about one half."""
    rng = np.random.default_rng(0)
    assert one_nn_accuracy(rng.normal(size=(100, 3)), rng.normal(size=(100, 3)) + 50) == 1.0
    assert 0.4 < one_nn_accuracy(rng.normal(size=(500, 3)), rng.normal(size=(500, 3))) < 0.6


def test_a_copy_of_the_training_data_is_at_distance_zero() -> None:
    """Memorised images have their nearest training image at distance 0."""
    train = np.random.default_rng(0).random((50, 8, 8))
    assert np.allclose(nearest_distances(train[:10], train), 0.0, atol=1e-2)  # float32 arithmetic


def test_measure_real_data_against_itself_looks_ideal() -> None:
    """Held-out real digits "generated": the figures sit at their real-data references."""
    judge = load_judge(DEFAULT_JUDGES["digits"])
    train, test = load_digits8("train"), load_digits8("test")
    report = measure(judge, test.images[:150], train.images, test.images[150:], test.labels[:150], test.labels[150:])
    assert report.samples == 150
    assert report.class_agreement is not None and report.class_agreement > 0.9
    assert report.class_score == pytest.approx(report.class_score_ceiling, rel=0.15)
    assert report.one_nn < 0.7
    assert report.nearest_train_generated == pytest.approx(report.nearest_train_test, rel=0.2)
