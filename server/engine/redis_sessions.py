"""Chat sessions kept in Redis, so that any replica can continue any session and a restart loses nothing.

Each session is one Redis hash, written after every completed turn and read at the start of every turn::

    antiphon:session:<model id>:<session id>
        turns    completed turns
        persona  the persona of the last turn
        pending  text the next turn reads first (the newlines that close the last reply)
        chars    characters read so far
        model    the fingerprint of the checkpoint that made the state (another model cannot read it)
        shape    "layers,hidden,vocabulary"
        state    h, c and the next token's scores: float32, little-endian, in that order

The key expires after the session's time-to-live, renewed at every turn. A write succeeds only if the session
still has the turn count the turn started from (a compare-and-set in one Lua script), so two replicas that run a
turn of the same session at once cannot both move it on: the second is refused, and its client retries. Locks are
not used: a replica killed mid-turn would hold one, and the client's retry on another replica must not wait for it.

A write that reaches Redis late is refused by Redis itself: the script compares Redis's clock with a deadline half
the timeout after the write was sent (Redis's clock as the turn's read saw it), so a Redis that stalled (a long
command of another client, ``DEBUG SLEEP``) cannot keep a turn whose client was already told it was not kept.

What a session's key holds is checked before the engine sees it (the fields, their numbers, the state's size and
the model's shape, finite values): a key written by another program, or of another type, fails that session's turn
with ``FailedPrecondition``, never the server. Redis errors become :class:`Unavailable` for the request that met
them; plain generation never touches Redis. The client reconnects by itself once Redis is back, and the log says
once when the store stops answering and once when it answers again (:class:`StoreHealth`), not at every request.

The commands used, for a Redis ACL user: ``PING SELECT MULTI EXEC TIME HGETALL PEXPIRE EVALSHA SCRIPT|LOAD`` and,
inside the script, ``TIME HGET HSET PEXPIRE``; the kept responses add ``GET SET DEL``; keys ``antiphon:*``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, AuthorizationError, NoPermissionError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.engine.backend import RowArrays
from server.errors import AntiphonError, FailedPrecondition, InvalidArgument, Unavailable, capped, printable
from server.settings import redacted  # the one masking of a URL's passwords, also used for settings errors

log = logging.getLogger(__name__)

KEY_PREFIX = "antiphon:session:"
TIMEOUT_S = 2.0  # a Redis that does not answer within this fails the turn rather than stalling it
SAVE_WINDOW_MS = int(TIMEOUT_S * 1000) // 2  # Redis refuses a write that reaches it later than this after it was sent
FLAG = "--session-store"
MAX_PENDING = 8  # "pending" is the newlines that close a reply: a blank line at most
MAX_LOGGED_CHARS = 300

# KEYS[1] the session; ARGV: expected turns, new turns, persona, pending, chars, model, shape, state, ttl in ms,
# deadline in ms on Redis's clock. Returns 1 when written; 0 when the session no longer has the expected turn count;
# -1 when the session is gone (expired, evicted or deleted) after a turn that continued it; -2 when the write came
# after its deadline.
_SAVE = """
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[10]) then return -2 end
local turns = redis.call('HGET', KEYS[1], 'turns')
if turns == false then
  if ARGV[1] ~= '0' then return -1 end
  turns = '0'
end
if turns ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'turns', ARGV[2], 'persona', ARGV[3], 'pending', ARGV[4], 'chars', ARGV[5],
           'model', ARGV[6], 'shape', ARGV[7], 'state', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[9])
