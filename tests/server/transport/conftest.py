"""Real servers on port 0 over the tiny model, and a client per transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from server.app import Server
from server.engine.audio import AudioEngine, AudioLimits
from server.engine.classify import LOADERS
from server.engine.text import TextEngine
from server.settings import ServeSettings
from tests.server.transport.clients import GrpcClient, WebSocketClient

TRANSPORTS = ("grpc", "ws")


@pytest.fixture
async def start_server(
    make_text_engine: Callable[..., TextEngine], request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Any]]:
    """``await start_server(**engine_limits, settings=..., audio=None | {audio limits})``: a started server on free
    ports, stopped after the test; with ``audio``, it also serves the tiny WaveNet, and the tiny ``classifiers``
    (kws, textdisc, digits) named."""
    servers: list[Server] = []

    async def start(
        settings: dict[str, Any] | None = None,
        audio: dict[str, Any] | None = None,
        classifiers: tuple[str, ...] = (),
        **limits: Any,
    ) -> Server:
        options = {
            "host": "127.0.0.1",
            "grpc_port": 0,
            "ws_port": 0,
            "http_port": 0,
            "grace_s": 1.0,
            **(settings or {}),
        }
        audio_engines = []
        if audio is not None:
            checkpoint = request.getfixturevalue("tiny_audio_checkpoint")
            audio_engines.append(AudioEngine.from_checkpoint(checkpoint, "tiny-wavenet", AudioLimits(**audio)))
        loaded = [LOADERS[name](request.getfixturevalue(f"tiny_{name}_checkpoint"), name) for name in classifiers]
        server = Server(ServeSettings(**options).validated(), [make_text_engine(**limits)], audio_engines, loaded)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    """``await connect(server, "grpc" | "ws")``: a client, closed after the test."""
    clients: list[Any] = []

    async def open_client(server: Server, transport: str) -> GrpcClient | WebSocketClient:
        client: GrpcClient | WebSocketClient
        if transport == "grpc":
            client = GrpcClient(server.grpc_address)
        else:
            client = await WebSocketClient.open(server.ws_address)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()
