"""The WebSocket transport: JSON text frames, several requests per connection told apart by a client-chosen id.

The protocol is documented in ``docs/websocket-protocol.md``. Error frames carry the gRPC status name of the
failure (``INVALID_ARGUMENT``, ``NOT_FOUND``, ...); ``GET /healthz`` on the same port answers 200 while serving.
With API keys configured, a handshake without an accepted key (the ``Authorization: Bearer KEY`` header, or from a
browser the ``antiphon.bearer.`` subprotocol) is answered 401 before the upgrade. Before that, a handshake from a page
of another site (its ``Origin``), or on a loopback-only server one that does not name this machine in ``Host``, is
answered 403 (:class:`server.transport.auth.Browsers`): browsers let any page open a WebSocket anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from http import HTTPStatus
from typing import Any

import numpy as np
from websockets.asyncio.server import Request, Response, ServerConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import CloseCode
from websockets.typing import Subprotocol

from server.engine.registry import ModelRegistry
from server.engine.requests import AudioModelInfo, AudioRequest, ChatTurn, SamplingOptions, TextRequest
from server.engine.speech import SpokenTurn, speak_turn, speech_options
from server.engine.streams import FINISH_CANCELLED, AudioStream, ImageStream, TextStream
from server.errors import AntiphonError, InvalidArgument, ResourceExhausted, printable
from server.metrics import Recorder
from server.transport import auth
from server.transport.jsonfields import (
    Repeated,
    check_unicode,
    check_unique_keys,
    classify_input,
    encoding_field,
    image_request,
    marked_object,
    number_field,
    parse_json,
    string_field,
)
from server.transport.pictures import encode_picture, frame_fields, image_encoding
from server.transport.wire import PCM16, Chunker, encode_codes
from server.transport.ws_connection import CoalescingConnection

__all__ = ["CoalescingConnection", "WebSocketTransport", "handshake_logger", "select_subprotocol"]  # app.py's

log = logging.getLogger(__name__)

TRANSPORT = "websocket"  # the metrics' transport label
MAX_ID_CHARS = 128
MAX_CLASSIFYING = 16  # classify requests of one connection at once; its next frame is read once one is answered
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "seed", "max_tokens", "stop")
REQUEST_FIELDS = {
    "generate": {"type", "id", "model", "prompt", "sampling"},
    "chat": {
        *("type", "id", "model", "session_id", "persona", "speaker", "message", "sampling"),
        *("speak", "voice", "encoding"),
    },
    "cancel": {"type", "id"},
    "list_models": {"type", "id"},
    "generate_audio": {"type", "id", "model", "text", "voice", "max_seconds", "sampling", "encoding", "chunk_samples"},
    "classify": {"type", "id", "model", "text", "audio", "audio_sample_rate", "tensor", "top_k"},
    "generate_image": {
        *("type", "id", "model", "label", "seed", "steps", "frame_every", "walk_to_seed", "walk_frames"),
        *("base_image", "dream", "encoding"),
    },
}


def binary_frame(request_id: str, payload: bytes) -> bytes:
    """A binary frame: the request id's UTF-8 length (2 bytes, big-endian), the id, then the audio or image bytes."""
    tag = request_id.encode("utf-8")
    return struct.pack(">H", len(tag)) + tag + payload


def _close_reason(exc: ConnectionClosedError) -> str:
    """Who closed, with which code and reason, as one short phrase."""
    if exc.rcvd is None and exc.sent is None:
        return "the connection dropped without a closing handshake"
    sent = f"server sent {exc.sent.code} {exc.sent.reason!r}" if exc.sent is not None else ""
    received = f"client sent {exc.rcvd.code} {exc.rcvd.reason!r}" if exc.rcvd is not None else ""
    return ", ".join(part for part in (received, sent) if part)


def select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """``antiphon`` where the client offers it (a browser sending its key as a subprotocol offers it beside the
    key's, and fails a handshake that selects none of its offers), else none."""
    return Subprotocol(auth.SUBPROTOCOL) if auth.SUBPROTOCOL in offered else None


