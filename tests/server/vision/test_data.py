"""The digits split: stratified, fixed by its seed, disjoint."""

from __future__ import annotations

import numpy as np
import pytest

from server.errors import InvalidArgument
from server.vision.data import recorded_split, split_digits


def test_split_is_stratified_and_disjoint() -> None:
    """Every digit keeps about a fifth of its images for testing, and no image is in both halves."""
    split = split_digits(0, 0.2)
    assert len(split.train_indices) + len(split.test_indices) == 1797
    assert not set(split.train_indices.tolist()) & set(split.test_indices.tolist())
    for digit in range(10):
        held_out = np.sum(split.labels[split.test_indices] == digit) / np.sum(split.labels == digit)
        assert abs(held_out - 0.2) < 0.01


def test_split_is_fixed_by_its_seed() -> None:
    """The same seed gives the same split; another seed another."""
    assert np.array_equal(split_digits(0).test_indices, split_digits(0).test_indices)
    assert not np.array_equal(split_digits(0).test_indices, split_digits(1).test_indices)


def test_recorded_split_rebuilds_the_test_images() -> None:
    """A split rebuilt from recorded indices holds the same test images."""
    split = split_digits(3)
    again = recorded_split(split.test_indices.tolist())
    assert np.array_equal(again.test[0], split.test[0])
    assert np.array_equal(again.train[1], split.train[1])


def test_bad_test_fraction_is_named() -> None:
    """A test fraction outside (0, 1) is an InvalidArgument naming it."""
    with pytest.raises(InvalidArgument) as info:
        split_digits(0, 1.5)
    assert str(info.value) == "test_fraction: must be in (0, 1), got 1.5"
