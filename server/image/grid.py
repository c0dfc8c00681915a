"""Sample grids as PNG files: images (N, H, W) in [0, 1] tiled row by row, scaled up by whole pixels. Torch-free,
and no imaging library: a greyscale PNG is a zlib stream of filtered rows with three chunks around it."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from server.errors import InvalidArgument


def tile(images: np.ndarray, columns: int, scale: int = 1, pad: int = 1) -> np.ndarray:
    """Images (N, H, W) in [0, 1] as one uint8 picture, ``columns`` a row, each pixel ``scale`` x ``scale``, with
    ``pad`` pixels of white between them."""
    if images.ndim != 3 or len(images) == 0:
        raise InvalidArgument("images", f"give images as (N, H, W), got {images.shape}")
    if columns < 1 or scale < 1 or pad < 0:
        raise InvalidArgument("columns", "columns and scale must be at least 1, pad at least 0")
    n, h, w = images.shape
    rows = -(-n // columns)
    big = np.kron(np.clip(images, 0, 1), np.ones((scale, scale), dtype=np.float32))  # (N, H*s, W*s)
    hs, ws = h * scale, w * scale
    canvas = np.ones((rows * (hs + pad) + pad, columns * (ws + pad) + pad), dtype=np.float32)
    for i, image in enumerate(big):
        r, c = divmod(i, columns)
        top, left = pad + r * (hs + pad), pad + c * (ws + pad)
        canvas[top : top + hs, left : left + ws] = image
    return np.round(canvas * 255).astype(np.uint8)


def png_bytes(picture: np.ndarray) -> bytes:
    """A greyscale uint8 picture (H, W) as PNG bytes."""
    if picture.ndim != 2 or picture.dtype != np.uint8:
        raise InvalidArgument("picture", f"give a uint8 (H, W) picture, got {picture.dtype} {picture.shape}")
    height, width = picture.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in picture)  # filter type 0 (none) on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def write_png(path: Path, picture: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(picture))
    return path


def read_png(path: Path) -> np.ndarray:
    """A PNG this module wrote, back as its uint8 picture (H, W) (for the tests and the docs' checks)."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise InvalidArgument("png", f"{path} is not a PNG file")
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, width + 1)
    return rows[:, 1:].copy()
