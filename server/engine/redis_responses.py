"""Responses of the OpenAI-compatible Responses API kept in Redis, so that ``previous_response_id`` and
``GET``/``DELETE /v1/responses/{id}`` work on any replica and across restarts.

Each kept response is one Redis string, written once when its reply completes::

    antiphon:response:<response id>    the JSON the HTTP transport writes (the conversation and the answer)

It expires after the time-to-live (the chat sessions' ``--session-ttl-s``), renewed each time it is read. What the
value holds is the transport's business (``server/transport/responses.py``); this module only keeps bytes by key.
A Redis that does not answer is :class:`Unavailable` for the request that needed it; the client reconnects by
itself once Redis is back.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.errors import Unavailable
from server.settings import redacted

log = logging.getLogger(__name__)

KEY_PREFIX = "antiphon:response:"
TIMEOUT_S = 2.0  # as for sessions: a Redis that does not answer within this fails the request rather than stall it


class RedisResponses:
    """Kept responses in the Redis at ``url``, each for ``ttl_s`` seconds after it was last written or read."""

    def __init__(self, url: str, ttl_s: float) -> None:
        self.url = redacted(url)
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.kept = f"kept for {ttl_s:g} s after its last use"  # how long, for the messages of a missing response
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S, decode_responses=False
        )

    async def put(self, key: str, value: bytes) -> None:
        try:
            await self._client.set(KEY_PREFIX + key, value, px=self.ttl_ms)
        except RedisError as exc:
            raise self._unavailable("store", exc) from None  # the request's field that asked to keep it

    async def get(self, key: str, field: str) -> bytes | None:
        """The value kept under ``key`` (None: never kept, expired or deleted); renews its expiry."""
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.get(KEY_PREFIX + key)
                pipe.pexpire(KEY_PREFIX + key, self.ttl_ms)
                value, _ = await pipe.execute()
        except RedisError as exc:
            raise self._unavailable(field, exc) from None
        return bytes(value) if value is not None else None

    async def delete(self, key: str, field: str) -> bool:
        """Whether there was a value under ``key`` to delete."""
        try:
            return bool(await self._client.delete(KEY_PREFIX + key))
        except RedisError as exc:
            raise self._unavailable(field, exc) from None

    async def close(self) -> None:
        await self._client.aclose()

    def _unavailable(self, field: str, exc: RedisError) -> Unavailable:
        log.warning("response store %s: %s: %s", self.url, type(exc).__name__, exc)
        return Unavailable(f"{field}: the response store does not answer ({type(exc).__name__}); retry later")
