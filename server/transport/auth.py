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

:class:`Browsers` is what a web page in a user's browser may reach (``docs/operations.md``, "Browsers"): the
WebSocket handshake and the HTTP requests of a page on another site are refused by their ``Origin`` (browsers apply
no CORS to a WebSocket, and send a plain-text POST without asking), and a server listening on loopback only serves
requests that name this machine in ``Host`` (a page whose own name was rebound to 127.0.0.1 names its own).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Sequence

from server.errors import MAX_FIELD_CHARS, capped, printable

log = logging.getLogger(__name__)

SUBPROTOCOL = "antiphon"  # offered by a browser beside its key's subprotocol; the server selects it
KEY_SUBPROTOCOL = "antiphon.bearer."  # + base64url(key), no padding: keys need not be HTTP tokens
MISSING = "missing API key"
WRONG = "wrong API key"
# A Host header's value, or an origin's after its scheme: a name or [an IPv6 address], and a port
_AUTHORITY = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^\s:/?#@\[\]\\]+))(?::\d{0,5})?")
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
        refused(transport, what, peer, reason)
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


def refused(transport: str, what: str, peer: str, reason: str) -> None:
    """The one INFO line of a refused request: the transport, what was asked, the client's address, why."""
    log.info("refused %s %s from %s: %s", transport, what, peer, reason)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name, or an address with no brackets) names this machine's loopback interface:
    ``localhost`` and the names under it (browsers resolve them to loopback themselves), 127.0.0.0/8, ::1."""
    host = host.lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _name(authority: str) -> str | None:
    """The host name of a ``Host`` value (``name``, ``name:port``, ``[::1]:8000``), in lower case without brackets;
    None for anything else (user info, a path, a bracket left open)."""
    matched = _AUTHORITY.fullmatch(authority)
    return (matched["v6"] or matched["name"]).lower() if matched else None


def _origin_name(origin: str) -> str | None:
    """The host name of an ``Origin`` value (``https://name:port``), as :func:`_name`; None for ``null``."""
    scheme, separator, authority = origin.partition("://")
    return _name(authority) if separator and scheme.isalpha() else None


def shown(value: str) -> str:
    """A header's value as a refusal quotes it: printable, and short."""
    return capped(printable(value), MAX_FIELD_CHARS)


class Browsers:
    """What a web page in a user's browser may reach. ``origins`` are ``--cors-origins``, the pages of other sites
    the operator lets call the server (``*``: any page of any site); ``loopback``: the server listens on the
    loopback interface only.

    - :meth:`host_refusal`: on loopback, a request must name this machine in ``Host`` (a loopback name or address, or
      the host of an origin named). A page of attacker.example whose name was rebound to 127.0.0.1 (DNS rebinding)
      is same-origin with the server in its own browser, so CORS lets it read every answer; its ``Host`` gives it
      away. Listening on other interfaces, the names the server is reached by are the operator's business.
    - :meth:`origin_refusal`: a request from a page (browsers send ``Origin``) is served when the page is on the
      host the request was sent to (the chat page on port 8000 calling the WebSocket port of the same host) or is
      an origin named. No ``Origin`` (curl, the SDKs, gRPC and WebSocket libraries) is no page, and is served.
    """

    def __init__(self, origins: Iterable[str] = (), loopback: bool = False) -> None:
        named = tuple(origins)
        self.any_origin = "*" in named
        self.origins = frozenset(origin.rstrip("/").lower() for origin in named if origin != "*")
        self.hosts = frozenset(filter(None, (_origin_name(origin) for origin in self.origins)))
        self.loopback = loopback

    def refusal(self, hosts: Sequence[str], origins: Sequence[str]) -> str | None:
        """None where a request with these ``Host`` and ``Origin`` headers may be served, else why not (one line)."""
        if len(hosts) > 1 or len(origins) > 1:  # which one would a proxy, or the browser, have meant?
            return "more than one Host or Origin header"
        host, origin = next(iter(hosts), None), next(iter(origins), None)
        return self.host_refusal(host) or self.origin_refusal(origin, host)

    def host_refusal(self, host: str | None) -> str | None:
        """None where a request with this ``Host`` header (None: none, an HTTP/1.0 client) may be served, else why
        not. Any ``Host`` with ``*`` among the origins: every site's pages may read the answers already."""
        if not self.loopback or host is None or self.any_origin:
            return None
        name = _name(host)
        if name is not None and (is_loopback(name) or name in self.hosts):
            return None
        return (
            f"Host {shown(host)} is not a name of this server: it listens on loopback only, and answers requests "
            "for localhost, 127.0.0.1 or [::1] (and the hosts of --cors-origins)"
        )

    def origin_refusal(self, origin: str | None, host: str | None) -> str | None:
        """None where a request from a page of ``origin`` (None: not from a page) sent to ``host`` may be served,
        else why not."""
        if origin is None or self.any_origin:
            return None
        name = _origin_name(origin)
        if name is not None and name == _name(host or ""):
            return None
        if origin.rstrip("/").lower() in self.origins:
            return None
        return f"Origin {shown(origin)} is not allowed: a page of another site (list it in --cors-origins to allow it)"
