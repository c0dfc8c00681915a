"""The request contract: what a client may ask of each kind of model, and the model infos it is checked against.

A transport decodes its wire format into these types and hands them to an engine; it validates nothing of its own.
Each request checks itself against the model's info (``validate``) and raises :class:`InvalidArgument` or
:class:`NotFound` naming the field, so every transport answers the same mistake with the same message. No torch here.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from server.errors import InvalidArgument, NotFound
from server.sampling import MAX_SEED

MAX_SESSION_ID = 128
MAX_SPEAKER_NAME = 64
TURN_END = "\n\n"  # a blank line ends a speaker's turn in the corpus's dialogue form
MAX_AUDIO_TEMPERATURE = 100.0
MAX_IMAGE_SEED = 2**63 - 1  # the image samplers seed NumPy's generators with it
MAX_FRAME_EVERY = 10_000
MAX_BASE_SIDE = 1024  # pixels of a Deep Dream base image, each side
DEFAULT_GIBBS_STEPS = 50
DEFAULT_DREAM_STEPS = 10
DEFAULT_DREAM_OCTAVES = 3
MAX_DREAM_OCTAVES = 8
MAX_DREAM_STEPS = 1000  # per octave (the sampler's own limit)
DEFAULT_WALK_FRAMES = 16
LATENT_FAMILIES = ("dcgan", "vae", "vaegan")
SAMPLE, WALK, CHAIN, DREAM = "sample", "walk", "chain", "dream"  # what an image request runs
DEFAULT_CHUNK_MS = 20  # audio chunk length on the wire when a client asks for none


# -- model infos -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextModelInfo:
    id: str
    kind: str  # "text"
    description: str
    personas: tuple[str, ...]
    default_persona: str
    max_prompt_chars: int
    max_tokens: int
    max_request_streams: int  # the most streams one request may start: the engine's running and waiting places

    def persona(self, name: str) -> str | None:
        """The persona ``name`` names, in the spelling the model read ("Falstaff" -> "FALSTAFF"), or None."""
        if name in self.personas:
            return name
        folded = {p.casefold(): p for p in self.personas}
        return folded.get(name.strip().casefold())

    def replying(self, name: str) -> str:
        """The persona a request's ``persona`` field names (empty: the default); NotFound listing them if none."""
        persona = self.persona(name) if name else self.default_persona
        if persona is None:
            raise NotFound(
                f"persona: {name!r} is not a speaker of model {self.id!r} (personas: {', '.join(self.personas)})"
            )
        return persona


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


@dataclass(frozen=True)
class ImageModelInfo:
    """An image model as clients see it. ``labels``: a conditional generator's classes, or Deep Dream's target
    classes; empty for an unconditional generator. ``image_size``: the side of the images it makes."""

    id: str
    description: str
    family: str  # dcgan, vae, vaegan, rbm or dream
    image_size: int
    labels: tuple[str, ...]
    max_steps: int  # rbm: Gibbs steps; dream: steps x octaves
    max_walk_frames: int
    max_request_streams: int  # the most images one request may ask for at once: the engine's running and waiting places
    layers: tuple[str, ...] = ()  # dream: the layers a dream may raise
    kind: str = "image"

    def label_index(self, name: str, field: str) -> int:
        """The class ``name`` names (any case), by index; NotFound listing them if none."""
        folded = [label.casefold() for label in self.labels]
        if name.strip().casefold() not in folded:
            raise NotFound(f"{field}: {name!r} is not a class of model {self.id!r} (classes: {', '.join(self.labels)})")
        return folded.index(name.strip().casefold())


AUDIO, TEXT, TENSOR = "audio", "text", "tensor"  # what a classifier takes


@dataclass(frozen=True)
class ClassifierInfo:
    id: str
    input: str  # AUDIO, TEXT or TENSOR
    labels: tuple[str, ...]
    description: str
    input_shape: tuple[int, ...] = ()  # TENSOR inputs
    sample_rate: int = 0  # AUDIO inputs


