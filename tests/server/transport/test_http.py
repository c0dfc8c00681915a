"""The OpenAI-compatible HTTP API, driven by the official ``openai`` SDK and by raw HTTP against a real server."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from server.engine.text import TextEngine
from tests.conftest import timeout
from tests.server.helpers import Gate, reference_text
from tests.server.transport.clients import sdk

# The HTTP API is one transport over one engine whatever its backend: the default backend keeps this file short.
pytestmark = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)

StartServer = Callable[..., Any]
STOP = ("\n\n",)
USER = {"role": "user", "content": "a"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}


def engine_of(server: Any) -> TextEngine:
    engine = server.models.text["tiny"]
    assert isinstance(engine, TextEngine)
    return engine


def dialogue(*turns: tuple[str, str]) -> str:
    """Turns as the model reads them: ("Kent", "line") -> "Kent.\\nline\\n\\n"."""
    return "".join(f"{speaker}.\n{line}\n\n" for speaker, line in turns)


async def test_models_lists_each_persona(start_server: StartServer) -> None:
    """GET /v1/models lists the text model and one id per persona, as the SDK reads them."""
    server = await start_server()
    async with sdk(server) as client:
        models = await client.models.list()
        one = await client.models.retrieve("tiny/fool")
        # any id chat reads names the same model: a persona in any case or with a space, a bare id with a slash
        same = [await client.models.retrieve(name) for name in ("tiny/FOOL", "tiny/Fool", "tiny/")]
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("tiny/hamlet")
    assert [m.id for m in models.data] == ["tiny", "tiny/lear", "tiny/kent", "tiny/fool", "tiny/edgar"]
    assert {m.object for m in models.data} == {"model"}
    assert one.id == "tiny/fool"
    assert [m.id for m in same] == ["tiny/fool", "tiny/fool", "tiny"]


async def test_chat_completion_is_the_reply_to_the_dialogue(start_server: StartServer, tiny_text_model: Any) -> None:
    """A plain chat completion is the persona's reply to the conversation written in the dialogue form."""
    server = await start_server()
    async with sdk(server) as client:
        answer = await client.chat.completions.create(
            model="tiny/fool",
            messages=[{"role": "user", "content": "Good night, my lord."}],
            seed=5,
            temperature=0.8,
        )
    expected, reason = reference_text(tiny_text_model, "Kent.\nGood night, my lord.\n\nFool.\n", seed=5, stop=STOP)
    choice = answer.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", expected, reason)
    assert answer.object == "chat.completion" and answer.model == "tiny/fool"
    assert answer.usage is not None
    generated = len(expected) + (len("\n\n") if reason == "stop" else 0)  # the blank line that ends it counts
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (
        len("\nKent.\nGood night, my lord.\n\nFool.\n"),
        generated,
    )


async def test_streamed_chat_completion_arrives_in_pieces_with_usage(
    start_server: StartServer, tiny_text_model: Any
) -> None:
    """stream=True: chunks that join to the same reply, a finish reason, and usage last when asked for."""
    server = await start_server(stream_buffer=8)
    async with sdk(server) as client:
        stream = await client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "What love may do."}],
            seed=9,
            max_tokens=200,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    expected, reason = reference_text(
        tiny_text_model, "Kent.\nWhat love may do.\n\nLear.\n", seed=9, stop=STOP, max_tokens=200
    )
    texts = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(texts) == expected
    assert len([t for t in texts if t]) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(expected) + (2 if reason == "stop" else 0)
    assert {c.object for c in chunks} == {"chat.completion.chunk"}


async def test_follow_up_reads_only_its_new_text_and_equals_the_whole_history(
    start_server: StartServer, tiny_text_model: Any
) -> None:
    """The client resends the conversation; the reply equals the one computed from the whole history, and the
    kept state spares reading what came before (usage's cached_tokens)."""
    server = await start_server()
    first_messages = [
        {"role": "system", "content": "A heath. Storm still."},
        {"role": "user", "content": "Good night, my lord."},
    ]
    async with sdk(server) as client:
        first = await client.chat.completions.create(model="tiny/lear", messages=first_messages, seed=1)
        reply = first.choices[0].message.content or ""
        messages = [
            *first_messages,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "Come hither."},
        ]
        second = await client.chat.completions.create(model="tiny/lear", messages=messages, seed=2)
    history = "A heath. Storm still.\n\n" + dialogue(("Kent", "Good night, my lord."), ("Lear", reply))
    expected, reason = reference_text(tiny_text_model, history + "Kent.\nCome hither.\n\nLear.\n", seed=2, stop=STOP)
    assert (second.choices[0].message.content, second.choices[0].finish_reason) == (expected, reason)
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached == len("\n" + history) - (0 if first.choices[0].finish_reason == "stop" else 2)
    assert engine_of(server).prefixes.hits == 1


