"""deploy/nginx.conf in front of a real server started with deploy/antiphon.service's settings: a real nginx with TLS,
reached as the site it serves (chat.example.org), over HTTP, WebSocket and gRPC."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from antiphon.v1 import generation_pb2_grpc, sampling_pb2, text_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from websockets.asyncio.client import connect
from websockets.typing import Origin

from tests.certs import make_certificates
from tests.conftest import timeout
from tests.deploy.test_unit import unit_environment
from tests.services import Nginx, Replica, free_port

REPO = Path(__file__).resolve().parents[2]
SITE = "chat.example.org"  # the server_name of deploy/nginx.conf
MIB = 1 << 20


@dataclass
class Site:
    address: str  # nginx's TLS port on 127.0.0.1
    ca: Path  # the authority that signed nginx's certificate
    server: Replica

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def render(replica: Replica, port: int, cert: Path, key: Path) -> str:
    """The committed configuration on a free port, with the test's certificate and the replica's ports."""
    conf = (REPO / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    conf = conf.replace("listen 443 ", f"listen 127.0.0.1:{port} ")
    conf = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};", conf)
    conf = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", conf)
    for default, actual in ((8765, replica.ws_port), (8000, replica.http_port), (50051, replica.grpc_port)):
        conf = conf.replace(f"server 127.0.0.1:{default};", f"server 127.0.0.1:{actual};")
    return conf


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tiny_text_checkpoint: Path) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("nginx")
    certificates = make_certificates(folder)
    # The unit's settings but the machine's own: its cache folders are the service's, and flags (ports, a short
    # grace) win over them.
    env = {k: v for k, v in unit_environment().items() if k.startswith("ANTIPHON_") and k != "ANTIPHON_CACHE"}
    args = ["--text-checkpoint", str(tiny_text_checkpoint), "--audio-checkpoint", "none", "--classifiers", "none"]
    args += ["--torch-threads", "1", "--text-threads", "1", "--grace-s", "1"]
    replica = Replica(args, env=env)
    port = free_port()
    proxy = Nginx(folder / "nginx", render(replica, port, certificates.cert, certificates.key), [port])
    try:
        replica.start()
        proxy.start()
        yield Site(f"127.0.0.1:{port}", certificates.ca, replica)
    finally:
        proxy.stop()
        replica.stop()


def client(site: Site) -> httpx.AsyncClient:
    """HTTPS to nginx, asking for the site by name as a browser or an SDK would."""
    return httpx.AsyncClient(
        base_url=f"https://{site.address}", headers={"Host": SITE}, verify=site.tls(), timeout=timeout(20)
    )


async def test_the_api_answers_requests_for_the_site(site: Site) -> None:
    """A request for chat.example.org reaches the server on loopback and is served, not refused for its Host."""
    async with client(site) as http:
        response = await http.get("/v1/models")
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "list"


async def test_a_completion_streams_through_nginx(site: Site) -> None:
    """A streamed chat completion comes through nginx as server-sent events, ended by ``data: [DONE]``."""
    body = {"model": "char-lstm", "messages": [{"role": "user", "content": "Hail."}], "max_tokens": 20, "stream": True}
    async with client(site) as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line async for line in response.aiter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]" and len(events) > 2


async def test_the_servers_log_names_the_client_not_nginx(site: Site) -> None:
    """nginx passes the client's address on (X-Forwarded-For, after whatever the client sent there), so the server's
    line for a refused request names the client (here 127.0.0.5), neither nginx's 127.0.0.1 nor a forged address."""
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.5", verify=site.tls())
    async with httpx.AsyncClient(base_url=f"https://{site.address}", transport=transport) as http:
        headers = {"Host": "attacker.example", "X-Forwarded-For": "203.0.113.7"}
        response = await http.get("/v1/models", headers=headers, timeout=timeout(20))
    assert response.status_code == 403
    async with asyncio.timeout(timeout(5)):  # the log is read from the server's stderr by a thread
        while not any("refused http GET /v1/models from 127.0.0.5" in line for line in site.server.log):
            await asyncio.sleep(0.02)


