"""What several commands declare or parse alike: a subcommand and the function it runs, ``--seed``, ``--device``,
``--checkpoint`` of the commands whose flags are declared by hand (a trainer's are generated from its options:
:mod:`server.options`), and reading a file a flag names."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from server.errors import InvalidArgument
from server.options import DEVICES, TrainOptions, add_flags, from_flags
from server.options import comma_list as comma_list  # export's flags read it from here
from server.paths import default_help

Options = TypeVar("Options", bound=TrainOptions)


def add_subcommand(
    sub: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str,
    formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter,
) -> argparse.ArgumentParser:
    """Subcommand ``name`` whose ``func`` is ``run`` (it gets the parsed flags and returns the exit status); the
    caller adds the flags to the parser returned."""
    p = sub.add_parser(name, help=help, description=description, formatter_class=formatter_class)
    p.set_defaults(func=run, command_parser=p)  # the parser whose flags name a bad value (server/cli.py)
    return p


def add_seed(p: argparse._ActionsContainer, default: int | None, help: str) -> None:
    """``--seed``: what it makes reproducible differs by command, so each says it in ``help``."""
    p.add_argument("--seed", type=int, default=default, help=help)


def add_device(p: argparse._ActionsContainer, default: str = "auto", help: str = "auto: CUDA when present") -> None:
    """``--device``: auto (CUDA when present), cpu or cuda, for :func:`server.device.resolve_device`."""
    p.add_argument("--device", choices=DEVICES, default=default, help=f"{help} (default: {default})")


def add_checkpoint(p: argparse._ActionsContainer, kind: str) -> None:
    """``--checkpoint`` of a command that reads one model of ``kind``; its default is :mod:`server.paths`'s."""
    p.add_argument("--checkpoint", type=Path, default=None, help=default_help(kind))


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


def add_trainer(
    sub: argparse._SubParsersAction,
    name: str,
    options: type[Options],
    run: Callable[[Options], int],
    *,
    help: str,
    description: str,
    dry_run: str,
) -> argparse.ArgumentParser:
    """``antiphon train NAME``: the flags generated from ``options`` (``--dry-run`` with what ``dry_run`` says its
    preset trains); ``run`` gets the options the flags, the preset and the defaults make, and returns the exit
    status."""
    p = add_subcommand(sub, name, lambda args: run(from_flags(options, args)), help=help, description=description)
    add_flags(p, options, dry_run=dry_run)
    return p
