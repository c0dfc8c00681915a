"""Fuzzing the three transports of a real server with hypothesis: WebSocket frames, protobuf field values and HTTP
JSON bodies, each built from the fields the protocol knows and values of every JSON type around their limits.

Every input gets one of its documented answers (a stream that ends with ``done``, or an error with a documented
code, status or close code), never ``INTERNAL`` or a 5xx that is not documented, and the server goes on serving:
after each input, a plain request on the same connection (WebSocket) or server is answered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest
from antiphon.v1 import (
    audio_pb2,
    chat_pb2,
    classify_pb2,
    generation_pb2_grpc,
    models_pb2,
    sampling_pb2,
    text_pb2,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import timeout

pytestmark = pytest.mark.parametrize("make_text_engine", ["fast"], indirect=True)
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

WS_CODES = {
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "UNAVAILABLE",
    "UNIMPLEMENTED",
}
WS_CLOSE_CODES = {1003, 1007, 1009}  # a binary frame, text that is not UTF-8, a message over the size limit
GRPC_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED,
}
HTTP_STATUSES = {200, 400, 404, 405, 409, 413, 415, 422, 429, 501}
LIMITS = {"max_tokens": 16, "max_prompt_chars": 200}
AUDIO = {"max_seconds": 0.05, "max_text_chars": 40}

# Values of every JSON type, around the limits the protocol states.
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2, 8, 9, 16, 17, 64, 65, 2**31, 2**63, 2**64 - 1, 2**64, 10**400]),  # 10**400: no float
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 0.5, 100.0, 100.5, -0.0, 1e-300]),
)
lone_surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)  # JSON escapes spell them
scalars = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    st.text(max_size=40),
    lone_surrogates,
    st.sampled_from(["", " ", "\n\n", "x" * 300]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
SAMPLING_FIELDS = ["temperature", "top_k", "top_p", "seed", "max_tokens", "stop", "bogus"]
sampling = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(SAMPLING_FIELDS), st.one_of(numbers, json_values), max_size=6),
    st.fixed_dictionaries({"stop": st.lists(st.text(max_size=70), max_size=10)}),
)


def request_fields(extra: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with some of the protocol's fields (each a plausible or a wrong value) and now and then an unknown
    one."""
    common = {
        "model": st.sampled_from(["", "tiny", "tiny-wavenet", "digits", "nobody"]) | json_values,
        "sampling": sampling,
        "bogus": json_values,
    }
    return st.fixed_dictionaries({}, optional={**common, **extra})


ws_frames = st.one_of(
    st.builds(
        lambda kind, fields, rid: {"type": kind, "id": rid, **fields},
        st.sampled_from(["generate", "chat", "generate_audio", "classify", "cancel", "list_models", "nope"])
        | json_values,
        request_fields(
            {
                "prompt": st.text(max_size=250) | json_values,
                "session_id": st.sampled_from(["s", "", "x" * 129]) | json_values,
                "message": st.sampled_from(["Hail.", "", "a\n\nb"]) | json_values,
                "persona": st.sampled_from(["", "Fool", "Hamlet"]) | json_values,
                "speaker": st.text(max_size=70) | json_values,
                "speak": json_values,
                "text": st.text(max_size=60) | json_values,
                "voice": json_values,
                "encoding": st.sampled_from(["pcm16", "mulaw", "mp3"]) | json_values,
                "max_seconds": numbers | json_values,
                "chunk_samples": numbers | json_values,
                "audio": st.text(max_size=40) | json_values,
                "audio_sample_rate": numbers,
                "tensor": st.fixed_dictionaries({"shape": json_values, "values": json_values}) | json_values,
                "top_k": numbers,
            }
        ),
        st.sampled_from(["f", "", None, 5]) | json_values,
    ).map(json.dumps),
    json_values.map(json.dumps),  # any JSON value, an object or not
    st.text(max_size=100),  # not JSON at all
    st.binary(max_size=20),  # binary frames are not accepted
)


@pytest.fixture
async def fuzz_server(start_server: Callable[..., Any]) -> Any:
    return await start_server(audio=AUDIO, classifiers=("digits",), **LIMITS)


