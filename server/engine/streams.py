"""The streams a request's output is read from: bounded, cancellable, read with ``async for``. No torch here.

A transport iterates the stream an engine returns; leaving the iteration early (the client went away) must end in
``stream.cancel()``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Self, TypeVar

import numpy as np


@dataclass(frozen=True)
class Picture:
    """One frame of an image stream."""

    step: int  # the frame's place in the model's sequence, from 0
    final: bool  # the model's last frame
    pixels: np.ndarray  # (H, W) uint8, 0 black .. 255 white


Piece = TypeVar("Piece", str, np.ndarray, Picture)

FINISH_STOP = "stop"  # a stop sequence, or the end of the persona's turn in a chat
FINISH_LENGTH = "length"  # max_tokens reached
FINISH_CANCELLED = "cancelled"  # cancelled by the client or by the server's shutdown


class _BoundedStream(Generic[Piece]):
    """One request's output, read by ``async for``; afterwards ``finish_reason`` is set.

    The buffer is bounded: the engine stops stepping a stream that holds ``capacity`` unread units and resumes
    it once the consumer reads, so a slow consumer costs a paused slot, not memory, and one that reads none of a
    full buffer for the engine's stall timeout is cancelled (:meth:`stall`). One read returns every piece waiting,
    joined (``_take``; an image stream's, one frame).
    """

    def __init__(self, capacity: int, wake: Callable[[], None], request_id: str = "", transport: str = "") -> None:
        self.capacity = capacity
        self.request_id = request_id
        self.transport = transport  # the request's listener, for the metrics
        self.finish_reason: str | None = None
        self.created = time.monotonic()
        self.first_token_at: float | None = None
        self._pieces: deque[Piece] = deque()
        self._buffered = 0
        self._error: BaseException | None = None
        self._readable = asyncio.Event()
        self._wake = wake
        self._cancel_requested = False
        self._full_since: float | None = None  # when the buffer filled, none of it read since (None: it has room)
        self.stalled = False  # cancelled by the engine: its consumer read none of its full buffer for too long

    def times(self) -> tuple[float | None, float]:
        """Seconds from the request to its first output (None: none came yet) and to now."""
        first = None if self.first_token_at is None else self.first_token_at - self.created
        return first, time.monotonic() - self.created

    def _units(self, piece: Piece) -> int:
        raise NotImplementedError

    def _join(self, pieces: deque[Piece]) -> Piece:
        raise NotImplementedError

    # -- engine side -------------------------------------------------------
    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self._error is not None

    def has_room(self) -> bool:
        return self._buffered < self.capacity

    def room(self) -> int:
        """Units the stream may still take before it pauses."""
        return max(0, self.capacity - self._buffered)

    def buffered(self) -> int:
        return self._buffered

    @property
    def full_since(self) -> float | None:
        """When the buffer filled (``time.monotonic()``), none of it read since; None while it has room."""
        return self._full_since

    def stall(self) -> None:
        """Cancel the stream from the engine's own loop: its consumer read none of its full buffer for the stall
        timeout (a client that stopped reading, or hung, without closing its connection)."""
        if not self.done and not self._cancel_requested:
            self.stalled = True
            self._cancel_requested = True

    def push(self, piece: Piece) -> None:
        units = self._units(piece)
        if units:
            self._pieces.append(piece)
            self._buffered += units
            if self._full_since is None and self._buffered >= self.capacity:
                self._full_since = time.monotonic()
            self._readable.set()

    def finish(self, reason: str) -> None:
        if not self.done:
            self.finish_reason = reason
            self._readable.set()

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self._error = error
            self._readable.set()

    # -- consumer side -----------------------------------------------------
    def cancel(self) -> None:
        """Ask the engine to drop this stream at its next step. Idempotent; a no-op once done."""
        if not self.done and not self._cancel_requested:
            self._cancel_requested = True
            self._wake()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Piece:
        while not self._pieces:
            if self._error is not None:
                raise self._error
            if self.finish_reason is not None:
                raise StopAsyncIteration
            # Clearing and waiting happen with no await between the check and the clear, so a push cannot be lost.
            self._readable.clear()
            await self._readable.wait()
        was_full = self._buffered >= self.capacity
        piece = self._take()
        if self._buffered < self.capacity:
            self._full_since = None
        if was_full:
            self._wake()  # the engine paused this stream; it may step it again
        return piece

    def _take(self) -> Piece:
        """What one read returns (there is a piece): every buffered piece, joined."""
        piece = self._join(self._pieces)
        self._pieces.clear()
        self._buffered = 0
        return piece


class TextStream(_BoundedStream[str]):
    """A text request's output: ``async for text in stream`` yields every piece in order; afterwards
    ``finish_reason`` and the token counts are set. ``capacity`` counts unread characters (one per token)."""

    def __init__(self, capacity: int, wake: Callable[[], None], request_id: str = "", transport: str = "") -> None:
        super().__init__(capacity, wake, request_id, transport)
        self.prompt_tokens = 0  # characters of the prompt, read or (a conversation's) resumed from a kept state
        self.cached_tokens = 0  # of those, the ones a kept state spared reading
        self.completion_tokens = 0
        self.turns = 0  # chat: the session's turn count after this turn

    def _units(self, piece: str) -> int:
        return len(piece)

    def _join(self, pieces: deque[str]) -> str:
        return "".join(pieces)


class AudioStream(_BoundedStream[np.ndarray]):
    """An audio request's output: ``async for codes in stream`` yields uint8 arrays of 8-bit mu-law codes (mu=255,
    the WaveNet's own output) in order. ``capacity`` counts unread samples;
    ``samples`` counts every sample pushed."""

    def __init__(
        self, capacity: int, wake: Callable[[], None], request_id: str, sample_rate: int, transport: str = ""
    ) -> None:
        super().__init__(capacity, wake, request_id, transport)
        self.sample_rate = sample_rate
        self.samples = 0

    def _units(self, piece: np.ndarray) -> int:
        return int(piece.size)

    def push(self, piece: np.ndarray) -> None:
        self.samples += int(piece.size)
        super().push(piece)

    def _join(self, pieces: deque[np.ndarray]) -> np.ndarray:
        return pieces[0] if len(pieces) == 1 else np.concatenate(list(pieces))


class ImageStream(_BoundedStream[Picture]):
    """An image request's output: ``async for picture in stream`` yields each frame sent, one a read, in order;
    afterwards ``finish_reason`` is set. ``capacity`` counts unread frames; ``steps`` counts the frames the model
    made, ``frames`` those sent, ``total_steps`` the frames it will make in all."""

    def __init__(
        self, capacity: int, wake: Callable[[], None], request_id: str, total_steps: int, transport: str = ""
    ) -> None:
        super().__init__(capacity, wake, request_id, transport)
        self.total_steps = total_steps
        self.steps = 0
        self.frames = 0

    def _units(self, piece: Picture) -> int:
        return 1

    def push(self, piece: Picture) -> None:
        self.frames += 1
        super().push(piece)

    def _take(self) -> Picture:
        """One frame a read, so that a client sees every frame."""
        self._buffered -= 1
        return self._pieces.popleft()
