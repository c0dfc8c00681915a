"""Run an exported file with whichever interpreter this device has: ``ai_edge_litert`` (LiteRT, numpy 2),
``tflite_runtime`` (numpy 1; what Raspberry Pi OS Bookworm with Python 3.11 can install) or ``onnxruntime``.

A runner takes and returns float32 (and int32 ids) in the order the manifest lists the model's inputs and outputs,
whatever the file holds inside: for a fully int8 TFLite file it quantizes the inputs and dequantizes the outputs
with the scales stored in the file. Imports of the interpreters happen only when a backend is opened, so that a
device needs only the one it uses.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from server.errors import InvalidArgument, ModelFileError

# Backend name -> (the file format it runs, the module that must be importable). Auto picks the first present.
BACKENDS: dict[str, tuple[str, str]] = {
    "ai_edge_litert": ("tflite", "ai_edge_litert.interpreter"),
    "tflite_runtime": ("tflite", "tflite_runtime.interpreter"),
    "onnxruntime": ("onnx", "onnxruntime"),
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # numpy name: "float32", "int32", "int8"
    shape: list[int]
    scale: float | None = None  # int8 tensors: real = scale * (q - zero_point)
    zero_point: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": self.shape}
        if self.scale is not None:
            out["scale"], out["zero_point"] = self.scale, self.zero_point
        return out


class Runner(Protocol):
    backend: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def __call__(self, *args: np.ndarray) -> list[np.ndarray]: ...


def available_backends() -> list[str]:
    """The backends whose interpreter this Python can import, in the order auto tries them."""
    out = []
    for name, (_, module) in BACKENDS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:  # the parent package is missing
            found = False
        if found:
            out.append(name)
    return out


def resolve_backend(name: str | None) -> str:
    """``name`` checked against this device, or the first available backend when it is None or "auto"."""
    have = available_backends()
    if name in (None, "", "auto"):
        if not have:
            raise ModelFileError(
                "no model runtime is installed: install one of ai-edge-litert (numpy 2), tflite-runtime (numpy 1) "
                "or onnxruntime"
            )
        return have[0]
    if name not in BACKENDS:
        raise InvalidArgument("backend", f"unknown backend {name!r}; known: auto, {', '.join(BACKENDS)}")
    if name not in have:
        raise InvalidArgument(
            "backend",
            f"{name} is not installed here (installed: {', '.join(have) or 'none'}); pip install "
            f"{name.replace('_', '-')}",
        )
    return name


def backend_format(backend: str) -> str:
    return BACKENDS[backend][0]


class OnnxRunner:
    backend = "onnxruntime"

    def __init__(self, path: Path, input_names: Sequence[str], output_names: Sequence[str], threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only; a bad file raises anyway
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for every kind of bad file
            raise ModelFileError(f"{path}: onnxruntime cannot load this file ({_first_line(exc)})") from exc
        by_name = {t.name: t for t in self.session.get_inputs()}
        out_by_name = {t.name: t for t in self.session.get_outputs()}
        _check_names(path, input_names, list(by_name), output_names, list(out_by_name))
        self.inputs = [_onnx_info(by_name[n]) for n in input_names]
        self.outputs = [_onnx_info(out_by_name[n]) for n in output_names]
        self._output_names = list(output_names)

    def __call__(self, *args: np.ndarray) -> list[np.ndarray]:
        feeds = {info.name: np.asarray(a, dtype=info.dtype) for info, a in zip(self.inputs, args, strict=True)}
        return [np.asarray(out) for out in self.session.run(self._output_names, feeds)]


def _onnx_info(tensor: Any) -> TensorInfo:
    dtype = tensor.type.removeprefix("tensor(").removesuffix(")")
    return TensorInfo(tensor.name, "float32" if dtype == "float" else dtype, [int(d) for d in tensor.shape])


# What a TFLite interpreter writes to the process's stderr when all is well ("INFO: Created TensorFlow Lite XNNPACK
# delegate for CPU."): a line before every command's own output, saying nothing a user can act on.
NATIVE_NOISE = ("INFO: Created TensorFlow Lite XNNPACK delegate",)


@contextlib.contextmanager
def native_stderr_without(noise: tuple[str, ...] = NATIVE_NOISE) -> Iterator[None]:
    """What native code writes to file descriptor 2 while the block runs, written back afterwards less the lines
    that start with ``noise`` (a warning or an error still shows, after the block)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (a closed stderr): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not line.startswith(noise):
                    sys.stderr.write(line)
            sys.stderr.flush()


