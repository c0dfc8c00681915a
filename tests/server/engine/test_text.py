"""The text engine: batched streams give the reference loop's text; limits, pausing, cancelling, chat state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from server.engine.requests import ChatTurn, SamplingOptions, TextRequest
from server.engine.text import TextEngine
from server.errors import AntiphonError, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from tests.conftest import timeout
from tests.server.conftest import CHAT_STYLE
from tests.server.helpers import collect, fail_step, reference_text

MakeEngine = Callable[..., TextEngine]


async def test_stream_equals_reference_loop(make_text_engine: MakeEngine, tiny_text_model: Any) -> None:
    """A seeded stream's text and finish reason are those of the one-stream reference loop."""
    engine = make_text_engine()
    stream = engine.generate(TextRequest("Lear.\nThe king", SamplingOptions(temperature=1.0, seed=11, max_tokens=80)))
    text = await asyncio.wait_for(collect(stream), timeout(10))
    expected, reason = reference_text(tiny_text_model, "Lear.\nThe king", temperature=1.0, seed=11, max_tokens=80)
    assert (text, stream.finish_reason) == (expected, reason)
    assert stream.completion_tokens == 80
    assert stream.prompt_tokens == len("\nLear.\nThe king")


async def test_seeded_stream_alone_equals_beside_63_others(make_text_engine: MakeEngine, tiny_text_model: Any) -> None:
    """With a seed, a stream's text is the same alone and joining a batch of 63 running streams."""
    engine = make_text_engine(max_streams=64)
    options = SamplingOptions(temperature=1.2, top_k=20, top_p=0.95, seed=2**63 + 5, max_tokens=120)
    alone = await collect(engine.generate(TextRequest("Fool.\n", options)))
    others = [
        engine.generate(TextRequest("Kent.\n" * (i % 5), SamplingOptions(seed=i, max_tokens=60 + 3 * i)))
        for i in range(63)
    ]
    await engine.wait_until(lambda: engine.steps >= 5)  # the others are mid-stream when it joins
    batched = engine.generate(TextRequest("Fool.\n", options))
    texts = await asyncio.wait_for(asyncio.gather(collect(batched), *(collect(s) for s in others)), timeout(30))
    expected, _ = reference_text(
        tiny_text_model, "Fool.\n", temperature=1.2, top_k=20, top_p=0.95, seed=2**63 + 5, max_tokens=120
    )
    assert texts[0] == alone == expected
    assert [len(t) for t in texts[1:]] == [60 + 3 * i for i in range(63)]


async def test_greedy_is_deterministic_without_seed(make_text_engine: MakeEngine, tiny_text_model: Any) -> None:
    """Temperature 0 is greedy: the reference's text with no seed at all."""
    engine = make_text_engine()
    text = await collect(engine.generate(TextRequest("Edgar.\n", SamplingOptions(temperature=0, max_tokens=50))))
    assert text == reference_text(tiny_text_model, "Edgar.\n", temperature=0, max_tokens=50)[0]


async def test_stop_sequence_spanning_tokens(make_text_engine: MakeEngine, tiny_text_model: Any) -> None:
    """A stop text of several characters ends the stream before it, and is not emitted."""
    full, _ = reference_text(tiny_text_model, "Lear.\n", temperature=1.0, seed=5, max_tokens=200)
    stop = full[20:24]  # four tokens
    assert len(stop) == 4 and full.find(stop) >= 0
    engine = make_text_engine()
    options = SamplingOptions(temperature=1.0, seed=5, max_tokens=200, stop=("never said", stop))
    stream = engine.generate(TextRequest("Lear.\n", options))
    text = await collect(stream)
    assert text == full[: full.find(stop)]
    assert stream.finish_reason == "stop"
    assert stream.completion_tokens == full.find(stop) + 4


async def test_slow_consumer_pauses_without_buffering_or_stalling_others(make_text_engine: MakeEngine) -> None:
    """A stream nobody reads stops at its buffer bound; another stream runs to the end meanwhile."""
    engine = make_text_engine(stream_buffer=4)
    slow = engine.generate(TextRequest("", SamplingOptions(seed=1, max_tokens=500)))
    fast = engine.generate(TextRequest("", SamplingOptions(seed=2, max_tokens=300)))
    fast_text = await asyncio.wait_for(collect(fast), timeout(10))
    assert (len(fast_text), fast.finish_reason) == (300, "length")
    assert slow.buffered() == 4
    assert slow.completion_tokens == 4  # paused, not generating into memory
    slow_text = await asyncio.wait_for(collect(slow), timeout(10))
    alone = await collect(engine.generate(TextRequest("", SamplingOptions(seed=1, max_tokens=500))))
    assert slow_text == alone  # pausing changes nothing in the text


