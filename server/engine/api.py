"""What the transports see of the engines: requests, streams and the model registry. No torch here.

A transport turns a wire request into a :class:`TextRequest` or :class:`ChatTurn`, asks the
:class:`ModelRegistry` for the model's :class:`TextService`, submits, and iterates the returned
:class:`TextStream`. Leaving the iteration early (the client went away) must end in ``stream.cancel()``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, Self, TypeVar

import numpy as np

from server.errors import NotFound, Unimplemented

Piece = TypeVar("Piece", str, np.ndarray)

FINISH_STOP = "stop"  # a stop sequence, or the end of the persona's turn in a chat
FINISH_LENGTH = "length"  # max_tokens reached
FINISH_CANCELLED = "cancelled"  # cancelled by the client or by the server's shutdown


@dataclass(frozen=True)
class SamplingOptions:
    """Sampling knobs as a client sent them; None takes the server's default."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class TextRequest:
    prompt: str
    sampling: SamplingOptions = SamplingOptions()
    request_id: str = ""  # for the log line


@dataclass(frozen=True)
class ChatTurn:
    session_id: str
    message: str
    persona: str = ""  # empty: the model's default persona
    speaker: str = ""  # empty: the server's default name for the user
    sampling: SamplingOptions = SamplingOptions()
    request_id: str = ""


@dataclass(frozen=True)
class AudioRequest:
    text: str  # spoken through espeak-ng's rendering, which conditions the WaveNet
    voice: str = ""  # empty: the model's default voice
    max_seconds: float | None = None  # None: the server's limit
    temperature: float | None = None  # None: the model's default; 0 picks the most likely sample
    seed: int | None = None  # same seed, same samples, alone or batched
    request_id: str = ""


@dataclass(frozen=True)
class AudioModelInfo:
    id: str
    description: str
    sample_rate: int
    voices: tuple[str, ...]
    default_voice: str
    max_text_chars: int
    max_seconds: float
    kind: str = "audio"


AUDIO, TEXT, TENSOR = "audio", "text", "tensor"  # what a classifier takes


@dataclass(frozen=True)
class ClassifierInfo:
    id: str
    input: str  # AUDIO, TEXT or TENSOR
    labels: tuple[str, ...]
    description: str
    input_shape: tuple[int, ...] = ()  # TENSOR inputs
    sample_rate: int = 0  # AUDIO inputs


@dataclass(frozen=True)
class ClassifyInput:
    text: str | None = None
    audio: bytes | None = None
    audio_sample_rate: int = 0
    tensor_shape: tuple[int, ...] = ()
    tensor_values: np.ndarray | None = None  # float32, row-major

    @property
    def kind(self) -> str | None:
        if self.text is not None:
            return TEXT
        if self.audio is not None:
            return AUDIO
        if self.tensor_values is not None:
            return TENSOR
        return None


@dataclass(frozen=True)
class ModelInfo:
    id: str
    kind: str  # "text"
    description: str
    personas: tuple[str, ...]
    default_persona: str
    max_prompt_chars: int
    max_tokens: int


class _BoundedStream(Generic[Piece]):
    """One request's output, read by ``async for``; afterwards ``finish_reason`` is set.

    The buffer is bounded: the engine stops stepping a stream that holds ``capacity`` unread units and resumes
    it once the consumer reads, so a slow consumer costs a paused slot, not memory. One read returns every
    piece waiting, joined.
    """

    def __init__(self, capacity: int, wake: Callable[[], None], request_id: str = "") -> None:
        self.capacity = capacity
        self.request_id = request_id
        self.finish_reason: str | None = None
        self.created = time.monotonic()
        self.first_token_at: float | None = None
        self._pieces: deque[Piece] = deque()
        self._buffered = 0
        self._error: BaseException | None = None
        self._readable = asyncio.Event()
        self._wake = wake
        self._cancel_requested = False

    def _units(self, piece: Piece) -> int:
        raise NotImplementedError

    def _join(self, pieces: deque[Piece]) -> Piece:
        raise NotImplementedError

    # -- engine side -------------------------------------------------------
    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self._error is not None

    def has_room(self) -> bool:
        return self._buffered < self.capacity

    def room(self) -> int:
        """Units the stream may still take before it pauses."""
        return max(0, self.capacity - self._buffered)

    def buffered(self) -> int:
        return self._buffered

    def push(self, piece: Piece) -> None:
        units = self._units(piece)
        if units:
            self._pieces.append(piece)
            self._buffered += units
            self._readable.set()

    def finish(self, reason: str) -> None:
        if not self.done:
            self.finish_reason = reason
            self._readable.set()

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self._error = error
            self._readable.set()

    # -- consumer side -----------------------------------------------------
    def cancel(self) -> None:
        """Ask the engine to drop this stream at its next step. Idempotent; a no-op once done."""
        if not self.done and not self._cancel_requested:
            self._cancel_requested = True
            self._wake()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Piece:
        while not self._pieces:
            if self._error is not None:
                raise self._error
            if self.finish_reason is not None:
                raise StopAsyncIteration
            # Clearing and waiting happen with no await between the check and the clear, so a push cannot be lost.
            self._readable.clear()
            await self._readable.wait()
        was_full = self._buffered >= self.capacity
        piece = self._join(self._pieces)
        self._pieces.clear()
        self._buffered = 0
        if was_full:
            self._wake()  # the engine paused this stream; it may step it again
        return piece


