"""8-bit mu-law companding (mu = 255): the WaveNet's 256 classes. NumPy only.

``encode`` quantizes float samples in [-1, 1] to codes 0..255 (0.0 is code 128); ``decode`` returns the centre
of each code's bin.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

MU = 255


def encode(audio: ArrayLike) -> np.ndarray:
    """Float samples (any shape) in [-1, 1] (clipped) -> uint8 codes."""
    x = np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    return np.rint((y + 1.0) * (MU / 2.0)).astype(np.uint8)


def decode(codes: ArrayLike) -> np.ndarray:
    """uint8 codes (any shape) -> float32 samples in [-1, 1]."""
    y = np.asarray(codes, dtype=np.float64) * (2.0 / MU) - 1.0
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(MU)) / MU).astype(np.float32)
