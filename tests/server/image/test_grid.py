"""Sample grids: the tiling and the PNG writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from server.image.grid import read_png, tile, write_png


def test_tile_places_each_image_in_its_cell() -> None:
    """Five 2x2 images, three a row, scaled twice, padded by one white pixel."""
    images = np.stack([np.full((2, 2), i / 4, np.float32) for i in range(5)])
    picture = tile(images, columns=3, scale=2, pad=1)
    assert picture.shape == (2 * 5 + 1, 3 * 5 + 1)
    assert picture[1, 1] == 0 and picture[1 + 5, 1 + 5] == round(4 / 4 * 255)
    assert picture[6, 11] == 255  # the empty sixth cell stays white


def test_png_round_trip(tmp_path: Path) -> None:
    """A written PNG reads back as the same picture, with the PNG signature."""
    picture = (np.arange(35 * 17) % 256).astype(np.uint8).reshape(17, 35)
    path = write_png(tmp_path / "g.png", picture)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(read_png(path), picture)
