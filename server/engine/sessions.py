"""Chat sessions: the model's state after each completed turn, kept with a time-to-live and a cap.

A session holds the recurrent state after everything the model has read (``state``) plus text it has yet to read
(``pending``: the newlines that close the last reply). A follow-up turn reads ``pending`` and the new turn from
``state``, never the whole history again.

A running turn holds its session through a :class:`Turn`, the only way to release it. :meth:`SessionStore.end_turn`
releases a turn exactly once: a second call is a no-op, so every way a turn can end (its stop, ``max_tokens``, a
cancel, a dropped connection, a failed step, shutdown) may call it without counting the others. A turn that did not
complete leaves the session as it was (or gone, for a first turn).

Belt and braces: a turn also carries ``live``, which tells whether its stream can still produce anything. A session
held by a turn that is no longer live is never busy for :meth:`SessionStore.begin_turn` nor for the cap: it is
released, unchanged, with an ERROR in the log, since only a bug in the engine can leave it so. A turn whose stream
was cancelled (its client cancelled it, or went away) holds its session only until the engine's next step; a new
turn arriving before that takes the session over, as it was, instead of failing (a client reconnecting at once).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.errors import FailedPrecondition, ResourceExhausted

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Session:
    id: str
    state: Any = None  # the backend's state for one row; None: nothing read yet (zero state)
    pending: str = ""  # text to read before the next turn
    turns: int = 0
    last_used: float = 0.0
    turn: Turn | None = None  # the running turn, if any
    history_chars: int = 0  # characters read so far, for the log
    persona: str = ""  # who spoke the last completed turn


@dataclass(eq=False)
class Turn:
    """A running turn's hold on its session, released once by :meth:`SessionStore.end_turn`."""

    session: Session
    live: Callable[[], bool]  # False once the turn's stream can produce nothing more
    released: bool = False
    cancelled: Callable[[], bool] = lambda: False  # True once the turn's stream was asked to stop
    persona: str = ""  # who speaks this turn


def _always_live() -> bool:
    return True


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

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def busy_count(self) -> int:
        """Sessions held by a live turn."""
        return sum(1 for s in self._sessions.values() if self._held(s))

    def expire(self) -> int:
        """Drop idle sessions unused for longer than the time-to-live; returns how many."""
        limit = self._clock() - self.ttl_s
        stale = [s.id for s in self._sessions.values() if not self._held(s) and s.last_used < limit]
        for key in stale:
            del self._sessions[key]
        return len(stale)

    def begin_turn(
        self,
        session_id: str,
        live: Callable[[], bool] = _always_live,
        persona: str = "",
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Turn:
        """A turn on the session (created if new) that holds it until :meth:`end_turn`. ``live`` tells whether
        the turn's stream can still produce anything (see the module's docstring)."""
        self.expire()
        session = self._sessions.get(session_id)
        if session is None:
            if len(self._sessions) >= self.capacity:
                idle = next((s.id for s in self._sessions.values() if not self._held(s)), None)
                if idle is None:
                    raise ResourceExhausted(
                        f"session_id: all {self.capacity} chat sessions are in a turn; retry later", reason="sessions"
                    )
                del self._sessions[idle]
            session = Session(id=session_id)
            self._sessions[session_id] = session
        elif self._held(session):
            raise FailedPrecondition(f"session_id: session {session_id!r} already has a turn running")
        turn = Turn(session, live, persona=persona, cancelled=cancelled)
        session.turn = turn
        session.last_used = self._clock()
        self._sessions.move_to_end(session_id)
        return turn

    def end_turn(self, turn: Turn, state: Any = None, pending: str = "", read_chars: int = 0) -> bool:
        """Release ``turn``: with ``state`` the turn completed and the session moves on; without, it is left as it
        was (a first turn leaves nothing). Returns False, changing nothing, when the turn was already released."""
        if turn.released:
            return False
        turn.released = True
        session = turn.session
        if session.turn is not turn:
            return False  # reclaimed from a dead turn (logged then); a later turn may hold the session now
        session.turn = None
        session.last_used = self._clock()
        if state is not None:
            session.state = state
            session.pending = pending
            session.turns += 1
            session.history_chars += read_chars
            session.persona = turn.persona
        elif session.turns == 0 and self._sessions.get(session.id) is session:
            del self._sessions[session.id]  # a first turn that never completed leaves nothing behind
        return True

    def _held(self, session: Session) -> bool:
        """Whether a live turn holds ``session``; a turn that ended without releasing it is released here."""
        turn = session.turn
        if turn is None:
            return False
        if turn.live():
            if not turn.cancelled():
                return True
            # Cancelled, and dropped at the engine's next step, where its end_turn finds it released and changes
            # nothing: the session is free, as it was, now.
            turn.released = True
            session.turn = None
            return False
        log.error("session %r was held by a turn that had ended; released unchanged (an engine bug)", session.id)
        turn.released = True
        session.turn = None
        return False