# -- requests ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplingOptions:
    """Sampling knobs as a client sent them; None (or no stop sequence) takes the server's default. Their ranges
    are checked by :meth:`server.sampling.SamplingParams.validated`, with the model's vocabulary."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()

    def text_only_knobs(self) -> list[str]:
        """The knobs that are set and that only text models read."""
        given = {"top_k": self.top_k, "top_p": self.top_p, "max_tokens": self.max_tokens, "stop": self.stop or None}
        return [name for name, value in given.items() if value is not None]


@dataclass(frozen=True)
class TextRequest:
    prompt: str
    sampling: SamplingOptions = SamplingOptions()
    request_id: str = ""  # for the log line
    transport: str = ""  # the listener it came by (grpc, websocket, http), for the metrics; empty: in process

    def validate(self, info: TextModelInfo) -> None:
        if len(self.prompt) > info.max_prompt_chars:
            raise InvalidArgument("prompt", f"at most {info.max_prompt_chars} characters, got {len(self.prompt)}")


@dataclass(frozen=True)
class ChatTurn:
    session_id: str
    message: str
    persona: str = ""  # empty: the model's default persona
    speaker: str = ""  # empty: the server's default name for the user
    sampling: SamplingOptions = SamplingOptions()
    request_id: str = ""
    transport: str = ""

    def validate(self, info: TextModelInfo) -> str:
        """Check the turn's fields; returns the persona that replies, as the model spells it."""
        if not 1 <= len(self.session_id) <= MAX_SESSION_ID:
            raise InvalidArgument("session_id", f"must have 1..{MAX_SESSION_ID} characters, got {len(self.session_id)}")
        persona = info.replying(self.persona)
        if len(self.speaker) > MAX_SPEAKER_NAME or "\n" in self.speaker:
            raise InvalidArgument("speaker", f"must be one line of at most {MAX_SPEAKER_NAME} characters")
        if not self.message.strip():
            raise InvalidArgument("message", "must not be empty")
        if len(self.message) > info.max_prompt_chars:
            raise InvalidArgument("message", f"at most {info.max_prompt_chars} characters, got {len(self.message)}")
        if TURN_END in self.message:
            raise InvalidArgument("message", "must not contain a blank line (a blank line ends a turn)")
        return persona


@dataclass(frozen=True)
class AudioRequest:
    text: str  # spoken through espeak-ng's rendering, which conditions the WaveNet
    voice: str = ""  # empty: the model's default voice
    max_seconds: float | None = None  # None: the server's limit
    temperature: float | None = None  # None: the model's default; 0 picks the most likely sample
    seed: int | None = None  # same seed, same samples, alone or batched
    request_id: str = ""
    chunk_samples: int = 0  # samples per chunk on the wire; 0: DEFAULT_CHUNK_MS
    transport: str = ""
    knobs: str = ""  # where temperature and seed came from, as errors name them: "sampling." or top level

    @classmethod
    def with_sampling(cls, text: str, sampling: SamplingOptions, **fields: object) -> AudioRequest:
        """A request that takes its temperature and seed from a text-shaped sampling object. Audio reads only
        those two: another knob that is set is an error, not silently ignored."""
        for name in sampling.text_only_knobs():
            raise InvalidArgument(f"sampling.{name}", "is not used by audio models (only temperature and seed are)")
        knobs = {"temperature": sampling.temperature, "seed": sampling.seed, "knobs": "sampling."}
        return cls(text, **knobs, **fields)  # type: ignore[arg-type]

    def chunk_size(self, info: AudioModelInfo) -> int:
        """Samples per wire chunk: ``chunk_samples``, or 20 ms for 0; at most one second."""
        if self.chunk_samples == 0:
            return info.sample_rate * DEFAULT_CHUNK_MS // 1000
        if not 1 <= self.chunk_samples <= info.sample_rate:
            limit = f"must be 0 ({DEFAULT_CHUNK_MS} ms) or 1..{info.sample_rate} (one second)"
            raise InvalidArgument("chunk_samples", f"{limit}, got {self.chunk_samples}")
        return self.chunk_samples

    def validate(self, info: AudioModelInfo) -> str:
        """Check the request's fields; returns the voice that speaks."""
        if not self.text.strip():
            raise InvalidArgument("text", "must not be empty")
        if not any(c.isalnum() for c in self.text):  # espeak-ng says nothing for it: a stream of no audio
            raise InvalidArgument("text", "has nothing to speak (no letter or digit)")
        if len(self.text) > info.max_text_chars:
            raise InvalidArgument("text", f"at most {info.max_text_chars} characters, got {len(self.text)}")
        voice = self.voice or info.default_voice
        if voice not in info.voices:
            raise NotFound(
                f"voice: {voice!r} is not a voice of model {info.id!r} "
                f"(accent+variant, e.g. {info.default_voice!r}; ListModels lists them)"
            )
        seconds = info.max_seconds if self.max_seconds is None else self.max_seconds
        if not math.isfinite(seconds) or not 0 < seconds <= info.max_seconds:
            raise InvalidArgument("max_seconds", f"must be in (0, {info.max_seconds:g}], got {seconds}")
        temperature = self.temperature
        if temperature is not None and not (math.isfinite(temperature) and 0 <= temperature <= MAX_AUDIO_TEMPERATURE):
            raise InvalidArgument(
                f"{self.knobs}temperature",
                f"must be between 0 and {MAX_AUDIO_TEMPERATURE:g} (0 is greedy), got {temperature}",
            )
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise InvalidArgument(f"{self.knobs}seed", f"must be in 0..2**64-1, got {self.seed}")
        self.chunk_size(info)
        return voice


