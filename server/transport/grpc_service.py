"""The gRPC transport: a thin ``antiphon.v1.Generation`` servicer over the engines, plus health and reflection.

Server-streaming RPCs are async generators. A client that cancels or disconnects cancels the handler's task; the
``finally`` blocks then cancel the engine stream, which leaves the batch at the next step.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, NoReturn

import grpc
from antiphon.v1 import (
    audio_pb2,
    chat_pb2,
    classify_pb2,
    generation_pb2,
    generation_pb2_grpc,
    models_pb2,
    sampling_pb2,
    text_pb2,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from server.engine.api import (
    FINISH_CANCELLED,
    FINISH_LENGTH,
    FINISH_STOP,
    ChatTurn,
    ModelRegistry,
    SamplingOptions,
    TextRequest,
    TextStream,
)
from server.errors import AntiphonError, Unimplemented

log = logging.getLogger(__name__)

SERVICE_NAME = generation_pb2.DESCRIPTOR.services_by_name["Generation"].full_name
FINISH_REASONS = {
    FINISH_STOP: sampling_pb2.FINISH_REASON_STOP,
    FINISH_LENGTH: sampling_pb2.FINISH_REASON_LENGTH,
    FINISH_CANCELLED: sampling_pb2.FINISH_REASON_CANCELLED,
}
NO_AUDIO = "no audio model is loaded on this server yet"
NO_CLASSIFIER = "no classifier is loaded on this server yet"


def status_code(error: AntiphonError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.code.upper(), grpc.StatusCode.INTERNAL)


def sampling_options(sampling: sampling_pb2.Sampling) -> SamplingOptions:
    """Unset optional fields become None (the server's default)."""
    return SamplingOptions(
        temperature=sampling.temperature if sampling.HasField("temperature") else None,
        top_k=sampling.top_k,
        top_p=sampling.top_p if sampling.HasField("top_p") else None,
        seed=sampling.seed if sampling.HasField("seed") else None,
        max_tokens=sampling.max_tokens if sampling.HasField("max_tokens") else None,
        stop=tuple(sampling.stop),
    )


def usage(stream: TextStream) -> sampling_pb2.Usage:
    return sampling_pb2.Usage(prompt_tokens=stream.prompt_tokens, completion_tokens=stream.completion_tokens)


async def abort(context: grpc.aio.ServicerContext, error: AntiphonError, request_id: str = "-") -> NoReturn:
    log.info("request %s failed: %s %s", request_id, error.code.upper(), error)
    await context.abort(status_code(error), str(error))
    raise RuntimeError("context.abort returned")  # pragma: no cover (abort always raises)


async def pieces(stream: TextStream, context: grpc.aio.ServicerContext, request_id: str) -> AsyncGenerator[str, None]:
    """The stream's text; an engine error aborts the call, and leaving early (the client went away) cancels."""
    try:
        async for text in stream:
            yield text
    except AntiphonError as exc:
        await abort(context, exc, request_id)
    finally:
        stream.cancel()


class GenerationService(generation_pb2_grpc.GenerationServicer):
    def __init__(self, models: ModelRegistry) -> None:
        self.models = models
        self._ids = itertools.count(1)

    async def ListModels(self, request: models_pb2.ListModelsRequest, context: Any) -> models_pb2.ListModelsResponse:
        infos = [
            models_pb2.ModelInfo(
                id=info.id,
                kind=models_pb2.MODEL_KIND_TEXT,
                is_default=info.id == self.models.default_text,
                description=info.description,
                personas=info.personas,
                default_persona=info.default_persona,
                max_prompt_chars=info.max_prompt_chars,
                max_tokens=info.max_tokens,
            )
            for info in self.models.infos()
        ]
        return models_pb2.ListModelsResponse(models=infos)

    async def GenerateText(
        self, request: text_pb2.GenerateTextRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[text_pb2.TextChunk]:
        request_id = f"grpc-{next(self._ids)}"
        try:
            service = self.models.text_model(request.model)
            stream = service.generate(TextRequest(request.prompt, sampling_options(request.sampling), request_id))
        except AntiphonError as exc:
            await abort(context, exc, request_id)
        async with aclosing(pieces(stream, context, request_id)) as texts:  # closed at once if the client leaves
            async for text in texts:
                yield text_pb2.TextChunk(text=text)
        yield text_pb2.TextChunk(
            finish_reason=FINISH_REASONS[stream.finish_reason or FINISH_CANCELLED], usage=usage(stream)
        )

    async def Chat(
        self, request: chat_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.ChatEvent]:
        request_id = f"grpc-{next(self._ids)}"
        try:
            if request.speak:
                raise Unimplemented(f"speak: {NO_AUDIO}")
            service = self.models.text_model(request.model)
            turn = ChatTurn(
                session_id=request.session_id,
                message=request.message,
                persona=request.persona,
                speaker=request.speaker,
                sampling=sampling_options(request.sampling),
                request_id=request_id,
            )
            stream = service.chat(turn)
        except AntiphonError as exc:
            await abort(context, exc, request_id)
        async with aclosing(pieces(stream, context, request_id)) as texts:  # closed at once if the client leaves
            async for text in texts:
                yield chat_pb2.ChatEvent(text=text)
        done = chat_pb2.ChatDone(
            finish_reason=FINISH_REASONS[stream.finish_reason or FINISH_CANCELLED],
            usage=usage(stream),
            turns=stream.turns,
        )
        yield chat_pb2.ChatEvent(done=done)

    async def GenerateAudio(
        self, request: audio_pb2.GenerateAudioRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[audio_pb2.AudioChunk]:
        await abort(context, Unimplemented(f"GenerateAudio: {NO_AUDIO}"))
        yield audio_pb2.AudioChunk()  # pragma: no cover (makes this an async generator)

    async def Classify(
        self, request: classify_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> classify_pb2.ClassifyResponse:
        await abort(context, Unimplemented(f"Classify: {NO_CLASSIFIER}"))


def add_services(server: grpc.aio.Server, models: ModelRegistry) -> health_aio.HealthServicer:
    """Add the Generation service, health checking and reflection to ``server``; returns the health servicer."""
    generation_pb2_grpc.add_GenerationServicer_to_server(GenerationService(models), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    return health


async def mark_serving(health: health_aio.HealthServicer) -> None:
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
