"""Helpers shared by the server tests: the reference loop as an oracle, and reading a stream."""

from __future__ import annotations

from typing import Any

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
