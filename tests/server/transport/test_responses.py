"""OpenAI's Responses API through the official SDK on a real server (port 0, the tiny text model): the reply is the
one Chat Completions gives for the same conversation and seed, whole or as typed events (the SDK's own stream
helper reads them), ``previous_response_id`` continues a kept response, and what the API cannot honour is refused
by name."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis.asyncio as aioredis

from tests.conftest import timeout
from tests.server.helpers import Gate, fail_step
from tests.server.transport.clients import sdk
from tests.services import redis_server

# The Responses API is the transport's: one engine backend (the default) keeps this file short.
pytestmark = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)
StartServer = Callable[..., Any]
HAIL = [{"role": "user", "content": "Hail."}]


async def chat_answer(client: openai.AsyncOpenAI, messages: list[dict[str, str]], max_tokens: int, seed: int) -> Any:
    return await client.chat.completions.create(
        model="tiny/kent",
        messages=messages,
        max_tokens=max_tokens,
        extra_body={"seed": seed},  # type: ignore[arg-type]
    )


async def talkative_seed(client: openai.AsyncOpenAI) -> int:
    """A seed whose reply to "Hail." runs 10 characters or more (the tiny model's often end at once)."""
    for seed in range(100):
        answer = await chat_answer(client, HAIL, 400, seed)
        if len(answer.choices[0].message.content or "") >= 10:
            return seed
    raise AssertionError("no seed gives a reply of 10 characters")


async def test_a_response_is_the_chat_reply_to_the_same_conversation(start_server: StartServer) -> None:
    """``input`` and ``instructions`` are read as Chat Completions reads a user and a system message: the same
    seed gives the same reply; at ``max_output_tokens`` the response is incomplete and says why."""
    server = await start_server()
    async with sdk(server) as client:
        seed = await talkative_seed(client)
        whole = await client.responses.create(
            model="tiny/kent", instructions="A heath.", input="Hail.", max_output_tokens=400, extra_body={"seed": seed}
        )
        cut = await client.responses.create(
            model="tiny/kent", input="Hail.", max_output_tokens=3, extra_body={"seed": seed}
        )
        expected = await chat_answer(client, [{"role": "system", "content": "A heath."}, *HAIL], 400, seed)
        expected_cut = await chat_answer(client, HAIL, 3, seed)
    assert whole.output_text == expected.choices[0].message.content and whole.output_text
    assert (whole.status, whole.model, whole.instructions) == ("completed", "tiny/kent", "A heath.")
    assert whole.id.startswith("resp_") and whole.output[0].id.startswith("msg_")
    assert whole.usage is not None and expected.usage is not None
    assert (whole.usage.input_tokens, whole.usage.output_tokens) == (
        expected.usage.prompt_tokens,
        expected.usage.completion_tokens,
    )
    assert whole.usage.total_tokens == whole.usage.input_tokens + whole.usage.output_tokens
    assert (cut.output_text, cut.status) == (expected_cut.choices[0].message.content, "incomplete")
    assert len(cut.output_text) == 3
    assert cut.incomplete_details is not None and cut.incomplete_details.reason == "max_output_tokens"


async def test_a_streamed_response_is_typed_events_the_sdk_assembles(start_server: StartServer) -> None:
    """``stream``: response.created, in_progress, the output item and its text part, the text as deltas, then
    the done events and response.completed, numbered in order; the SDK's stream helper builds the same
    response as the whole answer."""
    server = await start_server()
    async with sdk(server) as client:
        seed = {"seed": await talkative_seed(client)}
        stream = await client.responses.create(model="tiny/kent", input="Hail.", stream=True, extra_body=seed)
        events = [event async for event in stream]
        async with client.responses.stream(model="tiny/kent", input="Hail.", extra_body=seed) as helper:
            final = await helper.get_final_response()
        whole = await client.responses.create(model="tiny/kent", input="Hail.", extra_body=seed)
    kinds = [event.type for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert deltas >= 1 and [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    done = events[-1].response  # type: ignore[union-attr]
    assert text == done.output_text == final.output_text == whole.output_text and text
    assert done.id == events[0].response.id  # type: ignore[union-attr]


async def test_a_stream_that_fails_ends_with_an_error_and_response_failed(start_server: StartServer) -> None:
    """An engine failure after the events began is OpenAI's ``error`` event and ``response.failed`` with the
    error, not a cut connection; the response is not kept."""
    server = await start_server(stream_buffer=4)
    async with sdk(server) as client:
        seed = await talkative_seed(client)
        fail_step(server.models.text["tiny"], on_call=3)
        stream = await client.responses.create(
            model="tiny/kent", input="Hail.", stream=True, max_output_tokens=400, extra_body={"seed": seed}
        )
        events = [event async for event in stream]
        failed = events[-1].response  # type: ignore[union-attr]
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(failed.id)
    assert [event.type for event in events[-2:]] == ["error", "response.failed"]
    assert events[-2].message == "internal error in model tiny"  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "server_error"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_response_the_server_stops_is_cancelled_not_completed(start_server: StartServer, stream: bool) -> None:
    """A reply cut by the server stopping (grace over) is not passed off as complete: a whole response says
    ``cancelled``, a streamed one ends with ``response.failed``; neither is kept."""
    server = await start_server(settings={"grace_s": 0.0}, stream_buffer=8)
    engine = server.models.text["tiny"]
    async with sdk(server) as client:
        seed = {"seed": await talkative_seed(client)}
        gate = Gate(engine)
        gate.hold_after(2)
        if stream:
            events = await client.responses.create(
                model="tiny/kent", input="Hail.", stream=True, max_output_tokens=2000, extra_body=seed
            )
            answer = asyncio.create_task(anext(aiter(events)))  # response.created, then the rest below
        else:
            answer = asyncio.create_task(
                client.responses.create(model="tiny/kent", input="Hail.", max_output_tokens=2000, extra_body=seed)
            )
        await gate.holding()
        stopping = asyncio.create_task(server.stop())
        while not engine._closing:
            await asyncio.sleep(0.005)
        gate.open()
        if stream:
            rest = [await answer, *[event async for event in events]]
            assert [event.type for event in rest[-2:]] == ["error", "response.failed"]
            status = rest[-1].response.status  # type: ignore[union-attr]
        else:
            status = (await asyncio.wait_for(answer, timeout(10))).status
        await asyncio.wait_for(stopping, timeout(10))
    assert status == ("failed" if stream else "cancelled")


async def test_previous_response_id_continues_a_kept_response(start_server: StartServer) -> None:
    """A response continues the one ``previous_response_id`` names (its input and reply, not its instructions),
    as Chat Completions answers the whole history; a kept response can be read back and deleted, and one asked
    not to be kept (``store: false``) cannot be continued."""
    server = await start_server()
    async with sdk(server) as client:
        seed = await talkative_seed(client)
        first = await client.responses.create(
            model="tiny/kent", instructions="A heath.", input="Hail.", max_output_tokens=40, extra_body={"seed": seed}
        )
        second = await client.responses.create(
            model="tiny/kent", previous_response_id=first.id, input="Speak again.", max_output_tokens=40,
            extra_body={"seed": seed},
        )  # fmt: skip
        history = [
            {"role": "user", "content": "Hail."},
            {"role": "assistant", "content": first.output_text},
            {"role": "user", "content": "Speak again."},
        ]
        expected = (await chat_answer(client, history, 40, seed)).choices[0].message.content
        kept = await client.responses.retrieve(first.id)
        await client.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError) as gone:
            await client.responses.retrieve(first.id)
        unkept = await client.responses.create(model="tiny/kent", input="Hail.", store=False, max_output_tokens=5)
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.responses.create(model="tiny/kent", previous_response_id=unkept.id, input="Again.")
    assert second.output_text == expected and second.previous_response_id == first.id
    assert kept.output_text == first.output_text and kept.id == first.id
    assert isinstance(gone.value.body, dict) and gone.value.body["param"] == "response_id"
    assert isinstance(unknown.value.body, dict) and unknown.value.body["param"] == "previous_response_id"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "function", "name": "f", "parameters": {}}]}, "tools"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}]},
         "input[0].content[0]"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": "{}"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": "Hail."}, {"role": "critic", "content": "Boo."}]}, "input[1].role"),
        ({"input": []}, "input"),
        ({"input": [{"role": "assistant", "content": "Hail."}]}, "input[0]"),  # the last must be the user's
        ({"input": "x" * 10_000}, "input[0].content"),
        ({"max_output_tokens": 100_000}, "max_output_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"background": True}, "background"),
        ({"stream": "yes"}, "stream"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)  # fmt: skip
async def test_what_the_api_cannot_honour_is_refused_by_name(
    start_server: StartServer, fields: dict[str, Any], param: str
) -> None:
    """A request this server cannot honour is a 400 with OpenAI's error object naming the field as the Responses
    API spells it (``input[1].role``, ``max_output_tokens``), not as the engine does."""
    server = await start_server()
    body = {"model": "tiny", "input": "Hail.", **fields}
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        refused = await client.post("/v1/responses", json=body)
        fine = await client.post("/v1/responses", json={"model": "tiny", "input": "Hail.", "max_output_tokens": 3})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param, refused.text
    assert refused.json()["error"]["message"].startswith(param)
    assert fine.status_code == 200 and fine.json()["usage"]["output_tokens"] <= 3


async def test_a_kept_response_is_read_back_whole_not_replayed(start_server: StartServer) -> None:
    """``retrieve(id, stream=True)`` asks for a replay of the response's events, which the SDK would read as none at
    all: a 400 naming ``stream``; ``include`` (log-probabilities and the like, never kept) a 400 naming it."""
    server = await start_server()
    async with sdk(server) as client:
        kept = await client.responses.create(model="tiny", input="Hail.", max_output_tokens=5)
        with pytest.raises(openai.BadRequestError) as replay:
            await client.responses.retrieve(kept.id, stream=True)
        with pytest.raises(openai.BadRequestError) as include:
            await client.responses.retrieve(kept.id, include=["message.output_text.logprobs"])
        whole = await client.responses.retrieve(kept.id, stream=False)
    assert isinstance(replay.value.body, dict) and replay.value.body["param"] == "stream"
    assert isinstance(include.value.body, dict) and include.value.body["param"] == "include"
    assert whole.output_text == kept.output_text


async def test_kept_responses_in_a_redis_that_goes_away_are_unavailable_until_it_is_back(
    start_server: StartServer, tmp_path: Path
) -> None:
    """With ``--session-store``, responses are kept in Redis: while it does not answer, a reply asked to be kept is
    a 503 whose message names ``store`` (streamed: an ``error`` event and ``response.failed``, never
    ``response.completed``) and a continuation a 503 naming ``previous_response_id``; a reply not kept is answered;
    once Redis is back, all work."""
    with redis_server(tmp_path) as redis:
        server = await start_server(settings={"session_store": redis.url})
        async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(20)) as client:
            body = {"model": "tiny/kent", "input": "Hail.", "max_output_tokens": 5}
            first = await client.post("/v1/responses", json=body)
            redis.stop()
            kept = await client.post("/v1/responses", json=body)
            async with client.stream("POST", "/v1/responses", json={**body, "stream": True}) as response:
                events = [line async for line in response.aiter_lines() if line.startswith("event: ")]
            unkept = await client.post("/v1/responses", json={**body, "store": False})
            continued = await client.post("/v1/responses", json={**body, "previous_response_id": first.json()["id"]})
            redis.start()
            again = await client.post("/v1/responses", json=body)
            read = await client.get(f"/v1/responses/{again.json()['id']}")
    assert first.status_code == 200 and unkept.status_code == 200
    assert kept.status_code == 503 and kept.json()["error"]["message"].startswith("store: the response store does not")
    assert events[-2:] == ["event: error", "event: response.failed"]
    assert continued.status_code == 503
    assert continued.json()["error"]["message"].startswith("previous_response_id: the response store does not")
    assert again.status_code == 200 and read.json()["output"] == again.json()["output"]


@pytest.mark.parametrize("value", [b"{not json", b"\xff", b"[]", b'{"messages": [{"role": 1}], "body": {}}'])
async def test_a_kept_response_another_program_broke_is_refused_naming_it(
    start_server: StartServer, tmp_path: Path, value: bytes
) -> None:
    """A value under a kept response's Redis key that the server did not write is a 409 naming the field, for a
    continuation and for a read, never a 500."""
    with redis_server(tmp_path) as redis:
        planter = aioredis.Redis(port=redis.port)
        await planter.set("antiphon:response:resp_bad", value)
        await planter.aclose()
        server = await start_server(settings={"session_store": redis.url})
        async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(20)) as client:
            body = {"model": "tiny/kent", "input": "Hail.", "max_output_tokens": 5, "previous_response_id": "resp_bad"}
            continued = await client.post("/v1/responses", json=body)
            read = await client.get("/v1/responses/resp_bad")
    unreadable = "'resp_bad' cannot be read from the response store; start a new conversation"
    assert (continued.status_code, continued.json()["error"]["message"]) == (409, f"previous_response_id: {unreadable}")
    assert (read.status_code, read.json()["error"]["message"]) == (409, f"response_id: {unreadable}")
