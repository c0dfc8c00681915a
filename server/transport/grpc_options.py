"""The gRPC server's channel options: message size, keepalive and the pings clients may send (docs/grpc.md).

gRPC's C core enforces a ping policy on servers: by default a client may ping at most once every five minutes,
and not at all while it has no call open; a third ping sooner than that (three "strikes") is answered with GOAWAY
``too_many_pings`` and the connection closes, which ends every stream on it with ``UNAVAILABLE``. A strike is
forgiven only when the server sends data, so a stream that sends nothing for a while (a client that reads slowly
and is paused by flow control, a request queued behind ``--max-streams``) is exactly the one a client's keepalive
kills. Clients commonly ping every 10 to 30 seconds (grpc-go and grpc-java refuse less than 10), so the server
allows a ping every :data:`MIN_PING_INTERVAL_MS`, with or without a call.

The server pings too: every :data:`KEEPALIVE_TIME_MS` it asks each connection for an answer and closes one that
gives none within :data:`KEEPALIVE_TIMEOUT_MS`. A client that vanished without closing its connection (a laptop
that slept, a dropped network) otherwise holds its streams, and their engine slots, until the operating system
gives up on the socket, which for a stream paused by flow control (nothing left to send) is never.

:class:`ClientGoneFilter` quiets the one line grpc's core writes at ERROR, with a traceback, when a call's final
status cannot be sent because its client went away a moment before the core noticed (the handler had finished).
"""

from __future__ import annotations

import logging

MAX_MESSAGE_BYTES = 4 << 20  # a request over this is RESOURCE_EXHAUSTED (gRPC's own default)
MIN_PING_INTERVAL_MS = 5_000  # the most often a client may ping, with or without a call open
KEEPALIVE_TIME_MS = 60_000  # how often the server pings each connection
KEEPALIVE_TIMEOUT_MS = 20_000  # a connection whose ping is not answered within this is closed


def server_options() -> list[tuple[str, int]]:
    """The options of ``grpc.aio.server`` (read at each call, so a test may lower the module's values)."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),  # port 0 must mean a port no other server holds
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.keepalive_permit_without_calls", 1),  # idle channels may ping (at that rate) to stay open
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),  # the C core waits this long for an answer (1 min)
        ("grpc.http2.max_pings_without_data", 0),  # keep pinging a stream that is paused, sending nothing
    ]


class ClientGoneFilter(logging.Filter):
    """grpc's asyncio server logs ``ExecuteBatchError raised in core by servicer method [...]`` at ERROR, with a
    traceback, when sending a finished call's status fails and it has not yet marked the call as closed by its
    client: the client cancelled, its deadline passed or its connection dropped just as the handler returned (a
    race in grpc itself; a 15-minute soak met it once in 24,000 requests). Sending a status fails for no other
    reason, so that record becomes the one INFO line a client's leaving gets; every other record passes as it is.
    (A failed write of a message is :func:`server.transport.grpc_service.write`'s.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if (
            record.levelno >= logging.ERROR
            and type(error).__name__ == "ExecuteBatchError"
            and "SendStatusFromServerOperation" in str(error)
        ):
            said = record.getMessage()  # "... servicer method [/antiphon.v1.Generation/Chat]"
            method = said[said.find("[") + 1 : said.rfind("]")] if "[" in said else "?"
            record.msg, record.args = "call %s: its client went away before its status was sent", (method,)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


GRPC_CORE_LOGGER = "grpc._cython.cygrpc"  # where grpc's asyncio server logs what its handlers' calls raise


def quiet_client_gone() -> None:
    """Install :class:`ClientGoneFilter` on grpc's logger, once."""
    logger = logging.getLogger(GRPC_CORE_LOGGER)
    if not any(isinstance(f, ClientGoneFilter) for f in logger.filters):
        logger.addFilter(ClientGoneFilter())
