"""Text serving throughput and latency: in process, over gRPC, over WebSocket and over OpenAI-compatible HTTP.

    python benchmarks/text_bench.py [--checkpoint PATH] [--streams 1,64] [--tokens 1024] [--device cpu]
        [--transports inproc,grpc,ws,http]

For each stream count it runs that many seeded streams at once and reports total tokens/s and the p99 gap between
two messages of one stream; then the time to first token for a 500-character prompt at idle. "inproc" reads the
engine's streams directly; "grpc", "ws" and "http" go through a real server on free ports, read by clients in a
second process on the same machine (client work shares the CPU with the server, as it would for a local front end,
but not the server's event loop). The medians say what share of in process each transport delivers.

"http" is httpx (HTTP/1.1 keep-alive, one connection per concurrent stream, as an OpenAI client holds them) reading
server-sent events, each ``data:`` line parsed as it arrives:

- Throughput and the 500-character prompt's time to first token use streamed ``POST /v1/completions`` with the
  same prompt, seed and ``max_tokens`` as the other transports. A chat completion ends at the blank line that ends
  the persona's turn (a reply of a few dozen to a few hundred characters, its length set by sampling), so 64 chat
  streams would neither read 1,024 tokens each nor the same number as the other transports. A completion stream is
  the same engine request as theirs, and its events differ from a chat completion's only in where the text sits
  (``choices[0].text`` against ``choices[0].delta.content``): the same Starlette handler path, the same SSE framing,
  one event per engine message. So the share of in process measures the transport alone.
- Chat: the time to first token of a streamed ``POST /v1/chat/completions`` for a conversation of several user and
  assistant messages (about 500 characters of content), never cached (one word of its first message differs every
  time, so no kept prefix matches; ``cached_tokens`` is reported and is 0).
- The prefix cache ("http-cache", run after "http" in its own client process, the engine's counters read around
  it): one conversation of ``--cache-turns`` user messages (about 4,000 characters as the model reads them) where
  each request resends the whole history with one turn more; the hit rate is
  ``usage.prompt_tokens_details.cached_tokens`` over ``prompt_tokens`` summed over those requests, beside the
  engine's ``prefixes.hits`` and ``misses``. Then a follow-up turn, timed to its first token with the cache (the
  kept state after the last reply) and as a miss (the same history with one word of its first message changed:
  every character read from the start, as with ``--prefix-cache 0``), alternating; the difference is the time the
  cache saves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import grpc
import httpx
from antiphon.v1 import generation_pb2_grpc, sampling_pb2, text_pb2
from websockets.asyncio.client import connect

from server.app import Server, load_text_engine
from server.engine.requests import SamplingOptions, TextRequest
from server.engine.text import TextEngine
from server.paths import default_checkpoint
from server.settings import ServeSettings

PROMPT = "Lear.\n"
# A speech in the corpus's form, repeated to the length asked for.
LONG_PROMPT = (
    "KENT.\nI thought the King had more affected the Duke of Albany than Cornwall.\n\n"
    "GLOUCESTER.\nIt did always seem so to us; but now, in the division of the kingdom, it appears not which of "
    "the Dukes he values most.\n\n"
)

# A conversation of about 500 characters of content for the chat time to first token; "{word}" differs per request.
CONVERSATION = (
    ("user", "Good morrow, my {word}. What news from the court? They say the King is much changed of late."),
    (
        "assistant",
        "He is, sir; he hath given his kingdom to his two daughters, and keeps but a hundred knights and his fool.",
    ),
    ("user", "A hundred knights! And how do the daughters bear with so great a train about their house?"),
    ("assistant", "Ill, my lord. Goneril would have him put away fifty of them, and Regan would have none."),
    (
        "user",
        "Then the old man is in danger, and the storm is rising. Tell me plainly, what will you do now, and whom"
        " will you serve?",
    ),
)
WORDS = (
    "lord", "liege", "cousin", "uncle", "brother", "master", "friend", "sir", "lady", "captain", "father", "mother",
    "sister", "nephew", "gentleman", "fellow", "knight", "servant", "sovereign", "kinsman", "love", "dear", "good",
    "noble",
)  # fmt: skip
# The prefix cache's conversation: one user message per turn (about 110 characters each), replies of at most
# CACHE_REPLY_TOKENS characters; 20 turns come to about 3,600 characters of content, 4,000 as the model reads them.
CACHE_LINES = (
    "Good morrow, my {word}. I have ridden hard from Dover, and bring letters for the Duke of Cornwall and his wife.",
    "The French are landed, and the old King is among them, mad as the vexed sea, crowned with rank weeds and flowers.",
    "Where is the Earl of Gloucester? I was bid to find him, and to give him this ring, and to speak with him alone.",
    "They say his eyes are put out, and that his son Edmund hath his lands and titles. Is this true, or but report?",
    "I pray you, tell me how the Lady Goneril stands toward her husband, for the letters speak of a quarrel there.",
    "The Duke of Albany is a mild man, they say, and no friend to this cruelty; yet he must lead the army to Dover.",
    "What of Edgar, the elder son? Some say he fled the house, and some that he is dead, and some that he is mad.",
    "Here comes a poor fellow out of the storm, all in rags and mud. Shall we give him shelter, or send him away?",
    "He speaks of foul fiends and of Tom's a-cold. There is some wit in his madness, I think, if one could find it.",
    "The King would see his daughter Cordelia, yet he is ashamed to come before her, and will not be persuaded.",
    "Send to the camp, and bid the doctor come, for the King has slept, and they say that sleep may mend his mind.",
    "I hear the drums of the British powers. Edmund leads them, and both the sisters follow him with their eyes.",
    "If the battle goes against us, what shall become of the King and of Cordelia? Speak, for the hour is late.",
    "A letter has been found on the body of the steward Oswald, in Goneril's hand, and it speaks of her husband.",
    "Take it to the Duke of Albany when he is alone, and say nothing of it to any other man until he has read it.",
    "There is a knight in armour at the gate who will not tell his name, and calls Edmund traitor to his face.",
    "The trumpet sounds the third time, and no man answers it but this one. Let the heralds read the paper now.",
    "Edmund is down, and the knight lifts his visor. It is Edgar, his brother, whom all the court had thought lost.",
    "Run, run to the castle, for Edmund has confessed that he gave order for the death of the King and Cordelia.",
    "The King comes in, bearing his daughter in his arms, and crying out upon us all. Is there no help for her?",
)
CACHE_FOLLOW_UP = "Look there, my lord, look on her lips. Speak to him now, for he is going, and we cannot hold him."
CACHE_REPLY_TOKENS = 100

Opener = Callable[[int, int], AsyncIterator[str]]  # (seed, max_tokens) -> text pieces


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def stream_figures(streams: int, counts: list[int], gaps: list[float], elapsed: float) -> dict[str, float]:
    return {
        "streams": streams,
        "tokens": sum(counts),
        "messages": len(gaps),
        "seconds": round(elapsed, 3),
        "tokens_per_s": round(sum(counts) / elapsed, 1),
        "p99_gap_ms": round(percentile(gaps, 0.99) * 1000, 2),
    }


async def run_streams(open_stream: Opener, streams: int, tokens: int) -> dict[str, float]:
    gaps: list[float] = []
    counts: list[int] = []

    async def one(seed: int) -> None:
        last = time.perf_counter()
        chars = 0
        async for piece in open_stream(seed, tokens):
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            chars += len(piece)
        counts.append(chars)

    start = time.perf_counter()
    await asyncio.gather(*(one(seed) for seed in range(streams)))
    return stream_figures(streams, counts, gaps, time.perf_counter() - start)


async def time_to_first_token(open_prompt: Callable[[str], AsyncIterator[str]], prompt: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pieces = open_prompt(prompt)
        await anext(pieces)
        times.append(time.perf_counter() - start)
        await pieces.aclose()
    return round(statistics.median(times) * 1000, 2)


def inproc_opener(server: Server) -> tuple[Opener, Callable[[str], AsyncIterator[str]]]:
    engine = server.engines[0]

    async def pieces(prompt: str, seed: int, tokens: int) -> AsyncIterator[str]:
        stream = engine.generate(TextRequest(prompt, SamplingOptions(seed=seed, max_tokens=tokens)))
        try:
            async for piece in stream:
                yield piece
        finally:
            stream.cancel()

    return (lambda seed, tokens: pieces(PROMPT, seed, tokens)), (lambda prompt: pieces(prompt, 0, 1))


def grpc_opener(stub: Any) -> tuple[Opener, Callable[[str], AsyncIterator[str]]]:
    async def pieces(prompt: str, seed: int, tokens: int) -> AsyncIterator[str]:
        sampling = sampling_pb2.Sampling(seed=seed, max_tokens=tokens)
        call = stub.GenerateText(text_pb2.GenerateTextRequest(prompt=prompt, sampling=sampling))
        try:
            async for chunk in call:
                if chunk.text:
                    yield chunk.text
        finally:
            call.cancel()

    return (lambda seed, tokens: pieces(PROMPT, seed, tokens)), (lambda prompt: pieces(prompt, 0, 1))


class WebSocketMux:
    """One connection, requests told apart by id. The reader hands each frame to its request's handler as it
    arrives (one function call per frame, as a lean front end would), so the client's own cost per frame stays
    small next to the server's."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.handlers: dict[str, Callable[[dict[str, Any]], None]] = {}
        self.next_id = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            self.handlers[frame["id"]](frame)

    async def request(self, prompt: str, seed: int, tokens: int, on_frame: Callable[[dict[str, Any]], None]) -> str:
        """Send a generate request; ``on_frame`` sees each of its frames. Returns the request's id."""
        self.next_id += 1
        request_id = str(self.next_id)
        self.handlers[request_id] = on_frame
        message = {
            "type": "generate",
            "id": request_id,
            "prompt": prompt,
            "sampling": {"seed": seed, "max_tokens": tokens},
        }
        await self.ws.send(json.dumps(message))
        return request_id

    async def run_streams(self, streams: int, tokens: int) -> dict[str, float]:
        """``run_streams`` over this connection, timing each frame in the reader itself."""
        gaps: list[float] = []
        counts: list[int] = []
        done = asyncio.get_running_loop().create_future()

        def handler() -> Callable[[dict[str, Any]], None]:
            last = time.perf_counter()
            chars = 0

            def on_frame(frame: dict[str, Any]) -> None:
                nonlocal last, chars
                if frame["type"] == "token":
                    now = time.perf_counter()
                    gaps.append(now - last)
                    last = now
                    chars += len(frame["text"])
                    return
                if frame["type"] == "error":
                    done.set_exception(RuntimeError(frame["message"]))
                counts.append(chars)
                if len(counts) == streams and not done.done():
                    done.set_result(None)

            return on_frame

        start = time.perf_counter()
        for seed in range(streams):
            await self.request(PROMPT, seed, tokens, handler())
        await done
        return stream_figures(streams, counts, gaps, time.perf_counter() - start)

    async def pieces(self, prompt: str, seed: int, tokens: int) -> AsyncIterator[str]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        request_id = await self.request(prompt, seed, tokens, queue.put_nowait)
        finished = False
        try:
            while (frame := await queue.get())["type"] == "token":
                yield frame["text"]
            finished = True
            if frame["type"] == "error":
                raise RuntimeError(frame["message"])
        finally:
            if not finished:
                await self.ws.send(json.dumps({"type": "cancel", "id": request_id}))


