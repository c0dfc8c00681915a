"""Latency of the exported models on one core: torch, onnxruntime and TFLite, float32 and int8, side by side.

    python benchmarks/classify_bench.py [--export runs/export] [--models kws,textdisc,digits,text_small_step,text_step]
                                        [--runs 300] [--json runs/classify_bench.json]

Reads the files and ``manifest.json`` that ``antiphon export --int8`` wrote, rebuilds each torch module from the
checkpoint the manifest names (same hash), and times one call with batch 1 (one second of audio for ``kws``, one
256-character window for ``textdisc``, one image for ``digits``, one token with its state for the text steps,
whose figure is also given as tokens per second of offline generation). Every runtime gets one thread. Each
figure is the median over ``--runs`` calls after a warm-up, with the 90th percentile; the runner's own Python
overhead (a dict of inputs, the int8 scaling of a fully quantized file's input and output) is included, as the
edge pays it too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

from export.runtime import open_runner
from server.audio.constants import SAMPLE_RATE
from server.checkpoint import file_sha256
from server.paths import REPO_MODELS

CHECKPOINTS = {
    "kws": REPO_MODELS / "kws" / "kws_dscnn.safetensors",
    "textdisc": REPO_MODELS / "textdisc" / "text_disc.safetensors",
    "digits": REPO_MODELS / "digits" / "digits_cnn.safetensors",
    "text_small_step": REPO_MODELS / "text" / "char_lstm_small.safetensors",
    "text_step": REPO_MODELS / "text" / "char_lstm.safetensors",
}


def torch_module(name: str, checkpoint: Path) -> torch.nn.Module:
    if name == "kws":
        from server.kws.checkpoint import load_kws_model

        return load_kws_model(checkpoint)[0]
    if name == "textdisc":
        from server.textdisc.checkpoint import load_textdisc_model

        return load_textdisc_model(checkpoint)[0]
    if name == "digits":
        from server.vision.checkpoint import load_digits_model

        return load_digits_model(checkpoint)[0]
    from export.text_step import TextStep
    from server.text.checkpoint import load_text_model

    return TextStep(load_text_model(checkpoint)[0]).eval()


def example_inputs(name: str, entry: dict[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    if name == "kws":
        return ((0.1 * rng.standard_normal((1, SAMPLE_RATE))).astype(np.float32),)
    if name == "textdisc":
        return (rng.integers(1, len(entry["vocabulary"]), (1, 256)).astype(np.int32),)
    if name == "digits":
        return (rng.uniform(0, 16, (1, 8, 8)).astype(np.float32),)
    shape = (entry["layers"], 1, entry["hidden_size"])
    return (np.array([5], dtype=np.int32), np.zeros(shape, np.float32), np.zeros(shape, np.float32))


def time_calls(call: Callable[[], Any], runs: int, warmup: int = 30) -> dict[str, float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_ms": 1000 * statistics.median(times), "p90_ms": 1000 * times[int(0.9 * (len(times) - 1))]}


def bench_model(name: str, entry: dict[str, Any], folder: Path, runs: int) -> dict[str, dict[str, float]]:
    checkpoint = CHECKPOINTS[name]
    if file_sha256(checkpoint) != entry["checkpoint"]["sha256"]:
        raise SystemExit(f"{checkpoint} is not the checkpoint {folder} was exported from")
    rng = np.random.default_rng(0)
    args = example_inputs(name, entry, rng)
    step = "hidden_size" in entry
    module = torch_module(name, checkpoint)
    tensors = tuple(torch.from_numpy(a) for a in args)
    results: dict[str, dict[str, float]] = {}

    def torch_call() -> Any:
        with torch.inference_mode():
            return module(*tensors)

    results["torch float32"] = time_calls(torch_call, runs)
    for fmt, files in entry["files"].items():
        for precision, info in files.items():
            names = ([t["name"] for t in info["inputs"]], [t["name"] for t in info["outputs"]])
            runner = open_runner(fmt, folder / info["file"], (tuple(names[0]), tuple(names[1])))
            if step:  # feed the state back, as generation does
                state = list(args)

                def call(runner: Any = runner, state: list[np.ndarray] = state) -> None:
                    _, state[1], state[2] = runner(*state)

                results[f"{fmt} {precision}"] = time_calls(call, runs)
            else:
                results[f"{fmt} {precision}"] = time_calls(lambda runner=runner: runner(*args), runs)
    if step:
        for figures in results.values():
            figures["tokens_per_s"] = 1000 / figures["median_ms"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", type=Path, default=Path("runs/export"), help="folder of antiphon export --int8")
    parser.add_argument("--models", default="kws,textdisc,digits,text_small_step,text_step")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    manifest = json.loads((args.export / "manifest.json").read_text(encoding="utf-8"))
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "models": {},
    }
    for name in [m for m in args.models.split(",") if m]:
        if name not in manifest["models"]:
            print(f"{name}: not in {args.export / 'manifest.json'}; skipped", file=sys.stderr)
            continue
        entry = manifest["models"][name]
        results = bench_model(name, entry, args.export, args.runs)
        report["models"][name] = results
        sizes = {f"{fmt} {p}": info["bytes"] for fmt, files in entry["files"].items() for p, info in files.items()}
        print(f"\n{name}")
        print(
            f"  {'runtime':<18}{'median ms':>10}{'p90 ms':>10}{'bytes':>12}"
            + ("  tokens/s" if "hidden_size" in entry else "")
        )
        for runtime, figures in results.items():
            extra = f"  {figures['tokens_per_s']:8.0f}" if "tokens_per_s" in figures else ""
            size = f"{sizes[runtime]:,}" if runtime in sizes else "-"
            print(f"  {runtime:<18}{figures['median_ms']:>10.3f}{figures['p90_ms']:>10.3f}{size:>12}{extra}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