@dataclass(frozen=True)
class DreamOptions:
    layer: str = ""  # empty: block2, or logits with a target
    target: str = ""  # a class name, with layer logits
    octaves: int = 0  # 0: DEFAULT_DREAM_OCTAVES

    @property
    def given(self) -> bool:
        return bool(self.layer or self.target or self.octaves)


@dataclass(frozen=True)
class ImagePlan:
    """A validated image request: what the engine runs. Requests with equal :attr:`key` may share one batched call
    of the sampler (the seed, the label and the base image are per row)."""

    mode: str  # SAMPLE, WALK, CHAIN or DREAM
    seed: int | None
    label: int | None  # the class index of a conditional generator
    steps: int  # rbm: Gibbs steps; dream: steps per octave; else 0
    frames: int  # frames the model makes in all
    frame_every: int
    walk_to: int | None = None
    base: np.ndarray | None = None  # dream: (H, W) float32 in [0, 1]
    layer: str = ""
    target: int | None = None
    octaves: int = 0

    @property
    def key(self) -> tuple[object, ...]:
        shape = None if self.base is None else self.base.shape
        return (self.mode, self.steps, self.frames, self.layer, self.target, self.octaves, shape)


@dataclass(frozen=True)
class ImageRequest:
    """One image stream (see proto/antiphon/v1/image.proto for what each family reads); zeros and empty values
    take the defaults."""

    label: str = ""
    seed: int | None = None  # same seed, same frames, alone or batched
    steps: int = 0
    frame_every: int = 0  # 0: every frame
    walk_to_seed: int | None = None
    walk_frames: int = 0
    base_image: bytes = b""  # dream: a PNG (or JPEG)
    dream: DreamOptions = DreamOptions()
    request_id: str = ""
    transport: str = ""
    label_field: str = "label"  # the wire field that carried the label (OpenAI's images API: prompt)

    def validate(self, info: ImageModelInfo) -> ImagePlan:
        """Check the fields against the model; returns what the engine runs."""
        family = info.family
        for name, seed in (("seed", self.seed), ("walk_to_seed", self.walk_to_seed)):
            if seed is not None and not 0 <= seed <= MAX_IMAGE_SEED:
                raise InvalidArgument(name, f"must be in 0..2**63-1, got {seed}")
        if not 0 <= self.frame_every <= MAX_FRAME_EVERY:
            limit = f"must be 0 (every frame) or 1..{MAX_FRAME_EVERY}"
            raise InvalidArgument("frame_every", f"{limit}, got {self.frame_every}")
        every = self.frame_every or 1
        if self.walk_frames and self.walk_to_seed is None:
            raise InvalidArgument("walk_frames", "is only read with walk_to_seed")
        if family not in LATENT_FAMILIES and self.walk_to_seed is not None:
            raise InvalidArgument("walk_to_seed", f"a latent walk needs a latent space; the {family} model has none")
        if family != DREAM:
            if self.base_image:
                raise InvalidArgument("base_image", f"is only read by Deep Dream models, not by the {family} model")
            if self.dream.given:
                raise InvalidArgument("dream", f"is only read by Deep Dream models, not by the {family} model")
        if family == DREAM or not info.labels:
            if self.label:
                what = "Deep Dream takes dream.target" if family == DREAM else f"the {family} model is unconditional"
                raise InvalidArgument(self.label_field, f"{what}: give no class")
            label = None
        elif self.label:
            label = info.label_index(self.label, self.label_field)
        else:
            label = None  # the model's choice: the seed's class, once the seed is known
        if family in LATENT_FAMILIES:
            if self.steps:
                raise InvalidArgument("steps", f"the {family} model makes its image in one step: give 0")
            if self.walk_to_seed is None:
                return ImagePlan(SAMPLE, self.seed, label, 0, 1, every)
            frames = self.walk_frames or DEFAULT_WALK_FRAMES
            if not 2 <= frames <= info.max_walk_frames:
                raise InvalidArgument("walk_frames", f"must be 0 (16) or 2..{info.max_walk_frames}, got {frames}")
            return ImagePlan(WALK, self.seed, label, 0, frames, every, walk_to=self.walk_to_seed)
        if family == "rbm":
            steps = self.steps or DEFAULT_GIBBS_STEPS
            if not 1 <= steps <= info.max_steps:
                raise InvalidArgument("steps", f"must be 0 ({DEFAULT_GIBBS_STEPS}) or 1..{info.max_steps}, got {steps}")
            return ImagePlan(CHAIN, self.seed, None, steps, steps, every)
        return self._dream_plan(info, every)

    def _dream_plan(self, info: ImageModelInfo, every: int) -> ImagePlan:
        dream = self.dream
        target = info.label_index(dream.target, "dream.target") if dream.target else None
        layer = dream.layer or ("logits" if target is not None else "block2")
        if layer not in info.layers:
            raise InvalidArgument("dream.layer", f"must be one of {', '.join(info.layers)}, got {layer!r}")
        if (layer == "logits") != (target is not None):
            raise InvalidArgument("dream.target", "give a target class with layer logits, and only with it")
        octaves = dream.octaves or DEFAULT_DREAM_OCTAVES
        if not 1 <= octaves <= MAX_DREAM_OCTAVES:
            limit = f"must be 0 ({DEFAULT_DREAM_OCTAVES}) or 1..{MAX_DREAM_OCTAVES}"
            raise InvalidArgument("dream.octaves", f"{limit}, got {octaves}")
        steps = self.steps or DEFAULT_DREAM_STEPS
        if not 1 <= steps <= MAX_DREAM_STEPS or steps * octaves > info.max_steps:
            limit = f"must be 0 ({DEFAULT_DREAM_STEPS}) or 1..{MAX_DREAM_STEPS}, with steps x octaves at most"
            raise InvalidArgument("steps", f"{limit} {info.max_steps}, got {steps} x {octaves}")
        if not self.base_image:
            raise InvalidArgument("base_image", "Deep Dream needs an image to dream on (PNG bytes)")
        base = decode_image(self.base_image, "base_image")
        return ImagePlan(DREAM, self.seed, None, steps, steps * octaves, every, None, base, layer, target, octaves)