async def ws_answers(address: str, frame: str | bytes) -> tuple[list[dict[str, Any]], int | None]:
    """The frames the server sends in answer to ``frame`` until a plain request sent after it is done, and the close
    code if the server closed the connection instead."""
    received: list[dict[str, Any]] = []
    async with connect(f"ws://{address}", open_timeout=timeout(5)) as ws:
        try:
            await ws.send(frame)
            await ws.send(json.dumps({"type": "generate", "id": "after", "sampling": {"max_tokens": 1}}))
            async with asyncio.timeout(timeout(10)):
                while True:
                    raw = await ws.recv()
                    if isinstance(raw, bytes):
                        continue  # audio of a valid generate_audio
                    event = json.loads(raw)
                    received.append(event)
                    if event.get("id") == "after" and event["type"] in ("done", "error"):
                        return received, None
        except ConnectionClosed as closed:
            return received, closed.rcvd.code if closed.rcvd else None


@FUZZ
@given(frame=ws_frames)
async def test_websocket_frames_get_documented_answers(fuzz_server: Any, frame: str | bytes) -> None:
    """Any frame is answered with its documented frames or close code, and the connection serves on."""
    received, closed = await ws_answers(fuzz_server.ws_address, frame)
    if closed is not None:
        assert closed in WS_CLOSE_CODES, (frame, closed)
        assert isinstance(frame, bytes)  # the only frames that close a connection here
        return
    errors = [e for e in received if e["type"] == "error"]
    for error in errors:
        assert error["code"] in WS_CODES, (frame, error)
        assert error["message"]
        if error["code"] == "INVALID_ARGUMENT":
            assert error["field"] and error["message"].startswith(error["field"]), error
    assert received[-1] == {**received[-1], "id": "after", "type": "done"}, (frame, received[-1])


def sampling_message(fields: dict[str, Any]) -> sampling_pb2.Sampling:
    return sampling_pb2.Sampling(**fields)


proto_sampling = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.floats(allow_nan=True, allow_infinity=True, width=64),
        "top_k": st.integers(-(2**31), 2**31 - 1),
        "top_p": st.floats(allow_nan=True, allow_infinity=True),
        "seed": st.integers(0, 2**64 - 1),
        "max_tokens": st.integers(-(2**31), 2**31 - 1),
        "stop": st.lists(st.text(max_size=70), max_size=10),
    },
).map(sampling_message)
proto_text = st.text(max_size=250)
grpc_calls = st.one_of(
    st.builds(
        lambda model, prompt, s: ("GenerateText", text_pb2.GenerateTextRequest(model=model, prompt=prompt, sampling=s)),
        st.sampled_from(["", "tiny", "nobody", "tiny-wavenet"]),
        proto_text,
        proto_sampling,
    ),
    st.builds(
        lambda session, message, persona, speaker, speak, s: (
            "Chat",
            chat_pb2.ChatRequest(
                session_id=session, message=message, persona=persona, speaker=speaker, speak=speak, sampling=s
            ),
        ),
        st.sampled_from(["s", "", "x" * 129]) | st.text(max_size=20),
        st.sampled_from(["Hail.", "", "a\n\nb"]) | proto_text,
        st.sampled_from(["", "Fool", "Hamlet"]),
        st.text(max_size=70),
        st.booleans(),
        proto_sampling,
    ),
    st.builds(
        lambda text, voice, seconds, chunk, encoding, s: (
            "GenerateAudio",
            audio_pb2.GenerateAudioRequest(
                text=text, voice=voice, max_seconds=seconds, chunk_samples=chunk, encoding=encoding, sampling=s
            ),
        ),
        st.text(max_size=60),
        st.text(max_size=10),
        st.floats(allow_nan=True, allow_infinity=True, width=32),
        st.integers(-(2**31), 2**31 - 1),
        st.integers(0, 5),
        proto_sampling,
    ),
    st.builds(
        lambda model, text, top_k: (
            "Classify",
            classify_pb2.ClassifyRequest(model=model, text=text, top_k=top_k),
        ),
        st.sampled_from(["", "digits", "nobody", "tiny"]),
        st.text(max_size=40),
        st.integers(-(2**31), 2**31 - 1),
    ),
    st.builds(
        lambda shape, values: (
            "Classify",
            classify_pb2.ClassifyRequest(model="digits", tensor=classify_pb2.FloatTensor(shape=shape, values=values)),
        ),
        st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4),
        st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=70),
    ),
    st.builds(
        lambda model, audio, rate: (
            "Classify",
            classify_pb2.ClassifyRequest(model=model, audio=audio, audio_sample_rate=rate),
        ),
        st.sampled_from(["", "digits", "nobody"]),
        st.binary(max_size=64),
        st.integers(-(2**31), 2**31 - 1) | st.sampled_from([0, 7999, 8000, 48000, 48001]),
    ),
)


