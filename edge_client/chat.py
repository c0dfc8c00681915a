"""Chat with the server over gRPC or WebSocket, token by token, with the device's own generator as a fallback.

Each turn tries the server; a server that cannot be reached (or that drops the connection before the reply
starts, or that sends nothing for ``stall_timeout`` seconds before the reply's first event) is tried again after
0.5 s, 1 s, 2 s, ... (``retries`` times); then the device answers with its small step generator and says so, and the
next turn tries the server again. A reply that stalls as long after it started is cut short. An error the server
answers (a bad persona) is reported, not retried; its INVALID_ARGUMENT (an oversized message) is an
:class:`~server.errors.InvalidArgument`, a refused API key :class:`~server.errors.Unauthenticated`.

``grpcs://`` and ``wss://`` connect over TLS, trusting the system's authorities or the ``ca_file`` given; an API key
goes as ``authorization: Bearer KEY`` (gRPC metadata, the WebSocket handshake's header).

Audio (``speak``): gRPC ``ChatEvent.audio`` chunks, the first carrying ``AudioFormat``; over WebSocket
(docs/websocket-protocol.md) an ``audio`` frame with the format, then binary frames of a big-endian uint16 n, the
request id (n bytes of UTF-8) and whole samples. PCM16 LE and 8-bit mu-law are decoded to float.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from server.errors import AntiphonError, InvalidArgument, Unauthenticated, Unavailable

log = logging.getLogger(__name__)

OnText = Callable[[str], None]


@dataclass
class AudioFormat:
    sample_rate: int = 16000
    encoding: str = "pcm16"  # "pcm16" or "mulaw"
    channels: int = 1


@dataclass
class TurnResult:
    source: str  # "server" or "device"
    text: str = ""
    finish_reason: str = ""
    audio_format: AudioFormat | None = None
    audio: bytearray = field(default_factory=bytearray)
    note: str = ""

    def samples(self) -> np.ndarray:
        """The reply's audio as float mono in [-1, 1] (channels averaged)."""
        fmt = self.audio_format or AudioFormat()
        if fmt.encoding == "mulaw":
            x = mulaw_decode(np.frombuffer(bytes(self.audio), dtype=np.uint8))
        else:
            raw = bytes(self.audio[: len(self.audio) // 2 * 2])
            x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        channels = max(1, fmt.channels)
        return x[: len(x) // channels * channels].reshape(-1, channels).mean(axis=1, dtype=np.float32)


def mulaw_decode(q: np.ndarray) -> np.ndarray:
    """G.711 mu-law bytes -> float in [-1, 1]."""
    u = ~q.astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return (np.where(sign, -magnitude, magnitude) / 32768.0).astype(np.float32)


class ServerError(AntiphonError):
    """The server answered the turn with an error status (not a connection failure)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"server: {code}: {message}")
        self.status = code
        self.detail = message


class ConnectionLost(Unavailable):
    """The connection failed after the reply had started."""


@dataclass
class ChatRequest:
    session_id: str
    message: str
    persona: str = ""
    speaker: str = ""
    speak: bool = False
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None


def parse_server(url: str) -> tuple[str, str, bool]:
    """``grpc://host:port`` -> ("grpc", "host:port", False); ``ws://host:port/path`` -> ("ws", the URL, False);
    ``grpcs://`` and ``wss://`` the same over TLS (True)."""
    expected = f"give grpc://HOST:PORT or ws://HOST:PORT/PATH (grpcs://, wss:// over TLS), got {url!r}"
    try:
        parsed = urlparse(url)
        port = parsed.port  # a port past 65,535 raises here
    except ValueError as exc:  # an unclosed IPv6 bracket, a port out of range
        raise InvalidArgument("--server", f"{exc} in {url!r}; {expected.removesuffix(f', got {url!r}')}") from None
    if parsed.scheme not in ("grpc", "grpcs", "ws", "wss") or not parsed.hostname or port is None:
        raise InvalidArgument("--server", expected)
    tls = parsed.scheme in ("grpcs", "wss")
    if parsed.scheme in ("grpc", "grpcs"):
        host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
        return "grpc", f"{host}:{parsed.port}", tls
    return "ws", url, tls


def refused(url: str, message: str) -> Unauthenticated:
    """The error of a refused API key (``message``: the server's reason), saying how to give one."""
    return Unauthenticated(f"{url}: {message} (give the server's key with --api-key or ANTIPHON_API_KEY)")


class _Watchdog:
    """Calls ``on_stall`` once when ``seconds`` pass with no :meth:`feed`: a server that stopped answering on an
    open connection (the connection itself stays up, so no error ever comes)."""

    def __init__(self, seconds: float, on_stall: Callable[[], None]) -> None:
        self.seconds = seconds
        self.on_stall = on_stall
        self.deadline = time.monotonic() + seconds
        self.fired = False
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def feed(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def _watch(self) -> None:
        while not self.done.wait(max(0.0, self.deadline - time.monotonic())):
            if time.monotonic() >= self.deadline:
                self.fired = True
                self.on_stall()
                return

    def stop(self) -> None:
        self.done.set()


class GrpcTransport:
    """One channel, made anew after a failure: a fresh channel connects at once, where an old one would wait out
    gRPC's own reconnection backoff (up to two minutes) while our retries run. ``tls``: a secure channel trusting
    the system's authorities or ``ca_file``'s."""

    def __init__(
        self,
        target: str,
        connect_timeout: float,
        api_key: str | None = None,
        tls: bool = False,
        ca_file: Path | None = None,
        stall_timeout: float = 10.0,
    ) -> None:
        import grpc

        self.grpc = grpc
        self.target = target
        self.url = f"{'grpcs' if tls else 'grpc'}://{target}"
        self.connect_timeout = connect_timeout
        self.stall_timeout = stall_timeout
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None
        self.credentials = (
            grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes() if ca_file else None) if tls else None
        )
        self.channel: Any = None

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def _stub(self) -> Any:
        from antiphon.v1 import generation_pb2_grpc

        if self.channel is None:
            # a connection attempt gives up after the connect timeout (gRPC's default is 20 s)
            options = [("grpc.min_reconnect_backoff_ms", max(100, int(self.connect_timeout * 1000)))]
            if self.credentials is not None:
                self.channel = self.grpc.secure_channel(self.target, self.credentials, options=options)
            else:
                self.channel = self.grpc.insecure_channel(self.target, options=options)
        return generation_pb2_grpc.GenerationStub(self.channel)

    def turn(self, request: ChatRequest, on_text: OnText) -> TurnResult:
        from antiphon.v1 import chat_pb2, sampling_pb2

        grpc = self.grpc
        sampling = sampling_pb2.Sampling()
        if request.temperature is not None:
            sampling.temperature = request.temperature
        if request.max_tokens is not None:
            sampling.max_tokens = request.max_tokens
        if request.seed is not None:
            sampling.seed = request.seed
        message = chat_pb2.ChatRequest(
            session_id=request.session_id,
            message=request.message,
            persona=request.persona,
            speaker=request.speaker,
            speak=request.speak,
            sampling=sampling,
        )
        result = TurnResult("server")
        stub = self._stub()
        watchdog: _Watchdog | None = None
        try:
            # fail fast: a server that cannot be reached is UNAVAILABLE at once (refused) or after the connect
            # timeout (no answer), never queued until it comes back
            # x-session-id lets a proxy in front of several replicas route the session's turns to one of them
            metadata = (*(self.metadata or ()), ("x-session-id", request.session_id))
            call = stub.Chat(message, timeout=None, wait_for_ready=False, metadata=metadata)
            watchdog = _Watchdog(self.stall_timeout, call.cancel)  # no event for stall_timeout s: cancelled
            try:
                for event in call:
                    watchdog.feed()
                    self._event(event, result, on_text)
                    watchdog.feed()  # the time on_text took (a slow terminal) is not the server's
            finally:
                watchdog.stop()
        except grpc.RpcError as exc:
            code = exc.code()
            if watchdog is not None and watchdog.fired:
                self.close()
                stalled = f"no answer for {self.stall_timeout:g} s"
                if result.text:
                    raise ConnectionLost(f"{self.url}: connection lost ({stalled})") from None
                raise Unavailable(f"{self.url}: {stalled}") from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self.close()
                if result.text:
                    raise ConnectionLost(f"{self.url}: connection lost ({exc.details()})") from None
                raise Unavailable(f"{self.url}: {exc.details()}") from None
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise refused(self.url, exc.details() or "UNAUTHENTICATED") from None
            raise ServerError(code.name, exc.details() or "") from None
        return result

    @staticmethod
    def _event(event: Any, result: TurnResult, on_text: OnText) -> None:
        from antiphon.v1 import audio_pb2, sampling_pb2

        which = event.WhichOneof("event")
        if which == "text":
            result.text += event.text
            on_text(event.text)
        elif which == "audio":
            if event.audio.HasField("format"):
                fmt = event.audio.format
                mulaw = fmt.encoding == audio_pb2.AUDIO_ENCODING_MULAW8
                result.audio_format = AudioFormat(fmt.sample_rate, "mulaw" if mulaw else "pcm16", fmt.channels or 1)
            result.audio += event.audio.data
        elif which == "done":
            result.finish_reason = sampling_pb2.FinishReason.Name(event.done.finish_reason)
            result.finish_reason = result.finish_reason.removeprefix("FINISH_REASON_").lower()


class WebSocketTransport:
    """One connection, reused across turns; ``wss://`` trusts the system's authorities or ``ca_file``'s."""

    def __init__(
        self,
        url: str,
        connect_timeout: float,
        api_key: str | None = None,
        ca_file: Path | None = None,
        stall_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.stall_timeout = stall_timeout
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.ssl = ssl.create_default_context(cafile=ca_file) if url.startswith("wss:") else None
        self.connection: Any = None
        self.counter = 0

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def _connect(self, session_id: str) -> Any:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        if self.connection is None:
            # X-Session-Id lets a proxy in front of several replicas route the connection by the session it carries
            headers = {**(self.headers or {}), "X-Session-Id": session_id}
            try:
                self.connection = connect(
                    self.url,
                    open_timeout=self.connect_timeout,
                    max_size=2**24,
                    additional_headers=headers,
                    ssl=self.ssl,
                )
            except (OSError, TimeoutError) as exc:
                raise Unavailable(f"{self.url}: {exc}") from None
            except InvalidStatus as exc:
                if exc.response.status_code == 401:  # refused before the upgrade; the body says why
                    raise refused(self.url, exc.response.body.decode("utf-8", "replace").strip()) from None
                raise Unavailable(f"{self.url}: {exc}") from None
            except Exception as exc:  # websockets' other handshake errors (InvalidURI, InvalidMessage, ...)
                raise Unavailable(f"{self.url}: {exc}") from None
        return self.connection

    def turn(self, request: ChatRequest, on_text: OnText) -> TurnResult:
        from websockets.exceptions import ConnectionClosed

        connection = self._connect(request.session_id)
        self.counter += 1
        request_id = f"turn-{self.counter}"
        frame: dict[str, Any] = {
            "type": "chat",
            "id": request_id,
            "session_id": request.session_id,
            "message": request.message,
        }
        for name in ("persona", "speaker"):
            if getattr(request, name):
                frame[name] = getattr(request, name)
        if request.speak:
            frame["speak"] = True
        sampling = {
            k: v
            for k, v in (
                ("temperature", request.temperature),
                ("max_tokens", request.max_tokens),
                ("seed", request.seed),
            )
            if v is not None
        }
        if sampling:
            frame["sampling"] = sampling
        result = TurnResult("server")
        try:
            connection.send(json.dumps(frame))
        except (ConnectionClosed, OSError) as exc:
            raise self._lost(result, str(exc), closed=True) from None
        while True:
            # only the connection's own failures count as a lost server: an error of on_text (standard output
            # closed: BrokenPipeError, an OSError too) is the caller's and passes through
            try:
                raw = connection.recv(timeout=self.stall_timeout)  # TimeoutError: the server stopped answering
            except TimeoutError:
                raise self._lost(result, f"no answer for {self.stall_timeout:g} s", closed=False) from None
            except (ConnectionClosed, OSError) as exc:
                raise self._lost(result, str(exc), closed=True) from None
            if isinstance(raw, bytes):
                n = int.from_bytes(raw[:2], "big")
                if raw[2 : 2 + n].decode("utf-8", errors="replace") == request_id:
                    result.audio += raw[2 + n :]
                continue
            message = json.loads(raw)
            if message.get("id") != request_id:
                continue
            kind = message.get("type")
            if kind == "token":
                result.text += message["text"]
                on_text(message["text"])
            elif kind == "audio":
                encoding = str(message.get("encoding", "pcm16")).lower()
                result.audio_format = AudioFormat(
                    int(message.get("sample_rate", 16000)),
                    "mulaw" if "mulaw" in encoding else "pcm16",
                    int(message.get("channels", 1)),
                )
            elif kind == "done":
                result.finish_reason = str(message.get("finish_reason", ""))
                return result
            elif kind == "error":
                if message.get("code") == "UNAVAILABLE":
                    self.close()
                    raise Unavailable(f"{self.url}: {message.get('message', '')}")
                raise ServerError(str(message.get("code")), str(message.get("message", "")))

    def _lost(self, result: TurnResult, why: str, closed: bool) -> Unavailable:
        """The connection failed (``why``; ``closed``: it closed, else it went quiet): closed here, and the error to
        raise: unreachable before the reply started, lost after."""
        self.close()
        if result.text:
            return ConnectionLost(f"{self.url}: connection lost ({why})")
        return Unavailable(f"{self.url}: {f'connection closed ({why})' if closed else why}")


class ChatClient:
    """Turns of one chat session: the server first, with retries and backoff, else the device's generator."""

    def __init__(
        self,
        url: str,
        local: Callable[[ChatRequest, OnText], TurnResult] | None,
        retries: int = 3,
        backoff_s: float = 0.5,
        connect_timeout: float = 2.0,
        session_id: str | None = None,
        notify: Callable[[str], None] = lambda _: None,
        api_key: str | None = None,
        ca_file: Path | None = None,
        stall_timeout: float = 10.0,
    ) -> None:
        self.kind, target, tls = parse_server(url)
        if ca_file is not None and not tls:
            raise InvalidArgument("ca-file", f"is only read for grpcs:// and wss:// servers, got {url!r}")
        if ca_file is not None:
            try:
                ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidArgument("ca-file", f"cannot read certificates from {ca_file}: {exc}") from None
        self.url = url
        self.transport = (
            GrpcTransport(target, connect_timeout, api_key, tls, ca_file, stall_timeout)
            if self.kind == "grpc"
            else WebSocketTransport(target, connect_timeout, api_key, ca_file, stall_timeout)
        )
        self.local = local
        self.retries = retries
        self.backoff_s = backoff_s
        self.session_id = session_id or uuid.uuid4().hex
        self.notify = notify
        self.offline = False

    def close(self) -> None:
        self.transport.close()

    def turn(self, request: ChatRequest, on_text: OnText) -> TurnResult:
        request.session_id = self.session_id
        delay = self.backoff_s
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                result = self.transport.turn(request, on_text)
                if self.offline:
                    self.notify(f"{self.url} answers again; back on the server")
                self.offline = False
                return result
            except ConnectionLost as exc:
                self.notify(f"{exc}; the reply is cut short")
                return TurnResult("server", note=str(exc), finish_reason="cancelled")
            except ServerError as exc:
                if exc.status == "INVALID_ARGUMENT":  # a bad flag or message: the user's to fix (exit 2)
                    raise InvalidArgument("server", f"{exc.status}: {exc.detail}") from None
                if exc.status == "UNIMPLEMENTED" and request.speak:
                    self.notify(f"{exc}; asking again without audio")
                    request.speak = False
                    continue
                raise
            except Unavailable as exc:
                last = exc
                if attempt < self.retries:
                    log.debug("server unreachable (%s); retrying in %.2f s", exc, delay)
                    time.sleep(delay)
                    delay *= 2
        if self.local is None:
            raise Unavailable(f"{last}; and no text step model on this device to answer offline")
        self.offline = True
        self.notify(f"server unreachable ({last}); answering on this device")
        result = self.local(request, on_text)
        result.note = f"server unreachable: {last}"
        return result
