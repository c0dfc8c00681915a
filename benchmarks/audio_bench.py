"""WaveNet generation speed: the eager PyTorch step against the compiled loop, and the audio engine (in process, gRPC).

    python benchmarks/audio_bench.py [--checkpoint PATH] [--seconds 2] [--json]

In one run: samples/s of the eager batched PyTorch step (one stream, then 16) on one core; the compiled loop for
one stream on one core, four streams on two cores and 16 streams on two cores (real-time factor = samples/s per
stream / 16,000); then, through the AudioEngine, the time from a request to its first audio chunk at idle (espeak-ng
rendering, log-mel, conditioning and the first 20 ms chunk; median of 7) and four concurrent engine streams on two
cores, both in process and over gRPC (a real server on a free port, the client in this process). Without a
checkpoint the default configuration is timed with random weights (speed does not depend on them).
The load average at the start is printed: other processes on the machine slow every wall-clock figure. The "per
CPU-second" rows divide by the CPU time the generating thread got instead: what one otherwise idle core delivers
for one stream, and for a pair of streams (what each core does with four streams on two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch
from antiphon.v1 import audio_pb2, generation_pb2_grpc, sampling_pb2

from server.audio.checkpoint import load_audio_model
from server.audio.constants import SAMPLE_RATE
from server.audio.data import voice_table
from server.audio.fast import FastWaveNet, StreamState
from server.audio.model import WaveNet, WaveNetConfig
from server.audio.torch_step import TorchWaveNetStep
from server.engine.audio import AudioEngine, AudioLimits
from server.engine.registry import ModelRegistry
from server.engine.requests import AudioRequest
from server.transport.grpc_service import add_services

TEXT = "Now is the winter of our discontent made glorious summer by this sun of York."


def load_model(path: Path | None) -> tuple[WaveNet, list[str], str]:
    if path is not None and path.is_file():
        model, voices, _ = load_audio_model(path)
        return model, voices, str(path)
    torch.manual_seed(0)
    voices = voice_table()
    return WaveNet(WaveNetConfig(voices=len(voices))).eval(), voices, "default config, random weights"


def random_feats(model: WaveNet, frames: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(frames, model.config.cond_channels, generator=g).numpy()


def time_compiled(model: WaveNet, streams: int, threads: int, samples: int) -> tuple[float, float]:
    """Samples/s per stream of the compiled loop (best of three calls after a warm-up): by the wall clock, and per
    CPU-second of the calling thread (what an otherwise idle core delivers; meaningful for ``threads=1``)."""
    fast = FastWaveNet(model, threads=threads)
    frames = samples * 4 // model.config.hop + 2
    state = StreamState.concat([fast.start(random_feats(model, frames, i), i, 1.0) for i in range(streams)])
    fast.generate(state, 320)
    wall, cpu = float("inf"), float("inf")
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.thread_time()
        fast.generate(state, samples)
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.thread_time() - c0)
    fast.close()
    return samples / wall, samples / cpu


def time_eager(model: WaveNet, streams: int, samples: int) -> float:
    """Samples/s per stream of the batched PyTorch step on one thread."""
    step = TorchWaveNetStep(model)
    frames = samples // model.config.hop + 2
    feats = [torch.from_numpy(random_feats(model, frames, i)) for i in range(streams)]
    s = step.start(feats, list(range(streams)), [1.0] * streams)
    step.generate(s, 20)
    t0 = time.perf_counter()
    step.generate(s, samples)
    return samples / (time.perf_counter() - t0)


Opener = Callable[[str, int, float], AsyncIterator[int]]  # (text, seed, max_seconds) -> samples per message


def inproc_opener(engine: AudioEngine) -> Opener:
    async def open_stream(text: str, seed: int, seconds: float) -> AsyncIterator[int]:
        async for codes in engine.generate(AudioRequest(text, seed=seed, max_seconds=seconds)):
            yield len(codes)

    return open_stream


def grpc_opener(stub: generation_pb2_grpc.GenerationStub) -> Opener:
    async def open_stream(text: str, seed: int, seconds: float) -> AsyncIterator[int]:
        request = audio_pb2.GenerateAudioRequest(
            text=text,
            max_seconds=seconds,
            sampling=sampling_pb2.Sampling(seed=seed),
            encoding=audio_pb2.AUDIO_ENCODING_PCM16_LE,
        )
        async for chunk in stub.GenerateAudio(request):
            yield len(chunk.data) // 2

    return open_stream


async def stream_figures(open_stream: Opener) -> dict[str, float]:
    """First audio at idle (median and max of 7), then four concurrent streams' real-time factor."""
    firsts = []
    for i in range(7):
        t0 = time.perf_counter()
        async for samples in open_stream(TEXT, i, 0.5):
            if samples and len(firsts) <= i:
                firsts.append(time.perf_counter() - t0)
        await asyncio.sleep(0.05)

    async def one(seed: int) -> float:
        got, first = 0, None
        async for samples in open_stream(TEXT, seed, 3.0):
            got += samples
            first = first or time.perf_counter()
        return got / SAMPLE_RATE / (time.perf_counter() - (first or 0.0))

    rtfs = await asyncio.gather(*(one(100 + i) for i in range(4)))
    return {
        "first_chunk_ms_median": 1000 * statistics.median(firsts),
        "first_chunk_ms_max": 1000 * max(firsts),
        "four_streams_rtf_min": min(rtfs),
    }


