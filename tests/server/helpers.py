"""Helpers shared by the server tests: the reference loop as an oracle, reading a stream, and engines started
for a test and closed after it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

from server.engine.streams import TextStream
from server.sampling import SamplingParams
from server.text.generate import TextGeneration


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