async def test_cancel_frees_the_slot(make_text_engine: MakeEngine) -> None:
    """A cancelled stream leaves the batch at the next step, and its slot takes a new stream."""
    engine = make_text_engine(max_streams=1, max_waiting=0)
    first = engine.generate(TextRequest("", SamplingOptions(max_tokens=2000)))
    await anext(first)
    with pytest.raises(ResourceExhausted, match=r"^overloaded: 1 streams are running and 0 waiting; retry later$"):
        engine.generate(TextRequest(""))
    first.cancel()
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(5))
    assert first.finish_reason == "cancelled"
    second = engine.generate(TextRequest("", SamplingOptions(max_tokens=5)))
    assert len(await collect(second)) == 5


async def test_waiting_queue_then_overloaded(make_text_engine: MakeEngine) -> None:
    """Beyond max_streams a stream waits for a slot; beyond the waiting bound the engine is overloaded."""
    engine = make_text_engine(max_streams=1, max_waiting=1)
    running = engine.generate(TextRequest("", SamplingOptions(max_tokens=30)))
    waiting = engine.generate(TextRequest("", SamplingOptions(max_tokens=10)))
    with pytest.raises(ResourceExhausted) as info:
        engine.generate(TextRequest(""))
    assert info.value.reason == "overloaded"
    texts = await asyncio.wait_for(asyncio.gather(collect(running), collect(waiting)), timeout(10))
    assert [len(t) for t in texts] == [30, 10]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (SamplingOptions(temperature=-1.0), "sampling.temperature: must be between 0 and 100 (0 is greedy), got -1.0"),
        (SamplingOptions(top_p=1.5), "sampling.top_p: must be in (0, 1] (1 disables), got 1.5"),
        (SamplingOptions(max_tokens=0), "sampling.max_tokens: must be in 1..50, got 0"),
        (SamplingOptions(max_tokens=51), "sampling.max_tokens: must be in 1..50, got 51"),
        (SamplingOptions(stop=("",)), "sampling.stop: each sequence must have 1..64 characters, got 0"),
    ],
)
async def test_bad_sampling_names_the_field(
    make_text_engine: MakeEngine, options: SamplingOptions, message: str
) -> None:
    """Each out-of-range knob is InvalidArgument naming sampling.<knob>."""
    engine = make_text_engine(max_tokens=50)
    with pytest.raises(InvalidArgument) as info:
        engine.generate(TextRequest("", options))
    assert str(info.value) == message
    assert engine.live_streams == 0


async def test_prompt_too_long(make_text_engine: MakeEngine) -> None:
    """A prompt over the limit is InvalidArgument on the prompt."""
    engine = make_text_engine(max_prompt_chars=10)
    with pytest.raises(InvalidArgument, match=r"^prompt: at most 10 characters, got 11$"):
        engine.generate(TextRequest("x" * 11))


async def test_chat_follow_up_reads_only_new_text_and_equals_recompute(
    make_text_engine: MakeEngine, tiny_text_model: Any
) -> None:
    """A second turn continues from the kept state; its reply is the one computed from the whole history."""
    engine = make_text_engine()
    first = engine.chat(ChatTurn("s1", "Good night my lord.", persona="Lear", sampling=SamplingOptions(seed=3)))
    reply1 = await collect(first)
    second = engine.chat(ChatTurn("s1", "What love may do.", persona="Fool", sampling=SamplingOptions(seed=4)))
    reply2 = await collect(second)

    turn1 = CHAT_STYLE.turn_text("Kent", "Good night my lord.", "Lear")
    turn2 = CHAT_STYLE.turn_text("Kent", "What love may do.", "Fool")
    expected1, reason1 = reference_text(tiny_text_model, turn1, seed=3, stop=("\n\n",))
    assert (reply1, first.finish_reason) == (expected1, reason1)
    said = reply1 + ("\n\n" if reason1 == "stop" else "")
    closing = "" if said.endswith("\n\n") else "\n" if said.endswith("\n") else "\n\n"
    expected2, reason2 = reference_text(tiny_text_model, turn1 + said + closing + turn2, seed=4, stop=("\n\n",))
    assert (reply2, second.finish_reason) == (expected2, reason2)
    assert second.prompt_tokens == len(closing + turn2)  # only the new text was read
    assert (first.turns, second.turns) == (1, 2)


async def test_chat_persona_matches_whatever_its_case(make_text_engine: MakeEngine, tiny_text_model: Any) -> None:
    """A persona named in any case (" fool") is the speaker the model read ("Fool"), spelled as read."""
    engine = make_text_engine()
    reply = await collect(engine.chat(ChatTurn("s1", "Good night.", persona=" fool", sampling=SamplingOptions(seed=5))))
    expected, _ = reference_text(
        tiny_text_model, CHAT_STYLE.turn_text("Kent", "Good night.", "Fool"), seed=5, stop=("\n\n",)
    )
    assert reply == expected


async def test_chat_unknown_persona_is_not_found(make_text_engine: MakeEngine) -> None:
    """A persona the corpus has no speaker for is NotFound, listing the personas."""
    engine = make_text_engine()
    with pytest.raises(NotFound) as info:
        engine.chat(ChatTurn("s", "Hello.", persona="Hamlet"))
    assert str(info.value) == "persona: 'Hamlet' is not a speaker of model 'tiny' (personas: Lear, Kent, Fool, Edgar)"