async def test_nginx_request_id_finds_the_servers_line(site: Site) -> None:
    """nginx names each request ($request_id, which its access log can carry) to the server: the answer's
    x-request-id is nginx's id, and the server's line about the request contains it."""
    async with client(site) as http:
        body = {"model": "char-lstm", "prompt": "a", "temperature": -1}
        response = await http.post("/v1/completions", json=body, headers={"X-Request-Id": "client-chosen"})
    assert response.status_code == 400
    request_id = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id  # nginx's, over the client's own
    async with asyncio.timeout(timeout(5)):
        while not any(f"request cmpl-{request_id} failed" in line for line in site.server.log):
            await asyncio.sleep(0.02)


async def test_healthz_answers_through_nginx(site: Site) -> None:
    """GET /healthz through nginx is the server's own health check."""
    async with client(site) as http:
        response = await http.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")


async def test_metrics_are_read_from_this_machine_only(site: Site) -> None:
    """/metrics through the site answers the scraper beside nginx (127.0.0.1) and refuses any other address."""
    async with client(site) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200 and "antiphon_" in response.text
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.5", verify=site.tls())
    async with httpx.AsyncClient(base_url=f"https://{site.address}", transport=transport) as http:
        response = await http.get("/metrics", headers={"Host": SITE}, timeout=timeout(20))
    assert response.status_code == 403 and "antiphon_" not in response.text


async def test_an_oversized_body_is_refused_by_the_server(site: Site) -> None:
    """A body just over the server's 4 MiB limit is refused by the server, in OpenAI's error object naming it."""
    async with client(site) as http:
        body = b" " * (4 * MIB + 1)
        response = await http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "body"


async def test_a_page_of_the_site_opens_the_websocket_under_ws(site: Site) -> None:
    """A WebSocket to wss://chat.example.org/ws from the site's own page is upgraded through nginx and served."""
    host, port = site.address.split(":")
    async with connect(
        f"wss://{SITE}:{port}/ws",
        host=host,
        port=int(port),
        ssl=site.tls(),
        server_hostname="localhost",  # the test certificate's name; the request's Host is still the site's
        origin=Origin(f"https://{SITE}"),
        open_timeout=timeout(10),
    ) as ws:
        await ws.send(json.dumps({"type": "list_models", "id": "m"}))
        assert json.loads(await ws.recv())["type"] == "models"


def grpc_channel(site: Site) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(site.ca.read_bytes())
    return grpc.aio.secure_channel(site.address, credentials, options=[("grpc.ssl_target_name_override", "localhost")])


async def test_grpc_health_answers_through_nginx(site: Site) -> None:
    """gRPC health checking goes through nginx's HTTP/2 port: SERVING."""
    async with grpc_channel(site) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout(10))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_grpc_request_over_a_mebibyte_reaches_the_server(site: Site) -> None:
    """A 1.5 MiB request (under the server's 4 MiB message limit) is answered by the server, which names its field,
    not cut by nginx's 1 MiB default body limit."""
    request = text_pb2.GenerateTextRequest(prompt="a" * (3 * MIB // 2), sampling=sampling_pb2.Sampling(max_tokens=1))
    async with grpc_channel(site) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [
                c async for c in generation_pb2_grpc.GenerationStub(channel).GenerateText(request, timeout=timeout(20))
            ]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.value.details() or "").startswith("prompt: at most")


async def reflect(site: Site, version: str) -> list[str]:
    """The services gRPC server reflection ``version`` lists through nginx."""
    method = f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
    async with grpc_channel(site) as channel:
        call = channel.stream_stream(
            method,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )(timeout=timeout(10))
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        await call.done_writing()
        return [s.name async for answer in call for s in answer.list_services_response.service]


async def test_reflection_clients_find_the_services_through_nginx(site: Site) -> None:
    """A reflection client (grpcurl) asks v1 first, which the gRPC server answers UNIMPLEMENTED (not the HTTP server
    with a 404), then v1alpha, which lists the services."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await reflect(site, "v1")
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "404" not in (info.value.details() or "")
    assert "antiphon.v1.Generation" in await reflect(site, "v1alpha")
