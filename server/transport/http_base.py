"""What the HTTP transport's endpoints share (:class:`Endpoints`): request ids, the JSON body read within its
limit, a client's mistake answered as OpenAI's error object (one INFO line, counted by status), and engine streams
as server-sent events, cancelled when their client goes away; :class:`CheckBrowsers`, the check of what a web page
may reach that comes before every endpoint; and :class:`RequestIds`, the ``x-request-id`` of every answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.engine.registry import ModelRegistry, TextService
from server.errors import MAX_FIELD_CHARS, AntiphonError, InvalidArgument, NotFound, capped
from server.metrics import Recorder
from server.transport import auth, openai, request_ids
from server.transport.jsonfields import check_unique_keys, marked_object, parse_json

log = logging.getLogger("server.transport.http")  # every endpoint's lines under the transport's one name

MAX_BODY_BYTES = 4 * 1024 * 1024
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # nginx: pass events on at once
TRANSPORT = "http"  # the metrics' transport label
# A streamed completion's events come at most one per TEXT_EVENT_GAP_S after its first token: an HTTP/1.1 client
# reads each stream on a connection of its own and wakes once per event, so a few tokens an event rather than one
# cost both ends a fraction of the work; 25 ms is below what a reader of the text can see.
TEXT_EVENT_GAP_S = 0.025
CLIENT_CLOSED = 499  # nginx's status for a request whose client left before the answer (no one reads it)

T = TypeVar("T")


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The request's body as it arrives. A client that leaves before sending all of it made the mistake: an
    InvalidArgument naming the body (one INFO line), not a traceback."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise InvalidArgument("body", "ended early: the client went away before sending all of it") from None


def json_text(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def sse_event(body: Any) -> str:
    """One server-sent event carrying ``body`` as JSON."""
    return f"data: {json_text(body)}\n\n"


async def disconnected(request: Request) -> None:
    """Returns once the client has gone away. Only after the whole body was read: the next message the server can
    receive is then the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class ClientGone(Exception):
    """The client went away before a whole (not streamed) answer was ready; its work was cancelled."""


