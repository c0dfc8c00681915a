from antiphon.v1 import audio_pb2 as _audio_pb2
from antiphon.v1 import sampling_pb2 as _sampling_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatRequest(_message.Message):
    __slots__ = ("model", "session_id", "persona", "message", "speaker", "sampling", "speak", "voice", "encoding")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PERSONA_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SPEAK_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    model: str
    session_id: str
    persona: str
    message: str
    speaker: str
    sampling: _sampling_pb2.Sampling
    speak: bool
    voice: str
    encoding: _audio_pb2.AudioEncoding
    def __init__(self, model: _Optional[str] = ..., session_id: _Optional[str] = ..., persona: _Optional[str] = ..., message: _Optional[str] = ..., speaker: _Optional[str] = ..., sampling: _Optional[_Union[_sampling_pb2.Sampling, _Mapping]] = ..., speak: _Optional[bool] = ..., voice: _Optional[str] = ..., encoding: _Optional[_Union[_audio_pb2.AudioEncoding, str]] = ...) -> None: ...

class ChatEvent(_message.Message):
    __slots__ = ("text", "audio", "done")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    text: str
    audio: _audio_pb2.AudioChunk
    done: ChatDone
    def __init__(self, text: _Optional[str] = ..., audio: _Optional[_Union[_audio_pb2.AudioChunk, _Mapping]] = ..., done: _Optional[_Union[ChatDone, _Mapping]] = ...) -> None: ...

class ChatDone(_message.Message):
    __slots__ = ("finish_reason", "usage", "turns")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    finish_reason: _sampling_pb2.FinishReason
    usage: _sampling_pb2.Usage
    turns: int
    def __init__(self, finish_reason: _Optional[_Union[_sampling_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_sampling_pb2.Usage, _Mapping]] = ..., turns: _Optional[int] = ...) -> None: ...
