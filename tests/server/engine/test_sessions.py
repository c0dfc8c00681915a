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
    session = store.begin_turn("a")
    store.end_turn(session, state="S1", pending="\n", read_chars=30)
    again = store.begin_turn("a")
    assert (again is session, again.state, again.pending, again.turns) == (True, "S1", "\n", 1)


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
