"""scikit-learn's bundled 8x8 digits with a fixed, stratified train/test split.

The split is a function of the seed and the test fraction; the checkpoint also
records the test indices themselves, so evaluation reads the same images even
if a later scikit-learn splits differently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from server.errors import InvalidArgument

SOURCE = "sklearn.datasets.load_digits"
LABELS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class DigitsSplit:
    images: np.ndarray  # (N, 8, 8) float32, 0..16
    labels: np.ndarray  # (N,) int64
    train_indices: np.ndarray  # (N_train,) int64, sorted
    test_indices: np.ndarray  # (N_test,) int64, sorted
    sha256: str  # of the images and labels

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self.images[self.train_indices], self.labels[self.train_indices]

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return self.images[self.test_indices], self.labels[self.test_indices]


def load_digits_data() -> tuple[np.ndarray, np.ndarray, str]:
    """All 1,797 images (N, 8, 8) float32, labels (N,) int64 and their sha256."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)
    labels = np.asarray(bunch.target, dtype=np.int64)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    return images, labels, digest


def split_digits(seed: int = 0, test_fraction: float = 0.2) -> DigitsSplit:
    """Stratified split: the same fraction of every digit is held out."""
    if not 0 < test_fraction < 1:
        raise InvalidArgument("test_fraction", f"must be in (0, 1), got {test_fraction}")
    images, labels, digest = load_digits_data()
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_test = round(len(members) * test_fraction)
        test.append(rng.permutation(members)[:n_test])
    test_indices = np.sort(np.concatenate(test))
    train_indices = np.setdiff1d(np.arange(len(labels)), test_indices)
    return DigitsSplit(images, labels, train_indices, test_indices, digest)


def recorded_split(test_indices: list[int]) -> DigitsSplit:
    """The split a checkpoint recorded, by its test indices."""
    images, labels, digest = load_digits_data()
    test = np.asarray(sorted(test_indices), dtype=np.int64)
    if len(test) == 0 or test[0] < 0 or test[-1] >= len(labels):
        raise InvalidArgument("test_indices", f"must index the {len(labels)} images")
    return DigitsSplit(images, labels, np.setdiff1d(np.arange(len(labels)), test), test, digest)
