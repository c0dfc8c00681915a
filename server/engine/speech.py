"""A spoken chat turn: the reply's text streams as it is written, and each sentence is spoken as soon as it is
complete, while the next one is still being written. No torch here; both transports use :func:`speak_turn`.

Events come out in one order: text pieces, and the audio of sentence n after the text that completed it. The
buffer between the writers and the consumer is bounded, so a slow consumer pauses the text and audio streams.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from server.engine.registry import AudioService
from server.engine.requests import AudioRequest, SamplingOptions
from server.engine.streams import AudioStream, TextStream
from server.errors import InvalidArgument

# A sentence ends at . ! ? ; or : followed by a space or newline (closing quotes and brackets stay with it), or at
# a line break: the corpus's verse has one per line.
_SENTENCE_END = re.compile(r"[.!?;:]+[\"')\]]*(?=\s)|\n")
_EVENT_BUFFER = 32
SEED_MASK = (1 << 64) - 1


def split_sentences(buffer: str, max_chars: int) -> tuple[list[str], str]:
    """The complete sentences at the start of ``buffer`` (none longer than ``max_chars``: a longer one is cut at
    a space) and what is left."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(buffer):
        sentences.append(buffer[start : match.end()])
        start = match.end()
    rest = buffer[start:]
    out: list[str] = []
    for sentence in [*sentences, rest]:
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            out.append(sentence[:cut])
            sentence = sentence[cut:]
        out.append(sentence)
    return out[:-1], out[-1]


def speakable(sentence: str) -> bool:
    return any(c.isalnum() for c in sentence)


@dataclass(frozen=True)
class SpeechOptions:
    voice: str = ""
    temperature: float | None = None  # None: the audio model's default
    seed: int | None = None  # sentence n is generated with seed + n


@dataclass
class SpokenTurn:
    """What a spoken turn produced, read after the events end; :meth:`cancel` stops its speech where it is."""

    sentences: int = 0
    samples: int = 0
    sample_rate: int = 0
    cancelled: bool = False
    speaking: AudioStream | None = None  # the sentence being spoken

    def cancel(self) -> None:
        """No more sentences, and the one being spoken leaves the batch at the next step (the text stream is the
        caller's to cancel: it may have ended already)."""
        self.cancelled = True
        if self.speaking is not None:
            self.speaking.cancel()


TextEvent = str
AudioEvent = np.ndarray  # uint8 mu-law codes of the audio model


def speech_options(voice: str, sampling: SamplingOptions, audio: AudioService) -> SpeechOptions:
    """Check the voice before any text is written, so a bad one fails the turn at once."""
    if voice and voice not in audio.info.voices:
        raise InvalidArgument("voice", f"{voice!r} is not a voice of {audio.info.id} ({len(audio.info.voices)} voices)")
    return SpeechOptions(voice=voice, seed=sampling.seed)  # the audio model's own default temperature


async def speak_turn(
    text: TextStream, audio: AudioService, options: SpeechOptions, turn: SpokenTurn, request_id: str = ""
) -> AsyncIterator[TextEvent | AudioEvent]:
    """Text pieces (``str``) and audio codes (``np.ndarray``) of one turn, in order. Leaving early cancels both
    the text stream and the sentence being spoken."""
    events: asyncio.Queue[TextEvent | AudioEvent | BaseException | None] = asyncio.Queue(_EVENT_BUFFER)
    sentences: asyncio.Queue[str | None] = asyncio.Queue()
    max_chars = audio.info.max_text_chars
    turn.sample_rate = audio.info.sample_rate

    async def write() -> None:
        pending = ""
        try:
            async for piece in text:
                await events.put(piece)
                done, pending = split_sentences(pending + piece, max_chars)
                for sentence in done:
                    sentences.put_nowait(sentence)
            sentences.put_nowait(pending)
        finally:
            sentences.put_nowait(None)

    async def speak() -> None:
        while (sentence := await sentences.get()) is not None and not turn.cancelled:
            if not speakable(sentence):
                continue
            seed = None if options.seed is None else (options.seed + turn.sentences) & SEED_MASK
            request = AudioRequest(
                text=sentence.strip(),
                voice=options.voice,
                temperature=options.temperature,
                seed=seed,
                request_id=f"{request_id}/s{turn.sentences}",
                transport=text.transport,
            )
            turn.sentences += 1
            stream: AudioStream = audio.generate(request)
            turn.speaking = stream
            try:
                async for codes in stream:
                    turn.samples += int(codes.size)
                    await events.put(codes)
            finally:
                stream.cancel()

    async def run(job: asyncio.Future[None] | asyncio.Task[None]) -> None:
        try:
            await job
        except BaseException as exc:  # handed to the consumer, which raises it
            await events.put(exc)
            return
        await events.put(None)

    writer = asyncio.ensure_future(write())
    speaker = asyncio.ensure_future(speak())
    runners = [asyncio.ensure_future(run(writer)), asyncio.ensure_future(run(speaker))]
    finished = 0
    try:
        while finished < len(runners):
            event = await events.get()
            if event is None:
                finished += 1
            elif isinstance(event, BaseException):
                raise event
            else:
                yield event
    finally:
        text.cancel()
        for job in (writer, speaker, *runners):
            job.cancel()
        await asyncio.gather(writer, speaker, *runners, return_exceptions=True)
