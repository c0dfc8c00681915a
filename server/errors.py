"""The project's exception types.

Transports map them to protocol status (gRPC status codes, WebSocket error
frames); the command line maps them to exit codes. Tracebacks stay in the log.

    AntiphonError
    ├── InvalidArgument      a request or option field is out of range (names the field)
    ├── NotFound             an unknown model, persona or file
    ├── ResourceExhausted    a capacity limit was hit (streams, sessions, queue)
    ├── FailedPrecondition   the request conflicts with state (a chat session already has a turn running)
    ├── Unavailable          the server is shutting down; retry elsewhere or later
    ├── Unimplemented        the server has no model of the kind asked for (yet)
    ├── Unauthenticated      the request carries no API key, or one the server does not accept
    ├── ListenError          a server could not bind its address
    ├── CorpusError          training text could not be fetched or read
    ├── CheckpointError      a checkpoint is missing, corrupt or of the wrong kind
    ├── ExportError          a conversion failed, or an exported file disagrees with torch
    ├── ModelFileError       an exported file or its manifest is missing, altered (sha256) or unreadable (edge)
    └── DeviceError          an audio device or player is missing, busy or failed (edge)
"""

from __future__ import annotations

# The errors that answer a request (InvalidArgument, NotFound) go to the client and into the log, and may echo what
# the client sent (a prompt that names no class, an unknown field's name): the middle of a long one is left out.
MAX_MESSAGE_CHARS = 1000
MAX_FIELD_CHARS = 200


def capped(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and end around a note of what was cut, in
    ``limit`` characters in all."""
    if len(text) <= limit:
        return text
    note = f"...({len(text)} characters, shortened)..."
    keep = max(limit - len(note), 0)
    return f"{text[: keep - keep // 2]}{note}{text[len(text) - keep // 2 :]}"


def printable(text: str) -> str:
    """``text`` as a log line may hold it: unchanged if every character prints, else with the others escaped
    (``\\n``, ``\\u202e``), so a client's id cannot forge a line or reorder one."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class AntiphonError(Exception):
    """Base class of every error antiphon raises on purpose."""

    code = "internal"


class InvalidArgument(AntiphonError, ValueError):
    """A field of a request or an option is out of its allowed range. The message is ``"field: reason"``; a long
    field or reason is shortened (:func:`capped`) so that the whole fits ``MAX_MESSAGE_CHARS``."""

    code = "invalid_argument"

    def __init__(self, field: str, message: str) -> None:
        self.field = capped(field, MAX_FIELD_CHARS)
        self.reason = capped(message, MAX_MESSAGE_CHARS - len(self.field) - 2)
        super().__init__(f"{self.field}: {self.reason}")


class NotFound(AntiphonError, LookupError):
    """An unknown model, persona, session or file; the message starts with the field that names it (``"voice:
    'x' is not a voice ..."``) and is shortened (:func:`capped`) past ``MAX_MESSAGE_CHARS``."""

    code = "not_found"

    def __init__(self, message: str) -> None:
        super().__init__(capped(message))


class ResourceExhausted(AntiphonError):
    """A capacity limit was reached; the client may retry later."""

    code = "resource_exhausted"

    def __init__(self, message: str, reason: str = "overloaded") -> None:
        super().__init__(message)
        self.reason = reason  # a short machine-readable cause: "overloaded", "sessions"


class FailedPrecondition(AntiphonError):
    """The request conflicts with the current state (a chat session already has a turn running)."""

    code = "failed_precondition"


class Unavailable(AntiphonError):
    """The server is shutting down and takes no new work."""

    code = "unavailable"


class Unimplemented(AntiphonError):
    """No model of the kind asked for is served (yet)."""

    code = "unimplemented"


class Unauthenticated(AntiphonError):
    """The request carries no API key, or one the server does not accept."""

    code = "unauthenticated"


class ListenError(AntiphonError):
    """A server could not bind its host and port (in use, or not an address of this machine)."""

    code = "unavailable"


class CorpusError(AntiphonError):
    """Training text could not be fetched, found or decoded."""

    code = "failed_precondition"


class CheckpointError(AntiphonError):
    """A checkpoint is missing, corrupt or holds a different kind of model."""

    code = "failed_precondition"


class ExportError(AntiphonError):
    """A model could not be converted, or an exported file failed its parity check."""

    code = "internal"


class ModelFileError(AntiphonError):
    """An exported model file or its manifest is missing, does not match its sha256, or cannot be loaded."""

    code = "failed_precondition"


class DeviceError(AntiphonError):
    """An audio device (``arecord``) or player (``aplay``) is missing, busy or failed."""

    code = "unavailable"
