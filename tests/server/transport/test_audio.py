"""Audio over both transports, from a real server with the tiny WaveNet: GenerateAudio / generate_audio chunks,
encodings, equal output on both transports, bad fields, cancellation, and spoken chat turns."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from server.engine.speech import speakable, split_sentences
from server.transport.wire import decode_bytes
from tests.conftest import timeout
from tests.server.transport.clients import Failure
from tests.server.transport.conftest import TRANSPORTS

StartServer = Callable[..., Any]
Connect = Callable[..., Any]
pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)

TEXT = "Good night, sweet prince."


async def test_audio_streams_in_chunks_after_its_format(
    transport: str, start_server: StartServer, connect: Connect
) -> None:
    """The format comes first; every chunk but the last has chunk_samples samples; usage counts them all."""
    server = await start_server(audio={})
    client = await connect(server, transport)
    stream = client.generate_audio(TEXT, chunk_samples=400, sampling={"seed": 3})
    result = await asyncio.wait_for(stream.finish(), timeout(60))
    assert result.audio_format == {"sample_rate": 16_000, "encoding": "pcm16", "channels": 1}
    assert result.finish_reason == "stop"
    samples = len(result.audio) // 2
    assert samples == result.usage["samples"] > 4000  # a spoken sentence, not a click
    assert result.usage["text_chars"] == len(TEXT)
    assert all(n == 800 for n in result.audio_chunks[:-1]) and 0 < result.audio_chunks[-1] <= 800
    pcm = decode_bytes(bytes(result.audio), "pcm16")
    assert np.abs(pcm).max() > 100  # not silence


async def test_same_seed_same_audio_on_both_transports(
    transport: str, start_server: StartServer, connect: Connect
) -> None:
    """A seeded request gives the same bytes over gRPC and WebSocket, and mu-law carries the same samples."""
    server = await start_server(audio={})
    here = await connect(server, transport)
    other = await connect(server, "ws" if transport == "grpc" else "grpc")
    fields = {"sampling": {"seed": 11, "temperature": 0.7}, "voice": "en-gb+f2"}
    a, b = await asyncio.wait_for(
        asyncio.gather(
            here.generate_audio("seven", **fields).finish(), other.generate_audio("seven", **fields).finish()
        ),
        timeout(60),
    )
    assert a.audio == b.audio and len(a.audio) > 0
    mulaw = await asyncio.wait_for(here.generate_audio("seven", encoding="mulaw", **fields).finish(), timeout(60))
    assert mulaw.audio_format is not None and mulaw.audio_format["encoding"] == "mulaw"
    assert len(mulaw.audio) == len(a.audio) // 2
    pcm = decode_bytes(bytes(a.audio), "pcm16").astype(np.int32)
    from_mulaw = decode_bytes(bytes(mulaw.audio), "mulaw").astype(np.int32)
    assert np.all(np.abs(pcm - from_mulaw) <= np.abs(pcm) // 16 + 40)  # within one G.711 step


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"text": ""}, "INVALID_ARGUMENT", "text"),
        ({"text": "x" * 401}, "INVALID_ARGUMENT", "text"),
        ({"text": "\u0000\u202e ..."}, "INVALID_ARGUMENT", "text"),  # nothing espeak-ng speaks
        ({"voice": "en-us+nobody"}, "NOT_FOUND", "voice"),
        ({"chunk_samples": 16_001}, "INVALID_ARGUMENT", "chunk_samples"),
        ({"max_seconds": 31.0}, "INVALID_ARGUMENT", "max_seconds"),
        ({"sampling": {"top_k": 5}}, "INVALID_ARGUMENT", "sampling.top_k"),
        ({"sampling": {"temperature": -1.0}}, "INVALID_ARGUMENT", "sampling.temperature"),  # as the client sent it
        ({"model": "nope"}, "NOT_FOUND", "model"),
    ],
)
async def test_bad_audio_requests_name_the_field(
    transport: str, start_server: StartServer, connect: Connect, fields: dict[str, Any], code: str, field: str
) -> None:
    server = await start_server(audio={"max_text_chars": 400, "max_seconds": 30.0})
    client = await connect(server, transport)
    fields = dict(fields)  # the parameters are shared by both transports' runs
    text = fields.pop("text", "seven")
    with pytest.raises(Failure) as info:
        await asyncio.wait_for(client.generate_audio(text, **fields).finish(), timeout(30))
    assert info.value.code == code
    assert info.value.message.startswith(f"{field}:"), info.value.message
    # the server is fine afterwards
    ok = await asyncio.wait_for(client.generate_audio("one", sampling={"seed": 1}).finish(), timeout(60))
    assert ok.finish_reason == "stop"


async def test_cancel_frees_the_audio_slot(transport: str, start_server: StartServer, connect: Connect) -> None:
    """A client that cancels mid-stream leaves the batch; the engine has no live stream afterwards."""
    server = await start_server(audio={})
    engine = server.models.audio_model("")
    client = await connect(server, transport)
    stream = client.generate_audio("Friends, Romans, countrymen, lend me your ears; " * 4, chunk_samples=160)
    pieces = stream.__aiter__()
    first = await asyncio.wait_for(pieces.__anext__(), timeout(60))
    assert len(first) == 320
    await stream.cancel()
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(30))


async def test_spoken_chat_says_each_sentence_of_the_reply(
    transport: str, start_server: StartServer, connect: Connect
) -> None:
    """speak: the reply's text streams, then its sentences' audio; sentence n is the audio of that sentence alone
    with seed + n, so the spoken turn equals generating each sentence by itself."""
    server = await start_server(audio={})
    client = await connect(server, transport)
    seed = 21
    stream = client.chat_speak("s1", "Speak, my lord.", sampling={"seed": seed, "max_tokens": 80})
    result = await asyncio.wait_for(stream.finish(), timeout(120))
    assert result.finish_reason in ("stop", "length") and result.turns == 1
    assert result.events[0] == "text"
    sentences, rest = split_sentences(result.text, 400)
    spoken = [s.strip() for s in [*sentences, rest] if speakable(s)]
    assert spoken, f"the tiny model's reply {result.text!r} has nothing to say"
    assert result.audio_format == {"sample_rate": 16_000, "encoding": "pcm16", "channels": 1}
    expected = bytearray()
    for n, sentence in enumerate(spoken):
        alone = await asyncio.wait_for(
            client.generate_audio(sentence, sampling={"seed": seed + n}).finish(), timeout(60)
        )
        expected += alone.audio
    assert bytes(result.audio) == bytes(expected)


async def test_audio_models_are_listed(transport: str, start_server: StartServer, connect: Connect) -> None:
    server = await start_server(audio={})
    client = await connect(server, transport)
    (model,) = await client.list_audio_models()
    assert model["id"] == "tiny-wavenet" and model["is_default"]
    assert model["sample_rate"] == 16_000
    assert "en-us+m1" in model["voices"] and len(model["voices"]) > 100
