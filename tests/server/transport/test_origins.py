"""What a web page in the user's own browser may reach, against real servers: a page of another site is refused by
its ``Origin`` (the WebSocket handshake, which browsers open anywhere with no CORS, and HTTP, where a plain-text POST
needs no preflight), and a loopback-only server refuses a ``Host`` that does not name this machine (DNS rebinding).
Each refusal is a 403 naming what was refused and one INFO line; the chat page's files carry their own headers."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from server.transport.auth import Browsers
from tests.conftest import timeout

FAST = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)  # the server's tests: one backend

StartServer = Callable[..., Any]
HOSTILE = "http://attacker.example"
REFUSED_ORIGIN = (
    "Origin http://attacker.example is not allowed: a page of another site (list it in --cors-origins to allow it)"
)
CHAT = {"model": "tiny/fool", "messages": [{"role": "user", "content": "Hail."}], "max_tokens": 4, "seed": 1}


def refused_host(host: str) -> str:
    return (
        f"Host {host} is not a name of this server: it listens on loopback only, and answers requests for localhost, "
        "127.0.0.1 or [::1] (and the hosts of --cors-origins)"
    )


async def handshake(address: str, origin: str | None = None, uri_host: str = "") -> tuple[int, str]:
    """A WebSocket handshake to ``address`` (as ``uri_host`` names it, if given) from a page of ``origin`` (None:
    not a page): (101, the first model listed) or the refusal's status and body."""
    port = address.rsplit(":", 1)[1]
    uri = f"ws://{uri_host}:{port}/" if uri_host else f"ws://{address}/"
    try:
        async with connect(uri, origin=Origin(origin) if origin else None, open_timeout=timeout(10)) as ws:
            await ws.send(json.dumps({"type": "list_models", "id": "m"}))
            return 101, json.loads(await ws.recv())["models"][0]["id"]
    except InvalidStatus as exc:
        return exc.response.status_code, exc.response.body.decode()


