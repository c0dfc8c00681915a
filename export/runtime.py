"""Run exported files from NumPy: onnxruntime for ONNX, the LiteRT interpreter for TFLite.

A runner takes and returns float32 (and int32 ids) in the model's input order,
whatever the file holds inside: for a fully int8 TFLite file it quantizes the
inputs and dequantizes the outputs with the scales stored in the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_client.runtime import TensorInfo, _dequantize, _quantize, _tflite_info
from server.errors import ExportError


class Runner(Protocol):
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    def __call__(self, *args: np.ndarray) -> list[np.ndarray]: ...


class OnnxRunner:
    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [_onnx_info(t) for t in self.session.get_inputs()]
        self.outputs = [_onnx_info(t) for t in self.session.get_outputs()]

    def __call__(self, *args: np.ndarray) -> list[np.ndarray]:
        feeds = {info.name: np.asarray(a, dtype=info.dtype) for info, a in zip(self.inputs, args, strict=True)}
        return [np.asarray(out) for out in self.session.run(None, feeds)]


def _onnx_info(tensor: Any) -> TensorInfo:
    dtype = tensor.type.removeprefix("tensor(").removesuffix(")")
    return TensorInfo(tensor.name, "float32" if dtype == "float" else dtype, [int(d) for d in tensor.shape])


class TfliteRunner:
    """The file's one signature; inputs and outputs in ``order`` (names) where given, else as the file lists them
    (a signature lists its names sorted, not in the module's order)."""

    def __init__(self, path: Path, order: tuple[tuple[str, ...], tuple[str, ...]] | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=1)
        signatures = self.interpreter.get_signature_list()
        (self.signature, names), *_ = signatures.items()
        self.runner = self.interpreter.get_signature_runner(self.signature)
        in_details = self.runner.get_input_details()
        out_details = self.runner.get_output_details()
        in_names, out_names = order or (names["inputs"], names["outputs"])
        if sorted(in_names) != sorted(names["inputs"]) or sorted(out_names) != sorted(names["outputs"]):
            raise ExportError(f"{path.name}: signature {names} does not have the names {order}")
        self.inputs = [_tflite_info(name, in_details[name]) for name in in_names]
        self.outputs = [_tflite_info(name, out_details[name]) for name in out_names]

    def __call__(self, *args: np.ndarray) -> list[np.ndarray]:
        feeds = {info.name: _quantize(np.asarray(a), info) for info, a in zip(self.inputs, args, strict=True)}
        result = self.runner(**feeds)
        return [_dequantize(result[info.name], info) for info in self.outputs]


def open_runner(fmt: str, path: Path, order: tuple[tuple[str, ...], tuple[str, ...]] | None = None) -> Runner:
    """A runner of an ONNX or TFLite file; ``order`` (input names, output names) fixes the TFLite argument order
    (ONNX files keep the order they were exported with)."""
    if fmt == "onnx":
        return OnnxRunner(path)
    return TfliteRunner(path, order)
