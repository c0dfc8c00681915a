"""The HTTP transport: OpenAI-compatible endpoints (``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``,
``/v1/audio/speech``), antiphon's own listings and classify, and ``/healthz``, a Starlette application served by
uvicorn inside the server's own event loop. The image endpoints (``/v1/images/...``) live in
:mod:`server.transport.http_images`; what every endpoint shares (request ids, the body, errors, event streams) in
:mod:`server.transport.http_base`.

With API keys configured, every request but ``/healthz`` and the chat page's files (``/``, ``/static/``) must carry
``Authorization: Bearer KEY``; :class:`RequireKey` answers the others 401 with OpenAI's error object
(``invalid_api_key``) before any route runs. Before that, :class:`CheckBrowsers` answers 403 to a page of another
site (its ``Origin``) and, on a loopback-only server, to a request that does not name this machine in ``Host``.

Streamed answers are server-sent events: ``data: {chunk}`` lines, then ``data: [DONE]``. A client that disconnects
mid-stream cancels the handler's generator, whose ``finally`` cancels the engine stream (it leaves the batch at the
next step). Errors are OpenAI's error object with the matching HTTP status; a client's mistake is one INFO line.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from server.engine.registry import ModelRegistry, TextService
from server.engine.requests import AudioRequest, SamplingOptions, TextRequest
from server.engine.streams import FINISH_CANCELLED, AudioStream, TextStream
from server.errors import AntiphonError, InvalidArgument, ListenError, NotFound, Unauthenticated, Unavailable
from server.metrics import Recorder
from server.transport import auth, openai
from server.transport.http_base import (
    CLIENT_CLOSED,
    SSE_HEADERS,
    TEXT_EVENT_GAP_S,
    TRANSPORT,
    CheckBrowsers,
    ClientGone,
    Endpoints,
    RequestIds,
    json_text,
    sse_event,
)
from server.transport.http_images import ImageRoutes
from server.transport.http_responses import ResponseRoutes
from server.transport.jsonfields import classify_input, string_field
from server.transport.responses import ResponseStore
from server.transport.wire import Pcm16At

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"  # the chat page: plain files, no build step
OPEN_PATHS = ("/", "/healthz")  # with /static/: the health check and the chat page, which asks for the key itself
# Headers of our answers a page on another origin may read (CORS shows it only the safelisted ones otherwise): the
# PCM's rate, and what the SDKs read to retry or not
EXPOSED_HEADERS = ("X-Sample-Rate", "Retry-After", "x-should-retry", "x-request-id", "WWW-Authenticate")
# A reply the server cut short because it is stopping (its engines closed): 503 with Retry-After, as a request
# refused while stopping is
STOPPED = Unavailable("the reply was cancelled: the server is stopping")
MAX_PROMPTS = 20  # prompts one completions request continues (LangChain's OpenAI sends its batches of 20 as one)
# The chat page's files: its scripts and styles are files of its own (no inline script, no eval), it calls its own
# origin only, and no other site may frame it (clickjacking) or learn its address from a link's Referer (same-origin,
# not no-referrer, under which a browser sends some requests that are not CORS ones with Origin: null).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_PLACEHOLDER = "\x00piece\x00"  # stands for a piece's text in an encoded chunk; no id or model name holds it


class RequireKey:
    """ASGI middleware: a request without an accepted API key is answered 401, OpenAI's ``invalid_api_key`` error
    object, unless it asks for the health check or the chat page's files."""

    def __init__(self, app: ASGIApp, keys: auth.ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        reason = self.keys.refusal(auth.bearer(Headers(scope=scope).get("authorization")))
        if reason is None:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "-"
        self.keys.refused(TRANSPORT, f"{scope['method']} {path}", peer, reason, "401")
        answer = openai.error_body(Unauthenticated(auth.MESSAGES[reason]))
        await JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)(scope, receive, send)