async def test_completions_continue_the_prompt(start_server: StartServer, tiny_text_model: Any) -> None:
    """POST /v1/completions continues a prompt, plain and streamed, with the reference loop's text."""
    server = await start_server()
    async with sdk(server) as client:
        plain = await client.completions.create(model="tiny", prompt="Lear.\n", max_tokens=40, seed=3, temperature=1.0)
        streamed = await client.completions.create(
            model="tiny", prompt="Lear.\n", max_tokens=40, seed=3, temperature=1.0, stream=True
        )
        pieces = [c.choices[0].text async for c in streamed if c.choices]
    expected, _ = reference_text(tiny_text_model, "Lear.\n", seed=3, temperature=1.0, max_tokens=40)
    assert plain.choices[0].text == expected == "".join(pieces)
    assert plain.choices[0].finish_reason == "length"


async def test_completions_continue_a_list_of_prompts_each_as_alone(start_server: StartServer) -> None:
    """A list of prompts (LangChain's OpenAI sends a batch as one request) is one choice a prompt, in order, each
    the text that prompt gets alone, batched by the engine; usage adds them up."""
    server = await start_server()
    prompts = ["Lear.\n", "Kent.\nGood night.\n\nFool.\n", "Lear.\n"]
    async with sdk(server) as client:
        batch = await client.completions.create(model="tiny", prompt=prompts, max_tokens=30, seed=2)
        alone = [await client.completions.create(model="tiny", prompt=p, max_tokens=30, seed=2) for p in prompts]
    assert [c.index for c in batch.choices] == [0, 1, 2]
    assert [c.text for c in batch.choices] == [a.choices[0].text for a in alone]
    assert [c.finish_reason for c in batch.choices] == [a.choices[0].finish_reason for a in alone]
    assert batch.usage is not None
    assert (batch.usage.prompt_tokens, batch.usage.completion_tokens) == (
        sum(a.usage.prompt_tokens for a in alone if a.usage),
        sum(a.usage.completion_tokens for a in alone if a.usage),
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": ["Lear.\n", "Kent.\n"], "stream": True},
         "prompt: a stream continues one prompt, got 2: send one, or stream false"),
        ({"prompt": ["a"] * 21}, "prompt: at most 20 prompts a request, got 21"),
        ({"prompt": [[1, 2, 3]]}, "prompt: must be a string or a list of strings (a token is a character)"),
        ({"prompt": []}, "prompt: must be a string or a list of strings (a token is a character)"),
        ({"prompt": ["a", "x" * 100_000]}, "prompt[1]: at most"),
    ],
)  # fmt: skip
async def test_prompts_a_completion_cannot_continue_are_refused_by_name(
    start_server: StartServer, fields: dict[str, Any], message: str
) -> None:
    """Several prompts in one stream, more than 20, token ids, none, or one too long (named by its place) are a 400,
    and no prompt of a refused list is left running."""
    server = await start_server()
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        refused = await client.post("/v1/completions", json={"model": "tiny", "max_tokens": 2000, **fields})
    assert refused.status_code == 400 and refused.json()["error"]["message"].startswith(message)
    engine = engine_of(server)
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))


