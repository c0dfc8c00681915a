"""Chat sessions: the model's state after each completed turn, kept with a time-to-live and a cap.

A session holds the recurrent state after everything the model has read (``state``) plus text it has yet to read
(``pending``: the newlines that close the last reply). A follow-up turn reads ``pending`` and the new turn from
``state``, never the whole history again. A turn that is cancelled leaves the session as it was.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.errors import FailedPrecondition, ResourceExhausted


@dataclass
class Session:
    id: str
    state: Any = None  # the backend's state for one row; None: nothing read yet (zero state)
    pending: str = ""  # text to read before the next turn
    turns: int = 0
    last_used: float = 0.0
    busy: bool = False  # a turn is running
    history_chars: int = 0  # characters read so far, for the log


class SessionStore:
    """Sessions by id, least recently used first. Idle sessions expire after ``ttl_s``; at ``capacity`` the least
    recently used idle session is dropped to make room."""

    def __init__(self, capacity: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._sessions

    def expire(self) -> int:
        """Drop idle sessions unused for longer than the time-to-live; returns how many."""
        limit = self._clock() - self.ttl_s
        stale = [s.id for s in self._sessions.values() if not s.busy and s.last_used < limit]
        for key in stale:
            del self._sessions[key]
        return len(stale)

    def begin_turn(self, session_id: str) -> Session:
        """The session (created if new), marked busy until :meth:`end_turn`."""
        self.expire()
        session = self._sessions.get(session_id)
        if session is None:
            if len(self._sessions) >= self.capacity:
                idle = next((s.id for s in self._sessions.values() if not s.busy), None)
                if idle is None:
                    raise ResourceExhausted(
                        f"session_id: all {self.capacity} chat sessions are in a turn; retry later", reason="sessions"
                    )
                del self._sessions[idle]
            session = Session(id=session_id)
            self._sessions[session_id] = session
        elif session.busy:
            raise FailedPrecondition(f"session_id: session {session_id!r} already has a turn running")
        session.busy = True
        session.last_used = self._clock()
        self._sessions.move_to_end(session_id)
        return session

    def end_turn(self, session: Session, state: Any = None, pending: str = "", read_chars: int = 0) -> None:
        """Finish a turn: with ``state``, the turn completed and the session moves on; without, it is unchanged."""
        session.busy = False
        session.last_used = self._clock()
        if state is not None:
            session.state = state
            session.pending = pending
            session.turns += 1
            session.history_chars += read_chars
        elif session.turns == 0 and session.id in self._sessions:
            del self._sessions[session.id]  # a first turn that never completed leaves nothing behind
