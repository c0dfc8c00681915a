"""The image data: IDX files, Fashion-MNIST's splits, the 8x8 digits' split, binarising, photos."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from server.errors import InvalidArgument
from server.image.data import (
    FASHION_LABELS,
    binarise,
    fixed_subset,
    load_digits8,
    load_fashion,
    load_photo,
    read_idx,
    resize,
)
from server.vision.data import split_digits


def _write_idx(path: Path, array: np.ndarray) -> Path:
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
    return path


def test_read_idx_gives_the_array_back(tmp_path: Path) -> None:
    """An IDX file of unsigned bytes reads back as its array, shape and values."""
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(_write_idx(tmp_path / "a.gz", array)), array)


def test_read_idx_refuses_a_short_body(tmp_path: Path) -> None:
    """A file holding fewer bytes than its header's shape is named."""
    path = tmp_path / "short.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBBI", 0, 8, 1, 10) + b"\x00" * 4)
    with pytest.raises(InvalidArgument) as info:
        read_idx(path)
    assert str(info.value) == f"data: {path} holds 4 bytes for a shape of (10,)"


def test_a_missing_data_folder_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the Debian package's files the error names it."""
    monkeypatch.setenv("ANTIPHON_FASHION_MNIST", str(tmp_path))
    with pytest.raises(InvalidArgument) as info:
        load_fashion("test")
    assert "install Debian's dataset-fashion-mnist" in str(info.value)


def test_fashion_mnist_has_its_standard_splits() -> None:
    """60,000 training and 10,000 test images of 28x28 in [0, 1], 10 balanced classes."""
    test = load_fashion("test")
    assert test.images.shape == (10000, 28, 28) and test.images.dtype == np.float32
    assert test.images.min() == 0.0 and test.images.max() == 1.0
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert test.label_names == FASHION_LABELS
    assert len(load_fashion("train", limit=100)) == 100
    assert "MIT" in test.licence


def test_the_digits_split_is_the_digits_cnns() -> None:
    """The 8x8 test images are the digits CNN's held-out ones, scaled to [0, 1]."""
    test = load_digits8("test")
    images, labels = split_digits(0, 0.2).test
    assert np.array_equal(test.images, images / 16.0)
    assert np.array_equal(test.labels, labels)


def test_binarise_thresholds_at_one_half() -> None:
    """Pixels at 0.5 or more become 1."""
    assert binarise(np.array([0.0, 0.49, 0.5, 1.0])).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_a_fixed_subset_is_fixed_by_its_seed() -> None:
    """Same seed, same sorted indices; all of them when asked for more than there are."""
    assert np.array_equal(fixed_subset(10000, 2000, 0), fixed_subset(10000, 2000, 0))
    assert not np.array_equal(fixed_subset(10000, 2000, 0), fixed_subset(10000, 2000, 1))
    assert np.all(np.diff(fixed_subset(10000, 2000)) > 0)
    assert fixed_subset(5, 10).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("name", ["china", "camera"])
def test_photos_are_grey_and_in_range(name: str) -> None:
    """A shipped photo reads as a grey (H, W) image in [0, 1]; resized, it is square."""
    pytest.importorskip("skimage") if name == "camera" else None
    photo = load_photo(name)
    assert photo.ndim == 2 and photo.min() >= 0.0 and photo.max() <= 1.0
    assert resize(photo, 64).shape == (64, 64)


def test_an_unknown_photo_is_named() -> None:
    with pytest.raises(InvalidArgument) as info:
        load_photo("mona")
    assert str(info.value).startswith("photo: must be one of china, flower,")
