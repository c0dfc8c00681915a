from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_TEXT: _ClassVar[ModelKind]
    MODEL_KIND_AUDIO: _ClassVar[ModelKind]
    MODEL_KIND_CLASSIFIER: _ClassVar[ModelKind]
    MODEL_KIND_IMAGE: _ClassVar[ModelKind]
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_TEXT: ModelKind
MODEL_KIND_AUDIO: ModelKind
MODEL_KIND_CLASSIFIER: ModelKind
MODEL_KIND_IMAGE: ModelKind

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("id", "kind", "is_default", "description", "personas", "default_persona", "max_prompt_chars", "max_tokens", "sample_rate", "voices", "default_voice", "max_text_chars", "max_seconds", "labels", "input", "input_shape", "family", "image_size", "max_steps", "max_walk_frames", "layers", "max_request_streams")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PERSONAS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PERSONA_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    VOICES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_VOICE_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_WALK_FRAMES_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_STREAMS_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: ModelKind
    is_default: bool
    description: str
    personas: _containers.RepeatedScalarFieldContainer[str]
    default_persona: str
    max_prompt_chars: int
    max_tokens: int
    sample_rate: int
    voices: _containers.RepeatedScalarFieldContainer[str]
    default_voice: str
    max_text_chars: int
    max_seconds: float
    labels: _containers.RepeatedScalarFieldContainer[str]
    input: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    family: str
    image_size: int
    max_steps: int
    max_walk_frames: int
    layers: _containers.RepeatedScalarFieldContainer[str]
    max_request_streams: int
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., is_default: _Optional[bool] = ..., description: _Optional[str] = ..., personas: _Optional[_Iterable[str]] = ..., default_persona: _Optional[str] = ..., max_prompt_chars: _Optional[int] = ..., max_tokens: _Optional[int] = ..., sample_rate: _Optional[int] = ..., voices: _Optional[_Iterable[str]] = ..., default_voice: _Optional[str] = ..., max_text_chars: _Optional[int] = ..., max_seconds: _Optional[float] = ..., labels: _Optional[_Iterable[str]] = ..., input: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., family: _Optional[str] = ..., image_size: _Optional[int] = ..., max_steps: _Optional[int] = ..., max_walk_frames: _Optional[int] = ..., layers: _Optional[_Iterable[str]] = ..., max_request_streams: _Optional[int] = ...) -> None: ...
