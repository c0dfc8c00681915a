"""WebSocket-only behaviour: /healthz, frame errors, close codes, id handling, cancel frames."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import timeout
from tests.server.helpers import reference_text

StartServer = Callable[..., Any]
LONG = json.dumps({"type": "generate", "id": "a", "sampling": {"max_tokens": 2000}})  # outlasts the test


async def _roundtrip(address: str, frame: str) -> dict[str, Any]:
    async with connect(f"ws://{address}/") as ws:
        await ws.send(frame)
        return json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))


async def _first_frame_after_the_tokens(ws: ClientConnection) -> dict[str, Any]:
    """Read the token frames as they come; the first frame of another type."""
    while (frame := json.loads(await asyncio.wait_for(ws.recv(), timeout(5))))["type"] == "token":
        pass
    return frame


async def test_healthz(start_server: StartServer) -> None:
    """GET /healthz on the WebSocket port answers 200 ok."""
    server = await start_server()

    def get() -> tuple[int, bytes]:
        with urllib.request.urlopen(f"http://{server.ws_address}/healthz", timeout=timeout(5)) as response:
            return response.status, response.read()

    assert await asyncio.to_thread(get) == (200, b"ok\n")


# A 10,000-character field name as errors name it: 200 characters, its start and end around the note.
_NOTE = "...(10000 characters, shortened)..."
SHORTENED_FIELD = "f" * ((200 - len(_NOTE) + 1) // 2) + _NOTE + "f" * ((200 - len(_NOTE)) // 2)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("not json", {"id": None, "field": "frame", "message": "frame: is not valid JSON"}),
        ("[1]", {"id": None, "field": "frame", "message": "frame: must be a JSON object"}),
        (  # valid JSON, but a number no request needs
            '{"type": "generate", "id": "a", "sampling": {"seed": 1' + "0" * 5000 + "}}",
            {"id": None, "field": "frame", "message": "frame: holds an integer of over 4300 digits"},
        ),
        (  # deeper than the JSON parser recurses: the client's mistake, not a traceback
            "[" * 20_000 + "]" * 20_000,
            {"id": None, "field": "frame", "message": "frame: is nested too deeply to be a request"},
        ),
        ('{"type": "generate"}', {"id": None, "field": "id", "message": "id: must be a string of 1..128 characters"}),
        (  # half of a UTF-16 pair, spelled by JSON's escapes: the error frame names where it is
            '{"type": "generate", "id": "a", "sampling": {"stop": ["x", "\\ud83d"]}}',
            {
                "id": "a",
                "field": "sampling.stop[1]",
                "message": "sampling.stop[1]: is not valid Unicode (a lone surrogate, U+D83D at character 0)",
            },
        ),
        (  # in the id itself: not echoed
            '{"type": "generate", "id": "\\udc00"}',
            {
                "id": None,
                "field": "id",
                "message": "id: is not valid Unicode (a lone surrogate, U+DC00 at character 0)",
            },
        ),
        (
            '{"type": "sing", "id": "a"}',
            {
                "id": "a",
                "field": "type",
                "message": "type: must be one of generate, chat, cancel, list_models, generate_audio, classify, "
                'generate_image, got "sing"',
            },
        ),
        (
            '{"type": "generate", "id": "a", "promt": "x"}',
            {"id": "a", "field": "promt", "message": "promt: unknown field of a generate request"},
        ),
        (
            '{"type": "generate", "id": "a", "prompt": 3}',
            {"id": "a", "field": "prompt", "message": "prompt: must be a string, got int"},
        ),
        (
            '{"type": "generate", "id": "a", "sampling": {"temperature": "hot"}}',
            {
                "id": "a",
                "field": "sampling.temperature",
                "message": 'sampling.temperature: must be a number, got "hot"',
            },
        ),
        (
            '{"type": "generate", "id": "a", "sampling": {"top_k": 1.5}}',
            {"id": "a", "field": "sampling.top_k", "message": "sampling.top_k: must be an integer, got 1.5"},
        ),
        (
            '{"type": "generate", "id": "a", "sampling": {"topk": 1}}',
            {"id": "a", "field": "sampling.topk", "message": "sampling.topk: unknown field"},
        ),
        (  # a repeated key: JSON parsers keep the last value, a proxy or the client's log may show the first
            '{"type": "generate", "id": "a", "sampling": {"seed": 1}, "sampling": {"seed": 2}}',
            {"id": "a", "field": "sampling", "message": "sampling: appears twice in its object"},
        ),
        (
            '{"type": "generate", "id": "a", "sampling": {"stop": [{}, {"seed": 1, "seed": 1}]}}',
            {
                "id": "a",
                "field": "sampling.stop[1].seed",
                "message": "sampling.stop[1].seed: appears twice in its object",
            },
        ),
        (  # which of the two would come back?
            '{"type": "generate", "id": "a", "id": "b"}',
            {"id": None, "field": "id", "message": "id: appears twice in its object"},
        ),
        (  # a field's name is the client's: a long one comes back shortened
            '{"type": "generate", "id": "a", "' + "f" * 10_000 + '": 1}',
            {
                "id": "a",
                "field": SHORTENED_FIELD,
                "message": SHORTENED_FIELD + ": unknown field of a generate request",
            },
        ),
    ],
)
async def test_bad_frame_gets_an_error_frame(start_server: StartServer, frame: str, expected: dict[str, Any]) -> None:
    """A malformed request gets an INVALID_ARGUMENT error frame naming the field; the connection stays open."""
    server = await start_server()
    assert await _roundtrip(server.ws_address, frame) == {"type": "error", "code": "INVALID_ARGUMENT", **expected}


async def test_overloaded_error_frame_has_a_reason(start_server: StartServer) -> None:
    """The overload error frame is RESOURCE_EXHAUSTED with reason "overloaded"."""
    server = await start_server(max_streams=1, max_waiting=0)
    async with connect(f"ws://{server.ws_address}/") as ws:
        await ws.send(LONG)
        assert json.loads(await ws.recv())["type"] == "token"
        await ws.send(json.dumps({"type": "generate", "id": "b"}))
        frame = await _first_frame_after_the_tokens(ws)
    assert [frame] == [
        {
            "type": "error",
            "id": "b",
            "code": "RESOURCE_EXHAUSTED",
            "reason": "overloaded",
            "message": "overloaded: 1 streams are running and 0 waiting; retry later",
        }
    ]


async def test_requests_are_multiplexed_and_cancel_sends_done(start_server: StartServer) -> None:
    """Two requests share a connection by id; a cancel frame ends one with finish_reason cancelled."""
    server = await start_server()
    async with connect(f"ws://{server.ws_address}/") as ws:
        await ws.send(json.dumps({"type": "generate", "id": "long", "sampling": {"max_tokens": 2000}}))
        await ws.send(json.dumps({"type": "generate", "id": "short", "sampling": {"max_tokens": 10}}))
        frames: dict[str, list[dict[str, Any]]] = {"long": [], "short": []}
        cancelled = False
        while not frames["long"] or frames["long"][-1]["type"] != "done":
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout(10)))
            frames[frame["id"]].append(frame)
            if frame["id"] == "short" and frame["type"] == "done" and not cancelled:
                await ws.send(json.dumps({"type": "cancel", "id": "long"}))
                cancelled = True
    short_text = "".join(f["text"] for f in frames["short"] if f["type"] == "token")
    assert len(short_text) == 10
    assert frames["short"][-1]["finish_reason"] == "length"
    assert frames["long"][-1]["finish_reason"] == "cancelled"
    assert frames["long"][-1]["usage"]["completion_tokens"] < 2000


@pytest.mark.parametrize("compression", ["none", "deflate"])
async def test_many_streams_on_one_connection_arrive_whole(
    start_server: StartServer, tiny_text_model: Any, compression: str
) -> None:
    """Sixteen seeded streams on one connection (their frames leave together, one write per pass of the event
    loop): each stream's text is its reference, in order; deflate is negotiated only when asked for."""
    server = await start_server(settings={"ws_compression": compression})
    streams = 16
    texts: dict[str, str] = {str(seed): "" for seed in range(streams)}
    done: dict[str, str] = {}
    async with connect(f"ws://{server.ws_address}/") as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        for seed in range(streams):
            sampling = {"seed": seed, "temperature": 1.0, "max_tokens": 80}
            await ws.send(json.dumps({"type": "generate", "id": str(seed), "prompt": "Kent.\n", "sampling": sampling}))
        while len(done) < streams:
            frame = json.loads(await asyncio.wait_for(ws.recv(), timeout(10)))
            assert frame["id"] not in done, "a frame after done"
            if frame["type"] == "token":
                texts[frame["id"]] += frame["text"]
            else:
                done[frame["id"]] = frame["finish_reason"]
    assert (extensions is not None and "permessage-deflate" in extensions) == (compression == "deflate")
    for seed in range(streams):
        expected, reason = reference_text(tiny_text_model, "Kent.\n", temperature=1.0, seed=seed, max_tokens=80)
        assert (texts[str(seed)], done[str(seed)]) == (expected, reason)


