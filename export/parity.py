"""Compare an exported file with torch: max abs difference (float files), top-label agreement and accuracy (int8
files), and greedy text for the step generator."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

from export.runtime import Runner
from export.specs import ExportSpec, Inputs

FLOAT_TOLERANCE = 1e-4  # max abs difference of a float file from torch, on every output
INT8_AGREEMENT = 0.99  # share of the evaluation set on which an int8 file's top label is torch's
GREEDY_TOKENS = 200
MIN_SHARE = 64  # inputs a checking thread takes at least: a runner's load is not worth fewer

Step = Callable[..., Sequence[np.ndarray]]  # a runner or torch: inputs -> outputs (a text step: token, h, c)


Outputs = list[list[np.ndarray]]  # one list of output arrays per input


def _bar(total: int, desc: str) -> tqdm:
    """A progress bar on stderr (a line every 30 s when not on a terminal)."""
    return tqdm(total=total, desc=desc, unit="input", leave=False, mininterval=0.5 if sys.stderr.isatty() else 30)


def run_all(runner: Step, inputs: list[Inputs], desc: str) -> Outputs:
    """``runner``'s outputs for each of ``inputs``, with a progress bar: a recurrent classifier's evaluation set
    takes minutes per pass."""
    with _bar(len(inputs), desc) as bar:
        outputs = []
        for args in inputs:
            outputs.append(list(runner(*args)))
            bar.update()
        return outputs


def run_file(open_one: Callable[[], Step], inputs: list[Inputs], desc: str, workers: int = 1) -> Outputs:
    """:func:`run_all` over ``workers`` threads, each with a runner of its own (``open_one()``; a TFLite interpreter
    serves one thread at a time) on a contiguous share of ``inputs``: the runtimes compute outside Python's lock, so
    the shares run side by side. The outputs are in the inputs' order."""
    workers = max(1, min(workers, len(inputs) // MIN_SHARE))
    if workers == 1:
        return run_all(open_one(), inputs, desc)
    bounds = np.linspace(0, len(inputs), workers + 1).astype(int)
    lock = threading.Lock()
    with _bar(len(inputs), f"{desc} ({workers} threads)") as bar:

        def share(start: int, stop: int) -> Outputs:
            runner = open_one()
            done = []
            for args in inputs[start:stop]:
                done.append(list(runner(*args)))
                with lock:
                    bar.update()
            return done

        with ThreadPoolExecutor(workers) as pool:
            shares = list(pool.map(share, bounds[:-1], bounds[1:]))
    return [out for part in shares for out in part]


def max_abs_between(got: Outputs, want: Outputs) -> float:
    """The largest absolute difference between two runs' outputs, over every input and output."""
    worst = 0.0
    for outs, refs in zip(got, want, strict=True):
        for out, ref in zip(outs, refs, strict=True):
            worst = max(worst, float(np.max(np.abs(out.astype(np.float32) - ref))))
    return worst


def max_abs_difference(spec: ExportSpec, runner: Runner, inputs: list[Inputs]) -> float:
    """The largest difference between ``runner``'s outputs and torch's for ``inputs`` (the export compares a
    file's outputs for the real inputs with the spec's cached ``real_outputs`` through :func:`max_abs_between`)."""
    return max_abs_between([list(runner(*args)) for args in inputs], [spec.reference(args) for args in inputs])


def top_labels(outputs: list[list[np.ndarray]]) -> np.ndarray:
    """The top label of the first output (logits) of each input."""
    return np.asarray([int(np.argmax(out[0])) for out in outputs])


def label_figures(spec: ExportSpec, outputs: Outputs) -> dict[str, float]:
    """Top-label agreement with torch of a file's ``outputs`` for the real inputs and, where they are known, accuracy
    against the truth (the spec's labels: an image generator's are its judge's labels of the images)."""
    got = spec.labels_of(outputs)
    want = spec.labels_of(spec.real_outputs)
    figures = {"top_label_agreement": float(np.mean(got == want)), "evaluated": len(got)}
    if spec.targets is not None:
        figures["accuracy"] = float(np.mean(got == spec.targets))
    return figures


def greedy_ids(step: Step, start: list[int], layers: int, hidden: int, tokens: int = GREEDY_TOKENS) -> list[int]:
    """Read ``start``, then pick the likeliest id ``tokens`` times (never id 0, the unknown symbol)."""
    h = np.zeros((layers, 1, hidden), dtype=np.float32)
    c = np.zeros_like(h)
    logits = np.zeros(0, dtype=np.float32)
    for token in start:
        logits, h, c = step(np.asarray([token], dtype=np.int32), h, c)
    out: list[int] = []
    for _ in range(tokens):
        token = 1 + int(np.argmax(np.asarray(logits).reshape(-1)[1:]))
        out.append(token)
        logits, h, c = step(np.asarray([token], dtype=np.int32), h, c)
    return out


def greedy_text_figures(spec: ExportSpec, runner: Runner, prompt_tokens: int = 40) -> dict[str, object]:
    """Greedy text of the exported step against torch's, after the start text and the real text's first
    ``prompt_tokens`` characters (a prompt, so that the continuation is more than the likeliest character)."""
    vocab: list[str] = spec.info["vocabulary"]
    start = [int(args[0][0]) for args in spec.real_inputs[: prompt_tokens + 1]]
    layers, hidden = spec.info["layers"], spec.info["hidden_size"]
    want = greedy_ids(lambda *args: spec.reference(args), start, layers, hidden)
    got = greedy_ids(runner, start, layers, hidden)
    same = next((i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b), len(want))
    return {
        "greedy_prompt": "".join(vocab[i] for i in start),
        "greedy_tokens": len(want),
        "greedy_same_tokens": same,  # how many tokens agree before the first difference
        "greedy_matches": same == len(want),
        "greedy_text": "".join(vocab[i] for i in want),
    }
