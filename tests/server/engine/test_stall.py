"""A stream whose client reads none of it for the stall timeout, its buffer full, is cancelled and frees its slot
(every engine: text, audio, image); a client that reads slowly is waited for, and other streams go on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from server.engine.audio import AudioEngine
from server.engine.image import ImageEngine, ImageLimits
from server.engine.requests import AudioRequest, ImageRequest, SamplingOptions, TextRequest
from server.engine.streams import FINISH_CANCELLED
from server.engine.text import TextEngine
from tests.conftest import timeout
from tests.server.helpers import started_engines

STALL_S = 0.4


@pytest.fixture
async def make_image_engine(tiny_image_models: dict[str, Path]) -> AsyncIterator[Callable[..., ImageEngine]]:
    def build(**limits: Any) -> ImageEngine:
        return ImageEngine.from_checkpoint(tiny_image_models["rbm"], "rbm", ImageLimits(**limits))

    async with started_engines(build) as make:
        yield make


async def drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def until(predicate: Callable[[], bool]) -> None:
    """Return once ``predicate()`` holds (polled), or fail after the scaled timeout."""
    async with asyncio.timeout(timeout(10)):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_a_text_stream_nobody_reads_is_cancelled_and_frees_its_slot(
    make_text_engine: Callable[..., TextEngine], caplog: pytest.LogCaptureFixture
) -> None:
    """Unread past the stall timeout, a stream ends cancelled with one INFO line saying why; its slot is free
    (a request over the limit is taken), and a stream read at once beside it ends as it would alone."""
    engine = make_text_engine(max_streams=1, max_waiting=1, stream_buffer=8)
    engine.stall_s = STALL_S
    caplog.set_level(logging.INFO, logger="server.engine")
    unread = engine.generate(TextRequest("Lear.\n", SamplingOptions(seed=1, max_tokens=500), "stalled-1"))
    other = engine.generate(TextRequest("Kent.\n", SamplingOptions(seed=2, max_tokens=40), "read-1"))
    await asyncio.wait_for(drain(other), timeout(10))
    await until(lambda: unread.done and engine.live_streams == 0)
    assert (unread.finish_reason, other.finish_reason) in [(FINISH_CANCELLED, "length"), (FINISH_CANCELLED, "stop")]
    ends = [r.getMessage() for r in caplog.records if "request stalled-1 " in r.getMessage()]
    assert len(ends) == 1 and f"its client read none of it for {STALL_S:g} s" in ends[0]
    assert all(r.levelno == logging.INFO for r in caplog.records if "stalled-1" in r.getMessage())


async def test_a_slow_reader_is_waited_for(make_text_engine: Callable[..., TextEngine]) -> None:
    """A client that reads something within each stall timeout, however slowly, gets its whole stream."""
    engine = make_text_engine(stream_buffer=4)
    engine.stall_s = STALL_S
    stream = engine.generate(TextRequest("Lear.\n", SamplingOptions(seed=1, max_tokens=20)))
    pieces = []
    async for piece in stream:
        pieces.append(piece)
        await asyncio.sleep(STALL_S / 2)
    assert stream.finish_reason in ("length", "stop") and len(pieces) > 1


async def test_without_a_stall_timeout_an_unread_stream_waits(make_text_engine: Callable[..., TextEngine]) -> None:
    """With no stall timeout (the engine's default), an unread stream stays paused, and is read to its end later."""
    engine = make_text_engine(stream_buffer=4)
    stream = engine.generate(TextRequest("Lear.\n", SamplingOptions(seed=1, max_tokens=30)))
    await asyncio.sleep(3 * STALL_S)
    assert not stream.done
    await asyncio.wait_for(drain(stream), timeout(10))
    assert stream.finish_reason == "length"


async def test_an_audio_stream_nobody_reads_is_cancelled(
    make_audio_engine: Callable[..., AudioEngine],
) -> None:
    engine = make_audio_engine(stream_buffer=400)
    engine.stall_s = STALL_S
    unread = engine.generate(AudioRequest("Good night, sweet prince.", seed=1))
    await until(lambda: unread.done and engine.live_streams == 0)
    assert unread.finish_reason == FINISH_CANCELLED


async def test_an_image_stream_nobody_reads_is_cancelled(make_image_engine: Callable[..., ImageEngine]) -> None:
    engine = make_image_engine(stream_buffer=2)
    engine.stall_s = STALL_S
    unread = engine.generate(ImageRequest(seed=1, steps=50))
    await until(lambda: unread.done and engine.live_streams == 0)
    assert unread.finish_reason == FINISH_CANCELLED and unread.steps < 50