class TextStream(_BoundedStream[str]):
    """A text request's output: ``async for text in stream`` yields every piece in order; afterwards
    ``finish_reason`` and the token counts are set. ``capacity`` counts unread characters (one per token)."""

    def __init__(self, capacity: int, wake: Callable[[], None], request_id: str = "") -> None:
        super().__init__(capacity, wake, request_id)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.turns = 0  # chat: the session's turn count after this turn

    def _units(self, piece: str) -> int:
        return len(piece)

    def _join(self, pieces: deque[str]) -> str:
        return "".join(pieces)


class AudioStream(_BoundedStream[np.ndarray]):
    """An audio request's output: ``async for codes in stream`` yields uint8 arrays of 8-bit mu-law codes (mu=255,
    the WaveNet's own output) in order. ``capacity`` counts unread samples;
    ``samples`` counts every sample pushed."""

    def __init__(self, capacity: int, wake: Callable[[], None], request_id: str = "", sample_rate: int = 16_000):
        super().__init__(capacity, wake, request_id)
        self.sample_rate = sample_rate
        self.samples = 0

    def _units(self, piece: np.ndarray) -> int:
        return int(piece.size)

    def push(self, piece: np.ndarray) -> None:
        self.samples += int(piece.size)
        super().push(piece)

    def _join(self, pieces: deque[np.ndarray]) -> np.ndarray:
        return pieces[0] if len(pieces) == 1 else np.concatenate(list(pieces))


class TextService(Protocol):
    """A loaded text model, as the transports use it (implemented by the engine)."""

    @property
    def info(self) -> ModelInfo: ...

    def generate(self, request: TextRequest) -> TextStream: ...

    def chat(self, turn: ChatTurn) -> TextStream: ...


class AudioService(Protocol):
    """A loaded audio model, as the transports use it (implemented by the audio engine)."""

    @property
    def info(self) -> AudioModelInfo: ...

    def generate(self, request: AudioRequest) -> AudioStream: ...


class ClassifierService(Protocol):
    """A loaded classifier (server/engine/classify.py): (label, probability) pairs, most probable first."""

    @property
    def info(self) -> ClassifierInfo: ...

    async def classify(self, request: ClassifyInput, top_k: int = 0) -> list[tuple[str, float]]: ...


@dataclass
class ModelRegistry:
    """The models this process serves, by id; the first of each kind is its default."""

    text: dict[str, TextService] = field(default_factory=dict)
    default_text: str = ""
    audio: dict[str, AudioService] = field(default_factory=dict)
    default_audio: str = ""
    classifiers: dict[str, ClassifierService] = field(default_factory=dict)

    def add_classifier(self, service: ClassifierService) -> None:
        self.classifiers[service.info.id] = service

    def classifier(self, name: str) -> ClassifierService:
        if not self.classifiers:
            raise Unimplemented("no classifier is served here (serve them with --classifiers)")
        found = self.classifiers.get(name)
        if found is None:
            served = ", ".join(sorted(self.classifiers))
            raise NotFound(f"model: {name!r} is not a classifier served here (classifiers: {served})")
        return found

    def add_audio(self, service: AudioService) -> None:
        self.audio[service.info.id] = service
        self.default_audio = self.default_audio or service.info.id

    def audio_model(self, name: str) -> AudioService:
        """The audio model ``name`` (empty: the default audio model)."""
        if not self.audio:
            raise Unimplemented("no audio model is served here (serve one with --audio-checkpoint)")
        key = name or self.default_audio
        service = self.audio.get(key)
        if service is None:
            served = ", ".join(sorted(self.audio)) or "none"
            raise NotFound(f"model: {name!r} is not served here (audio models: {served})")
        return service

    def add_text(self, service: TextService) -> None:
        self.text[service.info.id] = service
        self.default_text = self.default_text or service.info.id

    def text_model(self, name: str) -> TextService:
        """The model ``name`` (empty: the default text model)."""
        key = name or self.default_text
        service = self.text.get(key)
        if service is None:
            served = ", ".join(sorted(self.text)) or "none"
            raise NotFound(f"model: {name!r} is not served here (text models: {served})")
        return service

    def infos(self) -> list[ModelInfo]:
        return [s.info for s in self.text.values()]

    def audio_infos(self) -> list[AudioModelInfo]:
        return [s.info for s in self.audio.values()]
