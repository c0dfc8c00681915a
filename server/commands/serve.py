"""``antiphon serve``: the models over gRPC and WebSocket, from :class:`~server.settings.ServeSettings`."""

from __future__ import annotations

import argparse
import logging
import os
import signal

from server.commands.common import add_subcommand
from server.paths import DEFAULT_CHECKPOINTS


def add_command(commands: argparse._SubParsersAction) -> None:
    from server.settings import add_arguments

    p = add_subcommand(
        commands,
        "serve",
        _run,
        help="serve the models over gRPC, WebSocket and OpenAI-compatible HTTP",
        description="Serve the models over gRPC, WebSocket and OpenAI-compatible HTTP from one process. Every "
        "option is also an ANTIPHON_* environment variable (a flag wins). Once the three listen, one log line says "
        "`listening grpc=HOST:PORT ws=HOST:PORT http=HOST:PORT` (grpcs=, wss=, https= over TLS). SIGTERM (or SIGINT, "
        "SIGHUP) stops accepting, lets live streams finish within --grace-s, cancels the rest and exits 0; a second "
        "signal cancels them at once. A signal before it listens (while the models load) exits 0 at once.",
    )
    add_arguments(p)


def _exit_while_starting(signum: int, _frame: object) -> None:
    logging.getLogger("antiphon.server").info("%s before listening: exiting", signal.Signals(signum).name)
    os._exit(0)  # a stop asked for, as after a drain; a model half loaded in a thread would hold a normal exit back


def _run(args: argparse.Namespace) -> int:
    # Until the server listens and takes the signals over (server.app.serve): nothing is served yet.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _exit_while_starting)
    import asyncio

    from server import memory

    memory.limit_arenas()  # before any thread starts: see server/memory.py
    from server.app import serve
    from server.settings import ServeSettings, stray_variables

    settings = ServeSettings.from_sources(args, os.environ)
    for line in stray_variables(os.environ):
        logging.getLogger("antiphon.server").warning("%s", line)
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)
    # Each classifier's committed checkpoint; its --NAME-checkpoint (or variable) wins inside load_classifiers.
    classifiers = {name: DEFAULT_CHECKPOINTS[name] for name in ("kws", "textdisc", "digits")}
    asyncio.run(serve(settings, settings.text_model(), settings.audio_model(), classifiers))
    return 0
