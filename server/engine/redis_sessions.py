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

Redis errors become :class:`Unavailable` for the turn that met them; plain generation never touches Redis. The
client reconnects by itself once Redis is back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.engine.backend import RowArrays
from server.errors import FailedPrecondition, Unavailable
from server.settings import redacted  # the one masking of a URL's passwords, also used for settings errors

log = logging.getLogger(__name__)

KEY_PREFIX = "antiphon:session:"
TIMEOUT_S = 2.0  # a Redis that does not answer within this fails the turn rather than stalling it

# KEYS[1] the session; ARGV: expected turns, new turns, persona, pending, chars, model, shape, state, ttl in ms.
# Returns 1 when written, 0 when the session no longer has the expected turn count.
_SAVE = """
local turns = redis.call('HGET', KEYS[1], 'turns')
if turns == false then turns = '0' end
if turns ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'turns', ARGV[2], 'persona', ARGV[3], 'pending', ARGV[4], 'chars', ARGV[5],
           'model', ARGV[6], 'shape', ARGV[7], 'state', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[9])
return 1
"""


@dataclass(frozen=True)
class SavedSession:
    """A session as the store keeps it: everything a turn needs to continue it."""

    turns: int
    persona: str
    pending: str
    chars: int
    row: RowArrays


class RedisSessions:
    """The sessions of one model in the Redis at ``url``; ``fingerprint`` names the checkpoint."""

    def __init__(self, url: str, model_id: str, fingerprint: str, ttl_s: float) -> None:
        self.url = redacted(url)
        self.prefix = f"{KEY_PREFIX}{model_id}:"
        self.fingerprint = fingerprint
        self.ttl_ms = max(1, int(ttl_s * 1000))  # --session-ttl-s is at most ten years: Redis takes it
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S, decode_responses=False
        )
        self._save = self._client.register_script(_SAVE)

    async def check(self) -> bool:
        """Whether Redis answers now (logged either way; the server starts regardless)."""
        try:
            await self._client.ping()
        except RedisError as exc:
            log.warning("session store %s does not answer (%s): chat turns fail until it does", self.url, exc)
            return False
        log.info("chat sessions are kept in %s", self.url)
        return True

    async def load(self, session_id: str) -> SavedSession | None:
        """The session as its last completed turn left it; None for a new (or expired) one. Renews its expiry."""
        key = self.prefix + session_id
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(key)
                pipe.pexpire(key, self.ttl_ms)
                fields, _ = await pipe.execute()
        except RedisError as exc:
            raise self._unavailable(exc) from None
        if not fields:
            return None
        return self._decode(session_id, fields)

    async def save(self, session_id: str, saved: SavedSession, previous_turns: int) -> None:
        """Write the session after a completed turn that started from ``previous_turns``; raises FailedPrecondition
        when another turn moved the session on meanwhile, Unavailable when Redis does not answer."""
        row = saved.row
        shape = f"{row.h.shape[0]},{row.h.shape[2]},{row.logits.shape[1]}"
        state = b"".join(np.ascontiguousarray(a, dtype="<f4").tobytes() for a in (row.h, row.c, row.logits))
        args: list[str | int | bytes] = [previous_turns, saved.turns, saved.persona, saved.pending, saved.chars]
        args += [self.fingerprint, shape, state, self.ttl_ms]
        try:
            written = await self._save(keys=[self.prefix + session_id], args=args)
        except RedisError as exc:
            raise self._unavailable(exc) from None
        if not written:
            raise FailedPrecondition(
                f"session_id: session {session_id!r} was moved on by another turn meanwhile; this turn was not kept, "
                "send it again"
            )

    async def close(self) -> None:
        await self._client.aclose()

    def _unavailable(self, exc: RedisError) -> Unavailable:
        log.warning("session store %s: %s: %s", self.url, type(exc).__name__, exc)
        return Unavailable(f"session_id: the session store does not answer ({type(exc).__name__}); retry later")

    def _decode(self, session_id: str, fields: dict[bytes, bytes]) -> SavedSession:
        if fields.get(b"model", b"").decode() != self.fingerprint:
            raise FailedPrecondition(
                f"session_id: session {session_id!r} was made by another version of the model; start a new session"
            )
        try:
            layers, hidden, vocab = (int(n) for n in fields[b"shape"].split(b","))
            flat = np.frombuffer(fields[b"state"], dtype="<f4")
            size = layers * hidden
            h = flat[:size].reshape(layers, 1, hidden)
            c = flat[size : 2 * size].reshape(layers, 1, hidden)
            logits = flat[2 * size :].reshape(1, vocab)
            return SavedSession(
                turns=int(fields[b"turns"]),
                persona=fields.get(b"persona", b"").decode(),
                pending=fields.get(b"pending", b"").decode(),
                chars=int(fields.get(b"chars", b"0")),
                row=RowArrays(h.astype(np.float32), c.astype(np.float32), logits.astype(np.float32)),
            )
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            log.error("session %r in %s cannot be read (%s: %s)", session_id, self.url, type(exc).__name__, exc)
            raise FailedPrecondition(
                f"session_id: session {session_id!r} cannot be read from the session store; start a new session"
            ) from None
