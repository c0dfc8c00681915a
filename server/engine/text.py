"""The text engine: one asyncio-driven loop per loaded model that runs every live stream in one batched step.

Each iteration of the loop, between two steps:

1. streams that ended or were cancelled leave the batch (their rows are dropped; a chat turn's row is kept as
   its session's state);
2. waiting streams join, up to ``max_streams``, and their prompts are read in one batched sequence pass;
3. every stream with room in its output buffer draws its next tokens from its own random source, and all of them
   are stepped together, several steps per iteration (as many as fit in ``burst_s``, from the measured cost of a
   step at that batch size), so each stream gets its tokens in one piece per iteration. On the CPU the cost is
   the step's CPU time, not its wall time: when the transports share the cores, wall time would shrink the bursts
   to single steps, each costing the transports a message per stream, which slows the steps further.
   A stream whose consumer stops reading has no room: it keeps its row but is not stepped.

The model work of an iteration runs in one call on the engine's own worker thread, so the event loop stays free
to serve the transports; the loop only routes tokens. The output is the one :class:`TextGeneration` produces for
the same seed (it is tested against it), whether a stream runs alone or beside others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from server.engine.backend import TextBackend
from server.engine.loop import EngineLoop
from server.engine.prefixes import PrefixCache
from server.engine.redis_sessions import RedisSessions, SavedSession
from server.engine.requests import TURN_END, ChatTurn, Conversation, SamplingOptions, TextModelInfo, TextRequest
from server.engine.sessions import SessionStore, Turn
from server.engine.streams import FINISH_CANCELLED, FINISH_LENGTH, FINISH_STOP, TextStream
from server.errors import AntiphonError, InvalidArgument
from server.metrics import EngineGauges
from server.sampling import RowRules, SamplingParams, StreamRandom
from server.text.generate import StopMatcher
from server.text.vocab import START_TEXT, Vocabulary

log = logging.getLogger(__name__)

MAX_BURST = 64  # steps one iteration may run


@dataclass(frozen=True)
class TextLimits:
    max_streams: int = 64  # streams stepped together
    max_waiting: int = 64  # streams queued beyond max_streams before answering "overloaded"
    max_prompt_chars: int = 4000  # a prompt, or one chat message
    max_tokens: int = 2048  # the largest max_tokens a request may ask for
    stream_buffer: int = 64  # unread tokens per stream before the stream pauses
    max_sessions: int = 1024
    session_ttl_s: float = 1800.0
    burst_s: float = 0.010  # step time (the backend's clock) an iteration may spend before its tokens go out
    prefix_cache: int = 1024  # states kept after conversation prefixes (Conversation requests); 0 keeps none


@dataclass(frozen=True)
class ChatStyle:
    """How chat turns are written: the personas a model may speak as, and the user's name."""

    personas: tuple[str, ...]
    default_persona: str
    user_speaker: str

    def turn_text(self, speaker: str, message: str, persona: str) -> str:
        return f"{speaker}.\n{message}{TURN_END}{persona}.\n"


@dataclass(eq=False)
class _Job:
    stream: TextStream
    params: SamplingParams
    random: StreamRandom
    ids: list[int]  # read when joining the batch
    stops: StopMatcher
    stop_ids: tuple[tuple[int, ...], ...]  # the stop sequences as token ids
    turn: Turn | None = None  # a chat turn's hold on its session, released when the job is finalized
    start: Any = None  # the state the prompt is read from (a session's or a kept prefix's); None: zero
    prefix: str | None = None  # a conversation: everything read from the zero state, kept with its end state
    sampled: list[str] = field(default_factory=list)
    recent: tuple[int, ...] = ()  # the last tokens, as many as a stop sequence spanning iterations needs
    tokens: int = 0
    end_reason: str | None = None  # set once the stream has produced its last token
    finalized: bool = False

    @property
    def keeps_state(self) -> bool:
        """Whether the row's state outlives the stream (a chat session's, a conversation prefix's)."""
        return self.turn is not None or self.prefix is not None

    @property
    def kind(self) -> str:
        """What the metrics count it as: a chat turn, a reply to a whole conversation, or a continuation."""
        return "chat" if self.turn is not None else "conversation" if self.prefix is not None else "generate"


def closing_of(said: str) -> str:
    """The newlines still needed after a reply to end its turn (a blank line), which the next turn reads first."""
    return "" if said.endswith(TURN_END) else TURN_END[len(said) - len(said.rstrip("\n")) :]


