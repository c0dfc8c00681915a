"""Helpers shared by the server tests: the reference loop as an oracle, reading a stream, engines started for a
test and closed after it, and a gate that holds an engine's model work at a chosen step."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

from server.engine.streams import TextStream
from server.engine.text import TextEngine
from server.sampling import SamplingParams
from server.text.generate import TextGeneration
from tests.conftest import timeout


def fail_step(engine: Any, on_call: int) -> None:
    """Make the engine's ``on_call``-th step raise, as a lost device would; the other steps are the real ones."""
    advance = engine.backend.advance
    calls = 0

    def failing(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == on_call:
            raise RuntimeError("device lost")
        return advance(*args)

    engine.backend.advance = failing


def reference_text(tiny_text_model: Any, prompt: str, **params: Any) -> tuple[str, str | None]:
    """What the plain one-stream loop produces: (text, finish reason)."""
    model, vocab = tiny_text_model
    generation = TextGeneration(model, vocab, prompt, SamplingParams(**params))
    return "".join(generation), generation.finish_reason


async def collect(stream: TextStream) -> str:
    return "".join([piece async for piece in stream])


class _Engine(Protocol):
    def start(self) -> None: ...

    async def close(self) -> None: ...


E = TypeVar("E", bound=_Engine)


@asynccontextmanager
async def started_engines(build: Callable[..., E]) -> AsyncIterator[Callable[..., E]]:
    """``make(...)``: the engine ``build(...)`` returns, started; every engine made is closed on leaving."""
    engines: list[E] = []

    def make(*args: Any, **kwargs: Any) -> E:
        engine = build(*args, **kwargs)
        engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.close()


class Gate:
    """Holds the engine's model work on its worker thread once ``allow`` more steps have run, until opened: a
    stage of a reply that a test can act in. The model work itself is the real one."""

    def __init__(self, engine: TextEngine) -> None:
        self._advance = engine.backend.advance
        engine.backend.advance = self._gated  # type: ignore[method-assign]
        self._open = threading.Event()
        self._open.set()
        self._holding = threading.Event()
        self._allow: int | None = None

    def hold_after(self, steps: int) -> None:
        self._allow = steps
        self._holding.clear()
        self._open.clear()

    def open(self) -> None:
        self._allow = None
        self._open.set()

    def release(self, steps: int) -> None:
        """Let the held worker take ``steps`` more steps, then hold again (a waiting thread wakes on ``set`` even
        though the event is cleared at once)."""
        self._allow = steps
        self._holding.clear()
        self._open.set()
        self._open.clear()

    async def holding(self) -> None:
        """Return once the worker waits at the gate."""
        assert await asyncio.to_thread(self._holding.wait, timeout(10)), "the engine never reached the gate"

    def _gated(self, *args: Any) -> Any:
        if self._allow is not None:
            if self._allow == 0:
                self._holding.set()
                self._open.wait(timeout(20))
            else:
                self._allow -= 1
        return self._advance(*args)
