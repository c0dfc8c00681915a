"""Which file of a model the edge opens: the backend's format, int8 for classifiers where the backend runs int8
fast and float32 for generators, never a file the backend is known to compute wrongly."""

from __future__ import annotations

import json
import platform

import pytest

from edge_client.manifest import X86_64, Manifest
from edge_client.runtime import TfliteRunner, available_backends
from server.errors import InvalidArgument, NotFound
from tests.edge.conftest import EdgeFiles


@pytest.mark.parametrize(
    ("name", "backend", "precision"),
    [
        ("digits", "ai_edge_litert", "int8"),
        ("digits", "tflite_runtime", "float32"),  # its int8 kernels run without XNNPACK: slower than float
        ("digits", "onnxruntime", "int8"),
        ("text_step", "ai_edge_litert", "float32"),
        ("text_step", "onnxruntime", "float32"),
        ("text_step", "tflite_runtime", "float32"),
        ("textdisc", "ai_edge_litert", "int8"),
        ("textdisc", "tflite_runtime", "float32"),
        ("textdisc", "onnxruntime", "int8"),
        ("dcgan_generator", "ai_edge_litert", "float32"),  # a generator, though it has labels: torch's images
        ("dcgan_generator", "tflite_runtime", "float32"),
        ("dcgan_generator", "onnxruntime", "float32"),
        ("dcgan_discriminator", "ai_edge_litert", "int8"),
        ("dcgan_discriminator", "tflite_runtime", "float32"),
        ("dcgan_discriminator", "onnxruntime", "int8"),
    ],
)
def test_auto_precision(edge_files: EdgeFiles, name: str, backend: str, precision: str) -> None:
    """Auto picks int8 for classifiers (float32 on tflite-runtime, whose int8 kernels are the slower) and float32
    for generators (text steps, image generators)."""
    chosen, file = Manifest(edge_files.export).choose_file(name, backend)
    assert chosen == precision
    assert file["file"].endswith(".onnx" if backend == "onnxruntime" else ".tflite")


def test_unknown_precision_and_missing_files(edge_files: EdgeFiles) -> None:
    """An unknown precision names the field; a precision the model lacks is NotFound naming what it has."""
    manifest = Manifest(edge_files.export)
    with pytest.raises(InvalidArgument, match="precision: unknown precision 'fp16'"):
        manifest.choose_file("digits", "onnxruntime", "fp16")
    with pytest.raises(NotFound, match="model 'text_small_step' has no int8 tflite file"):
        manifest.choose_file("text_small_step", "tflite_runtime", "int8")


@pytest.mark.parametrize("backend", ["ai_edge_litert", "tflite_runtime", "onnxruntime"])
def test_dynamic_int8_is_never_picked_where_miscomputed(edge_files: EdgeFiles, backend: str) -> None:
    """A dynamic-range int8 file is skipped by auto on tflite-runtime everywhere and on onnxruntime off x86-64: a
    classifier with no other file has no usable one there."""
    manifest = Manifest(edge_files.export)
    entry = json.loads(json.dumps(manifest.entry("text_step")))  # a classifier with text_step's int8 files only
    entry["labels"] = ["a", "b"]
    del entry["files"]["onnx" if backend == "onnxruntime" else "tflite"]["float32"]
    manifest.models["dynamic"] = entry
    if backend == "ai_edge_litert" or (backend == "onnxruntime" and platform.machine() in X86_64):
        assert manifest.choose_file("dynamic", backend)[0] == "int8"
    else:
        with pytest.raises(NotFound, match="model 'dynamic' has no usable"):
            manifest.choose_file("dynamic", backend)


@pytest.mark.parametrize("backend", ["ai_edge_litert", "tflite_runtime"])
def test_tflite_float_files_run_on_xnnpack(edge_files: EdgeFiles, backend: str) -> None:
    """The runner lets the interpreter apply its default delegate, so the spotter's float graph runs on XNNPACK
    (tflite-runtime applies it only when the interpreter itself allocates; before the runner did, every operator
    there ran on TFLite's slower kernels, five times the time)."""
    if backend not in available_backends():
        pytest.skip(f"{backend} is not installed here")
    model = Manifest(edge_files.export).open("kws", backend, "float32")
    assert isinstance(model.runner, TfliteRunner)
    ops = {op["op_name"] for op in model.runner.interpreter._get_ops_details()}
    assert "DELEGATE" in ops


def test_native_stderr_loses_only_the_interpreters_all_is_well_line(capfd: pytest.CaptureFixture[str]) -> None:
    """What native code writes to descriptor 2 inside the block comes back after it, less the XNNPACK line."""
    import os

    from edge_client.runtime import native_stderr_without

    with native_stderr_without():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"ERROR: a real complaint\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "ERROR: a real complaint\nafter\n"
