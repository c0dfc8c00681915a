from antiphon.v1 import sampling_pb2 as _sampling_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_PCM16_LE: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_MULAW8: _ClassVar[AudioEncoding]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
AUDIO_ENCODING_PCM16_LE: AudioEncoding
AUDIO_ENCODING_MULAW8: AudioEncoding

class GenerateAudioRequest(_message.Message):
    __slots__ = ("model", "text", "max_seconds", "sampling", "encoding", "chunk_samples", "voice")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    model: str
    text: str
    max_seconds: float
    sampling: _sampling_pb2.Sampling
    encoding: AudioEncoding
    chunk_samples: int
    voice: str
    def __init__(self, model: _Optional[str] = ..., text: _Optional[str] = ..., max_seconds: _Optional[float] = ..., sampling: _Optional[_Union[_sampling_pb2.Sampling, _Mapping]] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., chunk_samples: _Optional[int] = ..., voice: _Optional[str] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("format", "data", "finish_reason", "usage")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    format: AudioFormat
    data: bytes
    finish_reason: _sampling_pb2.FinishReason
    usage: AudioUsage
    def __init__(self, format: _Optional[_Union[AudioFormat, _Mapping]] = ..., data: _Optional[bytes] = ..., finish_reason: _Optional[_Union[_sampling_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[AudioUsage, _Mapping]] = ...) -> None: ...

class AudioUsage(_message.Message):
    __slots__ = ("text_chars", "samples")
    TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    text_chars: int
    samples: int
    def __init__(self, text_chars: _Optional[int] = ..., samples: _Optional[int] = ...) -> None: ...

class AudioFormat(_message.Message):
    __slots__ = ("sample_rate", "encoding", "channels")
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    sample_rate: int
    encoding: AudioEncoding
    channels: int
    def __init__(self, sample_rate: _Optional[int] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., channels: _Optional[int] = ...) -> None: ...
