"""``GET /metrics`` on a real server: what the engines and transports count, read back as Prometheus parses it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from antiphon.v1 import generation_pb2_grpc, models_pb2
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sklearn.datasets import load_digits
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from tests.conftest import timeout
from tests.server.transport.clients import Failure, sdk

# The metrics are the same whatever runs the model: the default backend keeps this file short.
pytestmark = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)

StartServer = Callable[..., Any]
Connect = Callable[..., Any]


async def scrape(server: Any, key: str | None = None) -> list[Sample]:
    """Every sample of ``GET /metrics``, parsed as Prometheus reads the text format."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://{server.http_address}/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [sample for family in text_string_to_metric_families(response.text) for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 when there is none)."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


async def streamed_chat(server: Any) -> tuple[str, int]:
    """A streamed chat completion read to its end: its finish reason and the completion tokens its usage says."""
    reason, tokens = "", 0
    async with sdk(server) as client:
        stream = await client.chat.completions.create(
            model="tiny/fool",
            messages=[{"role": "user", "content": "Good night, my lord."}],
            seed=3,
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].finish_reason:
                reason = chunk.choices[0].finish_reason
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    return reason, tokens


async def test_requests_are_counted_by_transport_kind_and_finish_reason(
    start_server: StartServer, connect: Connect
) -> None:
    """A streamed chat completion and a generate over gRPC and WebSocket are each counted once, with their tokens."""
    server = await start_server()
    chat_reason, chat_tokens = await streamed_chat(server)
    received = {}
    for transport in ("grpc", "ws"):
        client = await connect(server, transport)
        received[transport] = await client.generate("Lear.\n", seed=1, max_tokens=30).finish()
    samples = await scrape(server)

    requests = {
        (s.labels["transport"], s.labels["kind"], s.labels["finish_reason"]): s.value
        for s in samples
        if s.name == "antiphon_requests_total"
    }
    assert requests == {
        ("http", "conversation", chat_reason): 1,
        ("grpc", "generate", "length"): 1,
        ("websocket", "generate", "length"): 1,
    }
    generated = "antiphon_generated_tokens_total"
    assert value(samples, generated, transport="http", kind="conversation") == chat_tokens
    assert value(samples, generated, transport="grpc") == received["grpc"].usage["completion_tokens"] == 30
    assert value(samples, generated, transport="websocket") == len(received["ws"].text) == 30
    assert value(samples, "antiphon_time_to_first_token_seconds_count", model="tiny", kind="generate") == 2
    assert value(samples, "antiphon_time_to_first_token_seconds_count", model="tiny", kind="conversation") == 1
    assert value(samples, "antiphon_request_duration_seconds_count", model="tiny") == 3
    assert value(samples, "antiphon_prefix_cache_misses_total", model="tiny") == 1  # the chat's one lookup
    assert value(samples, "antiphon_prefix_cache_hits_total", model="tiny") == 0
    assert value(samples, "antiphon_streams_running", model="tiny") == 0
    assert value(samples, "antiphon_streams_waiting", model="tiny") == 0


async def test_a_chat_turn_and_its_session_are_counted(start_server: StartServer, connect: Connect) -> None:
    """A chat turn over WebSocket is counted as kind chat, and the session it leaves is a chat session kept."""
    server = await start_server()
    client = await connect(server, "ws")
    result = await client.chat("s1", "Good morrow.", sampling={"seed": 2, "max_tokens": 20}).finish()
    samples = await scrape(server)
    assert value(samples, "antiphon_requests_total", transport="websocket", kind="chat") == 1
    assert value(samples, "antiphon_generated_tokens_total", kind="chat") == result.usage["completion_tokens"]
    assert value(samples, "antiphon_chat_sessions", model="tiny") == 1


async def test_iterations_are_observed_once_each_with_their_batch(start_server: StartServer, connect: Connect) -> None:
    """One stream alone: every iteration advanced a batch of one, and a token gap is taken between iterations only."""
    server = await start_server()
    client = await connect(server, "grpc")
    await client.generate("Lear.\n", seed=4, max_tokens=200).finish()
    samples = await scrape(server)
    iterations = value(samples, "antiphon_engine_iteration_seconds_count", model="tiny")
    assert iterations >= 1
    assert value(samples, "antiphon_engine_batch_size_sum", model="tiny") == iterations
    assert value(samples, "antiphon_engine_batch_size_count", model="tiny") == iterations
    assert value(samples, "antiphon_inter_token_latency_seconds_count", model="tiny") <= iterations - 1


