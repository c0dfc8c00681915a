"""Edge client figures for benchmarks/RESULTS.md: install size, listen memory and CPU, KWS latency per window,
offline generation speed. Runs with the edge virtualenv's Python (no torch):

    .venv-edge/bin/python benchmarks/edge_bench.py --models runs/export [--models runs/edge-files/export] --json

- size: a fresh virtualenv with only the edge extra (`pip install '.[edge]'`, not editable), measured with du;
- listen: `antiphon-edge listen --device -` as a child process on one core (taskset where present) reading a WAV
  of espeak-ng speech from a pipe as fast as it can; peak resident memory (ru_maxrss) and CPU seconds per second of
  audio, from two lengths (the difference removes start-up: imports and model load);
- kws: one KWS window through the interpreter, one thread, median and 90th percentile over --runs windows;
- generation: offline sampled tokens/s of the step model (text_small_step where the export has it, else
  text_step), one thread.

Each model comes from the first --models folder that has it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "proto")]

from edge_client.audio import encode_wav  # noqa: E402
from edge_client.kws import KeywordModel  # noqa: E402
from edge_client.manifest import Manifest  # noqa: E402
from edge_client.text import Generator  # noqa: E402

SPEECH = (
    "The king counted three crowns and seven swords. Then the fool said nothing for a while, and the lord of the "
    "castle answered four times, and the night was long and cold."
)


def one_core() -> list[str]:
    return ["taskset", "-c", "0"] if shutil.which("taskset") else []


def find(folders: list[Path], *names: str) -> tuple[Manifest, str]:
    for folder in folders:
        manifest = Manifest(folder)
        for name in names:
            if manifest.has(name):
                return manifest, name
    raise SystemExit(f"none of {names} in {', '.join(map(str, folders))}")


def du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / 1024


def install_size() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                f"{REPO}[edge]",
            ],
            check=True,
        )
        site = next((venv / "lib").glob("python*/site-packages"))
        packages = sorted(((du_mb(p), p.name) for p in site.iterdir() if p.is_dir()), reverse=True)[:6]
        return {
            "venv_mb": round(du_mb(venv), 1),
            "largest": {name: round(mb, 1) for mb, name in packages},
        }


def speech_wav(seconds: float, path: Path) -> Path:
    """Repeated espeak-ng speech (or quiet noise where espeak-ng is missing) as a 22,050 Hz WAV of ``seconds``."""
    if shutil.which("espeak-ng"):
        raw = subprocess.run(["espeak-ng", "--stdout", SPEECH], capture_output=True, check=True).stdout
        once = np.frombuffer(raw[44 : 44 + (len(raw) - 44) // 2 * 2], dtype="<i2").astype(np.float32) / 32768
    else:
        once = np.random.default_rng(0).normal(0, 0.01, 22050 * 5).astype(np.float32)
    n = int(seconds * 22050)
    path.write_bytes(encode_wav(np.resize(once, n), 22050))
    return path


def listen_run(models: Path, wav: Path, backend: str) -> tuple[float, float]:
    """(CPU seconds, peak resident MB) of one `listen --device -` over ``wav``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [
        *one_core(),
        sys.executable,
        "-m",
        "edge_client",
        "listen",
        "--device",
        "-",
        "--models",
        str(models),
        "--backend",
        backend,
    ]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'proto'}"}
    with wav.open("rb") as f:
        subprocess.run(cmd, stdin=f, capture_output=True, check=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, after.ru_maxrss / 1024


def listen_figures(folders: list[Path], backend: str) -> dict[str, Any]:
    manifest, _ = find(folders, "kws")
    with tempfile.TemporaryDirectory() as tmp:
        short, long = speech_wav(10, Path(tmp) / "short.wav"), speech_wav(70, Path(tmp) / "long.wav")
        cpu_short, _ = listen_run(manifest.folder, short, backend)
        cpu_long, rss = listen_run(manifest.folder, long, backend)
    per_second = (cpu_long - cpu_short) / 60
    return {
        "backend": backend,
        "peak_rss_mb": round(rss, 1),
        "cpu_s_per_audio_s": round(per_second, 4),
        "core_percent": round(100 * per_second, 2),
        "startup_cpu_s": round(cpu_short - 10 * per_second, 2),
    }


def kws_figures(folders: list[Path], backend: str, precision: str, runs: int) -> dict[str, Any]:
    manifest, name = find(folders, "kws")
    kws = KeywordModel(manifest.open(name, backend, precision, threads=1))
    window = np.random.default_rng(0).normal(0, 0.1, kws.window).astype(np.float32)
    for _ in range(20):
        kws.posteriors(window)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        kws.posteriors(window)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    return {
        "backend": backend,
        "file": kws.model.file["file"],
        "median_ms": round(float(np.median(ms)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
    }


def generation_figures(folders: list[Path], backend: str, tokens: int) -> dict[str, Any]:
    manifest, name = find(folders, "text_small_step", "text_step")
    generator = Generator(manifest.open(name, backend, "auto", threads=1), seed=0)
    for _ in generator.generate(50):
        pass
    t0 = time.perf_counter()
    for _ in generator.generate(tokens):
        pass
    rate = tokens / (time.perf_counter() - t0)
    entry = manifest.entry(name)
    return {
        "backend": backend,
        "model": name,
        "file": generator.model.file["file"],
        "layers": entry.get("layers"),
        "hidden_size": entry.get("hidden_size"),
        "tokens_per_s": round(rate, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, action="append", required=True, help="export folder (repeatable)")
    p.add_argument("--backends", default=None, help="comma-separated (default: every installed one)")
    p.add_argument("--runs", type=int, default=2000, help="KWS windows timed")
    p.add_argument("--tokens", type=int, default=3000, help="tokens generated")
    p.add_argument("--skip-size", action="store_true", help="do not build a fresh virtualenv to measure")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})  # one core for this process too
    from edge_client.runtime import available_backends

    backends = args.backends.split(",") if args.backends else available_backends()
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "numpy": np.__version__,
        "kws": [kws_figures(args.models, b, "auto", args.runs) for b in backends],
        "generation": [generation_figures(args.models, b, args.tokens) for b in backends],
        "listen": [listen_figures(args.models, b) for b in backends],
    }
    if not args.skip_size:
        result["install"] = install_size()
    print(json.dumps(result, indent=2 if not args.json else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