@dataclass
class _Plan:
    """The model work of one iteration, decided on the event loop and run on the worker thread."""

    keep: list[int] | None  # rows that stay (None: all)
    extract: list[int]  # rows whose state a chat session keeps (before ``keep`` applies)
    joining: list[_Job]
    ready: list[int]  # rows (after keep and join) to sample and step
    ready_jobs: list[_Job]


class TextEngine(EngineLoop[_Job]):
    """Serves one text model: submit with :meth:`generate` or :meth:`chat`, read the returned stream."""

    def __init__(
        self,
        model_id: str,
        backend: TextBackend,
        vocab: Vocabulary,
        limits: TextLimits,
        chat: ChatStyle,
        description: str = "",
        shared: RedisSessions | None = None,
    ) -> None:
        super().__init__(model_id, limits.max_streams, limits.max_waiting, "text")
        self.backend = backend
        self.vocab = vocab
        self.limits = limits
        self.chat_style = chat
        self.description = description
        self.sessions = SessionStore(limits.max_sessions, limits.session_ttl_s)
        # Where sessions outlive this process (None: here only). With one, every turn starts from the session as
        # the shared store has it and the client hears ``done`` once the store has the completed turn.
        self.shared = shared
        self._turn_io: set[asyncio.Task[None]] = set()  # shared-store reads and writes in flight
        self.prefixes = PrefixCache(limits.prefix_cache)
        self._waiting: deque[_Job] = deque()
        self._jobs: list[_Job] = []  # row i of the batch state belongs to _jobs[i]
        self._joining: list[_Job] = []  # taken from _waiting, being read into the batch by the current step
        self._state: Any = None  # the backend's rows: recurrent state and next-token scores
        self._step_s: dict[int, float] = {}  # seconds per step on the backend's clock, by batch size class
        self._delivered_at: float | None = None  # when the last iteration's tokens went out (None: idle since)

    # -- public --------------------------------------------------------------
    @property
    def info(self) -> TextModelInfo:
        return TextModelInfo(
            id=self.model_id,
            kind="text",
            description=self.description,
            personas=self.chat_style.personas,
            default_persona=self.chat_style.default_persona,
            max_prompt_chars=self.limits.max_prompt_chars,
            max_tokens=self.limits.max_tokens,
            max_request_streams=self.limits.max_streams + self.limits.max_waiting,
        )

    @property
    def live_streams(self) -> int:
        """Streams in the batch or waiting to join (ended ones leave at the next step)."""
        return len(self._jobs) + len(self._joining) + len(self._waiting) + len(self._turn_io)

    def generate(self, request: TextRequest) -> TextStream:
        """Continue ``request.prompt``; raises InvalidArgument, ResourceExhausted or Unavailable at once."""
        request.validate(self.info)
        params = self._params(request.sampling)
        self._check_capacity()
        return self._submit(self._stream(request.request_id, request.transport), START_TEXT + request.prompt, params)

    def chat(self, turn: ChatTurn) -> TextStream:
        """One turn of a chat session: the persona's reply to ``turn.message``, until its turn ends."""
        style = self.chat_style
        persona = turn.validate(self.info)
        speaker = turn.speaker or style.user_speaker
        params = self._params(turn.sampling)
        params = params.with_defaults(stop=(TURN_END, *params.stop))
        self._check_capacity()
        stream = self._stream(turn.request_id, turn.transport)
        held = self.sessions.begin_turn(
            turn.session_id, live=lambda: not stream.done, persona=persona, cancelled=lambda: stream.cancel_requested
        )
        stream.turns = held.session.turns  # the count a turn that does not complete leaves (the store's: below)
        text = style.turn_text(speaker, turn.message, persona)
        if self.shared is not None:
            self._turn_task(self._load_turn(self.shared, stream, held, text, params))
            return stream
        session = held.session
        text = session.pending + text if session.state is not None else START_TEXT + text
        return self._submit(stream, text, params, held, start=session.state)

    def converse(self, conversation: Conversation) -> TextStream:
        """The persona's reply to a whole conversation, until its turn ends. The state after every completed reply
        is kept under the text read (:class:`PrefixCache`), so when the conversation comes back with one more
        turn only the new text is read."""
        info = self.info
        persona = conversation.validate(info)
        params = self._params(conversation.sampling)
        params = params.with_defaults(stop=(TURN_END, *params.stop))
        self._check_capacity()
        text = START_TEXT + conversation.dialogue(info, persona, self.chat_style.user_speaker)
        kept = self.prefixes.longest(text)
        stream = self._stream(conversation.request_id, conversation.transport)
        if kept is None:
            return self._submit(stream, text, params, prefix=text)
        stream.cached_tokens = kept.chars - len(kept.closing)
        rest = text[stream.cached_tokens :]
        self._submit(stream, rest, params, start=kept.state, prefix=text)
        stream.prompt_tokens += stream.cached_tokens
        return stream

    def _ending(self) -> int:
        return sum(1 for j in self._jobs if j.end_reason is not None or j.stream.cancel_requested)

    def _drop_all(self) -> None:
        for task in self._turn_io:
            task.cancel()  # each releases its turn and ends its stream as it unwinds
        for job in [*self._jobs, *self._joining, *self._waiting]:
            self._finalize(job, FINISH_CANCELLED)
        self._jobs, self._joining, self._state = [], [], None
        self._waiting.clear()

    # -- sessions kept outside this process ---------------------------------------
    def _turn_task(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._turn_io.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._turn_io.discard(task)
            self._notify_progress()

        task.add_done_callback(done)

    async def _load_turn(
        self, shared: RedisSessions, stream: TextStream, turn: Turn, text: str, params: SamplingParams
    ) -> None:
        """Read the session as the shared store has it, then queue the turn from there. The turn holds the local
        session meanwhile, so this replica runs one turn of it at a time."""
        session = turn.session
        try:
            saved = await shared.load(session.id)
        except AntiphonError as exc:
            self.sessions.end_turn(turn)
            stream.fail(exc)
            return
        except asyncio.CancelledError:  # shutdown
            self.sessions.end_turn(turn)
            stream.finish(FINISH_CANCELLED)
            raise
        if stream.cancel_requested or self._closing:
            self.sessions.end_turn(turn)
            stream.finish(FINISH_CANCELLED)
            return
        if saved is None:  # new, or expired in the store: a first turn
            session.state, session.pending, session.turns, session.history_chars = None, "", 0, 0
            self._submit(stream, START_TEXT + text, params, turn)
            return
        session.state = self.backend.load_row(saved.row)
        session.pending, session.turns, session.history_chars = saved.pending, saved.turns, saved.chars
        stream.turns = saved.turns
        self._submit(stream, saved.pending + text, params, turn, start=session.state)

    async def _save_turn(self, shared: RedisSessions, job: _Job, state: Any, reason: str) -> None:
        """Write a completed turn to the shared store; only then does the session move on and the client hear
        ``done``. A turn the store did not take never happened: the session stays as it was, the client gets the
        error and may send the turn again."""
        turn = job.turn
        assert turn is not None
        session, said = turn.session, "".join(job.sampled)
        saved = SavedSession(
            turns=session.turns + 1,
            persona=turn.persona,
            pending=closing_of(said),
            chars=session.history_chars + len(job.ids) + len(said),
            row=self.backend.dump_row(state),
        )
        try:
            await shared.save(session.id, saved, previous_turns=session.turns)
        except AntiphonError as exc:
            self.sessions.end_turn(turn)
            job.stream.fail(exc)
            return
        except asyncio.CancelledError:  # shutdown
            self.sessions.end_turn(turn)
            job.stream.finish(FINISH_CANCELLED)
            raise
        self._end_turn(turn, job, state)
        job.stream.finish(reason)

    def _release(self) -> None:
        super()._release()
        self.backend.close()

    async def close(self, grace_s: float = 0.0) -> None:
        await super().close(grace_s)
        if self.shared is not None:
            await self.shared.close()

    # -- submission ------------------------------------------------------------
    def _params(self, options: SamplingOptions) -> SamplingParams:
        base = SamplingParams()
        params = SamplingParams(
            temperature=base.temperature if options.temperature is None else options.temperature,
            top_k=base.top_k if options.top_k is None else options.top_k,
            top_p=base.top_p if options.top_p is None else options.top_p,
            seed=options.seed,
            max_tokens=min(base.max_tokens, self.limits.max_tokens)
            if options.max_tokens is None
            else options.max_tokens,
            stop=tuple(options.stop),
        )
        try:
            return params.validated(max_tokens_limit=self.limits.max_tokens, vocab_size=len(self.vocab))
        except InvalidArgument as exc:
            raise InvalidArgument(f"sampling.{exc.field}", exc.reason) from None

    def _stream(self, request_id: str, transport: str) -> TextStream:
        return TextStream(self.limits.stream_buffer, self._wake.set, request_id, transport)

    def _submit(
        self,
        stream: TextStream,
        text: str,
        params: SamplingParams,
        turn: Turn | None = None,
        start: Any = None,
        prefix: str | None = None,
    ) -> TextStream:
        ids = self.vocab.encode(text)
        stream.prompt_tokens = len(ids)
        stop_ids = tuple(tuple(self.vocab.encode(s)) for s in params.stop)  # unknown characters never match
        random = StreamRandom(params.seed)
        job = _Job(stream, params, random, ids, StopMatcher(params.stop), stop_ids, turn, start, prefix)
        self._waiting.append(job)
        self._wake.set()
        return stream

    # -- the loop --------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Cleared before the stream states are read: a cancel, a read or a submission after this point sets it
            # again, so the wait below cannot miss it.
            self._wake.clear()
            stall_in = self._cancel_stalled(j.stream for j in self._jobs)
            round_ = self._next_round(self._jobs, self._waiting)
            if round_ is None:
                self._delivered_at = None  # the next tokens' gap would include the wait
                self._notify_progress()
                await self._idle(stall_in)
                continue
            rows = round_.rows
            # Completed chat turns and conversation replies keep their row's state (for the session, or the prefix
            # cache); every other leaving job (a cancel, whatever stage it reached) releases its session unchanged
            # when it is finalized below.
            ended_turns = [j for j in round_.leaving if j.keeps_state and j.end_reason]
            plan = _Plan(
                keep=round_.keep,
                extract=[self._jobs.index(j) for j in ended_turns],  # jobs compare by identity
                joining=round_.joining,
                ready=round_.ready,
                ready_jobs=[rows[i] for i in round_.ready],
            )
            self._joining = plan.joining
            started = time.monotonic()
            try:
                tokens, kept_states = await loop.run_in_executor(self._executor, self._compute, plan)
            except Exception:
                self._fail_step([*self._jobs, *plan.joining])
                self._jobs, self._joining, self._state = [], [], None
                self._delivered_at = None
                continue
            self._measure(started, tokens)
            self._route(plan.ready_jobs, tokens)
            self.steps += 1
            for job, state in zip(ended_turns, kept_states, strict=True):
                self._finalize(job, job.end_reason or FINISH_STOP, state)  # end_reason is set: "or" is for the type
            for job in round_.leaving:
                self._finalize(job, job.end_reason or FINISH_CANCELLED)
            self._jobs, self._joining = rows, []
            self._notify_progress()

    def _abandon(self, job: _Job) -> None:
        if job.turn is not None:
            self.sessions.end_turn(job.turn)  # unchanged; a no-op once released

    def _measure(self, started: float, tokens: list[list[int]]) -> None:
        """An iteration's figures for the metrics, once per iteration: its model time and the streams it advanced,
        and the gap between two tokens of those streams (the time since the previous iteration's tokens went out,
        over the steps this one ran). A gap is taken only between two iterations that both advanced streams."""
        if not tokens:
            self._delivered_at = None
            return
        now = time.monotonic()
        self.metrics.iteration(self.model_id, now - started, len(tokens))
        steps = max(map(len, tokens))
        if steps and self._delivered_at is not None:
            self.metrics.token_gap(self.model_id, (now - self._delivered_at) / steps)
        self._delivered_at = now if steps else None

    def _steps(self, rows: int) -> int:
        """Steps for an iteration of ``rows`` streams: as many as fit in ``burst_s`` (one until measured)."""
        per_step = self._step_s.get(rows.bit_length())
        if per_step is None:
            return 1
        return max(1, min(MAX_BURST, int(self.limits.burst_s / per_step)))

    def _compute(self, plan: _Plan) -> tuple[list[list[int]], list[Any]]:
        """The model work of one iteration, on the worker thread (the loop awaits it, so nothing races): each
        ready row's tokens, and the states kept for chat sessions."""
        backend = self.backend
        state = self._state
        kept = [backend.select(state, [row]) for row in plan.extract]
        if plan.keep is not None:
            state = backend.select(state, plan.keep) if plan.keep else None
        if plan.joining:
            init = backend.concat([j.start if j.start is not None else backend.zero_state(1) for j in plan.joining])
            joined = backend.prefill([j.ids for j in plan.joining], init)
            state = joined if state is None else backend.concat([state, joined])
        tokens: list[list[int]] = []
        if plan.ready:
            # A joining stream's first token goes out after one step, not a burst.
            steps = 1 if plan.joining else self._steps(len(plan.ready))
            rules = [
                RowRules(j.params, j.random, min(j.params.max_tokens - j.tokens, j.stream.room()), j.stop_ids, j.recent)
                for j in plan.ready_jobs
            ]
            start = backend.clock()
            tokens = backend.advance(state, plan.ready, rules, steps)
            done = max((len(t) for t in tokens), default=0)
            if done and not plan.joining:
                size = len(plan.ready).bit_length()
                per_step = (backend.clock() - start) / done
                previous = self._step_s.get(size, per_step)
                self._step_s[size] = 0.8 * previous + 0.2 * per_step
        self._state = state
        return tokens, kept

    def _route(self, jobs: Sequence[_Job], tokens: Sequence[Sequence[int]]) -> None:
        now = time.monotonic()
        decode = self.vocab.decode
        for job, drawn in zip(jobs, tokens, strict=True):
            if not drawn:
                continue
            stream = job.stream
            if stream.first_token_at is None:
                stream.first_token_at = now
            job.tokens += len(drawn)
            stream.completion_tokens = job.tokens
            text = decode(drawn)
            job.sampled.append(text)
            if job.stop_ids:
                keep = max(len(s) for s in job.stop_ids) - 1
                job.recent = (*job.recent, *drawn)[-keep:] if keep else ()
            out, stopped = job.stops.feed(text)
            stream.push(out)
            if stopped:
                job.end_reason = FINISH_STOP
            elif job.tokens >= job.params.max_tokens:
                stream.push(job.stops.flush())
                job.end_reason = FINISH_LENGTH
            if job.end_reason is not None and not job.keeps_state:
                self._finalize(job, job.end_reason)  # the client hears at once; the row leaves at the next step

    def _finalize(self, job: _Job, reason: str, state: Any = None) -> None:
        """End ``job`` once: its chat turn is released first (moving the session on with ``state``, the row after a
        completed reply; unchanged without), then the client hears how the stream ended. Every ending of a stream
        comes through here, so no ending can leave its session held."""
        if job.finalized:
            return
        job.finalized = True
        saving = job.turn is not None and state is not None and self.shared is not None
        if saving:
            assert self.shared is not None  # for the type
            self._turn_task(self._save_turn(self.shared, job, state, reason))  # finishes the stream once saved
        elif job.turn is not None:
            self._end_turn(job.turn, job, state)
        elif job.prefix is not None and state is not None:
            said = "".join(job.sampled)
            self.prefixes.put(job.prefix + said + closing_of(said), state, closing_of(said))
        stream = job.stream
        if not saving:
            stream.finish(reason)
        kind = "chat" if job.turn is not None else "text"
        self._log_end(stream, kind, f"prompt_tokens={stream.prompt_tokens} tokens={job.tokens}", reason)
        self._record(job, reason)

    def _record(self, job: _Job, reason: str) -> None:
        stream = job.stream
        first, duration = stream.times()
        self.metrics.text_request(
            self.model_id,
            stream.transport,
            job.kind,
            reason,
            first,
            duration,
            stream.prompt_tokens,
            job.tokens,
        )

    def gauges(self) -> EngineGauges:
        """What the engine holds now (read at scrape time, on the event loop)."""
        prefixes = self.prefixes
        return EngineGauges(
            self.model_id,
            running=len(self._jobs) + len(self._joining) - self._ending(),
            waiting=len(self._waiting),
            sessions=len(self.sessions),
            prefix_entries=len(prefixes),
            prefix_hits=prefixes.hits,
            prefix_misses=prefixes.misses,
        )

    def _end_turn(self, turn: Turn, job: _Job, state: Any) -> None:
        if state is None:
            self.sessions.end_turn(turn)
            return
        said = "".join(job.sampled)
        if self.sessions.end_turn(turn, state, closing_of(said), read_chars=len(job.ids) + len(said)):
            job.stream.turns = turn.session.turns
