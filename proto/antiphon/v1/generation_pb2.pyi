from antiphon.v1 import audio_pb2 as _audio_pb2
from antiphon.v1 import chat_pb2 as _chat_pb2
from antiphon.v1 import classify_pb2 as _classify_pb2
from antiphon.v1 import image_pb2 as _image_pb2
from antiphon.v1 import models_pb2 as _models_pb2
from antiphon.v1 import text_pb2 as _text_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