@pytest.mark.parametrize(
    ("turn", "message"),
    [
        (ChatTurn("", "Hi."), "session_id: must have 1..128 characters, got 0"),
        (ChatTurn("s", "  "), "message: must not be empty"),
        (ChatTurn("s", "One.\n\nTwo."), "message: must not contain a blank line (a blank line ends a turn)"),
        (ChatTurn("s", "Hi.", speaker="A\nB"), "speaker: must be one line of at most 64 characters"),
    ],
)
async def test_chat_bad_fields(make_text_engine: MakeEngine, turn: ChatTurn, message: str) -> None:
    """Each bad chat field is InvalidArgument naming it, and no session is left behind."""
    engine = make_text_engine()
    with pytest.raises(InvalidArgument) as info:
        engine.chat(turn)
    assert str(info.value) == message
    assert len(engine.sessions) == 0


async def test_chat_session_allows_one_turn_at_a_time(make_text_engine: MakeEngine) -> None:
    """A second turn while one is running is FailedPrecondition; a cancelled turn leaves the session unchanged."""
    engine = make_text_engine()
    first = engine.chat(ChatTurn("s", "Hello.", sampling=SamplingOptions(max_tokens=2000, stop=("zzzz",))))
    with pytest.raises(FailedPrecondition, match=r"^session_id: session 's' already has a turn running$"):
        engine.chat(ChatTurn("s", "Again."))
    first.cancel()
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(5))
    assert "s" not in engine.sessions  # a first turn that never completed leaves nothing


async def test_chat_cancelled_while_paused_leaves_the_session_as_it_was(
    make_text_engine: MakeEngine, tiny_text_model: Any
) -> None:
    """A turn cancelled while its reader is too slow (the stream paused, its buffer full) releases the session; the
    next turn equals the reply computed from the history without it."""
    engine = make_text_engine(stream_buffer=2)
    first = engine.chat(ChatTurn("s", "Good night my lord.", sampling=SamplingOptions(seed=3)))
    said = await collect(first)
    paused = engine.chat(ChatTurn("s", "What love may do.", sampling=SamplingOptions(seed=9, max_tokens=2000)))
    await asyncio.wait_for(engine.wait_until(lambda: paused.buffered() == 2), timeout(5))
    paused.cancel()
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(5))
    assert paused.finish_reason == "cancelled"
    third = engine.chat(ChatTurn("s", "Come hither.", sampling=SamplingOptions(seed=4)))
    reply = await asyncio.wait_for(collect(third), timeout(5))
    said += "\n\n" if first.finish_reason == "stop" else ""
    closing = "" if said.endswith("\n\n") else "\n" if said.endswith("\n") else "\n\n"
    history = CHAT_STYLE.turn_text("Kent", "Good night my lord.", "Lear") + said + closing
    expected = reference_text(
        tiny_text_model, history + CHAT_STYLE.turn_text("Kent", "Come hither.", "Lear"), seed=4, stop=("\n\n",)
    )
    assert (reply, third.finish_reason, third.turns) == (*expected, 2)


async def test_close_drains_then_refuses(make_text_engine: MakeEngine) -> None:
    """close() lets a live stream finish within the grace period, then refuses new streams."""
    engine = make_text_engine()
    stream = engine.generate(TextRequest("", SamplingOptions(max_tokens=100)))
    reader = asyncio.create_task(collect(stream))
    await engine.close(grace_s=timeout(10))
    assert len(await reader) == 100
    assert stream.finish_reason == "length"
    with pytest.raises(Unavailable):
        engine.generate(TextRequest(""))


async def test_close_cancels_after_grace(make_text_engine: MakeEngine) -> None:
    """A stream still running when the grace period ends is finished as cancelled."""
    engine = make_text_engine(stream_buffer=2)
    stream = engine.generate(TextRequest("", SamplingOptions(max_tokens=2000)))  # never read: it pauses
    await engine.close(grace_s=0.05)
    assert stream.finish_reason == "cancelled"


async def test_a_failed_step_ends_its_streams_and_the_engine_serves_on(
    make_text_engine: MakeEngine, tiny_text_model: Any
) -> None:
    """When the model work raises (a bug, a device failure), the streams in that step end with an internal error
    naming the model, and the next request is served as if nothing happened."""
    engine = make_text_engine()
    fail_step(engine, on_call=1)
    failed = engine.generate(TextRequest("Lear.\n", SamplingOptions(seed=1, max_tokens=40)))
    with pytest.raises(AntiphonError, match=r"^internal error in model tiny$"):
        await asyncio.wait_for(collect(failed), timeout(10))
    served = engine.generate(TextRequest("Lear.\n", SamplingOptions(temperature=1.0, seed=3, max_tokens=40)))
    text = await asyncio.wait_for(collect(served), timeout(10))
    assert text == reference_text(tiny_text_model, "Lear.\n", temperature=1.0, seed=3, max_tokens=40)[0]
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(5))
