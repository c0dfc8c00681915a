"""The audio engine: one asyncio-driven loop per WaveNet that advances every live stream in one compiled call.

A request's text goes through espeak-ng (the linguistic and acoustic front end) in the requested voice; the
rendering's log-mel frames and the voice id make the stream's frame features. That preparation runs on a small
thread pool, off the event loop. Prepared streams then wait to join the batch.

Each iteration of the loop, between two calls of the compiled step:

1. streams that ended or were cancelled leave the batch (their rows are dropped);
2. prepared streams join, up to ``max_streams`` (their rows start from silence);
3. every stream with room in its output buffer is advanced by ``chunk`` samples in one call of
   :meth:`FastWaveNet.generate` (on the engine's worker thread, so the event loop stays free; with
   ``threads`` > 1 the rows are split across cores). A stream whose consumer stops reading is paused: it keeps
   its row but is not advanced.

A stream ends when it has produced its rendering's length in samples (``stop``) or ``max_seconds`` of audio
(``length``). Each stream samples from its own counter-based random source inside the compiled loop, so a seeded
request produces the same samples alone or batched.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from server.audio.checkpoint import load_audio_model
from server.audio.constants import SAMPLE_RATE
from server.audio.fast import FastWaveNet, StreamState
from server.audio.features import MelFrames, utterance_features
from server.audio.model import WaveNet
from server.data.speech import Rendering, synthesize, trim_silence
from server.data.speech import voices as espeak_voices
from server.engine.loop import FAILED, EngineLoop
from server.engine.requests import AudioModelInfo, AudioRequest
from server.engine.streams import FINISH_CANCELLED, FINISH_LENGTH, FINISH_STOP, AudioStream
from server.errors import AntiphonError, InvalidArgument
from server.metrics import EngineGauges
from server.options import at_least

log = logging.getLogger(__name__)

DEFAULT_VOICE = "en-us+m1"


@dataclass(frozen=True)
class AudioLimits:
    max_streams: int = 16  # streams advanced together
    max_waiting: int = 32  # streams being prepared or waiting to join before answering "overloaded"
    max_text_chars: int = 1000
    max_seconds: float = 30.0  # the longest audio a request may ask for
    stream_buffer: int = SAMPLE_RATE  # unread samples per stream before the stream pauses
    chunk: int = 640  # samples per stream per call of the compiled step (40 ms)
    threads: int = 1  # cores the compiled step splits the batch across
    temperature: float = 1.0  # a request's default
    prepare_workers: int = 2  # threads running espeak-ng and the conditioning

    def validate(self) -> AudioLimits:
        at_least(self, 1, "max_streams", "max_text_chars", "stream_buffer", "chunk", "threads", "prepare_workers")
        at_least(self, 0, "max_waiting")
        if not math.isfinite(self.max_seconds) or self.max_seconds <= 0:
            raise InvalidArgument("max_seconds", f"must be positive, got {self.max_seconds}")
        return self


@dataclass(eq=False)
class _Job:
    stream: AudioStream
    text: str
    voice: str
    voice_id: int
    seed: int
    temperature: float
    max_samples: int
    feats: np.ndarray | None = None  # (F, C) once prepared
    total: int = 0  # samples this stream produces
    cut: bool = False  # the rendering is longer than max_samples
    produced: int = 0
    end_reason: str | None = None
    finalized: bool = False
    prepared_at: float | None = None


class AudioEngine(EngineLoop[_Job]):
    """Serves one WaveNet: submit with :meth:`generate`, read the returned stream of mu-law codes."""

    def __init__(
        self,
        model_id: str,
        model: WaveNet,
        voice_table: list[str],
        limits: AudioLimits | None = None,
        description: str = "",
        default_voice: str = DEFAULT_VOICE,
    ) -> None:
        self.limits = (limits or AudioLimits()).validate()
        super().__init__(model_id, self.limits.max_streams, self.limits.max_waiting, "audio", "audio streams")
        self.model = model.eval()
        self.description = description
        self.voice_ids = {name: i for i, name in enumerate(voice_table) if i > 0}
        servable = [*espeak_voices("train"), *espeak_voices("heldout")]
        self.voices = tuple(dict.fromkeys([*servable, *self.voice_ids]))  # every other voice uses id 0 ("unseen")
        if default_voice not in self.voices:
            raise InvalidArgument("default_voice", f"{default_voice!r} is not a voice espeak-ng renders here")
        self.default_voice = default_voice
        self.fast = FastWaveNet(model, threads=self.limits.threads)
        self.frames = MelFrames(model.config.n_mels, model.config.hop)
        self._preparing = 0
        self._ready: deque[_Job] = deque()
        self._jobs: list[_Job] = []  # row i of the state belongs to _jobs[i]
        self._state: StreamState | None = None
        self._prepare_pool = ThreadPoolExecutor(
            max_workers=self.limits.prepare_workers, thread_name_prefix=f"audio-prep-{model_id}"
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: Path,
        model_id: str = "wavenet",
        limits: AudioLimits | None = None,
        default_voice: str = DEFAULT_VOICE,
    ) -> AudioEngine:
        model, voice_table, meta = load_audio_model(path, "cpu")
        c = model.config
        description = (
            f"WaveNet {c.layers} layers x {c.residual_channels} channels, mu-law 8-bit at {SAMPLE_RATE} Hz, "
            "conditioned on espeak-ng log-mel frames"
        )
        bits = meta.get("metrics", {}).get("heldout_bits_per_sample")
        if bits is not None:
            description += f", {bits:.3f} bits/sample held out"
        return cls(model_id, model, voice_table, limits, description, default_voice)

    # -- public --------------------------------------------------------------
    @property
    def info(self) -> AudioModelInfo:
        return AudioModelInfo(
            id=self.model_id,
            description=self.description,
            sample_rate=SAMPLE_RATE,
            voices=self.voices,
            default_voice=self.default_voice,
            max_text_chars=self.limits.max_text_chars,
            max_seconds=self.limits.max_seconds,
        )

    @property
    def live_streams(self) -> int:
        """Streams being prepared, waiting or in the batch (ended ones leave at the next call)."""
        return self._preparing + len(self._ready) + len(self._jobs)

    @torch.no_grad()
    def warm_up(self) -> None:
        """Compile the step (or load it from numba's cache) and run espeak-ng once, so the first request is fast."""
        wave = trim_silence(synthesize("ready", Rendering(voice=self.default_voice)), pad=160)
        feats = utterance_features(self.model, self.frames(wave), self.voice_ids.get(self.default_voice, 0))[0]
        self.fast.generate(self.fast.start(feats.numpy(), 0, 1.0), self.limits.chunk)

    def generate(self, request: AudioRequest) -> AudioStream:
        """Speak ``request.text``; raises InvalidArgument, NotFound, ResourceExhausted or Unavailable at once."""
        limits = self.limits
        voice = request.validate(self.info)
        text = request.text.strip()
        seconds = limits.max_seconds if request.max_seconds is None else request.max_seconds
        temperature = limits.temperature if request.temperature is None else request.temperature
        self._check_capacity()
        stream = AudioStream(limits.stream_buffer, self._wake.set, request.request_id, SAMPLE_RATE, request.transport)
        job = _Job(
            stream,
            text,
            voice,
            self.voice_ids.get(voice, 0),
            secrets.randbits(64) if request.seed is None else request.seed,
            float(temperature),
            max(1, round(seconds * SAMPLE_RATE)),
        )
        self._preparing += 1
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._prepare_pool, self._prepare, job)
        future.add_done_callback(lambda f: self._prepared(job, f))
        return stream

    def _ending(self) -> int:
        return sum(1 for j in self._jobs if j.end_reason is not None or j.stream.cancel_requested)

    def _drop_all(self) -> None:
        for job in [*self._jobs, *self._ready]:
            self._finalize(job, FINISH_CANCELLED)
        self._jobs, self._state = [], None
        self._ready.clear()

    def _release(self) -> None:
        super()._release()
        self._prepare_pool.shutdown(wait=False, cancel_futures=True)
        self.fast.close()

    # -- preparation (thread pool) ----------------------------------------------
    @torch.no_grad()
    def _prepare(self, job: _Job) -> None:
        """espeak-ng's rendering of the text -> its log-mel frames -> the stream's frame features."""
        if job.stream.cancel_requested:
            return
        wave = trim_silence(synthesize(job.text, Rendering(voice=job.voice)), pad=160)
        job.total = min(len(wave), job.max_samples)
        job.cut = len(wave) > job.max_samples
        if job.total == 0:
            return
        job.feats = utterance_features(self.model, self.frames(wave), job.voice_id)[0].numpy()

    def _prepared(self, job: _Job, future: asyncio.Future[None]) -> None:  # on the event loop
        self._preparing -= 1
        job.prepared_at = time.monotonic()
        if self._closed or future.cancelled():
            self._finalize(job, FINISH_CANCELLED)
        elif (error := future.exception()) is not None:
            log.error("model %s: preparing request %s failed: %s", self.model_id, job.stream.request_id, error)
            job.finalized = True
            job.stream.fail(error if isinstance(error, AntiphonError) else AntiphonError("internal error"))
            self._record(job, FAILED)
        elif job.stream.cancel_requested:
            self._finalize(job, FINISH_CANCELLED)
        elif job.feats is None:  # nothing to say (the rendering is silence)
            self._finalize(job, FINISH_STOP)
        else:
            self._ready.append(job)
            self._wake.set()
        self._notify_progress()

    # -- the loop --------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Cleared before the stream states are read: a cancel, a read or a new stream after this point sets it
            # again, so the wait below cannot miss it.
            self._wake.clear()
            stall_in = self._cancel_stalled(j.stream for j in self._jobs)
            round_ = self._next_round(self._jobs, self._ready)
            if round_ is None:
                self._notify_progress()
                await self._idle(stall_in)
                continue
            started = time.monotonic()
            try:
                codes = await loop.run_in_executor(
                    self._executor, self._compute, round_.keep, round_.joining, round_.ready
                )
            except Exception:
                self._fail_step([*self._jobs, *round_.joining])
                self._jobs, self._state = [], None
                continue
            if round_.ready:
                self.metrics.iteration(self.model_id, time.monotonic() - started, len(round_.ready))
            self.steps += 1
            for job in round_.leaving:
                self._finalize(job, job.end_reason or FINISH_CANCELLED)
            rows = self._jobs = round_.rows
            self._route([rows[i] for i in round_.ready], codes)
            self._notify_progress()

    def _compute(self, keep: list[int] | None, joining: list[_Job], active: list[int]) -> np.ndarray:
        """Drop, add and advance rows (on the worker thread; the loop awaits it, so nothing races)."""
        state = self._state
        if keep is not None:
            state = state.select(keep) if keep and state is not None else None
        if joining:
            fast = self.fast
            new = [fast.start(j.feats, j.seed, j.temperature) for j in joining if j.feats is not None]
            state = StreamState.concat([state, *new] if state is not None else new)
        self._state = state
        if not active or state is None:
            return np.zeros((0, self.limits.chunk), np.uint8)
        codes, _ = self.fast.generate(state, self.limits.chunk, rows=active)
        return codes

    def _route(self, jobs: list[_Job], codes: np.ndarray) -> None:
        now = time.monotonic()
        for job, row in zip(jobs, codes, strict=True):
            take = min(len(row), job.total - job.produced)
            if take <= 0:
                continue
            stream = job.stream
            if stream.first_token_at is None:
                stream.first_token_at = now
            stream.push(row[:take].copy())
            job.produced += take
            if job.produced >= job.total:
                job.end_reason = FINISH_LENGTH if job.cut else FINISH_STOP
                self._finalize(job, job.end_reason)  # the client hears at once; the row leaves at the next call

    def _summary(self, job: _Job) -> tuple[str, str, str]:
        return "audio", f"voice={job.voice} chars={len(job.text)} samples={job.produced}", "first_audio_ms"

    def _record(self, job: _Job, reason: str) -> None:
        stream = job.stream
        first, duration = stream.times()
        self.metrics.audio_request(
            self.model_id,
            stream.transport,
            reason,
            first,
            duration,
            job.produced,
            stream.sample_rate,
        )

    def gauges(self) -> EngineGauges:
        """What the engine holds now (read at scrape time, on the event loop)."""
        return EngineGauges(
            self.model_id, running=len(self._jobs) - self._ending(), waiting=self._preparing + len(self._ready)
        )
