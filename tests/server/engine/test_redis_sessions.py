"""Chat sessions in a real Redis: any engine continues any session exactly, a restart loses nothing, two turns at
once cannot both move a session on, and a Redis that goes away fails chat turns only, until it is back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from server.engine.redis_sessions import KEY_PREFIX, RedisSessions, redacted
from server.engine.requests import ChatTurn, SamplingOptions, TextRequest
from server.engine.text import TextEngine
from server.errors import FailedPrecondition, Unavailable
from tests.conftest import timeout
from tests.server.helpers import collect
from tests.services import RedisServer

MESSAGES = ("Good night my lord.", "What love may do.", "Come hither, sirrah.", "Nothing will come of nothing.")
MakeEngine = Callable[..., TextEngine]


@pytest.fixture
def make_engine(make_text_engine: Callable[..., TextEngine]) -> MakeEngine:
    """Started engines over the tiny model (each backend in turn); ``url`` None keeps sessions in memory."""

    def make(url: str | None, fingerprint: str = "tiny-1", ttl_s: float = 60.0, **limits: Any) -> TextEngine:
        shared = RedisSessions(url, "tiny", fingerprint, ttl_s) if url else None
        return make_text_engine(shared=shared, session_ttl_s=ttl_s, **limits)

    return make


def turn(session: str, i: int, **sampling: Any) -> ChatTurn:
    return ChatTurn(session, MESSAGES[i], sampling=SamplingOptions(seed=100 + i, **sampling))


async def reply(engine: TextEngine, chat: ChatTurn) -> tuple[str, str | None, int]:
    stream = engine.chat(chat)
    text = await asyncio.wait_for(collect(stream), timeout(10))
    return text, stream.finish_reason, stream.turns


async def reference(make_engine: MakeEngine, turns: int) -> tuple[list[tuple[str, str | None, int]], bytes]:
    """The replies of one engine that keeps the session in memory, and its state after them as Redis keeps one."""
    alone = make_engine(None)
    replies = [await reply(alone, turn("ref", i)) for i in range(turns)]
    session = alone.sessions.get("ref")
    assert session is not None
    row = alone.backend.dump_row(session.state)
    return replies, b"".join(a.astype("<f4").tobytes() for a in (row.h, row.c, row.logits))


async def stored_state(url: str, session: str) -> bytes:
    client = aioredis.Redis.from_url(url)
    try:
        return bytes(await client.hget(f"{KEY_PREFIX}tiny:{session}", "state") or b"")
    finally:
        await client.aclose()


async def test_turns_on_different_engines_equal_one_engine(make_engine: MakeEngine, redis: RedisServer) -> None:
    """A conversation whose turns alternate between two engines sharing a Redis replies exactly as one engine, and
    ends in exactly its state (the replies of the tiny model hardly depend on the history; its state does)."""
    a, b = make_engine(redis.url), make_engine(redis.url)
    got = [await reply((a, b)[i % 2], turn("s", i)) for i in range(4)]
    assert (got, await stored_state(redis.url, "s")) == await reference(make_engine, 4)
    await reply(a, turn("alone", 3))  # the last turn without the history before it
    assert await stored_state(redis.url, "alone") != (await reference(make_engine, 4))[1]


async def test_a_restart_loses_no_completed_turn(make_engine: MakeEngine, redis: RedisServer) -> None:
    """An engine closed after two turns, and a new one over the same Redis, continue the session exactly."""
    first = make_engine(redis.url)
    got = [await reply(first, turn("s", i)) for i in range(2)]
    await first.close()
    again = make_engine(redis.url)
    got += [await reply(again, turn("s", i)) for i in (2, 3)]
    assert (got, await stored_state(redis.url, "s")) == await reference(make_engine, 4)


async def test_the_session_is_kept_with_its_time_to_live(make_engine: MakeEngine, redis: RedisServer) -> None:
    """The session's hash holds its turns and persona, and expires after the session's time-to-live."""
    engine = make_engine(redis.url, ttl_s=30)
    await reply(engine, ChatTurn("s", MESSAGES[0], persona="Fool", sampling=SamplingOptions(seed=1)))
    client = aioredis.Redis.from_url(redis.url)
    try:
        key = f"{KEY_PREFIX}tiny:s"
        fields = await client.hgetall(key)
        ttl_ms = await client.pttl(key)
    finally:
        await client.aclose()
    assert (fields[b"turns"], fields[b"persona"], fields[b"model"]) == (b"1", b"Fool", b"tiny-1")
    assert 29_000 < ttl_ms <= 30_000


async def test_an_expired_session_starts_again(make_engine: MakeEngine, redis: RedisServer) -> None:
    """Once Redis has dropped the session, the next turn is a first turn (as an expired memory session)."""
    engine = make_engine(redis.url, ttl_s=0.3)
    await reply(engine, turn("s", 0))
    await asyncio.sleep(0.5)
    text, reason, turns = await reply(engine, turn("s", 0))
    assert turns == 1
    assert (text, reason) == (await reference(make_engine, 1))[0][0][:2]


async def test_a_cancelled_turn_leaves_the_stored_session_as_it_was(
    make_engine: MakeEngine, redis: RedisServer
) -> None:
    """A turn cancelled mid-reply is not written; the next turn, on another engine, continues from the turn
    before it."""
    a, b = make_engine(redis.url, stream_buffer=2), make_engine(redis.url)
    first = await reply(a, turn("s", 0))
    paused = a.chat(ChatTurn("s", MESSAGES[1], sampling=SamplingOptions(seed=9, max_tokens=2000)))  # a long reply
    await asyncio.wait_for(a.wait_until(lambda: paused.buffered() == 2), timeout(5))
    paused.cancel()
    await asyncio.wait_for(a.wait_until(lambda: a.live_streams == 0), timeout(5))
    second = await reply(b, turn("s", 1))
    assert ([first, second], await stored_state(redis.url, "s")) == await reference(make_engine, 2)


async def test_two_turns_at_once_on_two_engines_move_the_session_on_once(
    make_engine: MakeEngine, redis: RedisServer
) -> None:
    """Two engines running a turn of one session at once (both read it before either ends): one is kept, the other
    is FailedPrecondition; the session has one more turn."""
    a, b = make_engine(redis.url, stream_buffer=2), make_engine(redis.url, stream_buffer=2)
    await reply(a, turn("s", 0))
    long_reply = ChatTurn("s", MESSAGES[1], sampling=SamplingOptions(seed=9, max_tokens=300))
    streams = [a.chat(long_reply), b.chat(long_reply)]
    for engine, stream in zip((a, b), streams, strict=True):  # both have read the session and paused
        await asyncio.wait_for(engine.wait_until(lambda s=stream: s.buffered() == 2), timeout(5))
    results = await asyncio.gather(*(collect(s) for s in streams), return_exceptions=True)
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], FailedPrecondition)
    assert str(refused[0]) == (
        "session_id: session 's' was moved on by another turn meanwhile; this turn was not kept, send it again"
    )
    assert sorted(s.turns for s in streams) == [1, 2]  # the refused turn: the count it read, as it left it
    assert (await reply(b, turn("s", 2)))[2] == 3


async def test_a_session_of_another_model_version_is_refused(make_engine: MakeEngine, redis: RedisServer) -> None:
    """A session written by other weights (another fingerprint) is FailedPrecondition, never read as this model's."""
    await reply(make_engine(redis.url, fingerprint="old"), turn("s", 0))
    with pytest.raises(FailedPrecondition) as info:
        await reply(make_engine(redis.url, fingerprint="new"), turn("s", 1))
    assert str(info.value) == "session_id: session 's' was made by another version of the model; start a new session"


