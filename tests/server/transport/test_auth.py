"""API keys on every listener, against real servers: no key and a wrong key are refused before any work (gRPC
UNAUTHENTICATED, the WebSocket handshake 401 before the upgrade, HTTP 401 with OpenAI's error object), an accepted
key is served, health checks stay open, and no key ever reaches the log."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from antiphon.v1 import generation_pb2_grpc, models_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from server.transport.auth import encode_subprotocol
from tests.conftest import timeout

# The keys are one transport's concern each; the default backend keeps this file short.
pytestmark = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)

StartServer = Callable[..., Any]
TRANSPORTS = ("grpc", "ws", "http")
KEY = "sk-antiphon/Test+key=="  # not an HTTP token: the browser's subprotocol must carry it encoded
MISSING = "missing API key: send it as Authorization: Bearer KEY"
WRONG = "wrong API key: it is not one this server accepts"


def refusal(transport: str, message: str) -> tuple[str, Any]:
    """What ``ask`` returns for a refusal with ``message``: each transport's status and the message as it says it."""
    if transport == "grpc":
        return "UNAUTHENTICATED", message
    if transport == "ws":
        return "401", message + "\n"
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    return "401", body


async def ask(server: Any, transport: str, key: str | None, scheme: str = "Bearer") -> tuple[str, Any]:
    """The model list over ``transport``, carrying ``key`` (None: no key): ("ok", the first model's id), or the
    refusal's status and message (gRPC: its status name; WebSocket and HTTP: the status code and the body)."""
    authorization = f"{scheme} {key}" if key is not None else None
    if transport == "grpc":
        metadata = (("authorization", authorization),) if authorization else None
        async with grpc.aio.insecure_channel(server.grpc_address) as channel:
            try:
                response = await generation_pb2_grpc.GenerationStub(channel).ListModels(
                    models_pb2.ListModelsRequest(), metadata=metadata, timeout=timeout(10)
                )
            except grpc.aio.AioRpcError as exc:
                return exc.code().name, exc.details()
        return "ok", response.models[0].id
    if transport == "ws":
        headers = {"Authorization": authorization} if authorization else None
        try:
            async with connect(f"ws://{server.ws_address}/", additional_headers=headers) as ws:
                await ws.send(json.dumps({"type": "list_models", "id": "m"}))
                frame = json.loads(await ws.recv())
        except InvalidStatus as exc:
            assert exc.response.headers["WWW-Authenticate"] == "Bearer"
            return str(exc.response.status_code), exc.response.body.decode()
        return "ok", frame["models"][0]["id"]
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        answer = await client.get("/v1/models", headers={"Authorization": authorization} if authorization else None)
    if answer.status_code != 200:
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        return str(answer.status_code), answer.json()
    return "ok", answer.json()["data"][0]["id"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_no_key_is_refused(start_server: StartServer, transport: str) -> None:
    """A request without a key is refused, saying how to send one."""
    server = await start_server(settings={"api_key": KEY})
    assert await ask(server, transport, None) == refusal(transport, MISSING)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_another_scheme_counts_as_no_key(start_server: StartServer, transport: str) -> None:
    """The key sent under another scheme than Bearer (Basic) is not read: refused as missing."""
    server = await start_server(settings={"api_key": KEY})
    assert await ask(server, transport, KEY, scheme="Basic") == refusal(transport, MISSING)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("wrong", ["sk-antiphon/Test+key", "sk-antiphon/Test+key==x", "x"])
async def test_wrong_key_is_refused(start_server: StartServer, transport: str, wrong: str) -> None:
    """A key that is not the server's (a prefix of it, a longer one, another) is refused."""
    server = await start_server(settings={"api_key": KEY})
    assert await ask(server, transport, wrong) == refusal(transport, WRONG)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_right_key_is_served(start_server: StartServer, transport: str) -> None:
    """The server's key is served (the scheme's name in any case)."""
    server = await start_server(settings={"api_key": KEY})
    assert await ask(server, transport, KEY) == ("ok", "tiny")
    assert await ask(server, transport, KEY, scheme="bearer") == ("ok", "tiny")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_every_key_of_a_key_file_is_served(start_server: StartServer, transport: str, tmp_path: Path) -> None:
    """Each key of --api-key-file (comment lines and blank lines skipped; a # inside a key is part of it) and
    --api-key beside it is accepted."""
    keys = tmp_path / "keys"
    keys.write_text("# the team's keys\nfirst-key\n\n  # the CI's\n  second#key  \n", encoding="utf-8")
    server = await start_server(settings={"api_key": KEY, "api_key_file": keys})
    for key in ("first-key", "second#key", KEY):
        assert await ask(server, transport, key) == ("ok", "tiny")
    for key in ("# the team's keys", "second"):
        assert await ask(server, transport, key) == refusal(transport, WRONG)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_without_keys_the_server_is_open(start_server: StartServer, transport: str) -> None:
    """No key configured: requests with no key, or with any key, are served as before."""
    server = await start_server()
    assert await ask(server, transport, None) == ("ok", "tiny")
    assert await ask(server, transport, "anything") == ("ok", "tiny")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_health_is_open_without_a_key(start_server: StartServer, transport: str) -> None:
    """Health checks need no key: gRPC's Health service, and GET /healthz on the WebSocket and HTTP ports."""
    server = await start_server(settings={"api_key": KEY})
    if transport == "grpc":
        async with grpc.aio.insecure_channel(server.grpc_address) as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="antiphon.v1.Generation"), timeout=timeout(5)
            )
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        return
    address = server.ws_address if transport == "ws" else server.http_address
    async with httpx.AsyncClient(timeout=timeout(5)) as client:
        answer = await client.get(f"http://{address}/healthz")
    assert (answer.status_code, answer.text) == (200, "ok\n")


