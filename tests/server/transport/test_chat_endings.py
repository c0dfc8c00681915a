"""Every way a chat turn ends releases its session, over both transports: the next turn on the session is accepted
and equals the reply computed from the history without the turn that did not complete."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from server.app import Server
from server.engine.text import TextEngine
from tests.conftest import timeout
from tests.server.helpers import Gate, fail_step, reference_text
from tests.server.transport.clients import Failure, WebSocketClient
from tests.server.transport.conftest import TRANSPORTS

# Sessions are the engine's, whatever its backend: one backend (the default) keeps this file short.
pytestmark = [
    pytest.mark.parametrize("transport", TRANSPORTS),
    pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True),
]

StartServer = Callable[..., Any]
Connect = Callable[..., Any]

FIRST = ("Good night.", 1)  # (message, seed) of the turn that completes before the one that ends early
SECOND = "My lord, the king is come."
THIRD = ("What love may do.", 3)
STOP = ("\n\n",)


def turn_text(message: str, persona: str = "Lear") -> str:
    return f"Kent.\n{message}\n\n{persona}.\n"


def followed(said: str, finish_reason: str | None) -> str:
    """A completed reply as the session has read it, with the blank line that closes it."""
    said += "\n\n" if finish_reason == "stop" else ""
    return said + ("" if said.endswith("\n\n") else "\n" if said.endswith("\n") else "\n\n")


def long_reply_seed(tiny_text_model: Any, history: str) -> int:
    """A seed whose reply to SECOND after ``history`` runs past 40 tokens, so a turn can end in its middle."""
    for seed in range(200):
        text, _ = reference_text(tiny_text_model, history + turn_text(SECOND), seed=seed, stop=STOP, max_tokens=2000)
        if len(text) > 40:
            return seed
    raise AssertionError("the tiny model gives no reply longer than 40 characters")


def engine_of(server: Server) -> TextEngine:
    engine = server.models.text["tiny"]
    assert isinstance(engine, TextEngine)
    return engine


async def settled(engine: TextEngine) -> None:
    """Wait until no stream is live, then check that no session is held."""
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))
    assert engine.sessions.busy_count() == 0
    assert all(s.turn is None for s in engine.sessions._sessions.values())


async def first_turn(client: Any, session: str) -> tuple[str, str | None]:
    result = await asyncio.wait_for(client.chat(session, FIRST[0], sampling={"seed": FIRST[1]}).finish(), timeout(10))
    assert result.finish_reason in ("stop", "length")
    return result.text, result.finish_reason


async def check_next_turn(client: Any, session: str, history: str, turns_before: int, tiny_text_model: Any) -> None:
    """The next turn on ``session`` is accepted and equals the reply to THIRD after ``history``."""
    result = await asyncio.wait_for(client.chat(session, THIRD[0], sampling={"seed": THIRD[1]}).finish(), timeout(10))
    expected = reference_text(tiny_text_model, history + turn_text(THIRD[0]), seed=THIRD[1], stop=STOP)
    assert (result.text, result.finish_reason) == expected
    assert result.turns == turns_before + 1


class Reading:
    """A request's stream read to its end by a task of its own; ``first`` is set at its first piece."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.first = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> Any:
        async for _ in self.stream:
            self.first.set()
        return self.stream.result

    async def finish_reason(self, transport: str) -> str | None:
        """How the stream ended as the client saw it; a gRPC client that cancelled hears its own cancellation."""
        (outcome,) = await asyncio.wait_for(asyncio.gather(self.task, return_exceptions=True), timeout(10))
        if transport == "grpc" and isinstance(outcome, Failure | asyncio.CancelledError):
            return "cancelled"
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome.finish_reason  # type: ignore[no-any-return]


