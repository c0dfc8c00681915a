"""The OpenAI wire types: request bodies decoded into the engine's requests, answers and stream chunks encoded as
the official SDKs read them. Decoding checks JSON shapes and the fields OpenAI defines that antiphon cannot honour
(they are accepted at their neutral value and refused by name otherwise); the engine checks everything else.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from server.engine.requests import Conversation, Message, SamplingOptions, TextModelInfo
from server.engine.streams import TextStream
from server.errors import AntiphonError, InvalidArgument, NotFound
from server.transport.jsonfields import number_field

# Fields accepted only at these neutral values (None, absent, is always accepted).
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "logit_bias": ({},),
    "tools": ([],),
    "tool_choice": ("none", "auto"),
    "parallel_tool_calls": (True, False),
    "response_format": ({"type": "text"},),
    "echo": (False,),
    "best_of": (1,),
    "suffix": ("",),
    "modalities": (["text"],),
    # the older names of tools and tool_choice
    "functions": ([],),
    "function_call": ("none", "auto"),
    # newer fields a front end may send as null, or at their default: accepted then, refused when they ask for
    # something this server does not do
    "audio": (),
    "prediction": (),
    "web_search_options": (),
    "reasoning_effort": (),
    "verbosity": ("medium",),
}
# Fields read for what they say, or harmless to ignore (identifiers and bookkeeping).
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "seed", "max_tokens", "max_completion_tokens", "stop")
IGNORED = ("user", "safety_identifier", "prompt_cache_key", "metadata", "store", "service_tier")
CHAT_FIELDS = {"model", "messages", "stream", "stream_options", *SAMPLING_FIELDS, *NEUTRAL, *IGNORED}
COMPLETION_FIELDS = {"model", "prompt", "stream", "stream_options", *SAMPLING_FIELDS, *NEUTRAL, *IGNORED}
MAX_STOP = 4  # OpenAI's own limit


def model_ids(info: TextModelInfo) -> list[str]:
    """The ids a text model is listed under: its own (the default persona) and one per persona, in lower case
    with hyphens for spaces (``char-lstm/king-richard``)."""
    return [info.id, *(model_id(info, persona) for persona in info.personas)]


def model_id(info: TextModelInfo, persona: str) -> str:
    """The id a text model lists ``persona`` under (its own id for the default persona, "")."""
    return f"{info.id}/{persona.lower().replace(' ', '-')}" if persona else info.id


def split_model(name: str) -> tuple[str, str]:
    """``"char-lstm/falstaff"`` -> (``"char-lstm"``, ``"falstaff"``); a bare id names the default persona."""
    model, _, persona = name.partition("/")
    return model, persona


def persona_of(info: TextModelInfo, name: str) -> str | None:
    """The persona a model id's suffix names (any case, hyphens or spaces), as the model spells it."""
    return info.persona(name) or info.persona(name.replace("-", " "))


def check_fields(body: Any, allowed: set[str], neutral_fields: bool = True) -> dict[str, Any]:
    """``body`` if it is an object of ``allowed`` fields, with the generation fields of ``NEUTRAL`` at a neutral
    value (``neutral_fields``)."""
    if not isinstance(body, dict):
        raise InvalidArgument("body", "must be a JSON object")
    for key in body:
        if key not in allowed:
            raise InvalidArgument(key, "unrecognized request argument")
    if neutral_fields:
        check_neutral(body, NEUTRAL)
    if (stream := body.get("stream")) is not None and not isinstance(stream, bool):
        raise InvalidArgument("stream", f"must be true or false, got {json.dumps(stream)}")
    return body


def check_neutral(body: dict[str, Any], neutral_values: dict[str, tuple[Any, ...]]) -> None:
    """Each field of ``neutral_values`` in ``body`` is absent, null or one of its neutral values, of the same JSON
    type (``true`` is not ``n: 1``, nor ``false`` a penalty of 0)."""
    for key, neutral in neutral_values.items():
        value = body.get(key)
        if value is not None and not any(type(value) is type(v) and value == v for v in neutral):
            shown = " or ".join(json.dumps(v) for v in (None, *neutral))
            raise InvalidArgument(key, f"is not supported by this server except at {shown}, got {json.dumps(value)}")


def _number(body: dict[str, Any], name: str, integer: bool) -> Any:
    return number_field(body.get(name), name, integer)