class HttpClient:
    """The OpenAI-compatible HTTP API through httpx, as a front end reads it: HTTP/1.1 keep-alive connections (one
    per concurrent stream), each server-sent event's ``data:`` line decoded as it arrives."""

    def __init__(self, address: str, connections: int) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.client = httpx.AsyncClient(base_url=f"http://{address}", limits=limits, timeout=None)
        self.model = ""

    async def start(self) -> None:
        """Find the text model's id (its default persona)."""
        response = await self.client.get("/v1/models")
        response.raise_for_status()
        self.model = next(m["id"] for m in response.json()["data"] if m["kind"] == "text" and "/" not in m["id"])

    async def events(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """A streamed request's events, each decoded as its ``data:`` line arrives, until ``data: [DONE]``."""
        async with self.client.stream("POST", path, json={"model": self.model, "stream": True, **body}) as response:
            if response.status_code != 200:
                await response.aread()
                raise RuntimeError(f"{path}: HTTP {response.status_code}: {response.text}")
            buffer = b""
            async for data in response.aiter_bytes():
                *lines, buffer = (buffer + data).split(b"\n")
                for line in lines:
                    if not line.startswith(b"data: "):
                        continue  # the blank line that ends an event
                    if line == b"data: [DONE]":
                        return
                    event = json.loads(line[6:])
                    if "error" in event:
                        raise RuntimeError(event["error"]["message"])
                    yield event

    async def completion(self, prompt: str, seed: int, tokens: int) -> AsyncIterator[str]:
        """``prompt`` continued: the text of each event."""
        async for event in self.events("/v1/completions", {"prompt": prompt, "seed": seed, "max_tokens": tokens}):
            text = event["choices"][0]["text"] if event["choices"] else ""
            if text:
                yield text

    def openers(self) -> tuple[Opener, Callable[[str], AsyncIterator[str]]]:
        return (lambda seed, tokens: self.completion(PROMPT, seed, tokens)), (lambda p: self.completion(p, 0, 1))

    async def reply(self, messages: list[dict[str, str]], seed: int, tokens: int) -> tuple[str, dict[str, Any], float]:
        """A streamed chat completion read to its end: the reply, its usage, and the seconds from sending the
        request to the first character of the reply."""
        body = {"messages": messages, "seed": seed, "max_tokens": tokens, "stream_options": {"include_usage": True}}
        start = time.perf_counter()
        first = float("nan")
        pieces: list[str] = []
        usage: dict[str, Any] = {}
        async for event in self.events("/v1/chat/completions", body):
            usage = event.get("usage") or usage
            for choice in event["choices"]:
                if content := choice["delta"].get("content"):
                    if not pieces:
                        first = time.perf_counter() - start
                    pieces.append(content)
        return "".join(pieces), usage, first

    async def aclose(self) -> None:
        await self.client.aclose()


def fresh_word(n: int) -> str:
    """A word, or two, different for every ``n`` below 600 (a request's text that no earlier one had)."""
    return WORDS[n] if n < len(WORDS) else f"{WORDS[n // len(WORDS) - 1]} {WORDS[n % len(WORDS)]}"


def conversation(word: str) -> list[dict[str, str]]:
    return [{"role": role, "content": content.format(word=word)} for role, content in CONVERSATION]


async def chat_time_to_first_token(client: HttpClient, args: argparse.Namespace) -> dict[str, Any]:
    """The median time to the first character of a chat reply to a conversation of about 500 characters, each
    request a conversation not seen before (one word differs)."""
    times, cached = [], 0
    usage: dict[str, Any] = {}
    for i in range(args.repeats):
        messages = conversation(fresh_word(args.round * args.repeats + i))
        _, usage, seconds = await client.reply(messages, seed=i, tokens=1)
        times.append(seconds)
        cached += usage["prompt_tokens_details"]["cached_tokens"]
    return {
        "chat_ttft_ms": round(statistics.median(times) * 1000, 2),
        "conversation_chars": sum(len(m["content"]) for m in conversation(WORDS[0])),
        "prompt_tokens": usage["prompt_tokens"],  # the conversation as the model reads it: names and blank lines
        "cached_tokens": cached,
    }


async def prefix_cache_figures(client: HttpClient, args: argparse.Namespace) -> dict[str, Any]:
    """A conversation that grows by one turn a request, each resending the whole history; then a follow-up timed
    with the kept state and without."""
    first_word = fresh_word(args.round)
    history: list[dict[str, str]] = []
    prompt_tokens = cached_tokens = hits = 0
    for turn in range(args.cache_turns):
        line = CACHE_LINES[turn % len(CACHE_LINES)]
        history.append({"role": "user", "content": line.format(word=first_word)})
        reply, usage, _ = await client.reply(history, seed=turn, tokens=CACHE_REPLY_TOKENS)
        history.append({"role": "assistant", "content": reply})
        prompt_tokens += usage["prompt_tokens"]
        cached_tokens += usage["prompt_tokens_details"]["cached_tokens"]
        hits += usage["prompt_tokens_details"]["cached_tokens"] > 0
    follow_up = [*history, {"role": "user", "content": CACHE_FOLLOW_UP}]
    warm, cold = [], []
    follow_up_usage: dict[str, Any] = {}
    for i in range(args.repeats):  # alternating, so a drift in the machine's speed hits both alike
        _, follow_up_usage, seconds = await client.reply(follow_up, seed=i, tokens=1)
        warm.append(seconds)
        # A miss: the same request with one word of its first message changed, so no kept prefix matches.
        # "good ..." never begins a first word of the history, and the index never repeats over the rounds.
        word = f"good {fresh_word(args.round * args.repeats + i)}"
        missed = [{**follow_up[0], "content": CACHE_LINES[0].format(word=word)}, *follow_up[1:]]
        _, usage, seconds = await client.reply(missed, seed=i, tokens=1)
        cold.append(seconds)
        if usage["prompt_tokens_details"]["cached_tokens"]:
            raise RuntimeError("the follow-up meant to miss the prefix cache hit it")
    warm_ms, cold_ms = statistics.median(warm) * 1000, statistics.median(cold) * 1000
    return {
        "turns": args.cache_turns,
        "conversation_chars": sum(len(m["content"]) for m in follow_up),
        "prompt_tokens": prompt_tokens,
        "cached_tokens": cached_tokens,
        "hit_rate": round(cached_tokens / prompt_tokens, 4),
        "requests_hit": hits,
        "follow_up_prompt_tokens": follow_up_usage["prompt_tokens"],
        "follow_up_cached_tokens": follow_up_usage["prompt_tokens_details"]["cached_tokens"],
        "cached_ttft_ms": round(warm_ms, 2),
        "uncached_ttft_ms": round(cold_ms, 2),
        "saved_ms": round(cold_ms - warm_ms, 2),
    }


def step_bench(checkpoint: Path, device: str, backends: list[str], batches: list[int]) -> list[dict[str, Any]]:
    """The bare model per backend (no engine): sampling and stepping ``batch`` streams for 200 tokens in one
    ``advance`` call, the work an engine iteration hands its backend."""
    from server.device import resolve_device
    from server.engine.backend import make_backend
    from server.sampling import RowRules, SamplingParams, StreamRandom
    from server.text.checkpoint import load_text_model

    model, vocab, _ = load_text_model(checkpoint, resolve_device(device))
    prompt = vocab.encode(PROMPT)
    rows = []
    for name in backends:
        backend = make_backend(name, model)
        for batch in batches:
            state = backend.prefill([prompt] * batch, backend.zero_state(batch))
            rules = [RowRules(SamplingParams(), StreamRandom(seed), 10**9) for seed in range(batch)]
            backend.advance(state, list(range(batch)), rules, 20)  # warm caches and the allocator
            steps = 200
            start = time.perf_counter()
            backend.advance(state, list(range(batch)), rules, steps)
            ms = (time.perf_counter() - start) / steps * 1000
            rows.append({"backend": name, "batch": batch, "step_ms": ms, "tokens_per_s": batch / ms * 1000})
            logging.info("step %s batch %d: %.3f ms (%.0f tokens/s)", name, batch, ms, batch / ms * 1000)
    return rows


async def measure(
    openers: tuple[Opener, Callable[[str], AsyncIterator[str]]],
    args: argparse.Namespace,
    run: Callable[[int, int], Awaitable[dict[str, float]]] | None = None,
) -> list[dict[str, Any]]:
    """Every stream count (through ``run``, by default ``run_streams`` over the openers), then the time to first
    token."""
    open_stream, open_prompt = openers
    run = run or partial(run_streams, open_stream)
    await run_streams(open_stream, 1, 16)  # warm up
    runs = [await run(streams, args.tokens) for streams in args.streams]
    long_prompt = (LONG_PROMPT * (args.prompt_chars // len(LONG_PROMPT) + 1))[: args.prompt_chars]
    ttft = await time_to_first_token(open_prompt, long_prompt, args.repeats)
    return [*runs, {"ttft_ms": ttft, "prompt_chars": args.prompt_chars}]


async def measure_in_client_process(
    transport: str, address: str, args: argparse.Namespace, round_: int
) -> list[dict[str, Any]]:
    """``measure`` over a transport (for "http-cache", ``prefix_cache_figures``), run by this script in a second
    process (``--client``)."""
    command = [
        *(["nice", "-n", str(args.client_nice)] if args.client_nice else []),
        sys.executable, __file__, "--client", transport, "--address", address,
        "--streams", ",".join(map(str, args.streams)), "--tokens", str(args.tokens),
        "--prompt-chars", str(args.prompt_chars), "--repeats", str(args.repeats),
        "--cache-turns", str(args.cache_turns), "--round", str(round_),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = time.process_time()
    child = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the {transport} client process failed with exit code {child.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    runs: list[dict[str, Any]] = json.loads(out)
    # CPU seconds of the whole measurement (every stream count and the time to first token): where the cores went
    client = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    runs.append({"server_cpu_s": round(time.process_time() - server_cpu, 2), "client_cpu_s": round(client, 2)})
    return runs


async def client_main(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The second process: clients of one transport against a server at ``args.address``."""
    if args.client in ("http", "http-cache"):
        client = HttpClient(args.address, max(args.streams))
        try:
            await client.start()
            if args.client == "http-cache":
                return [await prefix_cache_figures(client, args)]
            return [*await measure(client.openers(), args), await chat_time_to_first_token(client, args)]
        finally:
            await client.aclose()
    if args.client == "grpc":
        channel = grpc.aio.insecure_channel(args.address)
        try:
            return await measure(grpc_opener(generation_pb2_grpc.GenerationStub(channel)), args)
        finally:
            await channel.close()
    ws = await connect(f"ws://{args.address}/", max_size=None)
    mux = WebSocketMux(ws)
    try:
        openers = (lambda seed, tokens: mux.pieces(PROMPT, seed, tokens), lambda prompt: mux.pieces(prompt, 0, 1))
        return await measure(openers, args, mux.run_streams)
    finally:
        await ws.close()
        mux.reader.cancel()


MEDIAN_FIGURES = (
    "tokens_per_s", "p99_gap_ms", "ttft_ms", "chat_ttft_ms", "server_cpu_s", "client_cpu_s",
    "hit_rate", "engine_hits", "engine_misses", "cached_ttft_ms", "uncached_ttft_ms", "saved_ms",
)  # fmt: skip


def measure_name(run: dict[str, Any]) -> str:
    if "streams" in run:
        return f"{run['streams']} streams"
    if "hit_rate" in run:
        return "prefix cache"
    return "ttft" if "ttft_ms" in run else "chat ttft" if "chat_ttft_ms" in run else "cpu"


def medians(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per transport and measurement (a stream count, the time to first token, the prefix cache, CPU time), the
    median of each figure over the rounds, with its range; a stream count's tokens/s also as a share of in process
    (of the medians)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in rounds:
        groups.setdefault((run["transport"], measure_name(run)), []).append(run)
    out = []
    for (transport, what), runs in groups.items():
        row: dict[str, Any] = {"transport": transport, "measure": what}
        for k in MEDIAN_FIGURES:
            if k in runs[0]:
                values = sorted(r[k] for r in runs)
                row[k] = round(statistics.median(values), 4)
                row[f"{k}_range"] = [values[0], values[-1]]
        out.append(row)
    inproc = {row["measure"]: row for row in out if row["transport"] == "inproc"}
    for row in out:
        if "tokens_per_s" in row and row["measure"] in inproc:
            row["of_inproc_pct"] = round(100 * row["tokens_per_s"] / inproc[row["measure"]]["tokens_per_s"], 1)
    return out


async def prefix_cache_in_client_process(server: Server, args: argparse.Namespace, round_: int) -> list[dict[str, Any]]:
    """``prefix_cache_figures`` in a client process, with the engine's own count of the cache's hits and misses over
    its requests (each request looks the cache up once)."""
    prefixes = cast(TextEngine, server.engines[0]).prefixes
    hits, misses = prefixes.hits, prefixes.misses
    runs = await measure_in_client_process("http-cache", server.http_address, args, round_)
    runs[0].update(engine_hits=prefixes.hits - hits, engine_misses=prefixes.misses - misses)
    return runs


async def bench(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    settings = ServeSettings(
        host="127.0.0.1",
        grpc_port=0,
        ws_port=0,
        http_port=0,
        device=args.device,
        text_backend=backend,
        max_streams=max(args.streams),
        max_waiting=0,
        text_burst_ms=args.burst_ms,
        text_threads=args.text_threads,
    ).validated()
    engine = load_text_engine(settings, args.checkpoint)
    server = Server(settings, [engine])
    await server.start()
    results: dict[str, Any] = {"backend": backend, "model": engine.description, "rounds": []}
    try:
        # Rounds alternate the transports, so a drift in the machine's speed during the run hits them alike.
        for round_ in range(args.rounds):
            for transport in args.transports:
                if transport == "inproc":
                    runs = {transport: await measure(inproc_opener(server), args)}
                elif transport == "http":
                    runs = {
                        "http": await measure_in_client_process("http", server.http_address, args, round_),
                        "http-cache": await prefix_cache_in_client_process(server, args, round_),
                    }
                else:
                    address = server.grpc_address if transport == "grpc" else server.ws_address
                    runs = {transport: await measure_in_client_process(transport, address, args, round_)}
                for name, figures in runs.items():
                    results["rounds"] += [{"round": round_, "transport": name, **run} for run in figures]
                    for run in figures:
                        logging.info("%s %s %s", backend, name, run)
        results["median"] = medians(results["rounds"])
    finally:
        await server.stop(grace_s=0)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the default text checkpoint")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--streams", default="1,64", help="comma-separated stream counts")
    parser.add_argument("--tokens", type=int, default=1024, help="tokens per stream")
    parser.add_argument(
        "--transports",
        default="inproc,grpc,ws",
        help="of inproc, grpc, ws, http (http: OpenAI-compatible, with the chat and prefix-cache figures)",
    )
    parser.add_argument("--backends", default="fast,fused,eager", help="text backends to compare, in one run")
    parser.add_argument("--prompt-chars", type=int, default=500, help="prompt length for time to first token")
    parser.add_argument("--repeats", type=int, default=5, help="time-to-first-token samples (median)")
    parser.add_argument(
        "--cache-turns", type=int, default=20, help="user turns of the prefix cache's conversation (http)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the transports (medians reported)")
    parser.add_argument(
        "--burst-ms", type=float, default=ServeSettings.text_burst_ms, help="the server's --text-burst-ms"
    )
    parser.add_argument(
        "--text-threads", type=int, default=ServeSettings.text_threads, help="the server's --text-threads"
    )
    parser.add_argument(
        "--client-nice",
        type=int,
        default=0,
        help="run the client process at this niceness (19: it takes only the CPU the server leaves, as a client on "
        "another machine would)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--client", choices=("grpc", "ws", "http", "http-cache"), help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)  # picks fresh words per round
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        args.streams = [int(s) for s in args.streams.split(",")]
        sys.stdout.write(json.dumps(asyncio.run(client_main(args))) + "\n")
        return 0
    args.checkpoint = args.checkpoint or default_checkpoint("text")
    args.streams = [int(s) for s in args.streams.split(",")]
    args.transports = args.transports.split(",")
    args.backends = args.backends.split(",")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("server.engine.text", "websockets.server", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import torch

    results: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "torch_threads": torch.get_num_threads(),
        "steps": step_bench(args.checkpoint, args.device, args.backends, args.streams),
        "serving": [asyncio.run(bench(args, backend)) for backend in args.backends],
    }
    for served in results["serving"]:
        for row in served["median"]:
            logging.info("median %s %s", served["backend"], row)
    text = json.dumps(results, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
