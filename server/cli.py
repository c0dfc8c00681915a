"""The ``antiphon`` command: train, evaluate, sample and serve.

Exit codes: 0 success, 1 a runtime failure (missing checkpoint, unreadable
corpus), 2 a bad argument (named in the message), 130 interrupted, 141 the
reader of stdout went away (a pipe into ``head``).

The commands live in :mod:`server.commands`, one module per model family (``train``, ``eval`` and ``sample``
of that family) and one each for ``serve``, ``say`` and ``export``; this module builds the parser from them and
maps errors to exit codes. Default checkpoint paths: :mod:`server.paths`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from server.errors import AntiphonError, InvalidArgument

log = logging.getLogger("antiphon")


# -- parser ------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    # The commands' modules (NumPy and each family's options) load here, inside main's handling of Ctrl-C.
    from server.commands import audio, export, image, kws, say, serve, text, textdisc, vision

    parser = argparse.ArgumentParser(
        prog="antiphon",
        description="Streaming generation server: train, evaluate and sample models, and serve them over "
        "gRPC, WebSocket and OpenAI-compatible HTTP.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, adders in (
        (
            "train",
            "train a model",
            [text.add_train, vision.add_train, audio.add_train, textdisc.add_train, kws.add_train, image.add_train],
        ),
        (
            "eval",
            "evaluate a model",
            [text.add_eval, vision.add_eval, audio.add_eval, textdisc.add_eval, kws.add_eval, image.add_eval],
        ),
        ("sample", "generate from a model", [text.add_sample, image.add_sample]),
    ):
        group = commands.add_parser(name, help=help_text, description=help_text.capitalize() + ".")
        kinds = group.add_subparsers(dest="kind", required=True, metavar="MODEL")
        for add in adders:
            add(kinds)
    for command in (serve, say, export):
        command.add_command(commands)
    return parser


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` and of its subcommands, at any depth."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the commands load: no traceback through NumPy's imports
        print("antiphon: interrupted", file=sys.stderr)
        return 130
    # Our own loggers at INFO (DEBUG with -v); libraries (converters, grpc, onnx) only from WARNING up.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # gRPC's C core writes its own lines to stderr, outside this log's format: its INFO ones (a failed TLS handshake
    # of every plain-text client or scanner on a TLS port) are a client's business. Set before grpc loads; an
    # operator who wants them sets GRPC_VERBOSITY=INFO.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    for name in ("antiphon", "server", "export", "websockets.server"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except InvalidArgument as exc:
        log.debug("invalid argument", exc_info=True)
        flag = "--" + exc.field.replace("_", "-")  # the option a field came from, as the user typed it
        command = getattr(args, "command_parser", parser)  # the subcommand's own flags, not another's
        said = f"{flag}: {exc.reason}" if flag in _option_strings(command) else str(exc)
        parser.exit(2, f"antiphon: error: {said}\n")
    except AntiphonError as exc:
        log.debug("failed", exc_info=True)
        print(f"antiphon: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("antiphon: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout's reader went (`antiphon sample text | head`): stop quietly, as a shell tool killed by SIGPIPE
        # does; what is left unflushed goes to /dev/null, or Python's own flush at exit raises it again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
