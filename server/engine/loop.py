"""What every engine shares: one asyncio task owns the batch, admission against the stream limits, progress
events, and a graceful close.

A subclass implements :meth:`_run` (the loop), :attr:`live_streams`, :meth:`_ending` (streams in the batch that
ended or were cancelled: they still hold a row until the next iteration, but no longer a slot), :meth:`_drop_all`
(cancel every stream at close) and :meth:`_release` (threads and pools, after the loop stopped).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from server.errors import ResourceExhausted, Unavailable

log = logging.getLogger(__name__)


class EngineLoop:
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

    def _check_capacity(self) -> None:
        """Raise Unavailable when closing, ResourceExhausted when every slot and queue place is taken."""
        if self._closing:
            raise Unavailable("the server is shutting down; retry on another instance")
        if self.live_streams - self._ending() >= self._max_streams + self._max_waiting:
            raise ResourceExhausted(
                f"overloaded: {self._max_streams} {self._noun} are running and {self._max_waiting} waiting; retry later"
            )

    def _notify_progress(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()