class PageFiles(StaticFiles):
    """The chat page's files under ``/static/``, with :data:`PAGE_HEADERS`."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


class HttpTransport(Endpoints):
    """The Starlette application over ``models``; ``serving()`` says whether the server takes new work; with
    ``keys``, every request but the health check and the page needs one of them; ``kept_responses``: where the
    Responses API keeps responses (default: this process's memory); ``browsers``: what a web page may reach (default:
    pages of this host and of ``cors_origins``, any ``Host``)."""

    def __init__(
        self,
        models: ModelRegistry,
        serving: Callable[[], bool],
        cors_origins: tuple[str, ...] = (),
        keys: auth.ApiKeys | None = None,
        metrics: Recorder | None = None,
        kept_responses: ResponseStore | None = None,
        browsers: auth.Browsers | None = None,
    ) -> None:
        super().__init__(models, metrics or Recorder())
        self.serving = serving
        self.image_routes = ImageRoutes(models, self.metrics)
        self.response_routes = ResponseRoutes(models, self.metrics, kept_responses)
        middleware = []
        if keys is not None and keys.required:
            middleware.append(Middleware(RequireKey, keys=keys))
        self.app: ASGIApp = Starlette(
            routes=[
                Route("/", self.page, methods=["GET"]),
                Mount("/static", PageFiles(directory=STATIC), name="static"),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/v1/models", self.list_models, methods=["GET"]),
                Route("/v1/models/{model:path}", self.get_model, methods=["GET"]),
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                *self.response_routes.routes,
                Route("/v1/audio/speech", self.speech, methods=["POST"]),
                *self.image_routes.routes,
                Route("/v1/classifiers", self.list_classifiers, methods=["GET"]),
                Route("/v1/classify", self.classify, methods=["POST"]),
                *([Route("/metrics", self.scrape, methods=["GET"])] if self.metrics.enabled else []),
            ],
            middleware=middleware,
            exception_handlers={404: self._no_route, 405: self._no_route, Exception: self._server_fault},
        )
        if cors_origins:
            # Around the whole application: a browser's preflight carries no key, and a page reads a refusal only
            # with CORS headers, the key's and our own 500 alike (Starlette answers a 500 outside the middleware it
            # is given). A page may read the headers that say how to play or when to retry, and an origin named
            # (not "*": any site at all) may be a public page calling a server on a private network (Chrome's Private
            # Network Access preflight).
            self.app = CORSMiddleware(
                self.app,
                allow_origins=list(cors_origins),
                allow_methods=["*"],
                allow_headers=["*"],
                allow_private_network="*" not in cors_origins,
                expose_headers=EXPOSED_HEADERS,
            )
        # Outside CORS: a page of a site not named gets no preflight either
        self.app = CheckBrowsers(self.app, browsers or auth.Browsers(cors_origins), self.metrics)
        self.app = RequestIds(self.app)  # outermost: every answer carries its id, a refusal's too

    # -- endpoints ---------------------------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})

    async def healthz(self, request: Request) -> Response:
        if self.serving():
            return PlainTextResponse("ok\n")
        return PlainTextResponse("shutting down\n", status_code=503)

    def _model_objects(self) -> list[dict[str, Any]]:
        """The text models (one id per persona) then the audio models; ``kind`` (ours) tells them apart."""
        created = openai.created()
        rows = [
            {"id": model_id, "object": "model", "created": created, "owned_by": "antiphon", "kind": "text"}
            for info in self.models.text_infos()
            for model_id in openai.model_ids(info)
        ]
        rows += [
            {"id": info.id, "object": "model", "created": created, "owned_by": "antiphon", "kind": "audio"}
            for info in self.models.audio_infos()
        ]
        rows += [
            {"id": info.id, "object": "model", "created": created, "owned_by": "antiphon", "kind": "image"}
            for info in self.models.image_infos()
        ]
        return rows

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": self._model_objects()})

    async def get_model(self, request: Request) -> Response:
        name = request.path_params["model"]
        rows = {row["id"]: row for row in self._model_objects()}
        if name not in rows:  # a text model's id as chat reads it: a persona in any case, with spaces
            try:
                service, _, persona = self._text_model(name)
                name = openai.model_id(service.info, persona)
            except AntiphonError:
                pass
        if name in rows:
            return JSONResponse(rows[name])
        missing = NotFound(f"model: {name!r} is not served here (GET /v1/models lists them)")
        return self._error(missing, self._request_id(request, "model"))

    async def chat_completions(self, request: Request) -> Response:
        request_id = self._request_id(request, "chatcmpl")
        try:
            body = openai.check_fields(await self._body(request), openai.CHAT_FIELDS)
            usage = openai.include_usage(body)  # every field checked before the reply starts, which a refusal leaks
            service, model, persona = self._text_model(body.get("model"))
            stream = service.converse(openai.conversation(body, persona, f"http-{request_id}", TRANSPORT))
        except AntiphonError as exc:
            return self._error(exc, request_id)
        if body.get("stream"):
            return StreamingResponse(
                self._chat_events(stream, request_id, model, usage), media_type="text/event-stream", headers=SSE_HEADERS
            )
        return await self._whole(request, [stream], request_id, model, chat=True)

    async def completions(self, request: Request) -> Response:
        request_id = self._request_id(request, "cmpl")
        try:
            body = openai.check_fields(await self._body(request), openai.COMPLETION_FIELDS)
            usage = openai.include_usage(body)
            service, model, persona = self._text_model(body.get("model"))
            if persona:
                raise InvalidArgument("model", "completions continue text as it is: name the model without a persona")
            prompts = _prompts(body.get("prompt", ""), bool(body.get("stream")))
            streams = self._start_texts(service, prompts, openai.sampling(body), request_id)
        except AntiphonError as exc:
            return self._error(exc, request_id)
        if body.get("stream"):
            return StreamingResponse(
                self._completion_events(streams[0], request_id, model, usage),
                media_type="text/event-stream",
                headers=SSE_HEADERS,
            )
        return await self._whole(request, streams, request_id, model, chat=False)

    def _start_texts(
        self, service: TextService, prompts: list[str], options: SamplingOptions, request_id: str
    ) -> list[TextStream]:
        """One stream a prompt, batched together by the engine; if one is refused, those started are cancelled and
        the error names the prompt (``prompt[1]``) where there are several."""
        if len(prompts) > (most := service.info.max_request_streams):  # a 429 would be retried in vain
            raise InvalidArgument("prompt", f"at most {most} prompts at once on this server, got {len(prompts)}")
        streams: list[TextStream] = []
        for i, prompt in enumerate(prompts):
            suffix = f"-{i}" if len(prompts) > 1 else ""
            try:
                streams.append(service.generate(TextRequest(prompt, options, f"http-{request_id}{suffix}", TRANSPORT)))
            except AntiphonError as exc:
                for stream in streams:
                    stream.cancel()
                raise openai.renamed(exc, {"prompt": f"prompt[{i}]"}) if suffix else exc from None
        return streams

    async def speech(self, request: Request) -> Response:
        """The WaveNet's speech of ``input``, streamed as it is made: a WAV stream or raw PCM16 (chunked), or
        ``speech.audio.delta`` events with ``stream_format: "sse"``."""
        request_id = self._request_id(request, "speech")
        try:
            body = await self._body(request)
            default = self.models.audio_model("")
            wanted = openai.speech_request(body, default.info.voices, default.info.default_voice)
            name = "" if wanted.model in openai.OPENAI_SPEECH_MODELS else wanted.model
            service = self.models.audio_model(name)
            speech = AudioRequest(wanted.text, voice=wanted.voice, request_id=f"http-{request_id}", transport=TRANSPORT)
            stream = service.generate(speech)
        except AntiphonError as exc:
            return self._error(openai.renamed(exc, {"text": "input"}), request_id)
        # WAV says its rate; bare PCM and SSE deltas carry none, and OpenAI's clients play them at 24 kHz
        rate = service.info.sample_rate if wanted.response_format == "wav" and not wanted.sse else openai.PCM_RATE
        pcm = Pcm16At(service.info.sample_rate, rate)
        if wanted.sse:
            return StreamingResponse(
                self._speech_events(stream, request_id, pcm), media_type="text/event-stream", headers=SSE_HEADERS
            )
        media = "audio/wav" if wanted.response_format == "wav" else "audio/pcm"
        header = openai.wav_header(rate) if wanted.response_format == "wav" else b""
        headers = {"X-Sample-Rate": str(rate), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(self._speech_bytes(stream, request_id, header, pcm), media_type=media, headers=headers)

    async def _speech_bytes(
        self, stream: AudioStream, request_id: str, header: bytes, pcm: Pcm16At
    ) -> AsyncIterator[bytes]:
        if header:
            yield header
        try:
            async for codes in self._pieces(stream):
                yield pcm(codes)
        except AntiphonError as exc:  # the status line went out already: the body ends short
            log.info("request %s failed: %s %s", request_id, exc.code.upper(), exc)
            self.metrics.error(TRANSPORT, str(openai.error_body(exc).status))

    async def _speech_events(self, stream: AudioStream, request_id: str, pcm: Pcm16At) -> AsyncIterator[str]:
        def delta(codes: Any) -> str:
            audio = base64.b64encode(pcm(codes)).decode("ascii")
            return sse_event({"type": "speech.audio.delta", "audio": audio})

        async for event in self._stream_events(stream, request_id, delta):
            yield event
        if stream.finish_reason == FINISH_CANCELLED:  # the server stopped it: cut speech is not passed off as done
            yield sse_event(self._refusal(STOPPED, request_id).body)
        elif stream.finish_reason is not None:
            yield sse_event({"type": "speech.audio.done", "usage": {"samples": pcm.samples}})

    async def scrape(self, request: Request) -> Response:
        """The metrics, in Prometheus' text format (or OpenMetrics, where the scraper asks for it)."""
        body, content_type = self.metrics.exposition(request.headers.get("accept", ""))
        return Response(body, headers={"Content-Type": content_type})

    async def list_classifiers(self, request: Request) -> Response:
        """antiphon's own: the classifiers served, with their labels and inputs (what ListModels says of them)."""
        rows = [row for row in self.models.listing() if row["kind"] == "classifier"]
        return JSONResponse({"object": "list", "data": rows})

    async def classify(self, request: Request) -> Response:
        """antiphon's own: ``{"model", one of "text" | "audio" (base64 PCM16 LE mono, with "audio_sample_rate") |
        "tensor" ({"shape", "values"}), "top_k"}`` -> the labels, most probable first (as WebSocket's classify)."""
        request_id = self._request_id(request, "classify")
        try:
            body = await self._body(request)
            if not isinstance(body, dict):
                raise InvalidArgument("body", "must be a JSON object")
            allowed = {"model", "text", "audio", "audio_sample_rate", "tensor", "top_k"}
            for key in body:
                if key not in allowed:
                    raise InvalidArgument(key, "unrecognized request argument")
            service = self.models.classifier(string_field(body, "model"))
            item, top_k = classify_input(body, TRANSPORT)
            ranked = await service.classify(item, top_k)
        except AntiphonError as exc:
            return self._error(exc, request_id)
        labels = [{"label": label, "probability": p} for label, p in ranked]
        return JSONResponse({"object": "classification", "model": service.info.id, "labels": labels})

    # -- answers -------------------------------------------------------------------------------------------------
    async def _whole(
        self, request: Request, streams: list[TextStream], request_id: str, model: str, chat: bool
    ) -> Response:
        """The answer sent whole: one choice a stream (completions' prompts), read together."""
        try:
            work = asyncio.gather(*(self._text(stream) for stream in streams))
            texts = await self._while_connected(request, request_id, work)
        except AntiphonError as exc:
            return self._error(exc, request_id)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        finally:
            for stream in streams:  # those still running when another failed, or the client left
                stream.cancel()
        if any(stream.finish_reason == FINISH_CANCELLED for stream in streams):  # the server stopped: not whole
            return self._error(STOPPED, request_id)
        choices: list[dict[str, Any]] = []
        for i, (stream, text) in enumerate(zip(streams, texts, strict=True)):
            reason = stream.finish_reason or "stop"
            if chat:
                message = {"role": "assistant", "content": text, "refusal": None}
                choices.append({"index": i, "message": message, "logprobs": None, "finish_reason": reason})
            else:
                choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": reason})
        body = {
            "id": request_id,
            "object": "chat.completion" if chat else "text_completion",
            "created": openai.created(),
            "model": model,
            "choices": choices,
            "usage": openai.usage(*streams),
            "system_fingerprint": None,
        }
        return JSONResponse(body)

    def _chat_events(self, stream: TextStream, request_id: str, model: str, usage: bool) -> AsyncIterator[str]:
        return self._text_events(
            stream,
            {"id": request_id, "object": "chat.completion.chunk", "created": openai.created(), "model": model},
            lambda text, reason: {"delta": {"content": text} if text else {}, "finish_reason": reason},
            usage,
            first={"delta": {"role": "assistant", "content": ""}, "finish_reason": None},
        )

    def _completion_events(self, stream: TextStream, request_id: str, model: str, usage: bool) -> AsyncIterator[str]:
        return self._text_events(
            stream,
            {"id": request_id, "object": "text_completion", "created": openai.created(), "model": model},
            lambda text, reason: {"text": text, "finish_reason": reason},
            usage,
        )

    async def _text_events(
        self,
        stream: TextStream,
        base: dict[str, Any],
        choice: Callable[[str, str | None], dict[str, Any]],
        usage: bool,
        first: dict[str, Any] | None = None,
    ) -> AsyncIterator[str]:
        """A text stream as OpenAI's chunks: ``first`` (if any), one chunk a piece, the finish reason, the usage
        when asked for, then ``[DONE]``; ``choice(text, reason)`` is what a chunk's one choice says."""

        def chunk(fields: dict[str, Any]) -> str:
            one = {"index": 0, **fields, "logprobs": None}
            return sse_event({**base, "choices": [one], **({"usage": None} if usage else {})})

        # Every piece's chunk is the same JSON but for its text: encode the chunk once around a placeholder and
        # fill in each piece's encoded text, a tenth of the work of building and encoding the whole chunk each time.
        head, _, tail = chunk(choice(_PLACEHOLDER, None)).partition(json_text(_PLACEHOLDER))

        def piece(text: str) -> str:
            return head + json_text(text) + tail

        if first is not None:
            yield chunk(first)
        async for event in self._stream_events(stream, base["id"], piece, TEXT_EVENT_GAP_S):
            yield event
        if stream.finish_reason is None:
            return  # an error event went out
        if stream.finish_reason == FINISH_CANCELLED:  # the server stopped it: an error, as OpenAI ends a failed stream
            yield sse_event(self._refusal(STOPPED, base["id"]).body)
            return
        yield chunk(choice("", stream.finish_reason))
        if usage:
            yield sse_event({**base, "choices": [], "usage": openai.usage(stream)})
        yield "data: [DONE]\n\n"


