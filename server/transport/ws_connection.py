"""The WebSocket server's connection class: coalesced writes, and bounds on what a client that reads nothing costs.

A client that stops reading fills its TCP window, and then the connection's write buffer. Two things keep that
bounded (``docs/websocket-protocol.md``, "Flow control"):

- every send waits (``drain``) while the write buffer is over the library's ``write_limit``; a wait in which the
  client reads nothing for :attr:`CoalescingConnection.STALL_S` fails the connection with close code 1008 (a client
  that reads slowly, but reads something in each such period, is waited for), so the streams of a client that went
  away without closing leave the batch instead of holding their slots for ever, and a shutdown's closing handshake
  is not stuck behind them (it has the library's ``close_timeout``);
- frames the library writes without waiting (a pong for each ping, a close frame) are bounded too: once the write
  buffer holds :attr:`CoalescingConnection.READ_HOLD_BYTES`, the connection stops reading the client's frames until
  the client has read, so a client sending pings without reading the pongs fills its own socket, not our memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode
from websockets.protocol import State


class CoalescingConnection(ServerConnection):
    """A server connection whose frames, written in one pass of the event loop, leave in one write.

    An engine iteration hands every stream its tokens at once; with many streams multiplexed on one connection,
    each frame would otherwise cost its own system call and TCP segment on both ends. Frames wait at most until
    the event loop's next pass. The handshake and the closing handshake write at once, as the library expects.
    """

    STALL_S = 20.0  # seconds a send may wait on a client that reads nothing before the connection fails (1008)
    READ_HOLD_BYTES = 1 << 20  # unsent bytes at which the connection stops reading until the client reads

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flush_scheduled = False
        self._reads_held = False  # reading paused by READ_HOLD_BYTES (the library pauses it too, for max_queue)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # The library's receive queue resumes reading when it empties: not while the write buffer holds reads.
        self.recv_messages.resume = self._resume_reading

    def _resume_reading(self) -> None:
        if not self._reads_held:
            self.transport.resume_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._reads_held:
            self._reads_held = False
            if not self.recv_messages.paused:  # else the receive queue resumes reading once it empties
                self.transport.resume_reading()

    async def drain(self) -> None:
        # The library waits here without a deadline while the client reads nothing. A closing handshake has its
        # own (close_timeout); any other send waits while the client reads something every STALL_S. Failing the
        # protocol first records the close code that the handler's log line and the metric name; raising makes the
        # library abort the transport.
        if not self.paused:  # the usual case, on every frame: no timer
            await super().drain()
            return
        while True:
            unsent = self.transport.get_write_buffer_size()
            closing = self.close_deadline is not None
            deadline = self.close_deadline if closing else self.loop.time() + self.STALL_S
            try:
                async with asyncio.timeout_at(deadline):
                    await super().drain()
                return
            except TimeoutError:
                if not closing and self.transport.get_write_buffer_size() < unsent:
                    continue  # the client reads, slowly
                if self.protocol.state is State.OPEN:
                    self.protocol.fail(CloseCode.POLICY_VIOLATION, f"the client read nothing for {self.STALL_S:g} s")
                raise

    def send_data(self) -> None:
        if self.protocol.state is not State.OPEN:
            self._flush()
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        chunks: list[bytes] = []
        for data in self.protocol.data_to_send():
            if data:
                chunks.append(data)
                continue
            self._write(chunks)  # an empty chunk asks for end of file, after what came before it
            chunks = []
            if self.transport.can_write_eof():
                with contextlib.suppress(Exception):  # as in ServerConnection.send_data: the connection is going
                    self.transport.write_eof()
            else:
                self.transport.close()
        self._write(chunks)

    def _write(self, chunks: list[bytes]) -> None:
        if not chunks or self.transport.is_closing():
            return
        self.transport.write(b"".join(chunks))
        # resume_writing() comes once the buffer is under the low-water mark, which is below READ_HOLD_BYTES: reading
        # is held only while writing is paused, so it always resumes.
        if not self._reads_held and self.paused and self.transport.get_write_buffer_size() >= self.READ_HOLD_BYTES:
            self._reads_held = True
            self.transport.pause_reading()
