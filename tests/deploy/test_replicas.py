"""Replicas behind nginx (deploy/replicas/antiphon.conf) with one Redis: real processes, a real nginx, a real Redis.

A conversation whose turns go to different replicas replies exactly as one server would; a replica killed with
SIGKILL between turns loses no completed turn; a replica killed with a turn on it costs that turn only (its client
sees an error and sends it again, and the other replica takes it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import redis
from antiphon.v1 import chat_pb2, generation_pb2_grpc, sampling_pb2, text_pb2
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from tests.conftest import timeout
from tests.services import Nginx, RedisServer, Replica, free_port, redis_server

REPO = Path(__file__).resolve().parents[2]
REFERENCES = itertools.count()
FAIL_TIMEOUT_S = 1  # how long nginx skips a replica that failed (production: the default 10 s)
MESSAGES = ("Good night my lord.", "What love may do.", "Come hither, sirrah.", "Nothing will come of nothing.")


@dataclass
class Deployment:
    redis: RedisServer
    replicas: list[Replica]
    nginx: Nginx
    grpc: str  # nginx's gRPC address
    http: str  # nginx's HTTP address (WebSocket under /ws)

    async def restart(self, replica: Replica) -> None:
        """Start ``replica`` again and wait until nginx tries it again."""
        replica.start()
        await asyncio.sleep(FAIL_TIMEOUT_S + 0.2)

    def replica_at(self, upstream: str) -> Replica:
        """The replica nginx names in X-Antiphon-Upstream (its gRPC, WebSocket or HTTP address)."""
        port = int(upstream.rsplit(":", 1)[1])
        return next(r for r in self.replicas if port in (r.grpc_port, r.ws_port, r.http_port))


def render(replicas: list[Replica], grpc_port: int, http_port: int) -> str:
    """The committed configuration with its ${ANTIPHON_*} names filled in, as envsubst would (nginx's own $names
    stay)."""
    template = (REPO / "deploy" / "replicas" / "antiphon.conf").read_text(encoding="utf-8")

    def servers(attr: str) -> str:
        return " ".join(
            f"server 127.0.0.1:{getattr(r, attr)} max_fails=1 fail_timeout={FAIL_TIMEOUT_S}s;" for r in replicas
        )

    values = {
        "ANTIPHON_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
        "ANTIPHON_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "ANTIPHON_GRPC_SERVERS": servers("grpc_port"),
        "ANTIPHON_WS_SERVERS": servers("ws_port"),
        "ANTIPHON_HTTP_SERVERS": servers("http_port"),
    }
    return re.sub(r"\$\{(ANTIPHON_\w+)\}", lambda m: values[m.group(1)], template)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, tiny_text_checkpoint: Path) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("replicas")
    with redis_server(folder) as store:
        args = ["--text-checkpoint", str(tiny_text_checkpoint), "--audio-checkpoint", "none", "--classifiers", "none"]
        args += ["--session-store", store.url, "--torch-threads", "1", "--text-threads", "1", "--grace-s", "1"]
        replicas = [Replica(args), Replica(args)]
        grpc_port, http_port = free_port(), free_port()
        proxy = Nginx(folder / "nginx", render(replicas, grpc_port, http_port), [grpc_port, http_port])
        try:
            for replica in replicas:
                replica.start()
            proxy.start()
            yield Deployment(store, replicas, proxy, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}")
        finally:
            proxy.stop()
            for replica in replicas:
                replica.stop()


def chat_request(session: str, i: int, **sampling: int) -> chat_pb2.ChatRequest:
    return chat_pb2.ChatRequest(
        session_id=session, message=MESSAGES[i], sampling=sampling_pb2.Sampling(seed=100 + i, **sampling)
    )


async def chat(address: str, request: chat_pb2.ChatRequest, route: str | None = None) -> tuple[str, int, str]:
    """One chat turn over gRPC: (reply, turns, the replica nginx chose, or "" without nginx)."""
    metadata = (("x-session-id", route or request.session_id),)
    async with grpc.aio.insecure_channel(address) as channel:
        call = generation_pb2_grpc.GenerationStub(channel).Chat(request, metadata=metadata, timeout=timeout(20))
        pieces = [event async for event in call]
        upstream = dict(await call.initial_metadata()).get("x-antiphon-upstream", "")
    text = "".join(e.text for e in pieces if e.WhichOneof("event") == "text")
    return text, pieces[-1].done.turns, str(upstream)


async def upstream_of(address: str, route: str) -> str:
    """The replica nginx sends requests named ``route`` to (asked with a one-token generation)."""
    request = text_pb2.GenerateTextRequest(prompt="Lear.\n", sampling=sampling_pb2.Sampling(max_tokens=1))
    async with grpc.aio.insecure_channel(address) as channel:
        call = generation_pb2_grpc.GenerationStub(channel).GenerateText(request, metadata=(("x-session-id", route),))
        _ = [chunk async for chunk in call]
        return str(dict(await call.initial_metadata())["x-antiphon-upstream"])


async def routes_to_each(deployment: Deployment) -> list[str]:
    """One route name per replica: session names the consistent hash sends to different replicas."""
    found: dict[str, str] = {}
    for k in range(64):
        upstream = await upstream_of(deployment.grpc, f"route-{k}")
        found.setdefault(upstream, f"route-{k}")
        if len(found) == len(deployment.replicas):
            return list(found.values())
    raise AssertionError(f"64 session names reached only {sorted(found)}")


async def http_routes_to_each(deployment: Deployment, client: httpx.AsyncClient) -> list[str]:
    """One ``X-Session-Id`` per replica for HTTP (nginx hashes HTTP over its own upstream, apart from gRPC's)."""
    found: dict[str, str] = {}
    for k in range(64):
        response = await client.get("/v1/models", headers={"X-Session-Id": f"route-{k}"})
        found.setdefault(response.headers["x-antiphon-upstream"], f"route-{k}")
        if len(found) == len(deployment.replicas):
            return list(found.values())
    raise AssertionError(f"64 session names reached only {sorted(found)}")


def stored(deployment: Deployment, session: str, name: str) -> bytes:
    """A field of the session as Redis keeps it (b"" when there is none)."""
    client = redis.Redis.from_url(deployment.redis.url)
    try:
        return bytes(client.hget(f"antiphon:session:char-lstm:{session}", name) or b"")
    finally:
        client.close()


async def reference(deployment: Deployment, turns: int) -> tuple[list[str], bytes]:
    """The replies of one replica, reached directly, to an uninterrupted conversation, and the state it leaves (the
    tiny model's replies hardly depend on the history; its state does)."""
    address = f"127.0.0.1:{deployment.replicas[0].grpc_port}"
    session = f"reference-{next(REFERENCES)}"
    replies = [(await chat(address, chat_request(session, i)))[0] for i in range(turns)]
    return replies, stored(deployment, session, "state")


async def test_turns_on_different_replicas_reply_as_one_server(deployment: Deployment) -> None:
    """Turns of one session sent through nginx to each replica in turn reply exactly as one server would."""
    routes = await routes_to_each(deployment)
    got = [await chat(deployment.grpc, chat_request("spread", i), route=routes[i % 2]) for i in range(4)]
    assert ([g[0] for g in got], stored(deployment, "spread", "state")) == await reference(deployment, 4)
    assert [g[1] for g in got] == [1, 2, 3, 4]
    assert len({g[2] for g in got}) == 2  # both replicas served turns


async def test_a_replica_killed_between_turns_loses_no_completed_turn(deployment: Deployment) -> None:
    """The replica that served a turn is killed (SIGKILL); the next turn, through nginx, continues exactly on the
    other one."""
    first = await chat(deployment.grpc, chat_request("killed-between", 0))
    served = deployment.replica_at(first[2])
    served.kill()
    try:
        second = await chat(deployment.grpc, chat_request("killed-between", 1))
    finally:
        await deployment.restart(served)
    assert second[2] != first[2]
    assert ([first[0], second[0]], stored(deployment, "killed-between", "state")) == await reference(deployment, 2)
    assert (first[1], second[1]) == (1, 2)


async def test_a_replica_killed_with_a_turn_on_it_costs_that_turn_only(deployment: Deployment) -> None:
    """A turn whose replica dies before it completes fails for its client; the session is as the last completed
    turn left it, and the turn sent again is served by the other replica exactly."""
    session = "killed-mid-turn"
    first = await chat(deployment.grpc, chat_request(session, 0))
    serving = deployment.replica_at(await upstream_of(deployment.grpc, session))
    assert serving.process is not None
    serving.process.send_signal(signal.SIGSTOP)  # frozen with the turn on it: it cannot complete before the kill
    turn = asyncio.create_task(chat(deployment.grpc, chat_request(session, 1)))
    try:
        await asyncio.sleep(0.5)
        assert not turn.done()
        serving.kill()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(turn, timeout(20))
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
        assert stored(deployment, session, "turns") == b"1"
        again = await chat(deployment.grpc, chat_request(session, 1))
    finally:
        await deployment.restart(serving)
    assert deployment.replica_at(again[2]) is not serving
    assert ([first[0], again[0]], stored(deployment, session, "state")) == await reference(deployment, 2)
    assert again[1] == 2


async def test_websocket_and_http_go_through_the_same_nginx(deployment: Deployment) -> None:
    """A WebSocket chat turn (session named on the URL) continues a gRPC session, and the OpenAI-compatible API
    answers, through the same nginx."""
    await chat(deployment.grpc, chat_request("mixed", 0))
    async with connect(f"ws://{deployment.http}/ws?session_id=mixed", open_timeout=timeout(10)) as ws:
        frame = {"type": "chat", "id": "1", "session_id": "mixed", "message": MESSAGES[1], "sampling": {"seed": 101}}
        await ws.send(json.dumps(frame))
        pieces, done = [], None
        while done is None:
            event = json.loads(await asyncio.wait_for(ws.recv(), timeout(10)))
            assert event["type"] != "error", event
            if event["type"] == "token":
                pieces.append(event["text"])
            elif event["type"] == "done":
                done = event
    assert done["turns"] == 2
    replies, state = await reference(deployment, 2)
    assert ("".join(pieces), stored(deployment, "mixed", "state")) == (replies[1], state)
    async with httpx.AsyncClient(base_url=f"http://{deployment.http}", timeout=timeout(20)) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "char-lstm", "messages": [{"role": "user", "content": "Hail."}], "max_tokens": 8},
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-antiphon-upstream"]
    assert response.json()["choices"][0]["message"]["role"] == "assistant"


