"""One asyncio process serving the engines over gRPC, WebSocket and HTTP at once.

:class:`Server` owns the engines and the three listeners; :func:`serve` is what ``antiphon serve`` runs: start, log
one ``listening grpc=HOST:PORT ws=HOST:PORT http=HOST:PORT`` line (``grpcs= wss= https=`` over TLS), wait for
SIGTERM, SIGINT or SIGHUP, drain, exit; a second signal during the drain cancels the streams left.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import logging
import signal
import socket
import ssl
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from websockets.asyncio.server import Server as WebSocketServer
from websockets.asyncio.server import serve as websocket_serve
from websockets.frames import CloseCode

from server.engine.audio import AudioEngine, AudioLimits
from server.engine.classify import LOADERS, Classifier
from server.engine.image import ImageEngine, ImageLimits
from server.engine.registry import ModelRegistry
from server.engine.text import ChatStyle, TextEngine, TextLimits
from server.errors import CheckpointError, InvalidArgument, ListenError
from server.memory import Trimmer
from server.metrics import Metrics, Recorder
from server.settings import ServeSettings
from server.transport.auth import ApiKeys, Browsers, is_loopback
from server.transport.grpc_options import server_options
from server.transport.grpc_service import RequireKey, add_services, mark_serving
from server.transport.http import HttpListener, HttpTransport
from server.transport.responses import ResponseStore
from server.transport.websocket import (
    CoalescingConnection,
    WebSocketTransport,
    handshake_logger,
    select_subprotocol,
)

if TYPE_CHECKING:
    from server.engine.redis_responses import RedisResponses  # imported when used: redis only with --session-store

log = logging.getLogger("antiphon.server")
# How long a closing handshake waits for the client's answer (the websockets default is 10 s): a client whose
# network is gone or whose laptop sleeps does not hold a shutdown that long after its grace period.
WS_CLOSE_TIMEOUT_S = 2.0

MAX_PERSONAS = 32
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # SIGHUP too: a closed terminal drains, not kills
EXPIRY_WARNING = timedelta(days=7)
FALLBACK_PERSONAS = ("LEAR", "KENT", "FOOL", "EDGAR")  # the corpus writes speaker names in capitals


def require_checkpoint(path: Path, kind: str, others: str, train: str | None = None) -> None:
    """CheckpointError unless ``path`` is a file, saying how to train one (``train``) and how to name ``others``."""
    if not path.is_file():
        train = train or f"`antiphon train {kind} --out {path}`"
        raise CheckpointError(f"{kind} checkpoint {path} {absent(path)}: train one with {train}, or name {others}")


def absent(path: Path) -> str:  # why ``path`` is no checkpoint
    return "is not a file" if path.exists() else "does not exist"  # a folder, a pipe; or nothing there


def text_limits(settings: ServeSettings) -> TextLimits:
    return TextLimits(
        max_streams=settings.max_streams,
        max_waiting=settings.max_waiting,
        max_prompt_chars=settings.max_prompt_chars,
        max_tokens=settings.max_tokens,
        stream_buffer=settings.stream_buffer,
        max_sessions=settings.max_sessions,
        session_ttl_s=settings.session_ttl_s,
        burst_s=settings.text_burst_ms / 1000,
        prefix_cache=settings.prefix_cache,
    )


def load_text_engine(settings: ServeSettings, checkpoint: Path) -> TextEngine:
    """The text engine for ``checkpoint``, run by the chosen backend on the chosen device."""
    from server.device import resolve_device
    from server.engine.backend import make_backend
    from server.text.checkpoint import load_text_model

    require_checkpoint(checkpoint, "text", "another with --text-checkpoint (or ANTIPHON_TEXT_CHECKPOINT)")
    model, vocab, meta = load_text_model(checkpoint, resolve_device(settings.device))
    config = model.config
    description = f"character LSTM {config.num_layers}x{config.hidden_size}, {len(vocab)} symbols"
    if "metrics" in meta and "held_out_bits_per_char" in meta["metrics"]:
        description += f", {meta['metrics']['held_out_bits_per_char']:.3f} bits/char held out"
    chat = chat_style(settings, meta.get("speakers"))
    shared = None
    if settings.session_store != "memory":
        from server.engine.redis_sessions import RedisSessions

        fingerprint = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16]  # sessions name the exact weights
        shape = (config.num_layers, config.hidden_size, config.vocab_size)  # a stored state of another is refused
        shared = RedisSessions(
            settings.session_store, settings.text_model_id, fingerprint, settings.session_ttl_s, shape=shape
        )
    return TextEngine(
        settings.text_model_id,
        make_backend(settings.text_backend, model, settings.text_threads),
        vocab,
        text_limits(settings),
        chat,
        description,
        shared,
    )


def redis_responses(settings: ServeSettings) -> RedisResponses | None:
    """With chat sessions in Redis, the Responses API's kept responses too, so any replica continues any response."""
    if settings.session_store == "memory":
        return None
    from server.engine.redis_responses import RedisResponses

    return RedisResponses(settings.session_store, settings.session_ttl_s)


