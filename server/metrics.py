"""Prometheus metrics: the server's own registry, what the engines and transports report, and the text ``GET
/metrics`` answers. No torch here; docs/operations.md lists every metric.

Nothing is counted per token. The engines report once per request, when it ends (:meth:`Recorder.text_request`,
:meth:`Recorder.audio_request`, :meth:`Recorder.image_request`), and once per iteration of their loop
(:meth:`Recorder.iteration`, :meth:`Recorder.token_gap`); the transports report each error they answer
(:meth:`Recorder.error`). What the engines already hold (streams running and waiting, chat sessions, the prefix
cache and its hit counts) is read when Prometheus scrapes, through :class:`EngineGauges`, so nothing updates it on
the hot path.

:class:`Recorder` records nothing: it is what engines hold outside a server and what a server with ``--metrics
off`` hands them. :class:`Metrics` records, on a registry of its own (a process may run several servers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

INPROC = "inproc"  # the transport label of a request made in process (benchmarks, tests)

# Buckets, in seconds unless named otherwise. The default text model's first token comes after 20-100 ms and a
# token every 0.5-5 ms; an engine iteration is sized to about --text-burst-ms (10 ms) of model work.
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
TOKEN_GAP_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
ITERATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 256)  # streams
REALTIME_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)  # seconds of audio per second


@dataclass(frozen=True)
class EngineGauges:
    """What an engine holds at one moment, read at scrape time. None: the engine has no such thing (audio engines
    keep no chat sessions)."""

    model: str
    running: int  # streams in the batch
    waiting: int  # streams accepted but not in the batch yet (audio: being prepared too)
    sessions: int | None = None
    prefix_entries: int | None = None
    prefix_hits: int | None = None  # the prefix cache's lookups since the engine started, counted by the cache
    prefix_misses: int | None = None


class Recorder:
    """What the engines and transports report. This one records nothing: ``--metrics off``, or no server."""

    enabled = False

    def text_request(
        self,
        model: str,
        transport: str,
        kind: str,
        reason: str,
        ttft_s: float | None,
        duration_s: float,
        prompt_tokens: int,
        tokens: int,
    ) -> None:
        """A text stream ended (``reason``: stop, length, cancelled or error); ``ttft_s`` None: no token came."""

    def audio_request(
        self,
        model: str,
        transport: str,
        reason: str,
        ttft_s: float | None,
        duration_s: float,
        samples: int,
        sample_rate: int,
    ) -> None:
        """An audio stream ended after producing ``samples``."""

    def image_request(
        self, model: str, transport: str, reason: str, ttft_s: float | None, duration_s: float, frames: int
    ) -> None:
        """An image stream ended after sending ``frames`` frames; ``ttft_s`` None: no frame was sent."""

    def classify_request(self, model: str, transport: str, reason: str, duration_s: float) -> None:
        """A classification was answered (``reason`` stop) or failed inside the model (error)."""

    def iteration(self, model: str, seconds: float, batch: int) -> None:
        """One iteration of an engine's loop: ``seconds`` of model work advancing ``batch`` streams."""

    def token_gap(self, model: str, seconds: float) -> None:
        """The time between two tokens of every stream an iteration advanced (once per iteration)."""

    def error(self, transport: str, code: str) -> None:
        """A transport answered an error: a refused request, or a stream that failed after it began."""

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The metrics as text, in the format ``accept`` asks for, and its content type."""
        raise NotImplementedError("metrics are off")


def _transport(name: str) -> str:
    return name or INPROC


class Metrics(Recorder):
    """The recorder of a server with ``--metrics on``: ``engines()`` lists what the engines hold, read at scrape
    time (on the event loop, where the engines change it)."""

    enabled = True

    def __init__(self, engines: Callable[[], Iterable[EngineGauges]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "antiphon_requests",
            "Streams and classifications that ended, by model, transport, kind and finish reason",
            ("model", "transport", "kind", "finish_reason"),
            registry=registry,
        )
        self.errors = Counter(
            "antiphon_errors",
            "Errors the transports answered, by transport and protocol code (HTTP status, gRPC status name, "
            "WebSocket error-frame code or close code)",
            ("transport", "code"),
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "antiphon_prompt_tokens",
            "Prompt tokens (characters) of ended text streams, those resumed from a kept state included",
            ("model", "transport", "kind"),
            registry=registry,
        )
        self.generated_tokens = Counter(
            "antiphon_generated_tokens",
            "Tokens (characters) generated by ended text streams",
            ("model", "transport", "kind"),
            registry=registry,
        )
        self.audio_samples = Counter(
            "antiphon_generated_audio_samples",
            "Audio samples generated by ended audio streams",
            ("model", "transport"),
            registry=registry,
        )
        self.image_frames = Counter(
            "antiphon_generated_image_frames",
            "Image frames sent by ended image streams",
            ("model", "transport"),
            registry=registry,
        )
        self.ttft = Histogram(
            "antiphon_time_to_first_token_seconds",
            "Seconds from a request's arrival at the engine to its first token (audio: its first samples; image: "
            "its first frame)",
            ("model", "kind"),
            registry=registry,
            buckets=TTFT_BUCKETS,
        )
        self.duration = Histogram(
            "antiphon_request_duration_seconds",
            "Seconds from a request's arrival at the engine to its end",
            ("model", "kind"),
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.token_gaps = Histogram(
            "antiphon_inter_token_latency_seconds",
            "Seconds between two tokens of a text stream, observed once per engine iteration for every stream "
            "it advanced (the gap since the previous iteration, over the tokens each stream got)",
            ("model",),
            registry=registry,
            buckets=TOKEN_GAP_BUCKETS,
        )
        self.realtime = Histogram(
            "antiphon_audio_realtime_ratio",
            "Seconds of audio an audio stream produced per second of its duration (above 1: faster than it plays)",
            ("model",),
            registry=registry,
            buckets=REALTIME_BUCKETS,
        )
        self.iterations = Histogram(
            "antiphon_engine_iteration_seconds",
            "Seconds of model work in one iteration of an engine's loop (text: the joining prompts and a burst of "
            "token steps; audio: one chunk of samples)",
            ("model",),
            registry=registry,
            buckets=ITERATION_BUCKETS,
        )
        self.batch = Histogram(
            "antiphon_engine_batch_size",
            "Streams one iteration of an engine's loop advanced",
            ("model",),
            registry=registry,
            buckets=BATCH_BUCKETS,
        )
        registry.register(_EngineCollector(engines))
        # The children of the per-iteration histograms, by model: an iteration skips the label lookup.
        self._iteration: dict[str, tuple[Histogram, Histogram]] = {}
        self._gap: dict[str, Histogram] = {}

    def text_request(
        self,
        model: str,
        transport: str,
        kind: str,
        reason: str,
        ttft_s: float | None,
        duration_s: float,
        prompt_tokens: int,
        tokens: int,
    ) -> None:
        transport = _transport(transport)
        self.requests.labels(model, transport, kind, reason).inc()
        self.prompt_tokens.labels(model, transport, kind).inc(prompt_tokens)
        self.generated_tokens.labels(model, transport, kind).inc(tokens)
        if ttft_s is not None:
            self.ttft.labels(model, kind).observe(ttft_s)
        self.duration.labels(model, kind).observe(duration_s)

    def audio_request(
        self,
        model: str,
        transport: str,
        reason: str,
        ttft_s: float | None,
        duration_s: float,
        samples: int,
        sample_rate: int,
    ) -> None:
        transport = _transport(transport)
        self.requests.labels(model, transport, "speech", reason).inc()
        self.audio_samples.labels(model, transport).inc(samples)
        if ttft_s is not None:
            self.ttft.labels(model, "speech").observe(ttft_s)
        self.duration.labels(model, "speech").observe(duration_s)
        if samples and duration_s > 0:
            self.realtime.labels(model).observe(samples / sample_rate / duration_s)

    def image_request(
        self, model: str, transport: str, reason: str, ttft_s: float | None, duration_s: float, frames: int
    ) -> None:
        transport = _transport(transport)
        self.requests.labels(model, transport, "image", reason).inc()
        self.image_frames.labels(model, transport).inc(frames)
        if ttft_s is not None:
            self.ttft.labels(model, "image").observe(ttft_s)
        self.duration.labels(model, "image").observe(duration_s)

    def classify_request(self, model: str, transport: str, reason: str, duration_s: float) -> None:
        self.requests.labels(model, _transport(transport), "classify", reason).inc()
        self.duration.labels(model, "classify").observe(duration_s)

    def iteration(self, model: str, seconds: float, batch: int) -> None:
        children = self._iteration.get(model)
        if children is None:
            children = self._iteration[model] = (self.iterations.labels(model), self.batch.labels(model))
        children[0].observe(seconds)
        children[1].observe(batch)

    def token_gap(self, model: str, seconds: float) -> None:
        child = self._gap.get(model)
        if child is None:
            child = self._gap[model] = self.token_gaps.labels(model)
        child.observe(seconds)

    def error(self, transport: str, code: str) -> None:
        self.errors.labels(_transport(transport), code).inc()

    def exposition(self, accept: str) -> tuple[bytes, str]:
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


class _EngineCollector:
    """The gauges and counters the engines already hold, read at scrape time."""

    def __init__(self, engines: Callable[[], Iterable[EngineGauges]]) -> None:
        self._engines = engines

    def describe(self) -> Iterable[Metric]:
        return self._families([])  # the names and types, without reading the engines

    def collect(self) -> Iterable[Metric]:
        return self._families(list(self._engines()))

    def _families(self, engines: list[EngineGauges]) -> Iterator[Metric]:
        running = GaugeMetricFamily("antiphon_streams_running", "Streams in an engine's batch", labels=("model",))
        waiting = GaugeMetricFamily(
            "antiphon_streams_waiting",
            "Streams accepted and waiting to join an engine's batch (audio: being prepared too)",
            labels=("model",),
        )
        sessions = GaugeMetricFamily("antiphon_chat_sessions", "Chat sessions kept", labels=("model",))
        entries = GaugeMetricFamily(
            "antiphon_prefix_cache_entries", "Model states kept after conversation prefixes", labels=("model",)
        )
        hits = CounterMetricFamily(
            "antiphon_prefix_cache_hits",
            "Conversations that resumed from a kept prefix state (one lookup per request)",
            labels=("model",),
        )
        misses = CounterMetricFamily(
            "antiphon_prefix_cache_misses",
            "Conversations that found no kept prefix state and were read from the start",
            labels=("model",),
        )
        for e in engines:
            running.add_metric((e.model,), e.running)
            waiting.add_metric((e.model,), e.waiting)
            for family, value in (
                (sessions, e.sessions),
                (entries, e.prefix_entries),
                (hits, e.prefix_hits),
                (misses, e.prefix_misses),
            ):
                if value is not None:
                    family.add_metric((e.model,), value)
        yield from (running, waiting, sessions, entries, hits, misses)
