"""What the metrics cost the text engine: in-process streams with metrics on and off, alternating, in one run.

    python benchmarks/metrics_overhead.py [--checkpoint PATH] [--streams 64] [--tokens 1024] [--rounds 6]

One engine serves every run. Each run hands it either a server's recorder (``Metrics``, as ``--metrics on``) or the
one that records nothing (``--metrics off``), then reads ``--streams`` seeded streams of ``--tokens`` tokens each to
their end, as text_bench.py's "inproc" does. The order alternates every round (off then on, on then off, ...), so a
drift in the machine's speed hits both sides alike. After each run with metrics on, ``/metrics``'s text is rendered
once (outside the timing, as a scrape every 15 s would be) and its token count checked against what was read.

Reported for every run: tokens/s (wall clock) and tokens per CPU-second of this process (the engine's worker thread
and the event loop; other processes competing for the cores lengthen the wall time, not this). For each side, the
median of both with their range; the difference of the medians; and the median over the rounds of each round's
own difference (the two runs of a round are neighbours in time). Then what each call the engine makes into the
recorder costs, timed alone: the per-iteration pair (``iteration`` and ``token_gap``) and the per-request
``text_request``, which bound the overhead whatever the load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from server.app import load_text_engine
from server.engine.requests import SamplingOptions, TextRequest
from server.engine.text import TextEngine
from server.metrics import Metrics, Recorder
from server.paths import default_checkpoint
from server.settings import ServeSettings

PROMPT = "Lear.\n"


async def run_streams(engine: TextEngine, streams: int, tokens: int) -> tuple[int, float, float]:
    """``streams`` seeded streams of ``tokens`` read to their end: (tokens read, seconds, CPU seconds)."""

    async def one(seed: int) -> int:
        stream = engine.generate(TextRequest(PROMPT, SamplingOptions(seed=seed, max_tokens=tokens)))
        return sum([len(piece) async for piece in stream])

    start, cpu = time.perf_counter(), time.process_time()
    counts = await asyncio.gather(*(one(seed) for seed in range(streams)))
    return sum(counts), time.perf_counter() - start, time.process_time() - cpu


def generated_tokens(metrics: Metrics) -> float:
    text, _ = metrics.exposition("")
    return sum(
        sample.value
        for family in text_string_to_metric_families(text.decode("utf-8"))
        for sample in family.samples
        if sample.name == "antiphon_generated_tokens_total"
    )


def recorder_costs(calls: int = 100_000) -> dict[str, float]:
    """Microseconds per call of what the engine reports, on a fresh recorder."""
    metrics = Metrics(lambda: [])
    start = time.perf_counter()
    for _ in range(calls):
        metrics.iteration("bench", 0.01, 64)
        metrics.token_gap("bench", 0.002)
    per_iteration = (time.perf_counter() - start) / calls
    start = time.perf_counter()
    for _ in range(calls):
        metrics.text_request("bench", "", "generate", "length", 0.05, 4.0, 6, 1024)
    per_request = (time.perf_counter() - start) / calls
    return {"per_iteration_us": round(per_iteration * 1e6, 2), "per_request_us": round(per_request * 1e6, 2)}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    settings = ServeSettings(max_streams=args.streams, max_waiting=0, text_threads=args.text_threads).validated()
    engine = load_text_engine(settings, args.checkpoint)
    engine.start()
    metrics = Metrics(lambda: [engine.gauges()])
    recorders: dict[str, Recorder] = {"off": Recorder(), "on": metrics}
    runs: list[dict[str, Any]] = []
    try:
        await run_streams(engine, args.streams, 64)  # warm up
        counted = generated_tokens(metrics)
        for round_ in range(args.rounds):
            order = ("off", "on") if round_ % 2 == 0 else ("on", "off")
            for side in order:
                engine.metrics = recorders[side]
                read, seconds, cpu = await run_streams(engine, args.streams, args.tokens)
                run = {
                    "round": round_,
                    "metrics": side,
                    "tokens": read,
                    "tokens_per_s": round(read / seconds, 1),
                    "tokens_per_cpu_s": round(read / cpu, 1),
                }
                if side == "on":
                    now = generated_tokens(metrics)
                    if now - counted != read:
                        raise RuntimeError(f"the metrics counted {now - counted} tokens, the streams read {read}")
                    counted = now
                runs.append(run)
                logging.info("%s", run)
    finally:
        await engine.close()
    summary: dict[str, Any] = {}
    for figure in ("tokens_per_s", "tokens_per_cpu_s"):
        sides = {}
        for side in ("off", "on"):
            values = sorted(r[figure] for r in runs if r["metrics"] == side)
            sides[side] = {"median": round(statistics.median(values), 1), "range": [values[0], values[-1]]}
        off, on = sides["off"]["median"], sides["on"]["median"]
        by_round = {(r["round"], r["metrics"]): r[figure] for r in runs}
        paired = [100 * (by_round[i, "on"] / by_round[i, "off"] - 1) for i in range(args.rounds)]
        summary[figure] = {
            **sides,
            "on_minus_off_pct": round(100 * (on - off) / off, 2),
            "paired_median_pct": round(statistics.median(paired), 2),
        }
    return {
        "model": engine.description,
        "streams": args.streams,
        "tokens_per_stream": args.tokens,
        "text_threads": args.text_threads,
        "runs": runs,
        **summary,
        "recorder": recorder_costs(),
        "iterations": engine.steps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the default text checkpoint")
    parser.add_argument("--streams", type=int, default=64, help="streams read at once")
    parser.add_argument("--tokens", type=int, default=1024, help="tokens per stream")
    parser.add_argument("--rounds", type=int, default=6, help="rounds, each one run with metrics off and one on")
    parser.add_argument(
        "--text-threads", type=int, default=ServeSettings.text_threads, help="the server's --text-threads"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.checkpoint = args.checkpoint or default_checkpoint("text")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("server.engine.text").setLevel(logging.WARNING)
    results = asyncio.run(bench(args))
    text = json.dumps(results, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
