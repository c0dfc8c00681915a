"""Kept responses in a real Redis: read back by any store on the same Redis, expired after their time-to-live unless
read, deleted once, and a Redis that goes away is UNAVAILABLE naming the field, until it is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from server.engine.redis_responses import RedisResponses
from server.errors import Unavailable
from tests.services import RedisServer


@pytest.fixture
async def store(redis: RedisServer) -> AsyncIterator[RedisResponses]:
    kept = RedisResponses(redis.url, ttl_s=60)
    yield kept
    await kept.close()


async def test_a_response_is_read_back_by_another_store_on_the_same_redis(
    redis: RedisServer, store: RedisResponses
) -> None:
    """What one replica keeps, another reads: the bytes as written."""
    await store.put("resp_1", b'{"messages": []}')
    other = RedisResponses(redis.url, ttl_s=60)
    try:
        assert await other.get("resp_1", "previous_response_id") == b'{"messages": []}'
        assert await other.get("resp_2", "previous_response_id") is None
    finally:
        await other.close()


async def test_a_response_expires_unless_it_is_read(redis: RedisServer) -> None:
    """A response expires after the time-to-live; each read renews it."""
    store = RedisResponses(redis.url, ttl_s=0.4)
    try:
        await store.put("read", b"1")
        await store.put("unread", b"2")
        for _ in range(4):
            await asyncio.sleep(0.2)
            assert await store.get("read", "response_id") == b"1"
        assert await store.get("unread", "response_id") is None
    finally:
        await store.close()


async def test_a_response_is_deleted_once(store: RedisResponses) -> None:
    await store.put("resp_1", b"x")
    assert await store.delete("resp_1", "response_id") is True
    assert await store.delete("resp_1", "response_id") is False
    assert await store.get("resp_1", "response_id") is None


async def test_a_redis_that_goes_away_is_unavailable_naming_the_field_until_it_is_back(
    redis: RedisServer, store: RedisResponses
) -> None:
    """Every call fails UNAVAILABLE naming the request's field while Redis is down (the URL's password never shown),
    and works again once it is back, with no restart."""
    await store.put("resp_1", b"x")
    redis.stop()
    with pytest.raises(Unavailable, match=r"^previous_response_id: the response store does not answer"):
        await store.get("resp_1", "previous_response_id")
    with pytest.raises(Unavailable, match=r"^response_id: the response store does not answer"):
        await store.delete("resp_1", "response_id")
    with pytest.raises(Unavailable, match=r"^store: the response store does not answer"):
        await store.put("resp_2", b"y")
    redis.start()
    await store.put("resp_2", b"y")
    assert await store.get("resp_2", "previous_response_id") == b"y"


def test_the_url_password_is_masked() -> None:
    """The store names its Redis in the log without the password."""
    assert "secret" not in RedisResponses("redis://:secret@127.0.0.1:1/0", ttl_s=1).url