def audio_limits(settings: ServeSettings) -> AudioLimits:
    return AudioLimits(
        max_streams=settings.max_audio_streams,
        max_waiting=settings.max_waiting,
        max_text_chars=settings.max_audio_text_chars,
        max_seconds=settings.max_audio_seconds,
        stream_buffer=max(1, settings.audio_buffer_ms * 16),  # 16 samples per millisecond at 16 kHz
        threads=settings.audio_threads,
    )


def load_audio_engine(settings: ServeSettings, checkpoint: Path) -> AudioEngine:
    """The audio engine for ``checkpoint`` (the compiled CPU step; its first call compiles or loads the cache)."""
    require_checkpoint(
        checkpoint, "audio", "another with --audio-checkpoint (or ANTIPHON_AUDIO_CHECKPOINT; 'none' serves no audio)"
    )
    engine = AudioEngine.from_checkpoint(checkpoint, settings.audio_model_id, audio_limits(settings))
    engine.warm_up()
    return engine


def image_limits(settings: ServeSettings) -> ImageLimits:
    return ImageLimits(
        max_streams=settings.max_image_streams, max_waiting=settings.max_waiting, max_steps=settings.max_image_steps
    )


def load_image_engines(settings: ServeSettings) -> list[ImageEngine]:
    """An engine per image checkpoint of --image-checkpoints (or the committed ones), each named by its file's stem."""
    from server.device import resolve_device

    engines: list[ImageEngine] = []
    for path in settings.image_models():
        require_checkpoint(
            path,
            "image",
            "others with --image-checkpoints (or ANTIPHON_IMAGE_CHECKPOINTS; 'none': no images)",
            train="`antiphon train dcgan` (or vae, vaegan, rbm, evaluator)",
        )
        if any(e.model_id == path.stem for e in engines):
            raise InvalidArgument("--image-checkpoints", f"two checkpoints are named {path.stem!r}: rename one")
        device = str(resolve_device(settings.device))
        engines.append(ImageEngine.from_checkpoint(path, path.stem, image_limits(settings), device))
    return engines


def load_classifiers(settings: ServeSettings, defaults: dict[str, Path]) -> list[Classifier]:
    """The classifiers named by --classifiers (each from its --NAME-checkpoint or its default), or by default every
    one whose default checkpoint exists."""
    named = settings.classifiers
    if named is not None and "none" in named:
        return []
    loaded = []
    for name in named or LOADERS:
        given = getattr(settings, f"{name}_checkpoint")
        path = given or defaults[name]
        if not path.is_file():
            if named is None and given is None:
                continue  # not asked for by name: serve the others
            raise CheckpointError(f"{name} checkpoint {path} {absent(path)} (train one with `antiphon train {name}`)")
        loaded.append(LOADERS[name](path, name))
    return loaded


def chat_style(settings: ServeSettings, speakers: list[str] | None) -> ChatStyle:
    """Personas from --personas, else from the checkpoint's recorded speakers, else King Lear's."""
    personas = settings.personas or tuple(speakers or ())[:MAX_PERSONAS]
    if not personas:
        personas = FALLBACK_PERSONAS
        log.warning("the checkpoint records no speakers; chat personas: %s (set --personas)", ", ".join(personas))
    default = settings.default_persona or personas[0]
    if default not in personas:
        raise InvalidArgument("--default-persona", f"{default!r} is not one of {', '.join(personas)}")
    user = settings.user_speaker or next((p for p in personas if p != default), default)
    return ChatStyle(tuple(personas), default, user)


class _Encrypted(Exception):
    """Raised by the pass phrase callback: the key is encrypted, and the server asks no one for its pass phrase."""


