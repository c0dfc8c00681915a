"""What several commands declare or parse alike: ``--seed``, ``--device``, ``--checkpoint`` of the commands whose
flags are declared by hand (a trainer's are generated from its options: :mod:`server.options`), the text
trainer's loop options, and reading a file a flag names."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from server.errors import InvalidArgument
from server.options import DEVICES, LOOP_FLAGS, loop_flag
from server.options import comma_list as comma_list  # export's flags read it from here
from server.paths import default_help


def add_seed(p: argparse._ActionsContainer, default: int | None, help: str) -> None:
    """``--seed``: what it makes reproducible differs by command, so each says it in ``help``."""
    p.add_argument("--seed", type=int, default=default, help=help)


def add_device(p: argparse._ActionsContainer, default: str = "auto", help: str | None = None) -> None:
    """``--device``: auto (CUDA when present), cpu or cuda, for :func:`server.device.resolve_device`."""
    p.add_argument("--device", choices=DEVICES, default=default, help=help)


def add_checkpoint(p: argparse._ActionsContainer, kind: str) -> None:
    """``--checkpoint`` of a command that reads one model of ``kind``; its default is :mod:`server.paths`'s."""
    p.add_argument("--checkpoint", type=Path, default=None, help=default_help(kind))


# The text trainer's loop defaults, while its flags are declared here (see add_loop_options).
TEXT_LOOP_DEFAULTS: dict[str, Any] = {
    "device": "auto",
    "precision": "auto",
    "seed": 1234,
    "lr": 2e-3,
    "checkpoint_minutes": 5.0,
}


def add_loop_options(p: argparse.ArgumentParser, *, out: str, optimizer: str, warmup: int, eval_every: int) -> None:
    """The training loop's flags (declared once, :func:`server.options.loop_flag`) with a trainer's defaults, for a
    trainer whose options are not yet a torch-free dataclass: the text trainer's. (The audio trainer's flags come
    from :class:`~server.audio.options.AudioTrainOptions`; once the text trainer's options move to a module like
    it, this and :func:`loop_options` go.)"""
    defaults = TEXT_LOOP_DEFAULTS | {"out": Path(out), "warmup_steps": warmup, "eval_every": eval_every}
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name in LOOP_FLAGS:
        flag = loop_flag(name, optimizer)
        container: argparse._ActionsContainer = p
        if flag.group is not None:
            if flag.group not in groups:
                groups[flag.group] = p.add_argument_group(flag.group)
            container = groups[flag.group]
        option_string = "--" + flag.dest(name).replace("_", "-")
        if flag.switch is not None:
            container.add_argument(option_string, action="store_true", help=flag.help)
        elif flag.choices is not None:
            container.add_argument(option_string, choices=flag.choices, default=defaults[name], help=flag.help)
        else:
            container.add_argument(option_string, type=flag.parse, default=defaults.get(name), help=flag.help)


def loop_options(args: argparse.Namespace) -> dict[str, Any]:
    """The shared loop's fields of a trainer's options, from the flags ``add_loop_options`` declared."""
    values = {name: getattr(args, name) for name in LOOP_FLAGS if name != "progress"}
    return {**values, "progress": not args.no_progress}


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
