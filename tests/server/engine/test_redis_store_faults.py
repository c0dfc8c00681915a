"""The Redis store as operators meet it: URLs redis-py cannot use, a wrong password, a minimal ACL user, a Redis
that is full, stalls or goes away, and keys that someone else wrote or broke. Each is a clear error for the request
or session it touches (never a crash, never another session's data), and the log says once what went wrong."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis.asyncio as aioredis

from server.engine import redis_sessions
from server.engine.backend import RowArrays
from server.engine.redis_responses import RedisResponses
from server.engine.redis_sessions import KEY_PREFIX, RedisSessions, SavedSession
from server.engine.requests import ChatTurn, SamplingOptions
from server.engine.text import TextEngine
from server.errors import AntiphonError, FailedPrecondition, InvalidArgument, Unavailable
from tests.conftest import timeout
from tests.server.helpers import collect
from tests.services import RedisServer, redis_server

SHAPE = (2, 3, 5)  # layers, hidden, vocabulary of the rows the store-level tests write
PASSWORD = "s3cret-pw"
# What the store's docstring says an ACL user needs; the test below runs every store operation as that user.
ACL = "+ping +select +multi +exec +time +hgetall +pexpire +evalsha +script|load +hget +hset +get +set +del"


@pytest.fixture
async def sessions(redis: RedisServer) -> AsyncIterator[RedisSessions]:
    store = RedisSessions(redis.url, "tiny", "tiny-1", 60.0, shape=SHAPE)
    yield store
    await store.close()


def row(fill: float = 0.5) -> RowArrays:
    layers, hidden, vocab = SHAPE
    return RowArrays(
        np.full((layers, 1, hidden), fill, np.float32),  # (L, 1, H)
        np.full((layers, 1, hidden), -fill, np.float32),  # (L, 1, H)
        np.full((1, vocab), fill, np.float32),  # (1, V)
    )


def saved(turns: int = 1) -> SavedSession:
    return SavedSession(turns=turns, persona="Fool", pending="\n", chars=40, row=row())


async def raw(url: str, *command: Any) -> Any:
    client = aioredis.Redis.from_url(url)
    try:
        return await client.execute_command(*command)
    finally:
        await client.aclose()


def frozen(server: RedisServer, seconds: float) -> threading.Thread:
    """Stop ``server`` (SIGSTOP: it neither answers nor drops a connection, as a Redis busy with a long command)
    for ``seconds``, from a thread, so the test's loop can send it commands meanwhile."""
    assert server.process is not None
    process = server.process
    process.send_signal(signal.SIGSTOP)

    def resume() -> None:
        threading.Event().wait(seconds)
        process.send_signal(signal.SIGCONT)

    thread = threading.Thread(target=resume, daemon=True)
    thread.start()
    return thread


# -- the URL and the credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("ssl_ca_cert=/etc/ca.pem", "the query names 'ssl_ca_cert', an option redis-py does not know"),
        ("socket_timeout=soon", "Invalid value for 'socket_timeout' in connection URL."),
        ("protocol=4", "protocol must be either 2 or 3"),
    ],
)
@pytest.mark.parametrize("store", ["sessions", "responses"])
def test_a_url_redis_cannot_use_names_the_flag_and_hides_the_password(store: str, query: str, reason: str) -> None:
    """A query parameter redis-py refuses stops the server with InvalidArgument naming --session-store (not a
    traceback at the first turn), the password masked."""
    url = f"redis://:{PASSWORD}@127.0.0.1:1/0?{query}"
    with pytest.raises(InvalidArgument) as info:
        RedisSessions(url, "tiny", "tiny-1", 60.0) if store == "sessions" else RedisResponses(url, 60.0)
    message = str(info.value)
    assert message.startswith(f"--session-store: cannot use 'redis://:***@127.0.0.1:1/0?{query}': ")
    assert reason in message and PASSWORD not in message


