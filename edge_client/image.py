"""An 8x8 digit image for the digits model from PNG, PGM or .npy, with NumPy and zlib only.

The model reads raw intensities in [0, 16] with the ink bright (scikit-learn's ``load_digits``). A PNG or PGM is
read as grey levels, scaled to [0, 16]; an image whose border is brighter than its middle is taken as dark ink on
paper and inverted (``ink`` overrides). An image larger than 8x8 whose sides are multiples of 8 is averaged down
by blocks. A .npy array of shape (8, 8) is taken as intensities already in [0, 16].
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from server.errors import InvalidArgument

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIDE = 8
MAX_INTENSITY = 16.0
INKS = ("auto", "light", "dark")


def decode_png(data: bytes, name: str) -> np.ndarray:
    """An 8-bit greyscale, grey+alpha, RGB or RGBA PNG (not interlaced) -> float grey levels in [0, 1]."""
    if not data.startswith(PNG_SIGNATURE):
        raise InvalidArgument(name, "not a PNG file (bad signature)")
    pos = len(PNG_SIGNATURE)
    header: tuple[int, ...] | None = None
    idat = bytearray()
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            raise InvalidArgument(name, "truncated PNG file")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise InvalidArgument(name, "not a readable PNG file (no IHDR chunk)")
    width, height, depth, color, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color)
    if channels is None or depth != 8 or interlace:
        raise InvalidArgument(
            name, f"unsupported PNG (color type {color}, {depth}-bit, interlace {interlace}); use 8-bit grey or RGB"
        )
    try:
        raw = zlib.decompress(bytes(idat))
    except zlib.error as exc:
        raise InvalidArgument(name, f"corrupt PNG data ({exc})") from None
    stride = width * channels
    if len(raw) != height * (stride + 1):
        raise InvalidArgument(name, "corrupt PNG data (wrong length)")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        kind, line = int(rows[y, 0]), rows[y, 1:].astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) & 0xFF
        elif kind in (1, 3, 4):  # Sub, Average, Paeth depend on the pixel to the left: one pass per byte
            cur = np.zeros(stride, dtype=np.int32)
            for i in range(stride):
                a = cur[i - channels] if i >= channels else 0
                b = prev[i]
                c = prev[i - channels] if i >= channels else 0
                if kind == 1:
                    pred = a
                elif kind == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (line[i] + pred) & 0xFF
        else:
            raise InvalidArgument(name, f"corrupt PNG data (filter type {kind})")
        out[y] = cur
        prev = cur
    pixels = out.reshape(height, width, channels).astype(np.float32) / 255.0
    grey = pixels[..., :3].mean(axis=2) if channels >= 3 else pixels[..., 0]
    if channels in (2, 4):  # alpha: composite over white paper
        alpha = pixels[..., -1]
        grey = grey * alpha + (1.0 - alpha)
    return grey


def decode_pgm(data: bytes, name: str) -> np.ndarray:
    """A binary (P5) or plain (P2) PGM -> float grey levels in [0, 1]."""
    magic = data[:2]
    if magic not in (b"P2", b"P5"):
        raise InvalidArgument(name, "not a PGM file (no P2/P5 header)")
    fields: list[int] = []
    pos = 2
    while len(fields) < 3:
        while pos < len(data) and (data[pos : pos + 1].isspace() or data[pos : pos + 1] == b"#"):
            if data[pos : pos + 1] == b"#":
                pos = data.find(b"\n", pos)
                if pos < 0:
                    raise InvalidArgument(name, "truncated PGM header")
            pos += 1
        start = pos
        while pos < len(data) and data[pos : pos + 1].isdigit():
            pos += 1
        if start == pos:
            raise InvalidArgument(name, "not a readable PGM header")
        fields.append(int(data[start:pos]))
    width, height, maxval = fields
    if not 0 < maxval < 65536 or width < 1 or height < 1:
        raise InvalidArgument(name, f"not a readable PGM header ({width}x{height}, maxval {maxval})")
    if magic == b"P5":
        body = data[pos + 1 :]
        dtype = np.dtype(">u2") if maxval > 255 else np.dtype(np.uint8)
        need = width * height * dtype.itemsize
        if len(body) < need:
            raise InvalidArgument(name, "truncated PGM data")
        values = np.frombuffer(body[:need], dtype=dtype).astype(np.float32)
    else:
        try:
            values = np.array(data[pos:].split(), dtype=np.float32)
        except ValueError:
            raise InvalidArgument(name, "not a readable plain PGM body") from None
        if len(values) < width * height:
            raise InvalidArgument(name, "truncated PGM data")
        values = values[: width * height]
    return values.reshape(height, width) / float(maxval)


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
    """(8, 8) float32 intensities in [0, 16] from a PNG, PGM or .npy file."""
    name = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(name, "no such file") from None
    except OSError as exc:
        raise InvalidArgument(name, f"not readable ({exc.strerror})") from None
    if data.startswith(PNG_SIGNATURE):
        return to_digit(decode_png(data, name), name, ink)
    if data[:2] in (b"P2", b"P5"):
        return to_digit(decode_pgm(data, name), name, ink)
    if data.startswith(b"\x93NUMPY"):
        import io

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
    raise InvalidArgument(name, "not a PNG, PGM or .npy file")