async def test_duplicate_running_id_is_rejected(start_server: StartServer) -> None:
    """An id still running on the connection cannot be reused."""
    server = await start_server()
    async with connect(f"ws://{server.ws_address}/") as ws:
        await ws.send(LONG)
        await ws.send(json.dumps({"type": "generate", "id": "a"}))
        frame = await _first_frame_after_the_tokens(ws)
    assert frame == {
        "type": "error",
        "id": "a",
        "code": "INVALID_ARGUMENT",
        "field": "id",
        "message": "id: 'a' names a request still running on this connection",
    }


async def test_binary_frame_closes_with_1003(start_server: StartServer) -> None:
    """Binary frames are not part of the text protocol: close code 1003."""
    server = await start_server()
    async with connect(f"ws://{server.ws_address}/") as ws:
        await ws.send(b"\x00")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), timeout(5))
    assert ws.close_code == 1003
    assert ws.close_reason == "binary frames are not accepted"


async def test_message_over_the_size_limit_closes_with_1009(start_server: StartServer) -> None:
    """A message over --ws-max-message-bytes closes the connection with 1009 (message too big)."""
    server = await start_server(settings={"ws_max_message_bytes": 2048})
    async with connect(f"ws://{server.ws_address}/") as ws:
        await ws.send(json.dumps({"type": "generate", "id": "a", "prompt": "x" * 4096}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), timeout(5))
    assert ws.close_code == 1009


