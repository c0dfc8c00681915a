"""The image generators' data: Fashion-MNIST, scikit-learn's 8x8 digits, binarised copies of both, and photos for
Deep Dream. Everything is read at run time from what the system or the Python packages ship; nothing is committed.

Every image set is an :class:`ImageSet`: float32 images (N, H, W) in [0, 1], int64 labels (N,), the label names,
a sha256 of the pixels and labels, and where it came from with its licence (the model cards quote both).

- Fashion-MNIST: Debian's ``dataset-fashion-mnist`` installs the four IDX files (60,000 training and 10,000 test
  images of 28x28, 10 classes, MIT licence). The standard test split is the test split.
- The 8x8 digits: ``sklearn.datasets.load_digits``, split as the digits CNN splits them
  (:func:`server.vision.data.split_digits`), so the digits CNN judges the 8x8 generators on images it never saw.
- Binarised images (the RBM, and every likelihood on binarised data) are thresholded at one half:
  :func:`binarise`. A fixed subset of a test split (:func:`fixed_subset`) keeps expensive likelihoods comparable.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.errors import InvalidArgument

# Where Debian's dataset-fashion-mnist puts the files; ANTIPHON_FASHION_MNIST names another folder with the same four.
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_ENV = "ANTIPHON_FASHION_MNIST"
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_SOURCE = "Fashion-MNIST (Zalando Research), Debian package dataset-fashion-mnist"
FASHION_LICENCE = "MIT (Expat), copyright 2017 Zalando SE"
DIGITS_SOURCE = "sklearn.datasets.load_digits (the UCI optical recognition of handwritten digits test set)"
DIGITS_LICENCE = "CC BY 4.0 (UCI Machine Learning Repository), shipped with scikit-learn (BSD-3-Clause)"
DIGITS_LABELS = tuple(str(d) for d in range(10))
DATASETS = ("fashion", "digits")


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # (N, H, W) float32 in [0, 1]
    labels: np.ndarray  # (N,) int64
    label_names: tuple[str, ...]
    sha256: str  # of the pixels as stored (uint8 or float32) and the labels
    source: str
    licence: str

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> int:
        """The images' side: 28 or 8."""
        return int(self.images.shape[-1])

    def take(self, indices: np.ndarray) -> ImageSet:
        """The images at ``indices``, with this set's names (the hash is of the subset)."""
        images, labels = self.images[indices], self.labels[indices]
        return ImageSet(images, labels, self.label_names, _digest(images, labels), self.source, self.licence)


def _digest(images: np.ndarray, labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).tobytes() + labels.astype(np.int64).tobytes()).hexdigest()


# -- Fashion-MNIST -----------------------------------------------------------------------------------------------
def fashion_dir() -> Path:
    return Path(os.environ.get(FASHION_ENV, FASHION_DIR))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as its uint8 array: (N,) labels or (N, rows, cols) images."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InvalidArgument(
            "data", f"{path} does not exist: install Debian's dataset-fashion-mnist (make deps) or set {FASHION_ENV}"
        ) from None
    except (OSError, EOFError) as exc:
        raise InvalidArgument("data", f"cannot read {path}: {exc}") from None
    if len(raw) < 4:
        raise InvalidArgument("data", f"{path} is not an IDX file")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 3:
        raise InvalidArgument("data", f"{path} is not an IDX file of unsigned bytes")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise InvalidArgument("data", f"{path} holds {body.size} bytes for a shape of {shape}")
    return body.reshape(shape)


