"""Soak: minutes of mixed traffic over gRPC, WebSocket and HTTP at once against a real ``antiphon serve``.

    python benchmarks/soak.py [--minutes 10] [--streams 64] [--seed 0] [--json PATH]
        [--server-args "--text-checkpoint PATH --max-tokens 4096"] [--api-key KEY]

It starts ``antiphon serve`` in its own process on free ports (the committed models, as ``make run`` serves them,
unless ``--server-args`` says otherwise), reads its log to the end as it is written (lines with ``Traceback`` and
ERROR lines are counted) and samples its resident memory (``VmRSS`` of ``/proc/PID/status``; Linux) every few
seconds. ``--streams`` workers, dealt in turn to gRPC, WebSocket and HTTP, each loop until the deadline over a
seeded random mix of scenarios, one request at a time:

- ``generate``: a text stream read to its end (gRPC ``GenerateText``, WebSocket ``generate``, streamed
  ``POST /v1/completions``);
- ``chat``: a turn of the worker's conversation (gRPC ``Chat`` and WebSocket ``chat`` on a server-kept session,
  continued for 5 to 15 turns before a new one; on HTTP half the conversations are streamed
  ``POST /v1/chat/completions`` resending the whole history, which the prefix cache resumes, and half are held over
  the Responses API, each turn naming the last reply's ``previous_response_id``, streamed or whole, its
  ``response.completed`` text checked against its deltas);
- ``cancel``: a stream (a generate or a chat turn) cancelled after a few messages: gRPC ``call.cancel()``, a
  WebSocket ``cancel`` frame (its ``done`` must say ``cancelled``, or ``stop``/``length`` when it finished first),
  HTTP closing the response mid-stream;
- ``disconnect``: the connection dropped mid-stream without a closing handshake: the WebSocket's TCP connection
  reset (``SO_LINGER`` 0, then abort), the gRPC channel closed under the call, an HTTP request on a raw socket reset
  after a few events;
- ``slow``: a reader on a connection of its own with small windows (gRPC: a 1 KiB HTTP/2 window without bandwidth
  probing; WebSocket and HTTP: a 4 KiB socket receive buffer) and a stream of the server's ``max_tokens`` (on
  WebSocket four, its frames being small), that stops reading for 2 to 5 seconds mid-stream, so that the stream backs
  up into the server, which must pause it rather than buffer it, then reads on to the end;
- ``malformed``: input a client should never send, each with the answer the protocol promises: WebSocket frames that
  are not JSON, not an object, without an ``id``, of an unknown ``type``, with fields of the wrong type or out of
  range, an unknown model or persona (an ``error`` frame with the code and ``field``, and the connection still
  serving a valid request after it), a binary frame (close 1003), invalid UTF-8 (1007) and a message over 1 MiB
  (1009); gRPC sampling values out of range, too many stop texts, a prompt over the limit, an empty or
  blank-lined chat message (``INVALID_ARGUMENT``), an unknown model or persona (``NOT_FOUND``); HTTP bodies that
  are not JSON, fields of the wrong type or unsupported values (400 naming the field in OpenAI's error object), an
  unknown model (404); and on each, speech or classification requests the server must refuse (``INVALID_ARGUMENT``
  or 400, ``NOT_FOUND`` or 404, ``UNIMPLEMENTED`` where no such model is served);
- ``audio`` (only with an audio model): a short speech stream (WebSocket ``generate_audio`` and gRPC
  ``GenerateAudio`` with ``max_seconds`` 0.5, or a spoken chat turn one time in three; ``POST /v1/audio/speech``
  of a two-word line, PCM);
- ``classify`` (only with classifiers): one classification by a served classifier, of its kind of input;
- ``image`` (only with image generators): an RBM chain of a few steps, a sample, or a short latent walk of a random
  generator, a class named one time in two (gRPC ``GenerateImage``, WebSocket ``generate_image``, HTTP
  ``POST /v1/images/generations`` whole with one or two images or streamed with partial images); one in four is
  cancelled after its first frame (a WebSocket ``cancel``, whose ``done`` must say ``cancelled``, or ``stop`` when
  it finished first).

The gRPC workers share one channel and the HTTP workers one connection pool, as a front end would; the WebSocket
workers share a connection per four workers (requests multiplexed by id). A scenario that breaks or slows its
connection (``disconnect``, ``slow``, every WebSocket ``malformed``) opens its own. The first requests of each
worker are dealt so that the workers of a transport run every scenario early (a short run covers them all); after
that each request draws its scenario at random (generate 5, chat 5, cancel 2, disconnect 2, malformed 3, slow,
audio, classify and image 1 each). Text streams ask for 64 to 256 tokens (cancels and disconnects 512 to 1,024, so they
are cut mid-stream).

Every request ends in one outcome: completed; cancelled or disconnected by the soak; refused with the expected
answer (malformed input); or failed: an unexpected answer (another code, ``INTERNAL``, an HTTP 500, a stream that
ends without its last event, a connection the server dropped, overload, which 64 workers within ``--max-streams``
plus ``--max-waiting`` must never meet), or no end within ``--request-timeout-s`` (a hang). The first failures are
kept with their messages. A chat turn that follows a cancelled or dropped turn of its session may find the session
still busy for a moment (``FAILED_PRECONDITION``, until the server has seen the cancel): it is sent again within
10 s, and the refusal counts as expected.

The gap between two consecutive text messages of one stream is measured on streams read at full speed (generate,
chat and cancel, not the slow readers) by this client, in this process: its own scheduling is in the figure.

Memory growth is the server's RSS at the end of the load against its RSS at one minute (for runs shorter than two
minutes: at 10% of the run); the report names which. The end stops the server with SIGTERM and expects exit 0.

PASS needs: no ``INTERNAL`` answer, no traceback and no ERROR line in the server's log (ERROR is for the server's
own faults), no failed request, memory growth under 5%, and a clean exit. The exit code is 0 on PASS, 1 on FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import random
import re
import shlex
import signal
import socket
import struct
import sys
import time
from array import array
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from antiphon.v1 import (
    audio_pb2,
    chat_pb2,
    classify_pb2,
    generation_pb2_grpc,
    image_pb2,
    models_pb2,
    sampling_pb2,
    text_pb2,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

log = logging.getLogger("soak")

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"listening grpcs?=(\S+) wss?=(\S+) https?=(\S+)")
LOG_ERROR = re.compile(r"^\S+ \S+ ERROR ")  # the server's format: "%(asctime)s %(levelname)s %(name)s: ..."

TRANSPORTS = ("grpc", "ws", "http")
# Scenario weights after each worker's first requests; audio, classify and image only where such models are served.
WEIGHTS = {
    "generate": 5,
    "chat": 5,
    "cancel": 2,
    "disconnect": 2,
    "slow": 1,
    "malformed": 3,
    "audio": 1,
    "classify": 1,
    "image": 1,
}
NEEDS_MODEL = {"audio": "audio", "classify": "classifier", "image": "image"}
IMAGE_CANCEL_SHARE = 0.25  # image streams cancelled after their first frame
RESPONSES_SHARE = 0.5  # HTTP conversations held over the Responses API (previous_response_id) instead of resent
GAP_SCENARIOS = ("generate", "chat", "cancel")  # streams read at full speed
MAX_FAILURE_SAMPLES = 20
# The slow readers' windows: a 4 KiB socket receive buffer (WebSocket, HTTP; smaller ones make TCP itself crawl on
# loopback), and for gRPC a 1 KiB HTTP/2 stream window without bandwidth probing (64 KiB by default: it would hold a
# whole stream).
SMALL_WINDOW = 4096
GRPC_WINDOW = 1024
WS_GROUP = 4  # WebSocket workers per shared connection
SLOW_WS_STREAMS = 4  # streams on a slow WebSocket reader's connection: its frames are small
BUSY_RETRY_S = 10.0  # how long a chat turn after a disrupted one may find its session busy

PROMPTS = ("", "Lear.\n", "KING.\n", "FOOL.\nNuncle, ", "KENT.\nGood my lord, ", "EDGAR.\nPoor Tom's a-cold.\n\n")
CHAT_LINES = (
    "Good morrow, my lord. What news from the court?",
    "They say the King is much changed of late.",
    "Speak, good sir: whom will you serve now?",
    "The storm is rising, and the old man is out in it.",
    "I pray you, tell me plainly what you mean to do.",
    "Here comes a poor fellow out of the rain, all in rags.",
    "Send to the camp, and bid the doctor come at once.",
    "Is there no help for her? Look on her lips.",
)
AUDIO_TEXTS = ("Good night.", "Speak, sir.", "How now, my lord?", "Come hither.")
STOCK_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse")
FINISHED = (sampling_pb2.FINISH_REASON_STOP, sampling_pb2.FINISH_REASON_LENGTH)


class Unexpected(Exception):
    """An answer the protocol does not promise for the request: ``code`` names it ("INTERNAL", "500", ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Outcome:
    """How a request ended, when it ended as it may: ``result`` is completed, cancelled, disconnected or refused (an
    expected error answer, ``code``)."""

    result: str
    code: str | None = None


COMPLETED = Outcome("completed")
CANCELLED_BY_US = Outcome("cancelled")
DISCONNECTED_BY_US = Outcome("disconnected")


# -- what the server serves -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Classifier:
    id: str
    input: str  # "text", "audio" or "tensor"
    input_shape: tuple[int, ...]
    sample_rate: int


@dataclass(frozen=True)
class ImageModel:
    id: str
    family: str
    labels: tuple[str, ...]
    max_steps: int
    max_walk_frames: int


@dataclass(frozen=True)
class Served:
    """The models the server lists (gRPC ``ListModels``)."""

    text_id: str
    personas: tuple[str, ...]
    max_prompt_chars: int
    max_tokens: int
    audio_id: str | None
    voices: tuple[str, ...]
    classifiers: tuple[Classifier, ...]
    images: tuple[ImageModel, ...] = ()  # the generators (Deep Dream needs a photo: not soaked)

    @classmethod
    def from_listing(cls, listing: models_pb2.ListModelsResponse) -> Served:
        text = next((m for m in listing.models if m.kind == models_pb2.MODEL_KIND_TEXT and m.is_default), None)
        if text is None:
            raise RuntimeError("the server serves no default text model")
        audio = next((m for m in listing.models if m.kind == models_pb2.MODEL_KIND_AUDIO and m.is_default), None)
        classifiers = tuple(
            Classifier(m.id, m.input, tuple(m.input_shape), m.sample_rate or 16000)
            for m in listing.models
            if m.kind == models_pb2.MODEL_KIND_CLASSIFIER
        )
        images = tuple(
            ImageModel(m.id, m.family, tuple(m.labels), m.max_steps, m.max_walk_frames)
            for m in listing.models
            if m.kind == models_pb2.MODEL_KIND_IMAGE and m.family != "dream"
        )
        return cls(
            text_id=text.id,
            personas=tuple(text.personas),
            max_prompt_chars=text.max_prompt_chars,
            max_tokens=text.max_tokens,
            audio_id=audio.id if audio is not None else None,
            voices=tuple(audio.voices) if audio is not None else (),
            classifiers=classifiers,
            images=images,
        )

    def scenarios(self) -> tuple[str, ...]:
        served = {"audio": self.audio_id is not None, "classifier": bool(self.classifiers), "image": bool(self.images)}
        return tuple(s for s in WEIGHTS if s not in NEEDS_MODEL or served[NEEDS_MODEL[s]])


# -- what the soak counts -------------------------------------------------------------------------------------------
@dataclass
class Tally:
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)  # (transport, scenario)
    results: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)  # "transport CODE"
    unexpected: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, Any]] = field(default_factory=list)
    gaps: dict[str, array[float]] = field(default_factory=lambda: {t: array("d") for t in TRANSPORTS})

    def record(self, transport: str, scenario: str, outcome: Outcome) -> None:
        self.requests[transport, scenario] += 1
        self.results[outcome.result] += 1
        if outcome.code is not None:
            self.expected[f"{transport} {outcome.code}"] += 1

    def refusal(self, transport: str, code: str) -> None:
        """An expected refusal that is not a request's outcome of its own (a busy session, sent again)."""
        self.expected[f"{transport} {code}"] += 1

    def fail(self, transport: str, scenario: str, code: str, message: str, elapsed_s: float) -> None:
        self.requests[transport, scenario] += 1
        self.results["failed"] += 1
        self.unexpected[f"{transport} {code}"] += 1
        if len(self.failures) < MAX_FAILURE_SAMPLES:
            sample = {"at_s": round(elapsed_s, 1), "transport": transport, "scenario": scenario, "code": code}
            self.failures.append({**sample, "message": message[:500]})
        log.warning("%s %s failed: %s %s", transport, scenario, code, message[:200])

    def internal(self) -> int:
        return sum(n for code, n in self.unexpected.items() if code.split(" ", 1)[1] in ("INTERNAL", "500"))