async def test_a_wrong_password_is_told_at_start_and_to_each_turn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With a wrong password the check at start names --session-store and says Redis refuses the credentials (it
    does answer), the password masked; a turn is Unavailable saying the same."""
    caplog.set_level(logging.INFO, logger="server.engine.redis_sessions")
    with redis_server(tmp_path, "--requirepass", PASSWORD) as server:
        store = RedisSessions(f"redis://:wrong-pw@127.0.0.1:{server.port}/0", "tiny", "tiny-1", 60.0)
        try:
            assert await store.check() is False
            with pytest.raises(Unavailable) as info:
                await store.load("s")
        finally:
            await store.close()
    assert str(info.value) == (
        "session_id: the session store refuses this server's credentials or commands (AuthenticationError); retry later"
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # the turn's failure is the one the start already told
    assert warnings[0].startswith(
        f"session store (--session-store) redis://:***@127.0.0.1:{server.port}/0 refuses this server's credentials "
        "or commands (AuthenticationError): chat turns fail until it answers"
    )
    assert "wrong-pw" not in caplog.text


async def test_an_acl_user_with_the_documented_commands_is_enough(tmp_path: Path) -> None:
    """A Redis user allowed only the documented commands on antiphon:* keys runs every store operation, a script
    Redis has forgotten (SCRIPT FLUSH) included."""
    with redis_server(tmp_path, "--requirepass", PASSWORD) as server:
        admin = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
        await raw(admin, "ACL", "SETUSER", "antiphon", "on", ">user-pw", "resetkeys", "~antiphon:*", "resetchannels")
        await raw(admin, "ACL", "SETUSER", "antiphon", "-@all", *ACL.split())
        url = f"redis://antiphon:user-pw@127.0.0.1:{server.port}/2"
        store, kept = RedisSessions(url, "tiny", "tiny-1", 60.0, shape=SHAPE), RedisResponses(url, 60.0)
        try:
            assert await store.check() is True
            assert await store.load("s") is None
            await store.save("s", saved(1), previous_turns=0)
            await raw(admin, "SCRIPT", "FLUSH")
            await store.save("s", saved(2), previous_turns=1)
            assert (got := await store.load("s")) is not None and got.turns == 2
            await kept.put("resp_1", b"{}")
            assert await kept.get("resp_1", "response_id") == b"{}"
            assert await kept.delete("resp_1", "response_id") is True
            assert await raw(admin, "ACL", "LOG") == []
        finally:
            await store.close()
            await kept.close()


# -- a Redis that is full, stalls or goes away -------------------------------------------------------------------


async def test_a_full_redis_is_said_to_refuse_not_to_be_silent(
    redis: RedisServer, sessions: RedisSessions, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis at its maxmemory with noeviction answers with an error: the turn is Unavailable saying Redis refused
    (OutOfMemoryError), not that it does not answer."""
    caplog.set_level(logging.INFO, logger="server.engine.redis_sessions")
    await raw(redis.url, "CONFIG", "SET", "maxmemory-policy", "noeviction")
    await raw(redis.url, "CONFIG", "SET", "maxmemory", "1")
    with pytest.raises(Unavailable) as info:
        await sessions.load("s")
    assert str(info.value) == "session_id: the session store refused the request (OutOfMemoryError); retry later"
    assert f"session store {redis.url} refused the request (OutOfMemoryError): chat turns fail" in caplog.text