async def test_a_compressed_message_inflating_past_the_limit_closes_with_1009(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With deflate negotiated as a browser offers it, a small compressed frame that inflates past
    --ws-max-message-bytes closes with 1009: the limit holds for the inflated message, logged as one INFO line."""
    caplog.set_level("INFO", logger="server.transport.websocket")
    server = await start_server(settings={"ws_compression": "deflate"})
    offer = "permessage-deflate; client_max_window_bits"  # what Chromium and Firefox send
    async with connect(f"ws://{server.ws_address}/", max_size=None) as ws:
        assert ws.request.headers["Sec-WebSocket-Extensions"] == offer
        await ws.send(json.dumps({"type": "generate", "id": "a", "prompt": " " * 10_000_000}))  # about 10 kB sent
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), timeout(5))
    assert (ws.close_code, ws.close_reason) == (1009, "frame exceeds limit of 65536 bytes")
    for _ in range(100):  # the server's handler logs once it has seen the close
        if any("closed:" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.01)
    assert [r.levelname for r in caplog.records if "closed:" in r.getMessage()] == ["INFO"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("oversized", "server sent 1009"),
        ("binary", "client sent a binary frame, server sent 1003"),
        ("client_error", "client sent 1011 'the client failed'"),
        ("drop", "the connection dropped without a closing handshake"),
    ],
)
async def test_how_a_client_left_is_one_info_line(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, how: str, expected: str
) -> None:
    """A frame over the size limit, a binary frame, a client closing with its own error code, or a dropped connection
    is logged as one INFO line naming the code, with no traceback and nothing at ERROR."""
    server = await start_server(settings={"ws_max_message_bytes": 2048})
    caplog.set_level("INFO", logger="server.transport.websocket")
    ws = await connect(f"ws://{server.ws_address}/")
    await ws.send(LONG)
    await ws.recv()
    if how in ("oversized", "binary"):
        await ws.send("x" * 4096 if how == "oversized" else b"\x00")
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), timeout(5))
    elif how == "client_error":
        await ws.close(1011, "the client failed")
    else:
        ws.transport.abort()
    await asyncio.wait_for(server.engines[0].wait_until(lambda: server.engines[0].live_streams == 0), timeout(5))
    for _ in range(100):  # the server's handler logs once it has seen the close
        if any("closed:" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.01)
    closed = [r for r in caplog.records if "closed:" in r.getMessage()]
    assert len(closed) == 1 and expected in closed[0].getMessage(), [r.getMessage() for r in caplog.records]
    assert closed[0].levelname == "INFO"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []


async def test_disconnect_frees_the_slots(start_server: StartServer) -> None:
    """A client that disconnects mid-stream leaves the batch."""
    server = await start_server()
    engine = server.engines[0]
    async with connect(f"ws://{server.ws_address}/") as ws:
        await ws.send(LONG)
        await ws.recv()
        assert engine.live_streams == 1
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(5))


async def _frames_until_done(ws: ClientConnection, request_id: str) -> list[Any]:
    """The frames of ``request_id`` (others are dropped), up to its done or error frame."""
    frames: list[Any] = []
    while True:
        raw = await asyncio.wait_for(ws.recv(), timeout(60))
        if isinstance(raw, bytes):
            frames.append(raw)
            continue
        frame = json.loads(raw)
        if frame["id"] == request_id:
            frames.append(frame)
            if frame["type"] in ("done", "error"):
                return frames


@pytest.mark.parametrize(
    ("request_frame", "field"),
    [
        ({"type": "generate", "sampling": {"top_p": 10**400}}, "sampling.top_p"),
        ({"type": "generate", "sampling": {"temperature": -(10**400)}}, "sampling.temperature"),
        ({"type": "generate_audio", "text": "Hail.", "max_seconds": 10**400}, "max_seconds"),
        ({"type": "classify", "model": "digits", "tensor": {"shape": [64], "values": [10**400] * 64}}, "tensor.values"),
        ({"type": "classify", "model": "digits", "tensor": {"shape": [64], "values": [1e39] * 64}}, "tensor.values"),
    ],
)
async def test_a_number_no_float_holds_is_an_error_frame_and_the_connection_goes_on(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, request_frame: dict[str, Any], field: str
) -> None:
    """JSON's integers have no limit: one of 400 digits where a float is read is an error frame naming the field,
    not a closed connection (which took the connection's other streams with it) or a request never answered."""
    server = await start_server(audio={}, classifiers=("digits",))
    async with connect(f"ws://{server.ws_address}/") as ws:
        await ws.send(
            json.dumps({"type": "generate", "id": "live", "prompt": "Kent.\n", "sampling": {"max_tokens": 40}})
        )
        await ws.send(json.dumps({**request_frame, "id": "bad"}))
        (refused,) = await _frames_until_done(ws, "bad")
        frames = await _frames_until_done(ws, "live")
    assert (refused["type"], refused["field"]) == ("error", field), refused
    assert frames[-1]["type"] == "done" and frames[-1]["usage"]["completion_tokens"] > 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_classify_takes_its_id_like_any_request(start_server: StartServer) -> None:
    """A classify request's id is in use until its labels go out: a classify reusing a running stream's id is
    refused, and nothing of that id follows the stream's done."""
    server = await start_server(classifiers=("textdisc",))
    async with connect(f"ws://{server.ws_address}/") as ws:
        await ws.send(LONG)
        await ws.send(json.dumps({"type": "classify", "id": "a", "model": "textdisc", "text": "Hail."}))
        await ws.send(json.dumps({"type": "cancel", "id": "a"}))
        frames = [json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))]
        while frames[-1]["type"] != "done":
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), timeout(5))))
        await ws.send(json.dumps({"type": "list_models", "id": "after"}))
        after = json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))
    errors = [f for f in frames if f["type"] == "error"]
    assert [(e["field"], e["code"]) for e in errors] == [("id", "INVALID_ARGUMENT")]
    assert not [f for f in frames if f["type"] == "labels"]
    assert (after["id"], after["type"]) == ("after", "models")  # no labels of "a" after its done


