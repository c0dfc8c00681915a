"""Deadlines that pass mid-stream and calls cancelled, over gRPC: the engines stop the work at once, free the slots
and the session, and log each request's one INFO line, with no warning."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from antiphon.v1 import audio_pb2, chat_pb2, generation_pb2_grpc, sampling_pb2, text_pb2

from server.app import Server
from tests.conftest import timeout
from tests.server.helpers import Gate

# Deadlines are the transport's, whatever the engine's backend: the default one keeps this file short.
pytestmark = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)

StartServer = Callable[..., Any]
SPEECH = "Friends, Romans, countrymen, lend me your ears; " * 8
NO_WINDOW_GROWTH = [("grpc.http2.bdp_probe", 0)]  # a client that stops reading is paused after 64 KiB


def call_of(stub: generation_pb2_grpc.GenerationStub, kind: str, deadline_s: float | None) -> Any:
    if kind == "text":
        sampling = sampling_pb2.Sampling(seed=1, max_tokens=100_000)
        return stub.GenerateText(text_pb2.GenerateTextRequest(prompt="Lear.\n", sampling=sampling), timeout=deadline_s)
    if kind == "audio":
        request = audio_pb2.GenerateAudioRequest(text=SPEECH, chunk_samples=160)
        return stub.GenerateAudio(request, timeout=deadline_s)
    sampling = sampling_pb2.Sampling(seed=21, max_tokens=300)
    request = chat_pb2.ChatRequest(session_id="s", message="Speak, my lord.", sampling=sampling, speak=kind == "speak")
    return stub.Chat(request, timeout=deadline_s)


async def drained(server: Server) -> None:
    for engine in server.engines:
        await asyncio.wait_for(engine.wait_until(lambda e=engine: e.live_streams == 0), timeout(10))


def request_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("request grpc-")]


@pytest.mark.parametrize("kind", ["text", "chat", "audio", "speak"])
async def test_a_deadline_passing_mid_stream_cancels_the_work(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """A call whose deadline passes while it streams ends DEADLINE_EXCEEDED; its engine work is cancelled and its
    slot freed, the request logs its one INFO line, and a chat session takes its next turn as its first."""
    caplog.set_level(logging.INFO)
    server = await start_server(settings={"max_tokens": 100_000}, max_tokens=100_000, audio={}, stream_buffer=8)
    text_engine = server.engines[0]
    # A chat reply ends by itself within a few steps, and a spoken one's audio fits the flow-control window: the
    # engine is held mid-reply instead, so the deadline passes while the turn is being written.
    gate = Gate(text_engine) if kind in ("chat", "speak") else None
    async with grpc.aio.insecure_channel(server.grpc_address, options=NO_WINDOW_GROWTH) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        if gate is not None:
            gate.hold_after(2)
        call = call_of(stub, kind, timeout(1))
        await call.read()  # it streams; from here on nobody reads, and the deadline passes
        request_id = dict(await call.initial_metadata())["x-request-id"]
        if gate is not None:
            await gate.holding()
        assert await asyncio.wait_for(call.code(), timeout(10)) == grpc.StatusCode.DEADLINE_EXCEEDED
        if gate is not None:
            # The held reply would end by itself within a step or two: the gate opens once the server has the
            # cancel (the handler's cancellation may land a moment after the client's deadline).
            async with asyncio.timeout(timeout(10)):
                while not all(job.stream.cancel_requested for job in text_engine._jobs):
                    await asyncio.sleep(0.005)
            gate.open()
        await drained(server)
        if kind in ("chat", "speak"):
            follow = chat_pb2.ChatRequest(session_id="s", message="Hi.", sampling=sampling_pb2.Sampling(max_tokens=5))
            events = [e async for e in stub.Chat(follow, timeout=timeout(10))]
            assert events[-1].done.turns == 1  # the cancelled turn left the session as it was
    lines = request_lines(caplog)
    first = [line for line in lines if line.startswith(f"request grpc-{request_id} ")]
    assert len(first) == 1, lines
    assert first[0].endswith(" finish=cancelled"), lines
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_turn_sent_right_after_a_cancelled_one_is_accepted(start_server: StartServer) -> None:
    """A chat turn cancelled mid-reply frees its session at once: the next turn, sent before the engine's next
    step drops the cancelled one, is served as the session's first."""
    server = await start_server(stream_buffer=8)
    engine = server.engines[0]
    gate = Gate(engine)
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        gate.hold_after(2)
        sampling = sampling_pb2.Sampling(seed=3, max_tokens=2000)
        call = stub.Chat(chat_pb2.ChatRequest(session_id="s", message="Speak, my lord.", sampling=sampling))
        await gate.holding()  # the engine is held mid-reply: the cancelled turn stays in the batch meanwhile
        call.cancel()
        async with asyncio.timeout(timeout(10)):
            while not any(job.stream.cancel_requested for job in engine._jobs):  # the server has the cancel
                await asyncio.sleep(0.005)
        follow = chat_pb2.ChatRequest(session_id="s", message="Hi.", sampling=sampling_pb2.Sampling(max_tokens=5))
        next_turn = stub.Chat(follow, timeout=timeout(10))
        async with asyncio.timeout(timeout(10)):
            while not engine._waiting and not next_turn.done():  # queued behind the held step, or refused
                await asyncio.sleep(0.005)
        gate.open()
        events = [e async for e in next_turn]
    assert events[-1].done.turns == 1
    await drained(server)
    assert engine.sessions.busy_count() == 0
