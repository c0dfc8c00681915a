"""One small client per transport with the same interface, so transport tests run over both."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import openai
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

ENCODINGS = {"pcm16": audio_pb2.AUDIO_ENCODING_PCM16_LE, "mulaw": audio_pb2.AUDIO_ENCODING_MULAW8}
ENCODING_NAMES = {v: k for k, v in ENCODINGS.items()}
IMAGE_ENCODINGS = {"png": image_pb2.IMAGE_ENCODING_PNG, "raw8": image_pb2.IMAGE_ENCODING_RAW8}
IMAGE_ENCODING_NAMES = {v: k for k, v in IMAGE_ENCODINGS.items()}
FINISH = {
    sampling_pb2.FINISH_REASON_STOP: "stop",
    sampling_pb2.FINISH_REASON_LENGTH: "length",
    sampling_pb2.FINISH_REASON_CANCELLED: "cancelled",
}


def sdk(server: Any) -> openai.AsyncOpenAI:
    """The official OpenAI SDK's client of ``server``'s HTTP API (no key, no retries)."""
    return openai.AsyncOpenAI(base_url=f"http://{server.http_address}/v1", api_key="unused", max_retries=0)


class Failure(Exception):
    """A request's error, as (gRPC status name, message) on either transport."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class Result:
    pieces: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    turns: int = 0
    audio_format: dict[str, Any] | None = None
    audio: bytearray = field(default_factory=bytearray)
    audio_chunks: list[int] = field(default_factory=list)  # bytes per chunk, in order
    events: list[str] = field(default_factory=list)  # "text" / "audio", in arrival order
    images: list[dict[str, Any]] = field(default_factory=list)  # image frames: step, final, sizes, encoding, data

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class Stream:
    """A request in flight: iterate for text pieces; ``result`` fills as it goes; ``cancel`` asks the server to stop."""

    def __init__(self, pieces: AsyncIterator[Any], result: Result, cancel: Any) -> None:
        self._pieces = pieces
        self.result = result
        self._cancel = cancel

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._pieces

    async def cancel(self) -> None:
        await self._cancel()

    async def finish(self) -> Result:
        async for _ in self._pieces:
            pass
        return self.result


