"""What the ``antiphon-edge`` commands share: opening the manifest's models as ``--models``, ``--model`` and the
backend options say, printing a result as text or ``--json``, standard input's bytes, a subcommand with the
shared options, and the checks of a flag's number or text."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from server.errors import InvalidArgument

if TYPE_CHECKING:
    from edge_client.manifest import Manifest, Model


def models_dir(args: argparse.Namespace) -> Path:
    return Path(args.models)


def manifest_of(args: argparse.Namespace) -> Manifest:
    from edge_client.manifest import Manifest

    return Manifest(models_dir(args))


def open_named(args: argparse.Namespace, name: str) -> Model:
    return manifest_of(args).open(name, args.backend, args.precision, args.threads)


def open_model(args: argparse.Namespace, default: str | Callable[[Manifest], str]) -> Model:
    """``--model``: one exported file (the manifest beside it lists it: that file, on a backend that runs its
    format), an export folder (its ``default`` model), or a model name in ``--models`` (``default`` when not
    given). ``default`` may pick the name from the manifest."""
    from edge_client.manifest import MANIFEST, Manifest

    value = args.model
    path = Path(value) if value else None
    if path is not None and path.is_file():
        return Manifest(path.parent).open_file(path.name, args.backend, args.precision, args.threads)
    if path is not None and (path / MANIFEST).is_file():
        manifest, value = Manifest(path), None
    elif path is not None and (value.endswith((".onnx", ".tflite")) or "/" in value):
        raise InvalidArgument("--model", f"{value}: no such file, nor a folder with {MANIFEST}")
    else:
        manifest = manifest_of(args)
    name = value or (default if isinstance(default, str) else default(manifest))
    return manifest.open(name, args.backend, args.precision, args.threads)


def stdin_bytes() -> BinaryIO:
    """Standard input's bytes; a closed standard input (``<&-``: no file at all) is an InvalidArgument."""
    if sys.stdin is None:
        raise InvalidArgument("standard input", "is closed; give the input through a pipe or a file")
    return sys.stdin.buffer


def emit(args: argparse.Namespace, record: dict[str, object], text: str) -> None:
    print(json.dumps(record) if args.json else text, flush=True)


def subcommand(
    parent: argparse._SubParsersAction,
    name: str,
    common: argparse.ArgumentParser,
    func: Callable[[argparse.Namespace], int],
    json_help: str,
    model: str | None = None,
    *,
    help: str,
    description: str,
    model_help: str | None = None,
    examples: Sequence[str] = (),
) -> argparse.ArgumentParser:
    """A command with the shared model options, ``--json`` and, for commands that run one manifest model,
    ``--model`` (default ``model``; ``model_help`` where it takes more than a name); ``examples``: command lines
    shown at the end of its ``--help``."""
    epilog = "examples:\n" + "".join(f"  {line}\n" for line in examples) if examples else None
    p: argparse.ArgumentParser = parent.add_parser(
        name, parents=[common], help=help, description=description, epilog=epilog, formatter_class=_Formatter
    )
    if model is not None:
        shown = model_help.format(model=model) if model_help else f"manifest model name (default: {model})"
        p.add_argument("--model", default=model or None, metavar="MODEL", help=shown)
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(func=func)
    return p


class _Formatter(argparse.HelpFormatter):
    """Wraps a command's description to the terminal; keeps its examples (the epilog) line by line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:\n"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def in_range(flag: str, value: float | None, low: float, high: float, *, above: bool = False, shown: str = "") -> None:
    """Refuse ``value`` (unless None) outside [low, high], or (``above``) at or below ``low``; NaN and infinities are
    always refused. The message names ``flag`` and the range (``shown``, else the numbers)."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(flag, f"must be a finite number, got {value}")
    if (value <= low if above else value < low) or value > high:
        lo, hi = (str(v) if isinstance(v, int) else f"{v:g}" for v in (low, high))
        span = shown or (f"more than {lo} and at most {hi}" if above else f"in {lo}..{hi}")
        raise InvalidArgument(flag, f"must be {span}, got {value}")


def utf8(flag: str, value: str | None) -> None:
    """Refuse a flag's text that is not UTF-8 (bytes the locale could not decode come in as lone surrogates)."""
    if value is None:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(flag, "is not valid UTF-8 text") from None