class Clock:
    """Times the gaps between consecutive text messages of one stream into ``sink`` (None: not timed)."""

    def __init__(self, sink: array[float] | None) -> None:
        self.sink = sink
        self.last: float | None = None

    def tick(self) -> None:
        now = time.perf_counter()
        if self.sink is not None and self.last is not None:
            self.sink.append(now - self.last)
        self.last = now


@dataclass
class Context:
    """What a worker's request needs: its randomness, the tally and the served models."""

    rng: random.Random
    tally: Tally
    served: Served
    worker: int
    started: float
    count: int = 0

    def next_id(self) -> str:
        self.count += 1
        return f"w{self.worker}-{self.count}"

    def max_tokens(self, long: bool = False) -> int:
        low, high = (512, 1024) if long else (64, 256)
        return min(self.served.max_tokens, self.rng.randint(low, high))

    def cut_after(self) -> int:
        """Messages to read before cancelling or dropping a stream."""
        return self.rng.randint(2, 12)

    def persona(self) -> str:
        return self.rng.choice(self.served.personas) if self.served.personas else ""

    def clock(self, transport: str, scenario: str) -> Clock:
        return Clock(self.tally.gaps[transport] if scenario in GAP_SCENARIOS else None)


@dataclass
class ChatSession:
    """A worker's conversation: a server-kept session (gRPC, WebSocket) or the history it resends (HTTP)."""

    id: str = ""
    persona: str = ""
    turns_left: int = 0
    disrupted_at: float = -math.inf  # when a turn of it was last cancelled or dropped
    history: list[dict[str, str]] = field(default_factory=list)
    responses: bool = False  # HTTP: held over the Responses API, each turn naming the last reply's id
    response_id: str = ""

    def next_turn(self, ctx: Context) -> None:
        """Start a new conversation when this one has had its turns."""
        if self.turns_left <= 0:
            self.id = f"soak-{ctx.worker}-{ctx.next_id()}"
            self.persona = ctx.persona()
            self.turns_left = ctx.rng.randint(5, 15)
            self.disrupted_at = -math.inf
            self.history = []
            self.responses = ctx.rng.random() < RESPONSES_SHARE
            self.response_id = ""
        self.turns_left -= 1

    def may_be_busy(self) -> bool:
        return time.monotonic() - self.disrupted_at < BUSY_RETRY_S


def tensor_values(ctx: Context, shape: tuple[int, ...]) -> list[float]:
    return [float(ctx.rng.randint(0, 16)) for _ in range(math.prod(shape or (8, 8)))]


def noise_pcm16(ctx: Context, samples: int) -> bytes:
    return array("h", (ctx.rng.randint(-3000, 3000) for _ in range(samples))).tobytes()


