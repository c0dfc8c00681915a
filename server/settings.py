"""The server's settings: one typed object, built in one place from flags and ``ANTIPHON_*`` environment variables.

Every field of :class:`ServeSettings` is a flag (``max_streams`` -> ``--max-streams``) and an environment variable
(``ANTIPHON_MAX_STREAMS``); a flag wins over the environment, the environment over the default. ``antiphon serve
--help`` lists them all, grouped, with their defaults.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from server.errors import InvalidArgument
from server.paths import (
    DEFAULT_AUDIO_CHECKPOINT,
    DEFAULT_DIGITS_CHECKPOINT,
    DEFAULT_IMAGE_MODELS,
    DEFAULT_KWS_CHECKPOINT,
    DEFAULT_TEXT_CHECKPOINT,
    DEFAULT_TEXTDISC_CHECKPOINT,
    shown,
)

ENV_PREFIX = "ANTIPHON_"
NO_MODEL = "none"  # a model option's value that serves no such model
# ANTIPHON_* variables that are not settings of serve but are read elsewhere (the data cache, the training data,
# the edge client, the tests, the nginx template of deploy/replicas/): no warning for these.
OTHER_VARIABLES = frozenset(
    {
        "ANTIPHON_CACHE",
        "ANTIPHON_FASHION_MNIST",
        "ANTIPHON_EDGE_MODELS",
        "ANTIPHON_EDGE_BACKEND",
        "ANTIPHON_EDGE_FILES",
        "ANTIPHON_EDGE_PYTHON",
        "ANTIPHON_EDGE_VENV",
        "ANTIPHON_SERVER_PYTHON",
        "ANTIPHON_TEST_TIMEOUT_UNIT",
        "ANTIPHON_GRPC_LISTEN",
        "ANTIPHON_HTTP_LISTEN",
        "ANTIPHON_GRPC_SERVERS",
        "ANTIPHON_WS_SERVERS",
        "ANTIPHON_HTTP_SERVERS",
    }
)
TEN_YEARS_S = 10 * 365 * 24 * 3600  # Redis keeps an expiry in milliseconds; far below its limit
# A model id as clients name it: a persona follows a '/' (char-lstm/kent), and Redis keys join it with ':'
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _names(raw: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in raw.split(",") if n.strip())


def _option(
    default: Any, help: str, group: str, parse: Callable[[str], Any] = str, most: float | None = None, **kw: Any
) -> Any:
    """A setting's field; ``most``: the largest value it takes (shown in --help, checked by ``validated``)."""
    meta = {"help": help, "group": group, "parse": parse, "most": most}
    if "default_factory" in kw:
        return field(default_factory=kw["default_factory"], metadata=meta)
    return field(default=default, metadata=meta)


def _path(raw: str) -> Path:
    return Path(raw)


def _milliseconds(raw: str) -> float:
    return float(raw)


def _device(raw: str) -> str:
    if raw not in ("auto", "cpu", "cuda"):
        raise ValueError("must be auto, cpu or cuda")
    return raw


def _backend(raw: str) -> str:
    if raw not in ("auto", "fast", "fused", "eager"):
        raise ValueError("must be auto, fast, fused or eager")
    return raw


