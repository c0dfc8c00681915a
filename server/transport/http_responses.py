"""OpenAI's Responses API over the text models: ``POST /v1/responses`` (a persona's reply, whole or as typed
events), ``GET`` and ``DELETE /v1/responses/{id}`` for the responses this process keeps. The wire types are in
:mod:`server.transport.responses`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from server.engine.registry import ModelRegistry
from server.engine.requests import Conversation, Message
from server.engine.streams import FINISH_CANCELLED, TextStream
from server.errors import AntiphonError
from server.metrics import Recorder
from server.transport import responses
from server.transport.http_base import (
    CLIENT_CLOSED,
    SSE_HEADERS,
    TEXT_EVENT_GAP_S,
    TRANSPORT,
    ClientGone,
    Endpoints,
    json_text,
)


def typed_event(body: dict[str, object]) -> str:
    """One server-sent event named by its type, as the Responses API streams them."""
    return f"event: {body['type']}\ndata: {json_text(body)}\n\n"


class ResponseRoutes(Endpoints):
    """The Responses endpoints (``routes``) over ``models``' text services."""

    def __init__(self, models: ModelRegistry, metrics: Recorder, store: responses.ResponseStore | None = None) -> None:
        super().__init__(models, metrics)
        self.store = store or responses.ResponseStore()
        self.routes = [
            Route("/v1/responses", self.create, methods=["POST"]),
            Route("/v1/responses/{response_id}", self.retrieve, methods=["GET"]),
            Route("/v1/responses/{response_id}", self.delete, methods=["DELETE"]),
        ]

    async def create(self, request: Request) -> Response:
        """A persona's reply to ``input`` (after ``instructions`` and the response ``previous_response_id``
        names): the response object, or its events with ``stream``."""
        request_id = self._request_id(request, "resp")
        wanted: responses.ResponsesRequest | None = None
        earlier: tuple[Message, ...] = ()
        try:
            wanted = responses.responses_request(await self._body(request))
            service, model, persona = self._text_model(wanted.model)
            earlier = await self.store.earlier(wanted)
            messages = responses.conversation(wanted, earlier)
            stream = service.converse(Conversation(messages, persona, wanted.sampling, f"http-{request_id}", TRANSPORT))
        except AntiphonError as exc:
            if wanted is not None:
                exc = responses.renamed_error(exc, wanted, len(earlier))
            return self._error(exc, request_id)
        reply = responses.Reply.start(model, wanted)
        if wanted.stream:
            events = self._events(stream, reply, earlier, request_id)
            return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
        try:
            reply.text = await self._while_connected(request, request_id, self._text(stream))
        except AntiphonError as exc:
            return self._error(responses.renamed_error(exc, wanted, len(earlier)), request_id)
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        body = reply.body(responses.status_of(stream), stream)
        try:
            await self.store.put(reply, earlier, body)
        except AntiphonError as exc:  # the store does not answer: a reply asked to be kept is not passed off as kept
            return self._error(exc, request_id)
        return JSONResponse(body)

    async def retrieve(self, request: Request) -> Response:
        try:
            responses.check_retrieve_query(request.query_params)
            return JSONResponse((await self.store.get(request.path_params["response_id"])).body)
        except AntiphonError as exc:
            return self._error(exc, self._request_id(request, "resp"))

    async def delete(self, request: Request) -> Response:
        response_id = request.path_params["response_id"]
        try:
            await self.store.delete(response_id)
        except AntiphonError as exc:
            return self._error(exc, self._request_id(request, "resp"))
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})

    async def _events(
        self, stream: TextStream, reply: responses.Reply, earlier: tuple[Message, ...], request_id: str
    ) -> AsyncIterator[str]:
        """``response.created`` to ``response.completed``: the text as ``response.output_text.delta`` events,
        coalesced as chat chunks are; an engine error is an ``error`` event and ``response.failed``."""
        events = responses.Events(reply)
        for event in events.opening():
            yield typed_event(event)
        try:
            async for piece in self._pieces(stream, TEXT_EVENT_GAP_S):
                yield typed_event(events.delta(piece))
        except AntiphonError as exc:
            for event in events.failure(self._refusal(exc, request_id).body["error"]):
                yield typed_event(event)
            return
        if stream.finish_reason is None:
            return  # the client went away
        if stream.finish_reason == FINISH_CANCELLED:  # the server stopped it (shutting down)
            stopped = {"type": "server_error", "message": "the reply was cancelled: the server is stopping"}
            for event in events.failure(stopped):
                yield typed_event(event)
            return
        closing = events.closing(stream)
        try:
            await self.store.put(reply, earlier, closing[-1]["response"])
        except AntiphonError as exc:  # asked to be kept and not kept: failed, as a whole answer is a 503
            for event in events.failure(self._refusal(exc, request_id).body["error"]):
                yield typed_event(event)
            return
        for event in closing:
            yield typed_event(event)