@pytest.mark.parametrize(
    ("fields", "status", "param"),
    [
        ({"temperature": 500}, 400, "temperature"),
        ({"n": 2}, 400, "n"),
        ({"presence_penalty": 0.5}, 400, "presence_penalty"),
        ({"logprobs": True}, 400, "logprobs"),
        ({"max_tokens": 0}, 400, "max_tokens"),
        ({"extra_body": {"frobnicate": 1}}, 400, "frobnicate"),
        ({"model": "gpt-4o"}, 404, "model"),
        ({"model": "tiny/hamlet"}, 404, "model"),
        ({"messages": [{"role": "assistant", "content": "Hail."}]}, 400, "messages[0]"),
        ({"messages": [{"role": "tool", "content": "{}"}]}, 400, "messages[0].role"),
        ({"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [CALL]}, USER]},
         400, "messages[1].tool_calls"),  # the call is refused, not the assistant's role
        ({"messages": [USER, {"role": "assistant", "content": None, "function_call": CALL["function"]}, USER]},
         400, "messages[1].function_call"),  # the older name, read as nothing before
        ({"reasoning_effort": "high"}, 400, "reasoning_effort"),
        ({"extra_body": {"audio": {"voice": "alloy", "format": "wav"}}}, 400, "audio"),
        ({"extra_body": {"stream": "false"}}, 400, "stream"),  # a string would have been read as true
        ({"extra_body": {"temperature": 10**400}}, 400, "temperature"),  # JSON's integers have no limit
        ({"extra_body": {"n": True}}, 400, "n"),  # true == 1 in Python, not in JSON
        ({"extra_body": {"presence_penalty": False}}, 400, "presence_penalty"),
        ({"messages": [{"content": "Hail."}]}, 400, "messages[0].role"),
        ({"extra_body": {"stream_options": {"include_usage": True, "continuous_usage_stats": True}}},
         400, "stream_options.continuous_usage_stats"),  # another server's option, named as sent
        ({"extra_body": {"stream_options": {"include_usage": "yes"}}}, 400, "stream_options.include_usage"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
         400, "messages[0].content[0]"),
    ],
)  # fmt: skip
async def test_errors_are_openai_error_objects_naming_the_parameter(
    start_server: StartServer, fields: dict[str, Any], status: int, param: str
) -> None:
    """A bad request is the SDK's typed error with the HTTP status, OpenAI's error object and the parameter named;
    neutral values of unsupported fields (n=1, presence_penalty=0, logprobs=False) are accepted."""
    server = await start_server()
    request: dict[str, Any] = {"model": "tiny", "messages": [{"role": "user", "content": "Hail."}], "max_tokens": 5}
    extra = fields.pop("extra_body", None)
    request.update(fields)
    async with sdk(server) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.chat.completions.create(**request, extra_body=extra)
        neutral = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hail."}], n=1, presence_penalty=0, logprobs=False,
            max_tokens=3,
        )  # fmt: skip
    assert info.value.status_code == status
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == param
    assert error["message"].startswith(param) or param == "model"
    assert neutral.choices[0].finish_reason in ("stop", "length")


async def test_fields_a_front_end_sends_at_null_or_their_default_are_accepted(start_server: StartServer) -> None:
    """Front ends fill in fields this server does not read, newer ones included: null, their default or an
    identifier is accepted; the request is answered as without them."""
    server = await start_server()
    request: dict[str, Any] = {"model": "tiny", "messages": [{"role": "user", "content": "Hail."}], "max_tokens": 5}
    extra = {
        **dict.fromkeys(("audio", "prediction", "web_search_options", "reasoning_effort", "functions", "n"), None),
        "verbosity": "medium",
        "function_call": "auto",
        "prompt_cache_key": "conversation-1",
        "safety_identifier": "user-1",
    }
    async with sdk(server) as client:
        plain = await client.chat.completions.create(**request, seed=4)
        filled = await client.chat.completions.create(**request, seed=4, extra_body=extra)
    assert filled.choices[0].message.content == plain.choices[0].message.content


async def test_overload_is_429_with_retry_after(start_server: StartServer) -> None:
    """Beyond the running and waiting bounds a request is 429 with Retry-After, as rate-limited clients expect."""
    server = await start_server(max_streams=1, max_waiting=0, stream_buffer=2)
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}") as client:
        body = {"model": "tiny", "prompt": "", "max_tokens": 2000, "stream": True}
        async with client.stream("POST", "/v1/completions", json=body) as running:
            assert running.status_code == 200
            answer = await client.post("/v1/completions", json={"model": "tiny", "prompt": "", "max_tokens": 5})
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["error"]["type"] == "rate_limit_exceeded"