class RedactCredentials(logging.Filter):
    """Blanks the credentials in the handshake headers the websockets library logs at DEBUG (``-v``)."""

    SECRET_HEADERS = ("authorization", "sec-websocket-protocol")

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and str(args[0]).lower() in self.SECRET_HEADERS:
            record.args = (args[0], "[redacted]")
        return True


def handshake_logger() -> logging.Logger:
    """The websockets library's server logger, with :class:`RedactCredentials` on it (once)."""
    logger = logging.getLogger("websockets.server")
    if not any(isinstance(f, RedactCredentials) for f in logger.filters):
        logger.addFilter(RedactCredentials())
    return logger


def error_frame(request_id: str | None, error: AntiphonError) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "id": request_id, "code": error.code.upper(), "message": str(error)}
    if isinstance(error, InvalidArgument):
        frame["field"] = error.field
    if isinstance(error, ResourceExhausted):
        frame["reason"] = error.reason
    return frame


def sampling_options(value: Any) -> SamplingOptions:
    """The ``sampling`` object of a request; absent or null fields take the server's defaults."""
    if value is None:
        return SamplingOptions()
    if not isinstance(value, dict):
        raise InvalidArgument("sampling", "must be an object")
    for key in value:
        if key not in SAMPLING_FIELDS:
            raise InvalidArgument(f"sampling.{key}", "unknown field")
    get = {k: value.get(k) for k in SAMPLING_FIELDS}
    stop = get["stop"] if get["stop"] is not None else []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise InvalidArgument("sampling.stop", "must be a list of strings")
    return SamplingOptions(
        temperature=number_field(get["temperature"], "sampling.temperature", False),
        top_k=number_field(get["top_k"], "sampling.top_k", True),
        top_p=number_field(get["top_p"], "sampling.top_p", False),
        seed=number_field(get["seed"], "sampling.seed", True),
        max_tokens=number_field(get["max_tokens"], "sampling.max_tokens", True),
        stop=tuple(stop),
    )


class WebSocketTransport:
    """Serves one WebSocket connection per :meth:`handler` call; :meth:`process_request` answers ``/healthz``,
    refuses a handshake ``browsers`` forbids and, with ``keys``, one without one of them."""

    def __init__(
        self,
        models: ModelRegistry,
        serving: Callable[[], bool],
        keys: auth.ApiKeys | None = None,
        metrics: Recorder | None = None,
        browsers: auth.Browsers | None = None,
    ) -> None:
        self.models = models
        self.serving = serving
        self.metrics = metrics or Recorder()
        self.keys = keys or auth.ApiKeys()
        self.browsers = browsers or auth.Browsers()
        self._connections = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()  # every connection's request tasks

    async def drain(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) for the request tasks of every connection to send their last frame."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            if self.serving():
                return connection.respond(HTTPStatus.OK, "ok\n")
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
        host, port, *_ = connection.remote_address
        peer = f"{host}:{port}"
        forbidden = self.browsers.refusal(request.headers.get_all("Host"), request.headers.get_all("Origin"))
        if forbidden is not None:  # before the key: a page of another site learns nothing of it
            auth.refused(TRANSPORT, f"handshake {path}", peer, forbidden)
            self.metrics.error(TRANSPORT, str(HTTPStatus.FORBIDDEN.value))
            return connection.respond(HTTPStatus.FORBIDDEN, forbidden + "\n")
        if not self.keys.required:
            return None
        key = auth.bearer(request.headers.get("Authorization"))
        try:
            if key is None:
                offered = request.headers.get_all("Sec-WebSocket-Protocol")
                key = auth.subprotocol_key(p.strip() for value in offered for p in value.split(","))
            reason = self.keys.refusal(key)
        except ValueError:  # a key subprotocol that is not base64url
            reason = auth.WRONG
        if reason is None:
            return None  # go on with the WebSocket handshake
        self.keys.refused(TRANSPORT, f"handshake {path}", peer, reason, str(HTTPStatus.UNAUTHORIZED.value))
        response = connection.respond(HTTPStatus.UNAUTHORIZED, auth.MESSAGES[reason] + "\n")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    async def handler(self, websocket: ServerConnection) -> None:
        name = f"ws{next(self._connections)}"
        await _Connection(self.models, websocket, name, self._tasks, self.metrics).serve()


