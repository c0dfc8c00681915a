"""What the transports see of the engines: one protocol per kind of model, and the registry of loaded models by id.
No torch here.

A transport decodes a wire request into a request type (``server.engine.requests``), asks the :class:`ModelRegistry`
for the model's service, submits, and iterates the returned stream (``server.engine.streams``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar

from server.engine.requests import (
    AudioModelInfo,
    AudioRequest,
    ChatTurn,
    ClassifierInfo,
    ClassifyInput,
    Conversation,
    ImageModelInfo,
    ImageRequest,
    TextModelInfo,
    TextRequest,
)
from server.engine.streams import AudioStream, ImageStream, TextStream
from server.errors import NotFound, Unimplemented


class TextService(Protocol):
    """A loaded text model, as the transports use it (implemented by the engine)."""

    @property
    def info(self) -> TextModelInfo: ...

    def generate(self, request: TextRequest) -> TextStream: ...

    def chat(self, turn: ChatTurn) -> TextStream: ...

    def converse(self, conversation: Conversation) -> TextStream: ...


class AudioService(Protocol):
    """A loaded audio model, as the transports use it (implemented by the audio engine)."""

    @property
    def info(self) -> AudioModelInfo: ...

    def generate(self, request: AudioRequest) -> AudioStream: ...


class ImageService(Protocol):
    """A loaded image model, as the transports use it (implemented by the image engine)."""

    @property
    def info(self) -> ImageModelInfo: ...

    def generate(self, request: ImageRequest) -> ImageStream: ...


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
    images: dict[str, ImageService] = field(default_factory=dict)
    default_image: str = ""

    def add_text(self, service: TextService) -> None:
        self.text[service.info.id] = service
        self.default_text = self.default_text or service.info.id

    def add_audio(self, service: AudioService) -> None:
        self.audio[service.info.id] = service
        self.default_audio = self.default_audio or service.info.id

    def add_classifier(self, service: ClassifierService) -> None:
        self.classifiers[service.info.id] = service

    def add_image(self, service: ImageService) -> None:
        self.images[service.info.id] = service
        self.default_image = self.default_image or service.info.id

    def text_model(self, name: str) -> TextService:
        """The model ``name`` (empty: the default text model)."""
        return _lookup(self.text, name or self.default_text, name, "text models")

    def audio_model(self, name: str) -> AudioService:
        """The audio model ``name`` (empty: the default audio model)."""
        if not self.audio:
            raise Unimplemented("no audio model is served here (serve one with --audio-checkpoint)")
        return _lookup(self.audio, name or self.default_audio, name, "audio models")

    def image_model(self, name: str) -> ImageService:
        """The image model ``name`` (empty: the default image model)."""
        if not self.images:
            raise Unimplemented("no image model is served here (serve them with --image-checkpoints)")
        return _lookup(self.images, name or self.default_image, name, "image models")

    def classifier(self, name: str) -> ClassifierService:
        if not self.classifiers:
            raise Unimplemented("no classifier is served here (serve them with --classifiers)")
        found = self.classifiers.get(name)
        if found is None:
            served = ", ".join(sorted(self.classifiers))
            raise NotFound(f"model: {name!r} is not a classifier served here (classifiers: {served})")
        return found

    def text_infos(self) -> list[TextModelInfo]:
        return [s.info for s in self.text.values()]

    def audio_infos(self) -> list[AudioModelInfo]:
        return [s.info for s in self.audio.values()]

    def classifier_infos(self) -> list[ClassifierInfo]:
        return [s.info for s in self.classifiers.values()]

    def image_infos(self) -> list[ImageModelInfo]:
        return [s.info for s in self.images.values()]

    def listing(self) -> list[dict[str, Any]]:
        """Every served model as plain fields, the names every transport lists them under: text models first,
        then audio models (each with ``is_default``), then classifiers (``kind`` "classifier"), then image models
        (each with ``is_default``)."""
        rows = [{**asdict(i), "is_default": i.id == self.default_text} for i in self.text_infos()]
        rows += [{**asdict(i), "is_default": i.id == self.default_audio} for i in self.audio_infos()]
        rows += [{**asdict(i), "kind": "classifier"} for i in self.classifier_infos()]
        rows += [{**asdict(i), "is_default": i.id == self.default_image} for i in self.image_infos()]
        return rows


S = TypeVar("S")


def _lookup(services: dict[str, S], key: str, asked: str, noun: str) -> S:
    service = services.get(key)
    if service is None:
        served = ", ".join(sorted(services)) or "none"
        raise NotFound(f"model: {asked!r} is not served here ({noun}: {served})")
    return service