def load_fashion(split: str, limit: int | None = None) -> ImageSet:
    """Fashion-MNIST's ``train`` (60,000) or ``test`` (10,000) images, the first ``limit`` of them if given."""
    if split not in FASHION_FILES:
        raise InvalidArgument("split", f"must be train or test, got {split!r}")
    folder = fashion_dir()
    image_file, label_file = FASHION_FILES[split]
    raw = read_idx(folder / image_file)  # (N, 28, 28) uint8
    labels = read_idx(folder / label_file).astype(np.int64)  # (N,)
    if raw.ndim != 3 or len(raw) != len(labels):
        raise InvalidArgument("data", f"{folder}: {len(raw)} images for {len(labels)} labels")
    if limit is not None:
        raw, labels = raw[:limit], labels[:limit]
    digest = hashlib.sha256(raw.tobytes() + labels.tobytes()).hexdigest()
    images = raw.astype(np.float32) / 255.0  # (N, 28, 28)
    return ImageSet(images, labels, FASHION_LABELS, digest, FASHION_SOURCE, FASHION_LICENCE)


# -- the 8x8 digits --------------------------------------------------------------------------------------------
def load_digits8(split: str, seed: int = 0, test_fraction: float = 0.2) -> ImageSet:
    """The 8x8 digits' ``train`` (1,438) or ``test`` (359) images of the digits CNN's stratified split, in [0, 1]."""
    from server.vision.data import split_digits
    from server.vision.model import MAX_INTENSITY

    if split not in ("train", "test"):
        raise InvalidArgument("split", f"must be train or test, got {split!r}")
    whole = split_digits(seed, test_fraction)
    images, labels = whole.train if split == "train" else whole.test
    images = images / MAX_INTENSITY  # (N, 8, 8) in [0, 1]
    return ImageSet(images, labels, DIGITS_LABELS, _digest(images, labels), DIGITS_SOURCE, DIGITS_LICENCE)


def load_images(dataset: str, split: str, limit: int | None = None) -> ImageSet:
    """A data set by name: ``fashion`` or ``digits``."""
    if dataset == "fashion":
        return load_fashion(split, limit)
    if dataset == "digits":
        data = load_digits8(split)
        return data if limit is None else data.take(np.arange(min(limit, len(data))))
    raise InvalidArgument("dataset", f"must be one of {', '.join(DATASETS)}, got {dataset!r}")


# -- binarised images and fixed subsets ------------------------------------------------------------------------
def binarise(images: np.ndarray) -> np.ndarray:
    """Pixels at one half or more are 1, the others 0 (float32, same shape). Deterministic, so a likelihood on
    binarised data is of fixed data."""
    return (images >= 0.5).astype(np.float32)


def fixed_subset(n: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` sorted indices of ``n`` items, the same for the same seed (all of them if ``count >= n``)."""
    if count >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))


# -- photos for Deep Dream -------------------------------------------------------------------------------------
PHOTOS = ("china", "flower", "camera", "astronaut", "coffee", "chelsea", "moon", "coins")
_SKLEARN_PHOTOS = ("china", "flower")


def load_photo(name: str) -> np.ndarray:
    """A photo the Python packages ship, grey (H, W) float32 in [0, 1]: ``china`` and ``flower`` from
    scikit-learn, the others from scikit-image's bundled data."""
    if name not in PHOTOS:
        raise InvalidArgument("photo", f"must be one of {', '.join(PHOTOS)}, got {name!r}")
    if name in _SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        pixels = np.asarray(load_sample_image(f"{name}.jpg"))
    else:
        try:
            import skimage.data
        except ImportError:
            raise InvalidArgument("photo", f"{name} comes with scikit-image, which is not installed") from None
        pixels = np.asarray(getattr(skimage.data, name)())
    grey = pixels.astype(np.float32)
    if grey.ndim == 3:  # RGB(A) -> luma (ITU-R BT.601)
        grey = grey[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    scale = 255.0 if pixels.dtype == np.uint8 else max(float(grey.max()), 1e-6)
    return np.clip(grey / scale, 0.0, 1.0)  # (H, W)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """A grey image (H, W) area-averaged and centre-cropped to a square (size, size)."""
    h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = image[top : top + side, left : left + side]
    edges = np.linspace(0, side, size + 1).astype(int)
    rows = np.add.reduceat(square, edges[:-1], axis=0) / np.diff(edges)[:, None]  # (size, side)
    return (np.add.reduceat(rows, edges[:-1], axis=1) / np.diff(edges)[None, :]).astype(np.float32)  # (size, size)