async def test_refused_requests_are_counted_by_their_status_code(start_server: StartServer, connect: Connect) -> None:
    """A bad field over HTTP (400), an unknown model over gRPC and WebSocket: each transport's own code, once."""
    server = await start_server()
    async with httpx.AsyncClient() as http:
        body = {"model": "tiny", "prompt": "Lear.\n", "temperature": "hot"}
        response = await http.post(f"http://{server.http_address}/v1/completions", json=body)
    assert response.status_code == 400
    for transport in ("grpc", "ws"):
        client = await connect(server, transport)
        with pytest.raises(Failure) as failure:
            await client.generate("Lear.\n", model="nobody").finish()
        assert failure.value.code == "NOT_FOUND"
    samples = await scrape(server)
    errors = {(s.labels["transport"], s.labels["code"]): s.value for s in samples if s.name == "antiphon_errors_total"}
    assert errors == {("http", "400"): 1, ("grpc", "NOT_FOUND"): 1, ("websocket", "NOT_FOUND"): 1}
    assert value(samples, "antiphon_requests_total") == 0  # refused: no stream ever began


async def test_requests_without_the_key_are_counted_as_refused(start_server: StartServer) -> None:
    """A request refused by the API-key check counts once under the transport's own code; /metrics takes the key."""
    server = await start_server(settings={"api_key": "sk-metrics"})
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://{server.http_address}/v1/models")).status_code == 401
        assert (await http.get(f"http://{server.http_address}/metrics")).status_code == 401
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await generation_pb2_grpc.GenerationStub(channel).ListModels(models_pb2.ListModelsRequest())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(InvalidStatus):
        async with ws_connect(f"ws://{server.ws_address}"):
            pass
    samples = await scrape(server, key="sk-metrics")
    errors = {(s.labels["transport"], s.labels["code"]): s.value for s in samples if s.name == "antiphon_errors_total"}
    assert errors == {("http", "401"): 2, ("grpc", "UNAUTHENTICATED"): 1, ("websocket", "401"): 1}


async def test_a_binary_frame_is_counted_by_its_close_code(start_server: StartServer, connect: Connect) -> None:
    """A WebSocket binary frame closes the connection with 1003, counted under that code."""
    server = await start_server()
    client = await connect(server, "ws")
    await client.connection.send(b"\x00")
    await client.connection.wait_closed()
    samples = await scrape(server)
    assert value(samples, "antiphon_errors_total", transport="websocket", code="1003") == 1


async def test_an_oversized_message_is_counted_by_its_close_code(start_server: StartServer, connect: Connect) -> None:
    """A WebSocket message over --ws-max-message-bytes closes the connection with 1009, counted under that code."""
    server = await start_server(settings={"ws_max_message_bytes": 1024})
    client = await connect(server, "ws")
    await client.connection.send("x" * 2048)
    await client.connection.wait_closed()
    # The server's handler counts it as it unwinds, which may be after the client saw the connection close.
    async with asyncio.timeout(timeout(5)):
        while not value(samples := await scrape(server), "antiphon_errors_total", transport="websocket"):
            await asyncio.sleep(0.01)
    assert value(samples, "antiphon_errors_total", transport="websocket", code="1009") == 1


async def test_speech_counts_its_samples_and_speed(start_server: StartServer, connect: Connect) -> None:
    """An audio stream over WebSocket: kind speech, the samples the client received, one real-time ratio."""
    server = await start_server(audio={"max_seconds": 0.5})
    client = await connect(server, "ws")
    result = await client.generate_audio("Good night.", sampling={"seed": 1}).finish()
    samples = await scrape(server)
    assert value(samples, "antiphon_requests_total", model="tiny-wavenet", transport="websocket", kind="speech") == 1
    assert value(samples, "antiphon_generated_audio_samples_total", model="tiny-wavenet") == result.usage["samples"]
    assert result.usage["samples"] == len(result.audio) // 2  # PCM16
    assert value(samples, "antiphon_audio_realtime_ratio_count", model="tiny-wavenet") == 1
    assert value(samples, "antiphon_time_to_first_token_seconds_count", model="tiny-wavenet", kind="speech") == 1


async def test_a_classification_is_counted(start_server: StartServer) -> None:
    """POST /v1/classify is one request of kind classify, finished stop, over http."""
    server = await start_server(classifiers=("digits",))
    image = load_digits().images[0].astype(np.float32)
    body = {"model": "digits", "tensor": {"shape": [8, 8], "values": image.ravel().tolist()}}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"http://{server.http_address}/v1/classify", content=json.dumps(body))
    assert response.status_code == 200
    samples = await scrape(server)
    assert value(samples, "antiphon_requests_total", model="digits", transport="http", kind="classify") == 1
    assert value(samples, "antiphon_requests_total", model="digits", finish_reason="stop") == 1


