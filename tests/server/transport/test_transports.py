"""Behaviour both transports share, each test run over gRPC and over WebSocket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import timeout
from tests.server.helpers import reference_text
from tests.server.transport.clients import Failure
from tests.server.transport.conftest import TRANSPORTS

pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)

StartServer = Callable[..., Any]
Connect = Callable[..., Any]


async def test_stream_is_complete_and_in_order(
    transport: str, start_server: StartServer, connect: Connect, tiny_text_model: Any
) -> None:
    """Pieces arrive in order, join to the reference text, and end with finish reason and usage."""
    server = await start_server()
    client = await connect(server, transport)
    stream = client.generate("Kent.\n", temperature=1.0, seed=21, max_tokens=150)
    result = await asyncio.wait_for(stream.finish(), timeout(10))
    expected, reason = reference_text(tiny_text_model, "Kent.\n", temperature=1.0, seed=21, max_tokens=150)
    assert result.text == expected
    assert len(result.pieces) > 1
    assert result.finish_reason == reason == "length"
    assert result.usage == {"prompt_tokens": 7, "completion_tokens": 150}


async def test_same_seed_same_text_on_both_transports(
    transport: str, start_server: StartServer, connect: Connect
) -> None:
    """A seeded request gives the same text over this transport as over the other one."""
    server = await start_server()
    here = await connect(server, transport)
    there = await connect(server, next(t for t in TRANSPORTS if t != transport))
    options = {"temperature": 0.9, "top_k": 10, "top_p": 0.9, "seed": 77, "max_tokens": 100, "stop": ["\n\n"]}
    a, b = await asyncio.wait_for(
        asyncio.gather(here.generate("Lear.\n", **options).finish(), there.generate("Lear.\n", **options).finish()),
        timeout(10),
    )
    assert (a.text, a.finish_reason) == (b.text, b.finish_reason)


async def test_stop_sequence_across_tokens(
    transport: str, start_server: StartServer, connect: Connect, tiny_text_model: Any
) -> None:
    """A stop text spanning several tokens ends the stream before it, with finish reason stop."""
    full, _ = reference_text(tiny_text_model, "Fool.\n", temperature=1.0, seed=8, max_tokens=120)
    stop = full[30:33]
    server = await start_server()
    client = await connect(server, transport)
    result = await client.generate("Fool.\n", temperature=1.0, seed=8, max_tokens=120, stop=[stop]).finish()
    assert (result.text, result.finish_reason) == (full[: full.find(stop)], "stop")


@pytest.mark.parametrize(
    ("sampling", "message"),
    [
        ({"temperature": -1.0}, "sampling.temperature: must be between 0 and 100 (0 is greedy), got -1.0"),
        ({"top_k": 1000}, "sampling.top_k: must be in 0..{vocab} (0 disables), got 1000"),
        ({"top_p": 0.0}, "sampling.top_p: must be in (0, 1] (1 disables), got 0.0"),
        ({"max_tokens": 0}, "sampling.max_tokens: must be in 1..100, got 0"),
        ({"max_tokens": 101}, "sampling.max_tokens: must be in 1..100, got 101"),
        ({"stop": ["a"] * 9}, "sampling.stop: at most 8 sequences, got 9"),
    ],
)
async def test_bad_sampling_is_invalid_argument(
    transport: str,
    start_server: StartServer,
    connect: Connect,
    tiny_text_model: Any,
    sampling: dict[str, Any],
    message: str,
) -> None:
    """Each bad knob is INVALID_ARGUMENT with a message naming sampling.<knob>."""
    server = await start_server(max_tokens=100)
    client = await connect(server, transport)
    with pytest.raises(Failure) as info:
        await client.generate("", **sampling).finish()
    assert (info.value.code, info.value.message) == ("INVALID_ARGUMENT", message.format(vocab=len(tiny_text_model[1])))


async def test_prompt_too_long_is_invalid_argument(transport: str, start_server: StartServer, connect: Connect) -> None:
    """A prompt over the limit is INVALID_ARGUMENT on the prompt."""
    server = await start_server(max_prompt_chars=8)
    client = await connect(server, transport)
    with pytest.raises(Failure) as info:
        await client.generate("123456789").finish()
    assert (info.value.code, info.value.message) == ("INVALID_ARGUMENT", "prompt: at most 8 characters, got 9")


async def test_unknown_model_is_not_found(transport: str, start_server: StartServer, connect: Connect) -> None:
    """A model id the server does not serve is NOT_FOUND."""
    server = await start_server()
    client = await connect(server, transport)
    with pytest.raises(Failure) as info:
        await client.generate("", model="nope").finish()
    assert (info.value.code, info.value.message) == (
        "NOT_FOUND",
        "model: 'nope' is not served here (text models: tiny)",
    )


async def test_unknown_persona_is_not_found(transport: str, start_server: StartServer, connect: Connect) -> None:
    """A chat persona that is not a speaker of the model is NOT_FOUND."""
    server = await start_server()
    client = await connect(server, transport)
    with pytest.raises(Failure) as info:
        await client.chat("s", "Hello.", persona="Hamlet").finish()
    assert info.value.code == "NOT_FOUND"
    assert (
        info.value.message == "persona: 'Hamlet' is not a speaker of model 'tiny' (personas: Lear, Kent, Fool, Edgar)"
    )


async def test_overload_is_resource_exhausted(transport: str, start_server: StartServer, connect: Connect) -> None:
    """Beyond the running and waiting bounds a request is RESOURCE_EXHAUSTED (overloaded)."""
    server = await start_server(max_streams=1, max_waiting=1)
    client = await connect(server, transport)
    running = client.generate("", max_tokens=2000)
    await anext(aiter(running))
    waiting = client.generate("", max_tokens=5)
    first_of_waiting = asyncio.ensure_future(anext(aiter(waiting)))
    engine = server.engines[0]
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 2), timeout(5))
    with pytest.raises(Failure) as info:
        await client.generate("").finish()
    assert info.value.code == "RESOURCE_EXHAUSTED"
    assert info.value.message == "overloaded: 1 streams are running and 1 waiting; retry later"
    await running.cancel()
    await asyncio.wait_for(first_of_waiting, timeout(5))  # the waiting stream got the slot


async def test_cancel_frees_the_slot(transport: str, start_server: StartServer, connect: Connect) -> None:
    """A stream the client cancels leaves the batch, and the slot serves the next request."""
    server = await start_server(max_streams=1, max_waiting=0)
    client = await connect(server, transport)
    engine = server.engines[0]
    stream = client.generate("", max_tokens=2000)
    await anext(aiter(stream))
    assert engine.live_streams == 1
    await stream.cancel()
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(5))
    result = await asyncio.wait_for(client.generate("", max_tokens=5).finish(), timeout(5))
    assert (len(result.text), result.finish_reason) == (5, "length")


async def test_chat_turns_continue_the_session(
    transport: str, start_server: StartServer, connect: Connect, tiny_text_model: Any
) -> None:
    """Two turns of one session: the second reply is the one computed from the whole history."""
    server = await start_server()
    client = await connect(server, transport)
    first = await client.chat("s1", "Good night.", persona="Fool", sampling={"seed": 1}).finish()
    second = await client.chat("s1", "My lord.", sampling={"seed": 2}).finish()
    turn1, turn2 = "Kent.\nGood night.\n\nFool.\n", "Kent.\nMy lord.\n\nLear.\n"
    said = first.text + ("\n\n" if first.finish_reason == "stop" else "")
    closing = "" if said.endswith("\n\n") else "\n" if said.endswith("\n") else "\n\n"
    expected, reason = reference_text(tiny_text_model, turn1 + said + closing + turn2, seed=2, stop=("\n\n",))
    assert (second.text, second.finish_reason) == (expected, reason)
    assert (first.turns, second.turns) == (1, 2)
    assert second.usage["prompt_tokens"] == len(closing + turn2)


async def test_list_models(transport: str, start_server: StartServer, connect: Connect) -> None:
    """ListModels names the text model, marks it default and lists its personas."""
    server = await start_server()
    client = await connect(server, transport)
    assert await client.list_models() == [
        {"id": "tiny", "is_default": True, "personas": ["Lear", "Kent", "Fool", "Edgar"]}
    ]


async def test_speak_is_unimplemented(transport: str, start_server: StartServer, connect: Connect) -> None:
    """A chat that asks to speak is UNIMPLEMENTED until an audio model is served."""
    server = await start_server()
    client = await connect(server, transport)
    with pytest.raises(Failure) as info:
        await client.chat("s", "Hello.", speak=True).finish()
    assert (info.value.code, info.value.message) == (
        "UNIMPLEMENTED",
        "no audio model is served here (serve one with --audio-checkpoint)",
    )