async def test_raw_events_end_with_done_and_a_disconnect_frees_the_slot(start_server: StartServer) -> None:
    """Server-sent events are "data: {json}" blocks ending with "data: [DONE]"; a client that leaves mid-stream
    frees its slot at the next step."""
    server = await start_server(stream_buffer=4)
    engine = engine_of(server)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hail."}], "stream": True, "max_tokens": 30}
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        complete = await client.post("/v1/chat/completions", json=body)
        assert complete.headers["content-type"].startswith("text/event-stream")
        blocks = [b for b in complete.text.split("\n\n") if b]
        assert all(b.startswith("data: ") for b in blocks)
        assert blocks[-1] == "data: [DONE]"
        assert json.loads(blocks[0][6:])["choices"][0]["delta"]["role"] == "assistant"

        endless = {"model": "tiny", "prompt": "Lear.\n", "stream": True, "max_tokens": 2000}
        async with client.stream("POST", "/v1/completions", json=endless) as leaving:
            async for _ in leaving.aiter_lines():
                break
            assert engine.live_streams == 1
    await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))


async def test_a_whole_answer_whose_client_leaves_is_cancelled(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A request answered whole (not streamed) whose client goes away before the answer (its timeout, a closed tab,
    an SDK retrying) is cancelled at the next step rather than run to max_tokens for no one; one INFO line."""
    caplog.set_level("INFO")
    server = await start_server()
    engine = engine_of(server)
    gate = Gate(engine)
    gate.hold_after(2)
    body = {"model": "tiny", "prompt": "Lear.\n", "max_tokens": 2000}
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        leaving = asyncio.create_task(client.post("/v1/completions", json=body, headers={"X-Request-Id": "leaving-1"}))
        await gate.holding()
        assert engine.live_streams == 1
        leaving.cancel()  # httpx drops the connection
        await asyncio.gather(leaving, return_exceptions=True)

        def logged(start: str, end: str = "") -> bool:
            return any(r.getMessage().startswith(start) and r.getMessage().endswith(end) for r in caplog.records)

        async def heard() -> None:
            while not logged("request cmpl-leaving-1: the client went away"):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(heard(), timeout(10))  # while the engine is still held mid-reply
        gate.open()
        await asyncio.wait_for(engine.wait_until(lambda: engine.live_streams == 0), timeout(10))
        fine = await client.post("/v1/completions", json={**body, "max_tokens": 3})
    assert fine.json()["usage"]["completion_tokens"] == 3
    assert logged("request http-cmpl-leaving-1 ", "finish=cancelled")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_a_refused_request_starts_no_reply(start_server: StartServer, path: str) -> None:
    """A request refused for a field read last (``stream_options``) starts no reply: none runs to max_tokens for no
    one, holding a slot, after the client has its 400."""
    server = await start_server()
    engine = engine_of(server)
    gate = Gate(engine)
    gate.hold_after(0)  # a reply started would stay in the engine until the gate opens
    body = {"model": "tiny", "max_tokens": 2000, "stream": True, "stream_options": {"include_usage": "yes"}}
    body |= {"messages": [USER]} if path == "/v1/chat/completions" else {"prompt": "Lear.\n"}
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        refused = await client.post(path, json=body)
        live = engine.live_streams
        gate.open()
    assert (refused.status_code, refused.json()["error"]["param"]) == (400, "stream_options.include_usage")
    assert live == 0


async def test_shutting_down_is_503(start_server: StartServer) -> None:
    """Once the server stops taking work, health says 503 and so do new requests."""
    server = await start_server()
    address = server.http_address
    async with httpx.AsyncClient(base_url=f"http://{address}") as client:
        assert (await client.get("/healthz")).status_code == 200
        server._serving = False
        await engine_of(server).close()
        health = await client.get("/healthz")
        answer = await client.post("/v1/completions", json={"model": "tiny", "prompt": "", "max_tokens": 5})
    assert (health.status_code, answer.status_code) == (503, 503)
    assert answer.json()["error"]["type"] == "service_unavailable"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_a_reply_the_server_stops_is_an_error_not_a_finish(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, path: str, stream: bool
) -> None:
    """A reply cut by the server stopping (grace over) is not passed off as finished with a finish reason OpenAI does
    not define: a whole answer is 503 with Retry-After, a stream ends with an error event and no [DONE]; one INFO
    line."""
    caplog.set_level("INFO")
    server = await start_server(settings={"grace_s": 0.0}, stream_buffer=8)
    engine = engine_of(server)
    gate = Gate(engine)
    gate.hold_after(2)
    body = {"model": "tiny", "max_tokens": 2000, "stream": stream, "temperature": 2.0}
    body |= {"messages": [USER]} if path == "/v1/chat/completions" else {"prompt": "Lear.\n"}
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        answer = asyncio.create_task(client.post(path, json=body))
        await gate.holding()
        stopping = asyncio.create_task(server.stop())
        while not engine._closing:
            await asyncio.sleep(0.005)
        gate.open()
        cut = await asyncio.wait_for(answer, timeout(10))
        await asyncio.wait_for(stopping, timeout(10))
    message = "the reply was cancelled: the server is stopping"
    if stream:
        last = cut.text.strip().split("\n\n")[-1]
        assert (cut.status_code, json.loads(last.removeprefix("data: "))["error"]["message"]) == (200, message)
        assert "[DONE]" not in cut.text and '"cancelled"' not in cut.text
    else:
        assert (cut.status_code, cut.headers["retry-after"], cut.json()["error"]) == (
            503,
            "1",
            {"message": message, "type": "service_unavailable", "param": None, "code": None},
        )
    assert [r.levelname for r in caplog.records if message in r.getMessage()] == ["INFO"]


AUDIO_LIMITS = {"max_text_chars": 200, "max_seconds": 5.0}


async def test_speech_streams_a_wav_as_it_is_made(start_server: StartServer) -> None:
    """/v1/audio/speech through the SDK's streaming response: a WAV stream header at the model's rate, then PCM16
    in several chunks; OpenAI's stock voice names are accepted."""
    server = await start_server(audio=AUDIO_LIMITS)
    async with (
        sdk(server) as client,
        client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="Friends, Romans, countrymen.", response_format="wav"
        ) as response,
    ):
        chunks = [chunk async for chunk in response.iter_bytes()]
    data = b"".join(chunks)
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt "
    assert int.from_bytes(data[24:28], "little") == 16_000
    assert data[36:40] == b"data" and len(data) > 44 + 2 * 1600 and (len(data) - 44) % 2 == 0
    assert len(chunks) > 2


