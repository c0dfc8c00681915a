"""Images on the wire: an image stream's frames as PNG files or raw 8-bit pixels. No torch.

Every transport sends a frame the same way: its step, whether it is the model's last, its width, height and
channels (1: grey), the encoding, and the bytes. PNG is the default: a browser shows it as it is; RAW8 is the
pixels row by row, for a client that draws them itself.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from server.engine.streams import Picture
from server.errors import InvalidArgument

PNG = "png"
RAW8 = "raw8"
ENCODINGS = (PNG, RAW8)


def image_encoding(value: Any, name: str = "encoding") -> str:
    """A JSON request's ``encoding`` (absent or null: PNG)."""
    if value is None:
        return PNG
    if value not in ENCODINGS:
        shown = ", ".join(ENCODINGS)
        raise InvalidArgument(name, f"must be one of {shown}, got {value!r}")
    return str(value)


def encode_picture(picture: Picture, encoding: str) -> bytes:
    """The frame's pixels as wire bytes in ``encoding``."""
    if encoding == RAW8:
        return picture.pixels.tobytes()
    if encoding == PNG:
        out = io.BytesIO()
        # compress_level 1: the images are small and a frame is sent at once; level 6 costs several times more
        Image.fromarray(picture.pixels).save(out, format="PNG", compress_level=1)
        return out.getvalue()
    raise InvalidArgument("encoding", f"must be one of {', '.join(ENCODINGS)}, got {encoding!r}")


def frame_fields(picture: Picture, encoding: str) -> dict[str, Any]:
    """What every transport says of a frame besides its bytes."""
    height, width = picture.pixels.shape
    return {
        "step": picture.step,
        "final": picture.final,
        "width": width,
        "height": height,
        "channels": 1,
        "encoding": encoding,
    }
