"""Image files on the device, through Pillow: an 8x8 digit for the digits model, a square grey image for the image
discriminator, and grids of generated images written as PNG.

The digits model reads raw intensities in [0, 16] with the ink bright (scikit-learn's ``load_digits``). An image is
read as grey levels, scaled to [0, 16]; an image whose border is brighter than its middle is taken as dark ink on
paper and inverted (``ink`` overrides). An image larger than 8x8 whose sides are multiples of 8 is averaged down
by blocks. A .npy array of shape (8, 8) is taken as intensities already in [0, 16].

The image models read and write grey levels in [0, 1] as they are (0 black: Fashion-MNIST's light garment on black,
never inverted). An image of the model's side, or of a whole multiple of it (a sample written with ``--scale``), is
averaged down by blocks, which undoes the scaling exactly; any other size is resized by Pillow's box filter. A .npy
array of the model's shape is taken as levels in [0, 1]. Written images are 8-bit grey PNG: level round(255 x).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np

from server.errors import InvalidArgument

MAX_PIXELS = 4096 * 4096  # larger images are refused before they are decoded in full
SIDE = 8
MAX_INTENSITY = 16.0
INKS = ("auto", "light", "dark")


def load_npy(data: bytes, name: str) -> np.ndarray:
    """A .npy file's bytes -> float32; an array of anything but real numbers (strings, complex) is refused."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidArgument(name, f"not a readable .npy array ({exc})") from None
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or array.dtype == bool):
        raise InvalidArgument(name, f"a .npy array of {array.dtype} values; give real numbers")
    return np.asarray(array, dtype=np.float32)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Any image Pillow reads (PNG, JPEG, PGM, BMP, GIF's first frame, ...) -> float grey levels in [0, 1]: the mean
    of the colour channels, transparency composited over white paper."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Pillow warns of a large image that MAX_PIXELS (below Pillow's own error size) refuses just after
        with (
            warnings.catch_warnings(action="ignore", category=Image.DecompressionBombWarning),
            Image.open(io.BytesIO(data)) as image,  # reads the header only
        ):
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
    except Image.DecompressionBombError as exc:  # Pillow refuses a header of over twice its own limit at open
        raise InvalidArgument(name, f"image too large, at most {MAX_PIXELS} pixels ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
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
        array = np.squeeze(load_npy(data, name))
        if array.shape != (SIDE, SIDE):
            raise InvalidArgument(name, f"array of shape {array.shape}; the digits model reads (8, 8)")
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > MAX_INTENSITY:
            raise InvalidArgument(name, "values must be finite intensities in [0, 16] (load_digits' range)")
        return array
    return to_digit(decode_image(data, name), name, ink)


# -- the image models (generators, discriminator) ----------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(str(path), "no such file") from None
    except OSError as exc:
        raise InvalidArgument(str(path), f"not readable ({exc.strerror})") from None


def read_image(path: Path, side: int) -> np.ndarray:
    """A (side, side) float32 image of grey levels in [0, 1] from an image file or a .npy array."""
    name = str(path)
    data = _read_bytes(path)
    if data.startswith(b"\x93NUMPY"):
        array = np.squeeze(load_npy(data, name))
        if array.shape != (side, side):
            raise InvalidArgument(name, f"array of shape {array.shape}; the model reads ({side}, {side})")
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise InvalidArgument(name, "values must be finite grey levels in [0, 1]")
        return array
    grey = decode_image(data, name)
    h, w = grey.shape
    if h % side == 0 and w % side == 0 and h == w:
        return grey.reshape(side, h // side, side, w // side).mean(axis=(1, 3)).astype(np.float32)
    from PIL import Image

    small = Image.fromarray(grey.astype(np.float32)).resize((side, side), Image.Resampling.BOX)
    return np.clip(np.asarray(small, dtype=np.float32), 0.0, 1.0)


def grid_size(count: int, columns: int, side: int, scale: int = 1, pad: int = 1) -> tuple[int, int]:
    """(width, height) of :func:`tile`'s picture of ``count`` images of ``side`` x ``side``."""
    if count == 1:
        return side * scale, side * scale
    columns = min(columns, count)
    rows = -(-count // columns)
    cell = side * scale + pad
    return columns * cell + pad, rows * cell + pad


def tile(images: np.ndarray, columns: int, scale: int = 1, pad: int = 1) -> np.ndarray:
    """Images (N, H, W) in [0, 1] as one uint8 picture, ``columns`` a row, each pixel ``scale`` x ``scale``, with
    ``pad`` white pixels between and around them (the server's grid, ``server.image.grid.tile``); one image alone is
    the image, without a border."""
    big = np.kron(np.clip(images, 0.0, 1.0), np.ones((scale, scale), dtype=np.float32))  # (N, H*s, W*s)
    if len(big) == 1:
        return np.round(big[0] * 255).astype(np.uint8)
    n, hs, ws = big.shape
    columns = min(columns, n)
    rows = -(-n // columns)
    canvas = np.ones((rows * (hs + pad) + pad, columns * (ws + pad) + pad), dtype=np.float32)
    for i, image in enumerate(big):
        r, c = divmod(i, columns)
        top, left = pad + r * (hs + pad), pad + c * (ws + pad)
        canvas[top : top + hs, left : left + ws] = image
    return np.round(canvas * 255).astype(np.uint8)


def write_png(path: Path, picture: np.ndarray, flag: str = "--out") -> None:
    """A uint8 (H, W) picture as an 8-bit grey PNG; a folder that does not exist or cannot be written names
    ``flag``."""
    from PIL import Image

    if not path.parent.is_dir():
        raise InvalidArgument(flag, f"{path.parent} is not a folder")
    try:
        Image.fromarray(picture).save(path, format="PNG")
    except OSError as exc:
        raise InvalidArgument(flag, f"cannot write {path} ({exc.strerror or exc})") from None