async def test_speech_as_events_and_as_raw_pcm(start_server: StartServer) -> None:
    """stream_format "sse": speech.audio.delta events whose base64 audio adds up to the done event's samples; pcm:
    bare PCM16; both at OpenAI's 24 kHz, which their clients assume."""
    server = await start_server(audio=AUDIO_LIMITS)
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(30)) as client:
        body = {"model": "tiny-wavenet", "input": "Lend me your ears.", "voice": "echo", "stream_format": "sse"}
        events = await client.post("/v1/audio/speech", json=body)
        pcm = await client.post("/v1/audio/speech", json={**body, "stream_format": "audio", "response_format": "pcm"})
    parsed = [json.loads(block[6:]) for block in events.text.split("\n\n") if block]
    assert [e["type"] for e in parsed[:-1]] == ["speech.audio.delta"] * (len(parsed) - 1)
    assert parsed[-1]["type"] == "speech.audio.done"
    samples = sum(len(base64.b64decode(e["audio"])) // 2 for e in parsed[:-1])
    assert samples == parsed[-1]["usage"]["samples"] > 0
    assert pcm.headers["content-type"] == "audio/pcm" and pcm.headers["x-sample-rate"] == "24000"  # OpenAI's rate
    assert len(pcm.content) > 0 and len(pcm.content) % 2 == 0
    # a proxy in front (nginx) passes both on as they are made, whatever its own buffering
    assert events.headers["x-accel-buffering"] == pcm.headers["x-accel-buffering"] == "no"


async def test_speech_events_the_server_stops_end_with_an_error_not_done(start_server: StartServer) -> None:
    """Speech events cut by the server stopping end with an error event, not ``speech.audio.done``, which would pass
    the cut audio off as all of it."""
    server = await start_server(settings={"grace_s": 0.0}, audio=AUDIO_LIMITS)
    engine = server.models.audio["tiny-wavenet"]
    compute, held, go = engine._compute, threading.Event(), threading.Event()

    def gated(*args: Any) -> Any:
        if engine.steps >= 2:
            held.set()
            go.wait(timeout(20))
        return compute(*args)

    engine._compute = gated
    body = {"model": "tts-1", "input": "Friends, Romans, countrymen.", "stream_format": "sse"}
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(30)) as client:
        answer = asyncio.create_task(client.post("/v1/audio/speech", json=body))
        assert await asyncio.to_thread(held.wait, timeout(20))
        stopping = asyncio.create_task(server.stop())
        while not engine._closing:
            await asyncio.sleep(0.005)
        go.set()
        cut = await asyncio.wait_for(answer, timeout(10))
        await asyncio.wait_for(stopping, timeout(10))
    events = [json.loads(block.removeprefix("data: ")) for block in cut.text.split("\n\n") if block]
    assert events[-1] == {
        "error": {
            "message": "the reply was cancelled: the server is stopping",
            "type": "service_unavailable",
            "param": None,
            "code": None,
        }
    }
    assert "speech.audio.done" not in cut.text


