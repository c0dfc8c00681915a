"""A property of chat sessions under random traffic against a real server: whatever mix of completed turns, cancels
and disconnects over both transports, no session stays held without a live turn, and a new session can start while
fewer than ``max_sessions`` turns are live."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.engine.text import TextEngine
from tests.conftest import timeout
from tests.server.transport.clients import Failure
from tests.server.transport.conftest import TRANSPORTS

MAX_SESSIONS = 4
SESSIONS = tuple(f"s{i}" for i in range(6))  # more ids than the cap: idle sessions are evicted along the way
ENDINGS = ("complete", "cancel", "close")

# One operation: (session, transport, how the turn ends, pieces read before it ends that way, seed).
operation = st.tuples(
    st.sampled_from(SESSIONS),
    st.sampled_from(TRANSPORTS),
    st.sampled_from(ENDINGS),
    st.integers(0, 3),
    st.integers(0, 1000),
)
# A wave: up to three operations on distinct sessions, run at once; a program: waves one after another.
wave = st.lists(operation, min_size=1, max_size=3, unique_by=lambda op: op[0])
program = st.lists(wave, min_size=1, max_size=6)


async def run_operation(server: Any, connect: Callable[..., Any], op: tuple[str, str, str, int, int]) -> None:
    session, transport, ending, pieces, seed = op
    client = await connect(server, transport)
    stream = client.chat(session, "Good night, my lord.", sampling={"seed": seed, "temperature": 1.5})
    try:
        async with asyncio.timeout(timeout(10)):
            read = 0
            async for _ in stream:
                read += 1
                if ending != "complete" and read > pieces:
                    break
            if ending == "cancel":
                await stream.cancel()
            elif ending == "close":
                await client.close()
    except Failure as exc:
        # Only a gRPC client's own cancel may end its call early; a refusal here is the bug this test looks for.
        assert transport == "grpc" and exc.code == "CANCELLED", exc


def check_invariant(engine: TextEngine) -> None:
    """No session is held unless its turn's stream is still live."""
    for session in engine.sessions._sessions.values():
        assert session.turn is None or session.turn.live(), session.id


@pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(waves=program)
async def test_random_turns_cancels_and_disconnects_never_lock_a_session(
    waves: list[list[tuple[str, str, str, int, int]]], start_server: Callable[..., Any], connect: Callable[..., Any]
) -> None:
    """After every wave of random turns, cancels and disconnects, no session is held without a live turn, and a
    brand-new session starts."""
    server = await start_server(max_sessions=MAX_SESSIONS, stream_buffer=4)
    engine = server.models.text["tiny"]
    fresh = itertools.count()
    try:
        for ops in waves:
            running = [asyncio.create_task(run_operation(server, connect, op)) for op in ops]
            while not all(task.done() for task in running):
                check_invariant(engine)
                await asyncio.sleep(0.002)
            await asyncio.gather(*running)
            await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))
            check_invariant(engine)
            assert engine.sessions.busy_count() == 0
            client = await connect(server, TRANSPORTS[next(fresh) % 2])
            result = await client.chat(f"new{next(fresh)}", "Hail.", sampling={"max_tokens": 1}).finish()
            assert result.finish_reason in ("stop", "length")
    finally:
        await server.stop()
