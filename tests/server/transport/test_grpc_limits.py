"""What a gRPC client of another language meets at the edges: compressed requests, requests over the size limit,
large metadata."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from antiphon.v1 import generation_pb2_grpc, sampling_pb2, text_pb2

from server.transport.grpc_options import MAX_MESSAGE_BYTES
from tests.conftest import timeout

# The limits are the transport's, whatever the engine's backend: the default one keeps this file short.
pytestmark = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)

StartServer = Callable[..., Any]


async def generate(channel: grpc.aio.Channel, prompt: str, **call: Any) -> list[text_pb2.TextChunk]:
    request = text_pb2.GenerateTextRequest(prompt=prompt, sampling=sampling_pb2.Sampling(seed=1, max_tokens=20))
    stub = generation_pb2_grpc.GenerationStub(channel)
    return [c async for c in stub.GenerateText(request, timeout=timeout(10), **call)]


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
async def test_a_compressed_request_is_served_as_a_plain_one(
    start_server: StartServer, compression: grpc.Compression
) -> None:
    """A request compressed with gzip or deflate (grpc-js ``grpc.default_compression_algorithm``) is read as the
    same request sent plain."""
    server = await start_server()
    prompt = "Kent.\nGood night.\n\n" * 50
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        plain = await generate(channel, prompt)
        compressed = await generate(channel, prompt, compression=compression)
    assert "".join(c.text for c in compressed) == "".join(c.text for c in plain)  # pieces may be cut otherwise
    assert compressed[-1] == plain[-1]
    assert plain[-1].usage.completion_tokens == 20


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip])
async def test_a_request_over_the_size_limit_is_resource_exhausted(
    start_server: StartServer, compression: grpc.Compression
) -> None:
    """A request over 4 MiB, sent plain or compressed to far less, is RESOURCE_EXHAUSTED (answered by gRPC itself,
    before the service reads it); the connection serves the next request."""
    server = await start_server()
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await generate(channel, "a" * MAX_MESSAGE_BYTES, compression=compression)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        if compression == grpc.Compression.NoCompression:
            assert info.value.details().endswith(f" vs. {MAX_MESSAGE_BYTES})")
        assert (await generate(channel, "Kent.\n"))[-1].usage.completion_tokens == 20


async def test_metadata_over_the_hard_limit_is_resource_exhausted(start_server: StartServer) -> None:
    """Metadata over 16 KiB is RESOURCE_EXHAUSTED naming the limit; a -bin value of any bytes is carried."""
    server = await start_server()
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await generate(channel, "Kent.\n", metadata=[("x-note", "a" * 20_000)])
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "vs. 16384" in (info.value.details() or "")
        served = await generate(channel, "Kent.\n", metadata=[("x-note-bin", "é\x00".encode() * 100)])
        assert served[-1].usage.completion_tokens == 20