def json_classify_input(ctx: Context, classifier: Classifier) -> dict[str, Any]:
    """A random input for ``classifier``: the fields of a WebSocket classify frame or an HTTP classify body."""
    if classifier.input == "text":
        return {"text": ctx.rng.choice(CHAT_LINES)}
    if classifier.input == "audio":
        audio = base64.b64encode(noise_pcm16(ctx, classifier.sample_rate // 2)).decode()
        return {"audio": audio, "audio_sample_rate": classifier.sample_rate}
    shape = classifier.input_shape or (8, 8)
    return {"tensor": {"shape": list(shape), "values": tensor_values(ctx, shape)}}


# -- gRPC -----------------------------------------------------------------------------------------------------------
def image_fields(ctx: Context) -> dict[str, Any]:
    """An image request of a random generator, as the WebSocket and HTTP extension fields (and gRPC's) spell it:
    an RBM chain of a few steps, a sample, or a short latent walk, a class named one time in two."""
    model = ctx.rng.choice(ctx.served.images)
    fields: dict[str, Any] = {"model": model.id, "seed": ctx.rng.randrange(2**32)}
    if model.labels and ctx.rng.random() < 0.5:
        fields["label"] = ctx.rng.choice(model.labels)
    if model.family == "rbm":
        fields["steps"] = ctx.rng.randint(2, max(2, min(20, model.max_steps)))
        fields["frame_every"] = ctx.rng.choice((1, 4))
    elif model.max_walk_frames >= 2 and ctx.rng.random() < 0.3:
        fields["walk_to_seed"] = ctx.rng.randrange(2**32)
        fields["walk_frames"] = ctx.rng.randint(2, min(8, model.max_walk_frames))
    return fields


def grpc_sampling(ctx: Context, max_tokens: int) -> sampling_pb2.Sampling:
    return sampling_pb2.Sampling(seed=ctx.rng.randrange(2**32), max_tokens=max_tokens, temperature=0.8)


def grpc_code(exc: grpc.aio.AioRpcError) -> str:
    return str(exc.code().name)


class GrpcWorker:
    """A gRPC client's requests, on the shared channel (``stub``) unless a scenario needs a channel of its own."""

    transport = "grpc"

    def __init__(self, address: str, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self.address = address
        self.stub = stub
        self.metadata = metadata
        self.session = ChatSession()

    def _text_call(self, stub: Any, ctx: Context, max_tokens: int, chat: bool) -> Any:
        if chat:
            self.session.next_turn(ctx)
            request = chat_pb2.ChatRequest(
                session_id=self.session.id,
                persona=self.session.persona,
                message=ctx.rng.choice(CHAT_LINES),
                sampling=grpc_sampling(ctx, max_tokens),
            )
            return stub.Chat(request, metadata=self.metadata)
        prompt = ctx.rng.choice(PROMPTS)
        request = text_pb2.GenerateTextRequest(prompt=prompt, sampling=grpc_sampling(ctx, max_tokens))
        return stub.GenerateText(request, metadata=self.metadata)

    async def _read(self, call: Any, clock: Clock, chat: bool, stop_after: int | None = None) -> int | None:
        """Messages of ``call`` until its last, whose finish reason it returns; with ``stop_after``, only until that
        many text messages (None then: the stream was cut)."""
        texts = 0
        try:
            async for message in call:
                if chat:
                    kind = message.WhichOneof("event")
                    text = message.text if kind == "text" else ""
                    finish = message.done.finish_reason if kind == "done" else sampling_pb2.FINISH_REASON_UNSPECIFIED
                else:
                    text, finish = message.text, message.finish_reason
                if text:
                    clock.tick()
                    texts += 1
                    if stop_after is not None and texts >= stop_after:
                        return None
                if finish != sampling_pb2.FINISH_REASON_UNSPECIFIED:
                    return int(finish)
        except grpc.aio.AioRpcError as exc:
            raise Unexpected(grpc_code(exc), str(exc.details())) from None
        raise Unexpected("NO_FINISH", "the stream ended without a finish reason")

    async def _chat_call(
        self, stub: Any, ctx: Context, max_tokens: int, clock: Clock, cut: int | None, cancel: bool = True
    ) -> int | None:
        """A chat turn (cut after ``cut`` text messages, and then cancelled if ``cancel``), sent again while its
        session is still busy after a disrupted turn."""
        while True:
            call = self._text_call(stub, ctx, max_tokens, chat=True)
            try:
                return await self._read(call, clock, chat=True, stop_after=cut)
            except Unexpected as exc:
                if exc.code != "FAILED_PRECONDITION" or not self.session.may_be_busy():
                    raise
                ctx.tally.refusal(self.transport, exc.code)
                self.session.turns_left += 1
                await asyncio.sleep(0.1)
            finally:
                if cancel:
                    call.cancel()  # nothing, where the call has ended

    async def generate(self, ctx: Context) -> Outcome:
        call = self._text_call(self.stub, ctx, ctx.max_tokens(), chat=False)
        reason = await self._read(call, ctx.clock(self.transport, "generate"), chat=False)
        if reason not in FINISHED:
            raise Unexpected("FINISH", f"finish reason {reason}")
        return COMPLETED

    async def chat(self, ctx: Context) -> Outcome:
        reason = await self._chat_call(self.stub, ctx, ctx.max_tokens(), ctx.clock(self.transport, "chat"), None)
        if reason not in FINISHED:
            raise Unexpected("FINISH", f"finish reason {reason}")
        return COMPLETED

    async def cancel(self, ctx: Context) -> Outcome:
        clock = ctx.clock(self.transport, "cancel")
        chat = ctx.rng.random() < 0.5
        if chat:
            reason = await self._chat_call(self.stub, ctx, ctx.max_tokens(long=True), clock, ctx.cut_after())
            self.session.disrupted_at = time.monotonic()
        else:
            call = self._text_call(self.stub, ctx, ctx.max_tokens(long=True), chat=False)
            try:
                reason = await self._read(call, clock, chat=False, stop_after=ctx.cut_after())
            finally:
                call.cancel()
        return CANCELLED_BY_US if reason is None else COMPLETED

    async def disconnect(self, ctx: Context) -> Outcome:
        channel = grpc.aio.insecure_channel(self.address)
        try:
            stub = generation_pb2_grpc.GenerationStub(channel)
            chat = ctx.rng.random() < 0.5
            max_tokens = ctx.max_tokens(long=True)
            if chat:
                reason = await self._chat_call(stub, ctx, max_tokens, Clock(None), ctx.cut_after(), cancel=False)
                self.session.disrupted_at = time.monotonic()
            else:
                call = self._text_call(stub, ctx, max_tokens, chat=False)
                reason = await self._read(call, Clock(None), chat=False, stop_after=ctx.cut_after())
        finally:
            await channel.close()  # the call, if still running, goes down with its connection
        return DISCONNECTED_BY_US if reason is None else COMPLETED

    async def slow(self, ctx: Context) -> Outcome:
        options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", GRPC_WINDOW)]
        async with grpc.aio.insecure_channel(self.address, options=options) as channel:
            call = self._text_call(generation_pb2_grpc.GenerationStub(channel), ctx, ctx.served.max_tokens, chat=False)
            try:
                reason = await self._read(call, Clock(None), chat=False, stop_after=ctx.cut_after())
                if reason is None:
                    await asyncio.sleep(ctx.rng.uniform(2, 5))
                    reason = await self._read(call, Clock(None), chat=False)
            finally:
                call.cancel()
        if reason not in FINISHED:
            raise Unexpected("FINISH", f"finish reason {reason}")
        return COMPLETED

    def _malformed_cases(self, ctx: Context) -> list[tuple[str, Callable[[], Awaitable[Any]], str]]:
        served = ctx.served
        S = sampling_pb2.Sampling

        def generate(sampling: sampling_pb2.Sampling | None = None, **fields: Any) -> Callable[[], Awaitable[Any]]:
            request = text_pb2.GenerateTextRequest(sampling=sampling, **fields)
            return lambda: self._drain(self.stub.GenerateText(request, metadata=self.metadata))

        def chat(**fields: Any) -> Callable[[], Awaitable[Any]]:
            request = chat_pb2.ChatRequest(session_id=f"soak-bad-{ctx.worker}", **fields)
            return lambda: self._drain(self.stub.Chat(request, metadata=self.metadata))

        invalid = "INVALID_ARGUMENT"
        cases: list[tuple[str, Callable[[], Awaitable[Any]], str]] = [
            ("top_p 2", generate(S(top_p=2.0)), invalid),
            ("temperature -1", generate(S(temperature=-1.0)), invalid),
            ("top_k -1", generate(S(top_k=-1)), invalid),
            ("max_tokens 0", generate(S(max_tokens=0)), invalid),
            ("max_tokens over the limit", generate(S(max_tokens=served.max_tokens + 1)), invalid),
            ("nine stop texts", generate(S(stop=["a"] * 9)), invalid),
            ("an empty stop text", generate(S(stop=[""])), invalid),
            ("a prompt over the limit", generate(prompt="x" * (served.max_prompt_chars + 1)), invalid),
            ("an unknown model", generate(model="no-such-model"), "NOT_FOUND"),
            ("an empty chat message", chat(message=""), invalid),
            ("a chat message with a blank line", chat(message="Good.\n\nNight."), invalid),
            ("an unknown persona", chat(message="Good night.", persona="NOBODY AT ALL"), "NOT_FOUND"),
        ]
        if served.audio_id is None:
            audio = audio_pb2.GenerateAudioRequest(text="Good night.", max_seconds=0.5)
            cases.append(("audio without an audio model", self._audio_drain(audio), "UNIMPLEMENTED"))
        else:
            audio = audio_pb2.GenerateAudioRequest(text="Good night.", max_seconds=0.5, sampling=S(top_p=0.5))
            cases.append(("audio with top_p", self._audio_drain(audio), invalid))
            cases.append(("audio without text", self._audio_drain(audio_pb2.GenerateAudioRequest()), invalid))
        if not served.classifiers:
            request = classify_pb2.ClassifyRequest(model="kws", text="one")
            cases.append(("classify without classifiers", self._classify(request), "UNIMPLEMENTED"))
        else:
            request = classify_pb2.ClassifyRequest(model="no-such-classifier", text="one")
            cases.append(("an unknown classifier", self._classify(request), "NOT_FOUND"))
        return cases

    async def _drain(self, call: Any) -> None:
        async for _ in call:
            pass

    def _audio_drain(self, request: audio_pb2.GenerateAudioRequest) -> Callable[[], Awaitable[Any]]:
        return lambda: self._drain(self.stub.GenerateAudio(request, metadata=self.metadata))

    def _classify(self, request: classify_pb2.ClassifyRequest) -> Callable[[], Awaitable[Any]]:
        return lambda: self.stub.Classify(request, metadata=self.metadata)

    async def malformed(self, ctx: Context) -> Outcome:
        name, send, expected = ctx.rng.choice(self._malformed_cases(ctx))
        try:
            await send()
        except grpc.aio.AioRpcError as exc:
            if grpc_code(exc) != expected:
                raise Unexpected(grpc_code(exc), f"{name}: expected {expected}, got {exc.details()}") from None
            return Outcome("refused", expected)
        raise Unexpected("OK", f"{name}: accepted, expected {expected}")

    async def audio(self, ctx: Context) -> Outcome:
        served = ctx.served
        encoding = ctx.rng.choice((audio_pb2.AUDIO_ENCODING_PCM16_LE, audio_pb2.AUDIO_ENCODING_MULAW8))
        # One time in three a spoken chat turn, unless a disrupted turn may still hold the session.
        if ctx.rng.random() < 1 / 3 and not self.session.may_be_busy():
            self.session.next_turn(ctx)
            request = chat_pb2.ChatRequest(
                session_id=self.session.id,
                persona=self.session.persona,
                message=ctx.rng.choice(CHAT_LINES),
                sampling=grpc_sampling(ctx, 40),
                speak=True,
                voice=ctx.rng.choice(served.voices) if served.voices else "",
                encoding=encoding,
            )
            reason = await self._read(self.stub.Chat(request, metadata=self.metadata), Clock(None), chat=True)
        else:
            request = audio_pb2.GenerateAudioRequest(
                text=ctx.rng.choice(AUDIO_TEXTS),
                max_seconds=0.5,
                encoding=encoding,
                voice=ctx.rng.choice(served.voices) if served.voices else "",
                sampling=sampling_pb2.Sampling(seed=ctx.rng.randrange(2**32)),
            )
            call = self.stub.GenerateAudio(request, metadata=self.metadata)
            reason = None
            first = True
            try:
                async for chunk in call:
                    if first and not chunk.format.sample_rate:
                        raise Unexpected("NO_FORMAT", "the first audio chunk carries no format")
                    first = False
                    if chunk.finish_reason != sampling_pb2.FINISH_REASON_UNSPECIFIED:
                        reason = int(chunk.finish_reason)
            except grpc.aio.AioRpcError as exc:
                raise Unexpected(grpc_code(exc), str(exc.details())) from None
        if reason not in FINISHED:
            raise Unexpected("FINISH", f"finish reason {reason}")
        return COMPLETED

    async def classify(self, ctx: Context) -> Outcome:
        classifier = ctx.rng.choice(ctx.served.classifiers)
        request = classify_pb2.ClassifyRequest(model=classifier.id, top_k=ctx.rng.choice((0, 3)))
        if classifier.input == "text":
            request.text = ctx.rng.choice(CHAT_LINES)
        elif classifier.input == "audio":
            request.audio = noise_pcm16(ctx, classifier.sample_rate // 2)
            request.audio_sample_rate = classifier.sample_rate
        else:
            shape = classifier.input_shape or (8, 8)
            request.tensor.CopyFrom(classify_pb2.FloatTensor(shape=shape, values=tensor_values(ctx, shape)))
        try:
            answer = await self.stub.Classify(request, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            raise Unexpected(grpc_code(exc), str(exc.details())) from None
        if not answer.labels:
            raise Unexpected("NO_LABELS", "a classification with no labels")
        return COMPLETED

    async def image(self, ctx: Context) -> Outcome:
        """An image stream read to its final frame, or cancelled after its first."""
        request = image_pb2.GenerateImageRequest(**image_fields(ctx))
        cancel = ctx.rng.random() < IMAGE_CANCEL_SHARE
        call = self.stub.GenerateImage(request, metadata=self.metadata)
        frames = 0
        try:
            async for frame in call:
                if not frame.data or frame.width <= 0 or frame.height <= 0:
                    raise Unexpected("FRAME", f"an image frame without an image: step {frame.step}")
                frames += 1
                if frame.finish_reason != sampling_pb2.FINISH_REASON_UNSPECIFIED:
                    if frame.finish_reason != sampling_pb2.FINISH_REASON_STOP or not frame.final:
                        raise Unexpected(
                            "FINISH", f"last frame: finish reason {frame.finish_reason}, final {frame.final}"
                        )
                    if frame.usage.frames != frames:
                        raise Unexpected("USAGE", f"usage says {frame.usage.frames} frames, {frames} came")
                    return COMPLETED
                if cancel:
                    return CANCELLED_BY_US
        except grpc.aio.AioRpcError as exc:
            raise Unexpected(grpc_code(exc), str(exc.details())) from None
        finally:
            call.cancel()  # nothing, where the call has ended
        raise Unexpected("NO_FINISH", "the image stream ended without its final frame")


# -- WebSocket ------------------------------------------------------------------------------------------------------
DROPPED = {"type": "dropped"}  # what a request's queue gets when its shared connection ends under it


def set_linger_zero(sock: Any) -> None:
    """Closing the socket then resets the connection (RST) instead of closing it in order (FIN)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class WsMux:
    """One shared WebSocket connection: frames go to their request's queue by ``id`` (binary frames by the id in
    their header). Connects on first use and again after the server dropped it."""

    def __init__(self, url: str, headers: dict[str, str], tally: Tally, started: float) -> None:
        self.url = url
        self.headers = headers
        self.tally = tally
        self.started = started
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.lock = asyncio.Lock()

    async def _connection(self) -> ClientConnection:
        async with self.lock:
            if self.ws is None:
                self.ws = await ws_connect(self.url, self.headers)
                self.reader = asyncio.create_task(self._read(self.ws))
            return self.ws

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    (n,) = struct.unpack(">H", raw[:2])
                    frame: dict[str, Any] = {"type": "binary", "id": raw[2 : 2 + n].decode(), "size": len(raw) - 2 - n}
                else:
                    try:
                        frame = json.loads(raw)
                    except ValueError:
                        elapsed = time.monotonic() - self.started
                        self.tally.fail("ws", "connection", "NOT_JSON", f"a frame that is not JSON: {raw!r}", elapsed)
                        continue
                queue = self.queues.get(frame.get("id") or "")
                if queue is None:
                    elapsed = time.monotonic() - self.started
                    self.tally.fail("ws", "connection", "STRAY", f"a frame for no running request: {raw!r}", elapsed)
                    continue
                queue.put_nowait(frame)
        except ConnectionClosed:
            pass
        finally:
            if self.ws is ws:
                self.ws = None
            for queue in self.queues.values():
                queue.put_nowait(DROPPED)

    async def request(self, frame: dict[str, Any]) -> asyncio.Queue[dict[str, Any]]:
        ws = await self._connection()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.queues[frame["id"]] = queue
        try:
            await ws.send(json.dumps(frame))
        except ConnectionClosed:
            queue.put_nowait(DROPPED)
        return queue

    def forget(self, request_id: str) -> None:
        self.queues.pop(request_id, None)

    async def send(self, frame: dict[str, Any]) -> None:
        if self.ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self.ws.send(json.dumps(frame))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await self.reader


async def ws_connect(url: str, headers: dict[str, str], **options: Any) -> ClientConnection:
    return await connect(url, additional_headers=headers, compression=None, proxy=None, **options)


def ws_error(frame: dict[str, Any]) -> Unexpected:
    if frame["type"] == "dropped":
        return Unexpected("DROPPED", "the server dropped the connection mid-request")
    if frame["type"] == "error":
        return Unexpected(str(frame.get("code")), str(frame.get("message")))
    return Unexpected("FRAME", f"unexpected frame {frame}")


class WsWorker:
    """A WebSocket client's requests, multiplexed on a shared connection unless a scenario needs its own."""

    transport = "ws"

    def __init__(self, url: str, headers: dict[str, str], mux: WsMux) -> None:
        self.url = url
        self.headers = headers
        self.mux = mux
        self.session = ChatSession()

    def _text_frame(self, ctx: Context, max_tokens: int, chat: bool) -> dict[str, Any]:
        sampling = {"seed": ctx.rng.randrange(2**32), "max_tokens": max_tokens, "temperature": 0.8}
        if not chat:
            return {"type": "generate", "id": ctx.next_id(), "prompt": ctx.rng.choice(PROMPTS), "sampling": sampling}
        self.session.next_turn(ctx)
        return {
            "type": "chat",
            "id": ctx.next_id(),
            "session_id": self.session.id,
            "persona": self.session.persona,
            "message": ctx.rng.choice(CHAT_LINES),
            "sampling": sampling,
        }

    async def _stream(
        self, ctx: Context, frame: dict[str, Any], clock: Clock, cancel_after: int | None = None
    ) -> dict[str, Any]:
        """A text request on the shared connection, read to its ``done`` (with ``cancel_after``, a ``cancel`` sent
        after that many tokens); a chat turn is sent again while its session is busy after a disrupted turn."""
        while True:
            queue = await self.mux.request(frame)
            try:
                tokens = 0
                while (got := await queue.get())["type"] == "token":
                    clock.tick()
                    tokens += 1
                    if cancel_after is not None and tokens == cancel_after:
                        await self.mux.send({"type": "cancel", "id": frame["id"]})
                if got["type"] == "done":
                    return got
            finally:
                self.mux.forget(frame["id"])
            await self._again_if_busy(ctx, frame, got)

    async def _again_if_busy(self, ctx: Context, frame: dict[str, Any], got: dict[str, Any]) -> None:
        """Raise ``got`` as an unexpected answer, unless it refuses a chat turn of a session a disrupted turn may
        still hold: then wait a moment (the caller sends the turn again)."""
        busy = got["type"] == "error" and got.get("code") == "FAILED_PRECONDITION"
        if not (busy and frame["type"] == "chat" and self.session.may_be_busy()):
            raise ws_error(got)
        ctx.tally.refusal(self.transport, got["code"])
        await asyncio.sleep(0.1)

    async def generate(self, ctx: Context) -> Outcome:
        done = await self._stream(ctx, self._text_frame(ctx, ctx.max_tokens(), False), ctx.clock("ws", "generate"))
        if done["finish_reason"] not in ("stop", "length"):
            raise Unexpected("FINISH", f"finish reason {done['finish_reason']}")
        return COMPLETED

    async def chat(self, ctx: Context) -> Outcome:
        done = await self._stream(ctx, self._text_frame(ctx, ctx.max_tokens(), True), ctx.clock("ws", "chat"))
        if done["finish_reason"] not in ("stop", "length") or "turns" not in done:
            raise Unexpected("FINISH", f"a chat turn's done frame {done}")
        return COMPLETED

    async def cancel(self, ctx: Context) -> Outcome:
        frame = self._text_frame(ctx, ctx.max_tokens(long=True), chat=ctx.rng.random() < 0.5)
        # Not marked disrupted: its "done" says the turn is over, so the session must take the next turn at once.
        done = await self._stream(ctx, frame, ctx.clock("ws", "cancel"), cancel_after=ctx.cut_after())
        if done["finish_reason"] == "cancelled":
            return CANCELLED_BY_US
        if done["finish_reason"] in ("stop", "length"):
            return COMPLETED  # it ended before the cancel arrived
        raise Unexpected("FINISH", f"finish reason {done['finish_reason']}")

    async def disconnect(self, ctx: Context) -> Outcome:
        chat = ctx.rng.random() < 0.5
        frame = self._text_frame(ctx, ctx.max_tokens(long=True), chat)
        cut = ctx.cut_after()
        ws = await ws_connect(self.url, self.headers)
        try:
            await ws.send(json.dumps(frame))
            tokens = 0
            while tokens < cut:
                got = json.loads(await ws.recv())
                if got["type"] == "done":
                    return COMPLETED
                if got["type"] == "token":
                    tokens += 1
                    continue
                await self._again_if_busy(ctx, frame, got)
                await ws.send(json.dumps(frame))  # its id is free again after its error frame
            set_linger_zero(ws.transport.get_extra_info("socket"))
            ws.transport.abort()
            if chat:
                self.session.disrupted_at = time.monotonic()
            return DISCONNECTED_BY_US
        except ConnectionClosed as exc:
            raise Unexpected("DROPPED", f"the server closed the connection: {exc}") from None
        finally:
            await ws.close()  # after the abort: only waits for the connection's end

    async def slow(self, ctx: Context) -> Outcome:
        host, port = self.url.removeprefix("ws://").rstrip("/").rsplit(":", 1)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_WINDOW)  # before connecting: sets the window
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host.strip("[]"), int(port)))
        except OSError:
            sock.close()
            raise
        ws = await ws_connect(self.url, self.headers, sock=sock, max_queue=4)
        try:
            # Several streams, as many as it takes for their frames to overflow the buffers between the engine and
            # this reader (the server's write buffer, both sockets' buffers), so the server must pause them.
            running = set()
            for _ in range(SLOW_WS_STREAMS):
                frame = self._text_frame(ctx, ctx.served.max_tokens, False)
                running.add(frame["id"])
                await ws.send(json.dumps(frame))
            cut, tokens = ctx.cut_after(), 0
            while running:
                got = json.loads(await ws.recv())
                if got["type"] == "token":
                    tokens += 1
                    if tokens == cut:
                        await asyncio.sleep(ctx.rng.uniform(2, 5))
                    continue
                if got["type"] != "done" or got["id"] not in running:
                    raise ws_error(got)
                if got["finish_reason"] not in ("stop", "length"):
                    raise Unexpected("FINISH", f"finish reason {got['finish_reason']}")
                running.discard(got["id"])
            return COMPLETED
        except ConnectionClosed as exc:
            raise Unexpected("DROPPED", f"the server closed the connection: {exc}") from None
        finally:
            await ws.close()

    def _malformed_cases(self, ctx: Context) -> list[tuple[str, str | bytes, tuple[Any, ...]]]:
        """(name, what to send, expected): ("error", id, code, field or None) or ("close", code). A ``bytes`` of
        ``b"T"`` and more goes out as a text frame of those bytes (invalid UTF-8), other bytes as a binary frame."""
        served = ctx.served

        def frame(**fields: Any) -> str:
            return json.dumps(fields)

        invalid = "INVALID_ARGUMENT"
        cases: list[tuple[str, str | bytes, tuple[Any, ...]]] = [
            ("not JSON", '{"type": "generate", "id": ', ("error", None, invalid, "frame")),
            ("not an object", '["generate", "m"]', ("error", None, invalid, "frame")),
            ("no id", frame(type="generate", prompt="Lear.\n"), ("error", None, invalid, "id")),
            ("an unknown type", frame(type="frobnicate", id="m"), ("error", "m", invalid, "type")),
            ("a number for the prompt", frame(type="generate", id="m", prompt=5), ("error", "m", invalid, "prompt")),
            (
                "a string for sampling",
                frame(type="generate", id="m", sampling="hot"),
                ("error", "m", invalid, "sampling"),
            ),
            (
                "top_p 2",
                frame(type="generate", id="m", sampling={"top_p": 2}),
                ("error", "m", invalid, "sampling.top_p"),
            ),
            (
                "a string for max_tokens",
                frame(type="generate", id="m", sampling={"max_tokens": "ten"}),
                ("error", "m", invalid, "sampling.max_tokens"),
            ),
            (
                "an unknown sampling field",
                frame(type="generate", id="m", sampling={"beams": 4}),
                ("error", "m", invalid, "sampling.beams"),
            ),
            ("an unknown field", frame(type="generate", id="m", colour="red"), ("error", "m", invalid, "colour")),
            (
                "a chat message with a blank line",
                frame(type="chat", id="m", session_id=f"soak-bad-{ctx.worker}", message="Good.\n\nNight."),
                ("error", "m", invalid, "message"),
            ),
            (
                "an unknown persona",
                frame(type="chat", id="m", session_id=f"soak-bad-{ctx.worker}", message="Hi.", persona="NOBODY AT ALL"),
                ("error", "m", "NOT_FOUND", None),
            ),
            (
                "an unknown model",
                frame(type="generate", id="m", model="no-such-model"),
                ("error", "m", "NOT_FOUND", None),
            ),
            ("a binary frame", b"\x00\x01m", ("close", 1003)),
            ("invalid UTF-8", b"T\xff\xfe\xfd", ("close", 1007)),
            ("a message over 1 MiB", "x" * ((1 << 20) + 1), ("close", 1009)),
        ]
        if served.audio_id is None:
            audio = frame(type="generate_audio", id="m", text="Good night.")
            cases.append(("audio without an audio model", audio, ("error", "m", "UNIMPLEMENTED", None)))
        else:
            audio = frame(type="generate_audio", id="m", text="Good night.", max_seconds="long")
            cases.append(("a string for max_seconds", audio, ("error", "m", invalid, "max_seconds")))
        if not served.classifiers:
            classify = frame(type="classify", id="m", model="kws", text="one")
            cases.append(("classify without classifiers", classify, ("error", "m", "UNIMPLEMENTED", None)))
        else:
            classify = frame(type="classify", id="m", model="no-such-classifier", text="one")
            cases.append(("an unknown classifier", classify, ("error", "m", "NOT_FOUND", None)))
        return cases

    async def malformed(self, ctx: Context) -> Outcome:
        name, payload, expected = ctx.rng.choice(self._malformed_cases(ctx))
        ws = await ws_connect(self.url, self.headers)
        try:
            if isinstance(payload, bytes) and payload.startswith(b"T"):
                await ws.send(payload[1:], text=True)
            else:
                await ws.send(payload)
            if expected[0] == "close":
                try:
                    got = await ws.recv()
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
                    if code != expected[1]:
                        raise Unexpected(f"close {code}", f"{name}: expected close {expected[1]}") from None
                    return Outcome("refused", f"close {code}")
                raise Unexpected("FRAME", f"{name}: expected close {expected[1]}, got {got!r}")
            _, request_id, code, field_name = expected
            got = json.loads(await ws.recv())
            if got.get("type") != "error" or got.get("code") != code or got.get("id") != request_id:
                raise Unexpected(str(got.get("code", got.get("type"))), f"{name}: expected {code}, got {got}")
            if field_name is not None and got.get("field") != field_name:
                raise Unexpected("FIELD", f"{name}: expected field {field_name!r}, got {got}")
            # The connection still serves.
            await ws.send(json.dumps({"type": "generate", "id": "ok", "sampling": {"max_tokens": 4}}))
            while (after := json.loads(await ws.recv()))["type"] == "token":
                pass
            if after["type"] != "done":
                raise Unexpected("FRAME", f"{name}: a valid request after it got {after}")
            return Outcome("refused", code)
        except ConnectionClosed as exc:
            raise Unexpected("DROPPED", f"{name}: the server closed the connection: {exc}") from None
        finally:
            await ws.close()

    async def audio(self, ctx: Context) -> Outcome:
        served = ctx.served
        encoding = ctx.rng.choice(("pcm16", "mulaw"))
        voice = ctx.rng.choice(served.voices) if served.voices else ""
        # One time in three a spoken chat turn, unless a disrupted turn may still hold the session.
        if ctx.rng.random() < 1 / 3 and not self.session.may_be_busy():
            frame = self._text_frame(ctx, 40, chat=True)
            frame.update(speak=True, voice=voice, encoding=encoding)
        else:
            frame = {
                "type": "generate_audio",
                "id": ctx.next_id(),
                "text": ctx.rng.choice(AUDIO_TEXTS),
                "max_seconds": 0.5,
                "voice": voice,
                "encoding": encoding,
                "sampling": {"seed": ctx.rng.randrange(2**32)},
            }
        queue = await self.mux.request(frame)
        try:
            formatted = False
            while (got := await queue.get())["type"] in ("token", "audio", "binary"):
                if got["type"] == "audio":
                    formatted = True
                elif got["type"] == "binary" and not formatted:
                    raise Unexpected("FRAME", "a binary frame before its audio frame")
        finally:
            self.mux.forget(frame["id"])
        if got["type"] != "done":
            raise ws_error(got)
        if got["finish_reason"] not in ("stop", "length"):
            raise Unexpected("FINISH", f"finish reason {got['finish_reason']}")
        return COMPLETED

    async def classify(self, ctx: Context) -> Outcome:
        classifier = ctx.rng.choice(ctx.served.classifiers)
        frame: dict[str, Any] = {
            "type": "classify",
            "id": ctx.next_id(),
            "model": classifier.id,
            "top_k": 3,
            **json_classify_input(ctx, classifier),
        }
        queue = await self.mux.request(frame)
        try:
            got = await queue.get()
        finally:
            self.mux.forget(frame["id"])
        if got["type"] != "labels" or not got["labels"]:
            raise ws_error(got)
        return COMPLETED

    async def image(self, ctx: Context) -> Outcome:
        """An image stream read to ``done``, or cancelled after its first frame (``done`` must then say cancelled,
        or stop where the last frame was already sent)."""
        frame = {"type": "generate_image", "id": ctx.next_id(), **image_fields(ctx)}
        cancel = ctx.rng.random() < IMAGE_CANCEL_SHARE
        queue = await self.mux.request(frame)
        frames, binaries, final = 0, 0, False
        try:
            while (got := await queue.get())["type"] in ("image", "binary"):
                if got["type"] == "image":
                    frames += 1
                    final = final or bool(got.get("final"))
                else:
                    binaries += 1
                    if binaries > frames or got["size"] <= 0:
                        raise Unexpected("FRAME", "a binary frame without its image frame, or empty")
                if cancel and binaries == 1 and got["type"] == "binary":
                    await self.mux.send({"type": "cancel", "id": frame["id"]})
        finally:
            self.mux.forget(frame["id"])
        if got["type"] != "done":
            raise ws_error(got)
        if cancel and got["finish_reason"] in ("cancelled", "stop"):
            return CANCELLED_BY_US if got["finish_reason"] == "cancelled" else COMPLETED
        if got["finish_reason"] != "stop" or not final or binaries != frames:
            raise Unexpected("FINISH", f"{got}: {frames} image frames, {binaries} binary, final {final}")
        if got["usage"]["frames"] != frames:
            raise Unexpected("USAGE", f"usage {got['usage']}, {frames} frames came")
        return COMPLETED


# -- HTTP -----------------------------------------------------------------------------------------------------------
def http_error(status: int, body: bytes, what: str = "") -> Unexpected:
    return Unexpected(str(status), f"{what}{body[:300].decode(errors='replace')}")


def error_object(body: bytes) -> dict[str, Any] | None:
    """OpenAI's error object of a body, if it is one: ``{"error": {"message", "type", "param", "code"}}``."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict) or not {"message", "type", "param", "code"} <= error.keys():
        return None
    return error


async def sse_events(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    """A streamed response's events, each decoded as its ``data:`` line arrives, until ``data: [DONE]``; an error
    event raises, and so does the end of the body without ``[DONE]``."""
    buffer = b""
    async for data in response.aiter_bytes():
        *lines, buffer = (buffer + data).split(b"\n")
        for line in lines:
            if not line.startswith(b"data: "):
                continue
            if line == b"data: [DONE]":
                return
            event = json.loads(line[6:])
            if "error" in event:
                error = event["error"]
                raise Unexpected(f"event {error.get('type')}", str(error.get("message")))
            yield event
    raise Unexpected("NO_DONE", "the event stream ended without data: [DONE]")


async def typed_events(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    """A stream of typed events (the Responses and Images APIs: ``event:`` and ``data:`` lines, no ``[DONE]``),
    each decoded as its ``data:`` line arrives."""
    buffer = b""
    async for data in response.aiter_bytes():
        *lines, buffer = (buffer + data).split(b"\n")
        for line in lines:
            if line.startswith(b"data: "):
                yield json.loads(line[6:])


def is_png(data: bytes) -> bool:
    return data.startswith(b"\x89PNG\r\n\x1a\n")


def param_names(param: Any, name: str) -> bool:
    """Whether an error's ``param`` names the field ``name`` or a part of it (``messages[0]`` names ``messages``)."""
    return isinstance(param, str) and (param == name or param.startswith((f"{name}[", f"{name}.")))


def event_text(event: dict[str, Any]) -> str:
    if not event.get("choices"):
        return ""
    choice = event["choices"][0]
    return str(choice.get("text") or (choice.get("delta") or {}).get("content") or "")


class HttpWorker:
    """An OpenAI-compatible client's requests, on the shared connection pool unless a scenario needs its own."""

    transport = "http"

    def __init__(self, address: str, client: httpx.AsyncClient, headers: dict[str, str], models: list[str]) -> None:
        self.address = address
        self.client = client
        self.headers = headers
        self.models = models  # the text model's ids, one per persona
        self.session = ChatSession()

    def _body(self, ctx: Context, max_tokens: int, chat: bool) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"stream": True, "max_tokens": max_tokens, "seed": ctx.rng.randrange(2**32)}
        if not chat:
            return "/v1/completions", {**body, "model": ctx.served.text_id, "prompt": ctx.rng.choice(PROMPTS)}
        self.session.next_turn(ctx)
        if not self.session.history and not self.session.response_id:
            self.session.persona = ctx.rng.choice(self.models)
        line = {"role": "user", "content": ctx.rng.choice(CHAT_LINES)}
        return "/v1/chat/completions", {
            **body,
            "model": self.session.persona,
            "messages": [*self.session.history, line],
        }

    async def _stream(
        self, client: httpx.AsyncClient, path: str, body: dict[str, Any], clock: Clock, cut: int | None = None
    ) -> str | None:
        """A streamed request read to ``[DONE]``: its text; with ``cut``, closed after that many text events (None
        then)."""
        pieces: list[str] = []
        try:
            async with client.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    raise http_error(response.status_code, await response.aread())
                async with contextlib.aclosing(sse_events(response)) as events:
                    async for event in events:
                        if text := event_text(event):
                            clock.tick()
                            pieces.append(text)
                            if cut is not None and len(pieces) >= cut:
                                return None  # leaving the block closes the response, and its connection
        except httpx.TransportError as exc:
            raise Unexpected("DROPPED", f"{type(exc).__name__}: {exc}") from None
        return "".join(pieces)

    async def generate(self, ctx: Context) -> Outcome:
        path, body = self._body(ctx, ctx.max_tokens(), chat=False)
        await self._stream(self.client, path, body, ctx.clock("http", "generate"))
        return COMPLETED

    async def chat(self, ctx: Context) -> Outcome:
        path, body = self._body(ctx, ctx.max_tokens(), chat=True)
        if self.session.responses:
            return await self._respond(ctx, body)
        reply = await self._stream(self.client, path, body, ctx.clock("http", "chat"))
        self.session.history = [*body["messages"], {"role": "assistant", "content": reply or ""}]
        return COMPLETED

    async def _respond(self, ctx: Context, chat: dict[str, Any]) -> Outcome:
        """A turn over the Responses API: the user's line and the last reply's id, the server holding the rest
        (streamed or whole, one time in two each); the reply's id is the next turn's ``previous_response_id``."""
        body: dict[str, Any] = {
            "model": chat["model"],
            "input": chat["messages"][-1]["content"],
            "max_output_tokens": chat["max_tokens"],
            "seed": chat["seed"],
        }
        if self.session.response_id:
            body["previous_response_id"] = self.session.response_id
        try:
            if ctx.rng.random() < 0.5:
                response = await self.client.post("/v1/responses", json=body)
                if response.status_code != 200:
                    raise http_error(response.status_code, response.content)
                answer = response.json()
            else:
                answer = await self._response_events(ctx, {**body, "stream": True})
        except httpx.TransportError as exc:
            raise Unexpected("DROPPED", f"{type(exc).__name__}: {exc}") from None
        if answer.get("status") not in ("completed", "incomplete") or not answer.get("id"):
            raise Unexpected("RESPONSE", f"a reply that did not complete: {str(answer)[:300]}")
        self.session.response_id = answer["id"]
        return COMPLETED

    async def _response_events(self, ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
        """A streamed Responses turn read to ``response.completed`` (or ``incomplete``): the response it carries,
        its text checked against the deltas."""
        clock, pieces = ctx.clock("http", "chat"), []
        async with self.client.stream("POST", "/v1/responses", json=body) as response:
            if response.status_code != 200:
                raise http_error(response.status_code, await response.aread())
            async for event in typed_events(response):
                kind = event.get("type")
                if kind == "response.output_text.delta":
                    clock.tick()
                    pieces.append(event["delta"])
                elif kind in ("response.completed", "response.incomplete"):
                    answer: dict[str, Any] = event["response"]
                    said = "".join(part["text"] for item in answer["output"] for part in item["content"])
                    if said != "".join(pieces):
                        raise Unexpected("TEXT", "response.completed's text differs from its deltas")
                    return answer
                elif kind in ("error", "response.failed"):
                    raise Unexpected(f"event {kind}", json.dumps(event)[:300])
        raise Unexpected("NO_FINISH", "the event stream ended without response.completed")

    async def cancel(self, ctx: Context) -> Outcome:
        path, body = self._body(ctx, ctx.max_tokens(long=True), chat=ctx.rng.random() < 0.5)
        text = await self._stream(self.client, path, body, ctx.clock("http", "cancel"), cut=ctx.cut_after())
        return CANCELLED_BY_US if text is None else COMPLETED

    async def disconnect(self, ctx: Context) -> Outcome:
        """The request on a raw socket, reset (RST) after a few events."""
        path, body = self._body(ctx, ctx.max_tokens(long=True), chat=ctx.rng.random() < 0.5)
        host, port = self.address.rsplit(":", 1)
        payload = json.dumps(body).encode()
        head = [f"POST {path} HTTP/1.1", f"Host: {self.address}", "Content-Type: application/json"]
        head += [f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in self.headers.items())]
        reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        try:
            received = b""
            cut = ctx.cut_after()
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
            while received.count(b"data: ") < cut:
                data = await reader.read(65536)
                if not data:
                    if b"data: [DONE]" in received:
                        return COMPLETED
                    raise Unexpected("DROPPED", f"the server closed the connection: {received[:300]!r}")
                received += data
                if b"data: [DONE]" in received:
                    return COMPLETED
                if received.startswith(b"HTTP/1.1 ") and not received.startswith(b"HTTP/1.1 200"):
                    raise Unexpected(received[9:12].decode(), received[:300].decode(errors="replace"))
            set_linger_zero(writer.get_extra_info("socket"))
            writer.transport.abort()
            return DISCONNECTED_BY_US
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def slow(self, ctx: Context) -> Outcome:
        transport = httpx.AsyncHTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_WINDOW)])
        async with httpx.AsyncClient(
            base_url=f"http://{self.address}", headers=self.headers, transport=transport, timeout=None, trust_env=False
        ) as client:
            path, body = self._body(ctx, ctx.served.max_tokens, chat=False)
            cut, texts, paused = ctx.cut_after(), 0, False
            try:
                async with client.stream("POST", path, json=body) as response:
                    if response.status_code != 200:
                        raise http_error(response.status_code, await response.aread())
                    async for event in sse_events(response):
                        texts += bool(event_text(event))
                        if texts == cut and not paused:
                            paused = True
                            await asyncio.sleep(ctx.rng.uniform(2, 5))
            except httpx.TransportError as exc:
                raise Unexpected("DROPPED", f"{type(exc).__name__}: {exc}") from None
        return COMPLETED

    def _malformed_cases(self, ctx: Context) -> list[tuple[str, str, bytes, int, str | None]]:
        """(name, path, body, expected status, expected ``param`` or None)."""
        served = ctx.served
        chat = "/v1/chat/completions"
        user = [{"role": "user", "content": "Good night."}]

        def body(**fields: Any) -> bytes:
            return json.dumps({"model": served.text_id, "messages": user, **fields}).encode()

        text_id = served.text_id
        assistant_last = [{"role": "assistant", "content": "Hi."}]
        cases: list[tuple[str, str, bytes, int, str | None]] = [
            ("not JSON", chat, b'{"model": "x", "messages": [', 400, None),
            ("not an object", chat, b"[1, 2, 3]", 400, None),
            ("a string for messages", chat, json.dumps({"model": text_id, "messages": "hi"}).encode(), 400, "messages"),
            ("a string for max_tokens", chat, body(max_tokens="ten"), 400, "max_tokens"),
            ("a string for temperature", chat, body(temperature="hot"), 400, "temperature"),
            ("top_p 2", chat, body(top_p=2), 400, "top_p"),
            ("n 2", chat, body(n=2), 400, "n"),
            ("an unknown field", chat, body(frobnicate=1), 400, "frobnicate"),
            ("the assistant's message last", chat, body(messages=assistant_last), 400, "messages"),
            ("an unknown model", chat, body(model="no-such-model"), 404, "model"),
            (
                "a number for the prompt",
                "/v1/completions",
                json.dumps({"model": text_id, "prompt": 5}).encode(),
                400,
                "prompt",
            ),
        ]
        if served.audio_id is not None:
            speech = {"model": served.audio_id, "input": "Good night.", "response_format": "mp3"}
            cases.append(("speech as mp3", "/v1/audio/speech", json.dumps(speech).encode(), 400, "response_format"))
        if served.classifiers:
            classify = {"model": "no-such-classifier", "text": "one"}
            cases.append(("an unknown classifier", "/v1/classify", json.dumps(classify).encode(), 404, "model"))
        return cases

    async def malformed(self, ctx: Context) -> Outcome:
        name, path, payload, status, param = ctx.rng.choice(self._malformed_cases(ctx))
        headers = {"Content-Type": "application/json"}
        try:
            response = await self.client.post(path, content=payload, headers=headers)
        except httpx.TransportError as exc:
            raise Unexpected("DROPPED", f"{name}: {type(exc).__name__}: {exc}") from None
        if response.status_code != status:
            raise http_error(response.status_code, response.content, f"{name}: expected {status}: ")
        error = error_object(response.content)
        if error is None:
            raise Unexpected("BODY", f"{name}: not OpenAI's error object: {response.content[:300]!r}")
        if param is not None and not param_names(error["param"], param):
            raise Unexpected("PARAM", f"{name}: expected param {param!r}: {error}")
        return Outcome("refused", str(status))

    async def audio(self, ctx: Context) -> Outcome:
        voices = (*ctx.served.voices, *STOCK_VOICES)
        body = {
            "model": ctx.served.audio_id,
            "input": ctx.rng.choice(AUDIO_TEXTS),
            "voice": ctx.rng.choice(voices),
            "response_format": "pcm",
        }
        size = 0
        try:
            async with self.client.stream("POST", "/v1/audio/speech", json=body) as response:
                if response.status_code != 200:
                    raise http_error(response.status_code, await response.aread())
                if not response.headers.get("X-Sample-Rate"):
                    raise Unexpected("HEADER", "PCM speech without X-Sample-Rate")
                async for data in response.aiter_bytes():
                    size += len(data)
        except httpx.TransportError as exc:
            raise Unexpected("DROPPED", f"{type(exc).__name__}: {exc}") from None
        if size == 0 or size % 2:
            raise Unexpected("BODY", f"{size} bytes of PCM16")
        return COMPLETED

    async def classify(self, ctx: Context) -> Outcome:
        classifier = ctx.rng.choice(ctx.served.classifiers)
        body: dict[str, Any] = {"model": classifier.id, "top_k": 3, **json_classify_input(ctx, classifier)}
        try:
            response = await self.client.post("/v1/classify", json=body)
        except httpx.TransportError as exc:
            raise Unexpected("DROPPED", f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200 or not response.json().get("labels"):
            raise http_error(response.status_code, response.content)
        return COMPLETED

    async def image(self, ctx: Context) -> Outcome:
        """``POST /v1/images/generations``: whole (one or two images) or streamed to ``image_generation.completed``
        (with partial images where the model makes several frames), or closed after its first event."""
        fields = image_fields(ctx)
        body: dict[str, Any] = {"prompt": fields.pop("label", ""), "response_format": "b64_json", **fields}
        every_frame = "frame_every" in fields or "walk_to_seed" in fields  # then one image, every frame answered
        cancel = ctx.rng.random() < IMAGE_CANCEL_SHARE
        try:
            if not cancel and ctx.rng.random() < 0.5:
                if not every_frame:
                    body["n"] = ctx.rng.choice((1, 2))
                response = await self.client.post("/v1/images/generations", json=body)
                if response.status_code != 200:
                    raise http_error(response.status_code, response.content)
                images = [base64.b64decode(item["b64_json"]) for item in response.json()["data"]]
                if not images or (not every_frame and len(images) != body["n"]) or not all(map(is_png, images)):
                    raise Unexpected("BODY", f"{len(images)} images for {body.get('n', 'every frame')}, or not PNG")
                return COMPLETED
            if not every_frame:
                body["partial_images"] = ctx.rng.choice((0, 2))
            async with self.client.stream("POST", "/v1/images/generations", json={**body, "stream": True}) as response:
                if response.status_code != 200:
                    raise http_error(response.status_code, await response.aread())
                async for event in typed_events(response):
                    if "error" in event:
                        raise Unexpected("event error", json.dumps(event)[:300])
                    if not is_png(base64.b64decode(event["b64_json"])):
                        raise Unexpected("BODY", f"{event['type']}: not a PNG")
                    if event["type"] == "image_generation.completed":
                        return COMPLETED
                    if cancel:
                        return CANCELLED_BY_US  # leaving the block closes the response, and its connection
        except httpx.TransportError as exc:
            raise Unexpected("DROPPED", f"{type(exc).__name__}: {exc}") from None
        raise Unexpected("NO_FINISH", "the image events ended without image_generation.completed")


# -- the server -----------------------------------------------------------------------------------------------------
class ServerProcess:
    """``antiphon serve`` on free ports; its log read to the end as it is written (so the pipe never fills)."""

    def __init__(self, server_args: list[str], api_key: str | None) -> None:
        self.args = server_args
        self.api_key = api_key
        self.process: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.tracebacks = 0
        self.errors = 0
        self.warnings = 0
        self.addresses: tuple[str, str, str] | None = None
        self._listening: asyncio.Future[None] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float) -> None:
        ports = ["--grpc-port", "0", "--ws-port", "0", "--http-port", "0"]
        env = dict(os.environ)
        if self.api_key:
            env["ANTIPHON_API_KEY"] = self.api_key  # not a flag: a flag shows in the process list
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.cli",
            "serve",
            *ports,
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        self._listening = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(self.process))
        try:
            await asyncio.wait_for(asyncio.shield(self._listening), timeout_s)
        except TimeoutError:
            raise RuntimeError("antiphon serve did not listen in time:\n" + "".join(self.lines[-30:])) from None
        if self.addresses is None:
            await self._reader
            raise RuntimeError(f"antiphon serve exited ({self.process.returncode}):\n" + "".join(self.lines[-30:]))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None and self._listening is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            self.tracebacks += "Traceback" in line
            self.errors += bool(LOG_ERROR.match(line))
            self.warnings += " WARNING " in line
            if self.addresses is None and (match := LISTENING.search(line)):
                self.addresses = (match[1], match[2], match[3])
                self._listening.set_result(None)
        await process.wait()
        if not self._listening.done():
            self._listening.set_result(None)

    def rss_bytes(self) -> int | None:
        """The server's resident memory now (``VmRSS``), or None once it is gone."""
        if self.process is None:
            return None
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match[1]) * 1024 if match else None

    async def stop(self, timeout_s: float) -> tuple[int | None, float]:
        """SIGTERM, then the exit code (None: it had to be killed) and the seconds it took."""
        assert self.process is not None and self._reader is not None
        start = time.monotonic()
        code: int | None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            code = None
        await self._reader
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