@pytest.mark.parametrize(
    ("fields", "status", "param"),
    [
        ({"response_format": "mp3"}, 400, "response_format"),
        ({"speed": 1.5}, 400, "speed"),
        ({"input": ""}, 400, "input"),  # the engine's "text", named as the endpoint names it
        ({"input": "one " * 5000}, 400, "input"),
        ({"voice": "no-such-voice"}, 404, "voice"),
        ({"model": "no-such-model"}, 404, "model"),
    ],
)
async def test_speech_errors_name_the_parameter(
    start_server: StartServer, fields: dict[str, Any], status: int, param: str | None
) -> None:
    """A speech request the server cannot honour is the SDK's typed error with OpenAI's error object."""
    server = await start_server(audio=AUDIO_LIMITS)
    request: dict[str, Any] = {"model": "tts-1", "voice": "alloy", "input": "Hail.", **fields}
    async with sdk(server) as client:
        with pytest.raises(openai.APIStatusError) as info:
            await client.audio.speech.create(**request)
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict) and info.value.body["param"] == param


async def test_refusals_say_what_was_sent(start_server: StartServer) -> None:
    """A refusal says what the client sent, not only what it should have: a missing role, an image part, a
    compressed body, a speed given as a string."""
    server = await start_server(audio=AUDIO_LIMITS)
    chat = {"model": "tiny", "max_tokens": 3}
    image = {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}]}
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        answers = [
            await client.post("/v1/chat/completions", json={**chat, "messages": [{"content": "Hail."}]}),
            await client.post("/v1/chat/completions", json={**chat, "messages": [image]}),
            await client.post(
                "/v1/chat/completions",
                content=gzip.compress(json.dumps({**chat, "messages": [USER]}).encode()),
                headers={"content-type": "application/json", "content-encoding": "gzip"},
            ),
            await client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hail.", "speed": "1"}),
        ]
    assert [(a.status_code, a.json()["error"]["message"]) for a in answers] == [
        (400, "messages[0].role: is missing"),
        (400, 'messages[0].content[1]: only text parts are supported (a character model), got a part of type '
              '"image_url"'),
        (400, "body: is compressed (Content-Encoding: gzip): send it as plain JSON"),
        (400, 'speed: only 1.0 is supported (the WaveNet speaks at its own pace), got "1"'),
    ]  # fmt: skip


