"""Responses of the OpenAI-compatible Responses API kept in Redis, so that ``previous_response_id`` and
``GET``/``DELETE /v1/responses/{id}`` work on any replica and across restarts.

Each kept response is one Redis string, written once when its reply completes::

    antiphon:response:<response id>    the JSON the HTTP transport writes (the conversation and the answer)

It expires after the time-to-live (the chat sessions' ``--session-ttl-s``), renewed each time it is read. What the
value holds is the transport's business (``server/transport/responses.py``); this module only keeps bytes by key.
A Redis that does not answer (or refuses) is :class:`Unavailable` for the request that needed it, and a key of
another type under a response's name is :class:`FailedPrecondition` for that response; the client reconnects by
itself once Redis is back, and the log says so once each way (``StoreHealth``).
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from server.engine.redis_sessions import StoreHealth, connect, detail, fault, wrong_type  # one client set-up, one log
from server.errors import FailedPrecondition, Unavailable, printable
from server.settings import redacted

log = logging.getLogger(__name__)

KEY_PREFIX = "antiphon:response:"


class RedisResponses:
    """Kept responses in the Redis at ``url``, each for ``ttl_s`` seconds after it was last written or read."""

    def __init__(self, url: str, ttl_s: float) -> None:
        self.url = redacted(url)
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.kept = f"kept for {ttl_s:g} s after its last use"  # how long, for the messages of a missing response
        self.health = StoreHealth("response store", self.url, log)
        self._client = connect(url)

    async def put(self, key: str, value: bytes) -> None:
        try:
            await self._client.set(KEY_PREFIX + key, value, px=self.ttl_ms)
        except RedisError as exc:
            raise self._unavailable("store", exc) from None  # the request's field that asked to keep it
        self.health.answered()

    async def get(self, key: str, field: str) -> bytes | None:
        """The value kept under ``key`` (None: never kept, expired or deleted); renews its expiry."""
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.get(KEY_PREFIX + key)
                pipe.pexpire(KEY_PREFIX + key, self.ttl_ms)
                value, _ = await pipe.execute()
        except RedisError as exc:
            if wrong_type(exc):
                log.warning("response %s in %s cannot be read: the key is not a string", printable(repr(key)), self.url)
                raise FailedPrecondition(
                    f"{field}: {key[:80]!r} cannot be read from the response store; start a new conversation"
                ) from None
            raise self._unavailable(field, exc) from None
        self.health.answered()
        return bytes(value) if value is not None else None

    async def delete(self, key: str, field: str) -> bool:
        """Whether there was a value under ``key`` to delete."""
        try:
            deleted = bool(await self._client.delete(KEY_PREFIX + key))
        except RedisError as exc:
            raise self._unavailable(field, exc) from None
        self.health.answered()
        return deleted

    async def close(self) -> None:
        await self._client.aclose()

    def _unavailable(self, field: str, exc: RedisError) -> Unavailable:
        self.health.failed(fault(exc), "kept responses fail until it answers", detail(exc))
        return Unavailable(f"{field}: the response store {fault(exc)}; retry later")