def decode_image(data: bytes, field: str) -> np.ndarray:
    """PNG (or JPEG, as uploads to OpenAI's image edits come) bytes as a grey image (H, W) float32 in [0, 1];
    InvalidArgument naming ``field`` for anything else."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])
            width, height = image.size
            if not (1 <= width <= MAX_BASE_SIDE and 1 <= height <= MAX_BASE_SIDE):
                limit = f"at most {MAX_BASE_SIDE} x {MAX_BASE_SIDE} pixels"
                raise InvalidArgument(field, f"{limit}, got {width} x {height}")
            grey = np.asarray(image.convert("L"), dtype=np.float32)
    except InvalidArgument:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombWarning, SyntaxError) as exc:
        raise InvalidArgument(field, f"is not a readable PNG or JPEG image ({type(exc).__name__})") from None
    return grey / 255.0


@dataclass(frozen=True)
class ClassifyInput:
    text: str | None = None
    audio: bytes | None = None
    audio_sample_rate: int = 0
    tensor_shape: tuple[int, ...] = ()
    tensor_values: np.ndarray | None = None  # float32, row-major
    transport: str = ""

    @property
    def kind(self) -> str | None:
        if self.text is not None:
            return TEXT
        if self.audio is not None:
            return AUDIO
        if self.tensor_values is not None:
            return TENSOR
        return None


MAX_CONVERSATION_MESSAGES = 256
CONVERSATION_CHARS_FACTOR = 16  # a conversation may hold this many times max_prompt_chars in all
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str
    name: str = ""  # a user's or assistant's speaker name; empty: the default user name, or the persona


@dataclass(frozen=True)
class Conversation:
    """A whole conversation, as chat front ends resend it every turn; the reply is the persona's next turn. The
    model's state after each reply is kept by the text it read, so a follow-up reads only its new text."""

    messages: tuple[Message, ...]
    persona: str = ""  # empty: the model's default persona
    sampling: SamplingOptions = SamplingOptions()
    request_id: str = ""
    transport: str = ""

    def validate(self, info: TextModelInfo) -> str:
        """Check the messages; returns the persona that replies, as the model spells it."""
        if not self.messages:
            raise InvalidArgument("messages", "must hold at least one message")
        if len(self.messages) > MAX_CONVERSATION_MESSAGES:
            raise InvalidArgument("messages", f"at most {MAX_CONVERSATION_MESSAGES} messages, got {len(self.messages)}")
        persona = info.replying(self.persona)
        total = 0
        for i, message in enumerate(self.messages):
            if message.role not in ROLES:
                raise InvalidArgument(f"messages[{i}].role", f"must be one of {', '.join(ROLES)}, got {message.role!r}")
            if len(message.content) > info.max_prompt_chars:
                limit = f"at most {info.max_prompt_chars} characters, got {len(message.content)}"
                raise InvalidArgument(f"messages[{i}].content", limit)
            if len(message.name) > MAX_SPEAKER_NAME or "\n" in message.name:
                limit = f"must be one line of at most {MAX_SPEAKER_NAME} characters"
                raise InvalidArgument(f"messages[{i}].name", limit)
            total += len(message.content)
        most = CONVERSATION_CHARS_FACTOR * info.max_prompt_chars
        if total > most:
            raise InvalidArgument("messages", f"at most {most} characters in all, got {total}")
        last = self.messages[-1]
        if last.role != "user" or not last.content.strip():
            last_field = f"messages[{len(self.messages) - 1}]"
            raise InvalidArgument(last_field, "the last message must be the user's, and not empty")
        return persona

    def dialogue(self, info: TextModelInfo, persona: str, user_speaker: str) -> str:
        """The conversation in the corpus's dialogue form, ending with the persona's name: what the model reads.
        A blank line ends a turn there, so blank lines inside a message are read as one line break (an assistant
        message without one, such as a reply the model wrote, is read back exactly); a system message is a
        paragraph of its own."""
        parts = []
        for message in self.messages:
            content = message.content
            if message.role != "assistant" or TURN_END in content:
                content = one_paragraph(content)  # a reply the model wrote is read back exactly as it was said
            if not content.strip():
                continue
            if message.role == "system":
                parts.append(f"{content}{TURN_END}")
            elif message.role == "user":
                parts.append(f"{message.name or user_speaker}.\n{content}{TURN_END}")
            else:
                speaker = (info.persona(message.name) if message.name else None) or persona
                parts.append(f"{speaker}.\n{content}{TURN_END}")
        return "".join(parts) + f"{persona}.\n"


def one_paragraph(text: str) -> str:
    """``text`` with no blank line (a run of line breaks becomes one) and no line break at either end."""
    return re.sub(r"\n{2,}", "\n", text.replace("\r\n", "\n")).strip("\n")
