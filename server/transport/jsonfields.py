"""Fields of the JSON requests the WebSocket and HTTP transports share: type checks that name the field, the
classify request's input and the image request. The engine's request types check the values."""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from server.engine.requests import ClassifyInput, DreamOptions, ImageRequest
from server.errors import InvalidArgument
from server.transport.wire import ENCODINGS, PCM16


def parse_json(
    raw: str | bytes, name: str, check_text: bool = True, object_pairs_hook: Callable[..., Any] | None = None
) -> Any:
    """The JSON document ``raw`` (a request body, a frame named ``name``). Not JSON, or nested deeper than the
    parser's recursion allows (thousands of brackets: no request has that), is the client's mistake, and so is a
    lone surrogate in a string (:func:`check_unicode`; ``check_text`` False: the caller checks, once it has read
    the request's id). ``object_pairs_hook`` builds each object, as in :func:`json.loads`."""
    try:
        document = json.loads(raw, object_pairs_hook=object_pairs_hook)
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # valid JSON, but no request needs such a number
            raise InvalidArgument(name, f"holds an integer of over {sys.get_int_max_str_digits()} digits") from None
        raise InvalidArgument(name, "is not valid JSON") from None
    except RecursionError:
        raise InvalidArgument(name, "is nested too deeply to be a request") from None
    if check_text:
        check_unicode(document, name)
    return document


SURROGATE = re.compile("[\ud800-\udfff]")


def check_unicode(document: Any, name: str) -> None:
    """Refuse a string (or key) holding a lone surrogate, naming where it is: JSON's ``\\ud800`` escapes (a text cut in
    the middle of an emoji) decode to one, and it cannot be encoded again (hashed, logged, rendered, spoken)."""
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and (found := SURROGATE.search(value)):
                where = f"U+{ord(found.group()):04X} at character {found.start()}"
                raise InvalidArgument(path or name, f"is not valid Unicode (a lone surrogate, {where})")
        elif isinstance(value, dict):
            for key, item in value.items():
                if not key.isascii() and SURROGATE.search(key):
                    raise InvalidArgument(path or name, "has a key that is not valid Unicode (a lone surrogate)")
                stack.append((item, f"{path}.{key}" if path else key))
        elif isinstance(value, list):
            stack.extend((item, f"{path or name}[{i}]") for i, item in enumerate(value))


def string_field(message: dict[str, Any], name: str, prefix: str = "") -> str:
    value = message.get(name, "")
    if not isinstance(value, str):
        raise InvalidArgument(prefix + name, f"must be a string, got {type(value).__name__}")
    return value


