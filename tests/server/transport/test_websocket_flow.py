"""WebSocket flow control against clients that send without reading: a stalled client is closed with 1008, a ping
flood or a burst of classify requests does not grow the server's memory, a shutdown is not held up by a client that
reads nothing, and a dropped chat turn frees its session at once."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode

from server.app import WS_CLOSE_TIMEOUT_S
from server.transport.websocket import MAX_CLASSIFYING
from server.transport.ws_connection import CoalescingConnection
from tests.conftest import timeout

StartServer = Callable[..., Any]
pytestmark = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)
ENDLESS = {"max_tokens": 1_000_000}  # outlasts any test
HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def _stalled_client(server: Any, streams: int) -> ClientConnection:
    """A client that starts ``streams`` endless streams, reads their first frame and then nothing more; both ends'
    socket buffers are small, so the server's write buffer fills in a moment."""
    host, port = server.ws_address.rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    ws = await connect(f"ws://{server.ws_address}/", sock=sock, ping_interval=None)
    for connection in server._ws.connections:
        connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    for i in range(streams):
        await ws.send(json.dumps({"type": "generate", "id": f"g{i}", "sampling": ENDLESS}))
    await asyncio.wait_for(ws.recv(), timeout(5))
    ws.transport.pause_reading()
    return ws


async def _text_of(ws: ClientConnection, request_id: str) -> dict[str, Any]:
    """The frame that ends ``request_id``."""
    while (frame := json.loads(await asyncio.wait_for(ws.recv(), timeout(10))))["type"] == "token":
        pass
    assert frame["id"] == request_id
    return frame


async def test_a_client_that_reads_nothing_is_closed_with_1008(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A client whose streams wait on it while it reads nothing for the stall time is closed with 1008: its streams
    leave the batch (they held their slots for ever), one INFO line says so, and another client is served."""
    monkeypatch.setattr(CoalescingConnection, "STALL_S", 1.0)
    caplog.set_level("INFO", logger="server.transport.websocket")
    server = await start_server(max_tokens=1_000_000, max_streams=4, max_waiting=0)
    engine = server.engines[0]
    stalled = await _stalled_client(server, streams=4)
    assert engine.live_streams == 4
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))
    async with connect(f"ws://{server.ws_address}/") as other:
        await other.send(json.dumps({"type": "generate", "id": "x", "sampling": {"max_tokens": 5}}))
        assert (await _text_of(other, "x"))["finish_reason"] == "length"
    closed = [r.getMessage() for r in caplog.records if "closed:" in r.getMessage()]
    assert closed == ["connection ws1 closed: server sent 1008 'the client read nothing for 1 s'"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    stalled.transport.abort()


async def test_a_client_that_reads_slowly_is_waited_for(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client reading a little at a time, slower than its stream is written, is not taken for one that reads
    nothing: after several stall times its stream still runs."""
    monkeypatch.setattr(CoalescingConnection, "STALL_S", 1.0)
    server = await start_server(max_tokens=1_000_000)
    engine = server.engines[0]
    slow = await _stalled_client(server, streams=1)
    slow.transport.resume_reading()
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout(3)
    while loop.time() < until:
        await asyncio.wait_for(slow.recv(), timeout(5))
        await asyncio.sleep(0.01)
    assert engine.live_streams == 1
    slow.transport.abort()


async def test_shutdown_is_not_held_up_by_a_client_that_reads_nothing(start_server: StartServer) -> None:
    """Shutdown with a client that reads nothing ends within the close timeout (its closing handshake waited for
    ever behind the unread frames; then 10 s, the library's default): the closing handshake waits 2 s for it. A
    client that reads gets 1001."""
    server = await start_server(max_tokens=1_000_000)
    stalled = await _stalled_client(server, streams=2)
    reader = await connect(f"ws://{server.ws_address}/")
    await reader.send(json.dumps({"type": "generate", "id": "r", "sampling": ENDLESS}))
    await asyncio.wait_for(reader.recv(), timeout(5))
    assert {connection.close_timeout for connection in server._ws.connections} == {WS_CLOSE_TIMEOUT_S}
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(server.stop(), timeout(30))
    assert asyncio.get_running_loop().time() - started < 8  # the close timeout, not the library's 10 s
    assert (await _text_of(reader, "r"))["finish_reason"] == "cancelled"
    await reader.wait_closed()
    assert (reader.close_code, reader.close_reason) == (1001, "")
    stalled.transport.abort()


async def test_a_ping_flood_from_a_client_that_reads_nothing_stays_bounded(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sending pings without reading the pongs fills its own socket: the server stops reading it once the
    pongs waiting to go out reach READ_HOLD_BYTES (they grew without bound: 21 MB of pongs for 25 MB of pings)."""
    monkeypatch.setattr(CoalescingConnection, "READ_HOLD_BYTES", 64 << 10)
    server = await start_server()
    host, port = server.ws_address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(HANDSHAKE)
    await reader.readuntil(b"\r\n\r\n")  # and nothing more: the reader stops reading its socket at 128 kB
    pings = Frame(Opcode.PING, b"p" * 125).serialize(mask=True, extensions=[]) * 1000  # 131 kB
    blocked = False
    for _ in range(300):  # at most 39 MB; the sockets on both ends hold a few MB
        writer.write(pings)
        try:
            await asyncio.wait_for(writer.drain(), timeout(1))
        except TimeoutError:
            blocked = True
            break
    (connection,) = server._ws.connections
    assert blocked
    assert connection.transport.get_write_buffer_size() < (64 << 10) + (256 << 10)
    writer.transport.abort()


async def test_a_chat_session_resumes_at_once_on_a_new_connection(start_server: StartServer) -> None:
    """A connection dropped mid-turn, then the same session's next turn on a new connection straight away: the
    session is free, as it was (the dropped turn held it until the engine's next step: FAILED_PRECONDITION)."""
    server = await start_server()
    for k in range(20):
        turn = {"type": "chat", "id": "c", "session_id": f"s{k}", "message": "Hail, my lord."}
        dropped = await connect(f"ws://{server.ws_address}/")
        await dropped.send(json.dumps({**turn, "sampling": {"max_tokens": 2000}}))
        await asyncio.wait_for(dropped.recv(), timeout(5))
        dropped.transport.abort()
        async with connect(f"ws://{server.ws_address}/") as again:
            await again.send(json.dumps({**turn, "sampling": {"max_tokens": 5}}))
            frame = await _text_of(again, "c")
        assert (frame["type"], frame.get("turns")) in (("done", 1), ("done", 2)), frame


async def test_a_connection_classifies_at_most_max_classifying_at_once(start_server: StartServer) -> None:
    """Classify requests sent without waiting for their answers run MAX_CLASSIFYING at a time, the rest wait in
    the client's socket (each one queued in the classifier with its input: 3,000 took 194 MB), and all are
    answered."""
    server = await start_server(classifiers=("kws",))
    audio = base64.b64encode(bytes(32000)).decode()  # one second of silence
    sent = 200
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, sum(not task.done() for task in server._transport._tasks))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    async with connect(f"ws://{server.ws_address}/") as ws:
        for i in range(sent):
            await ws.send(json.dumps({"type": "classify", "id": f"c{i}", "model": "kws", "audio": audio}))
        frames = [json.loads(await asyncio.wait_for(ws.recv(), timeout(30))) for _ in range(sent)]
    watcher.cancel()
    assert {f["type"] for f in frames} == {"labels"}
    assert sorted(f["id"] for f in frames) == sorted(f"c{i}" for i in range(sent))
    assert 1 <= most <= MAX_CLASSIFYING