def _switch(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise ValueError("must be on or off")


def redacted(url: str) -> str:
    """``url`` with every password in it masked (``user:PASSWORD@`` and ``?password=``), for the log and errors."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query, flags=re.IGNORECASE)
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # rebuilt, a URL without a host would lose a slash
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _session_store(raw: str) -> str:
    if raw == "memory":
        return raw
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be memory or a Redis URL (redis://HOST:PORT/DB, rediss://..., unix://PATH)")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL names the socket: unix:///run/redis/redis.sock")
    else:
        if not parts.hostname:
            raise ValueError("names no host: redis://HOST:PORT/DB")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("its port must be a number in 1..65535") from None
        if port == 0:
            raise ValueError("its port must be a number in 1..65535")
    db = parts.path.strip("/") if parts.scheme != "unix" else ""
    db = dict(parse_qsl(parts.query)).get("db", db)
    if db and not (db.isascii() and db.isdigit()):
        raise ValueError(f"the database must be a number 0 or more, got {db!r}")
    return raw


def _compression(raw: str) -> str:
    if raw not in ("none", "deflate"):
        raise ValueError("must be none or deflate")
    return raw


@dataclass(frozen=True)
class ServeSettings:
    # listening
    host: str = _option("127.0.0.1", "address the servers bind (0.0.0.0 or :: for every interface)", "listening")
    grpc_port: int = _option(50051, "gRPC port (0 picks a free one)", "listening", int)
    ws_port: int = _option(8765, "WebSocket port (0 picks a free one)", "listening", int)
    http_port: int = _option(
        8000, "HTTP port: the OpenAI-compatible API under /v1 (0 picks a free one)", "listening", int
    )
    cors_origins: tuple[str, ...] = _option(
        (),
        "comma-separated origins browsers may call the HTTP API from (* for any)",
        "listening",
        _names,
    )
    grace_s: float = _option(
        10.0, "seconds live streams may take to finish after SIGTERM", "listening", float, most=3600
    )
    # security
    api_key: str | None = _option(
        None,
        "a key every request must carry (Authorization: Bearer KEY); prefer the variable or --api-key-file, which "
        "other users of the machine cannot read from the process list (default: none, the server is open)",
        "security",
    )
    api_key_file: Path | None = _option(  # noqa: RUF009
        None,
        "a file of keys, one per line (a line starting with # is a comment); any of them is accepted",
        "security",
        _path,
    )
    tls_cert: Path | None = _option(  # noqa: RUF009
        None, "PEM certificate chain: serve gRPC, WebSocket and HTTP over TLS (needs --tls-key)", "security", _path
    )
    tls_key: Path | None = _option(None, "PEM private key of --tls-cert", "security", _path)  # noqa: RUF009
    # operations
    metrics: bool = _option(True, "Prometheus metrics at GET /metrics on the HTTP port", "operations", _switch)
    session_store: str = _option(
        "memory",
        "where chat sessions live: memory (this process only) or a Redis URL (redis://HOST:PORT/DB), which any "
        "replica can continue a session from and a restart keeps",
        "operations",
        _session_store,
    )
    # the model
    text_checkpoint: Path | None = _option(  # noqa: RUF009 (_option returns a dataclasses.field)
        None, f"text model checkpoint (default: {shown(DEFAULT_TEXT_CHECKPOINT)})", "model", _path
    )
    text_model_id: str = _option("char-lstm", "the id clients name the text model by", "model")
    device: str = _option("auto", "auto (CUDA when present), cpu or cuda", "model", _device)
    text_backend: str = _option(
        "auto",
        "what runs the text model: fast (compiled CPU step), fused (torch, the one for CUDA) or eager (nn.LSTM); "
        "auto: fast on the CPU, fused on CUDA",
        "model",
        _backend,
    )
    text_threads: int = _option(
        min(2, os.cpu_count() or 1), "cores the fast text step splits a batch across", "model", int, most=128
    )
    text_burst_ms: float = _option(
        10.0,
        "time one text iteration may spend generating before its tokens go out: with few streams, each gets "
        "several tokens per message (higher: more throughput; lower: smoother streams)",
        "limits",
        _milliseconds,
    )
    torch_threads: int | None = _option(
        None, "CPU threads for the model (default: torch's choice)", "model", int, most=1024
    )
    personas: tuple[str, ...] | None = _option(
        None,
        "comma-separated speaker names chat may answer as (default: the speakers the checkpoint records)",
        "model",
        _names,
    )
    default_persona: str | None = _option(None, "persona of a chat that names none (default: the first)", "model")
    user_speaker: str | None = _option(
        None, "name the user's chat lines are written under (default: the first other persona)", "model"
    )
    audio_checkpoint: Path | None = _option(  # noqa: RUF009
        None,
        f"audio model (WaveNet) checkpoint (default: {shown(DEFAULT_AUDIO_CHECKPOINT)} when present; none: no audio)",
        "model",
        _path,
    )
    audio_model_id: str = _option("wavenet", "the id clients name the audio model by", "model")
    classifiers: tuple[str, ...] | None = _option(
        None,
        "comma-separated classifiers Classify serves: kws, textdisc, digits (default: each whose checkpoint is in "
        "models/; none: no classifier)",
        "model",
        _names,
    )
    kws_checkpoint: Path | None = _option(  # noqa: RUF009
        None, f"keyword-spotting checkpoint (default: {shown(DEFAULT_KWS_CHECKPOINT)})", "model", _path
    )
    textdisc_checkpoint: Path | None = _option(  # noqa: RUF009
        None, f"text discriminator checkpoint (default: {shown(DEFAULT_TEXTDISC_CHECKPOINT)})", "model", _path
    )
    digits_checkpoint: Path | None = _option(  # noqa: RUF009
        None, f"digits CNN checkpoint (default: {shown(DEFAULT_DIGITS_CHECKPOINT)})", "model", _path
    )
    image_checkpoints: tuple[str, ...] | None = _option(
        None,
        f"comma-separated image model checkpoints GenerateImage serves, each under its file's stem (default: every "
        f"*.safetensors in {shown(DEFAULT_IMAGE_MODELS)} when present; none: no image model)",
        "model",
        _names,
    )
    # limits
    max_streams: int = _option(64, "streams generated together in one batch", "limits", int, most=4096)
    max_waiting: int = _option(
        64, "streams queued beyond --max-streams before answering overloaded", "limits", int, most=100_000
    )
    max_prompt_chars: int = _option(
        4000, "characters in a prompt or in one chat message", "limits", int, most=1_000_000
    )
    max_tokens: int = _option(2048, "largest max_tokens a request may ask for", "limits", int, most=1_000_000)
    stream_buffer: int = _option(64, "unread tokens per stream before the stream pauses", "limits", int, most=1_000_000)
    stall_timeout_s: float = _option(
        60.0,
        "seconds a paused stream waits for its client to read any of it before it is cancelled and its slot freed "
        "(a client hung without closing its connection); 0 waits for ever",
        "limits",
        float,
        most=TEN_YEARS_S,
    )
    ws_max_message_bytes: int = _option(
        65536, "largest WebSocket message a client may send", "limits", int, most=64 << 20
    )
    ws_compression: str = _option(
        "none",
        "WebSocket permessage-deflate: none, or deflate when the clients' links are slow (token frames are a few "
        "dozen bytes; deflating each costs both ends more CPU than it saves on a fast link)",
        "limits",
        _compression,
    )
    max_sessions: int = _option(
        1024, "chat sessions kept (the least recently used idle one goes)", "limits", int, most=10_000_000
    )
    session_ttl_s: float = _option(1800.0, "seconds an unused chat session is kept", "limits", float, most=TEN_YEARS_S)
    prefix_cache: int = _option(
        1024,
        "model states kept after conversation prefixes, so an HTTP chat that resends its history reads only its "
        "new turn (about 10 KB each for the default model; 0 keeps none)",
        "limits",
        int,
        most=1_000_000,
    )
    max_audio_streams: int = _option(16, "audio streams generated together in one batch", "limits", int, most=1024)
    max_audio_seconds: float = _option(
        30.0, "longest audio one request may ask for, in seconds", "limits", float, most=3600
    )
    max_audio_text_chars: int = _option(
        400, "characters of text one audio request may speak", "limits", int, most=100_000
    )
    audio_buffer_ms: int = _option(
        1000, "unread audio per stream, in milliseconds, before it pauses", "limits", int, most=60_000
    )
    audio_threads: int = _option(
        min(2, os.cpu_count() or 1), "cores the audio step splits its batch across", "model", int, most=128
    )
    max_image_streams: int = _option(64, "image streams (one image each) generated together", "limits", int, most=4096)
    max_image_steps: int = _option(
        1000,
        "most frames one image request may make (Gibbs steps; dream steps x octaves)",
        "limits",
        int,
        most=100_000,
    )

    @classmethod
    def from_sources(
        cls, args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
    ) -> ServeSettings:
        """Flags (``args``, None where not given) over ``ANTIPHON_*`` variables over defaults; validated."""
        environ = environ if environ is not None else {}
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = getattr(args, f.name, None) if args is not None else None
            source = flag_name(f.name)
            if raw is None:
                raw = environ.get(env_name(f.name))
                source = env_name(f.name)
            if raw is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw) if isinstance(raw, str) else raw
            except ValueError as exc:
                shown = redacted(raw) if f.name == "session_store" and isinstance(raw, str) else raw
                raise InvalidArgument(source, f"cannot read {shown!r}: {exc}") from None
        return cls(**values).validated()

    def validated(self) -> ServeSettings:
        for name in ("grpc_port", "ws_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise InvalidArgument(flag_name(name), f"must be in 0..65535, got {port}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise InvalidArgument(flag_name("torch_threads"), f"must be at least 1, got {self.torch_threads}")
        positive = ("max_streams", "max_prompt_chars", "max_tokens", "stream_buffer", "max_sessions", "text_threads")
        audio = ("max_audio_streams", "max_audio_text_chars", "audio_buffer_ms", "audio_threads")
        for name in (*positive, *audio, "max_image_streams", "max_image_steps"):
            if getattr(self, name) < 1:
                raise InvalidArgument(flag_name(name), f"must be at least 1, got {getattr(self, name)}")
        if self.prefix_cache < 0:
            raise InvalidArgument(flag_name("prefix_cache"), f"must be 0 or more, got {self.prefix_cache}")
        if self.max_waiting < 0:
            raise InvalidArgument(flag_name("max_waiting"), f"must be 0 or more, got {self.max_waiting}")
        if self.ws_max_message_bytes < 1024:
            raise InvalidArgument(
                flag_name("ws_max_message_bytes"), f"must be at least 1024, got {self.ws_max_message_bytes}"
            )
        for name in ("grace_s", "session_ttl_s", "stall_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidArgument(flag_name(name), f"must be a finite number of seconds >= 0, got {value}")
        for f in fields(self):
            most, value = f.metadata["most"], getattr(self, f.name)
            if most is not None and value is not None and value > most:
                raise InvalidArgument(flag_name(f.name), f"must be at most {most:,}, got {value:,}")
        if not self.host.strip():
            raise InvalidArgument(flag_name("host"), "must not be empty: 127.0.0.1, 0.0.0.0 or :: (every interface)")
        if self.session_store != "memory":
            try:
                _session_store(self.session_store)
            except ValueError as exc:
                raise InvalidArgument(
                    flag_name("session_store"), f"cannot read {redacted(self.session_store)!r}: {exc}"
                ) from None
        if self.personas is not None and not self.personas:
            raise InvalidArgument(flag_name("personas"), "name at least one speaker")
        if self.personas and self.default_persona is not None and self.default_persona not in self.personas:
            raise InvalidArgument(
                flag_name("default_persona"), f"{self.default_persona!r} is not one of {', '.join(self.personas)}"
            )
        if not (math.isfinite(self.text_burst_ms) and 0 <= self.text_burst_ms <= 1000):
            raise InvalidArgument(flag_name("text_burst_ms"), f"must be 0..1000 milliseconds, got {self.text_burst_ms}")
        if self.text_backend == "fast" and self.device == "cuda":
            raise InvalidArgument(flag_name("text_backend"), "fast runs on the CPU; use fused (or auto) with cuda")
        if not (math.isfinite(self.max_audio_seconds) and self.max_audio_seconds > 0):
            raise InvalidArgument(flag_name("max_audio_seconds"), f"must be positive, got {self.max_audio_seconds}")
        known = ("kws", "textdisc", "digits", "none")
        for name in self.classifiers or ():
            if name not in known:
                raise InvalidArgument(
                    flag_name("classifiers"), f"unknown classifier {name!r}; known: {', '.join(known)}"
                )
        images = [name.lower() for name in self.image_checkpoints or ()]
        if NO_MODEL in images and len(images) > 1:
            raise InvalidArgument(flag_name("image_checkpoints"), "none serves no image model: name nothing else")
        for name in ("text_model_id", "audio_model_id"):
            if not MODEL_ID.fullmatch(model_id := getattr(self, name)):
                shown = f"got {model_id!r}" if model_id else "got nothing"
                raise InvalidArgument(flag_name(name), f"must be 1..64 letters, digits, '.', '_' or '-', {shown}")
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise InvalidArgument(flag_name(missing), "TLS needs both --tls-cert and --tls-key")
        for name in ("tls_cert", "tls_key", "api_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise InvalidArgument(flag_name(name), f"no such file: {path}")
        if self.api_key is not None and not self.api_key.strip():
            raise InvalidArgument(flag_name("api_key"), "must not be empty")
        return self

    def api_keys(self) -> frozenset[str]:
        """Every accepted key (--api-key and the lines of --api-key-file); empty: the server is open. In the file,
        a line whose first character that is not blank is ``#`` is a comment; a ``#`` further on is part of a key."""
        keys = {self.api_key.strip()} if self.api_key else set()
        if self.api_key_file is not None:
            try:
                text = self.api_key_file.read_bytes().decode("utf-8-sig")  # -sig: a byte-order mark is not the key's
            except UnicodeDecodeError:
                raise InvalidArgument(flag_name("api_key_file"), f"{self.api_key_file} is not UTF-8 text") from None
            except OSError as exc:
                raise InvalidArgument(
                    flag_name("api_key_file"), f"cannot read {self.api_key_file}: {exc.strerror}"
                ) from None
            for line in text.splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    keys.add(line)
            if not keys:
                raise InvalidArgument(flag_name("api_key_file"), f"{self.api_key_file} holds no key")
        return frozenset(keys)

    def image_models(self) -> list[Path]:
        """The image checkpoints to serve: those named (``none``: no image model), else every checkpoint in
        models/image/ (none when it does not exist)."""
        if self.image_checkpoints is not None:
            if [name.lower() for name in self.image_checkpoints] == [NO_MODEL]:
                return []
            return [Path(name) for name in self.image_checkpoints]
        return sorted(DEFAULT_IMAGE_MODELS.glob("*.safetensors")) if DEFAULT_IMAGE_MODELS.is_dir() else []

    def text_model(self) -> Path:
        """The text checkpoint to serve: the one named (flag or variable), else the committed one."""
        return self.text_checkpoint or DEFAULT_TEXT_CHECKPOINT

    def audio_model(self) -> Path | None:
        """The audio checkpoint to serve, None for no audio: the one named (``none``: no audio), else the committed
        one when it exists."""
        if self.audio_checkpoint is not None:
            return None if str(self.audio_checkpoint).lower() == NO_MODEL else self.audio_checkpoint
        if DEFAULT_AUDIO_CHECKPOINT.is_file():
            return DEFAULT_AUDIO_CHECKPOINT
        logging.getLogger("antiphon.server").warning(
            "no audio model at %s: serving text only (train one with `antiphon train audio`)", DEFAULT_AUDIO_CHECKPOINT
        )
        return None


def stray_variables(environ: Mapping[str, str]) -> list[str]:
    """One line for each ``ANTIPHON_*`` variable in ``environ`` that no setting of serve (or other part of antiphon)
    reads, naming the nearest setting's variable: a misspelt one would otherwise be ignored without a word."""
    known = {env_name(f.name) for f in fields(ServeSettings)}
    lines = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known or name in OTHER_VARIABLES:
            continue
        # compared without the prefix, which every name shares and would make any two look alike
        near = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), [f.name.upper() for f in fields(ServeSettings)])
        hint = f" (did you mean {ENV_PREFIX}{near[0]}?)" if near else ""
        lines.append(f"{name} is not a setting of antiphon serve and is ignored{hint}")
    return lines


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


METAVARS: dict[Callable[[str], Any], str] = {
    int: "N",
    float: "SECONDS",
    _milliseconds: "MS",
    _path: "PATH",
    _names: "NAMES",
    _device: "DEVICE",
    _backend: "BACKEND",
    _compression: "none|deflate",
    _switch: "on|off",
    _session_store: "memory|URL",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, grouped, each defaulting to None so the environment and defaults can fill in."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(ServeSettings):
        group_name = f.metadata["group"]
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        default = f.default
        shown = (",".join(default) or "none") if isinstance(default, tuple) else default
        if isinstance(default, bool):
            shown = "on" if default else "off"
        most = f.metadata["most"]
        bound = "" if most is None else f"at most {most:,}; "
        groups[group_name].add_argument(
            flag_name(f.name),
            dest=f.name,
            default=None,
            metavar=METAVARS.get(f.metadata["parse"], "TEXT"),
            help=f"{f.metadata['help']} ({'' if default is None else f'default: {shown}; '}{bound}"
            f"env {env_name(f.name)})",
        )