async def engine_figures(model: WaveNet, voices: list[str]) -> dict[str, dict[str, float]]:
    """The audio engine (two compute threads) in process, then behind a real gRPC server on a free port."""
    engine = AudioEngine("bench", model, voices, AudioLimits(threads=2, max_streams=16))
    engine.start()
    models = ModelRegistry()
    models.add_audio(engine)
    server = grpc.aio.server()
    add_services(server, models)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        async for _ in inproc_opener(engine)("warm up", 0, 0.1):
            pass
        return {
            "inproc": await stream_figures(inproc_opener(engine)),
            "grpc": await stream_figures(grpc_opener(generation_pb2_grpc.GenerationStub(channel))),
        }
    finally:
        await channel.close()
        await server.stop(0)
        await engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("models/audio/wavenet.safetensors"))
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per timed call of the compiled loop")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, voices, source = load_model(args.checkpoint)
    c = model.config
    load = os.getloadavg()
    print(f"model: {source}; {c.layers} layers, {c.residual_channels} residual, {c.skip_channels} skip channels")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {load[0]:.2f}")
    samples = int(args.seconds * SAMPLE_RATE)
    figures: dict[str, Any] = {"load_average_1m": load[0], "model": source}
    figures["eager_1_stream"] = time_eager(model, 1, 400)
    figures["eager_16_streams_total"] = 16 * time_eager(model, 16, 200)
    figures["compiled_1_stream_1_core"], figures["compiled_1_stream_cpu"] = time_compiled(model, 1, 1, samples)
    figures["compiled_2_streams_cpu_each"] = time_compiled(model, 2, 1, samples // 2)[1]
    figures["compiled_4_streams_2_cores_each"] = time_compiled(model, 4, 2, samples // 2)[0]
    figures["compiled_16_streams_2_cores_total"] = 16 * time_compiled(model, 16, 2, samples // 8)[0]
    figures.update(asyncio.run(engine_figures(model, voices)))
    rows = [
        ("eager PyTorch step, 1 stream, 1 core", figures["eager_1_stream"], 1),
        ("eager PyTorch step, 16 streams, 1 core (total)", figures["eager_16_streams_total"], 16),
        ("compiled loop, 1 stream, 1 core", figures["compiled_1_stream_1_core"], 1),
        ("compiled loop, 4 streams, 2 cores (each)", figures["compiled_4_streams_2_cores_each"], 1),
        ("compiled loop, 16 streams, 2 cores (total)", figures["compiled_16_streams_2_cores_total"], 16),
        ("compiled loop, 1 stream, per CPU-second", figures["compiled_1_stream_cpu"], 1),
        ("compiled loop, 2 streams on a core, per CPU-second (each)", figures["compiled_2_streams_cpu_each"], 1),
    ]
    for name, rate, streams in rows:
        print(f"{name:58s} {rate:10,.0f} samples/s  {rate / SAMPLE_RATE / streams:6.2f}x real time per stream")
    for where in ("inproc", "grpc"):
        f = figures[where]
        print(
            f"engine {where:6s}: first audio {f['first_chunk_ms_median']:.1f} ms median ({f['first_chunk_ms_max']:.1f} "
            f"max) at idle; 4 concurrent streams on 2 cores: slowest {f['four_streams_rtf_min']:.2f}x real time"
        )
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