async def test_a_client_id_cannot_forge_a_log_line(start_server: StartServer, caplog: pytest.LogCaptureFixture) -> None:
    """An id is the client's text: in the log its line breaks and invisible characters are escaped."""
    caplog.set_level("INFO")
    server = await start_server()
    forged = "x\n2026-12-07 06:00:00,000 ERROR forged: line\u202e"
    async with connect(f"ws://{server.ws_address}/") as ws:
        await ws.send(json.dumps({"type": "generate", "id": forged, "sampling": {"max_tokens": 2}}))
        await ws.send(json.dumps({"type": "generate", "id": forged + "2", "sampling": {"max_tokens": -1}}))
        frames = [json.loads(await asyncio.wait_for(ws.recv(), timeout(5))) for _ in range(4)]
    assert {f["id"] for f in frames} == {forged, forged + "2"}  # the client gets its ids back as sent
    lines = [r.getMessage() for r in caplog.records if "forged" in r.getMessage()]
    assert len(lines) >= 2 and not [line for line in lines if "\n" in line or "\u202e" in line]


async def test_a_normal_close_while_a_reply_goes_out_is_quiet(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends a request and closes at once (its reply then meets a closed connection) leaves no
    ERROR line."""
    server = await start_server()
    for _ in range(10):
        async with connect(f"ws://{server.ws_address}/") as ws:
            await ws.send(json.dumps({"type": "list_models", "id": "m"}))
            await ws.send(json.dumps({"type": "generate", "id": "g", "sampling": {"max_tokens": -1}}))
    async with connect(f"ws://{server.ws_address}/") as ws:  # and the server goes on
        await ws.send(json.dumps({"type": "list_models", "id": "m"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))["type"] == "models"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_cancelling_a_spoken_turn_stops_its_speech(start_server: StartServer) -> None:
    """cancel during a spoken turn's audio (its text has been written) stops the speech: done says cancelled and
    the audio engine has no live stream."""
    server = await start_server(audio={})
    engine = server.models.audio_model("")
    async with connect(f"ws://{server.ws_address}/") as ws:
        turn = {"type": "chat", "id": "sp", "session_id": "s", "message": "Speak, my lord.", "speak": True}
        await ws.send(json.dumps({**turn, "sampling": {"seed": 21, "max_tokens": 80}}))
        while not isinstance(await asyncio.wait_for(ws.recv(), timeout(60)), bytes):
            pass  # the text, then the audio format: speech has begun
        await ws.send(json.dumps({"type": "cancel", "id": "sp"}))
        frames = await _frames_until_done(ws, "sp")
    assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "cancelled", frames[-1]
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))


async def test_a_cancel_racing_a_chat_turns_end_gets_one_ending(start_server: StartServer) -> None:
    """A cancel sent with a short chat turn races its end: each turn gets exactly one done (stop, length or
    cancelled) and nothing after it, and the next turn of the session is never refused as running."""
    server = await start_server()
    async with connect(f"ws://{server.ws_address}/") as ws:
        for i in range(20):
            turn = {"type": "chat", "id": "t", "session_id": "s", "message": "Hail.", "sampling": {"max_tokens": i % 4}}
            if not i % 4:
                turn.pop("sampling")
            await ws.send(json.dumps(turn))
            await ws.send(json.dumps({"type": "cancel", "id": "t"}))
            frame = await _first_frame_after_the_tokens(ws)
            assert frame["type"] == "done" and frame["finish_reason"] in ("stop", "length", "cancelled"), frame
        await ws.send(json.dumps({"type": "list_models", "id": "after"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))["id"] == "after"  # nothing of "t" after
