"""gRPC-only behaviour: health checking, reflection, and the RPCs not served yet."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from antiphon.v1 import audio_pb2, classify_pb2, generation_pb2_grpc, models_pb2, sampling_pb2, text_pb2
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import timeout

StartServer = Callable[..., Any]


@pytest.mark.parametrize("service", ["", "antiphon.v1.Generation"])
async def test_health_is_serving(start_server: StartServer, service: str) -> None:
    """The standard Health service answers SERVING for the server and for Generation."""
    server = await start_server()
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout(5)
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_services(start_server: StartServer) -> None:
    """Server reflection names Generation, Health and itself."""
    server = await start_server()
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=timeout(5))
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        response = await call.read()
        await call.done_writing()
    names = sorted(s.name for s in response.list_services_response.service)
    assert names == ["antiphon.v1.Generation", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]


async def test_generate_audio_is_unimplemented(start_server: StartServer) -> None:
    """GenerateAudio answers UNIMPLEMENTED with a message until an audio model is served."""
    server = await start_server()
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        call = generation_pb2_grpc.GenerationStub(channel).GenerateAudio(audio_pb2.GenerateAudioRequest())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert info.value.details() == "no audio model is served here (serve one with --audio-checkpoint)"


async def test_classify_is_unimplemented(start_server: StartServer) -> None:
    """Classify answers UNIMPLEMENTED with a message until a classifier is served."""
    server = await start_server()
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await generation_pb2_grpc.GenerationStub(channel).Classify(classify_pb2.ClassifyRequest(text="x"))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert info.value.details() == "no classifier is served here (serve them with --classifiers)"


async def test_health_not_serving_while_stopping(start_server: StartServer) -> None:
    """After stop() new RPCs are refused."""
    server = await start_server()
    address = server.grpc_address
    await server.stop()
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout(2))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


# Flow control is the transport's whatever the backend; the default one steps fastest (the eager and fused ones took
# 20-28 s to fill the window).
@pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)
async def test_a_client_that_stops_reading_is_paused_not_buffered(start_server: StartServer) -> None:
    """A stream whose client stops reading stops being generated once HTTP/2 flow control pushes back (bounded
    memory), and a second stream on another connection runs to completion meanwhile."""
    server = await start_server(settings={"max_tokens": 100_000}, max_tokens=100_000, stream_buffer=4)
    engine = server.engines[0]
    # No bandwidth-delay probing: the flow-control window stays at its 64 KiB default.
    slow_channel = grpc.aio.insecure_channel(server.grpc_address, options=[("grpc.http2.bdp_probe", 0)])
    slow = generation_pb2_grpc.GenerationStub(slow_channel).GenerateText(
        text_pb2.GenerateTextRequest(prompt="Lear.\n", sampling=sampling_pb2.Sampling(seed=1, max_tokens=100_000))
    )
    await slow.read()  # the stream runs; from here on nobody reads it

    async def paused() -> int:
        while True:
            before = engine.steps
            await asyncio.sleep(0.3)
            if engine.steps == before:
                return before

    steps = await asyncio.wait_for(paused(), timeout(60))
    assert steps < 50_000  # generation stopped far short of max_tokens: the server is not buffering it all

    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        request = text_pb2.GenerateTextRequest(prompt="Kent.\n", sampling=sampling_pb2.Sampling(seed=2, max_tokens=300))
        chunks = [
            c async for c in generation_pb2_grpc.GenerationStub(channel).GenerateText(request, timeout=timeout(30))
        ]
    assert sum(len(c.text) for c in chunks) == 300
    assert chunks[-1].finish_reason == sampling_pb2.FINISH_REASON_LENGTH
    # The finished stream leaves the batch at the next iteration; the slow one still holds its (paused) slot.
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 1), timeout(10))
    assert engine.steps < 50_000
    slow.cancel()
    await slow_channel.close()
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))


@pytest.mark.parametrize(
    ("method", "streaming", "data", "reason"),
    [
        ("GenerateText", True, b"\n\tchar-lstm\x12\x04K\xed\xa0\x80", "String field had bad UTF-8"),
        ("ListModels", False, b"\xff\xff\xff", ""),
        ("Classify", False, b"\x12\x05", ""),  # a length that runs past the end
    ],
)
async def test_a_request_that_is_not_its_message_is_invalid_argument(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, method: str, streaming: bool, data: bytes, reason: str
) -> None:
    """Bytes that do not parse as the request type (a client of another language sending a string that is not
    UTF-8, or another schema) are INVALID_ARGUMENT naming the type, one INFO line and no traceback; the server
    goes on serving."""
    server = await start_server()
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        make = channel.unary_stream if streaming else channel.unary_unary
        call = make(f"/antiphon.v1.Generation/{method}", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            answer = call(data, timeout=timeout(10))
            if streaming:
                async for _ in answer:
                    pass
            else:
                await answer
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith(f"request: is not a valid antiphon.v1.{method}Request")
        assert reason in info.value.details()
        chunks = generation_pb2_grpc.GenerationStub(channel).GenerateText(
            text_pb2.GenerateTextRequest(prompt="Kent.\n", sampling=sampling_pb2.Sampling(max_tokens=3))
        )
        assert [c async for c in chunks][-1].usage.completion_tokens == 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


ONE_BACKEND = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)  # the transport's, not the model's


async def reflect(address: str, request: reflection_pb2.ServerReflectionRequest) -> Any:
    async with grpc.aio.insecure_channel(address) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(timeout=timeout(5))
        await call.write(request)
        response = await call.read()
        await call.done_writing()
    return response


@ONE_BACKEND
@pytest.mark.parametrize(
    ("symbol", "first_file"),
    [
        ("antiphon.v1.Generation", "antiphon/v1/generation.proto"),
        ("antiphon.v1.Generation.GenerateText", "antiphon/v1/generation.proto"),
        ("antiphon.v1.GenerateTextRequest", "antiphon/v1/text.proto"),
        ("grpc.health.v1.Health.Watch", "grpc_health/v1/health.proto"),
    ],
)
async def test_reflection_describes_services_methods_and_messages(
    start_server: StartServer, symbol: str, first_file: str
) -> None:
    """Reflection finds the file of a service, a message and a method by its full name (grpcurl's
    ``describe antiphon.v1.Generation.GenerateText``), with the files it imports after it."""
    server = await start_server()
    response = await reflect(server.grpc_address, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    files = [FileDescriptorProto.FromString(b) for b in response.file_descriptor_response.file_descriptor_proto]
    assert files[0].name == first_file
    if symbol == "antiphon.v1.Generation.GenerateText":
        assert "antiphon/v1/text.proto" in [f.name for f in files]  # its request and response types


@ONE_BACKEND
@pytest.mark.parametrize("symbol", ["antiphon.v1.Generation.Nope", "antiphon.v1.Nope.GenerateText", "nope"])
async def test_reflection_answers_not_found_for_an_unknown_symbol(start_server: StartServer, symbol: str) -> None:
    """An unknown method, service or name is NOT_FOUND in the reflection answer, and the stream goes on."""
    server = await start_server()
    response = await reflect(server.grpc_address, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


@ONE_BACKEND
@pytest.mark.parametrize("service", ["", "antiphon.v1.Generation"])
async def test_health_watch_says_serving_then_not_serving_at_stop(start_server: StartServer, service: str) -> None:
    """Health's Watch (what grpc-health-probe -watch and Envoy use) sends SERVING, then NOT_SERVING when the server
    starts to stop."""
    server = await start_server()
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        call = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout(10)
        )
        assert (await call.read()).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(server.stop())
        assert (await call.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        call.cancel()
        await stopping


KEY = "sk-grpc"


@ONE_BACKEND
@pytest.mark.parametrize(
    "values", [("Bearer sk-wrong", f"Bearer {KEY}"), (f"Bearer {KEY}", "Bearer sk-wrong"), (f"Bearer {KEY}",) * 2]
)
async def test_two_authorization_values_are_refused(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, values: tuple[str, ...]
) -> None:
    """A call with the authorization metadata twice is UNAUTHENTICATED whatever the values and their order (not
    decided by the last one), in one INFO line."""
    caplog.set_level(logging.INFO, logger="server.transport.auth")
    server = await start_server(settings={"api_key": KEY})
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await generation_pb2_grpc.GenerationStub(channel).ListModels(
                models_pb2.ListModelsRequest(), metadata=[("authorization", v) for v in values], timeout=timeout(5)
            )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details() == "authorization: sent 2 times; send one, Bearer KEY"
    lines = [r.getMessage() for r in caplog.records if r.name == "server.transport.auth"]
    assert len(lines) == 1 and lines[0].endswith(": 2 authorization values"), lines
    assert KEY not in lines[0]


@ONE_BACKEND
@pytest.mark.parametrize("value", [f"bearer {KEY}", f"BEARER   {KEY}  "])
async def test_the_bearer_scheme_is_read_in_any_case(start_server: StartServer, value: str) -> None:
    """The scheme is case-insensitive (RFC 9110) and spaces around the key are not part of it."""
    server = await start_server(settings={"api_key": KEY})
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        response = await generation_pb2_grpc.GenerationStub(channel).ListModels(
            models_pb2.ListModelsRequest(), metadata=[("authorization", value)], timeout=timeout(5)
        )
    assert [m.id for m in response.models] == ["tiny"]


async def test_every_call_names_itself_with_a_request_id_that_finds_its_log_line(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every call's initial metadata carries ``x-request-id``, refusals included: the client's own where it sent a
    plain one (a trace id), else a fresh one; the server's lines about the call name it (``grpc-<id>``)."""
    caplog.set_level(logging.INFO)
    server = await start_server()
    request = text_pb2.GenerateTextRequest(prompt="Lear.\n", sampling=sampling_pb2.Sampling(max_tokens=3))
    refused = text_pb2.GenerateTextRequest(prompt="Lear.\n", sampling=sampling_pb2.Sampling(temperature=-1))
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        own = stub.GenerateText(request, metadata=(("x-request-id", "trace-4b1:7"),))
        [chunk async for chunk in own]
        fresh = stub.GenerateText(request, metadata=(("x-request-id", "not plain"),))
        [chunk async for chunk in fresh]
        bad = stub.GenerateText(refused)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            [chunk async for chunk in bad]
    ids = [dict(await call.initial_metadata())["x-request-id"] for call in (own, fresh, bad)]
    assert ids[0] == "trace-4b1:7"
    assert all(len(i) == 32 and set(i) <= set("0123456789abcdef") for i in ids[1:]) and ids[1] != ids[2]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("request grpc-trace-4b1:7 model=") for m in messages), messages
    assert any(
        m.startswith(f"request grpc-{ids[2]} failed: INVALID_ARGUMENT sampling.temperature") for m in messages
    ), messages
