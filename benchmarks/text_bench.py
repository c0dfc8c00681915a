"""Text serving throughput and latency: in process, over gRPC and over WebSocket.

    python benchmarks/text_bench.py [--checkpoint PATH] [--streams 1,64] [--tokens 1024] [--device cpu]

For each stream count it runs that many seeded streams at once and reports total tokens/s and the p99 gap between
two messages of one stream; then the time to first token for a 500-character prompt at idle. "inproc" reads the
engine's streams directly; "grpc" and "ws" go through a real server on free ports, read by clients in a second
process on the same machine (client work shares the CPU with the server, as it would for a local front end, but
not the server's event loop).
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
from typing import Any

import grpc
from antiphon.v1 import generation_pb2_grpc, sampling_pb2, text_pb2
from websockets.asyncio.client import connect

from server.app import Server, load_text_engine
from server.engine.requests import SamplingOptions, TextRequest
from server.paths import default_checkpoint
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


async def measure_in_client_process(transport: str, address: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """``measure`` over a transport, run by this script in a second process (``--client``)."""
    command = [
        *(["nice", "-n", str(args.client_nice)] if args.client_nice else []),
        sys.executable, __file__, "--client", transport, "--address", address,
        "--streams", ",".join(map(str, args.streams)), "--tokens", str(args.tokens),
        "--prompt-chars", str(args.prompt_chars), "--repeats", str(args.repeats),
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


def medians(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per transport and measurement (a stream count, the time to first token, CPU time), the median of each figure
    over the rounds, with its range."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in rounds:
        what = f"{run['streams']} streams" if "streams" in run else "ttft" if "ttft_ms" in run else "cpu"
        groups.setdefault((run["transport"], what), []).append(run)
    out = []
    for (transport, what), runs in groups.items():
        row: dict[str, Any] = {"transport": transport, "measure": what}
        for k in ("tokens_per_s", "p99_gap_ms", "ttft_ms", "server_cpu_s", "client_cpu_s"):
            if k in runs[0]:
                values = sorted(r[k] for r in runs)
                row[k] = statistics.median(values)
                row[f"{k}_range"] = [values[0], values[-1]]
        out.append(row)
    return out


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
                    runs = await measure(inproc_opener(server), args)
                else:
                    address = server.grpc_address if transport == "grpc" else server.ws_address
                    runs = await measure_in_client_process(transport, address, args)
                results["rounds"] += [{"round": round_, "transport": transport, **run} for run in runs]
                for run in runs:
                    logging.info("%s %s %s", backend, transport, run)
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
    parser.add_argument("--transports", default="inproc,grpc,ws")
    parser.add_argument("--backends", default="fast,fused,eager", help="text backends to compare, in one run")
    parser.add_argument("--prompt-chars", type=int, default=500, help="prompt length for time to first token")
    parser.add_argument("--repeats", type=int, default=5, help="time-to-first-token samples (median)")
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
    parser.add_argument("--client", choices=("grpc", "ws"), help=argparse.SUPPRESS)  # the client process's mode
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
    for noisy in ("server.engine.text", "websockets.server"):
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
