"""``antiphon-edge bench``: per-inference latency and memory of each model file this device can run; offline
generation speed of step models (tokens/s) and image generators (images/s)."""

from __future__ import annotations

import gc
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_client.imagegen import ImageGenerator
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
    images_per_s: float | None = None  # image generators: images from seeds (latent drawn, generator run)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def example_inputs(runner: Runner, entry: dict[str, Any], rng: np.random.Generator) -> list[np.ndarray]:
    """Inputs of the right shapes and ranges: ids within the vocabulary, digit images in [0, 16], quiet noise for
    audio, zero state; an image generator's standard normal latent and a class, the discriminator's image in
    [0, 1]."""
    out = []
    vocab = len(entry.get("vocabulary", [])) or 2
    kind = entry.get("kind")
    for info in runner.inputs:
        shape = [max(1, d) for d in info.shape]
        if kind == "image_generator":
            if info.name == "label":
                out.append(rng.integers(0, max(1, len(entry.get("labels") or [])), size=shape).astype(np.int32))
            else:
                out.append(rng.standard_normal(shape).astype(np.float32))
        elif kind == "image_discriminator":
            out.append(rng.uniform(0, 1, size=shape).astype(np.float32))
        elif info.name in ("h", "c"):
            out.append(np.zeros(shape, dtype=np.float32))
        elif info.dtype.startswith("int") and info.scale is None:
            out.append(rng.integers(1, vocab, size=shape).astype(info.dtype))
        elif "labels" in entry and len(shape) == 3:  # an image
            out.append(rng.uniform(0, 16, size=shape).astype(np.float32))
        else:
            out.append((rng.normal(0, 0.1, size=shape)).astype(np.float32))
    return out


def bench_file(
    manifest: Manifest, name: str, backend: str, precision: str, seconds: float, tokens: int, images: int = 100
) -> BenchRow:
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
    image_rate = None
    if model.entry.get("kind") == "image_generator" and images > 0:
        sampler = ImageGenerator(model)
        label = 0 if sampler.conditional else None
        t0 = time.perf_counter()
        sampler.generate(list(range(images)), label)
        image_rate = images / (time.perf_counter() - t0)
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
        images_per_s=None if image_rate is None else round(image_rate, 1),
    )
    del model
    return row


def run_bench(
    manifest: Manifest,
    models: list[str] | None,
    backends: list[str] | None,
    seconds: float,
    tokens: int,
    images: int = 100,
) -> list[BenchRow]:
    rows = []
    for backend in backends or available_backends():
        fmt = BACKENDS[backend][0]
        for name in models or list(manifest.models):
            files = manifest.entry(name).get("files", {}).get(fmt, {})
            for precision in sorted(files):
                rows.append(bench_file(manifest, name, backend, precision, seconds, tokens, images))
    return rows