async def raw_handshake(address: str, host: str) -> httpx.Response:
    """A WebSocket handshake whose ``Host`` is ``host``, as a browser sends it for a name rebound to 127.0.0.1."""
    key = base64.b64encode(os.urandom(16)).decode()
    headers = {"Host": host, "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key}
    async with httpx.AsyncClient(timeout=timeout(10)) as client:
        return await client.get(f"http://{address}/", headers={**headers, "Sec-WebSocket-Version": "13"})


# -- the WebSocket handshake --------------------------------------------------------------------------------------
@FAST
async def test_a_page_of_another_site_cannot_open_the_websocket(start_server: StartServer) -> None:
    """A page of another site (browsers send its Origin, and apply no CORS to a WebSocket) is refused 403 before
    the upgrade, the body naming its origin."""
    server = await start_server()
    assert await handshake(server.ws_address, HOSTILE) == (403, REFUSED_ORIGIN + "\n")


@FAST
async def test_a_client_that_is_no_page_opens_the_websocket(start_server: StartServer) -> None:
    """No Origin (a WebSocket library, the edge client) is no page: served as before."""
    server = await start_server()
    assert await handshake(server.ws_address) == (101, "tiny")


@FAST
@pytest.mark.parametrize("origin", ["http://127.0.0.1:8000", "https://127.0.0.1", "http://127.0.0.1:1"])
async def test_a_page_of_the_same_host_opens_the_websocket(start_server: StartServer, origin: str) -> None:
    """A page of the host the handshake was sent to, on any port (the chat page on 8000, the WebSocket on 8765), is
    served."""
    server = await start_server()
    assert await handshake(server.ws_address, origin) == (101, "tiny")


@FAST
async def test_a_page_of_localhost_opens_the_websocket_of_localhost(start_server: StartServer) -> None:
    """Host and Origin are compared by name: a page of localhost calling the server as localhost is served, and
    calling it as 127.0.0.1 is another site's."""
    server = await start_server()
    assert await handshake(server.ws_address, "http://localhost:8000", uri_host="localhost") == (101, "tiny")
    status, body = await handshake(server.ws_address, "http://localhost:8000")
    assert (status, body.split(" is not", 1)[0]) == (403, "Origin http://localhost:8000")


@FAST
@pytest.mark.parametrize("origin", ["https://chat.example", "HTTPS://Chat.Example"])
async def test_an_origin_of_cors_origins_opens_the_websocket(start_server: StartServer, origin: str) -> None:
    """A page of an origin --cors-origins names (in any case) is served; another is not."""
    server = await start_server(settings={"cors_origins": ("https://chat.example",)})
    assert await handshake(server.ws_address, origin) == (101, "tiny")
    assert await handshake(server.ws_address, "https://chat.example:444") == (
        403,
        "Origin https://chat.example:444 is not allowed: a page of another site (list it in --cors-origins to allow "
        "it)\n",
    )


@FAST
async def test_cors_origins_any_lets_every_page_open_the_websocket(start_server: StartServer) -> None:
    """--cors-origins '*' lets every site's pages call the server, its WebSocket too."""
    server = await start_server(settings={"cors_origins": ("*",)})
    assert await handshake(server.ws_address, HOSTILE) == (101, "tiny")


@FAST
async def test_a_rebound_name_cannot_open_the_websocket(start_server: StartServer) -> None:
    """On loopback a handshake for another name (a page of attacker.example rebound to 127.0.0.1, whose Origin
    matches its own Host) is refused 403 naming the Host; /healthz stays open."""
    server = await start_server()
    answer = await raw_handshake(server.ws_address, "attacker.example:8765")
    assert (answer.status_code, answer.text) == (403, refused_host("attacker.example:8765") + "\n")
    async with httpx.AsyncClient(timeout=timeout(5)) as client:
        health = await client.get(f"http://{server.ws_address}/healthz", headers={"Host": "attacker.example"})
    assert (health.status_code, health.text) == (200, "ok\n")


@FAST
async def test_the_origin_is_checked_before_the_key(start_server: StartServer) -> None:
    """With keys, a page of another site is refused for its origin (403), key or none."""
    server = await start_server(settings={"api_key": "sk-test"})
    assert await handshake(server.ws_address, HOSTILE) == (403, REFUSED_ORIGIN + "\n")


# -- HTTP -----------------------------------------------------------------------------------------------------------
@FAST
async def test_a_rebound_name_cannot_read_the_api(start_server: StartServer) -> None:
    """On loopback a request for another name (DNS rebinding: the page is same-origin with the server in its own
    browser, so CORS lets it read everything) is refused 403 with OpenAI's error object naming the Host; the page and
    its files too, /healthz not."""
    server = await start_server()
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(5)) as client:
        for path in ("/v1/models", "/", "/static/chat.js"):
            answer = await client.get(path, headers={"Host": "attacker.example:8000"})
            error = {"message": refused_host("attacker.example:8000"), "type": "invalid_request_error"}
            assert (answer.status_code, answer.json()) == (403, {"error": {**error, "param": None, "code": None}})
        health = await client.get("/healthz", headers={"Host": "attacker.example:8000"})
    assert health.status_code == 200


@FAST
@pytest.mark.parametrize(
    "host", ["localhost:8000", "LOCALHOST", "127.0.0.1", "127.0.0.2:80", "[::1]:8000", "app.localhost"]
)
async def test_a_loopback_name_reads_the_api(start_server: StartServer, host: str) -> None:
    """Loopback names and addresses, with any port, are this machine's: served."""
    server = await start_server()
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(5)) as client:
        answer = await client.get("/v1/models", headers={"Host": host})
    assert answer.status_code == 200


@FAST
async def test_the_host_of_a_cors_origin_reads_the_api(start_server: StartServer) -> None:
    """A name --cors-origins names is the operator's (a proxy in front passing its Host): served on loopback."""
    server = await start_server(settings={"cors_origins": ("https://chat.example",)})
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(5)) as client:
        assert (await client.get("/v1/models", headers={"Host": "chat.example"})).status_code == 200
        assert (await client.get("/v1/models", headers={"Host": "chat.example.attacker.example"})).status_code == 403


@FAST
async def test_a_page_of_another_site_cannot_post_unseen(start_server: StartServer) -> None:
    """A page of another site POSTing a plain-text body (a simple request: the browser sends it with no preflight,
    the answer unread) is refused 403 before any work; the same page's origin named by --cors-origins, and a page of
    the server's own host, are served."""
    server = await start_server()
    headers = {"Content-Type": "text/plain", "Origin": HOSTILE}
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        answer = await client.post("/v1/chat/completions", content=json.dumps(CHAT), headers=headers)
        assert (answer.status_code, answer.json()["error"]["message"]) == (403, REFUSED_ORIGIN)
        assert "antiphon_requests_total{" not in (await client.get("/metrics")).text  # no stream began
        own = {**headers, "Origin": f"http://{server.http_address}"}
        assert (await client.post("/v1/chat/completions", content=json.dumps(CHAT), headers=own)).status_code == 200
    named = await start_server(settings={"cors_origins": (HOSTILE,)})
    async with httpx.AsyncClient(base_url=f"http://{named.http_address}", timeout=timeout(10)) as client:
        answer = await client.post("/v1/chat/completions", content=json.dumps(CHAT), headers=headers)
    assert (answer.status_code, answer.headers["Access-Control-Allow-Origin"]) == (200, HOSTILE)