class GrpcClient:
    name = "grpc"

    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = generation_pb2_grpc.GenerationStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    def generate(self, prompt: str, model: str = "", **sampling: Any) -> Stream:
        request = text_pb2.GenerateTextRequest(model=model, prompt=prompt, sampling=sampling_pb2.Sampling(**sampling))
        return self._stream(self.stub.GenerateText(request))

    def chat(self, session_id: str, message: str, **fields: Any) -> Stream:
        sampling = sampling_pb2.Sampling(**fields.pop("sampling", {}))
        return self._stream(
            self.stub.Chat(chat_pb2.ChatRequest(session_id=session_id, message=message, sampling=sampling, **fields))
        )

    def chat_speak(self, session_id: str, message: str, encoding: str = "pcm16", **fields: Any) -> Stream:
        return self.chat(session_id, message, speak=True, encoding=ENCODINGS[encoding], **fields)

    def generate_audio(self, text: str, encoding: str = "pcm16", **fields: Any) -> Stream:
        sampling = sampling_pb2.Sampling(**fields.pop("sampling", {}))
        request = audio_pb2.GenerateAudioRequest(text=text, encoding=ENCODINGS[encoding], sampling=sampling, **fields)
        result = Result()
        call = self.stub.GenerateAudio(request)

        async def pieces() -> AsyncIterator[bytes]:
            try:
                async for chunk in call:
                    self._audio(chunk, result)
                    if chunk.finish_reason:
                        result.finish_reason = FINISH[chunk.finish_reason]
                        result.usage = {"text_chars": chunk.usage.text_chars, "samples": chunk.usage.samples}
                    if chunk.data:
                        yield chunk.data
            except grpc.aio.AioRpcError as exc:
                raise Failure(exc.code().name, exc.details() or "") from None

        async def cancel() -> None:
            call.cancel()

        return Stream(pieces(), result, cancel)

    def generate_image(self, model: str = "", encoding: str = "png", **fields: Any) -> Stream:
        """``fields``: GenerateImageRequest's; ``dream`` as a dict; base_image as bytes."""
        dream = image_pb2.DreamSettings(**fields.pop("dream", {}))
        request = image_pb2.GenerateImageRequest(model=model, encoding=IMAGE_ENCODINGS[encoding], dream=dream, **fields)
        result = Result()
        call = self.stub.GenerateImage(request)

        async def pieces() -> AsyncIterator[dict[str, Any]]:
            try:
                async for frame in call:
                    if frame.data:
                        image = {
                            "step": frame.step,
                            "final": frame.final,
                            "width": frame.width,
                            "height": frame.height,
                            "channels": frame.channels,
                            "encoding": IMAGE_ENCODING_NAMES[frame.encoding],
                            "data": frame.data,
                        }
                        result.images.append(image)
                        yield image
                    if frame.finish_reason:
                        result.finish_reason = FINISH[frame.finish_reason]
                        result.usage = {"steps": frame.usage.steps, "frames": frame.usage.frames}
            except grpc.aio.AioRpcError as exc:
                raise Failure(exc.code().name, exc.details() or "") from None

        async def cancel() -> None:
            call.cancel()

        return Stream(pieces(), result, cancel)

    async def list_image_models(self) -> list[dict[str, Any]]:
        response = await self.stub.ListModels(models_pb2.ListModelsRequest())
        keys = ("id", "is_default", "family", "image_size", "labels", "max_steps", "max_walk_frames", "layers")
        return [
            {k: list(v) if not isinstance(v := getattr(m, k), str | int | bool) else v for k in keys}
            for m in response.models
            if m.kind == models_pb2.MODEL_KIND_IMAGE
        ]

    @staticmethod
    def _audio(chunk: audio_pb2.AudioChunk, result: Result) -> None:
        if chunk.HasField("format"):
            assert result.audio_format is None, "the format comes once, first"
            fmt = chunk.format
            result.audio_format = {
                "sample_rate": fmt.sample_rate,
                "encoding": ENCODING_NAMES[fmt.encoding],
                "channels": fmt.channels,
            }
        if chunk.data:
            assert result.audio_format is not None, "audio before its format"
            result.audio += chunk.data
            result.audio_chunks.append(len(chunk.data))
            result.events.append("audio")

    async def list_models(self) -> list[dict[str, Any]]:
        response = await self.stub.ListModels(models_pb2.ListModelsRequest())
        return [{"id": m.id, "is_default": m.is_default, "personas": list(m.personas)} for m in response.models]

    async def classify(self, model: str, **fields: Any) -> list[tuple[str, float]]:
        """``fields``: text=, audio= (bytes), audio_sample_rate=, tensor=(shape, values), top_k=."""
        if "tensor" in fields:
            shape, values = fields.pop("tensor")
            fields["tensor"] = classify_pb2.FloatTensor(shape=shape, values=values)
        try:
            response = await self.stub.Classify(classify_pb2.ClassifyRequest(model=model, **fields))
        except grpc.aio.AioRpcError as exc:
            raise Failure(exc.code().name, exc.details() or "") from None
        return [(item.label, item.probability) for item in response.labels]

    async def list_classifiers(self) -> list[dict[str, Any]]:
        response = await self.stub.ListModels(models_pb2.ListModelsRequest())
        return [
            {"id": m.id, "labels": list(m.labels), "input": m.input, "input_shape": list(m.input_shape)}
            for m in response.models
            if m.kind == models_pb2.MODEL_KIND_CLASSIFIER
        ]

    async def list_audio_models(self) -> list[dict[str, Any]]:
        response = await self.stub.ListModels(models_pb2.ListModelsRequest())
        return [
            {"id": m.id, "is_default": m.is_default, "voices": list(m.voices), "sample_rate": m.sample_rate}
            for m in response.models
            if m.kind == models_pb2.MODEL_KIND_AUDIO
        ]

    def _stream(self, call: Any) -> Stream:
        result = Result()

        async def pieces() -> AsyncIterator[str]:
            try:
                async for message in call:
                    if isinstance(message, chat_pb2.ChatEvent) and message.HasField("audio"):
                        self._audio(message.audio, result)
                        continue
                    done = message.done if isinstance(message, chat_pb2.ChatEvent) else message
                    text = message.text
                    if text:
                        result.pieces.append(text)
                        result.events.append("text")
                        yield text
                    elif done.finish_reason:
                        result.finish_reason = FINISH[done.finish_reason]
                        usage = done.usage
                        result.usage = {
                            "prompt_tokens": usage.prompt_tokens,
                            "completion_tokens": usage.completion_tokens,
                        }
                        result.turns = getattr(done, "turns", 0)
            except grpc.aio.AioRpcError as exc:
                raise Failure(exc.code().name, exc.details() or "") from None

        async def cancel() -> None:
            call.cancel()

        return Stream(pieces(), result, cancel)


