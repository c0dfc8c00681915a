"""torch -> ONNX and TFLite, float and int8.

- ONNX: ``torch.onnx.export(..., dynamo=True)``; int8 through onnxruntime's
  quantizer: static QDQ with per-channel weights when the spec brings
  calibration inputs (classifiers), dynamic (int8 weights, activations
  quantized per call) otherwise or where the spec asks (``dynamic_int8``).
- TFLite: ``litert_torch.convert``; int8 through the LiteRT quantizer
  (``ai-edge-quantizer``): ``static_wi8_ai8`` with calibration (int8 inputs and
  outputs, their scales in the file), ``dynamic_wi8_afp32`` without or where the
  spec asks (``dynamic_int8``: a recurrent scorer inside a classifier); the
  int8 file's inner tensors get short names (:func:`shorten_tensor_names`).

The converters print progress and raise deprecation warnings of their own;
both are kept out of the caller's output and warning filters.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from export.specs import ExportSpec
from server.errors import ExportError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the converters' progress output and their third-party deprecation warnings."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript", "absl"):
            logging.getLogger(name).setLevel(logging.ERROR)
        yield


def to_onnx(spec: ExportSpec, path: Path) -> None:
    import torch

    try:
        with _quiet():
            program = torch.onnx.export(
                spec.module,
                spec.sample_inputs,
                dynamo=True,
                input_names=list(spec.input_names),
                output_names=list(spec.output_names),
                verbose=False,
            )
            if program is None:  # only the legacy exporter returns nothing
                raise ExportError("the exporter returned no program")
            program.save(str(path))
    except Exception as exc:  # the exporter raises many unrelated types
        raise ExportError(f"{spec.name}: ONNX export failed: {exc}") from exc


def to_tflite(spec: ExportSpec, path: Path) -> None:
    try:
        with _quiet():
            import litert_torch

            kwargs = dict(zip(spec.input_names, spec.sample_inputs, strict=True))
            litert_torch.convert(_named_outputs(spec), sample_kwargs=kwargs).export(str(path))
    except Exception as exc:
        raise ExportError(f"{spec.name}: TFLite conversion failed: {exc}") from exc


def _named_outputs(spec: ExportSpec) -> Any:
    """The module with keyword inputs and a dict of named outputs, so the TFLite signature carries the names."""
    from torch import nn

    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = spec.module

        def forward(self, **inputs: Any) -> dict[str, Any]:
            out = self.inner(*(inputs[name] for name in spec.input_names))
            out = out if isinstance(out, tuple) else (out,)
            return dict(zip(spec.output_names, out, strict=True))

    return Named().eval()


def onnx_int8(spec: ExportSpec, float_path: Path, path: Path) -> str:
    """Quantize an ONNX file; returns the method used."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    names = spec.input_names
    try:
        with _quiet():
            pre = path.with_name(path.stem + ".pre.onnx")
            try:
                quant_pre_process(str(float_path), str(pre))
            except Exception:  # symbolic shape inference gives up on some reductions; ONNX's own inference suffices
                quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
            if spec.calibration and not spec.dynamic_int8:

                class Reader(CalibrationDataReader):
                    def __init__(self, batches: list[tuple[np.ndarray, ...]]) -> None:
                        self.batches = iter(batches)

                    def get_next(self) -> dict[str, np.ndarray] | None:
                        batch = next(self.batches, None)
                        return None if batch is None else dict(zip(names, batch, strict=True))

                excluded = _onnx_scope_nodes(float_path, pre, spec.float_scope) if spec.float_scope else []
                if spec.float_tail:
                    excluded += _onnx_scope_nodes(float_path, pre, spec.float_tail, downstream=True)
                if spec.float_output:
                    excluded += _onnx_output_nodes(pre)
                quantize_static(
                    str(pre),
                    str(path),
                    Reader(spec.calibration),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=excluded,
                )
                method = "onnxruntime static QDQ, int8 weights (per channel) and activations"
                if excluded:
                    kept = " and ".join(
                        filter(
                            None,
                            [
                                spec.float_scope,
                                f"{spec.float_tail} and after" if spec.float_tail else "",
                                "the outputs" if spec.float_output else "",
                            ],
                        )
                    )
                    method += f"; {len(excluded)} nodes float ({kept})"
            else:
                # The matrix products that give an output stay float with float_output (the quantizer splits a
                # fused Gemm into NAME_MatMul and NAME_Add, so both names are given).
                excluded = [f"{n}{part}" for n in _onnx_output_products(pre) for part in ("", "_MatMul")]
                quantize_dynamic(
                    str(pre),
                    str(path),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    op_types_to_quantize=["MatMul", "Gemm"],
                    nodes_to_exclude=excluded if spec.float_output else [],
                )
                method = "onnxruntime dynamic, int8 weights (per channel), activations quantized per call"
                if spec.float_output:
                    method += "; the products that give the outputs float"
            pre.unlink(missing_ok=True)
    except Exception as exc:
        raise ExportError(f"{spec.name}: ONNX int8 quantization failed: {exc}") from exc
    return method


