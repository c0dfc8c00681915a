"""What several commands declare or parse alike: ``--seed``, ``--device``, ``--checkpoint``, the training loop's
options, and small parsers of flag values that raise :class:`~server.errors.InvalidArgument` naming the flag."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from server.errors import InvalidArgument
from server.paths import default_help

DEVICES = ("auto", "cpu", "cuda")


def add_seed(p: argparse._ActionsContainer, default: int | None, help: str) -> None:
    """``--seed``: what it makes reproducible differs by command, so each says it in ``help``."""
    p.add_argument("--seed", type=int, default=default, help=help)


def add_device(p: argparse._ActionsContainer, default: str = "auto", help: str | None = None) -> None:
    """``--device``: auto (CUDA when present), cpu or cuda, for :func:`server.device.resolve_device`."""
    p.add_argument("--device", choices=DEVICES, default=default, help=help)


def add_checkpoint(p: argparse._ActionsContainer, kind: str) -> None:
    """``--checkpoint`` of a command that reads one model of ``kind``; its default is :mod:`server.paths`'s."""
    p.add_argument("--checkpoint", type=Path, default=None, help=default_help(kind))


def add_loop_options(p: argparse.ArgumentParser, *, out: str, optimizer: str, warmup: int, eval_every: int) -> None:
    """The options of the training loop the text and audio trainers share (``server/training.py``)."""
    budget = p.add_argument_group("budget (the first reached ends the run; the learning rate decays over it)")
    budget.add_argument("--steps", type=int, help="optimizer steps")
    budget.add_argument("--minutes", type=float, help="wall-clock minutes of training")
    p.add_argument("--out", type=Path, default=Path(out), help="checkpoint to write")
    p.add_argument("--resume", action="store_true", help="continue from the training state saved beside --out")
    add_device(p, help="auto: CUDA when present")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 autocast where the hardware runs it natively",
    )
    add_seed(p, 1234, "initialization and data order")
    p.add_argument("--lr", type=float, default=2e-3, help=f"peak learning rate ({optimizer}, cosine decay)")
    p.add_argument("--warmup-steps", type=int, default=warmup, help="linear learning-rate warm-up")
    p.add_argument("--eval-every", type=int, default=eval_every, help="steps between held-out estimates")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0, help="minutes between resumable saves")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def loop_options(args: argparse.Namespace) -> dict[str, Any]:
    """The shared loop's fields of a trainer's options, from the flags ``add_loop_options`` declared."""
    names = ("out", "steps", "minutes", "device", "precision", "resume", "seed", "lr", "warmup_steps")
    values = {name: getattr(args, name) for name in (*names, "eval_every", "checkpoint_minutes")}
    return {**values, "progress": not args.no_progress}


def comma_list(value: str) -> tuple[str, ...]:
    """``"a, b,"`` -> ``("a", "b")``: the argparse ``type`` of comma-separated flags."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def float_pair(text: str, field: str) -> tuple[float, float]:
    """ "LOW,HIGH" -> (low, high); the ranges themselves are checked by the options they fill."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise InvalidArgument(field, f"give two numbers as LOW,HIGH, got {text!r}") from None
    return low, high


def read_utf8(path: Path, field: str) -> str:
    """The text of a file a flag (``field``) named; a missing, unreadable or non-UTF-8 file is a bad argument."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidArgument(field, f"{path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise InvalidArgument(field, f"{path} is not UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise InvalidArgument(field, f"cannot read {path}: {exc.strerror}") from None
