"""``antiphon-edge bench``: per-inference latency and memory of each model file this device can run."""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_client.manifest import Manifest
from edge_client.runtime import BACKENDS, Runner, available_backends
from edge_client.text import Generator


def rss_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class BenchRow:
    model: str
    backend: str
    precision: str
    file: str
    bytes: int
    load_ms: float
    rss_mb: float  # resident memory added by loading and running it
    runs: int
    median_ms: float
    p90_ms: float
    tokens_per_s: float | None = None  # step models: sampled offline generation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def example_inputs(runner: Runner, entry: dict[str, Any], rng: np.random.Generator) -> list[np.ndarray]:
    """Inputs of the right shapes and ranges: ids within the vocabulary, images in [0, 16], quiet noise for
    audio, zero state."""
    out = []
    vocab = len(entry.get("vocabulary", [])) or 2
    for info in runner.inputs:
        shape = [max(1, d) for d in info.shape]
        if info.name in ("h", "c"):
            out.append(np.zeros(shape, dtype=np.float32))
        elif info.dtype.startswith("int") and info.scale is None:
            out.append(rng.integers(1, vocab, size=shape).astype(info.dtype))
        elif "labels" in entry and len(shape) == 3:  # an image
            out.append(rng.uniform(0, 16, size=shape).astype(np.float32))
        else:
            out.append((rng.normal(0, 0.1, size=shape)).astype(np.float32))
    return out


def bench_file(manifest: Manifest, name: str, backend: str, precision: str, seconds: float, tokens: int) -> BenchRow:
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    model = manifest.open(name, backend, precision)
    load_ms = (time.perf_counter() - started) * 1000
    args = example_inputs(model.runner, model.entry, np.random.default_rng(0))
    for _ in range(5):
        model.runner(*args)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 20 or (time.perf_counter() < deadline and len(times) < 100_000):
        t0 = time.perf_counter()
        model.runner(*args)
        times.append(time.perf_counter() - t0)
    rate = None
    if "vocabulary" in model.entry and any(t.name == "h" for t in model.runner.inputs) and tokens > 0:
        generator = Generator(model, seed=0)
        t0 = time.perf_counter()
        for _ in generator.generate(tokens, temperature=0.8):
            pass
        rate = tokens / (time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    row = BenchRow(
        model=name,
        backend=backend,
        precision=precision,
        file=model.file["file"],
        bytes=int(model.file.get("bytes", model.path.stat().st_size)),
        load_ms=round(load_ms, 2),
        rss_mb=round((rss_bytes() - before) / 2**20, 1),
        runs=len(times),
        median_ms=round(float(np.median(ms)), 4),
        p90_ms=round(float(np.percentile(ms, 90)), 4),
        tokens_per_s=None if rate is None else round(rate, 1),
    )
    del model
    return row


def run_bench(
    manifest: Manifest, models: list[str] | None, backends: list[str] | None, seconds: float, tokens: int
) -> list[BenchRow]:
    rows = []
    for backend in backends or available_backends():
        fmt = BACKENDS[backend][0]
        for name in models or list(manifest.models):
            files = manifest.entry(name).get("files", {}).get(fmt, {})
            for precision in sorted(files):
                rows.append(bench_file(manifest, name, backend, precision, seconds, tokens))
    return rows