async def test_reflection_needs_the_key(start_server: StartServer) -> None:
    """gRPC server reflection describes the API only to a caller with a key."""
    server = await start_server(settings={"api_key": KEY})

    async def list_services(metadata: Any) -> list[str]:
        async with grpc.aio.insecure_channel(server.grpc_address) as channel:
            call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                metadata=metadata, timeout=timeout(5)
            )
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            response = await call.read()
            await call.done_writing()
        return sorted(s.name for s in response.list_services_response.service)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await list_services(None)
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, MISSING)
    assert "antiphon.v1.Generation" in await list_services((("authorization", f"Bearer {KEY}"),))


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 200),
        ("/static/chat.js", 200),
        ("/healthz", 200),
        ("/v1/models", 401),
        ("/v1/classifiers", 401),
        ("/metrics", 401),
        ("/v1/no-such-route", 401),
    ],
)
async def test_http_needs_the_key_but_for_health_and_the_page(
    start_server: StartServer, path: str, status: int
) -> None:
    """Over HTTP the health check and the chat page's files are open; everything else (/metrics too, and routes
    that do not exist) is refused without a key."""
    server = await start_server(settings={"api_key": KEY})
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(5)) as client:
        answer = await client.get(path)
    assert answer.status_code == status


async def test_a_page_on_another_origin_gets_its_preflight_and_a_readable_refusal(start_server: StartServer) -> None:
    """With --cors-origins, a browser's preflight (which carries no key) is answered, and a refusal carries the CORS
    headers, so the page that asked can read why."""
    origin = "https://chat.example"
    server = await start_server(settings={"api_key": KEY, "cors_origins": (origin,)})
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(5)) as client:
        preflight = await client.options(
            "/v1/models",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        refused = await client.get("/v1/models", headers={"Origin": origin})
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == origin


async def test_openai_sdk_with_a_wrong_key_raises_authentication_error(start_server: StartServer) -> None:
    """The official SDK (it sends Authorization: Bearer) reads the refusal as its AuthenticationError."""
    server = await start_server(settings={"api_key": KEY})
    base = f"http://{server.http_address}/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key="sk-wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as info:
            await client.chat.completions.create(model="tiny/fool", messages=[{"role": "user", "content": "Hail."}])
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert info.value.message == f"Error code: 401 - {WRONG}"


async def test_openai_sdk_with_the_key_chats(start_server: StartServer) -> None:
    """The official SDK with the server's key lists the models and streams a chat completion."""
    server = await start_server(settings={"api_key": KEY})
    base = f"http://{server.http_address}/v1"
    async with openai.AsyncOpenAI(base_url=base, api_key=KEY, max_retries=0) as client:
        models = await client.models.list()
        stream = await client.chat.completions.create(
            model="tiny/fool", messages=[{"role": "user", "content": "Hail."}], stream=True, max_tokens=8, seed=1
        )
        reasons = [chunk.choices[0].finish_reason async for chunk in stream if chunk.choices]
    assert models.data[0].id == "tiny"
    assert reasons[-1] in ("stop", "length")


@pytest.mark.parametrize("key", [KEY, "x" * 300, "clé ünïcode"])
async def test_a_browser_sends_the_key_as_a_subprotocol(start_server: StartServer, key: str) -> None:
    """A browser, which cannot set the handshake's headers, offers ``antiphon`` and ``antiphon.bearer.`` + the key in
    base64url; the server selects ``antiphon`` (a browser fails a handshake that selects none of its offers)."""
    server = await start_server(settings={"api_key": key})
    offered = ["antiphon", encode_subprotocol(key)]
    async with connect(f"ws://{server.ws_address}/", subprotocols=offered) as ws:
        await ws.send(json.dumps({"type": "list_models", "id": "m"}))
        frame = json.loads(await ws.recv())
    assert ws.subprotocol == "antiphon"
    assert frame["models"][0]["id"] == "tiny"


@pytest.mark.parametrize(
    ("offered", "message"),
    [
        (["antiphon"], MISSING),
        (["antiphon", encode_subprotocol("sk-wrong")], WRONG),
        (["antiphon", "antiphon.bearer.not*base64"], WRONG),
    ],
)
async def test_a_wrong_key_subprotocol_is_refused(start_server: StartServer, offered: list[str], message: str) -> None:
    """No key subprotocol, a wrong key, or one that is not base64url: 401 before the upgrade."""
    server = await start_server(settings={"api_key": KEY})
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://{server.ws_address}/", subprotocols=offered):
            pass
    assert (info.value.response.status_code, info.value.response.body) == (401, f"{message}\n".encode())


async def test_a_subprotocol_is_optional_without_keys(start_server: StartServer) -> None:
    """An open server selects ``antiphon`` when offered, and ignores a key subprotocol."""
    server = await start_server()
    offered = ["antiphon", encode_subprotocol("anything")]
    async with connect(f"ws://{server.ws_address}/", subprotocols=offered) as ws:
        assert ws.subprotocol == "antiphon"


async def test_a_refusal_is_one_info_line_without_the_key(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Each refused request leaves one INFO line naming the transport, the client's address and the reason; no log
    line holds a key, the websockets library's handshake headers at DEBUG included."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="websockets.server")  # whatever level an earlier `antiphon` run left
    wrong = "sk-this-one-is-wrong"
    server = await start_server(settings={"api_key": KEY})
    for transport in TRANSPORTS:
        await ask(server, transport, None)
        await ask(server, transport, wrong)
        await ask(server, transport, KEY)
    async with connect(f"ws://{server.ws_address}/", subprotocols=["antiphon", encode_subprotocol(KEY)]):
        pass
    refusals = [r for r in caplog.records if r.name == "server.transport.auth"]
    assert [(r.levelname, r.getMessage().split(" from ")[0]) for r in refusals] == [
        ("INFO", "refused grpc call /antiphon.v1.Generation/ListModels"),
        ("INFO", "refused grpc call /antiphon.v1.Generation/ListModels"),
        ("INFO", "refused websocket handshake /"),
        ("INFO", "refused websocket handshake /"),
        ("INFO", "refused http GET /v1/models"),
        ("INFO", "refused http GET /v1/models"),
    ]
    assert [r.getMessage().rsplit(": ", 1)[1] for r in refusals] == ["missing API key", "wrong API key"] * 3
    assert all("127.0.0.1:" in r.getMessage() for r in refusals)
    served = [r.getMessage() for r in caplog.records if not r.name.startswith("websockets.client")]  # the server's
    assert "< Authorization: [redacted]" in served  # websockets logged the handshake's headers, blanked
    encoded = encode_subprotocol(KEY).removeprefix("antiphon.bearer.")
    for secret in (KEY, wrong, encoded):
        assert not [line for line in served if secret in line]