def sampling(body: dict[str, Any]) -> SamplingOptions:
    max_tokens = _number(body, "max_completion_tokens", True)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", True)
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise InvalidArgument("stop", "must be a string or a list of strings")
    if len(stops) > MAX_STOP:
        raise InvalidArgument("stop", f"at most {MAX_STOP} sequences, got {len(stops)}")
    return SamplingOptions(
        temperature=_number(body, "temperature", False),
        top_k=_number(body, "top_k", True),
        top_p=_number(body, "top_p", False),
        seed=_number(body, "seed", True),
        max_tokens=max_tokens,
        stop=stops,
    )


def include_usage(body: dict[str, Any]) -> bool:
    """``stream_options.include_usage``; ``include_obfuscation`` is accepted (the events carry no padding to drop),
    any other option is refused naming it (``stream_options.continuous_usage_stats``, another server's)."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise InvalidArgument("stream_options", 'must be an object such as {"include_usage": true}')
    for key, value in options.items():
        if key not in ("include_usage", "include_obfuscation"):
            raise InvalidArgument(f"stream_options.{key}", "unrecognized request argument")
        if value is not None and not isinstance(value, bool):
            raise InvalidArgument(f"stream_options.{key}", f"must be true or false, got {json.dumps(value)}")
    return options.get("include_usage") is True


def text_content(value: Any, field: str, kinds: tuple[str, ...] = ("text",)) -> str:
    """A message's content: a string, or a list of text parts (parts of a type in ``kinds``), joined by line breaks;
    null is empty."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind not in kinds:
                why = f"only text parts are supported (a character model), got a part of type {json.dumps(kind)}"
                raise InvalidArgument(f"{field}[{j}]", why)
            if kind not in kinds or not isinstance(part.get("text"), str):
                raise InvalidArgument(f"{field}[{j}]", 'must be a text part: {"type": "text", "text": "..."}')
            texts.append(part["text"])
        return "\n".join(texts)
    raise InvalidArgument(field, "must be a string or a list of text parts")


def conversation(body: dict[str, Any], persona: str, request_id: str, transport: str = "") -> Conversation:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise InvalidArgument("messages", "must be a list of messages")
    decoded = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidArgument(f"messages[{i}]", "must be an object")
        role = message.get("role")
        if not isinstance(role, str):
            raise InvalidArgument(f"messages[{i}].role", "is missing" if role is None else "must be a string")
        if role == "developer":  # the newer name of the system role
            role = "system"
        if role in ("tool", "function"):
            raise InvalidArgument(f"messages[{i}].role", "tool calls are not supported by this server")
        for key in ("tool_calls", "function_call"):  # an assistant's call in the history: named as what it is
            if message.get(key):
                raise InvalidArgument(f"messages[{i}].{key}", "tool calls are not supported by this server")
        name = message.get("name") or ""
        if not isinstance(name, str):
            raise InvalidArgument(f"messages[{i}].name", "must be a string")
        decoded.append(Message(role, text_content(message.get("content"), f"messages[{i}].content"), name))
    return Conversation(tuple(decoded), persona, sampling(body), request_id, transport)


@dataclass(frozen=True)
class ErrorBody:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


STATUS = {
    "invalid_argument": (400, "invalid_request_error"),
    "not_found": (404, "invalid_request_error"),
    "failed_precondition": (409, "invalid_request_error"),
    "resource_exhausted": (429, "rate_limit_exceeded"),
    "unavailable": (503, "service_unavailable"),
    "unimplemented": (501, "invalid_request_error"),
    "unauthenticated": (401, "invalid_request_error"),
}


def error_body(error: AntiphonError) -> ErrorBody:
    """OpenAI's error object for ``error``, with the HTTP status and headers that go with it."""
    status, kind = STATUS.get(error.code, (500, "server_error"))
    param = error.field.removeprefix("sampling.") if isinstance(error, InvalidArgument) else None
    message = f"{param}: {error.reason}" if isinstance(error, InvalidArgument) else str(error)
    code: str | None = None
    if isinstance(error, NotFound):  # "voice: 'x' is not a voice of ...": the field it names is the param
        field, colon, _ = message.partition(":")
        param = field if colon and field.isidentifier() else None
        code = "model_not_found" if param == "model" else None
    elif status == 429:
        code = "rate_limit_exceeded"
    elif status == 401:
        code = "invalid_api_key"
    headers = {"Retry-After": "1"} if status in (429, 503) else {}
    if status == 501:  # the SDKs retry every 5xx unless told: a model kind not served is no better a second later
        headers["x-should-retry"] = "false"
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return ErrorBody(status, error_object(message, kind, param, code), headers)