def _onnx_scope_nodes(float_path: Path, pre_path: Path, scope: str, downstream: bool = False) -> list[str]:
    """Names of the nodes of the pre-processed model that come from submodule ``scope``, and of every node they
    depend on (helpers the exporter added without metadata), or with ``downstream`` every node that depends on
    them (a tail: the scope and the ops after it). The exporter's ``namespace`` metadata names the submodule;
    pre-processing drops the metadata but keeps node names, so the names are read from the float file."""
    import onnx

    markers = [f"/{name}: " for name in scope.split("|")]
    named = {
        n.name
        for n in onnx.load(str(float_path)).graph.node
        if any(p.key == "namespace" and any(m in p.value for m in markers) for p in n.metadata_props)
    }
    graph = onnx.load(str(pre_path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    todo = [n for n in graph.node if n.name in named]
    if not todo:
        raise ExportError(f"no ONNX node comes from the submodule {scope!r}")
    seen: dict[str, None] = {}
    while todo:
        node = todo.pop()
        if node.name in seen:
            continue
        seen[node.name] = None
        if downstream:
            todo += [c for out in node.output for c in consumers.get(out, [])]
        else:
            todo += [producer[i] for i in node.input if i in producer]
    return list(seen)


def _onnx_output_products(path: Path) -> list[str]:
    """Names of the MatMul and Gemm nodes whose result is a graph output, directly or through one Add (a bias)."""
    import onnx

    graph = onnx.load(str(path)).graph
    outputs = {o.name for o in graph.output}
    biased = {i for n in graph.node if n.op_type == "Add" and outputs & set(n.output) for i in n.input}
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and (outputs | biased) & set(n.output)]


def _onnx_output_nodes(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path)).graph
    outputs = {o.name for o in graph.output}
    return [n.name for n in graph.node if outputs & set(n.output)]


def _float_outputs_entry(spec: ExportSpec) -> dict[str, Any]:
    """A recipe entry that leaves the ops giving the graph's outputs unquantized (TFLite names an op after its
    output tensor, and the exporter names a graph output ``serving_default_<name>_output``)."""
    names = "|".join(spec.output_names)
    return {"regex": f"serving_default_({names})_output", "operation": "*", "algorithm_key": "no_quantize"}


def _tflite_static_recipe(spec: ExportSpec) -> list[dict[str, Any]]:
    """``static_wi8_ai8``; with a float scope, that submodule's ops stay float (weights and activations) and the
    graph inputs stay float32; with float outputs, so do the ops that produce them (TFLite names an op after its
    output tensor, and the exporter names a graph output ``serving_default_<name>_output``)."""
    from ai_edge_quantizer import recipe

    entries: list[dict[str, Any]] = list(recipe.static_wi8_ai8())
    if spec.float_scope is not None:
        entries.append({"regex": spec.float_scope, "operation": "*", "algorithm_key": "no_quantize"})
        entries.append({"regex": ".*", "operation": "INPUT", "algorithm_key": "no_quantize"})
    if spec.float_tail is not None:  # the scope's ops, those after it (named after it too), and the outputs
        entries.append({"regex": spec.float_tail, "operation": "*", "algorithm_key": "no_quantize"})
    if spec.float_output or spec.float_tail is not None:
        entries.append(_float_outputs_entry(spec))
        entries.append({"regex": ".*", "operation": "OUTPUT", "algorithm_key": "no_quantize"})
    return entries


def tflite_int8(spec: ExportSpec, float_path: Path, path: Path) -> str:
    """Quantize a TFLite file with the LiteRT quantizer; returns the method used."""
    try:
        with _quiet():
            from ai_edge_quantizer import quantizer, recipe

            qt = quantizer.Quantizer(str(float_path))
            if spec.calibration and not spec.dynamic_int8:
                qt.load_quantization_recipe(_tflite_static_recipe(spec))
                data = [dict(zip(spec.input_names, batch, strict=True)) for batch in spec.calibration]
                if spec.calibration_extremes:
                    result = qt.quantize(_widest_ranges(qt, data))
                else:
                    result = qt.quantize(qt.calibrate({"serving_default": data}))
                method = "ai-edge-quantizer static_wi8_ai8, int8 weights and activations"
                if spec.float_scope:
                    method += f"; {spec.float_scope} float, float32 input"
                if spec.calibration_extremes:
                    method += "; ranges: calibration extremes"
                if spec.float_tail:
                    method += f"; {spec.float_tail} and after float"
                if spec.float_output or spec.float_tail:
                    method += "; float32 output"
            else:
                entries = list(recipe.dynamic_wi8_afp32())
                if spec.float_output:
                    entries.append(_float_outputs_entry(spec))
                qt.load_quantization_recipe(entries)
                result = qt.quantize()
                method = "ai-edge-quantizer dynamic_wi8_afp32, int8 weights, float activations"
                if spec.float_output:
                    method += "; the ops that give the outputs float"
            result.export_model(str(path), overwrite=True)
            shorten_tensor_names(path)
    except Exception as exc:
        raise ExportError(f"{spec.name}: TFLite int8 quantization failed: {exc}") from exc
    return method


def _widest_ranges(qt: Any, data: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Each tensor's min and max over every calibration input: one calibration per input, whose own extremes are
    its statistics, merged. (The calibrator's moving average of the inputs' extremes stays near one input's.)"""
    merged: dict[str, Any] = {}
    for inputs in data:
        for name, stats in qt.calibrate({"serving_default": [inputs]}).items():
            old = merged.get(name)
            if old and stats:
                stats = {"min": np.minimum(old["min"], stats["min"]), "max": np.maximum(old["max"], stats["max"])}
            merged[name] = stats or old
    return merged


def shorten_tensor_names(path: Path) -> None:
    """Rename a TFLite file's inner tensors ``t<index>`` in place; the inputs, outputs and signatures keep their
    names. The converter names each tensor after the torch module path of every op fused into it, hundreds of
    characters each: about 27 kB of the keyword spotter's 94 kB int8 file. The quantizer matches its recipe
    against those names, so this runs after it."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    for subgraph in model.subgraphs:
        keep = set(subgraph.inputs) | set(subgraph.outputs)
        for index, tensor in enumerate(subgraph.tensors):
            if index not in keep:
                tensor.name = f"t{index}".encode()
    flatbuffer_utils.write_model(model, str(path))
