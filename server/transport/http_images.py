"""The HTTP transport's image endpoints: OpenAI's ``/v1/images/generations`` and ``/v1/images/edits`` (Deep Dream on
an uploaded image), and antiphon's own listing ``/v1/images/models``.

:class:`ImageRoutes` holds them, on the plumbing every endpoint shares (:class:`~server.transport.http_base.Endpoints`);
the :class:`~server.transport.http.HttpTransport` mounts its ``routes``. Answers are the whole images as base64 PNG, or
server-sent ``partial_image`` and ``completed`` events; an upload over MAX_UPLOAD_BYTES is refused 413.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace

from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from server.engine.registry import ImageService, ModelRegistry
from server.engine.requests import ImageRequest
from server.engine.streams import ImageStream, Picture
from server.errors import AntiphonError, InvalidArgument, Unavailable
from server.metrics import Recorder
from server.transport import openai
from server.transport.http_base import (
    CLIENT_CLOSED,
    SSE_HEADERS,
    TRANSPORT,
    ClientGone,
    Endpoints,
    body_chunks,
    log,
    sse_event,
)
from server.transport.jsonfields import image_request
from server.transport.pictures import PNG, encode_picture

MAX_UPLOAD_BYTES = 4 * 1024 * 1024  # an image edit's whole form: a 1024 x 1024 photo fits
MAX_DRAIN_BYTES = 4 * MAX_UPLOAD_BYTES  # an upload over the limit is read this far, so its client reads the 413
MAX_FORM_FILES = 4  # an image edit's files: the image (OpenAI's SDKs may send it as image[])
MAX_FORM_FIELDS = 32  # its text fields: the request's own and antiphon's


class ImageRoutes(Endpoints):
    """The image endpoints (``routes``) over ``models``' image services."""

    def __init__(self, models: ModelRegistry, metrics: Recorder) -> None:
        super().__init__(models, metrics)
        self.routes = [
            Route("/v1/images/generations", self.images, methods=["POST"]),
            Route("/v1/images/edits", self.edits, methods=["POST"]),
            Route("/v1/images/models", self.list_image_models, methods=["GET"]),
        ]

    async def images(self, request: Request) -> Response:
        """Images of a generator, the prompt naming its class: ``n`` of them at once (each its own stream, batched
        by the engine), or one streamed as ``image_generation.partial_image`` events (its intermediate frames: the
        RBM's Gibbs steps, a walk's points) and ``image_generation.completed``."""
        request_id = self._request_id(request, "img")
        try:
            wanted = openai.images_request(await self._body(request))
            service = self.models.image_model(wanted.model)
            size = openai.image_size(wanted.size, service.info.image_size)
            if service.info.family == "dream":
                raise InvalidArgument("model", "Deep Dream dreams on an image: use POST /v1/images/edits")
            one = image_request(wanted.own, f"http-{request_id}", TRANSPORT)
            streams = self._start_images(service, replace(one, label_field="prompt"), wanted.n)
        except AntiphonError as exc:
            return self._error(exc, request_id)
        return await self._image_answer(request, streams, wanted, size, request_id, openai.GENERATION)

    async def edits(self, request: Request) -> Response:
        """Deep Dream on an uploaded image (OpenAI's image edits: a multipart form with the ``image`` file), the
        prompt naming the target class or empty; answered as generations are, with ``image_edit.`` events."""
        request_id = self._request_id(request, "imgedit")
        names = dict(openai.EDIT_NAMES)
        try:
            body = await self._upload(request)
            if body is None:
                return self._too_large(request, request_id)
            fields, files = await multipart_form(request.headers, body)
            edit = openai.edit_request(fields, files)
            names["dream.target"] = edit.target_field
            wanted = edit.images
            service = self.models.image_model(wanted.model)
            size = openai.image_size(wanted.size, service.info.image_size)
            if service.info.family != "dream":
                family = service.info.family
                why = f"only Deep Dream models edit an image; the {family} model makes its own (/v1/images/generations)"
                raise InvalidArgument("model", why)
            one = image_request(wanted.own, f"http-{request_id}", TRANSPORT)
            streams = self._start_images(service, replace(one, base_image=edit.image), wanted.n)
        except AntiphonError as exc:
            return self._error(openai.renamed(exc, names), request_id)
        return await self._image_answer(request, streams, wanted, size, request_id, openai.EDIT)

    async def list_image_models(self, request: Request) -> Response:
        """antiphon's own: the image models served, with their family, classes, side and limits (what ListModels
        says of them), for the chat page's image tab."""
        rows = [row for row in self.models.listing() if row["kind"] == "image"]
        return JSONResponse({"object": "list", "data": rows})

    async def _upload(self, request: Request) -> bytes | None:
        """The body of an upload, or None when it is over MAX_UPLOAD_BYTES (what follows is read and dropped, up to
        a bound, so the client reads the refusal rather than a reset connection)."""
        declared = request.headers.get("content-length", "")
        chunks: list[bytes] = []
        size = 0
        too_large = declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES
        async for chunk in body_chunks(request):
            size += len(chunk)
            too_large = too_large or size > MAX_UPLOAD_BYTES
            if too_large and size > MAX_DRAIN_BYTES:
                break
            if not too_large:
                chunks.append(chunk)
        return None if too_large else b"".join(chunks)

    def _too_large(self, request: Request, request_id: str) -> Response:
        declared = request.headers.get("content-length", "")
        got = f", got {declared}" if declared.isdigit() else ""
        error = InvalidArgument("image", f"the upload (the whole form) is at most {MAX_UPLOAD_BYTES} bytes{got}")
        log.info("request %s failed: %s %s", request_id, "PAYLOAD_TOO_LARGE", error)
        answer = openai.error_body(error)
        self.metrics.error(TRANSPORT, "413")
        return JSONResponse(answer.body, status_code=413, headers={"Connection": "close"})

    def _start_images(self, service: ImageService, one: ImageRequest, n: int) -> list[ImageStream]:
        """``n`` streams of ``one``, image i seeded ``seed + i``; if one is refused, those started are cancelled."""
        if n > (most := service.info.max_request_streams):  # a 429 would be retried in vain
            raise InvalidArgument("n", f"at most {most} images at once on this server, got {n}")
        streams: list[ImageStream] = []
        try:
            for i in range(n):
                seed = None if one.seed is None else one.seed + i
                streams.append(service.generate(replace(one, seed=seed)))
        except AntiphonError:
            for stream in streams:
                stream.cancel()
            raise
        return streams

    async def _image_answer(
        self,
        request: Request,
        streams: list[ImageStream],
        wanted: openai.ImagesRequest,
        size: str,
        request_id: str,
        prefix: str,
    ) -> Response:
        """A stream of events, or the whole answer: each image's last frame, or (``every_frame``) every frame sent."""
        if wanted.stream:
            events = self._image_events(streams[0], request_id, size, wanted, prefix)
            return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
        work = asyncio.gather(*(self._pictures(s, wanted.every_frame) for s in streams))
        try:
            made = await self._while_connected(request, request_id, work)
        except AntiphonError as exc:
            return self._error(exc, request_id)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        finally:
            for stream in streams:  # those still running when another failed, or the client left
                stream.cancel()
        data = [{"b64_json": _png64(picture)} for pictures in made for picture in pictures]
        return JSONResponse({"created": openai.created(), "data": data, "output_format": "png", "size": size})

    async def _pictures(self, stream: ImageStream, every_frame: bool) -> list[Picture]:
        """The frames sent (``every_frame``), or the last alone."""
        pictures: list[Picture] = []
        async for picture in self._pieces(stream):
            if every_frame or picture.final:
                pictures.append(picture)
        if not pictures or not pictures[-1].final:
            raise Unavailable("the image stream was cancelled before its last frame")
        return pictures

    async def _image_events(
        self, stream: ImageStream, request_id: str, size: str, wanted: openai.ImagesRequest, prefix: str
    ) -> AsyncIterator[str]:
        """Partial images, then the completed one: every frame sent (``every_frame``: frame_every, a walk), or
        ``partial_images`` of them evenly spaced."""
        steps = None if wanted.every_frame else openai.partial_steps(stream.total_steps, wanted.partial_images)
        sent = 0

        def event(picture: Picture) -> str:
            nonlocal sent
            if picture.final:
                return sse_event(openai.image_event("completed", _png64(picture), size, prefix=prefix))
            if steps is not None and picture.step not in steps:
                return ""  # not one of the partial images asked for
            sent += 1
            return sse_event(openai.image_event("partial_image", _png64(picture), size, sent - 1, prefix))

        async for item in self._stream_events(stream, request_id, event):
            if item:
                yield item


def _png64(picture: Picture) -> str:
    return base64.b64encode(encode_picture(picture, PNG)).decode("ascii")


async def multipart_form(headers: Headers, body: bytes) -> tuple[dict[str, str], dict[str, list[bytes]]]:
    """A multipart/form-data body's text fields and files (by field name), as OpenAI's SDKs and browsers send
    them; read by Starlette's parser (python-multipart)."""
    kind = headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise InvalidArgument("body", "must be multipart/form-data: the image file and the form's fields")

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(headers, chunks(), max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidArgument("body", f"is not a readable multipart/form-data body: {exc.message}") from None
    fields: dict[str, str] = {}
    files: dict[str, list[bytes]] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, str):
                fields[name] = value
            else:
                files.setdefault(name, []).append(await value.read())
    finally:
        await form.close()
    return fields, files