def _refuse_pass_phrase() -> bytes:
    raise _Encrypted  # OpenSSL asks only for an encrypted key; without a callback it would prompt on the terminal


def tls_context(settings: ServeSettings) -> ssl.SSLContext | None:
    """The WebSocket and HTTP listeners' TLS context from --tls-cert and --tls-key; None without them."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])  # both speak HTTP/1.1 (WebSocket upgrades from it)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key, password=_refuse_pass_phrase)
    except _Encrypted:
        raise InvalidArgument(
            "--tls-key",
            f"{settings.tls_key} is encrypted: give an unencrypted key (openssl pkey -in KEY -out PLAIN)",
        ) from None
    except (ssl.SSLError, OSError) as exc:
        raise InvalidArgument(
            "--tls-cert", f"cannot serve {settings.tls_cert} with the key {settings.tls_key}: {exc}"
        ) from None
    return context


def warn_if_expiring(cert: Path, now: datetime | None = None) -> None:
    """Log a WARNING when the first certificate of ``cert`` has expired or expires within a week."""
    try:
        # The standard library reads a certificate's dates only through this helper (no other parser installed).
        not_after = ssl._ssl._test_decode_cert(str(cert))["notAfter"]  # type: ignore[attr-defined]
        expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)
    except (AttributeError, KeyError, ValueError, ssl.SSLError, OSError):
        return  # not readable this way: load_cert_chain has accepted it, so say nothing
    now = now or datetime.now(UTC)
    shown = expires.strftime("%Y-%m-%d %H:%M UTC")
    if expires <= now:
        log.warning("--tls-cert: %s expired on %s: clients will refuse it; renew it and restart", cert, shown)
    elif expires - now <= EXPIRY_WARNING:
        log.warning("--tls-cert: %s expires on %s: renew it and restart before then", cert, shown)


def preflight(settings: ServeSettings) -> None:
    """The checks of files and keys that need no model, run before the models load (which can take a minute): the
    key file, the TLS pair (and its expiry date)."""
    settings.api_keys()
    if tls_context(settings) is not None and settings.tls_cert is not None:
        warn_if_expiring(settings.tls_cert)


def warn_if_exposed(settings: ServeSettings, keys: bool, tls: bool) -> None:
    """A WARNING when the server listens beyond the loopback interface with no API key, or with keys in clear text."""
    if is_loopback(settings.host):
        return
    if not keys:
        log.warning(
            "--host %s listens beyond this machine with no API key: anyone who can reach it may use it "
            "(set --api-key-file)",
            settings.host,
        )
    elif not tls:
        log.warning(
            "--host %s listens beyond this machine without TLS: keys travel in plain text (set --tls-cert and "
            "--tls-key, or put a TLS proxy in front)",
            settings.host,
        )


async def check_host(host: str) -> None:
    """ListenError naming --host when ``host`` does not resolve or is not an address of this machine (checked
    before any listener binds, so that a bad host is not blamed on a port)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"--host: cannot resolve {host}: {exc.strerror}") from None
    failed: OSError | None = None
    for family, kind, proto, _, address in infos:  # one that binds is enough ("localhost" without IPv6)
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.bind((address[0], 0, *address[2:]))
            return
        except OSError as exc:
            failed = failed or exc
    if failed is not None and failed.errno == errno.EADDRNOTAVAIL:
        raise ListenError(f"--host: {host} is not an address of this machine")
    if failed is not None:
        raise ListenError(f"--host: cannot listen on {host}: {failed.strerror}")


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    """The engines behind a gRPC and a WebSocket listener. ``start`` then ``stop``; ``stop`` is idempotent."""

    def __init__(
        self,
        settings: ServeSettings,
        engines: Sequence[TextEngine],
        audio_engines: Sequence[AudioEngine] = (),
        classifiers: Sequence[Classifier] = (),
        image_engines: Sequence[ImageEngine] = (),
    ) -> None:
        self.settings = settings
        self.engines: list[TextEngine | AudioEngine | ImageEngine] = [*engines, *audio_engines, *image_engines]
        self.classifiers = list(classifiers)
        self.models = ModelRegistry()
        for classifier in self.classifiers:
            self.models.add_classifier(classifier)
        for engine in engines:
            self.models.add_text(engine)
        for audio in audio_engines:
            self.models.add_audio(audio)
        for image in image_engines:
            self.models.add_image(image)
        # A registry of this server's own (a process may run several); with --metrics off, a recorder of nothing.
        self.metrics = Metrics(lambda: [e.gauges() for e in self.engines]) if settings.metrics else Recorder()
        for served in [*self.engines, *self.classifiers]:
            served.metrics = self.metrics
        for running in self.engines:
            running.stall_s = settings.stall_timeout_s or None
        self.grpc_port = 0
        self.ws_port = 0
        self.http_port = 0
        self._serving = False
        self._grpc: grpc.aio.Server | None = None
        self._health: Any = None
        self._ws: WebSocketServer | None = None
        self.keys = ApiKeys(settings.api_keys(), self.metrics.error)  # read once: a changed key file takes a restart
        self._tls = tls_context(settings)
        browsers = Browsers(settings.cors_origins, is_loopback(settings.host))  # what a web page may reach
        self._transport = WebSocketTransport(self.models, lambda: self._serving, self.keys, self.metrics, browsers)
        self._kept = redis_responses(settings)  # None: the Responses API keeps responses in memory
        self._http = HttpListener(
            HttpTransport(
                self.models,
                lambda: self._serving,
                settings.cors_origins,
                self.keys,
                self.metrics,
                ResponseStore(self._kept),
                browsers,
            ).app,
            settings.host,
            settings.http_port,
            self._tls,
        )
        self._stopping: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()  # set by a second signal: cancel the streams still draining
        self._trimmer = Trimmer()

    @property
    def tls(self) -> bool:
        return self._tls is not None

    @property
    def grpc_address(self) -> str:
        return _address(self.settings.host, self.grpc_port)

    @property
    def ws_address(self) -> str:
        return _address(self.settings.host, self.ws_port)

    @property
    def http_address(self) -> str:
        return _address(self.settings.host, self.http_port)

    async def start(self) -> None:
        settings = self.settings
        await check_host(settings.host)
        for engine in self.engines:
            engine.start()
            if isinstance(engine, TextEngine) and engine.shared is not None:
                await engine.shared.check()  # says in the log whether Redis answers; turns fail until it does
        self._grpc = grpc.aio.server(
            interceptors=[RequireKey(self.keys)] if self.keys.required else None,
            options=server_options(),  # message size, keepalive, the pings clients may send
        )
        self._health = add_services(self._grpc, self.models, self.metrics)
        address = _address(settings.host, settings.grpc_port)
        try:
            if settings.tls_cert is not None and settings.tls_key is not None:
                pair = (settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())
                self.grpc_port = self._grpc.add_secure_port(address, grpc.ssl_server_credentials([pair]))
            else:
                self.grpc_port = self._grpc.add_insecure_port(address)
        except RuntimeError as exc:
            await self.stop(0)
            raise ListenError(f"--grpc-port: cannot listen on {address}: {exc}") from None
        await self._grpc.start()
        try:
            self._ws = await websocket_serve(
                self._transport.handler,
                settings.host,
                settings.ws_port,
                process_request=self._transport.process_request,
                select_subprotocol=select_subprotocol,
                ssl=self._tls,
                logger=handshake_logger(),
                max_size=settings.ws_max_message_bytes,
                compression=None if settings.ws_compression == "none" else settings.ws_compression,
                create_connection=CoalescingConnection,
                close_timeout=WS_CLOSE_TIMEOUT_S,
            )
        except OSError as exc:
            await self.stop(0)
            raise ListenError(
                f"--ws-port: cannot listen on {_address(settings.host, settings.ws_port)}: {exc}"
            ) from None
        self.ws_port = self._ws.sockets[0].getsockname()[1]
        try:
            self.http_port = await self._http.start()
        except ListenError:
            await self.stop(0)
            raise
        await mark_serving(self._health)
        self._serving = True
        # What is loaded now lives as long as the process: moved out of the collector's reach, a full collection
        # no longer walks the models' and libraries' objects (a 100 ms pause every so often, in every stream).
        gc.collect()
        gc.freeze()
        self._trimmer.start()  # hands malloc's free pages back to the system every minute (server/memory.py)

    @property
    def hurried(self) -> bool:
        return self._hurry.is_set()

    def hurry(self) -> None:
        """Cut the drain short: the streams still live are cancelled now (a second signal during shutdown)."""
        self._hurry.set()

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, let live streams finish within the grace period, cancel the rest, close."""
        if self._stopping is None:
            grace = self.settings.grace_s if grace_s is None else grace_s
            self._stopping = asyncio.create_task(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace_s: float) -> None:
        self._serving = False
        await self._trimmer.stop()
        # Order matters. First new work is refused: health says NOT_SERVING, the WebSocket listener closes, and the
        # engines answer UNAVAILABLE to new streams. Then live streams drain (or are cancelled at the deadline).
        # The listeners close last, so every stream can still deliver its final message; gRPC's own grace period
        # is only for handlers still writing that message.
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._ws is not None:
            self._ws.close(close_connections=False)
        closing: asyncio.Future[Any] = asyncio.gather(*(engine.close(grace_s) for engine in self.engines))
        hurried: asyncio.Future[Any] = asyncio.ensure_future(self._hurry.wait())
        await asyncio.wait({closing, hurried}, return_when=asyncio.FIRST_COMPLETED)
        hurried.cancel()
        if not closing.done():
            # A cancelled close has only stopped waiting (the engine still refuses new streams); closing again with
            # no grace cancels the live streams and ends the engine.
            closing.cancel()
            await asyncio.gather(closing, return_exceptions=True)
            await asyncio.gather(*(engine.close(0.0) for engine in self.engines))
        for classifier in self.classifiers:
            classifier.close()
        await self._transport.drain(timeout_s=1.0)
        await self._http.stop()
        if self._kept is not None:
            await self._kept.close()
        if self._grpc is not None:
            await self._grpc.stop(1.0)
        if self._ws is not None:
            # Server.close() is idempotent: the first call (close_connections=False) owns the close task, so calling
            # it again would not close the connections, and an idle client would hold the process open. Close each
            # connection here with 1001 (going away); the close task then sees every handler return.
            connections = list(self._ws.connections)
            await asyncio.gather(*(c.close(CloseCode.GOING_AWAY) for c in connections), return_exceptions=True)
            await self._ws.wait_closed()


async def serve(
    settings: ServeSettings,
    checkpoint: Path,
    audio_checkpoint: Path | None = None,
    classifier_checkpoints: dict[str, Path] | None = None,
) -> None:
    """Run until SIGTERM, SIGINT or SIGHUP, then shut down gracefully (a second signal cancels the streams left). No
    ``audio_checkpoint``: no audio model; ``classifier_checkpoints``: the default checkpoint of each classifier."""
    preflight(settings)
    log.info("loading the models (a first start also compiles the CPU steps, which can take half a minute)")
    started = time.monotonic()
    engine = await asyncio.to_thread(load_text_engine, settings, checkpoint)
    log.info("text model %s ready (%.1f s): %s", engine.model_id, time.monotonic() - started, engine.description)
    audio = []
    if audio_checkpoint is not None:
        started = time.monotonic()
        audio.append(await asyncio.to_thread(load_audio_engine, settings, audio_checkpoint))
        log.info("audio model %s ready (%.1f s)", audio[0].model_id, time.monotonic() - started)
    classifiers = await asyncio.to_thread(load_classifiers, settings, classifier_checkpoints or {})
    if classifiers:
        log.info("classifiers: %s", ", ".join(c.info.id for c in classifiers))
    images = await asyncio.to_thread(load_image_engines, settings)
    if images:
        log.info("image models: %s", ", ".join(f"{e.model_id} ({e.family})" for e in images))
    server = Server(settings, [engine], audio, classifiers, images)
    await server.start()
    stop = asyncio.Event()
    received: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum)
        if not stop.is_set():
            stop.set()
        elif not server.hurried:
            log.info("%s again: cancelling the live streams now", signum.name)
            server.hurry()

    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    if server.keys.required:
        log.info("API keys: %d accepted; every request but health checks and the chat page needs one", len(server.keys))
    else:
        log.info("API keys: none set, every listener is open to whoever reaches it")
    warn_if_exposed(settings, server.keys.required, server.tls)
    grpc_scheme, ws_scheme, http_scheme = ("grpcs", "wss", "https") if server.tls else ("grpc", "ws", "http")
    log.info(
        "listening %s=%s %s=%s %s=%s",
        *(grpc_scheme, server.grpc_address, ws_scheme, server.ws_address, http_scheme, server.http_address),
    )
    try:
        await stop.wait()
        log.info(
            "shutting down on %s: live streams have %.1f s to finish (signal again to cancel them now)",
            received[0].name,
            settings.grace_s,
        )
    finally:
        await server.stop()
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    log.info("stopped")