def _prompts(value: Any, stream: bool) -> list[str]:
    """A completions request's ``prompt``: a string, or a list of strings each continued as its own choice (whole
    answers only: a stream carries one prompt's text). Token ids are not read: a token is a character."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value or not all(isinstance(prompt, str) for prompt in value):
        raise InvalidArgument("prompt", "must be a string or a list of strings (a token is a character)")
    if stream and len(value) > 1:
        raise InvalidArgument("prompt", f"a stream continues one prompt, got {len(value)}: send one, or stream false")
    if len(value) > MAX_PROMPTS:
        raise InvalidArgument("prompt", f"at most {MAX_PROMPTS} prompts a request, got {len(value)}")
    return value


def _client_mistake_at_info(record: logging.LogRecord) -> bool:
    """uvicorn logs bytes that are not HTTP (a TLS client on a plain port, a scanner) at WARNING: a client's mistake,
    which this server logs at INFO."""
    if record.levelno == logging.WARNING and record.getMessage().startswith("Invalid HTTP request"):
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True


class HttpListener:
    """uvicorn serving ``app`` on a socket this process binds (port 0: a free one), inside the running loop; over
    TLS with ``tls``."""

    def __init__(self, app: Any, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.tls = tls
        self._server: uvicorn.Server | None = None
        self._app = app

    async def start(self) -> int:
        """Listen; returns the bound port."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ListenError(f"--http-port: cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        sock.listen(1024)
        sock.setblocking(False)
        config = uvicorn.Config(
            self._app, lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=1
        )
        config.load()
        logging.getLogger("uvicorn.error").addFilter(_client_mistake_at_info)  # once: a filter is added once
        # The server's one TLS context (the WebSocket listener's too) rather than one uvicorn would build from the
        # files with its own cipher defaults; startup() hands it to create_server, and a request's scheme is https.
        config.ssl = self.tls
        server = uvicorn.Server(config)
        # Server.serve() would also install signal handlers and run a loop of its own; the process's serve() owns
        # both, so only the listening part runs here: startup now, shutdown at stop.
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server = server
        self.port = sock.getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Close the listener and the connections left (streams end first: the engines have closed)."""
        if self._server is not None:
            server, self._server = self._server, None
            server.should_exit = True
            await asyncio.wait_for(server.shutdown(), timeout=5)