class _Connection:
    def __init__(
        self,
        models: ModelRegistry,
        websocket: ServerConnection,
        name: str,
        all_tasks: set[asyncio.Task[None]],
        metrics: Recorder,
    ) -> None:
        self.models = models
        self.metrics = metrics
        self.websocket = websocket
        self.name = name
        self.streams: dict[str, TextStream | AudioStream | ImageStream] = {}
        self.classifying: set[str] = set()  # ids of classify requests not answered yet
        # Each classify holds its input until its labels are sent; without a bound, one connection's requests
        # (sent without reading the answers) queued in the classifier without end.
        self.classify_slots = asyncio.Semaphore(MAX_CLASSIFYING)
        self.spoken: dict[str, SpokenTurn] = {}  # spoken chat turns, which cancel speaks to as well
        self.tasks: set[asyncio.Task[None]] = set()
        self.all_tasks = all_tasks

    async def serve(self) -> None:
        try:
            async for message in self.websocket:
                if isinstance(message, bytes):
                    log.info("connection %s closed: client sent a binary frame, server sent 1003", self.name)
                    self.metrics.error(TRANSPORT, str(int(CloseCode.UNSUPPORTED_DATA)))
                    await self.websocket.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
                    break
                await self.dispatch(message)
        except ConnectionClosedOK:
            pass  # closed normally while a reply to its last frame was going out: the reply is dropped
        except ConnectionClosedError as exc:
            # How a client left (a frame over the size limit: 1009; its own error code; a dropped connection) is
            # the client's business: one INFO line, no traceback. ERROR is kept for the server's own faults.
            log.info("connection %s closed: %s", self.name, _close_reason(exc))
            if exc.sent is not None and exc.sent.code not in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
                self.metrics.error(TRANSPORT, str(int(exc.sent.code)))  # the library refused a frame (1009, 1007...)
        finally:
            # The client is gone (or sent garbage): its streams leave the batch at the next step.
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.websocket.send(json.dumps(frame, ensure_ascii=False))

    async def refuse(self, request_id: str | None, error: AntiphonError) -> None:
        """A request's end in ``error``: one INFO line, the metric, its error frame."""
        shown = printable(request_id) if request_id else "-"
        log.info("request %s-%s failed: %s %s", self.name, shown, error.code.upper(), error)
        self.metrics.error(TRANSPORT, error.code.upper())
        await self.send(error_frame(request_id, error))

    async def finish(
        self, request_id: str, stream: TextStream | AudioStream | ImageStream, usage: dict[str, int], **more: Any
    ) -> None:
        """A stream's ``done`` frame. The id is forgotten before it goes out: the client may reuse it once it reads
        the frame."""
        self.streams.pop(request_id, None)
        done = {"type": "done", "id": request_id, "finish_reason": stream.finish_reason, "usage": usage}
        await self.send(done | more)

    @contextlib.asynccontextmanager
    async def streaming(self, request_id: str, stream: TextStream | AudioStream | ImageStream) -> AsyncIterator[None]:
        """Around a stream's frames: a failure ends it with its error frame, a closed connection ends it quietly,
        and whatever happens the stream is cancelled (a no-op once finished) and its id forgotten."""
        try:
            yield
        except AntiphonError as exc:
            self.streams.pop(request_id, None)
            await self.refuse(request_id, exc)
        except ConnectionClosed:
            pass
        finally:
            self.streams.pop(request_id, None)
            stream.cancel()

    async def dispatch(self, raw: str) -> None:
        request_id: str | None = None
        try:
            message = parse_json(raw, "frame", check_text=False, object_pairs_hook=marked_object)
            if not isinstance(message, dict):
                raise InvalidArgument("frame", "must be a JSON object")
            if isinstance(message, Repeated) and message.repeated == "id":
                raise InvalidArgument("id", "appears twice in its object")  # which one would be echoed?
            raw_id = message.get("id")
            if not isinstance(raw_id, str) or not 1 <= len(raw_id) <= MAX_ID_CHARS:
                raise InvalidArgument("id", f"must be a string of 1..{MAX_ID_CHARS} characters")
            check_unicode(raw_id, "id")  # an id that cannot be echoed is not; a bad field elsewhere is named with it
            request_id = raw_id
            check_unicode(message, "frame")
            check_unique_keys(message)
            kind = message.get("type")
            if not isinstance(kind, str) or kind not in REQUEST_FIELDS:  # a list or an object is unhashable
                raise InvalidArgument("type", f"must be one of {', '.join(REQUEST_FIELDS)}, got {json.dumps(kind)}")
            allowed = REQUEST_FIELDS[kind]
            for key in message:
                if allowed is not None and key not in allowed:
                    raise InvalidArgument(key, f"unknown field of a {kind} request")
            await self.handle(kind, request_id, message)
        except AntiphonError as exc:
            await self.refuse(request_id, exc)

    async def handle(self, kind: str, request_id: str, message: dict[str, Any]) -> None:
        if kind == "cancel":
            stream = self.streams.get(request_id)
            if stream is not None:
                stream.cancel()  # its "done" frame (finish_reason "cancelled") follows from its own task
            if (spoken := self.spoken.get(request_id)) is not None:
                spoken.cancel()  # the text may be written already: its speech stops too
            return
        if kind == "list_models":
            models = self.models.listing()
            await self.send({"type": "models", "id": request_id, "models": models})
            return
        if request_id in self.streams or request_id in self.classifying:
            raise InvalidArgument("id", f"{request_id!r} names a request still running on this connection")
        if kind == "classify":
            # Stops reading this connection (TCP pushes back on the client) while MAX_CLASSIFYING are in flight; no
            # other task adds ids, so the id checked above is still free once a slot is.
            await self.classify_slots.acquire()
            self.classifying.add(request_id)
            self.start(request_id, self.classify(request_id, message))
            return
        tag = f"{self.name}-{printable(request_id)}"  # the engine logs it: no line breaks of the client's
        if kind == "generate_audio":
            self.start(request_id, self.audio_request(request_id, tag, message))
            return
        if kind == "generate_image":
            images = self.models.image_model(string_field(message, "model"))
            encoding = image_encoding(message.get("encoding"))
            image_stream = images.generate(image_request(message, tag, TRANSPORT))
            self.streams[request_id] = image_stream
            self.start(request_id, self.pump_image(request_id, image_stream, encoding))
            return
        service = self.models.text_model(string_field(message, "model"))
        sampling = sampling_options(message.get("sampling"))
        if kind == "generate":
            stream = service.generate(TextRequest(string_field(message, "prompt"), sampling, tag, TRANSPORT))
            self.streams[request_id] = stream
            self.start(request_id, self.pump(request_id, stream, stream, chat=False))
            return
        speak = message.get("speak", False)
        if not isinstance(speak, bool):
            raise InvalidArgument("speak", "must be true or false")
        if speak:
            audio = self.models.audio_model("")
            speech = speech_options(string_field(message, "voice"), sampling, audio)
            encoding = encoding_field(message)
        elif "voice" in message or "encoding" in message:
            raise InvalidArgument("voice" if "voice" in message else "encoding", "is only read with speak: true")
        turn = ChatTurn(
            session_id=string_field(message, "session_id"),
            message=string_field(message, "message"),
            persona=string_field(message, "persona"),
            speaker=string_field(message, "speaker"),
            sampling=sampling,
            request_id=tag,
            transport=TRANSPORT,
        )
        stream = service.chat(turn)
        self.streams[request_id] = stream
        if not speak:
            self.start(request_id, self.pump(request_id, stream, stream, chat=True))
            return
        spoken = SpokenTurn()
        self.spoken[request_id] = spoken
        events = speak_turn(stream, audio, speech, spoken, tag)
        self.start(request_id, self.pump(request_id, stream, events, chat=True, spoken=spoken, encoding=encoding))

    async def classify(self, request_id: str, message: dict[str, Any]) -> None:
        """One ``labels`` frame (or an error frame); classification runs beside the connection's other requests.
        Its id is in use until then (forgotten before the frame goes out, as a stream's)."""
        try:
            try:
                service = self.models.classifier(string_field(message, "model"))
                item, top_k = classify_input(message, TRANSPORT)
                ranked = await service.classify(item, top_k)
            except AntiphonError:
                raise
            except Exception as exc:  # our bug: its traceback, and an answer, so the client does not wait forever
                log.exception("request %s-%s: classify failed", self.name, printable(request_id))
                raise AntiphonError("internal error") from exc
            finally:
                self.classifying.discard(request_id)
            labels = [{"label": label, "probability": p} for label, p in ranked]
            await self.send({"type": "labels", "id": request_id, "labels": labels})
        except AntiphonError as exc:
            await self.refuse(request_id, exc)
        except ConnectionClosed:
            pass
        finally:
            self.classify_slots.release()  # once its answer is out: a client that reads nothing holds its slots

    def audio_request(self, request_id: str, tag: str, message: dict[str, Any]) -> Any:
        service = self.models.audio_model(string_field(message, "model"))
        encoding = encoding_field(message)
        max_seconds = message.get("max_seconds")
        chunk_samples = message.get("chunk_samples")
        text = string_field(message, "text")
        request = AudioRequest.with_sampling(
            text,
            sampling_options(message.get("sampling")),
            voice=string_field(message, "voice"),
            max_seconds=number_field(max_seconds, "max_seconds", False),
            chunk_samples=0 if chunk_samples is None else number_field(chunk_samples, "chunk_samples", True),
            request_id=tag,
            transport=TRANSPORT,
        )
        stream = service.generate(request)
        info = service.info
        chunker = Chunker(request.chunk_size(info))
        self.streams[request_id] = stream
        return self.pump_audio(request_id, stream, info, encoding, chunker, len(text))

    def start(self, request_id: str, job: Any) -> None:
        task = asyncio.create_task(job)
        for tasks in (self.tasks, self.all_tasks):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def send_format(self, request_id: str, sample_rate: int, encoding: str) -> None:
        fmt = {"type": "audio", "id": request_id, "sample_rate": sample_rate, "encoding": encoding, "channels": 1}
        await self.send(fmt)

    async def pump_audio(
        self, request_id: str, stream: AudioStream, info: AudioModelInfo, encoding: str, chunker: Chunker, chars: int
    ) -> None:
        async with self.streaming(request_id, stream):
            await self.send_format(request_id, info.sample_rate, encoding)
            async for codes in stream:
                for chunk in chunker.feed(codes):
                    await self.websocket.send(binary_frame(request_id, encode_codes(chunk, encoding)))
            rest = chunker.flush()
            if rest.size:
                await self.websocket.send(binary_frame(request_id, encode_codes(rest, encoding)))
            await self.finish(request_id, stream, {"text_chars": chars, "samples": stream.samples})

    async def pump_image(self, request_id: str, stream: ImageStream, encoding: str) -> None:
        """Per frame an ``image`` frame, then its bytes in a binary frame tagged with the request id; then done."""
        async with self.streaming(request_id, stream):
            async for picture in stream:
                await self.send({"type": "image", "id": request_id, **frame_fields(picture, encoding)})
                await self.websocket.send(binary_frame(request_id, encode_picture(picture, encoding)))
            await self.finish(request_id, stream, {"steps": stream.steps, "frames": stream.frames})

    async def pump(
        self,
        request_id: str,
        stream: TextStream,
        events: AsyncIterator[str | np.ndarray],
        chat: bool,
        spoken: SpokenTurn | None = None,
        encoding: str = PCM16,
    ) -> None:
        first_audio = True
        async with self.streaming(request_id, stream):
            try:
                async for event in events:
                    if isinstance(event, str):
                        await self.send({"type": "token", "id": request_id, "text": event})
                        continue
                    if first_audio and spoken is not None:
                        await self.send_format(request_id, spoken.sample_rate, encoding)
                        first_audio = False
                    await self.websocket.send(binary_frame(request_id, encode_codes(event, encoding)))
            finally:
                self.spoken.pop(request_id, None)
                if events is not stream:
                    await events.aclose()  # type: ignore[attr-defined]
            usage = {"prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.completion_tokens}
            more: dict[str, Any] = {}
            if chat:
                more["turns"] = stream.turns
            if spoken is not None:
                more["audio"] = {"sentences": spoken.sentences, "samples": spoken.samples}
                if spoken.cancelled:
                    more["finish_reason"] = FINISH_CANCELLED  # the text had ended; its speech was cut
            await self.finish(request_id, stream, usage, **more)