async def test_a_page_served_through_nginx_may_call_it_and_another_site_may_not(deployment: Deployment) -> None:
    """nginx passes the browser's Host on, so a page served through it (its Origin nginx's address) opens the
    WebSocket under /ws and posts to the API; a page of another site is refused 403 by the replica, both ways."""
    page, other = Origin(f"http://{deployment.http}"), Origin("http://attacker.example")
    async with connect(f"ws://{deployment.http}/ws", origin=page, open_timeout=timeout(10)) as ws:
        await ws.send(json.dumps({"type": "list_models", "id": "m"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), timeout(10)))["type"] == "models"
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://{deployment.http}/ws", origin=other, open_timeout=timeout(10)):
            pass
    assert info.value.response.status_code == 403
    body = {"model": "char-lstm", "messages": [{"role": "user", "content": "Hail."}], "max_tokens": 4}
    async with httpx.AsyncClient(base_url=page, timeout=timeout(20)) as client:
        served = await client.post("/v1/chat/completions", json=body, headers={"Origin": page})
        refused = await client.post("/v1/chat/completions", json=body, headers={"Origin": other})
    assert (served.status_code, refused.status_code) == (200, 403)
    assert refused.json()["error"]["message"].startswith("Origin http://attacker.example is not allowed")


async def test_a_response_is_continued_and_read_back_on_the_other_replica(deployment: Deployment) -> None:
    """A Responses API reply kept by one replica (in Redis) is continued with ``previous_response_id`` and read back
    through the other, and the continuation is the reply to the whole conversation sent at once."""

    async def respond(client: httpx.AsyncClient, route: str, **fields: Any) -> dict[str, Any]:
        body = {"model": "char-lstm", "max_output_tokens": 30, "seed": 7, **fields}
        response = await client.post("/v1/responses", json=body, headers={"X-Session-Id": route})
        assert response.status_code == 200, response.text
        return {**response.json(), "upstream": response.headers["x-antiphon-upstream"]}

    async with httpx.AsyncClient(base_url=f"http://{deployment.http}", timeout=timeout(20)) as client:
        routes = await http_routes_to_each(deployment, client)
        first = await respond(client, routes[0], input=MESSAGES[0])
        second = await respond(client, routes[1], input=MESSAGES[1], previous_response_id=first["id"])
        read = await client.get(f"/v1/responses/{first['id']}", headers={"X-Session-Id": routes[1]})
        whole = await respond(
            client,
            routes[0],
            store=False,
            input=[
                {"role": "user", "content": MESSAGES[0]},
                {"role": "assistant", "content": first["output"][0]["content"][0]["text"]},
                {"role": "user", "content": MESSAGES[1]},
            ],
        )
    assert first["upstream"] != second["upstream"] == read.headers["x-antiphon-upstream"]
    assert read.status_code == 200 and read.json()["output"] == first["output"]
    assert second["output"][0]["content"][0]["text"] == whole["output"][0]["content"][0]["text"]


async def test_a_grpc_request_over_a_mebibyte_reaches_a_replica(deployment: Deployment) -> None:
    """A 1.5 MiB request (under the replicas' 4 MiB message limit) is answered by a replica, which names its field,
    not cut by nginx's 1 MiB default body limit."""
    request = text_pb2.GenerateTextRequest(prompt="a" * (3 << 19), sampling=sampling_pb2.Sampling(max_tokens=1))
    async with grpc.aio.insecure_channel(deployment.grpc) as channel:
        call = generation_pb2_grpc.GenerationStub(channel).GenerateText(request, timeout=timeout(20))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [chunk async for chunk in call]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("prompt: at most")


async def test_an_oversized_body_is_refused_by_a_replica(deployment: Deployment) -> None:
    """An HTTP body just over the replicas' 4 MiB limit is refused by a replica in OpenAI's error object naming it,
    not by nginx with an HTML page."""
    async with httpx.AsyncClient(base_url=f"http://{deployment.http}", timeout=timeout(20)) as client:
        response = await client.post(
            "/v1/chat/completions", content=b" " * ((4 << 20) + 1), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "body"
