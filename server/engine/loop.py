"""What every engine shares: one asyncio task owns the batch, admission against the stream limits, each
iteration's membership (who leaves, who joins, who advances), the answer to a failed step, progress events, and
a graceful close.

A subclass implements :meth:`_run` (the loop), :attr:`live_streams`, :meth:`_ending` (streams in the batch that
ended or were cancelled: they still hold a row until the next iteration, but no longer a slot), :meth:`_drop_all`
(cancel every stream at close), :meth:`_finalize` (end a stream and log the request) and :meth:`_release`
(threads and pools, after the loop stopped), :meth:`_record` (report an ended stream to the metrics) and
:meth:`gauges` (what the engine holds, read at scrape time); it may extend :meth:`_abandon` (a stream ends without
finishing: cancelled while waiting, or in a failed step).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from server.engine.streams import FINISH_CANCELLED
from server.errors import AntiphonError, ResourceExhausted, Unavailable
from server.metrics import EngineGauges, Recorder

log = logging.getLogger(__name__)

FAILED = "error"  # how the metrics count a stream that failed (it has no finish reason)


class _Stream(Protocol):
    request_id: str
    stalled: bool

    @property
    def cancel_requested(self) -> bool: ...

    @property
    def done(self) -> bool: ...

    @property
    def full_since(self) -> float | None: ...

    def stall(self) -> None: ...

    def times(self) -> tuple[float | None, float]: ...

    def has_room(self) -> bool: ...

    def fail(self, error: BaseException) -> None: ...

    def finish(self, reason: str) -> None: ...


class Job(Protocol):
    """What the shared loop code reads of an engine's per-stream record."""

    @property
    def stream(self) -> _Stream: ...

    end_reason: str | None  # set once the stream has produced its last piece
    finalized: bool  # the client has been told how the stream ended


J = TypeVar("J", bound=Job)


@dataclass
class Round(Generic[J]):
    """One iteration's membership, decided on the event loop before the model work."""

    leaving: list[J]  # in the batch, but ended or cancelled: their rows go
    staying: list[J]
    joining: list[J]  # taken from the waiting queue, up to the free slots
    ready: list[int]  # rows of ``rows`` to advance: those with room in their output buffers
    keep: list[int] | None  # rows of the current batch that stay (None: all of them)

    @property
    def rows(self) -> list[J]:
        """The batch after this iteration: row i belongs to ``rows[i]``."""
        return self.staying + self.joining


