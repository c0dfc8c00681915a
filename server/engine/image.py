"""The image engine: one asyncio-driven loop per image model that streams every request's frames as they are made.

A sampler (``server.image.sampling``) batches by taking several seeds in one generator call: row i of every frame
belongs to seed i. So the engine batches in groups. Each iteration of the loop, between two calls of the model:

1. a stream the client cancelled ends at once (its slot is free); a group whose streams have all ended is dropped
   (its generator is closed), otherwise its rows are still computed until the group ends;
2. the requests waiting, up to the free slots, form new groups: those with the same settings (the family's mode,
   steps, walk length, dream layer, target and octaves, the base image's shape) share one generator call, up to
   the sampler's 64 rows; the seed, the class and the base image are per row;
3. every group with at least one live stream that has room in its buffer advances by one frame (all the groups in
   one call on the engine's worker thread, so the event loop stays free), and each frame's rows go to their
   streams: every ``frame_every``-th frame and the last.

A group never takes new members once it has started: a request arriving later waits for the next iteration and
starts a group of its own. A stream whose client stops reading holds at most the frames it was sent (the requests'
limits bound them); its group pauses only when none of its streams has room, so a slow reader cannot stall the
requests batched with it.

Each row draws its randomness from a generator seeded by its own seed, so a seeded request gives the same frames
alone or batched: byte for byte for the RBM, and up to float rounding of batched arithmetic for the continuous
models (at most one level of 255 in a pixel; the tests check both).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from server.checkpoint import read_meta
from server.engine.loop import EngineLoop
from server.engine.requests import CHAIN, DREAM, LATENT_FAMILIES, SAMPLE, ImageModelInfo, ImagePlan, ImageRequest
from server.engine.streams import FINISH_CANCELLED, FINISH_STOP, ImageStream, Picture
from server.errors import AntiphonError
from server.image.evaluator import LAYERS
from server.image.sampling import MAX_BATCH, DeepDream, DreamSettings, Frame, GibbsSampler, LatentSampler, open_sampler
from server.metrics import EngineGauges
from server.options import at_least

log = logging.getLogger(__name__)

DESCRIPTIONS = {
    "dcgan": "DCGAN generator",
    "vae": "convolutional VAE decoder",
    "vaegan": "VAE-GAN decoder",
    "rbm": "Bernoulli RBM, one frame per block Gibbs step",
    "dream": "Deep Dream on the evaluator CNN, one frame per gradient step",
}


@dataclass(frozen=True)
class ImageLimits:
    max_streams: int = 64  # streams (one image each) in the running groups
    max_waiting: int = 64  # streams waiting for the next iteration before answering "overloaded"
    max_steps: int = 1000  # rbm: Gibbs steps; dream: steps x octaves
    max_walk_frames: int = 256
    stream_buffer: int = 8  # unread frames per stream before it stops counting as ready
    dream_size: int = 112  # the side of Deep Dream's images

    def validate(self) -> ImageLimits:
        at_least(self, 1, "max_streams", "max_steps", "max_walk_frames", "stream_buffer", "dream_size")
        at_least(self, 0, "max_waiting")
        at_least(self, 2, "max_walk_frames")
        return self


@dataclass(eq=False)
class _Job:
    stream: ImageStream
    plan: ImagePlan
    seed: int
    label: int | None  # a conditional generator's class
    end_reason: str | None = None
    finalized: bool = False


@dataclass(eq=False)
class _Group:
    jobs: list[_Job]  # row i of every frame belongs to jobs[i]
    frames: Iterator[Frame] = field(repr=False)  # the sampler's generator, advanced on the worker thread only

    def live(self) -> list[_Job]:
        return [j for j in self.jobs if not j.finalized]

    def ready(self) -> bool:
        return any(j.stream.has_room() for j in self.live())


class ImageEngine(EngineLoop[_Job]):
    """Serves one image model: submit with :meth:`generate`, read the returned stream of frames."""

    def __init__(
        self,
        model_id: str,
        sampler: LatentSampler | GibbsSampler | DeepDream,
        limits: ImageLimits | None = None,
        description: str = "",
        labels: Sequence[str] = (),
    ) -> None:
        self.limits = (limits or ImageLimits()).validate()
        super().__init__(model_id, self.limits.max_streams, self.limits.max_waiting, "image", "image streams")
        self.sampler = sampler
        family = sampler.info.family
        self.family = family
        if isinstance(sampler, LatentSampler):
            labels = sampler.labels
        elif isinstance(sampler, DeepDream):
            classes = sampler.evaluator.config.num_classes
            labels = tuple(labels) if len(labels) == classes else tuple(str(i) for i in range(classes))
        else:
            labels = ()
        size = max(self.limits.dream_size, sampler.info.image_size) if family == DREAM else sampler.info.image_size
        self._info = ImageModelInfo(
            id=model_id,
            description=description or DESCRIPTIONS.get(family, family),
            family=family,
            image_size=size,
            labels=tuple(labels),
            max_steps=self.limits.max_steps if family in ("rbm", DREAM) else 0,
            max_walk_frames=self.limits.max_walk_frames if family in LATENT_FAMILIES else 0,
            max_request_streams=self.limits.max_streams + self.limits.max_waiting,
            layers=LAYERS if family == DREAM else (),
        )
        self._waiting: deque[_Job] = deque()
        self._groups: list[_Group] = []
        self._dropped: list[_Group] = []  # groups whose streams all ended: closed at the next worker call

    @classmethod
    def from_checkpoint(
        cls, path: Path, model_id: str = "", limits: ImageLimits | None = None, device: str = "cpu"
    ) -> ImageEngine:
        """The engine over an image checkpoint (any family); ``model_id`` defaults to the file's stem."""
        sampler = open_sampler(path, device)
        meta = read_meta(path)
        info = sampler.info
        limits = (limits or ImageLimits()).validate()
        side = max(limits.dream_size, info.image_size) if info.family == DREAM else info.image_size
        description = f"{DESCRIPTIONS.get(info.family, info.family)}, {side}x{side} grey"
        if info.labels:
            description += f", class-conditional ({len(info.labels)} classes)"
        return cls(model_id or path.stem, sampler, limits, description, tuple(meta.get("labels", ())))

    # -- public --------------------------------------------------------------
    @property
    def info(self) -> ImageModelInfo:
        return self._info

    @property
    def live_streams(self) -> int:
        """Streams waiting or in a running group, ended ones not counted."""
        return len(self._waiting) + sum(len(g.live()) for g in self._groups)

    def generate(self, request: ImageRequest) -> ImageStream:
        """Start ``request``; raises InvalidArgument, NotFound, ResourceExhausted or Unavailable at once."""
        plan = request.validate(self.info)
        self._check_capacity()
        seed = secrets.randbits(63) if plan.seed is None else plan.seed
        label = plan.label
        if label is None and self.info.labels and self.family in LATENT_FAMILIES:
            label = seed % len(self.info.labels)  # the model's choice: the seed's class
        limit, wake = self.limits.stream_buffer, self._wake.set
        stream = ImageStream(limit, wake, request.request_id, plan.frames, request.transport)
        self._waiting.append(_Job(stream, plan, seed, label))
        self._wake.set()
        return stream

    def _ending(self) -> int:
        return sum(1 for g in self._groups for j in g.live() if j.stream.cancel_requested)

    def _drop_all(self) -> None:
        for job in [*self._waiting, *(j for g in self._groups for j in g.jobs)]:
            self._finalize(job, FINISH_CANCELLED)
        self._waiting.clear()
        self._groups, self._dropped = [], []

    # -- the loop --------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Cleared before the streams are read: a cancel, a read or a new request after this point sets it again.
            self._wake.clear()
            stall_in = self._cancel_stalled(j.stream for g in self._groups for j in g.live())
            self._sweep()
            self._start_groups()
            ready = [g for g in self._groups if g.ready()]
            dropped, self._dropped = self._dropped, []
            if not ready and not dropped:
                self._notify_progress()
                await self._idle(stall_in)
                continue
            started = time.monotonic()
            try:
                results = await loop.run_in_executor(self._executor, _advance, ready, dropped)
            except Exception:  # the call itself failed: every group it held fails
                self._fail_step([j for g in ready for j in g.live()])
                self._groups = [g for g in self._groups if g not in ready]
                continue
            if ready:
                self.metrics.iteration(self.model_id, time.monotonic() - started, sum(len(g.live()) for g in ready))
            self.steps += 1
            for group, result in zip(ready, results, strict=True):
                if isinstance(result, Exception):
                    try:
                        raise result
                    except Exception:
                        self._fail_step(group.live())
                    self._groups.remove(group)
                else:
                    self._route(group, *result)
            self._notify_progress()

    def _sweep(self) -> None:
        """Cancelled streams end now; a group with no live stream left is dropped."""
        for group in self._groups:
            for job in group.live():
                if job.stream.cancel_requested:
                    self._finalize(job, FINISH_CANCELLED)
        gone = [g for g in self._groups if not g.live()]
        if gone:
            self._groups = [g for g in self._groups if g.live()]
            self._dropped += gone

    def _start_groups(self) -> None:
        """The waiting requests, up to the free slots, as new groups of equal settings."""
        free = self._max_streams - sum(len(g.live()) for g in self._groups)
        taken: dict[tuple[object, ...], list[list[_Job]]] = {}
        while self._waiting and free > 0:
            job = self._waiting.popleft()
            if job.stream.cancel_requested:
                self._finalize(job, FINISH_CANCELLED)
                continue
            chunks = taken.setdefault(job.plan.key, [[]])
            if len(chunks[-1]) >= MAX_BATCH:
                chunks.append([])
            chunks[-1].append(job)
            free -= 1
        for chunks in taken.values():
            self._groups += [_Group(jobs, self._frames(jobs)) for jobs in chunks]

    def _frames(self, jobs: list[_Job]) -> Iterator[Frame]:
        """The sampler's generator over ``jobs``' rows (it runs nothing until advanced, on the worker thread)."""
        plan, sampler = jobs[0].plan, self.sampler
        seeds = [j.seed for j in jobs]
        if isinstance(sampler, LatentSampler):
            labels = [j.label for j in jobs] if sampler.labels else None
            if plan.mode == SAMPLE:
                return sampler.sample(seeds, labels)  # type: ignore[arg-type]
            pairs = [(j.seed, j.plan.walk_to or 0) for j in jobs]
            return sampler.walk(pairs, plan.frames, labels)  # type: ignore[arg-type]
        if isinstance(sampler, GibbsSampler) and plan.mode == CHAIN:
            return sampler.chains(seeds, plan.steps)
        if isinstance(sampler, DeepDream) and plan.mode == DREAM:
            bases = np.stack([j.plan.base for j in jobs if j.plan.base is not None])  # (B, H, W)
            settings = DreamSettings(
                layer=plan.layer,
                target=plan.target,
                steps=plan.steps,
                octaves=plan.octaves,
                size=self.info.image_size,
            )
            return sampler.dream(bases, seeds, settings)
        raise AntiphonError(f"model {self.model_id} cannot run a {plan.mode} request")  # validate() keeps this out

    def _route(self, group: _Group, frame: Frame, pixels: np.ndarray) -> None:
        now = time.monotonic()
        for job, image in zip(group.jobs, pixels, strict=True):
            if job.finalized:
                continue  # cancelled: its row is computed until the group ends
            stream = job.stream
            stream.steps += 1
            if frame.index % job.plan.frame_every == 0 or frame.final:
                if stream.first_token_at is None:
                    stream.first_token_at = now
                stream.push(Picture(frame.index, frame.final, image))
            if frame.final:
                job.end_reason = FINISH_STOP
                self._finalize(job, FINISH_STOP)
        if frame.final:
            self._groups.remove(group)

    def _summary(self, job: _Job) -> tuple[str, str, str]:
        stream = job.stream
        details = f"mode={job.plan.mode} seed={job.seed} steps={stream.steps} frames={stream.frames}"
        return "image", details, "first_frame_ms"

    def _record(self, job: _Job, reason: str) -> None:
        stream = job.stream
        first, duration = stream.times()
        self.metrics.image_request(
            self.model_id,
            stream.transport,
            reason,
            first,
            duration,
            stream.frames,
        )

    def gauges(self) -> EngineGauges:
        """What the engine holds now (read at scrape time, on the event loop)."""
        running = sum(len(g.live()) for g in self._groups)
        return EngineGauges(self.model_id, running=running, waiting=len(self._waiting))


def _advance(ready: list[_Group], dropped: list[_Group]) -> list[tuple[Frame, np.ndarray] | Exception]:
    """On the worker thread: close the dropped groups' generators, then advance each ready group by one frame; a
    group's frame with its images as 8-bit pixels (B, H, W), or the exception its generator raised."""
    for group in dropped:
        close: Any = getattr(group.frames, "close", None)
        if close is not None:
            close()
    results: list[tuple[Frame, np.ndarray] | Exception] = []
    for group in ready:
        try:
            frame = next(group.frames)
            pixels = np.rint(np.clip(frame.images, 0.0, 1.0) * 255.0).astype(np.uint8)  # (B, H, W)
            results.append((frame, pixels))
        except StopIteration:
            results.append(RuntimeError("the sampler ended before its final frame"))
        except Exception as exc:
            results.append(exc)
    return results