async def test_redis_away_fails_chat_turns_only_until_it_is_back(make_engine: MakeEngine, redis: RedisServer) -> None:
    """With Redis gone, a chat turn is Unavailable and plain generation goes on; once Redis is back (empty, as after
    a crash) chat turns work again."""
    engine = make_engine(redis.url)
    await reply(engine, turn("s", 0))
    redis.stop()
    with pytest.raises(Unavailable) as info:
        await reply(engine, turn("s", 1))
    assert str(info.value).startswith("session_id: the session store does not answer")
    text = await asyncio.wait_for(collect(engine.generate(TextRequest("Lear.\n", SamplingOptions(max_tokens=20)))), 5)
    assert len(text) == 20
    assert "s" in engine.sessions and engine.sessions.busy_count() == 0  # the failed turn let go of the session
    redis.start()
    assert (await reply(engine, turn("t", 0)))[2] == 1


def test_the_log_never_shows_the_password() -> None:
    """A Redis URL's password is masked wherever the URL is logged, in the userinfo or as a query parameter."""
    assert redacted("redis://:s3cret@db.internal:6380/2") == "redis://:***@db.internal:6380/2"
    assert redacted("redis://user:s3cret@db/0") == "redis://user:***@db/0"
    assert redacted("redis://db:6379/0") == "redis://db:6379/0"
    assert redacted("redis://db:6379/0?password=s3cret") == "redis://db:6379/0?password=***"


async def test_a_password_query_parameter_stays_out_of_the_log(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The check at start logs the store's URL with ?password= masked (this Redis has no password, so it refuses
    the AUTH, and the warning names the URL)."""
    caplog.set_level(logging.INFO, logger="server.engine.redis_sessions")
    sessions = RedisSessions(f"{redis.url}?password=s3cret", "tiny", "tiny-1", 60.0)
    try:
        await sessions.check()
    finally:
        await sessions.close()
    assert "s3cret" not in caplog.text
    assert f"{redis.url}?password=***" in caplog.text
