"""An 8x8 digit image for the digits model from any image file Pillow reads (PNG, JPEG, PGM, ...) or a .npy array.

The model reads raw intensities in [0, 16] with the ink bright (scikit-learn's ``load_digits``). An image is read as
grey levels, scaled to [0, 16]; an image whose border is brighter than its middle is taken as dark ink on paper and
inverted (``ink`` overrides). An image larger than 8x8 whose sides are multiples of 8 is averaged down
by blocks. A .npy array of shape (8, 8) is taken as intensities already in [0, 16].
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from server.errors import InvalidArgument

MAX_PIXELS = 4096 * 4096  # larger images are refused before they are decoded in full
SIDE = 8
MAX_INTENSITY = 16.0
INKS = ("auto", "light", "dark")


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Any image Pillow reads (PNG, JPEG, PGM, BMP, GIF's first frame, ...) -> float grey levels in [0, 1]: the mean
    of the colour channels, transparency composited over white paper."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            if image.width * image.height > MAX_PIXELS:
                raise InvalidArgument(name, f"image is {image.width}x{image.height}; at most {MAX_PIXELS} pixels")
            image.load()
            if image.mode in ("I", "I;16", "I;16B", "F"):  # 16-bit or float greys: scale by the widest value
                wide = np.asarray(image, dtype=np.float32)
                top = 65535.0 if image.mode != "F" else max(1.0, float(wide.max()))
                return np.clip(wide / top, 0.0, 1.0)
            rgba = image.convert("RGBA")
    except InvalidArgument:
        raise
    except UnidentifiedImageError:
        raise InvalidArgument(name, "not an image file (PNG, JPEG, PGM, BMP, ...) nor a .npy array") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidArgument(name, f"corrupt image ({exc})") from None
    pixels = np.asarray(rgba, dtype=np.float32) / 255.0  # (H, W, 4)
    grey = pixels[..., :3].mean(axis=2)
    alpha = pixels[..., 3]
    return grey * alpha + (1.0 - alpha)


def to_digit(grey: np.ndarray, name: str, ink: str = "auto") -> np.ndarray:
    """Grey levels in [0, 1] (any multiple of 8 on each side) -> (8, 8) intensities in [0, 16], ink bright."""
    h, w = grey.shape
    if h % SIDE or w % SIDE:
        raise InvalidArgument(name, f"image is {w}x{h}; the digits model reads 8x8 (or a multiple of 8 on each side)")
    small = grey.reshape(SIDE, h // SIDE, SIDE, w // SIDE).mean(axis=(1, 3))
    if ink not in INKS:
        raise InvalidArgument("ink", f"unknown ink {ink!r}; known: {', '.join(INKS)}")
    if ink == "auto":
        border = np.concatenate([small[0], small[-1], small[1:-1, 0], small[1:-1, -1]]).mean()
        ink = "dark" if border > small[2:-2, 2:-2].mean() else "light"
    if ink == "dark":
        small = 1.0 - small
    return (small * MAX_INTENSITY).astype(np.float32)


def read_digit(path: Path, ink: str = "auto") -> np.ndarray:
    """(8, 8) float32 intensities in [0, 16] from an image file or a .npy array."""
    name = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(name, "no such file") from None
    except OSError as exc:
        raise InvalidArgument(name, f"not readable ({exc.strerror})") from None
    if data.startswith(b"\x93NUMPY"):
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise InvalidArgument(name, f"not a readable .npy array ({exc})") from None
        array = np.squeeze(np.asarray(array, dtype=np.float32))
        if array.shape != (SIDE, SIDE):
            raise InvalidArgument(name, f"array of shape {array.shape}; the digits model reads (8, 8)")
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > MAX_INTENSITY:
            raise InvalidArgument(name, "values must be finite intensities in [0, 16] (load_digits' range)")
        return array
    return to_digit(decode_image(data, name), name, ink)