async def list_models(address: str, metadata: tuple[tuple[str, str], ...]) -> Served:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = generation_pb2_grpc.GenerationStub(channel)
        listing = await stub.ListModels(models_pb2.ListModelsRequest(), metadata=metadata, timeout=30)
    return Served.from_listing(listing)


async def sample_memory(
    server: ServerProcess, started: float, every_s: float, samples: list[tuple[float, int]]
) -> None:
    while True:
        rss = server.rss_bytes()
        if rss is not None:
            samples.append((time.monotonic() - started, rss))
        await asyncio.sleep(every_s)


CACHE_GAUGES = {"antiphon_chat_sessions": "chat_sessions", "antiphon_prefix_cache_entries": "kept_prefixes"}


async def cache_fill(http: httpx.AsyncClient) -> dict[str, int] | None:
    """What the server keeps in its bounded caches now, summed over its models (from ``/metrics``; None when the
    server answers no metrics): part of any memory growth is these filling up to their bounds."""
    try:
        response = await http.get("/metrics")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    fill = dict.fromkeys(CACHE_GAUGES.values(), 0)
    for line in response.text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in CACHE_GAUGES:
            fill[CACHE_GAUGES[name]] += round(float(line.rsplit(" ", 1)[1]))
    return fill


async def fill_at(http: httpx.AsyncClient, started: float, at_s: float, caches: dict[str, Any]) -> None:
    await asyncio.sleep(max(0.0, started + at_s - time.monotonic()))
    caches["baseline"] = await cache_fill(http)


