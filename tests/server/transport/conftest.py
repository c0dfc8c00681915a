"""Real servers on port 0 over the tiny model, and a client per transport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from server.app import Server
from server.engine.audio import AudioEngine, AudioLimits
from server.engine.classify import LOADERS, Classifier
from server.engine.image import ImageEngine
from server.engine.text import TextEngine
from server.settings import ServeSettings
from tests.server.transport.clients import GrpcClient, WebSocketClient

TRANSPORTS = ("grpc", "ws")


LOCAL = {"host": "127.0.0.1", "grpc_port": 0, "ws_port": 0, "http_port": 0, "grace_s": 1.0}
SCREENSHOTS = Path(__file__).resolve().parents[3] / "runs" / "screenshots"


@pytest.fixture
async def serve_engines() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """``await serve_engines(text=[...], audio=[...], classifiers=[...], images=[...], settings={...})``: a started
    server on free ports over those engines (``settings`` over local defaults), stopped after the test."""
    servers: list[Server] = []

    async def start(
        *,
        text: Sequence[TextEngine] = (),
        audio: Sequence[AudioEngine] = (),
        classifiers: Sequence[Classifier] = (),
        images: Sequence[ImageEngine] = (),
        settings: dict[str, Any] | None = None,
    ) -> Server:
        validated = ServeSettings(**{**LOCAL, **(settings or {})}).validated()
        server = Server(validated, list(text), list(audio), list(classifiers), list(images))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def start_server(
    make_text_engine: Callable[..., TextEngine],
    serve_engines: Callable[..., Awaitable[Server]],
    request: pytest.FixtureRequest,
) -> Callable[..., Awaitable[Server]]:
    """``await start_server(**engine_limits, settings=..., audio=None | {audio limits})``: a started server on free
    ports over the tiny text model, stopped after the test; with ``audio``, it also serves the tiny WaveNet, and the
    tiny ``classifiers`` (kws, textdisc, digits) named."""

    async def start(
        settings: dict[str, Any] | None = None,
        audio: dict[str, Any] | None = None,
        classifiers: tuple[str, ...] = (),
        **limits: Any,
    ) -> Server:
        audio_engines = []
        if audio is not None:
            checkpoint = request.getfixturevalue("tiny_audio_checkpoint")
            audio_engines.append(AudioEngine.from_checkpoint(checkpoint, "tiny-wavenet", AudioLimits(**audio)))
        loaded = [LOADERS[name](request.getfixturevalue(f"tiny_{name}_checkpoint"), name) for name in classifiers]
        text = [make_text_engine(**limits)]
        return await serve_engines(text=text, audio=audio_engines, classifiers=loaded, settings=settings)

    return start


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The page tests' browser (each module's own ``browser`` fixture), with a screenshot kept if the test fails."""
    yield browser
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / f"{request.node.name}.png"))


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
