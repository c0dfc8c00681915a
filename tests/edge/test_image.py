"""Digit images through Pillow: PNG (every filter type, grey and RGB, with transparency), PGM (binary and plain),
JPEG, .npy; unreadable files named."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from edge_client.image import decode_image, read_digit
from server.errors import InvalidArgument


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def png_bytes(pixels: np.ndarray, filters: list[int]) -> bytes:
    """An 8-bit grey (H, W) or RGB (H, W, 3) PNG whose row y uses filter filters[y % len(filters)]."""
    color, channels = (0, 1) if pixels.ndim == 2 else (2, 3)
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, width * channels).astype(np.int32)
    raw = bytearray()
    prev = np.zeros(width * channels, dtype=np.int32)
    for y in range(height):
        kind, line = filters[y % len(filters)], rows[y]
        out = []
        for i, value in enumerate(line):
            a = int(line[i - channels]) if i >= channels else 0
            b, c = int(prev[i]), (int(prev[i - channels]) if i >= channels else 0)
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
            out.append((int(value) - pred) & 0xFF)
        raw += bytes([kind, *out])
        prev = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("filters", [[0], [1], [2], [3], [4], [0, 1, 2, 3, 4]])
def test_png_filters_decode_exactly(filters: list[int]) -> None:
    """Each PNG row filter (None, Sub, Up, Average, Paeth) decodes to the original grey levels."""
    pixels = np.random.default_rng(len(filters) * 7 + filters[0]).integers(0, 256, (8, 8))
    assert np.array_equal(np.round(decode_image(png_bytes(pixels, filters), "x") * 255), pixels)


def test_rgb_png_reads_as_grey() -> None:
    """An RGB PNG reads as the mean of its channels."""
    pixels = np.random.default_rng(1).integers(0, 256, (8, 8, 3))
    assert np.allclose(decode_image(png_bytes(pixels, [4]), "x"), pixels.mean(axis=2) / 255, atol=1e-6)


def test_png_pgm_and_npy_give_the_same_digit(tmp_path: Path) -> None:
    """The same digit as dark ink on paper (PNG, PGM P5, PGM P2) and as intensities (.npy) reads alike."""
    intensities = np.random.default_rng(2).integers(0, 17, (8, 8)).astype(np.float32)
    intensities[0, :] = intensities[-1, :] = intensities[:, 0] = intensities[:, -1] = 0  # no ink at the border
    paper = np.round(255 - intensities / 16 * 255).astype(np.uint8)
    (tmp_path / "d.png").write_bytes(png_bytes(paper, [0, 4]))
    (tmp_path / "d.pgm").write_bytes(b"P5\n# a comment\n8 8\n255\n" + paper.tobytes())
    (tmp_path / "p2.pgm").write_text("P2\n8 8\n255\n" + " ".join(str(v) for v in paper.reshape(-1)) + "\n")
    np.save(tmp_path / "d.npy", intensities)
    for name in ("d.png", "d.pgm", "p2.pgm", "d.npy"):
        assert np.allclose(read_digit(tmp_path / name), intensities, atol=0.04), name


def test_larger_image_is_averaged_down(tmp_path: Path) -> None:
    """A 32x32 image (4x4 blocks) reads as its 8x8 block means."""
    small = np.random.default_rng(3).integers(0, 256, (8, 8))
    (tmp_path / "big.png").write_bytes(png_bytes(np.kron(small, np.ones((4, 4), dtype=np.int64)), [2]))
    assert np.allclose(read_digit(tmp_path / "big.png", ink="light"), small / 255 * 16, atol=1e-4)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not an image at all", "not an image file"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 4, "not an image file|corrupt image"),
        (b"P5\n7 9\n255\n" + bytes(63), "image is 7x9"),
    ],
)
def test_bad_images_are_named(tmp_path: Path, data: bytes, message: str) -> None:
    """An unreadable or wrongly sized image is an InvalidArgument naming the file."""
    path = tmp_path / "bad.img"
    path.write_bytes(data)
    with pytest.raises(InvalidArgument, match=message) as info:
        read_digit(path)
    assert info.value.field == str(path)


def test_transparency_reads_as_white_paper(tmp_path: Path) -> None:
    """Ink drawn on a transparent background reads as ink on white paper (the background composited over white)."""
    from PIL import Image

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # transparent black everywhere...
    rgba[2:6, 3:5] = (0, 0, 0, 255)  # ...but an opaque black stroke
    Image.fromarray(rgba, "RGBA").save(tmp_path / "ink.png")
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[2:6, 3:5] = 16.0  # dark ink on paper, inverted to bright ink
    assert np.allclose(read_digit(tmp_path / "ink.png"), expected)


def test_jpeg_reads_like_the_png(tmp_path: Path) -> None:
    """A JPEG of a digit (lossy) reads within a few levels of the same digit as PNG."""
    from PIL import Image

    paper = (255 - np.kron(np.eye(8)[::-1] * 255, np.ones((4, 4)))).astype(np.uint8)  # 32x32, a dark diagonal
    Image.fromarray(paper, "L").save(tmp_path / "d.png")
    Image.fromarray(paper, "L").save(tmp_path / "d.jpg", quality=95)
    assert np.allclose(read_digit(tmp_path / "d.jpg"), read_digit(tmp_path / "d.png"), atol=0.5)


def test_a_huge_image_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    """An image over 4096 x 4096 pixels is an InvalidArgument naming its size (its header says it; nothing is
    decoded)."""
    from PIL import Image

    Image.new("L", (5000, 4000), 255).save(tmp_path / "huge.png")
    with pytest.raises(InvalidArgument, match=r"image is 5000x4000; at most 16777216 pixels"):
        read_digit(tmp_path / "huge.png")