@FAST
async def test_a_refusal_is_one_info_line_and_a_403_counted(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Each refusal leaves one INFO line naming the transport, what was asked, the client and what was refused (no
    traceback), and counts as a 403 of its transport."""
    caplog.set_level(logging.INFO)
    server = await start_server()
    await handshake(server.ws_address, HOSTILE)
    await raw_handshake(server.ws_address, "attacker.example")
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(5)) as client:
        await client.get("/v1/models", headers={"Origin": HOSTILE})
        metrics = (await client.get("/metrics")).text
    lines = [r for r in caplog.records if r.name == "server.transport.auth"]
    assert [(r.levelname, r.getMessage().split(" from ")[0], r.getMessage().split(": ", 1)[1]) for r in lines] == [
        ("INFO", "refused websocket handshake /", REFUSED_ORIGIN),
        ("INFO", "refused websocket handshake /", refused_host("attacker.example")),
        ("INFO", "refused http GET /v1/models", REFUSED_ORIGIN),
    ]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    assert 'antiphon_errors_total{code="403",transport="websocket"} 2.0' in metrics
    assert 'antiphon_errors_total{code="403",transport="http"} 1.0' in metrics


# -- the page's own headers -----------------------------------------------------------------------------------------
@FAST
@pytest.mark.parametrize("path", ["/", "/static/chat.js", "/static/style.css"])
async def test_the_page_cannot_be_framed_or_sniffed(start_server: StartServer, path: str) -> None:
    """The chat page and its files forbid framing by another site (clickjacking), inline script, MIME sniffing and
    a Referer to other sites."""
    server = await start_server()
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(5)) as client:
        answer = await client.get(path)
    assert answer.status_code == 200
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Referrer-Policy"] == "same-origin"
    policy = dict(part.strip().split(" ", 1) for part in answer.headers["Content-Security-Policy"].split(";"))
    assert policy["frame-ancestors"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["default-src"] == "'none'"


# -- the checks themselves --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "served"),
    [
        ("localhost", True),
        ("localhost:8000", True),
        ("127.0.0.1:8000", True),
        ("127.8.9.10", True),
        ("[::1]:8000", True),
        ("[::1]", True),
        ("a.b.localhost:1", True),
        ("attacker.example", False),
        ("127.0.0.1.attacker.example", False),
        ("localhost.attacker.example", False),
        ("[::1", False),
        ("attacker.example@127.0.0.1", False),
        ("127.0.0.1/x", False),
        ("10.0.0.1:8000", False),
        ("", False),
    ],
)
def test_a_loopback_server_serves_loopback_names_only(host: str, served: bool) -> None:
    """On loopback, Host must be a loopback name or address, with any port; listening elsewhere, any Host."""
    assert (Browsers(loopback=True).host_refusal(host) is None) is served
    assert Browsers(loopback=False).host_refusal(host) is None


@pytest.mark.parametrize(
    ("origin", "host", "served"),
    [
        (None, "127.0.0.1:8765", True),
        ("http://127.0.0.1:8000", "127.0.0.1:8765", True),
        ("http://[::1]:8000", "[::1]:8765", True),
        ("https://chat.example", "chat.example", True),  # behind nginx, which passes Host without a port
        ("http://attacker.example", "127.0.0.1:8765", False),
        ("http://localhost:8000", "127.0.0.1:8765", False),
        ("null", "127.0.0.1:8765", False),  # a sandboxed frame, a file:// page
        ("http://127.0.0.1:8000", None, False),
    ],
)
def test_an_origin_is_served_on_its_own_host(origin: str | None, host: str | None, served: bool) -> None:
    """A page's Origin is served where its host is the Host the request was sent to; no Origin is no page."""
    assert (Browsers().origin_refusal(origin, host) is None) is served