class TfliteRunner:
    """The file's one signature, called with inputs and outputs in the manifest's order (a TFLite signature lists
    its names sorted, not in the module's order)."""

    def __init__(
        self, backend: str, path: Path, input_names: Sequence[str], output_names: Sequence[str], threads: int
    ) -> None:
        self.backend = backend
        interpreter_module = importlib.import_module(BACKENDS[backend][1])
        try:
            with native_stderr_without():
                self.interpreter = interpreter_module.Interpreter(model_path=str(path), num_threads=threads)
                # tflite-runtime applies its default delegate (XNNPACK) here and not in a signature runner's own
                # allocation: without this call every float operator ran on TFLite's slower kernels there (the
                # keyword spotter 3.7 ms a window instead of 0.7). LiteRT delegates either way.
                self.interpreter.allocate_tensors()
            signatures = self.interpreter.get_signature_list()
            (self.signature, names), *_ = signatures.items()
            self.runner = self.interpreter.get_signature_runner(self.signature)
        except Exception as exc:  # ValueError for a bad flatbuffer, RuntimeError for a bad graph
            raise ModelFileError(f"{path}: {backend} cannot load this file ({_first_line(exc)})") from exc
        in_details = self.runner.get_input_details()
        out_details = self.runner.get_output_details()
        _check_names(path, input_names, names["inputs"], output_names, names["outputs"])
        self.inputs = [_tflite_info(name, in_details[name]) for name in input_names]
        self.outputs = [_tflite_info(name, out_details[name]) for name in output_names]

    def __call__(self, *args: np.ndarray) -> list[np.ndarray]:
        feeds = {info.name: _quantize(np.asarray(a), info) for info, a in zip(self.inputs, args, strict=True)}
        result = self.runner(**feeds)
        return [_dequantize(result[info.name], info) for info in self.outputs]


def _tflite_info(name: str, detail: dict[str, Any]) -> TensorInfo:
    dtype = np.dtype(detail["dtype"]).name
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = dtype in ("int8", "uint8", "int16") and scale != 0.0
    return TensorInfo(
        name,
        dtype,
        [int(d) for d in detail["shape"]],
        float(scale) if quantized else None,
        int(zero_point) if quantized else None,
    )


def _quantize(value: np.ndarray, info: TensorInfo) -> np.ndarray:
    if info.scale is None:
        return value.astype(info.dtype, copy=False)
    limits = np.iinfo(info.dtype)
    q = np.round(value / info.scale) + (info.zero_point or 0)
    return np.clip(q, limits.min, limits.max).astype(info.dtype)


def _dequantize(value: np.ndarray, info: TensorInfo) -> np.ndarray:
    if info.scale is None:
        return np.asarray(value)
    return ((value.astype(np.float32) - (info.zero_point or 0)) * info.scale).astype(np.float32)


def _check_names(
    path: Path, want_in: Sequence[str], have_in: Sequence[str], want_out: Sequence[str], have_out: Sequence[str]
) -> None:
    if sorted(want_in) != sorted(have_in) or sorted(want_out) != sorted(have_out):
        raise ModelFileError(
            f"{path}: the file's tensors (inputs {sorted(have_in)}, outputs {sorted(have_out)}) are not the "
            f"manifest's (inputs {list(want_in)}, outputs {list(want_out)})"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def open_runner(
    backend: str, path: Path, input_names: Sequence[str], output_names: Sequence[str], threads: int = 1
) -> Runner:
    """A runner of ``path`` on ``backend`` (a name from BACKENDS, already resolved)."""
    if backend == "onnxruntime":
        return OnnxRunner(path, input_names, output_names, threads)
    return TfliteRunner(backend, path, input_names, output_names, threads)
