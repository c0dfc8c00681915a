"""The audio engine over a tiny real WaveNet: batching, determinism, limits, pausing and cancellation."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

import numpy as np
import pytest

from server.data.speech import Rendering, synthesize, trim_silence
from server.data.speech import voices as espeak_voices
from server.engine.audio import AudioEngine
from server.engine.requests import AudioRequest
from server.engine.streams import FINISH_CANCELLED, FINISH_LENGTH, FINISH_STOP, AudioStream
from server.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from tests.conftest import timeout


async def collect(stream: AudioStream) -> np.ndarray:
    parts = [codes async for codes in stream]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def rendering_length(text: str, voice: str = "en-us+m1") -> int:
    return len(trim_silence(synthesize(text, Rendering(voice=voice)), pad=160))


async def test_speaks_the_renderings_length(
    make_audio_engine: Callable[..., AudioEngine], caplog: pytest.LogCaptureFixture
) -> None:
    """A stream yields uint8 mu-law codes, as many as espeak-ng's rendering has samples, then finishes with stop;
    its end is one INFO line."""
    caplog.set_level(logging.INFO, logger="server.engine")
    engine = make_audio_engine()
    stream = engine.generate(AudioRequest("Good night, sweet prince.", seed=1, request_id="ws-7"))
    codes = await asyncio.wait_for(collect(stream), timeout(60))
    assert codes.dtype == np.uint8
    assert len(codes) == rendering_length("Good night, sweet prince.") == stream.samples
    assert stream.finish_reason == FINISH_STOP
    assert stream.sample_rate == 16_000
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request ws-7 ")]
    assert re.fullmatch(
        rf"request ws-7 model=tiny-wavenet kind=audio voice=\S+ chars=25 samples={len(codes)} "
        r"first_audio_ms=\d+\.\d duration_ms=\d+\.\d finish=stop",
        line,
    )


async def test_same_seed_same_samples_alone_or_batched(make_audio_engine: Callable[..., AudioEngine]) -> None:
    """A seeded request produces the same samples alone and beside other streams."""
    engine = make_audio_engine(chunk=160)
    request = AudioRequest("seven", voice="en-gb+f2", seed=123, temperature=0.9)
    alone = await asyncio.wait_for(collect(engine.generate(request)), timeout(60))
    streams = [
        engine.generate(AudioRequest("one two three", seed=5)),
        engine.generate(request),
        engine.generate(AudioRequest("nine", voice="en-us+m4", seed=None)),
    ]
    results = await asyncio.wait_for(asyncio.gather(*(collect(s) for s in streams)), timeout(60))
    assert np.array_equal(results[1], alone)
    assert engine.steps > 0


async def test_max_seconds_cuts_the_audio(make_audio_engine: Callable[..., AudioEngine]) -> None:
    """max_seconds stops a stream at exactly that many samples, with finish reason length."""
    engine = make_audio_engine()
    stream = engine.generate(AudioRequest("Friends, Romans, countrymen, lend me your ears.", max_seconds=0.1))
    codes = await asyncio.wait_for(collect(stream), timeout(60))
    assert len(codes) == 1600
    assert stream.finish_reason == FINISH_LENGTH


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (AudioRequest("   "), "text"),
        (AudioRequest("x" * 201), "text"),
        (AudioRequest("hello", max_seconds=31.0), "max_seconds"),
        (AudioRequest("hello", max_seconds=0.0), "max_seconds"),
        (AudioRequest("hello", temperature=-1.0), "temperature"),
        (AudioRequest("hello", temperature=float("nan")), "temperature"),
        (AudioRequest("hello", seed=-1), "seed"),
    ],
)
async def test_bad_requests_name_the_field(
    make_audio_engine: Callable[..., AudioEngine], request_: AudioRequest, field: str
) -> None:
    """Out-of-range fields raise InvalidArgument naming the field, before any work starts."""
    engine = make_audio_engine(max_text_chars=200, max_seconds=30.0)
    with pytest.raises(InvalidArgument) as info:
        engine.generate(request_)
    assert info.value.field == field
    assert engine.live_streams == 0


async def test_unknown_voice_is_not_found(make_audio_engine: Callable[..., AudioEngine]) -> None:
    """A voice espeak-ng does not offer here is NotFound, naming the voice."""
    engine = make_audio_engine()
    with pytest.raises(NotFound, match="voice: 'en-xx\\+nobody'"):
        engine.generate(AudioRequest("hello", voice="en-xx+nobody"))


async def test_held_out_voices_are_served(make_audio_engine: Callable[..., AudioEngine]) -> None:
    """A voice the model never trained on is listed and spoken (as the unseen voice id)."""
    engine = make_audio_engine()
    voice = espeak_voices("heldout")[0]
    assert voice in engine.info.voices
    codes = await asyncio.wait_for(collect(engine.generate(AudioRequest("four", voice=voice, seed=3))), timeout(60))
    assert len(codes) == rendering_length("four", voice)


async def test_over_capacity_is_resource_exhausted(make_audio_engine: Callable[..., AudioEngine]) -> None:
    """Past max_streams + max_waiting live streams, a request is refused with ResourceExhausted."""
    engine = make_audio_engine(max_streams=1, max_waiting=1)
    first = engine.generate(AudioRequest("one", seed=1))
    second = engine.generate(AudioRequest("two", seed=2))
    with pytest.raises(ResourceExhausted, match="overloaded"):
        engine.generate(AudioRequest("three", seed=3))
    await asyncio.wait_for(asyncio.gather(collect(first), collect(second)), timeout(60))
    await asyncio.wait_for(collect(engine.generate(AudioRequest("three", seed=3))), timeout(60))


async def test_cancel_frees_the_slot(make_audio_engine: Callable[..., AudioEngine]) -> None:
    """A cancelled stream finishes as cancelled and its slot takes a new request."""
    engine = make_audio_engine(max_streams=1, max_waiting=0, stream_buffer=320)
    stream = engine.generate(AudioRequest("Now is the winter of our discontent.", seed=1))
    await asyncio.wait_for(engine.wait_until(lambda: stream.samples > 0), timeout(60))
    stream.cancel()
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(60))
    assert stream.finish_reason == FINISH_CANCELLED
    codes = await asyncio.wait_for(collect(engine.generate(AudioRequest("six", seed=2))), timeout(60))
    assert len(codes) > 0


async def test_a_stream_cancelled_between_calls_gets_nothing_more(
    make_audio_engine: Callable[..., AudioEngine],
) -> None:
    """Two calls are planned ahead: a stream cancelled while its samples are still being computed ends at once,
    and the samples computed for it are dropped, not delivered after the end."""
    engine = make_audio_engine(chunk=160)
    stream = engine.generate(AudioRequest("Now is the winter of our discontent.", seed=1))
    other = engine.generate(AudioRequest("Made glorious summer by this sun of York.", seed=2))
    await asyncio.wait_for(engine.wait_until(lambda: stream.samples > 0), timeout(60))
    stream.cancel()
    await asyncio.wait_for(engine.wait_until(lambda: stream.finish_reason is not None), timeout(60))
    held, steps = stream.samples, engine.steps
    await asyncio.wait_for(engine.wait_until(lambda: engine.steps >= steps + 3), timeout(60))
    assert stream.finish_reason == FINISH_CANCELLED and stream.samples == held
    assert len(await asyncio.wait_for(collect(other), timeout(60))) == rendering_length(
        "Made glorious summer by this sun of York."
    )


async def test_a_full_buffer_pauses_the_stream(make_audio_engine: Callable[..., AudioEngine]) -> None:
    """A stream nobody reads stops advancing once its buffer is full, then resumes when read."""
    engine = make_audio_engine(stream_buffer=640, chunk=320)
    text = "Now is the winter of our discontent made glorious summer."
    stream = engine.generate(AudioRequest(text, seed=1))
    await asyncio.wait_for(engine.wait_until(lambda: not stream.has_room()), timeout(60))
    held = stream.samples
    other = await asyncio.wait_for(collect(engine.generate(AudioRequest("two", seed=2))), timeout(60))
    assert len(other) > 0  # the engine kept stepping other streams meanwhile
    assert stream.samples == held < 640 + 320
    codes = await asyncio.wait_for(collect(stream), timeout(60))
    assert len(codes) == rendering_length(text)


async def test_close_cancels_live_streams_and_refuses_new_ones(make_audio_engine: Callable[..., AudioEngine]) -> None:
    """close() ends live streams as cancelled; later requests are Unavailable."""
    engine = make_audio_engine(stream_buffer=320)
    stream = engine.generate(AudioRequest("To be, or not to be, that is the question.", seed=1))
    await asyncio.wait_for(engine.wait_until(lambda: stream.samples > 0), timeout(60))
    await engine.close()
    assert stream.finish_reason == FINISH_CANCELLED
    with pytest.raises(Unavailable):
        engine.generate(AudioRequest("hello"))