async def test_a_store_that_stops_answering_is_logged_once_each_way(
    redis: RedisServer, sessions: RedisSessions, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis gone: every turn fails, and the log has one WARNING (not one per turn); Redis back: one INFO."""
    caplog.set_level(logging.INFO, logger="server.engine.redis_sessions")
    await sessions.load("s")
    redis.stop()
    for _ in range(5):
        with pytest.raises(Unavailable, match=r"^session_id: the session store does not answer \(ConnectionError\)"):
            await sessions.load("s")
    redis.start()
    await sessions.load("s")
    await sessions.load("s")
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "server.engine.redis_sessions"]
    assert [level for level, _ in lines] == ["WARNING", "INFO"]
    assert lines[0][1].startswith(f"session store {redis.url} does not answer (ConnectionError): chat turns fail")
    assert lines[1][1] == f"session store {redis.url} answers again"


async def test_a_write_redis_takes_after_its_client_gave_up_is_not_kept(
    redis: RedisServer, sessions: RedisSessions
) -> None:
    """A Redis that stalls past the timeout with a turn's write queued (a long command of another client) does not
    keep it when it wakes: the client was told the turn was not kept, so the session stays as it was."""
    await sessions.save("s", saved(1), previous_turns=0)
    assert await sessions.load("s") is not None  # the turn's read, as every turn starts
    thread = frozen(redis, redis_sessions.TIMEOUT_S + 0.5)
    with pytest.raises(Unavailable, match=r"^session_id: the session store does not answer \(TimeoutError\)"):
        await sessions.save("s", saved(2), previous_turns=1)
    await asyncio.to_thread(thread.join)
    assert await raw(redis.url, "HGET", f"{KEY_PREFIX}tiny:s", "turns") == b"1"


async def test_a_write_that_reaches_redis_late_is_refused_saying_so(
    redis: RedisServer, sessions: RedisSessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write Redis runs later than its window after it was sent is refused by Redis, and the turn is Unavailable
    saying the store answered too late."""
    monkeypatch.setattr(redis_sessions, "SAVE_WINDOW_MS", 200)
    await sessions.save("s", saved(1), previous_turns=0)
    assert await sessions.load("s") is not None
    thread = frozen(redis, 0.8)  # past the window, within the timeout
    with pytest.raises(Unavailable) as info:
        await sessions.save("s", saved(2), previous_turns=1)
    await asyncio.to_thread(thread.join)
    assert str(info.value) == (
        "session_id: the session store answered too late (after 200 ms); this turn was not kept, send it again"
    )
    assert await raw(redis.url, "HGET", f"{KEY_PREFIX}tiny:s", "turns") == b"1"


async def test_a_session_that_left_redis_during_a_turn_is_not_written_back(
    redis: RedisServer, sessions: RedisSessions
) -> None:
    """A session evicted or flushed while a turn continued it is not recreated by that turn's write, and the turn is
    told why (not that another turn moved it on)."""
    await sessions.save("s", saved(1), previous_turns=0)
    assert await sessions.load("s") is not None
    await raw(redis.url, "FLUSHALL")
    with pytest.raises(FailedPrecondition) as info:
        await sessions.save("s", saved(2), previous_turns=1)
    assert str(info.value) == (
        "session_id: session 's' left the session store during this turn (expired, evicted or deleted); this turn "
        "was not kept, send it again to start the session anew"
    )
    assert await raw(redis.url, "EXISTS", f"{KEY_PREFIX}tiny:s") == 0


# -- keys someone else wrote -----------------------------------------------------------------------------------


async def test_a_key_of_another_type_fails_that_session_only(redis: RedisServer, sessions: RedisSessions) -> None:
    """A string planted under a session's key is FailedPrecondition for that session, on read and on write (not
    the store being away); other sessions go on."""
    await raw(redis.url, "SET", f"{KEY_PREFIX}tiny:planted", "hello")
    expected = "session_id: session 'planted' cannot be read from the session store; start a new session"
    with pytest.raises(FailedPrecondition) as info:
        await sessions.load("planted")
    assert str(info.value) == expected
    with pytest.raises(FailedPrecondition) as info:
        await sessions.save("planted", saved(1), previous_turns=0)
    assert str(info.value) == expected
    await sessions.save("other", saved(1), previous_turns=0)
    assert await sessions.load("other") is not None


CORRUPTIONS = {
    "state cut short": {"state": b"\0" * 12},
    "state of another shape": {"shape": b"1,1,1", "state": np.zeros(3, "<f4").tobytes()},
    "state not finite": {"state": np.full(2 * 2 * 3 + 5, np.nan, "<f4").tobytes()},
    "shape not numbers": {"shape": b"2,x,5"},
    "turns with a sign": {"turns": b"-1"},
    "turns with a leading zero": {"turns": b"01"},
    "pending not newlines": {"pending": b"Lear. " * 1000},
    "persona not UTF-8": {"persona": b"\xff\xfe"},
}


@pytest.mark.parametrize("change", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
async def test_a_corrupt_session_is_refused_before_the_model_reads_it(
    redis: RedisServer, sessions: RedisSessions, change: dict[str, bytes]
) -> None:
    """A session whose fields another writer broke (with this model's fingerprint) is FailedPrecondition naming
    it: its state never reaches the model, whose compiled step trusts the shape."""
    await sessions.save("s", saved(1), previous_turns=0)
    await raw(redis.url, "HSET", f"{KEY_PREFIX}tiny:s", *(x for pair in change.items() for x in pair))
    with pytest.raises(FailedPrecondition) as info:
        await sessions.load("s")
    assert str(info.value) == "session_id: session 's' cannot be read from the session store; start a new session"


async def test_a_session_without_its_fields_is_refused(redis: RedisServer, sessions: RedisSessions) -> None:
    """A hash under a session's key that lacks the store's fields (another program's) cannot be read."""
    await raw(redis.url, "HSET", f"{KEY_PREFIX}tiny:s", "owner", "someone else")
    with pytest.raises(FailedPrecondition, match=r"^session_id: session 's' cannot be read from the session store"):
        await sessions.load("s")


async def test_a_response_key_of_another_type_fails_that_response_only(redis: RedisServer) -> None:
    """A list planted under a kept response's key is FailedPrecondition naming the request's field."""
    kept = RedisResponses(redis.url, 60.0)
    try:
        await raw(redis.url, "RPUSH", "antiphon:response:resp_bad", "x")
        with pytest.raises(FailedPrecondition) as info:
            await kept.get("resp_bad", "previous_response_id")
        assert str(info.value) == (
            "previous_response_id: 'resp_bad' cannot be read from the response store; start a new conversation"
        )
        await kept.put("resp_ok", b"{}")
        assert await kept.get("resp_ok", "response_id") == b"{}"
    finally:
        await kept.close()


async def test_an_engine_fails_a_corrupt_session_and_serves_the_others(
    redis: RedisServer, make_text_engine: Callable[..., TextEngine], tiny_text_model: Any
) -> None:
    """An engine given a session whose state has another shape (and this model's fingerprint) fails that turn with
    FailedPrecondition and lets the session go; the next session's turn is served."""
    config = tiny_text_model[0].config
    shape = (config.num_layers, config.hidden_size, config.vocab_size)
    engine = make_text_engine(shared=RedisSessions(redis.url, "tiny", "tiny-1", 60.0, shape=shape))
    layers, hidden, vocab = shape[0], shape[1] + 1, shape[2]  # one hidden unit too many, consistent in itself
    state = np.zeros(2 * layers * hidden + vocab, "<f4").tobytes()
    fields = {"turns": 1, "persona": "", "pending": "\n", "chars": 1, "model": "tiny-1", "state": state}
    await raw(redis.url, "HSET", f"{KEY_PREFIX}tiny:bad", *(x for pair in fields.items() for x in pair))
    await raw(redis.url, "HSET", f"{KEY_PREFIX}tiny:bad", "shape", f"{layers},{hidden},{vocab}")
    with pytest.raises(FailedPrecondition, match=r"^session_id: session 'bad' cannot be read from the session"):
        await asyncio.wait_for(collect(engine.chat(ChatTurn("bad", "Hello.", sampling=SamplingOptions(seed=1)))), 5)
    assert engine.sessions.busy_count() == 0
    stream = engine.chat(ChatTurn("good", "Hello.", sampling=SamplingOptions(seed=1, max_tokens=10)))
    await asyncio.wait_for(collect(stream), timeout(10))
    assert stream.turns == 1


async def test_redis_killed_during_a_reply_fails_that_turn_and_the_next_one_is_served(
    redis: RedisServer, make_text_engine: Callable[..., TextEngine]
) -> None:
    """Redis killed while a reply streams: the reply ends with Unavailable once it is done (its turn could not be
    kept), the session is free, and once Redis is back (empty, as after a crash) the next turn is a first turn."""
    engine = make_text_engine(shared=RedisSessions(redis.url, "tiny", "tiny-1", 60.0), stream_buffer=2)
    first = engine.chat(ChatTurn("s", "Hello.", sampling=SamplingOptions(seed=1, max_tokens=10)))
    await asyncio.wait_for(collect(first), timeout(10))
    paused = engine.chat(ChatTurn("s", "Hello.", sampling=SamplingOptions(seed=9, max_tokens=300)))
    await asyncio.wait_for(engine.wait_until(lambda: paused.buffered() == 2), timeout(5))
    redis.stop()
    with pytest.raises(Unavailable, match=r"^session_id: the session store does not answer \(ConnectionError\)"):
        await asyncio.wait_for(collect(paused), timeout(10))
    assert engine.sessions.busy_count() == 0
    redis.start()
    again = engine.chat(ChatTurn("s", "Hello.", sampling=SamplingOptions(seed=2, max_tokens=10)))
    await asyncio.wait_for(collect(again), timeout(10))
    assert again.turns == 1


@pytest.mark.parametrize("doing", ["reading", "writing"])
async def test_a_failure_that_is_no_answer_of_redis_fails_the_turn_not_hangs_it(
    sessions: RedisSessions, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, doing: str
) -> None:
    """An exception from the client library that is not a Redis error (a bug) becomes the project's internal error,
    which the engine reports to the turn's client, with the traceback in the log; a raw one would leave the turn's
    task dead and its client waiting."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(sessions, "_save", broken)
    monkeypatch.setattr(sessions._client, "pipeline", broken)
    with pytest.raises(AntiphonError) as info:
        await (sessions.load("s") if doing == "reading" else sessions.save("s", saved(1), previous_turns=0))
    assert type(info.value) is AntiphonError
    assert str(info.value) == f"internal error in the session store while {doing} session 's'"
    assert [r.levelname for r in caplog.records if r.exc_info] == ["ERROR"]