def error_object(
    message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object, the body of every HTTP error this server answers: SDKs read its four fields."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def created() -> int:
    return int(time.time())


def usage(*streams: TextStream) -> dict[str, Any]:
    """The streams' usage together. Tokens are characters; ``cached_tokens``: prompt characters a kept conversation
    state spared reading."""
    prompt = sum(stream.prompt_tokens for stream in streams)
    completion = sum(stream.completion_tokens for stream in streams)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(stream.cached_tokens for stream in streams)},
    }


# -- speech ------------------------------------------------------------------------------------------------------
# OpenAI's stock voice names, so front ends' defaults work: each names an espeak-ng voice (accent+variant) that
# conditions the WaveNet; a model that lacks it speaks in its default voice.
OPENAI_VOICES = {
    "alloy": "en-us+f2",
    "ash": "en-us+m2",
    "ballad": "en-gb+m4",
    "coral": "en-us+f3",
    "echo": "en-us+m1",
    "fable": "en-gb-x-rp+m1",
    "onyx": "en-us+m7",
    "nova": "en-us+f1",
    "sage": "en-gb+f2",
    "shimmer": "en-us+f5",
    "verse": "en-gb-scotland+m1",
}
OPENAI_SPEECH_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")  # name the default audio model
SPEECH_FIELDS = {"model", "input", "voice", "response_format", "speed", "instructions", "stream_format"}
SPEECH_FORMATS = ("wav", "pcm")
PCM_RATE = 24_000  # the rate of OpenAI's bare PCM and speech.audio.delta samples, which carry no header
WAV_STREAM_BYTES = 0xFFFFFFFF  # a WAV header's data size when the length is not known yet (a stream)


@dataclass(frozen=True)
class SpeechRequest:
    model: str
    text: str
    voice: str
    response_format: str
    sse: bool


def speech_request(body: Any, voices: tuple[str, ...], default_voice: str) -> SpeechRequest:
    """Decode a /v1/audio/speech body; ``voices``: the audio model's own voice names."""
    body = check_fields(body, SPEECH_FIELDS, neutral_fields=False)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidArgument("model", "must name an audio model (tts-1 names the default one)")
    text = body.get("input")
    if not isinstance(text, str):
        raise InvalidArgument("input", "must be the text to speak")
    voice = body.get("voice") or ""
    if not isinstance(voice, str):
        raise InvalidArgument("voice", "must be a voice name")
    if voice in OPENAI_VOICES:
        voice = OPENAI_VOICES[voice] if OPENAI_VOICES[voice] in voices else default_voice
    response_format = body.get("response_format") or "wav"
    if response_format not in SPEECH_FORMATS:
        shown = ", ".join(SPEECH_FORMATS)
        raise InvalidArgument("response_format", f"must be one of {shown}, got {json.dumps(response_format)}")
    speed = body.get("speed")
    if speed is not None and (isinstance(speed, bool) or not isinstance(speed, int | float) or speed != 1):
        why = "only 1.0 is supported (the WaveNet speaks at its own pace)"
        raise InvalidArgument("speed", f"{why}, got {json.dumps(speed)}")
    if body.get("instructions"):
        raise InvalidArgument("instructions", "is not supported by this server")
    stream_format = body.get("stream_format") or "audio"
    if stream_format not in ("audio", "sse"):
        raise InvalidArgument("stream_format", f'must be "audio" or "sse", got {json.dumps(stream_format)}')
    return SpeechRequest(model, text, voice, response_format, stream_format == "sse")


def wav_header(sample_rate: int) -> bytes:
    """The header of a mono 16-bit WAV stream whose length is not known yet (players read to the end)."""
    data = WAV_STREAM_BYTES
    return b"".join(
        (
            b"RIFF",
            min(data + 36, WAV_STREAM_BYTES).to_bytes(4, "little"),
            b"WAVEfmt ",
            (16).to_bytes(4, "little"),
            (1).to_bytes(2, "little"),  # PCM
            (1).to_bytes(2, "little"),  # mono
            sample_rate.to_bytes(4, "little"),
            (sample_rate * 2).to_bytes(4, "little"),
            (2).to_bytes(2, "little"),
            (16).to_bytes(2, "little"),
            b"data",
            data.to_bytes(4, "little"),
        )
    )