class WebSocketClient:
    name = "ws"

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.ids = itertools.count(1)
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, address: str) -> WebSocketClient:
        return cls(await connect(f"ws://{address}/"))

    async def close(self) -> None:
        await self.connection.close()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)

    async def _read(self) -> None:
        async for raw in self.connection:
            frame: dict[str, Any]
            if isinstance(raw, bytes):
                (n,) = struct.unpack(">H", raw[:2])
                frame = {"type": "binary", "id": raw[2 : 2 + n].decode("utf-8"), "data": raw[2 + n :]}
            else:
                frame = json.loads(raw)
            self.queues.setdefault(frame["id"], asyncio.Queue()).put_nowait(frame)

    async def request(self, message: dict[str, Any]) -> asyncio.Queue[dict[str, Any]]:
        queue = self.queues.setdefault(message["id"], asyncio.Queue())
        await self.connection.send(json.dumps(message))
        return queue

    def generate(self, prompt: str, model: str = "", **sampling: Any) -> Stream:
        return self._stream({"type": "generate", "model": model, "prompt": prompt, "sampling": sampling})

    def chat(self, session_id: str, message: str, **fields: Any) -> Stream:
        return self._stream({"type": "chat", "session_id": session_id, "message": message, **fields})

    def chat_speak(self, session_id: str, message: str, encoding: str = "pcm16", **fields: Any) -> Stream:
        return self.chat(session_id, message, speak=True, encoding=encoding, **fields)

    def generate_audio(self, text: str, encoding: str = "pcm16", **fields: Any) -> Stream:
        return self._stream({"type": "generate_audio", "text": text, "encoding": encoding, **fields})

    def generate_image(self, model: str = "", encoding: str = "png", **fields: Any) -> Stream:
        if "base_image" in fields:
            fields["base_image"] = base64.b64encode(fields["base_image"]).decode("ascii")
        return self._stream({"type": "generate_image", "model": model, "encoding": encoding, **fields})

    async def list_image_models(self) -> list[dict[str, Any]]:
        queue = await self.request({"type": "list_models", "id": f"m{next(self.ids)}"})
        frame = await queue.get()
        keys = ("id", "is_default", "family", "image_size", "labels", "max_steps", "max_walk_frames", "layers")
        return [{k: m[k] for k in keys} for m in frame["models"] if m["kind"] == "image"]

    async def list_models(self) -> list[dict[str, Any]]:
        queue = await self.request({"type": "list_models", "id": f"m{next(self.ids)}"})
        frame = await queue.get()
        return [{k: m[k] for k in ("id", "is_default", "personas")} for m in frame["models"] if m["kind"] == "text"]

    async def classify(self, model: str, **fields: Any) -> list[tuple[str, float]]:
        if "audio" in fields:
            fields["audio"] = base64.b64encode(fields["audio"]).decode("ascii")
        if "tensor" in fields:
            shape, values = fields.pop("tensor")
            fields["tensor"] = {"shape": list(shape), "values": [float(v) for v in values]}
        queue = await self.request({"type": "classify", "id": f"k{next(self.ids)}", "model": model, **fields})
        frame = await queue.get()
        if frame["type"] == "error":
            raise Failure(frame["code"], frame["message"])
        return [(item["label"], item["probability"]) for item in frame["labels"]]

    async def list_classifiers(self) -> list[dict[str, Any]]:
        queue = await self.request({"type": "list_models", "id": f"m{next(self.ids)}"})
        frame = await queue.get()
        keys = ("id", "labels", "input", "input_shape")
        return [{k: m[k] for k in keys} for m in frame["models"] if m["kind"] == "classifier"]

    async def list_audio_models(self) -> list[dict[str, Any]]:
        queue = await self.request({"type": "list_models", "id": f"m{next(self.ids)}"})
        frame = await queue.get()
        keys = ("id", "is_default", "voices", "sample_rate")
        return [{k: m[k] for k in keys} for m in frame["models"] if m["kind"] == "audio"]

    def _stream(self, message: dict[str, Any]) -> Stream:
        request_id = f"r{next(self.ids)}"
        result = Result()

        async def pieces() -> AsyncIterator[Any]:
            queue = await self.request({**message, "id": request_id})
            while True:
                frame = await queue.get()
                if frame["type"] == "token":
                    result.pieces.append(frame["text"])
                    result.events.append("text")
                    yield frame["text"]
                elif frame["type"] == "audio":
                    assert result.audio_format is None, "the format comes once, first"
                    result.audio_format = {k: frame[k] for k in ("sample_rate", "encoding", "channels")}
                elif frame["type"] == "image":
                    header = {k: v for k, v in frame.items() if k not in ("type", "id")}
                    binary = await queue.get()  # the frame's bytes follow its header at once
                    assert binary["type"] == "binary", binary
                    image = {**header, "data": binary["data"]}
                    result.images.append(image)
                    yield image
                elif frame["type"] == "binary":
                    assert result.audio_format is not None, "audio before its format"
                    result.audio += frame["data"]
                    result.audio_chunks.append(len(frame["data"]))
                    result.events.append("audio")
                    if message["type"] == "generate_audio":
                        yield frame["data"]
                elif frame["type"] == "done":
                    result.finish_reason = frame["finish_reason"]
                    result.usage = frame["usage"]
                    result.turns = frame.get("turns", 0)
                    return
                else:
                    raise Failure(frame["code"], frame["message"])

        async def cancel() -> None:
            await self.connection.send(json.dumps({"type": "cancel", "id": request_id}))

        return Stream(pieces(), result, cancel)