async def test_a_body_over_the_limit_or_not_json_is_400(start_server: StartServer) -> None:
    """A body that is not JSON, or larger than the limit, is a 400 naming the body; the server serves on."""
    server = await start_server()
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        garbage = await client.post("/v1/chat/completions", content=b"{not json")
        deep = await client.post("/v1/chat/completions", content=b"[" * 100_000 + b"]" * 100_000)
        huge = await client.post("/v1/completions", content=b"x" * (5 * 1024 * 1024))
        fine = await client.post("/v1/completions", json={"model": "tiny", "prompt": "", "max_tokens": 3})
    assert (garbage.status_code, garbage.json()["error"]["param"]) == (400, "body")
    assert (deep.status_code, deep.json()["error"]["message"]) == (400, "body: is nested too deeply to be a request")
    assert (huge.status_code, huge.json()["error"]["message"]) == (400, "body: at most 4194304 bytes")
    assert fine.status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", b'{"model": "tiny", "prompt": "a", "max_tokens": 2, "max_tokens": 9000}', "max_tokens"),
        (
            "/v1/chat/completions",
            b'{"model": "tiny", "messages": [{"role": "user", "role": "system"}]}',
            "messages[0].role",
        ),
        ("/v1/responses", b'{"model": "tiny", "input": "a", "store": true, "store": false}', "store"),
        ("/v1/completions", b"7", "body"),
    ],
)
async def test_a_key_given_twice_is_400_naming_it(
    start_server: StartServer, path: str, body: bytes, param: str
) -> None:
    """An object that gives a key twice is refused, naming the key where it is: Python's parser keeps the last
    value, where a gateway in front that checked the request (its ``max_tokens``, its ``store``) may have read the
    first. A body that is JSON but not an object is refused too, naming the body."""
    server = await start_server()
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        refused = await client.post(path, content=body, headers=headers)
        fine = await client.post("/v1/completions", json={"model": "tiny", "prompt": "", "max_tokens": 3})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == param
    assert param == "body" or error["message"] == f"{param}: appears twice in its object"
    assert fine.status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": "tiny", "messages": [{**USER, "content": "\ud83d"}]}, "messages[0].content"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{**USER, "name": "\udc00"}]}, "messages[0].name"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [USER], "\ud800": 1}, "body"),
        ("/v1/completions", {"model": "tiny", "prompt": ["\ud800"]}, "prompt[0]"),
        ("/v1/audio/speech", {"model": "tts-1", "voice": "alloy", "input": "\ud800 hi"}, "input"),
    ],
)
async def test_a_lone_surrogate_is_400_naming_where_it_is(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, path: str, body: dict[str, Any], param: str
) -> None:
    """JSON's escapes can spell half of a UTF-16 pair (a front end cutting a history in the middle of an emoji):
    such a string cannot be hashed, logged or spoken, so it is a 400 naming where it is, not a 500 or an empty
    WAV; one INFO line, and the connection serves on."""
    server = await start_server(audio=AUDIO_LIMITS)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        refused = await client.post(path, content=json.dumps(body).encode(), headers=headers)  # "\\ud800" escapes
        fine = await client.post("/v1/completions", json={"model": "tiny", "prompt": "\U0001f600", "max_tokens": 3})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == param and "lone surrogate" in error["message"]
    assert fine.status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_an_endpoint_the_server_lacks_is_openais_404_and_a_wrong_method_405(start_server: StartServer) -> None:
    """An SDK asking for what this server does not serve (embeddings) gets OpenAI's error object, not a bare "Not
    Found"; a wrong method names the one to use."""
    server = await start_server()
    async with sdk(server) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.embeddings.create(model="tiny", input="a")
    assert missing.value.body == {
        "message": "Invalid URL (POST /v1/embeddings): not an endpoint of this server",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        wrong = await client.get("/v1/chat/completions")
        listing = await client.post("/v1/models")
        page = await client.get("/static/no-such-file.js")
        head = await client.head("/v1/embeddings")
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")
    assert wrong.json()["error"]["message"] == "Method not allowed (GET /v1/chat/completions); use POST"
    assert (listing.status_code, set(listing.headers["allow"].split(", "))) == (405, {"GET", "HEAD"})
    assert (page.status_code, page.json()["error"]["type"]) == (404, "invalid_request_error")
    assert (head.status_code, head.content) == (404, b"")


async def test_a_client_leaving_before_its_body_is_sent_is_one_info_line(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that promises 1,000 bytes, sends a few and leaves: one INFO line naming the body, no traceback,
    and the server serves the next request."""
    caplog.set_level("INFO")
    server = await start_server()
    host, port = server.http_address.rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"model":'
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    for _ in range(100):
        if any("ended early" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if "ended early" in r.getMessage()]
    assert lines == [lines[0]] and "body: ended early: the client went away" in lines[0]
    assert not [r for r in caplog.records if r.levelname == "ERROR" or r.exc_info]
    async with sdk(server) as client:
        assert (await client.models.list()).data


async def test_bytes_that_are_not_http_are_a_client_mistake(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A TLS client on the plain port (or a scanner) gets a 400 and is logged at INFO, as every client's mistake is;
    the server goes on."""
    caplog.set_level("INFO")
    server = await start_server()
    host, port = server.http_address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64) + b"\r\n\r\n")  # a TLS ClientHello's start
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout(10))
    writer.close()
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as client:
        fine = await client.get("/healthz")
    assert answer.startswith(b"HTTP/1.1 400") and fine.status_code == 200
    assert [r.levelname for r in caplog.records if r.getMessage().startswith("Invalid HTTP request")] == ["INFO"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_every_answer_carries_a_request_id_that_finds_its_log_line(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every answer carries ``x-request-id``, which OpenAI's SDK shows as ``request_id`` (with every error) and
    which the answer's id and the server's log lines about the request contain: the id a user reports finds the
    request in the log. A proxy's or client's own id is kept when it is plain and short, replaced when not."""
    caplog.set_level("INFO")
    server = await start_server(settings={"api_key": "sk-test"})
    hexes = set("0123456789abcdef")

    def fresh(request_id: str) -> bool:
        return len(request_id) == 32 and set(request_id) <= hexes

    client = openai.AsyncOpenAI(base_url=f"http://{server.http_address}/v1", api_key="sk-test", max_retries=0)
    async with client:
        raw = await client.chat.completions.with_raw_response.create(model="tiny/fool", messages=[USER], max_tokens=3)
        completion = raw.parse()
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="tiny/fool", messages=[USER], temperature=-1)
    assert fresh(raw.headers["x-request-id"]) and completion.id == f"chatcmpl-{raw.headers['x-request-id']}"
    assert completion._request_id == raw.headers["x-request-id"]
    assert refused.value.request_id is not None and fresh(refused.value.request_id)
    lines = [r.getMessage() for r in caplog.records if refused.value.request_id in r.getMessage()]
    assert len(lines) == 1 and "temperature" in lines[0], lines
    assert any(f"http-chatcmpl-{raw.headers['x-request-id']} " in r.getMessage() for r in caplog.records)

    key = {"Authorization": "Bearer sk-test"}
    async with httpx.AsyncClient(base_url=f"http://{server.http_address}", timeout=timeout(10)) as http:
        kept = await http.post(
            "/v1/completions",
            json={"model": "tiny", "prompt": "a", "max_tokens": 2},
            headers={**key, "X-Request-Id": "edge-7f3a:2"},
        )
        others = [
            await http.get("/v1/models", headers={**key, "X-Request-Id": "has space"}),
            await http.get("/v1/models", headers={**key, "X-Request-Id": "a" * 129}),
            await http.get("/v1/nothing", headers=key),  # no such endpoint
            await http.get("/v1/models"),  # no key
            await http.get("/v1/models", headers={**key, "Origin": "https://elsewhere.example"}),  # another site
            await http.get("/", headers=key),
        ]
    assert kept.status_code == 200 and kept.headers["x-request-id"] == "edge-7f3a:2"
    assert kept.json()["id"] == "cmpl-edge-7f3a:2"
    assert [answer.status_code for answer in others] == [200, 200, 404, 401, 403, 200]
    assert all(fresh(answer.headers["x-request-id"]) for answer in others)
    assert len({answer.headers["x-request-id"] for answer in others}) == len(others)


async def test_more_prompts_than_the_server_ever_holds_is_400_naming_prompt(start_server: StartServer) -> None:
    """A batch of prompts larger than the engine holds at once (running and waiting) can never be served: a 400
    naming ``prompt`` and the limit, not a 429 the SDKs would retry in vain. A batch within it is served."""
    server = await start_server(max_streams=1, max_waiting=1)
    async with sdk(server) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.completions.create(model="tiny", prompt=["a", "b", "c"], max_tokens=2)
        two = await client.completions.create(model="tiny", prompt=["a", "b"], max_tokens=2)
    assert refused.value.param == "prompt"
    assert "at most 2 prompts at once on this server, got 3" in refused.value.message
    assert [choice.index for choice in two.choices] == [0, 1]
