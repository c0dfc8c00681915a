"""The WebSocket transport: JSON text frames, several requests per connection told apart by a client-chosen id.

The protocol is documented in ``docs/websocket-protocol.md``. Error frames carry the gRPC status name of the
failure (``INVALID_ARGUMENT``, ``NOT_FOUND``, ...); ``GET /healthz`` on the same port answers 200 while serving.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Request, Response, ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from server.engine.api import ChatTurn, ModelRegistry, SamplingOptions, TextRequest, TextStream
from server.errors import AntiphonError, InvalidArgument, ResourceExhausted, Unimplemented

log = logging.getLogger(__name__)

MAX_ID_CHARS = 128
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "seed", "max_tokens", "stop")
REQUEST_FIELDS = {
    "generate": {"type", "id", "model", "prompt", "sampling"},
    "chat": {"type", "id", "model", "session_id", "persona", "speaker", "message", "sampling", "speak"},
    "cancel": {"type", "id"},
    "list_models": {"type", "id"},
    "generate_audio": None,  # not served yet: any fields
    "classify": None,
}


def error_frame(request_id: str | None, error: AntiphonError) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "id": request_id, "code": error.code.upper(), "message": str(error)}
    if isinstance(error, InvalidArgument):
        frame["field"] = error.field
    if isinstance(error, ResourceExhausted):
        frame["reason"] = error.reason
    return frame


def _string(message: dict[str, Any], name: str, prefix: str = "") -> str:
    value = message.get(name, "")
    if not isinstance(value, str):
        raise InvalidArgument(prefix + name, f"must be a string, got {type(value).__name__}")
    return value


def _number(value: Any, name: str, integer: bool) -> Any:
    """``value`` if it is a JSON integer (or, unless ``integer``, any JSON number, as a float)."""
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise InvalidArgument(name, f"must be {'an integer' if integer else 'a number'}, got {json.dumps(value)}")
    return value if integer else float(value)  # type: ignore[arg-type]


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
        temperature=None if get["temperature"] is None else _number(get["temperature"], "sampling.temperature", False),
        top_k=None if get["top_k"] is None else _number(get["top_k"], "sampling.top_k", True),
        top_p=None if get["top_p"] is None else _number(get["top_p"], "sampling.top_p", False),
        seed=None if get["seed"] is None else _number(get["seed"], "sampling.seed", True),
        max_tokens=None if get["max_tokens"] is None else _number(get["max_tokens"], "sampling.max_tokens", True),
        stop=tuple(stop),
    )


class WebSocketTransport:
    """Serves one WebSocket connection per :meth:`handler` call; :meth:`process_request` answers ``/healthz``."""

    def __init__(self, models: ModelRegistry, serving: Callable[[], bool]) -> None:
        self.models = models
        self.serving = serving
        self._connections = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()  # every connection's request tasks

    async def drain(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) for the request tasks of every connection to send their last frame."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] == "/healthz":
            if self.serving():
                return connection.respond(HTTPStatus.OK, "ok\n")
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
        return None  # go on with the WebSocket handshake

    async def handler(self, websocket: ServerConnection) -> None:
        await _Connection(self.models, websocket, f"ws{next(self._connections)}", self._tasks).serve()


class _Connection:
    def __init__(
        self, models: ModelRegistry, websocket: ServerConnection, name: str, all_tasks: set[asyncio.Task[None]]
    ) -> None:
        self.models = models
        self.websocket = websocket
        self.name = name
        self.streams: dict[str, TextStream] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.all_tasks = all_tasks

    async def serve(self) -> None:
        try:
            async for message in self.websocket:
                if isinstance(message, bytes):
                    await self.websocket.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
                    break
                await self.dispatch(message)
        finally:
            # The client is gone (or sent garbage): its streams leave the batch at the next step.
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.websocket.send(json.dumps(frame, ensure_ascii=False))

    async def dispatch(self, raw: str) -> None:
        request_id: str | None = None
        try:
            try:
                message = json.loads(raw)
            except ValueError:
                raise InvalidArgument("frame", "is not valid JSON") from None
            if not isinstance(message, dict):
                raise InvalidArgument("frame", "must be a JSON object")
            raw_id = message.get("id")
            if not isinstance(raw_id, str) or not 1 <= len(raw_id) <= MAX_ID_CHARS:
                raise InvalidArgument("id", f"must be a string of 1..{MAX_ID_CHARS} characters")
            request_id = raw_id
            kind = message.get("type")
            if kind not in REQUEST_FIELDS:
                raise InvalidArgument("type", f"must be one of {', '.join(REQUEST_FIELDS)}, got {json.dumps(kind)}")
            allowed = REQUEST_FIELDS[kind]
            for key in message:
                if allowed is not None and key not in allowed:
                    raise InvalidArgument(key, f"unknown field of a {kind} request")
            await self.handle(kind, request_id, message)
        except AntiphonError as exc:
            log.info("request %s-%s failed: %s %s", self.name, request_id or "-", exc.code.upper(), exc)
            await self.send(error_frame(request_id, exc))

    async def handle(self, kind: str, request_id: str, message: dict[str, Any]) -> None:
        if kind == "cancel":
            stream = self.streams.get(request_id)
            if stream is not None:
                stream.cancel()  # its "done" frame (finish_reason "cancelled") follows from its own task
            return
        if kind == "list_models":
            models = [
                {
                    "id": info.id,
                    "kind": info.kind,
                    "is_default": info.id == self.models.default_text,
                    "description": info.description,
                    "personas": list(info.personas),
                    "default_persona": info.default_persona,
                    "max_prompt_chars": info.max_prompt_chars,
                    "max_tokens": info.max_tokens,
                }
                for info in self.models.infos()
            ]
            await self.send({"type": "models", "id": request_id, "models": models})
            return
        if kind == "generate_audio":
            raise Unimplemented("generate_audio: no audio model is loaded on this server yet")
        if kind == "classify":
            raise Unimplemented("classify: no classifier is loaded on this server yet")
        if request_id in self.streams:
            raise InvalidArgument("id", f"{request_id!r} names a request still running on this connection")
        service = self.models.text_model(_string(message, "model"))
        sampling = sampling_options(message.get("sampling"))
        tag = f"{self.name}-{request_id}"
        if kind == "generate":
            stream = service.generate(TextRequest(_string(message, "prompt"), sampling, tag))
        else:
            speak = message.get("speak", False)
            if not isinstance(speak, bool):
                raise InvalidArgument("speak", "must be true or false")
            if speak:
                raise Unimplemented("speak: no audio model is loaded on this server yet")
            turn = ChatTurn(
                session_id=_string(message, "session_id"),
                message=_string(message, "message"),
                persona=_string(message, "persona"),
                speaker=_string(message, "speaker"),
                sampling=sampling,
                request_id=tag,
            )
            stream = service.chat(turn)
        self.streams[request_id] = stream
        task = asyncio.create_task(self.pump(request_id, stream, chat=kind == "chat"))
        for tasks in (self.tasks, self.all_tasks):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def pump(self, request_id: str, stream: TextStream, chat: bool) -> None:
        try:
            async for text in stream:
                await self.send({"type": "token", "id": request_id, "text": text})
            done: dict[str, Any] = {
                "type": "done",
                "id": request_id,
                "finish_reason": stream.finish_reason,
                "usage": {"prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.completion_tokens},
            }
            if chat:
                done["turns"] = stream.turns
            # Forgotten before the last frame goes out, so a client may reuse the id as soon as it reads "done".
            del self.streams[request_id]
            await self.send(done)
        except AntiphonError as exc:
            log.info("request %s-%s failed: %s %s", self.name, request_id, exc.code.upper(), exc)
            self.streams.pop(request_id, None)
            await self.send(error_frame(request_id, exc))
        except ConnectionClosed:
            pass
        finally:
            self.streams.pop(request_id, None)
            stream.cancel()