class EngineLoop(Generic[J]):
    def __init__(self, model_id: str, max_streams: int, max_waiting: int, kind: str, noun: str = "streams") -> None:
        self.model_id = model_id
        self._max_streams = max_streams
        self._max_waiting = max_waiting
        self._kind = kind  # "text" or "audio": thread and task names
        self._noun = noun  # what the overload message calls the streams
        self._wake = asyncio.Event()  # set by anything the loop must look at: a request, a read, a cancel
        self._progress = asyncio.Event()  # replaced after every iteration (see wait_until)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{kind}-engine-{model_id}")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self.steps = 0
        self.metrics = Recorder()  # records nothing; a server hands its engines its own recorder
        self.stall_s: float | None = None  # cancel a stream whose client reads none of its full buffer this long
        self._stall_check_at = 0.0  # when _cancel_stalled next needs to look at the streams

    # -- for subclasses ------------------------------------------------------
    @property
    def live_streams(self) -> int:
        raise NotImplementedError

    def _ending(self) -> int:
        raise NotImplementedError

    async def _run(self) -> None:
        raise NotImplementedError

    def _drop_all(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _finalize(self, job: J, reason: str) -> None:
        """Tell the client how ``job`` ended (once), then log and record the request."""
        if job.finalized:
            return
        job.finalized = True
        job.stream.finish(reason)
        kind, details, first_name = self._summary(job)
        self._log_end(job.stream, kind, details, reason, first_name)
        self._record(job, reason)

    def _summary(self, job: J) -> tuple[str, str, str]:
        """``job``'s end-of-request line: its kind, the engine's details, the name of its time to first output."""
        raise NotImplementedError

    def _record(self, job: J, reason: str) -> None:
        """Report ``job``'s end to :attr:`metrics` (once per stream, never per token)."""
        raise NotImplementedError

    def gauges(self) -> EngineGauges:
        raise NotImplementedError

    def _log_end(self, stream: _Stream, kind: str, details: str, reason: str, first_name: str = "ttft_ms") -> None:
        """A stream's one INFO line at its end: its id, the model, ``kind``, the engine's ``details``, the time
        to its first output (named ``first_name``), its duration and the finish reason."""
        first, duration = stream.times()
        if stream.stalled:
            reason = f"{reason} (its client read none of it for {self.stall_s:g} s)"
        log.info(
            "request %s model=%s kind=%s %s %s=%s duration_ms=%.1f finish=%s",
            stream.request_id or "-",
            self.model_id,
            kind,
            details,
            first_name,
            "-" if first is None else f"{first * 1000:.1f}",
            duration * 1000,
            reason,
        )

    def _abandon(self, job: J) -> None:
        """``job`` ends without finishing: cancelled while waiting, or its step failed."""

    # -- shared ----------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self._kind}-engine-{self.model_id}")

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checked after every iteration of the loop."""
        while not predicate():
            await self._progress.wait()

    async def close(self, grace_s: float = 0.0) -> None:
        """Take no new streams, let live ones finish within ``grace_s``, then cancel the rest. Idempotent."""
        if self._closed:
            return
        self._closing = True
        self._wake.set()
        if self.live_streams:
            try:
                await asyncio.wait_for(self.wait_until(lambda: self.live_streams == 0), timeout=grace_s)
            except TimeoutError:
                log.info(
                    "model %s: cancelling %d streams after the %.1f s grace period",
                    self.model_id,
                    self.live_streams,
                    grace_s,
                )
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._drop_all()
        self._release()
        self._notify_progress()

    def _cancel_stalled(self, streams: Iterable[_Stream]) -> float | None:
        """Cancel the streams whose client has read none of their full buffer for :attr:`stall_s` (they leave at
        this iteration); returns the seconds until one could next stall (None: no timeout). The streams are looked
        at only when one could have stalled: an iteration otherwise costs a clock read."""
        if not self.stall_s:
            return None
        now = time.monotonic()
        if now < self._stall_check_at:  # no stream can have stalled since the last look (at most stall_s ago)
            return self._stall_check_at - now
        nearest = self.stall_s  # a stream that fills from now on stalls no sooner
        for stream in streams:
            since = stream.full_since
            if since is None or stream.done or stream.cancel_requested:
                continue
            left = since + self.stall_s - now
            if left > 0:
                nearest = min(nearest, left)
            else:
                stream.stall()
        self._stall_check_at = now + nearest
        return nearest

    async def _idle(self, stall_in: float | None) -> None:
        """Wait for anything the loop must look at, or until a paused stream would stall (``stall_in`` s)."""
        if stall_in is None:
            await self._wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(stall_in):
                await self._wake.wait()

    def _check_capacity(self) -> None:
        """Raise Unavailable when closing, ResourceExhausted when every slot and queue place is taken."""
        if self._closing:
            raise Unavailable("the server is shutting down; retry on another instance")
        if self.live_streams - self._ending() >= self._max_streams + self._max_waiting:
            raise ResourceExhausted(
                f"overloaded: {self._max_streams} {self._noun} are running and {self._max_waiting} waiting; retry later"
            )

    def _next_round(self, jobs: list[J], waiting: deque[J]) -> Round[J] | None:
        """Who leaves ``jobs`` (the batch), who joins from ``waiting`` and who advances; None when there is
        nothing to do until something wakes the loop. Streams cancelled while waiting end here."""
        leaving = [j for j in jobs if j.end_reason is not None or j.stream.cancel_requested]
        staying = [j for j in jobs if j.end_reason is None and not j.stream.cancel_requested]
        joining: list[J] = []
        while waiting and len(staying) + len(joining) < self._max_streams:
            job = waiting.popleft()
            if job.stream.cancel_requested:
                self._abandon(job)
                self._finalize(job, FINISH_CANCELLED)
            else:
                joining.append(job)
        ready = [i for i, j in enumerate(staying + joining) if j.stream.has_room()]
        if not leaving and not joining and not ready:
            return None
        row_of = {id(j): i for i, j in enumerate(jobs)}
        keep = [row_of[id(j)] for j in staying] if leaving else None
        return Round(leaving, staying, joining, ready, keep)

    def _fail_step(self, jobs: Iterable[J]) -> None:
        """The model work raised (a bug or a device failure): end ``jobs`` with an internal error and keep
        serving. Call from the ``except`` block (the traceback goes to the log)."""
        log.exception("model %s: step failed", self.model_id)
        error = AntiphonError(f"internal error in model {self.model_id}")
        for job in jobs:
            if job.finalized:
                continue
            # Abandoned (its session released) before the client hears: a client that retries at once finds the
            # session free.
            self._abandon(job)
            job.finalized = True
            job.stream.fail(error)
            self._record(job, FAILED)

    def _notify_progress(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()