# -- images ------------------------------------------------------------------------------------------------------
# Fields of /v1/images/generations accepted only at these neutral values (None, absent, is always accepted).
IMAGE_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "background": ("auto", "opaque"),  # the images are opaque
    "moderation": ("auto", "low"),
    "output_format": ("png",),
    "quality": ("auto", "standard"),  # gpt-image-1's default, and DALL-E's (front ends still send it)
    "response_format": ("b64_json",),
    "complexity": (),
    "frame_count": (),
    "frame_duration_ms": (),
    "output_compression": (),
    "style": (),
    "svg": (),
}
# antiphon's own fields, read as a WebSocket generate_image message's (server/transport/jsonfields.py image_request)
GENERATION_OWN = ("seed", "steps", "frame_every", "walk_to_seed", "walk_frames")
EDIT_OWN = ("seed", "steps", "frame_every", "layer", "target", "octaves")
OPENAI_IMAGE_FIELDS = ("model", "prompt", "n", "size", "stream", "partial_images", "user", "safety_identifier")
IMAGE_FIELDS = {*OPENAI_IMAGE_FIELDS, *GENERATION_OWN, *IMAGE_NEUTRAL}
# /v1/images/edits reads no moderation; a mask, markup or input fidelity is refused when given
EDIT_NEUTRAL = {key: v for key, v in IMAGE_NEUTRAL.items() if key != "moderation"}
EDIT_NEUTRAL |= {"input_fidelity": (), "mask": (), "markup": ()}
EDIT_FIELDS = {*OPENAI_IMAGE_FIELDS, *EDIT_OWN, *EDIT_NEUTRAL}
EDIT_INTEGERS = ("n", "partial_images", "seed", "steps", "frame_every", "octaves")  # form fields read as integers
EDIT_FILES = ("image", "image[]")  # the SDKs send one file as image, a list as image[]
# An edit's fields as the engine names them -> as the form names them (its errors name the form's)
EDIT_NAMES = {"base_image": "image", "dream.layer": "layer", "dream.target": "target", "dream.octaves": "octaves"}
MAX_IMAGES = 10  # OpenAI's own limit of n
MAX_PARTIAL_IMAGES = 3


@dataclass(frozen=True)
class ImagesRequest:
    model: str
    n: int
    size: str | None
    stream: bool
    partial_images: int
    own: dict[str, Any]  # the prompt and antiphon's own fields, as a generate_image message holds them
    every_frame: bool  # frame_every or a walk: every frame the engine sends is answered, not only the last


