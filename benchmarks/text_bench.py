"""Text serving throughput and latency: in process, over gRPC and over WebSocket.

    python benchmarks/text_bench.py [--checkpoint PATH] [--streams 1,64] [--tokens 256] [--device cpu]

For each stream count it runs that many seeded streams at once and reports total tokens/s and the p99 gap between
two messages of one stream; then the time to first token for a 500-character prompt at idle. "inproc" reads the
engine's streams directly; "grpc" and "ws" go through a real server on free ports, with the clients in this same
process (so client work shares the CPU with the server, as it would for a local front end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from antiphon.v1 import generation_pb2_grpc, sampling_pb2, text_pb2
from websockets.asyncio.client import connect

from server.app import Server, load_text_engine
from server.cli import default_text_checkpoint
from server.engine.api import SamplingOptions, TextRequest
from server.settings import ServeSettings

PROMPT = "Lear.\n"
# A speech in the corpus's form, repeated to the length asked for.
LONG_PROMPT = (
    "KENT.\nI thought the King had more affected the Duke of Albany than Cornwall.\n\n"
    "GLOUCESTER.\nIt did always seem so to us; but now, in the division of the kingdom, it appears not which of "
    "the Dukes he values most.\n\n"
)

Opener = Callable[[int, int], AsyncIterator[str]]  # (seed, max_tokens) -> text pieces


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


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
    elapsed = time.perf_counter() - start
    return {
        "streams": streams,
        "tokens": sum(counts),
        "seconds": round(elapsed, 3),
        "tokens_per_s": round(sum(counts) / elapsed, 1),
        "p99_gap_ms": round(percentile(gaps, 0.99) * 1000, 2),
    }


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
    """One connection, requests told apart by id."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.next_id = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            self.queues[frame["id"]].put_nowait(frame)

    async def pieces(self, prompt: str, seed: int, tokens: int) -> AsyncIterator[str]:
        self.next_id += 1
        request_id = str(self.next_id)
        queue = self.queues[request_id] = asyncio.Queue()
        message = {
            "type": "generate",
            "id": request_id,
            "prompt": prompt,
            "sampling": {"seed": seed, "max_tokens": tokens},
        }
        await self.ws.send(json.dumps(message))
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


def step_bench(checkpoint: Path, device: str, batches: list[int], repeats: int = 200) -> list[dict[str, Any]]:
    """The bare model step per backend (no engine, no sampling): what bounds the serving figures."""
    from server.device import resolve_device
    from server.engine.backend import BACKENDS
    from server.text.checkpoint import load_text_model

    model, _, _ = load_text_model(checkpoint, resolve_device(device))
    rows = []
    for name, backend_type in BACKENDS.items():
        backend = backend_type(model)
        for batch in batches:
            tokens, state = [1] * batch, backend.zero_state(batch)
            for _ in range(50):  # warm caches and the allocator
                backend.step(tokens, state)
            start = time.perf_counter()
            for _ in range(repeats):
                backend.step(tokens, state)
            ms = (time.perf_counter() - start) / repeats * 1000
            rows.append({"backend": name, "batch": batch, "step_ms": ms, "tokens_per_s": batch / ms * 1000})
            logging.info("step %s batch %d: %.3f ms (%.0f tokens/s)", name, batch, ms, batch / ms * 1000)
    return rows


async def bench(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    settings = ServeSettings(
        host="127.0.0.1",
        grpc_port=0,
        ws_port=0,
        device=args.device,
        text_backend=backend,
        max_streams=max(args.streams),
        max_waiting=0,
    ).validated()
    engine = load_text_engine(settings, args.checkpoint)
    server = Server(settings, [engine])
    await server.start()
    results: dict[str, Any] = {"backend": backend, "model": engine.description, "runs": []}
    long_prompt = (LONG_PROMPT * (args.prompt_chars // len(LONG_PROMPT) + 1))[: args.prompt_chars]
    channel = grpc.aio.insecure_channel(server.grpc_address)
    ws = await connect(f"ws://{server.ws_address}/", max_size=None)
    mux = WebSocketMux(ws)
    openers: dict[str, tuple[Opener, Callable[[str], AsyncIterator[str]]]] = {
        "inproc": inproc_opener(server),
        "grpc": grpc_opener(generation_pb2_grpc.GenerationStub(channel)),
        "ws": (
            lambda seed, tokens: mux.pieces(PROMPT, seed, tokens),
            lambda prompt: mux.pieces(prompt, 0, 1),
        ),
    }
    try:
        for transport in args.transports:
            open_stream, open_prompt = openers[transport]
            await run_streams(open_stream, 1, 16)  # warm up
            for streams in args.streams:
                run = await run_streams(open_stream, streams, args.tokens)
                results["runs"].append({"transport": transport, **run})
                logging.info("%s %s %s", backend, transport, run)
            ttft = await time_to_first_token(open_prompt, long_prompt, args.repeats)
            results["runs"].append({"transport": transport, "ttft_ms": ttft, "prompt_chars": args.prompt_chars})
            logging.info("%s %s ttft %.2f ms for %d characters", backend, transport, ttft, args.prompt_chars)
    finally:
        await ws.close()
        mux.reader.cancel()
        await channel.close()
        await server.stop(grace_s=0)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the default text checkpoint")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--streams", default="1,64", help="comma-separated stream counts")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per stream")
    parser.add_argument("--transports", default="inproc,grpc,ws")
    parser.add_argument("--backends", default="fused,eager", help="text backends to compare, in one run")
    parser.add_argument("--prompt-chars", type=int, default=500, help="prompt length for time to first token")
    parser.add_argument("--repeats", type=int, default=5, help="time-to-first-token samples (median)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.checkpoint = args.checkpoint or default_text_checkpoint()
    args.streams = [int(s) for s in args.streams.split(",")]
    args.transports = args.transports.split(",")
    args.backends = args.backends.split(",")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("server.engine.text", "websockets.server"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import torch

    results: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "torch_threads": torch.get_num_threads(),
        "steps": step_bench(args.checkpoint, args.device, args.streams),
        "serving": [asyncio.run(bench(args, backend)) for backend in args.backends],
    }
    text = json.dumps(results, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