async def test_servers_in_one_process_keep_their_own_counts(start_server: StartServer, connect: Connect) -> None:
    """Each server has its own registry: a request to one is not counted by the other."""
    first, second = await start_server(), await start_server()
    client = await connect(first, "grpc")
    await client.generate("Lear.\n", seed=1, max_tokens=5).finish()
    assert value(await scrape(first), "antiphon_requests_total") == 1
    assert value(await scrape(second), "antiphon_requests_total") == 0


async def test_metrics_off_answers_404(start_server: StartServer) -> None:
    """With --metrics off there is no /metrics."""
    server = await start_server(settings={"metrics": False})
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://{server.http_address}/metrics")
    assert response.status_code == 404


async def test_our_own_fault_is_a_json_500_counted_with_its_traceback_logged(
    start_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception no endpoint expected (a bug of ours, made here by a registry that raises): the client reads
    OpenAI's error object with 500, the errors counter has it, and the log has the traceback for us."""
    server = await start_server()

    def broken() -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(server.models, "text_infos", broken)
    async with httpx.AsyncClient(timeout=timeout(10)) as client:
        response = await client.get(f"http://{server.http_address}/v1/models")
    assert response.status_code == 500
    assert response.json() == {
        "error": {"message": "internal server error", "type": "server_error", "param": None, "code": None}
    }
    assert value(await scrape(server), "antiphon_errors_total", transport="http", code="500") == 1
    faults = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert faults and "a bug of ours" in str(faults[0].exc_info[1])


async def client_mistakes(server: Any, connect: Connect, name: str) -> None:
    """Requests naming ``name`` where the server has a closed set: a model over each transport, a path, a frame
    type. Each is refused."""
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}") as http:
        body = {"model": name, "messages": [{"role": "user", "content": "Hail."}]}
        assert (await http.post("/v1/chat/completions", json=body)).status_code == 404
        assert (await http.get(f"/{name}")).status_code == 404
    for transport in ("grpc", "ws"):
        client = await connect(server, transport)
        with pytest.raises(Failure):
            await client.generate("Lear.\n", model=name).finish()
    client = await connect(server, "ws")
    await client.connection.send(json.dumps({"type": name, "id": "t"}))
    assert json.loads(await client.connection.recv())["code"] == "INVALID_ARGUMENT"


def series(samples: list[Sample]) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(s.name, tuple(sorted(s.labels.items()))) for s in samples if not s.name.endswith("_created")}


async def test_names_a_client_chooses_make_no_new_series(start_server: StartServer, connect: Connect) -> None:
    """Unknown models, paths and frame types sent by clients are counted under bounded labels only: a second and a
    third name add no time series, and no label value holds one."""
    server = await start_server()
    await client_mistakes(server, connect, "nobody-1")
    first = await scrape(server)
    for name in ("nobody-2", "nobody-3"):
        await client_mistakes(server, connect, name)
    last = await scrape(server)
    assert series(last) == series(first)
    assert not [s for s in last if any("nobody" in v for v in s.labels.values())]
    assert value(last, "antiphon_errors_total") == 3 * value(first, "antiphon_errors_total")


def check_histograms(samples: list[Sample]) -> None:
    """Every histogram series' buckets are cumulative and end at +Inf with its _count."""
    buckets: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = {}
    counts = {}
    for s in samples:
        labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        if s.name.endswith("_bucket"):
            buckets.setdefault((s.name.removesuffix("_bucket"), labels), []).append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            counts[s.name.removesuffix("_count"), labels] = s.value
    assert buckets
    for key, pairs in buckets.items():
        pairs.sort()
        assert [v for _, v in pairs] == sorted(v for _, v in pairs), key
        assert pairs[-1] == (float("inf"), counts[key]), key


async def test_scrapes_under_traffic_are_consistent(start_server: StartServer, connect: Connect) -> None:
    """Scraped while streams run and after: histograms are cumulative, and no counter or histogram goes down."""
    server = await start_server()
    await streamed_chat(server)
    client = await connect(server, "grpc")
    running = [asyncio.create_task(client.generate("Lear.\n", seed=i, max_tokens=300).finish()) for i in range(3)]
    during = await scrape(server)
    await asyncio.gather(*running)
    after = await scrape(server)
    for samples in (during, after):
        check_histograms(samples)
    grew = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in after}
    for s in during:
        if s.name.endswith(("_total", "_bucket", "_count", "_sum")):
            assert grew[s.name, tuple(sorted(s.labels.items()))] >= s.value, s
