"""The gRPC transport: a thin ``antiphon.v1.Generation`` servicer over the engines, plus health and reflection.

Server-streaming RPCs are async generators, whose messages :func:`write` sends. A client that cancels or
disconnects, or whose deadline passes, cancels the handler's task; the ``finally`` blocks then cancel the engine
stream, which leaves the batch at the next step. With API keys configured,
:class:`RequireKey` answers every call but health checks ``UNAUTHENTICATED`` unless its ``authorization`` metadata
is ``Bearer KEY`` with an accepted key, sent once. Reflection also finds a method by its full name. The server's
options (message size, keepalive) are ``server.transport.grpc_options``'s; docs/grpc.md is the client's view.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, NoReturn, TypeVar

import grpc
import numpy as np
from antiphon.v1 import (
    audio_pb2,
    chat_pb2,
    classify_pb2,
    generation_pb2,
    generation_pb2_grpc,
    image_pb2,
    models_pb2,
    sampling_pb2,
    text_pb2,
)
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from server.engine.registry import ModelRegistry
from server.engine.requests import (
    AudioModelInfo,
    AudioRequest,
    ChatTurn,
    ClassifyInput,
    DreamOptions,
    ImageRequest,
    SamplingOptions,
    TextRequest,
)
from server.engine.speech import SpokenTurn, speak_turn, speech_options
from server.engine.streams import FINISH_CANCELLED, FINISH_LENGTH, FINISH_STOP, AudioStream, ImageStream, TextStream
from server.errors import AntiphonError, InvalidArgument
from server.metrics import Recorder
from server.transport import auth, request_ids
from server.transport.grpc_options import quiet_client_gone
from server.transport.pictures import PNG, RAW8, encode_picture
from server.transport.wire import MULAW, PCM16, Chunker, encode_codes

log = logging.getLogger(__name__)

TRANSPORT = "grpc"  # the metrics' transport label
SERVICE_NAME = generation_pb2.DESCRIPTOR.services_by_name["Generation"].full_name
FINISH_REASONS = {
    FINISH_STOP: sampling_pb2.FINISH_REASON_STOP,
    FINISH_LENGTH: sampling_pb2.FINISH_REASON_LENGTH,
    FINISH_CANCELLED: sampling_pb2.FINISH_REASON_CANCELLED,
}
ENCODINGS = {
    audio_pb2.AUDIO_ENCODING_UNSPECIFIED: PCM16,
    audio_pb2.AUDIO_ENCODING_PCM16_LE: PCM16,
    audio_pb2.AUDIO_ENCODING_MULAW8: MULAW,
}
MODEL_KINDS = {
    "text": models_pb2.MODEL_KIND_TEXT,
    "audio": models_pb2.MODEL_KIND_AUDIO,
    "classifier": models_pb2.MODEL_KIND_CLASSIFIER,
    "image": models_pb2.MODEL_KIND_IMAGE,
}
IMAGE_ENCODINGS = {
    image_pb2.IMAGE_ENCODING_UNSPECIFIED: PNG,
    image_pb2.IMAGE_ENCODING_PNG: PNG,
    image_pb2.IMAGE_ENCODING_RAW8: RAW8,
}
WIRE_IMAGE_ENCODINGS = {PNG: image_pb2.IMAGE_ENCODING_PNG, RAW8: image_pb2.IMAGE_ENCODING_RAW8}
WIRE_ENCODINGS = {PCM16: audio_pb2.AUDIO_ENCODING_PCM16_LE, MULAW: audio_pb2.AUDIO_ENCODING_MULAW8}
OPEN_SERVICES = ("/grpc.health.v1.Health/",)  # load balancers and orchestrators probe health without a key
CLOSED_CALL_WAIT_S = 5.0  # how long a failed write waits for grpc to cancel its closed call (it takes microseconds)


def status_code(error: AntiphonError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.code.upper(), grpc.StatusCode.INTERNAL)


def sampling_options(sampling: sampling_pb2.Sampling) -> SamplingOptions:
    """Unset optional fields become None (the server's default)."""
    return SamplingOptions(
        temperature=sampling.temperature if sampling.HasField("temperature") else None,
        top_k=sampling.top_k or None,  # proto3 has no presence for it: 0 is unset (0 disables top-k anyway)
        top_p=sampling.top_p if sampling.HasField("top_p") else None,
        seed=sampling.seed if sampling.HasField("seed") else None,
        max_tokens=sampling.max_tokens if sampling.HasField("max_tokens") else None,
        stop=tuple(sampling.stop),
    )


def audio_encoding(value: int, name: str = "encoding") -> str:
    if value not in ENCODINGS:
        raise InvalidArgument(name, f"unknown AudioEncoding {value}")
    return ENCODINGS[value]


def audio_format(info: AudioModelInfo, encoding: str) -> audio_pb2.AudioFormat:
    return audio_pb2.AudioFormat(sample_rate=info.sample_rate, encoding=WIRE_ENCODINGS[encoding], channels=1)


def usage(stream: TextStream) -> sampling_pb2.Usage:
    return sampling_pb2.Usage(prompt_tokens=stream.prompt_tokens, completion_tokens=stream.completion_tokens)


async def abort(
    context: grpc.aio.ServicerContext, error: AntiphonError, request_id: str, metrics: Recorder
) -> NoReturn:
    log.info("request %s failed: %s %s", request_id, error.code.upper(), error)
    code = status_code(error)
    metrics.error(TRANSPORT, code.name)
    await context.abort(code, str(error))
    raise RuntimeError("context.abort returned")  # pragma: no cover (abort always raises)


Piece = TypeVar("Piece")


async def pieces(
    stream: AsyncIterator[Piece], context: grpc.aio.ServicerContext, request_id: str, metrics: Recorder
) -> AsyncGenerator[Piece, None]:
    """The stream's pieces; an engine error aborts the call, and leaving early (the client went away) cancels."""
    try:
        async for piece in stream:
            yield piece
    except AntiphonError as exc:
        await abort(context, exc, request_id, metrics)
    finally:
        cancel = getattr(stream, "cancel", None)
        if cancel is not None:
            cancel()
        else:
            await stream.aclose()  # type: ignore[attr-defined]


class GenerationService(generation_pb2_grpc.GenerationServicer):
    def __init__(self, models: ModelRegistry, metrics: Recorder) -> None:
        self.models = models
        self.metrics = metrics

    @staticmethod
    async def _begin(context: grpc.aio.ServicerContext) -> str:
        """The call's name in the log (``grpc-<id>``): its ``x-request-id``, the client's own where it sent a plain
        one, else a fresh one, sent back at once as initial metadata, so a client that reports it finds the lines."""
        given = [value for name, value in context.invocation_metadata() or () if name == request_ids.HEADER]
        chosen = request_ids.request_id(given[0] if len(given) == 1 and isinstance(given[0], str) else None)
        await context.send_initial_metadata(((request_ids.HEADER, chosen),))
        return f"grpc-{chosen}"

    async def ListModels(self, request: models_pb2.ListModelsRequest, context: Any) -> models_pb2.ListModelsResponse:
        infos = [models_pb2.ModelInfo(**{**row, "kind": MODEL_KINDS[row["kind"]]}) for row in self.models.listing()]
        return models_pb2.ListModelsResponse(models=infos)

    async def GenerateText(
        self, request: text_pb2.GenerateTextRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[text_pb2.TextChunk]:
        request_id = await self._begin(context)
        try:
            service = self.models.text_model(request.model)
            text_request = TextRequest(request.prompt, sampling_options(request.sampling), request_id, TRANSPORT)
            stream = service.generate(text_request)
        except AntiphonError as exc:
            await abort(context, exc, request_id, self.metrics)
        # closed at once if the client leaves
        async with aclosing(pieces(stream, context, request_id, self.metrics)) as texts:
            async for text in texts:
                yield text_pb2.TextChunk(text=text)
        yield text_pb2.TextChunk(
            finish_reason=FINISH_REASONS[stream.finish_reason or FINISH_CANCELLED], usage=usage(stream)
        )

    async def Chat(
        self, request: chat_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chat_pb2.ChatEvent]:
        request_id = await self._begin(context)
        try:
            service = self.models.text_model(request.model)
            sampling = sampling_options(request.sampling)
            if request.speak:
                audio = self.models.audio_model("")
                speech = speech_options(request.voice, sampling, audio)
                encoding = audio_encoding(request.encoding)
            elif request.voice or request.encoding:
                raise InvalidArgument("voice" if request.voice else "encoding", "is only read with speak set")
            turn = ChatTurn(
                session_id=request.session_id,
                message=request.message,
                persona=request.persona,
                speaker=request.speaker,
                sampling=sampling,
                request_id=request_id,
                transport=TRANSPORT,
            )
            stream = service.chat(turn)
        except AntiphonError as exc:
            await abort(context, exc, request_id, self.metrics)
        if request.speak:
            spoken = SpokenTurn()
            first = True
            events = speak_turn(stream, audio, speech, spoken, request_id)
            async with aclosing(pieces(events, context, request_id, self.metrics)) as items:
                async for item in items:
                    if isinstance(item, str):
                        yield chat_pb2.ChatEvent(text=item)
                    else:
                        fmt = audio_format(audio.info, encoding) if first else None
                        first = False
                        chunk = audio_pb2.AudioChunk(format=fmt, data=encode_codes(item, encoding))
                        yield chat_pb2.ChatEvent(audio=chunk)
        else:
            # closed at once if the client leaves
            async with aclosing(pieces(stream, context, request_id, self.metrics)) as texts:
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
        request_id = await self._begin(context)
        try:
            service = self.models.audio_model(request.model)
            encoding = audio_encoding(request.encoding)
            audio_request = AudioRequest.with_sampling(
                request.text,
                sampling_options(request.sampling),
                voice=request.voice,
                max_seconds=request.max_seconds or None,  # proto3: 0 is unset, the model's limit
                chunk_samples=request.chunk_samples,
                request_id=request_id,
                transport=TRANSPORT,
            )
            stream: AudioStream = service.generate(audio_request)
            chunker = Chunker(audio_request.chunk_size(service.info))
        except AntiphonError as exc:
            await abort(context, exc, request_id, self.metrics)
        fmt: audio_pb2.AudioFormat | None = audio_format(service.info, encoding)
        # closed at once if the client leaves
        async with aclosing(pieces(stream, context, request_id, self.metrics)) as codes:
            async for piece in codes:
                for chunk in chunker.feed(piece):
                    yield audio_pb2.AudioChunk(format=fmt, data=encode_codes(chunk, encoding))
                    fmt = None
        yield audio_pb2.AudioChunk(
            format=fmt,
            data=encode_codes(chunker.flush(), encoding),
            finish_reason=FINISH_REASONS[stream.finish_reason or FINISH_CANCELLED],
            usage=audio_pb2.AudioUsage(text_chars=len(request.text), samples=stream.samples),
        )

    async def GenerateImage(
        self, request: image_pb2.GenerateImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[image_pb2.ImageFrame]:
        request_id = await self._begin(context)
        try:
            service = self.models.image_model(request.model)
            if request.encoding not in IMAGE_ENCODINGS:
                raise InvalidArgument("encoding", f"unknown ImageEncoding {request.encoding}")
            encoding = IMAGE_ENCODINGS[request.encoding]
            dream = request.dream
            image_request = ImageRequest(
                label=request.label,
                seed=request.seed if request.HasField("seed") else None,
                steps=request.steps,
                frame_every=request.frame_every,
                walk_to_seed=request.walk_to_seed if request.HasField("walk_to_seed") else None,
                walk_frames=request.walk_frames,
                base_image=request.base_image,
                dream=DreamOptions(dream.layer, dream.target, dream.octaves),
                request_id=request_id,
                transport=TRANSPORT,
            )
            stream: ImageStream = service.generate(image_request)
        except AntiphonError as exc:
            await abort(context, exc, request_id, self.metrics)
        wire = WIRE_IMAGE_ENCODINGS[encoding]
        final: image_pb2.ImageFrame | None = None
        # closed at once if the client leaves
        async with aclosing(pieces(stream, context, request_id, self.metrics)) as pictures:
            async for picture in pictures:
                height, width = picture.pixels.shape
                frame = image_pb2.ImageFrame(
                    step=picture.step, final=picture.final, width=width, height=height, channels=1, encoding=wire
                )
                frame.data = encode_picture(picture, encoding)
                if picture.final:
                    final = frame  # the engine ends the stream with its last frame: the finish follows at once
                else:
                    yield frame
        # The last frame carries the finish; a stream that ended without one (cancelled) sends the finish alone.
        end = final if final is not None else image_pb2.ImageFrame()
        end.finish_reason = FINISH_REASONS[stream.finish_reason or FINISH_CANCELLED]
        end.usage.CopyFrom(image_pb2.ImageUsage(steps=stream.steps, frames=stream.frames))
        yield end

    async def Classify(
        self, request: classify_pb2.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> classify_pb2.ClassifyResponse:
        request_id = await self._begin(context)
        try:
            service = self.models.classifier(request.model)
            which = request.WhichOneof("input")
            values = np.asarray(request.tensor.values, dtype=np.float32) if which == "tensor" else None
            item = ClassifyInput(
                text=request.text if which == "text" else None,
                audio=request.audio if which == "audio" else None,
                audio_sample_rate=request.audio_sample_rate,
                tensor_shape=tuple(request.tensor.shape),
                tensor_values=values,
                transport=TRANSPORT,
            )
            ranked = await service.classify(item, request.top_k)
        except AntiphonError as exc:
            await abort(context, exc, request_id, self.metrics)
        labels = [classify_pb2.LabelScore(label=label, probability=p) for label, p in ranked]
        return classify_pb2.ClassifyResponse(labels=labels)


class RequireKey(grpc.aio.ServerInterceptor):
    """Every call but a health check needs an accepted key in its ``authorization`` metadata (``Bearer KEY``);
    the others are aborted ``UNAUTHENTICATED`` before the servicer sees them, reflection included."""

    def __init__(self, keys: auth.ApiKeys) -> None:
        self.keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        # Every value, not the last: HTTP/2 lets a client send a header twice, and a second key (a proxy's, or a
        # credentials plugin's beside the call's own) must not decide by its place in the list (grpc-js refuses to
        # send two; grpc-go and the C core send both).
        values = [value for name, value in details.invocation_metadata or () if name == "authorization"]
        if len(values) > 1:
            reason: str | None = f"{len(values)} authorization values"
            message = f"authorization: sent {len(values)} times; send one, Bearer KEY"
        else:
            reason = self.keys.refusal(auth.bearer(values[0] if values else None))
            if reason is None:
                return handler
            message = auth.MESSAGES[reason]

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            code = grpc.StatusCode.UNAUTHENTICATED
            self.keys.refused(TRANSPORT, f"call {method}", context.peer(), str(reason), code.name)
            await context.abort(code, message)

        # The refusing handler has the refused one's shape, so the call fails with our status, not a protocol error.
        make = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        return make(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class Undecodable:
    """A request whose bytes are not a message of its type (a string field that is not UTF-8, a field of another
    schema's wire type): the client's mistake, which the servicer answers ``INVALID_ARGUMENT``. grpc would answer
    ``UNKNOWN`` and log a traceback for an exception raised while parsing."""

    def __init__(self, error: InvalidArgument) -> None:
        self.error = error


def lenient_parser(message_type: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            reason = str(exc).rpartition(": ")[2] or "not a message of its type"
            return Undecodable(
                InvalidArgument("request", f"is not a valid {message_type.DESCRIPTOR.full_name} ({reason})")
            )

    return parse


async def write(context: grpc.aio.ServicerContext, message: Any) -> None:
    """Send one message of a stream (the handlers write their own, rather than yield them to grpc).

    A call can end under a write that flow control holds: its deadline passes, the client cancels or its
    connection drops. The write then fails with grpc's ``InternalError`` a moment before grpc learns that the call
    closed and cancels the handler's task; had the error reached grpc first, grpc would log it at ERROR with a
    traceback, for what a client did. Waiting here for that cancel lets it end the call as any cancel does (the
    engine's stream cancelled, one INFO line); an error that no cancel follows is raised as it was."""
    try:
        await context.write(message)
    except grpc.aio.InternalError:
        await asyncio.sleep(CLOSED_CALL_WAIT_S)
        raise


def generation_handlers(servicer: GenerationService) -> dict[str, grpc.RpcMethodHandler]:
    """The Generation service's handlers, read from its descriptor as the generated code writes them, but with
    requests that fail to parse refused by name (:class:`Undecodable`)."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in generation_pb2.DESCRIPTOR.services_by_name["Generation"].methods:
        behavior = getattr(servicer, method.name)
        if method.server_streaming:

            async def stream(request: Any, context: grpc.aio.ServicerContext, behavior: Any = behavior) -> None:
                if isinstance(request, Undecodable):
                    await abort(context, request.error, "-", servicer.metrics)
                async with aclosing(behavior(request, context)) as items:  # closed with this one
                    async for item in items:
                        await write(context, item)

            make, wrapped = grpc.unary_stream_rpc_method_handler, stream
        else:

            async def unary(request: Any, context: grpc.aio.ServicerContext, behavior: Any = behavior) -> Any:
                if isinstance(request, Undecodable):
                    await abort(context, request.error, "-", servicer.metrics)
                return await behavior(request, context)

            make, wrapped = grpc.unary_unary_rpc_method_handler, unary
        handlers[method.name] = make(
            wrapped,
            request_deserializer=lenient_parser(message_factory.GetMessageClass(method.input_type)),
            response_serializer=message_factory.GetMessageClass(method.output_type).SerializeToString,
        )
    return handlers


class MethodSymbols:
    """A descriptor pool that also finds the file of a method by its full name, as reflection clients ask for it
    (``grpcurl HOST describe antiphon.v1.Generation.GenerateText``); protobuf's own pool finds services, messages,
    fields and enums, but not methods, and reflection would answer NOT_FOUND."""

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    def FindFileContainingSymbol(self, full_name: str) -> Any:  # the pool's own name, as reflection calls it
        try:
            return self._pool.FindFileContainingSymbol(full_name)
        except KeyError:
            service_name, _, method = full_name.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                raise KeyError(full_name) from None
            if method not in service.methods_by_name:
                raise KeyError(full_name) from None
            return service.file


def add_services(
    server: grpc.aio.Server, models: ModelRegistry, metrics: Recorder | None = None
) -> health_aio.HealthServicer:
    """Add the Generation service, health checking and reflection to ``server``; returns the health servicer."""
    quiet_client_gone()
    handlers = generation_handlers(GenerationService(models, metrics or Recorder()))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server, pool=MethodSymbols(descriptor_pool.Default()))
    return health


async def mark_serving(health: health_aio.HealthServicer) -> None:
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
