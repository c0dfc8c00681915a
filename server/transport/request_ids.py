"""Request ids as clients see them: every HTTP answer's ``x-request-id`` header and every gRPC call's
``x-request-id`` initial metadata. A client's or a proxy's own id (nginx's ``$request_id``: 32 hex digits; a UUID;
a trace id) is kept when it is plain and short, since it goes into log lines as it is; otherwise the server makes
one. The transports name the request by it in their log lines, so the id a user reports finds them."""

from __future__ import annotations

import re
import secrets

HEADER = "x-request-id"
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=@-]{1,128}")


def request_id(given: str | None) -> str:
    """``given`` where it is a plain id of at most 128 characters, else 32 fresh hex digits."""
    return given if given is not None and CLIENT_REQUEST_ID.fullmatch(given) else secrets.token_hex(16)