async def report_progress(tally: Tally, samples: list[tuple[float, int]], started: float, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        rss = f"{samples[-1][1] / 2**20:.1f} MiB" if samples else "-"
        log.info(
            "%.0f s: %d requests, %d failed, server RSS %s",
            time.monotonic() - started,
            sum(tally.requests.values()),
            tally.results["failed"],
            rss,
        )


# -- the run --------------------------------------------------------------------------------------------------------
Worker = GrpcWorker | WsWorker | HttpWorker


async def run_worker(
    worker: Worker, ctx: Context, scenarios: tuple[str, ...], first: list[str], deadline: float, timeout_s: float
) -> None:
    weights = [WEIGHTS[s] for s in scenarios]
    queue = list(first)
    while time.monotonic() < deadline:
        scenario = queue.pop(0) if queue else ctx.rng.choices(scenarios, weights)[0]
        try:
            async with asyncio.timeout(timeout_s):
                outcome = await getattr(worker, scenario)(ctx)
        except Unexpected as exc:
            ctx.tally.fail(worker.transport, scenario, exc.code, exc.message, time.monotonic() - ctx.started)
        except TimeoutError:
            message = f"no end within {timeout_s:g} s"
            ctx.tally.fail(worker.transport, scenario, "TIMEOUT", message, time.monotonic() - ctx.started)
        except (OSError, ConnectionClosed, grpc.aio.AioRpcError, httpx.HTTPError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            ctx.tally.fail(worker.transport, scenario, "CONNECTION", message, time.monotonic() - ctx.started)
        except Exception as exc:  # an answer of the wrong shape (JSON, a missing field): counted, and the soak goes on
            message = f"{type(exc).__name__}: {exc}"
            ctx.tally.fail(worker.transport, scenario, "MALFORMED_ANSWER", message, time.monotonic() - ctx.started)
        else:
            ctx.tally.record(worker.transport, scenario, outcome)


def deal_first(scenarios: tuple[str, ...], index: int, workers: int) -> list[str]:
    """The first scenarios of the ``index``-th of ``workers`` workers of a transport: together they run each once."""
    return [scenarios[i] for i in range(index, len(scenarios), workers)]


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    server = ServerProcess(shlex.split(args.server_args), args.api_key)
    metadata = (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        await server.start(args.start_timeout_s)  # inside: a server that never listens is killed too
        assert server.addresses is not None
        served = await list_models(server.addresses[0], metadata)
        log.info(
            "serving %s (%d personas), audio %s, classifiers %s, image generators %s",
            served.text_id,
            len(served.personas),
            served.audio_id or "none",
            ",".join(c.id for c in served.classifiers) or "none",
            ",".join(m.id for m in served.images) or "none",
        )
        return await load(args, server, served, metadata, headers)
    finally:
        server.kill()
        if args.log:
            args.log.write_text("".join(server.lines))


async def load(
    args: argparse.Namespace,
    server: ServerProcess,
    served: Served,
    metadata: tuple[tuple[str, str], ...],
    headers: dict[str, str],
) -> dict[str, Any]:
    assert server.addresses is not None
    grpc_address, ws_address, http_address = server.addresses
    duration_s = args.minutes * 60
    scenarios = served.scenarios()
    tally = Tally()
    samples: list[tuple[float, int]] = []
    transports = [args.transports[i % len(args.transports)] for i in range(args.streams)]
    per_transport = Counter(transports)

    channel = grpc.aio.insecure_channel(grpc_address)
    stub = generation_pb2_grpc.GenerationStub(channel)
    limits = httpx.Limits(max_connections=args.streams, max_keepalive_connections=args.streams)
    http = httpx.AsyncClient(
        base_url=f"http://{http_address}", headers=headers, limits=limits, timeout=None, trust_env=False
    )
    listing = (await http.get("/v1/models")).json()["data"]
    persona_ids = [m["id"] for m in listing if m.get("kind") == "text" and "/" in m["id"]] or [served.text_id]
    started = time.monotonic()
    deadline = started + duration_s
    muxes: list[WsMux] = []
    tasks = []
    seen: Counter[str] = Counter()
    for index, transport in enumerate(transports):
        rank = seen[transport]
        seen[transport] += 1
        worker: Worker
        if transport == "grpc":
            worker = GrpcWorker(grpc_address, stub, metadata)
        elif transport == "ws":
            if rank % WS_GROUP == 0:
                muxes.append(WsMux(f"ws://{ws_address}/", headers, tally, started))
            worker = WsWorker(f"ws://{ws_address}/", headers, muxes[-1])
        else:
            worker = HttpWorker(http_address, http, headers, persona_ids)
        ctx = Context(random.Random(f"{args.seed}-{index}"), tally, served, index, started)
        first = deal_first(scenarios, rank, per_transport[transport])
        tasks.append(asyncio.create_task(run_worker(worker, ctx, scenarios, first, deadline, args.request_timeout_s)))
    sample_every = min(5.0, max(0.5, duration_s / 40))
    caches: dict[str, Any] = {}
    helpers = [
        asyncio.create_task(sample_memory(server, started, sample_every, samples)),
        asyncio.create_task(fill_at(http, started, baseline_at(duration_s)[0], caches)),
        asyncio.create_task(report_progress(tally, samples, started, max(10.0, min(60.0, duration_s / 10)))),
    ]
    try:
        await asyncio.gather(*tasks)  # each ends after the deadline, once its last request has ended
        load_s = time.monotonic() - started
        rss = server.rss_bytes()
        if rss is not None:
            samples.append((load_s, rss))
        caches["end"] = await cache_fill(http)
    finally:
        for task in (*tasks, *helpers):
            task.cancel()
        await asyncio.gather(*tasks, *helpers, return_exceptions=True)
        await asyncio.gather(*(mux.close() for mux in muxes), return_exceptions=True)
        await channel.close()
        await http.aclose()
    exit_code, exit_s = await server.stop(args.stop_timeout_s)
    report = build_report(args, served, tally, samples, server, duration_s, load_s, exit_code, exit_s, per_transport)
    report["memory"]["caches"] = caches
    return report


# -- the report -----------------------------------------------------------------------------------------------------
def quantiles(values: array[float]) -> dict[str, float | int]:
    if not values:
        return {"messages": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000, 2)

    return {"messages": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": round(ordered[-1] * 1000, 2)}


def baseline_at(duration_s: float) -> tuple[float, str]:
    """When the memory baseline is taken, and the rule, in words."""
    if duration_s >= 120:
        return 60.0, "at 1 minute"
    return duration_s / 10, "at 10% of the run (shorter than 2 minutes)"


def memory_figures(samples: list[tuple[float, int]], duration_s: float) -> dict[str, Any]:
    if not samples:
        return {"samples": 0}
    base_at, rule = baseline_at(duration_s)
    base = next((s for s in samples if s[0] >= base_at), samples[-1])
    end = samples[-1]
    mib = 2**20
    return {
        "samples": len(samples),
        "baseline_rule": rule,
        "baseline_at_s": round(base[0], 1),
        "baseline_mib": round(base[1] / mib, 1),
        "end_at_s": round(end[0], 1),
        "end_mib": round(end[1] / mib, 1),
        "first_mib": round(samples[0][1] / mib, 1),
        "max_mib": round(max(s[1] for s in samples) / mib, 1),
        "growth_pct": round(100 * (end[1] - base[1]) / base[1], 2),
        "series_mib": [[round(t, 1), round(b / mib, 1)] for t, b in samples],
    }


def build_report(
    args: argparse.Namespace,
    served: Served,
    tally: Tally,
    samples: list[tuple[float, int]],
    server: ServerProcess,
    duration_s: float,
    load_s: float,
    exit_code: int | None,
    exit_s: float,
    per_transport: Counter[str],
) -> dict[str, Any]:
    memory = memory_figures(samples, duration_s)
    all_gaps = array("d")
    for gaps in tally.gaps.values():
        all_gaps.extend(gaps)
    by_scenario: dict[str, dict[str, int]] = {}
    for (transport, scenario), n in sorted(tally.requests.items()):
        by_scenario.setdefault(scenario, {})[transport] = n
    growth = memory.get("growth_pct", math.inf)
    goals = {
        "internal": {"value": tally.internal(), "goal": "0", "pass": tally.internal() == 0},
        "tracebacks": {"value": server.tracebacks, "goal": "0", "pass": server.tracebacks == 0},
        "error_lines": {"value": server.errors, "goal": "0", "pass": server.errors == 0},
        "unexpected": {"value": tally.results["failed"], "goal": "0", "pass": tally.results["failed"] == 0},
        "memory_growth_pct": {"value": growth, "goal": "< 5", "pass": growth < 5},
        "clean_exit": {"value": exit_code, "goal": "0 after SIGTERM", "pass": exit_code == 0},
    }
    return {
        "command": ["benchmarks/soak.py", *sys.argv[1:]] if args.argv is None else ["benchmarks/soak.py", *args.argv],
        "minutes": args.minutes,
        "load_s": round(load_s, 1),
        "streams": args.streams,
        "streams_by_transport": dict(per_transport),
        "seed": args.seed,
        "server_args": args.server_args,
        "served": {
            "text": served.text_id,
            "audio": served.audio_id,
            "classifiers": [c.id for c in served.classifiers],
            "images": [m.id for m in served.images],
        },
        "requests": sum(tally.requests.values()),
        "requests_by_scenario": by_scenario,
        "results": dict(tally.results),
        "completed": tally.results["completed"],
        "errors_expected": dict(sorted(tally.expected.items())),
        "errors_unexpected": dict(sorted(tally.unexpected.items())),
        "failures": tally.failures,
        "gaps": {"all": quantiles(all_gaps), **{t: quantiles(g) for t, g in tally.gaps.items() if g}},
        "log": {
            "lines": len(server.lines),
            "tracebacks": server.tracebacks,
            "errors": server.errors,
            "warnings": server.warnings,
        },
        "log_problems": [line.rstrip() for line in server.lines if "Traceback" in line or LOG_ERROR.match(line)][:20],
        "memory": memory,
        "server_exit": {"code": exit_code, "seconds": round(exit_s, 1)},
        "goals": goals,
        "pass": all(g["pass"] for g in goals.values()),
    }


def format_report(report: dict[str, Any]) -> str:
    transports = [t for t in TRANSPORTS if t in report["streams_by_transport"]]
    out = [
        f"soak: {report['minutes']:g} min ({report['load_s']:.0f} s of load), {report['streams']} streams "
        f"({', '.join(f'{n} {t}' for t, n in report['streams_by_transport'].items())}), seed {report['seed']}",
        f"served: text {report['served']['text']}, audio {report['served']['audio'] or 'none'}, classifiers "
        f"{', '.join(report['served']['classifiers']) or 'none'}, image generators "
        f"{', '.join(report['served'].get('images', ())) or 'none'}",
        "",
        f"{'requests':<12}" + "".join(f"{t:>9}" for t in transports) + f"{'total':>9}",
    ]
    for scenario, row in report["requests_by_scenario"].items():
        cells = "".join(f"{row.get(t, 0):>9}" for t in transports)
        out.append(f"  {scenario:<10}{cells}{sum(row.values()):>9}")
    out.append(f"  {'total':<10}" + " " * 9 * len(transports) + f"{report['requests']:>9}")
    results = report["results"]
    out += [
        "",
        f"results: {results.get('completed', 0)} completed, {results.get('cancelled', 0)} cancelled by us, "
        f"{results.get('disconnected', 0)} disconnected by us, {results.get('refused', 0)} refused as expected, "
        f"{results.get('failed', 0)} failed",
        "errors by code (expected / unexpected):",
    ]
    codes = sorted({*report["errors_expected"], *report["errors_unexpected"]})
    for code in codes:
        out.append(
            f"  {code:<32}{report['errors_expected'].get(code, 0):>8} / {report['errors_unexpected'].get(code, 0)}"
        )
    for failure in report["failures"][:5]:
        out.append(
            f"  failure at {failure['at_s']} s: {failure['transport']} {failure['scenario']} "
            f"{failure['code']}: {failure['message'][:160]}"
        )
    out.append("gaps between text messages of full-speed streams (ms):")
    for name, q in report["gaps"].items():
        if q.get("messages"):
            out.append(
                f"  {name:<6} p50 {q['p50_ms']:>8}  p99 {q['p99_ms']:>8}  max {q['max_ms']:>8}  ({q['messages']} gaps)"
            )
    logged = report["log"]
    out.append(
        f"server log: {logged['lines']} lines, {logged['tracebacks']} with Traceback, {logged['errors']} ERROR, "
        f"{logged['warnings']} WARNING"
    )
    out += [f"  {line}" for line in report["log_problems"][:10]]
    memory = report["memory"]
    if memory.get("samples"):
        out.append(
            f"server RSS: {memory['baseline_mib']} MiB at {memory['baseline_at_s']} s ({memory['baseline_rule']}), "
            f"{memory['end_mib']} MiB at the end ({memory['end_at_s']} s), growth {memory['growth_pct']:+.2f}%; "
            f"first {memory['first_mib']} MiB, max {memory['max_mib']} MiB ({memory['samples']} samples)"
        )
        caches = memory.get("caches", {})
        if caches.get("baseline") and caches.get("end"):
            base, end = caches["baseline"], caches["end"]
            out.append(
                f"  bounded caches, baseline -> end: chat sessions {base['chat_sessions']} -> {end['chat_sessions']}, "
                f"kept conversation prefixes {base['kept_prefixes']} -> {end['kept_prefixes']}"
            )
    out.append(f"server exit after SIGTERM: {report['server_exit']['code']} in {report['server_exit']['seconds']} s")
    out.append("goals:")
    for name, goal in report["goals"].items():
        out.append(f"  {name:<20}{goal['value']!s:>10}  (goal {goal['goal']})  {'PASS' if goal['pass'] else 'FAIL'}")
    out.append("RESULT: " + ("PASS" if report["pass"] else "FAIL"))
    return "\n".join(out) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [options]",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to load the server (default: 10)")
    parser.add_argument(
        "--streams",
        type=int,
        default=64,
        help="concurrent workers, dealt in turn to the transports (default: 64; at most the server's --max-streams "
        "plus --max-waiting, or overload answers count as failures)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds every worker's choices and sampling (default: 0)")
    parser.add_argument("--json", type=Path, help="also write the report here, as JSON")
    parser.add_argument("--log", type=Path, help="also write the server's whole log here")
    parser.add_argument(
        "--server-args",
        default="",
        help='more flags for antiphon serve, one string (e.g. "--text-checkpoint PATH --audio-checkpoint none")',
    )
    parser.add_argument("--api-key", help="start the server with this key (ANTIPHON_API_KEY) and send it everywhere")
    parser.add_argument("--transports", default=",".join(TRANSPORTS), help="of grpc, ws, http (default: all three)")
    parser.add_argument(
        "--request-timeout-s", type=float, default=120.0, help="a request not ended by then is a hang (default: 120)"
    )
    parser.add_argument(
        "--stop-timeout-s",
        type=float,
        default=60.0,
        help="seconds the server may take to exit after SIGTERM (default: 60; it lets streams finish for --grace-s)",
    )
    parser.add_argument("--start-timeout-s", type=float, default=120.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = argv
    args.transports = args.transports.split(",")
    if not set(args.transports) <= set(TRANSPORTS) or not args.transports:
        parser.error(f"--transports: of {', '.join(TRANSPORTS)}")
    if args.streams < 1 or args.minutes <= 0:
        parser.error("--streams and --minutes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(soak(args))
    sys.stdout.write(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request
    sys.exit(main())
