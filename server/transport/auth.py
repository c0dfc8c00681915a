"""API keys: the one check every listener makes, and the one INFO line a refusal leaves.

With no key configured (``--api-key``, ``--api-key-file``, ``ANTIPHON_API_KEY``) every request is served. With
keys, a request must carry one of them as ``Authorization: Bearer KEY``: gRPC in the ``authorization`` metadata,
HTTP and the WebSocket handshake in the header. A browser cannot set headers on a WebSocket handshake, so the
handshake also takes the key as a subprotocol, ``antiphon.bearer.`` + the key in base64url without padding, offered
beside ``antiphon``, which the server selects (a browser fails a handshake whose answer selects none of the
protocols it offered). Each transport decides what stays open: health checks, and the chat page's static files.

The comparison takes the same time whichever key matches and however much of a wrong key is right: the presented
key's SHA-256 is compared with every configured key's by :func:`hmac.compare_digest`, all of them, with no early
exit (hashing first also hides the keys' lengths). A key is never logged: a refusal's line names the transport,
what was asked, the client's address and the reason (missing or wrong).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

SUBPROTOCOL = "antiphon"  # offered by a browser beside its key's subprotocol; the server selects it
KEY_SUBPROTOCOL = "antiphon.bearer."  # + base64url(key), no padding: keys need not be HTTP tokens
MISSING = "missing API key"
WRONG = "wrong API key"
MESSAGES = {
    MISSING: f"{MISSING}: send it as Authorization: Bearer KEY",
    WRONG: f"{WRONG}: it is not one this server accepts",
}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "replace")).digest()


class ApiKeys:
    """The keys a server accepts; none: the server is open. ``counted(transport, code)`` hears every refusal (the
    server's metrics)."""

    def __init__(self, keys: Iterable[str] = (), counted: Callable[[str, str], None] | None = None) -> None:
        self._digests = tuple(_digest(key) for key in keys)
        self._counted = counted

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def refusal(self, key: str | None) -> str | None:
        """None where ``key`` is accepted (or no key is required), else why not: :data:`MISSING` or :data:`WRONG`."""
        if not self._digests:
            return None
        if not key:
            return MISSING
        presented = _digest(key)
        matched = False
        for known in self._digests:  # every key, whichever matches: the time says nothing of which
            matched |= hmac.compare_digest(presented, known)
        return None if matched else WRONG

    def refused(self, transport: str, what: str, peer: str, reason: str, code: str) -> None:
        """Log a refused request in one INFO line (never the key, never a query string) and count it under
        ``code``, the status the transport answers with."""
        log.info("refused %s %s from %s: %s", transport, what, peer, reason)
        if self._counted is not None:
            self._counted(transport, code)


def bearer(header: str | None) -> str | None:
    """The key of an ``Authorization`` value ``Bearer KEY`` (the scheme in any case); None for none or another
    scheme."""
    if header is None:
        return None
    scheme, _, key = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return key.strip() or None


def subprotocol_key(offered: Iterable[str]) -> str | None:
    """The key a browser offered as a subprotocol (``antiphon.bearer.`` + base64url), None if it offered none;
    ValueError if the offered one does not decode."""
    for protocol in offered:
        if protocol.startswith(KEY_SUBPROTOCOL):
            encoded = protocol[len(KEY_SUBPROTOCOL) :]
            try:
                raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
                return raw.decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise ValueError("the key subprotocol is not base64url") from None
    return None


def encode_subprotocol(key: str) -> str:
    """The subprotocol that carries ``key`` (what a browser client offers; the tests use it too)."""
    return KEY_SUBPROTOCOL + base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii").rstrip("=")