def _image_body(body: Any, allowed: set[str], neutral_values: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    """The fields OpenAI's images requests share, checked: an object of ``allowed`` fields, the neutral ones at a
    neutral value, ``model`` a name, ``prompt`` a string."""
    body = check_fields(body, allowed, neutral_fields=False)
    check_neutral(body, neutral_values)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidArgument("model", "must name an image model (GET /v1/images/models lists them)")
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise InvalidArgument("prompt", "must be a string: a class of the model, or empty")
    return body


def _images(body: dict[str, Any], own: dict[str, Any], every_frame: bool) -> ImagesRequest:
    """``n``, ``stream``, ``partial_images`` and ``size`` read; ``own``: the fields the engine reads."""
    n = _number(body, "n", True)
    n = 1 if n is None else n
    if not 1 <= n <= MAX_IMAGES:
        raise InvalidArgument("n", f"must be 1..{MAX_IMAGES}, got {n}")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise InvalidArgument("stream", "must be true or false")
    if stream and n != 1:
        raise InvalidArgument("n", "a stream carries one image: give n 1 (or several requests)")
    if every_frame and n != 1:
        raise InvalidArgument("n", "the frames of one image (frame_every, a walk) come as one answer: give n 1")
    partial = _number(body, "partial_images", True) or 0
    if not 0 <= partial <= MAX_PARTIAL_IMAGES:
        raise InvalidArgument("partial_images", f"must be 0..{MAX_PARTIAL_IMAGES}, got {partial}")
    if partial and not stream:
        raise InvalidArgument("partial_images", "partial images are sent in a stream: set stream true")
    if partial and every_frame:
        raise InvalidArgument("partial_images", "frame_every and a walk send every frame they select: give 0")
    size = body.get("size")
    if size is not None and not isinstance(size, str):
        raise InvalidArgument("size", 'must be a string such as "28x28"')
    return ImagesRequest(body["model"], n, size, stream, partial, own, every_frame)


def images_request(body: Any) -> ImagesRequest:
    """Decode a /v1/images/generations body: the prompt names a class (conditional models) or is empty; antiphon's
    own fields are the engine's (a walk's, the RBM's steps, frame_every)."""
    body = _image_body(body, IMAGE_FIELDS, IMAGE_NEUTRAL)
    own = {key: body[key] for key in GENERATION_OWN if body.get(key) is not None}
    every_frame = "frame_every" in own or "walk_to_seed" in own
    return _images(body, {"label": body.get("prompt", "").strip(), **own}, every_frame)


@dataclass(frozen=True)
class EditRequest:
    images: ImagesRequest
    image: bytes  # the file uploaded: PNG or JPEG
    target_field: str  # the form field that named the dream's target class: prompt or target


def edit_request(fields: dict[str, str], files: dict[str, list[bytes]]) -> EditRequest:
    """Decode a /v1/images/edits form (its text fields and files): the image to dream on, the prompt naming the
    target class (or empty), and antiphon's own dream fields."""
    for name in files:
        if name not in EDIT_FILES and name in EDIT_FIELDS:
            raise InvalidArgument(name, "is not supported by this server")
        if name not in EDIT_FILES:
            raise InvalidArgument(name, "unrecognized request argument")
    for name in fields:
        if name in EDIT_FILES:
            raise InvalidArgument("image", "must be a file (a part with a filename), PNG or JPEG")
    uploads = [data for name in EDIT_FILES for data in files.get(name, [])]
    if len(uploads) != 1:
        raise InvalidArgument("image", f"upload exactly one image to dream on, PNG or JPEG (got {len(uploads)})")
    body: dict[str, Any] = {}
    for name, text in fields.items():
        if name in EDIT_INTEGERS:
            body[name] = form_integer(text, name)
        elif name == "stream":
            body[name] = form_boolean(text, name)
        else:
            body[name] = text
    body = _image_body(body, EDIT_FIELDS, EDIT_NEUTRAL)
    prompt = body.get("prompt", "").strip()
    target = body.get("target", "").strip()
    if prompt and target and prompt.casefold() != target.casefold():
        raise InvalidArgument("target", f"names {target!r} and prompt {prompt!r}: give the class once")
    dream = {"layer": body.get("layer", ""), "target": target or prompt, "octaves": body.get("octaves")}
    own = {key: body[key] for key in ("seed", "steps", "frame_every") if body.get(key) is not None}
    images = _images(body, {**own, "dream": dream}, "frame_every" in own)
    return EditRequest(images, uploads[0], "target" if target else "prompt")


def form_integer(text: str, name: str) -> int | None:
    """A form field holding an integer (empty: absent)."""
    if not text.strip():
        return None
    if not re.fullmatch(r"-?[0-9]+", text.strip()):
        raise InvalidArgument(name, f"must be an integer, got {json.dumps(text)}")
    return int(text.strip())


def form_boolean(text: str, name: str) -> bool:
    """A form field holding true or false (empty: false), as the SDKs write booleans in a form."""
    folded = text.strip().lower()
    if folded not in ("", "true", "false"):
        raise InvalidArgument(name, f"must be true or false, got {json.dumps(text)}")
    return folded == "true"


def renamed(error: AntiphonError, names: dict[str, str]) -> AntiphonError:
    """``error`` naming the request's field as its wire format does (``names``: the engine's name -> the wire's)."""
    if isinstance(error, InvalidArgument) and error.field in names:
        return InvalidArgument(names[error.field], error.reason)
    if isinstance(error, NotFound):
        field, colon, rest = str(error).partition(":")
        if colon and field in names:
            return NotFound(f"{names[field]}:{rest}")
    return error


def image_size(size: str | None, side: int) -> str:
    """The size the model makes, ``"SxS"``; a ``size`` asked for that is not ``auto`` or that is refused by name."""
    made = f"{side}x{side}"
    if size not in (None, "auto", made):
        raise InvalidArgument("size", f"this model makes {made} images only (or give auto), got {json.dumps(size)}")
    return made


def partial_steps(total: int, partial_images: int) -> set[int]:
    """The steps of a ``total``-frame stream sent as partial images: ``partial_images`` evenly spaced before the
    last (fewer when the model makes fewer frames; one sample makes none)."""
    steps = {round(total * (j + 1) / (partial_images + 1)) - 1 for j in range(partial_images)}
    return {s for s in steps if 0 <= s < total - 1}


GENERATION, EDIT = "image_generation", "image_edit"  # the events' prefixes


def image_event(kind: str, b64: str, size: str, index: int = 0, prefix: str = GENERATION) -> dict[str, Any]:
    """An ``image_generation.partial_image`` (with its index) or ``image_generation.completed`` event; the
    ``image_edit.`` ones with ``prefix`` EDIT."""
    event: dict[str, Any] = {
        "type": f"{prefix}.{kind}",
        "b64_json": b64,
        "background": "opaque",
        "created_at": created(),
        "output_format": "png",
        "quality": "auto",
        "size": size,
    }
    if kind == "partial_image":
        event["partial_image_index"] = index
    else:  # the models read no tokens: OpenAI's usage object, with nothing in it
        details = {"image_tokens": 0, "text_tokens": 0}
        event["usage"] = {"input_tokens": 0, "input_tokens_details": details, "output_tokens": 0, "total_tokens": 0}
    return event
