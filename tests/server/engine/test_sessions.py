"""Chat sessions: one turn at a time, time-to-live, and a cap that drops the least recently used idle session."""

from __future__ import annotations

import pytest

from server.engine.sessions import SessionStore
from server.errors import FailedPrecondition, ResourceExhausted


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_completed_turn_keeps_state_and_pending_text() -> None:
    """end_turn with a state moves the session on; the next turn starts from it."""
    store = SessionStore(capacity=4, ttl_s=60)
    turn = store.begin_turn("a")
    store.end_turn(turn, state="S1", pending="\n", read_chars=30)
    again = store.begin_turn("a").session
    assert (again is turn.session, again.state, again.pending, again.turns) == (True, "S1", "\n", 1)


def test_one_turn_at_a_time() -> None:
    """A second turn while one runs is FailedPrecondition."""
    store = SessionStore(capacity=4, ttl_s=60)
    store.begin_turn("a")
    with pytest.raises(FailedPrecondition, match=r"^session_id: session 'a' already has a turn running$"):
        store.begin_turn("a")


def test_idle_sessions_expire() -> None:
    """An idle session unused for longer than the time-to-live is forgotten; a busy one is kept."""
    clock = Clock()
    store = SessionStore(capacity=4, ttl_s=10, clock=clock)
    store.end_turn(store.begin_turn("idle"), state="S", pending="")
    store.begin_turn("busy")
    clock.now = 11
    assert store.expire() == 1
    assert "idle" not in store and "busy" in store


def test_cap_drops_least_recently_used_idle_session() -> None:
    """At capacity a new session replaces the least recently used idle one."""
    clock = Clock()
    store = SessionStore(capacity=2, ttl_s=100, clock=clock)
    store.end_turn(store.begin_turn("old"), state="S", pending="")
    clock.now = 1
    store.end_turn(store.begin_turn("new"), state="S", pending="")
    clock.now = 2
    store.begin_turn("third")
    assert ("old" in store, "new" in store, "third" in store) == (False, True, True)


def test_cap_with_every_session_busy_is_resource_exhausted() -> None:
    """When every kept session is mid-turn a new one is refused."""
    store = SessionStore(capacity=1, ttl_s=100)
    store.begin_turn("a")
    with pytest.raises(ResourceExhausted) as info:
        store.begin_turn("b")
    assert info.value.reason == "sessions"
    assert str(info.value) == "session_id: all 1 chat sessions are in a turn; retry later"


def test_a_turn_is_released_exactly_once() -> None:
    """A second end_turn of the same turn changes nothing, even after a later turn took the session."""
    store = SessionStore(capacity=4, ttl_s=60)
    first = store.begin_turn("a")
    assert store.end_turn(first, state="S1", pending="") is True
    second = store.begin_turn("a")
    assert store.end_turn(first) is False  # late: must not release the second turn
    with pytest.raises(FailedPrecondition):
        store.begin_turn("a")
    assert store.end_turn(second) is True
    session = store.begin_turn("a").session
    assert (session.state, session.turns) == ("S1", 1)


def test_an_unfinished_turn_leaves_the_session_as_it_was() -> None:
    """end_turn without a state keeps the last completed turn's state; a first turn leaves nothing."""
    store = SessionStore(capacity=4, ttl_s=60)
    store.end_turn(store.begin_turn("a"), state="S1", pending="\n")
    store.end_turn(store.begin_turn("a"))
    store.end_turn(store.begin_turn("b"))
    session = store.begin_turn("a").session
    assert (session.state, session.pending, session.turns, "b" in store) == ("S1", "\n", 1, False)


def test_a_session_held_by_a_dead_turn_is_not_busy(caplog: pytest.LogCaptureFixture) -> None:
    """A turn whose stream ended without releasing its session (an engine bug) blocks neither the session nor
    the cap: the session is released unchanged, with an ERROR in the log."""
    store = SessionStore(capacity=1, ttl_s=100)
    alive = [True]
    store.end_turn(store.begin_turn("a"), state="S1", pending="")
    store.begin_turn("a", live=lambda: alive[0])
    with pytest.raises(FailedPrecondition):
        store.begin_turn("a")
    assert store.busy_count() == 1
    alive[0] = False
    assert store.busy_count() == 0
    session = store.begin_turn("a").session
    assert (session.state, session.turns) == ("S1", 1)
    assert [r.levelname for r in caplog.records] == ["ERROR"]


def test_dead_turns_never_fill_the_cap() -> None:
    """At capacity, sessions held by dead turns make room for a new session."""
    store = SessionStore(capacity=2, ttl_s=100)
    store.begin_turn("a", live=lambda: False)
    store.begin_turn("b", live=lambda: False)
    store.begin_turn("c")
    assert "c" in store and len(store) == 2