class RequestIds:
    """ASGI middleware: every HTTP answer carries ``x-request-id``, the client's own (a proxy's, as nginx's
    ``$request_id``) where it is plain and at most 128 characters, else 32 fresh hex digits. The endpoints name
    the request by it in their log lines and in their answers' ids (``chatcmpl-<id>``): the id a client reports
    (OpenAI's SDKs show it as ``request_id``, with every error) finds the server's lines about that request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = request_ids.request_id(Headers(scope=scope).get(request_ids.HEADER))
        scope.setdefault("state", {})["request_id"] = given
        header = (request_ids.HEADER.encode("ascii"), given.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id_of(request: Request) -> str:
    """The id :class:`RequestIds` gave ``request`` (fresh where it did not run: an app without it)."""
    state = request.scope.setdefault("state", {})
    return str(state.setdefault("request_id", request_ids.request_id(None)))


class CheckBrowsers:
    """ASGI middleware: a request ``browsers`` forbids (a page of another site, by its ``Origin``; on a loopback-only
    server, a ``Host`` that does not name this machine) is answered 403 with OpenAI's error object, but the health
    check. Without it any site could POST a plain-text body (no CORS preflight) to drive the models unseen."""

    def __init__(self, app: ASGIApp, browsers: auth.Browsers, metrics: Recorder) -> None:
        self.app = app
        self.browsers = browsers
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == "/healthz":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        forbidden = self.browsers.refusal(headers.getlist("host"), headers.getlist("origin"))
        if forbidden is None:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        auth.refused(
            TRANSPORT, f"{scope['method']} {auth.shown(path)}", f"{client[0]}:{client[1]}" if client else "-", forbidden
        )
        self.metrics.error(TRANSPORT, "403")
        await JSONResponse(openai.error_object(forbidden), status_code=403)(scope, receive, send)


class Endpoints:
    """Endpoints over ``models``, counting their errors in ``metrics``."""

    def __init__(self, models: ModelRegistry, metrics: Recorder) -> None:
        self.models = models
        self.metrics = metrics

    @staticmethod
    def _request_id(request: Request, kind: str) -> str:
        """The request's name in the log and its answer's id: ``kind`` and its ``x-request-id``."""
        return f"{kind}-{request_id_of(request)}"

    def _refusal(self, error: AntiphonError, request_id: str) -> openai.ErrorBody:
        """``error`` as OpenAI's error object: one INFO line, counted by the status it stands for."""
        log.info("request %s failed: %s %s", request_id, error.code.upper(), error)
        answer = openai.error_body(error)
        self.metrics.error(TRANSPORT, str(answer.status))
        return answer

    def _error(self, error: AntiphonError, request_id: str) -> Response:
        answer = self._refusal(error, request_id)
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    async def _no_route(self, request: Request, exc: Exception) -> Response:
        """Starlette's 404 and 405 (no such path, or not with this method) as OpenAI's error object: an SDK asking
        for an endpoint this server lacks (``/v1/embeddings``) reads why. One INFO line, counted by status; the
        path is the client's, so it is quoted in the log and shortened in both."""
        status = getattr(exc, "status_code", 404)
        path = capped(request.url.path, MAX_FIELD_CHARS)
        where = f"{request.method} {path}"
        if status == 405:
            allowed = getattr(exc, "headers", None) or {}
            message = f"Method not allowed ({where}); use {allowed.get('Allow', 'another method')}"
        else:
            message = f"Invalid URL ({where}): not an endpoint of this server"
        log.info("%s %r answered %d", request.method, path, status)
        self.metrics.error(TRANSPORT, str(status))
        return JSONResponse(openai.error_object(message), status_code=status, headers=getattr(exc, "headers", None))

    async def _server_fault(self, request: Request, exc: Exception) -> Response:
        """An exception no endpoint handled (our bug): OpenAI's error object with status 500, counted; Starlette
        raises the exception on after this answer, so the log still has its traceback. (When the exception comes
        after a streamed response has started, the client has its status already and this answer is dropped.)"""
        self.metrics.error(TRANSPORT, "500")
        return JSONResponse(openai.error_object("internal server error", "server_error"), status_code=500)

    def _text_model(self, name: Any) -> tuple[TextService, str, str]:
        """The service, the model id as the client named it, and the persona it names."""
        if not isinstance(name, str) or not name:
            raise InvalidArgument("model", "must name a model (GET /v1/models lists them)")
        model, suffix = openai.split_model(name)
        service = self.models.text_model(model)
        persona = openai.persona_of(service.info, suffix) if suffix else ""
        if persona is None:
            raise NotFound(f"model: {name!r} names no persona of {model!r} (GET /v1/models lists them)")
        return service, name, persona

    async def _body(self, request: Request) -> Any:
        """The JSON body, read no further than MAX_BODY_BYTES (a larger one is refused before it is all read)."""
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            shown = capped(encoding, MAX_FIELD_CHARS)
            raise InvalidArgument("body", f"is compressed (Content-Encoding: {shown}): send it as plain JSON")
        chunks: list[bytes] = []
        size = 0
        async for chunk in body_chunks(request):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise InvalidArgument("body", f"at most {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        document = parse_json(b"".join(chunks), "body", object_pairs_hook=marked_object)
        check_unique_keys(document)
        return document

    async def _while_connected(self, request: Request, request_id: str, work: Awaitable[T]) -> T:
        """``work``'s result, for an answer sent whole. If the client goes away first (its timeout, a closed tab, a
        retrying SDK), ``work`` is cancelled, and with it the streams it reads (they leave the batch at the next step
        rather than run to ``max_tokens`` for no one), and ClientGone is raised."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(disconnected(request))
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # this handler cancelled (the server stopping): the work goes with it
            task.cancel()
            raise
        finally:
            gone.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():  # a gather ends with its children's CancelledError as an exception: retrieved here,
            task.exception()  # or asyncio would log it at ERROR as never retrieved
        log.info("request %s: the client went away before the answer; cancelled", request_id)
        raise ClientGone

    async def _text(self, stream: Any) -> str:
        """A text stream's whole text (an answer sent whole)."""
        return "".join([piece async for piece in self._pieces(stream)])

    async def _pieces(self, stream: Any, gap_s: float = 0.0) -> AsyncGenerator[Any, None]:
        """The stream's pieces; leaving early (the client went away) cancels it. With ``gap_s``, each piece after
        the first is read up to ``gap_s`` after the one before, so what the engine made meanwhile comes as one; a
        stream that would fill half its buffer sooner, at the rate its last piece came, is read then instead (the
        engine pauses a full stream)."""
        try:
            read_at = time.monotonic()
            async for piece in stream:
                yield piece
                if gap_s and not stream.done:
                    now = time.monotonic()
                    rate = len(piece) / max(now - read_at, 1e-3)  # units a second, lately
                    read_at = now
                    await asyncio.sleep(min(gap_s, stream.capacity / 2 / rate))
        finally:
            stream.cancel()

    async def _stream_events(
        self, stream: Any, request_id: str, encode: Callable[[Any], str], gap_s: float = 0.0
    ) -> AsyncIterator[str]:
        """Each piece encoded (``gap_s``: see :meth:`_pieces`); an engine error after the headers went out is an
        ``error`` event, as OpenAI sends."""
        try:
            async for piece in self._pieces(stream, gap_s):
                yield encode(piece)
        except AntiphonError as exc:
            yield sse_event(self._refusal(exc, request_id).body)
