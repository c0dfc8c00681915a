from antiphon.v1 import sampling_pb2 as _sampling_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_ENCODING_UNSPECIFIED: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_PNG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_RAW8: _ClassVar[ImageEncoding]
IMAGE_ENCODING_UNSPECIFIED: ImageEncoding
IMAGE_ENCODING_PNG: ImageEncoding
IMAGE_ENCODING_RAW8: ImageEncoding

class GenerateImageRequest(_message.Message):
    __slots__ = ("model", "label", "seed", "steps", "frame_every", "walk_to_seed", "walk_frames", "base_image", "dream", "encoding")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    FRAME_EVERY_FIELD_NUMBER: _ClassVar[int]
    WALK_TO_SEED_FIELD_NUMBER: _ClassVar[int]
    WALK_FRAMES_FIELD_NUMBER: _ClassVar[int]
    BASE_IMAGE_FIELD_NUMBER: _ClassVar[int]
    DREAM_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    model: str
    label: str
    seed: int
    steps: int
    frame_every: int
    walk_to_seed: int
    walk_frames: int
    base_image: bytes
    dream: DreamSettings
    encoding: ImageEncoding
    def __init__(self, model: _Optional[str] = ..., label: _Optional[str] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., frame_every: _Optional[int] = ..., walk_to_seed: _Optional[int] = ..., walk_frames: _Optional[int] = ..., base_image: _Optional[bytes] = ..., dream: _Optional[_Union[DreamSettings, _Mapping]] = ..., encoding: _Optional[_Union[ImageEncoding, str]] = ...) -> None: ...

class DreamSettings(_message.Message):
    __slots__ = ("layer", "target", "octaves")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OCTAVES_FIELD_NUMBER: _ClassVar[int]
    layer: str
    target: str
    octaves: int
    def __init__(self, layer: _Optional[str] = ..., target: _Optional[str] = ..., octaves: _Optional[int] = ...) -> None: ...

class ImageFrame(_message.Message):
    __slots__ = ("step", "final", "width", "height", "channels", "encoding", "data", "finish_reason", "usage")
    STEP_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    step: int
    final: bool
    width: int
    height: int
    channels: int
    encoding: ImageEncoding
    data: bytes
    finish_reason: _sampling_pb2.FinishReason
    usage: ImageUsage
    def __init__(self, step: _Optional[int] = ..., final: _Optional[bool] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., channels: _Optional[int] = ..., encoding: _Optional[_Union[ImageEncoding, str]] = ..., data: _Optional[bytes] = ..., finish_reason: _Optional[_Union[_sampling_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[ImageUsage, _Mapping]] = ...) -> None: ...

class ImageUsage(_message.Message):
    __slots__ = ("steps", "frames")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    steps: int
    frames: int
    def __init__(self, steps: _Optional[int] = ..., frames: _Optional[int] = ...) -> None: ...
