"""Server-side classifiers behind ``Classify``: keyword spotting (audio), the text discriminator (text) and the
digits CNN (an 8x8 image as a tensor).

A classifier is one small torch model; each request is a single forward pass, run on a worker thread so the event
loop never waits on torch. Inputs are checked and brought to the model's form here: audio resampled to 16 kHz and
cut to its loudest second, text cut into the model's windows (probabilities averaged), images checked for shape and
range. Bad input is ``InvalidArgument`` naming the field.

The models see few input shapes: torch runs their convolutions and LSTMs through oneDNN, which compiles a kernel
for every new shape, so a text is read as full windows (a short one left-padded) in batches of a power of two
(:func:`shape_batches`), and the compiled kernels are reused rather than compiled per request (server/memory.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from server.audio.constants import SAMPLE_RATE
from server.audio.resample import resample
from server.engine.loop import FAILED
from server.engine.requests import AUDIO, TENSOR, TEXT, ClassifierInfo, ClassifyInput
from server.engine.streams import FINISH_STOP
from server.errors import AntiphonError, InvalidArgument
from server.metrics import Recorder

MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8_000, 48_000
MAX_AUDIO_SECONDS = 30.0
MAX_TEXT_CHARS = 100_000
WINDOW_HOP = SAMPLE_RATE // 4  # the loudest second is searched in steps of 250 ms
MAX_BATCH = 64  # windows a model reads at once


Prepare = Callable[[ClassifyInput], torch.Tensor]  # the request -> a batch of model inputs (windows)


class Classifier:
    """One loaded classifier. :meth:`classify` returns (label, probability) pairs, most probable first."""

    def __init__(self, info: ClassifierInfo, model: nn.Module, prepare: Prepare) -> None:
        self.info = info
        self.model = model.eval()
        self.prepare = prepare
        self.metrics = Recorder()  # records nothing; a server hands its classifiers its own recorder
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"classify-{info.id}")

    @torch.no_grad()
    def _run(self, request: ClassifyInput) -> np.ndarray:
        batch = self.prepare(request)
        logits = torch.cat([self.model(part) for part in shape_batches(batch)])
        probabilities = torch.softmax(logits.float(), dim=-1)
        return probabilities.mean(dim=0).numpy()  # windows averaged

    async def classify(self, request: ClassifyInput, top_k: int = 0) -> list[tuple[str, float]]:
        if request.kind != self.info.input:
            raise InvalidArgument(
                "input", f"model {self.info.id!r} classifies {self.info.input}, got {request.kind or 'nothing'}"
            )
        if top_k < 0:
            raise InvalidArgument("top_k", f"must be 0 (all) or positive, got {top_k}")
        if request.audio_sample_rate and request.kind != AUDIO:  # a field the request does not use is refused
            raise InvalidArgument("audio_sample_rate", f"is only read with audio, got {request.kind} input")
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            probabilities = await loop.run_in_executor(self._executor, self._run, request)
        except AntiphonError:
            raise  # the input was refused (the transport counts the error it answers)
        except Exception:
            self.metrics.classify_request(self.info.id, request.transport, FAILED, time.monotonic() - started)
            raise
        self.metrics.classify_request(self.info.id, request.transport, FINISH_STOP, time.monotonic() - started)
        order = np.argsort(-probabilities, kind="stable")
        ranked = [(self.info.labels[i], float(probabilities[i])) for i in order]
        return ranked[:top_k] if top_k else ranked

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def shape_batches(batch: torch.Tensor, largest: int = MAX_BATCH) -> list[torch.Tensor]:
    """``batch`` cut into consecutive parts whose sizes are powers of two up to ``largest`` (13 windows: 8, 4 and 1),
    so that any number of windows is read in one of a few batch shapes."""
    parts, start = [], 0
    while start < len(batch):
        size = min(largest, 1 << ((len(batch) - start).bit_length() - 1))
        parts.append(batch[start : start + size])
        start += size
    return parts


# -- audio -----------------------------------------------------------------------
def pcm16_to_16k(data: bytes, sample_rate: int) -> np.ndarray:
    """PCM16 LE mono bytes at ``sample_rate`` (0: 16 kHz) as float32 samples at 16 kHz."""
    rate = sample_rate or SAMPLE_RATE
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidArgument(
            "audio_sample_rate", f"must be 0 (16000) or {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz, got {rate}"
        )
    if len(data) % 2:
        raise InvalidArgument("audio", f"must be whole 16-bit samples, got {len(data)} bytes")
    if not data:
        raise InvalidArgument("audio", "is empty")
    if len(data) / 2 / rate > MAX_AUDIO_SECONDS:
        raise InvalidArgument("audio", f"at most {MAX_AUDIO_SECONDS:g} s, got {len(data) / 2 / rate:.1f} s")
    wave = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    return resample(wave, rate)


def loudest_second(wave: np.ndarray) -> np.ndarray:
    """One second of ``wave``: all of it centred in silence if shorter, else its loudest second (250 ms steps)."""
    if wave.size <= SAMPLE_RATE:
        out = np.zeros(SAMPLE_RATE, np.float32)
        start = (SAMPLE_RATE - wave.size) // 2
        out[start : start + wave.size] = wave
        return out
    energy = np.concatenate([[0.0], np.cumsum(wave.astype(np.float64) ** 2)])
    starts = np.arange(0, wave.size - SAMPLE_RATE + 1, WINDOW_HOP)
    best = int(starts[np.argmax(energy[starts + SAMPLE_RATE] - energy[starts])])
    return wave[best : best + SAMPLE_RATE]


def load_kws(path: Path, model_id: str = "kws") -> Classifier:
    from server.kws.checkpoint import load_kws_model

    model, meta = load_kws_model(path)

    def prepare(request: ClassifyInput) -> torch.Tensor:
        assert request.audio is not None
        return torch.from_numpy(loudest_second(pcm16_to_16k(request.audio, request.audio_sample_rate)))[None]

    labels = tuple(meta["labels"])
    info = ClassifierInfo(
        model_id, AUDIO, labels, f"keyword spotting, {len(labels)} labels, one-second windows", sample_rate=SAMPLE_RATE
    )
    return Classifier(info, model, prepare)


# -- text ------------------------------------------------------------------------
def text_windows(ids: list[int], window: int, pad_id: int) -> np.ndarray:
    """Non-overlapping windows of ``window`` ids covering all of ``ids`` (the last one ends at the end); a text
    shorter than a window is one window, left-padded with ``pad_id`` (a newline's, as the edge client reads it)."""
    if len(ids) <= window:
        return np.asarray([[pad_id] * (window - len(ids)) + ids], dtype=np.int64)
    starts = [*range(0, len(ids) - window, window), len(ids) - window]
    return np.stack([np.asarray(ids[s : s + window], dtype=np.int64) for s in starts])


def load_textdisc(path: Path, model_id: str = "textdisc") -> Classifier:
    from server.textdisc.checkpoint import load_textdisc_model

    model, vocab, meta = load_textdisc_model(path)
    window = int(meta.get("window", 256))
    pad_id = vocab.encode("\n")[0]

    def prepare(request: ClassifyInput) -> torch.Tensor:
        assert request.text is not None
        if not request.text:
            raise InvalidArgument("text", "is empty")
        if len(request.text) > MAX_TEXT_CHARS:
            raise InvalidArgument("text", f"at most {MAX_TEXT_CHARS} characters, got {len(request.text)}")
        return torch.from_numpy(text_windows(vocab.encode(request.text), window, pad_id))

    labels = tuple(meta["labels"])
    description = f"machine-text discriminator over {window}-character windows ({', '.join(labels)})"
    return Classifier(ClassifierInfo(model_id, TEXT, labels, description), model, prepare)


# -- images ----------------------------------------------------------------------
def load_digits(path: Path, model_id: str = "digits") -> Classifier:
    from server.vision.checkpoint import load_digits_model
    from server.vision.model import MAX_INTENSITY

    model, meta = load_digits_model(path)
    accepted = {(8, 8), (64,), (1, 8, 8), (1, 1, 8, 8)}

    def prepare(request: ClassifyInput) -> torch.Tensor:
        values = request.tensor_values
        assert values is not None
        shape = request.tensor_shape or (values.size,)
        if shape not in accepted:
            raise InvalidArgument("tensor.shape", f"must be [8, 8] (or [64], [1, 8, 8]), got {list(shape)}")
        if values.size != math.prod(shape):
            raise InvalidArgument("tensor.values", f"has {values.size} values for shape {list(shape)}")
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > MAX_INTENSITY:
            raise InvalidArgument("tensor.values", f"must be pixel intensities in [0, {MAX_INTENSITY}]")
        return torch.from_numpy(values.astype(np.float32).reshape(1, 8, 8))

    labels = tuple(meta["labels"])
    info = ClassifierInfo(model_id, TENSOR, labels, "8x8 digit images (sklearn digits)", input_shape=(8, 8))
    return Classifier(info, model, prepare)


LOADERS: dict[str, Callable[[Path, str], Classifier]] = {
    "kws": load_kws,
    "textdisc": load_textdisc,
    "digits": load_digits,
}