async def until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` (for states the engine reaches while its worker is held, so no iteration ends)."""
    async with asyncio.timeout(timeout(10)):
        while not predicate():
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("stage", ["queued", "after_first_step", "after_first_token"])
@pytest.mark.parametrize("follows_a_turn", [True, False], ids=["second_turn", "first_turn"])
async def test_cancel_leaves_the_session_as_it_was(
    transport: str,
    stage: str,
    follows_a_turn: bool,
    start_server: StartServer,
    connect: Connect,
    tiny_text_model: Any,
) -> None:
    """A turn cancelled before its first step, after it, or after the client read its first token ends
    "cancelled"; the session takes the next turn as if the cancelled one had never been asked."""
    server = await start_server(stream_buffer=8)
    engine = engine_of(server)
    gate = Gate(engine)
    client = await connect(server, transport)
    history = ""
    if follows_a_turn:
        said, reason = await first_turn(client, "s")
        history = turn_text(FIRST[0]) + followed(said, reason)
    seed = long_reply_seed(tiny_text_model, history)

    blocker = None
    if stage == "queued":  # the engine's worker is busy with another stream: the turn waits to join
        gate.hold_after(0)
        blocker = Reading(client.generate("Lear.\n", max_tokens=50))
        await gate.holding()
    else:
        gate.hold_after(1 if stage == "after_first_step" else 2)
    turn = Reading(client.chat("s", SECOND, sampling={"seed": seed, "max_tokens": 2000}))
    if stage == "queued":
        await until(lambda: len(engine._waiting) == 1)
    else:
        await gate.holding()  # the turn has joined and taken its first step
    if stage == "after_first_token":
        # a few steps more, then held again: however slow the machine, the reply cannot end before the cancel
        # arrives (a reply that ended first would be the session's, whatever the client's call then says)
        gate.release(3)
        await asyncio.wait_for(turn.first.wait(), timeout(10))
    await turn.stream.cancel()
    gate.open()
    assert await turn.finish_reason(transport) == "cancelled"
    if transport == "ws":  # its done frame says the session's turn count, as it was
        assert turn.stream.result.turns == (1 if follows_a_turn else 0)
    if blocker is not None:
        assert await blocker.finish_reason(transport) == "length"
    await settled(engine)
    other = await connect(server, transport)  # any connection may take the session's next turn
    await check_next_turn(other, "s", history, 1 if follows_a_turn else 0, tiny_text_model)


@pytest.mark.parametrize("how", ["close", "drop"])
async def test_client_going_away_mid_reply_releases_the_session(
    transport: str, how: str, start_server: StartServer, connect: Connect, tiny_text_model: Any
) -> None:
    """A client that closes its connection, or whose connection drops, mid-reply leaves the session as it was."""
    server = await start_server(stream_buffer=8)
    engine = engine_of(server)
    gate = Gate(engine)
    client = await connect(server, transport)
    said, reason = await first_turn(client, "s")
    history = turn_text(FIRST[0]) + followed(said, reason)
    gate.hold_after(2)
    doomed = await connect(server, transport)
    seed = long_reply_seed(tiny_text_model, history)
    turn = Reading(doomed.chat("s", SECOND, sampling={"seed": seed, "max_tokens": 2000}))
    await gate.holding()
    if how == "drop" and isinstance(doomed, WebSocketClient):
        doomed.connection.transport.abort()  # no closing handshake: the TCP connection is reset
    await doomed.close()
    turn.task.cancel()  # the closed client hears nothing more
    gate.open()
    await asyncio.gather(turn.task, return_exceptions=True)
    await settled(engine)
    await check_next_turn(client, "s", history, 1, tiny_text_model)


async def test_turn_ending_by_itself_or_at_max_tokens_moves_the_session_on(
    transport: str, start_server: StartServer, connect: Connect, tiny_text_model: Any
) -> None:
    """A turn that stops (a blank line) and one that reaches max_tokens both complete: the next turn reads them."""
    server = await start_server()
    client = await connect(server, transport)
    said, reason = await first_turn(client, "s")
    history = turn_text(FIRST[0]) + followed(said, reason)
    seed = long_reply_seed(tiny_text_model, history)
    cut = await asyncio.wait_for(
        client.chat("s", SECOND, sampling={"seed": seed, "max_tokens": 20}).finish(), timeout(10)
    )
    assert (len(cut.text), cut.finish_reason, cut.turns) == (20, "length", 2)
    history += turn_text(SECOND) + followed(cut.text, cut.finish_reason)
    await settled(engine_of(server))
    await check_next_turn(client, "s", history, 2, tiny_text_model)


async def test_failed_step_mid_reply_releases_the_session(
    transport: str, start_server: StartServer, connect: Connect, tiny_text_model: Any
) -> None:
    """A turn whose step raises ends with an internal error; the session takes the next turn as it was."""
    server = await start_server(stream_buffer=8)
    engine = engine_of(server)
    client = await connect(server, transport)
    said, reason = await first_turn(client, "s")
    history = turn_text(FIRST[0]) + followed(said, reason)
    fail_step(engine, on_call=2)
    seed = long_reply_seed(tiny_text_model, history)
    with pytest.raises(Failure) as info:
        await asyncio.wait_for(client.chat("s", SECOND, sampling={"seed": seed}).finish(), timeout(10))
    assert (info.value.code, info.value.message) == ("INTERNAL", "internal error in model tiny")
    await settled(engine)
    await check_next_turn(client, "s", history, 1, tiny_text_model)


async def test_shutdown_mid_reply_releases_the_session(
    transport: str, start_server: StartServer, connect: Connect, tiny_text_model: Any
) -> None:
    """A turn still running when the server stops ends "cancelled" and its session is left as it was."""
    server = await start_server(settings={"grace_s": 0.0}, stream_buffer=8)
    engine = engine_of(server)
    gate = Gate(engine)
    client = await connect(server, transport)
    said, reason = await first_turn(client, "s")
    gate.hold_after(2)
    history = turn_text(FIRST[0]) + followed(said, reason)
    seed = long_reply_seed(tiny_text_model, history)
    turn = Reading(client.chat("s", SECOND, sampling={"seed": seed, "max_tokens": 2000}))
    await gate.holding()
    stopping = asyncio.create_task(server.stop())
    await until(lambda: engine._closing)
    gate.open()
    await asyncio.wait_for(stopping, timeout(10))
    await asyncio.gather(turn.task, return_exceptions=True)
    session = engine.sessions.get("s")
    assert session is not None
    assert (session.turn, session.turns) == (None, 1)