@FUZZ
@given(call=grpc_calls)
async def test_protobuf_fields_get_documented_status(fuzz_server: Any, call: tuple[str, Any]) -> None:
    """Any value of any field is served or refused with a documented status and a message, never INTERNAL."""
    method, request = call
    async with grpc.aio.insecure_channel(fuzz_server.grpc_address) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        try:
            answer = getattr(stub, method)(request, timeout=timeout(10))
            if method != "Classify":
                _ = [item async for item in answer]
            else:
                await answer
        except grpc.aio.AioRpcError as exc:
            assert exc.code() in GRPC_CODES, (request, exc.code(), exc.details())
            assert exc.details()
        models = await stub.ListModels(models_pb2.ListModelsRequest(), timeout=timeout(5))
    assert models.models  # the server serves on


def http_body(path: str) -> st.SearchStrategy[Any]:
    messages = st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "role": st.sampled_from(["user", "assistant", "system", "tool", "developer"]) | json_values,
                "content": st.text(max_size=60) | json_values,
                "name": json_values,
            },
        )
        | json_values,
        max_size=4,
    )
    openai_fields = {
        "model": st.sampled_from(["tiny", "tiny/fool", "tiny/hamlet", "nobody", "tiny-wavenet", "digits"])
        | json_values,
        "stream": json_values,
        "stream_options": json_values,
        "temperature": numbers | json_values,
        "top_p": numbers | json_values,
        "top_k": numbers,
        "max_tokens": numbers | json_values,
        "max_completion_tokens": numbers,
        "stop": json_values,
        "seed": numbers,
        "n": numbers,
        "presence_penalty": numbers,
        "logprobs": json_values,
        "bogus": json_values,
    }
    if path == "/v1/chat/completions":
        fields = {**openai_fields, "messages": messages}
    elif path == "/v1/completions":
        fields = {**openai_fields, "prompt": st.text(max_size=250) | json_values}
    elif path == "/v1/responses":
        fields = {
            **{key: openai_fields[key] for key in ("model", "stream", "temperature", "top_p", "top_k", "seed")},
            "input": st.text(max_size=250) | messages | json_values,
            "instructions": st.text(max_size=60) | json_values,
            "max_output_tokens": numbers | json_values,
            "previous_response_id": st.sampled_from(["resp_x", ""]) | json_values,
            "store": json_values,
            "text": json_values,
            "tools": json_values,
            "bogus": json_values,
        }
    elif path == "/v1/audio/speech":
        fields = {
            "model": st.sampled_from(["tiny-wavenet", "tts-1", "nobody"]) | json_values,
            "input": st.text(max_size=60) | json_values,
            "voice": st.sampled_from(["alloy", "", "nobody"]) | json_values,
            "response_format": st.sampled_from(["wav", "pcm", "mp3"]) | json_values,
            "speed": numbers,
            "stream_format": st.sampled_from(["sse", "audio", "x"]) | json_values,
        }
    else:
        fields = {
            "model": st.sampled_from(["digits", "nobody", "tiny"]) | json_values,
            "input": json_values,
            "text": json_values,
            "tensor": json_values,
            "top_k": numbers,
        }
    return st.fixed_dictionaries({}, optional=fields) | json_values


PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/audio/speech", "/v1/classify")
http_requests = st.one_of(
    *(st.tuples(st.just(p), http_body(p).map(lambda b: json.dumps(b).encode())) for p in PATHS),
    st.tuples(st.sampled_from(PATHS), st.binary(max_size=60)),  # not JSON, or not UTF-8
)


@FUZZ
@given(request=http_requests)
async def test_http_bodies_get_documented_answers(fuzz_server: Any, request: tuple[str, bytes]) -> None:
    """Any body is answered 200 (streamed or whole) or with a documented status and OpenAI's error object."""
    path, body = request
    async with httpx.AsyncClient(base_url=f"http://{fuzz_server.http_address}", timeout=timeout(10)) as client:
        async with client.stream("POST", path, content=body, headers={"content-type": "application/json"}) as response:
            content = await response.aread()
        assert response.status_code in HTTP_STATUSES, (path, body, response.status_code, content[:300])
        if response.status_code != 200:
            error = json.loads(content)["error"]
            assert error["message"] and error["type"], error
        elif response.headers["content-type"].startswith("text/event-stream"):
            events = [line[6:] for line in content.decode().splitlines() if line.startswith("data: ")]
            for data in events:
                if data != "[DONE]":
                    event = json.loads(data)
                    assert "error" not in event or event["error"]["type"] != "server_error", event
        again = await client.get("/v1/models")
    assert again.status_code == 200
