"""The gRPC server's own keepalive pings: a client that vanished without closing its connection does not keep its
streams' engine slots. (The pings a client may send are tested with grpc-js, in tests/examples.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from antiphon.v1 import generation_pb2_grpc, sampling_pb2, text_pb2

from server.transport import grpc_options
from tests.conftest import timeout

# Keepalive is the transport's, whatever the engine's backend: the default one keeps this file short.
pytestmark = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)

StartServer = Callable[..., Any]


class Blackhole:
    """A TCP proxy to ``port`` that can go silent: after :meth:`silence` it forwards nothing either way and closes
    nothing, as a client whose machine slept or whose network dropped looks to the server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.silent = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def silence(self) -> None:
        self.silent.set()

    async def close(self) -> None:
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in self.writers:
            writer.close()

    async def _connect(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [client_writer, server_writer]
        self.tasks += [
            asyncio.create_task(self._pipe(client_reader, server_writer)),
            asyncio.create_task(self._pipe(server_reader, client_writer)),
        ]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.silent.is_set():
                await asyncio.Event().wait()  # hold the bytes, forward nothing, close nothing
            writer.write(data)
            await writer.drain()


async def test_a_client_gone_silent_frees_its_slot(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that stops answering without closing its connection (its stream paused by flow control, so the
    server has nothing to send that could fail) is found by the server's keepalive ping: the connection closes,
    the stream is cancelled and its slot freed, with the request's one INFO line and no warning."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(grpc_options, "KEEPALIVE_TIME_MS", 300)  # the test's time scale; the policy is the same
    monkeypatch.setattr(grpc_options, "KEEPALIVE_TIMEOUT_MS", 300)
    server = await start_server(settings={"max_tokens": 100_000}, max_tokens=100_000, stream_buffer=4)
    engine = server.engines[0]
    proxy = Blackhole(server.grpc_port)
    address = await proxy.start()
    channel = grpc.aio.insecure_channel(address, options=[("grpc.http2.bdp_probe", 0)])
    try:
        request = text_pb2.GenerateTextRequest(prompt="Lear.\n", sampling=sampling_pb2.Sampling(max_tokens=100_000))
        call = generation_pb2_grpc.GenerationStub(channel).GenerateText(request)
        await call.read()
        request_id = dict(await call.initial_metadata())["x-request-id"]
        proxy.silence()
        await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))
    finally:
        await proxy.close()
        await channel.close()
    ended = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"request grpc-{request_id} ")]
    assert len(ended) == 1 and ended[0].endswith(" finish=cancelled"), ended
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