def number_field(value: Any, name: str, integer: bool) -> Any:
    """``value`` if it is a JSON integer (or, unless ``integer``, any JSON number, as a float); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise InvalidArgument(name, f"must be {'an integer' if integer else 'a number'}, got {json.dumps(value)}")
    if integer:
        return value
    try:
        return float(value)
    except OverflowError:  # an integer of hundreds of digits: JSON has no limit, a float has
        raise InvalidArgument(
            name, f"must be a number a float holds (below 1.8e308), got {len(str(value))} digits"
        ) from None


def encoding_field(message: dict[str, Any]) -> str:
    encoding = message.get("encoding") or PCM16
    if encoding not in ENCODINGS:
        raise InvalidArgument("encoding", f"must be one of {', '.join(ENCODINGS)}, got {json.dumps(encoding)}")
    return str(encoding)


def _base64(value: Any, name: str = "audio", what: str = "PCM16 LE mono samples") -> bytes:
    if not isinstance(value, str):
        raise InvalidArgument(name, f"must be a base64 string of {what}")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise InvalidArgument(name, "is not valid base64") from None


def _tensor(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) - {"shape", "values"}:
        raise InvalidArgument("tensor", 'must be an object {"shape": [...], "values": [...]}')
    shape = value.get("shape") or []
    values = value.get("values")
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
        raise InvalidArgument("tensor.shape", "must be a list of integers")
    if not isinstance(values, list) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise InvalidArgument("tensor.values", "must be a list of numbers")
    limit = float(np.finfo(np.float32).max)
    if not all(abs(v) <= limit for v in values):  # NaN and infinities too; an int compares exactly
        raise InvalidArgument("tensor.values", "must be finite numbers within float32's range (about 3.4e38)")
    return {"tensor_shape": tuple(shape), "tensor_values": np.asarray(values, dtype=np.float32)}


def classify_input(message: dict[str, Any], transport: str) -> tuple[ClassifyInput, int]:
    """The input of a classify request (exactly one of ``text``, ``audio``, ``tensor``) and its ``top_k``;
    ``transport`` names the listener it came by."""
    given = [key for key in ("text", "audio", "tensor") if message.get(key) is not None]
    if len(given) != 1:
        raise InvalidArgument("input", f"give exactly one of text, audio, tensor (got {len(given)})")
    rate = message.get("audio_sample_rate")
    top_k = message.get("top_k")
    item = ClassifyInput(
        text=string_field(message, "text") if given == ["text"] else None,
        audio=_base64(message["audio"]) if given == ["audio"] else None,
        audio_sample_rate=0 if rate is None else number_field(rate, "audio_sample_rate", True),
        **(_tensor(message["tensor"]) if given == ["tensor"] else {}),
        transport=transport,
    )
    return item, 0 if top_k is None else number_field(top_k, "top_k", True)


DREAM_FIELDS = ("layer", "target", "octaves")


def image_request(message: dict[str, Any], request_id: str, transport: str) -> ImageRequest:
    """A generate_image request's fields (absent or null: the defaults) as the engine's request."""

    def integer(name: str, default: Any = 0) -> Any:
        value = number_field(message.get(name), name, True)
        return default if value is None else value

    dream = message.get("dream") or {}
    if not isinstance(dream, dict):
        raise InvalidArgument("dream", "must be an object")
    for key in dream:
        if key not in DREAM_FIELDS:
            raise InvalidArgument(f"dream.{key}", "unknown field")
    octaves = number_field(dream.get("octaves"), "dream.octaves", True)
    base = message.get("base_image")
    return ImageRequest(
        label=string_field(message, "label"),
        seed=integer("seed", None),
        steps=integer("steps"),
        frame_every=integer("frame_every"),
        walk_to_seed=integer("walk_to_seed", None),
        walk_frames=integer("walk_frames"),
        base_image=b"" if base is None else _base64(base, "base_image", "a PNG file"),
        dream=DreamOptions(
            string_field(dream, "layer", "dream."), string_field(dream, "target", "dream."), octaves or 0
        ),
        request_id=request_id,
        transport=transport,
    )


class Repeated(dict[str, Any]):
    """A JSON object in which a key appears more than once (``repeated``, the first such key)."""

    repeated = ""


def marked_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object as ``json.loads`` builds it (its ``object_pairs_hook``), but marked when a key repeats: the parser
    keeps the last value where another reader (a proxy or gateway that checked the request, the client's own log)
    may see the first."""
    built = dict(pairs)
    if len(built) == len(pairs):
        return built
    marked = Repeated(built)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.repeated = key
            break
        seen.add(key)
    return marked


def check_unique_keys(document: Any) -> None:
    """Refuse a document (read with :func:`marked_object`) in which an object repeats a key, naming the key where
    it is (``sampling.seed``). A loop, not recursion: a request may be nested as deep as the parser allows."""
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, Repeated):
            raise InvalidArgument(f"{path}.{value.repeated}" if path else value.repeated, "appears twice in its object")
        nested = dict | list  # only objects and arrays hold objects: a tensor's thousand numbers are not walked
        if isinstance(value, dict):
            stack.extend((v, f"{path}.{k}" if path else k) for k, v in value.items() if isinstance(v, nested))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value) if isinstance(v, nested))