return 1
"""


def connect(url: str) -> aioredis.Redis:
    """A client of the Redis at ``url`` (no connection is made yet); InvalidArgument naming ``--session-store`` when
    redis-py cannot use the URL (an unknown query parameter, a value of the wrong type), the password masked."""
    try:
        client = aioredis.Redis.from_url(
            url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S, decode_responses=False
        )
        client.connection_pool.make_connection()  # builds one connection object, so a bad option fails here
    except (TypeError, ValueError, RedisError) as exc:  # RedisError: a value redis-py checks itself (ssl_cert_reqs)
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        reason = f"the query names {unknown[1]!r}, an option redis-py does not know" if unknown else str(exc)
        raise InvalidArgument(FLAG, f"cannot use {redacted(url)!r}: {reason}") from None
    return client


def unreachable(exc: RedisError) -> bool:
    """Whether ``exc`` says Redis did not answer (down, unreachable, too slow) rather than refused what was asked."""
    refused = (AuthenticationError, AuthorizationError)  # subclasses of ConnectionError that are answers
    return isinstance(exc, RedisConnectionError | RedisTimeoutError) and not isinstance(exc, refused)


def wrong_type(exc: RedisError) -> bool:
    """Whether ``exc`` is Redis refusing a command on a key of another type (a key someone else wrote)."""
    return isinstance(exc, ResponseError) and "WRONGTYPE" in str(exc)


def fault(exc: RedisError) -> str:
    """What went wrong, in a few words a client may read (no address, no password, no key)."""
    name = type(exc).__name__
    if unreachable(exc):
        return f"does not answer ({name})"
    if isinstance(exc, AuthenticationError | AuthorizationError | NoPermissionError):
        return f"refuses this server's credentials or commands ({name})"
    return f"refused the request ({name})"


def detail(exc: BaseException) -> str:
    """``exc`` for one log line: its type and message, shortened and with unprintable characters escaped."""
    return printable(capped(f"{type(exc).__name__}: {exc}", MAX_LOGGED_CHARS))


class StoreHealth:
    """Whether a store answers, logged when that changes: one WARNING when it stops answering (or fails in a new
    way), one INFO when it answers again; the requests that fail meanwhile are each logged by their transport."""

    def __init__(self, what: str, url: str, logger: logging.Logger) -> None:
        self.what = what  # "session store", "response store"
        self.url = url  # masked
        self.log = logger
        self.failing: str | None = None  # the fault last logged; None while the store answers

    def failed(self, reason: str, consequence: str, why: str) -> None:
        """Note a failure: ``reason`` in a few words (:func:`fault`), what fails meanwhile, and the details."""
        if reason != self.failing:
            self.log.warning("%s %s %s: %s (%s)", self.what, self.url, reason, consequence, why)
        else:
            self.log.debug("%s %s %s (%s)", self.what, self.url, reason, why)
        self.failing = reason

    def answered(self) -> None:
        if self.failing is not None:
            self.log.info("%s %s answers again", self.what, self.url)
            self.failing = None


@dataclass(frozen=True)
class SavedSession:
    """A session as the store keeps it: everything a turn needs to continue it."""

    turns: int
    persona: str
    pending: str
    chars: int
    row: RowArrays


class RedisSessions:
    """The sessions of one model in the Redis at ``url``; ``fingerprint`` names the checkpoint and ``shape`` is the
    model's (layers, hidden, vocabulary): a stored state of another shape is refused, never handed to the model."""

    def __init__(
        self, url: str, model_id: str, fingerprint: str, ttl_s: float, shape: tuple[int, int, int] | None = None
    ) -> None:
        self.url = redacted(url)
        self.prefix = f"{KEY_PREFIX}{model_id}:"
        self.fingerprint = fingerprint
        self.shape = shape
        self.ttl_ms = max(1, int(ttl_s * 1000))  # --session-ttl-s is at most ten years: Redis takes it
        self.health = StoreHealth("session store", self.url, log)
        self._client = connect(url)
        self._save = self._client.register_script(_SAVE)
        # Redis's clock (ms) and ours (monotonic s) at the last read of a session: a write's deadline on Redis's
        # clock. Refreshed at every turn's read, so neither clock's drift matters.
        self._clock: tuple[float, float] | None = None

    async def check(self) -> bool:
        """Whether Redis answers now (logged either way; the server starts regardless)."""
        try:
            await self._client.ping()
        except RedisError as exc:
            self.health.failing = fault(exc)
            log.warning(
                "session store (%s) %s %s: chat turns fail until it answers (%s)",
                FLAG,
                self.url,
                self.health.failing,
                detail(exc),
            )
            return False
        log.info("chat sessions are kept in %s", self.url)
        return True

    async def load(self, session_id: str) -> SavedSession | None:
        """The session as its last completed turn left it; None for a new (or expired) one. Renews its expiry."""
        key = self.prefix + session_id
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.time()
                pipe.hgetall(key)
                pipe.pexpire(key, self.ttl_ms)
                sent = time.monotonic()
                (seconds, micros), fields, _ = await pipe.execute()
        except RedisError as exc:
            if wrong_type(exc):
                raise self._unreadable(session_id, "the key is not a hash") from None
            raise self._unavailable(exc) from None
        except Exception:
            raise self._internal("reading", session_id) from None
        self.health.answered()
        self._clock = (seconds * 1000 + micros / 1000, (sent + time.monotonic()) / 2)
        if not fields:
            return None
        return self._decode(session_id, fields)

    async def save(self, session_id: str, saved: SavedSession, previous_turns: int) -> None:
        """Write the session after a completed turn that started from ``previous_turns``; raises FailedPrecondition
        when another turn moved the session on meanwhile (or it left the store), Unavailable when Redis does not
        answer, or answers after the write's deadline."""
        row = saved.row
        shape = f"{row.h.shape[0]},{row.h.shape[2]},{row.logits.shape[1]}"
        state = b"".join(np.ascontiguousarray(a, dtype="<f4").tobytes() for a in (row.h, row.c, row.logits))
        args: list[str | int | bytes] = [previous_turns, saved.turns, saved.persona, saved.pending]
        args += [saved.chars, self.fingerprint, shape, state, self.ttl_ms, self._deadline_ms()]
        try:
            written = await self._save(keys=[self.prefix + session_id], args=args)
        except RedisError as exc:
            if wrong_type(exc):
                raise self._unreadable(session_id, "the key is not a hash") from None
            raise self._unavailable(exc) from None
        except Exception:
            raise self._internal("writing", session_id) from None
        if written == -2:
            late = f"answered too late (after {SAVE_WINDOW_MS} ms)"
            self.health.failed(late, "chat turns fail until it is faster", "a turn's write reached it late, not kept")
            raise Unavailable(f"session_id: the session store {late}; this turn was not kept, send it again")
        self.health.answered()
        if written == -1:
            raise FailedPrecondition(
                f"session_id: session {session_id!r} left the session store during this turn (expired, evicted or "
                "deleted); this turn was not kept, send it again to start the session anew"
            )
        if not written:
            raise FailedPrecondition(
                f"session_id: session {session_id!r} was moved on by another turn meanwhile; this turn was not kept, "
                "send it again"
            )

    async def close(self) -> None:
        await self._client.aclose()

    def _deadline_ms(self) -> int:
        """The latest time on Redis's clock at which a write sent now may still be kept."""
        if self._clock is None:  # no read yet (every turn reads first): no deadline
            return 2**53
        redis_ms, ours = self._clock
        return math.floor(redis_ms + (time.monotonic() - ours) * 1000 + SAVE_WINDOW_MS)

    def _unavailable(self, exc: RedisError) -> Unavailable:
        self.health.failed(fault(exc), "chat turns fail until it answers", detail(exc))
        return Unavailable(f"session_id: the session store {fault(exc)}; retry later")

    def _internal(self, doing: str, session_id: str) -> AntiphonError:
        """A failure that is no answer of Redis (a bug here or in the client library), from an ``except`` block: the
        turn fails with an internal error, as a failed model step does, rather than leave its client waiting."""
        log.exception("session store %s: %s session %s failed", self.url, doing, printable(repr(session_id)))
        return AntiphonError(f"internal error in the session store while {doing} session {session_id!r}")

    def _unreadable(self, session_id: str, why: str) -> FailedPrecondition:
        log.warning("session %s in %s cannot be read: %s", printable(repr(session_id)), self.url, why)
        return FailedPrecondition(
            f"session_id: session {session_id!r} cannot be read from the session store; start a new session"
        )

    def _decode(self, session_id: str, fields: dict[bytes, bytes]) -> SavedSession:
        model = fields.get(b"model")
        if model is None:
            raise self._unreadable(session_id, "no field 'model'")
        if model != self.fingerprint.encode():
            raise FailedPrecondition(
                f"session_id: session {session_id!r} was made by another version of the model; start a new session"
            )
        try:
            row, turns, chars = self._row(fields), _count(fields[b"turns"]), _count(fields[b"chars"])
            persona, pending = fields[b"persona"].decode(), fields[b"pending"].decode()
        except KeyError as exc:
            raise self._unreadable(session_id, f"no field {exc.args[0].decode()!r}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._unreadable(session_id, detail(exc)) from None
        if len(pending) > MAX_PENDING or pending.strip("\n"):
            raise self._unreadable(session_id, f"pending holds more than newlines ({len(pending)} characters)")
        return SavedSession(turns=turns, persona=persona, pending=pending, chars=chars, row=row)

    def _row(self, fields: dict[bytes, bytes]) -> RowArrays:
        """The state field as arrays of the model's shape; ValueError unless it is exactly that, and finite."""
        layers, hidden, vocab = (_count(n) for n in fields[b"shape"].split(b","))
        if self.shape is not None and (layers, hidden, vocab) != self.shape:
            raise ValueError(f"shape {layers},{hidden},{vocab} is not the model's {','.join(map(str, self.shape))}")
        if min(layers, hidden, vocab) == 0:
            raise ValueError(f"shape {layers},{hidden},{vocab} has a zero")
        size = layers * hidden
        state = fields[b"state"]
        if len(state) != 4 * (2 * size + vocab):
            raise ValueError(
                f"state has {len(state)} bytes, shape {layers},{hidden},{vocab} needs {4 * (2 * size + vocab)}"
            )
        flat = np.frombuffer(state, dtype="<f4")
        if not np.isfinite(flat).all():
            raise ValueError("state holds values that are not finite")
        h = flat[:size].reshape(layers, 1, hidden)  # (L, 1, H)
        c = flat[size : 2 * size].reshape(layers, 1, hidden)  # (L, 1, H)
        logits = flat[2 * size :].reshape(1, vocab)  # (1, V)
        return RowArrays(h.astype(np.float32), c.astype(np.float32), logits.astype(np.float32))


def _count(raw: bytes) -> int:
    """A count as the store writes it (decimal digits, no sign, no leading zero); ValueError otherwise."""
    if not (raw.isdigit() and str(int(raw)).encode() == raw):
        raise ValueError(f"{capped(raw.decode(errors='replace'), 40)!r} is not a count")
    return int(raw)
