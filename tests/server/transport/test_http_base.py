"""The HTTP endpoints' shared plumbing: a stream's pieces read with a gap come joined."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from server.engine.streams import TextStream
from server.metrics import Recorder
from server.transport.http_base import Endpoints


async def read_with_gap(gap_s: float, first: str = "a", capacity: int = 1000) -> list[str]:
    """The pieces read from a stream that gets ``first``, then "b" and "c" 10 and 20 ms after it was read."""
    loop = asyncio.get_running_loop()
    stream = TextStream(capacity=capacity, wake=lambda: None)
    pieces = Endpoints(cast(Any, None), Recorder())._pieces(stream, gap_s)
    stream.push(first)
    read = [await anext(pieces)]
    loop.call_later(0.01, stream.push, "b")
    loop.call_later(0.02, stream.push, "c")
    loop.call_later(0.03, stream.finish, "stop")
    read += [piece async for piece in pieces]
    return read


async def test_pieces_made_during_the_gap_come_as_one() -> None:
    """The first piece at once; after it, what the engine made while the reader waited its gap, joined."""
    assert await read_with_gap(0.05) == ["a", "bc"]


async def test_without_a_gap_each_piece_comes_as_made() -> None:
    assert await read_with_gap(0.0) == ["a", "b", "c"]


async def test_a_stream_filling_its_buffer_is_read_sooner() -> None:
    """A piece that filled the buffer at once says the stream would fill it again before the gap ends: the next is
    read as soon as it comes, and the gap grows back as the stream slows."""
    assert await read_with_gap(0.05, first="abcdefgh", capacity=8) == ["abcdefgh", "b", "c"]


@pytest.mark.parametrize("gap_s", [0.0, 0.05])
async def test_leaving_early_cancels_the_stream(gap_s: float) -> None:
    stream = TextStream(capacity=1000, wake=lambda: None)
    pieces = Endpoints(cast(Any, None), Recorder())._pieces(stream, gap_s)
    stream.push("a")
    assert await anext(pieces) == "a"
    await pieces.aclose()
    assert stream.cancel_requested
