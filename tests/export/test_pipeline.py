"""The export pipeline: files, manifest, hashes, option checks."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest

from export import pipeline
from export.pipeline import ExportOptions, export_models
from server.checkpoint import file_sha256
from server.data.shakespeare import load_corpus
from server.errors import CheckpointError, ExportError, InvalidArgument

from .conftest import DIGITS_CHECKPOINT, Exported

FILES = [
    ("digits", "onnx", "float32", "digits.onnx"),
    ("digits", "onnx", "int8", "digits.int8.onnx"),
    ("digits", "tflite", "float32", "digits.tflite"),
    ("digits", "tflite", "int8", "digits.int8.tflite"),
    ("text_step", "onnx", "float32", "text_step.onnx"),
    ("text_step", "onnx", "int8", "text_step.int8.onnx"),
    ("text_step", "tflite", "float32", "text_step.tflite"),
    ("text_step", "tflite", "int8", "text_step.int8.tflite"),
    *[
        (model, fmt, precision, f"{model}{'.int8' if precision == 'int8' else ''}.{fmt}")
        for model in ("text_small_step", "textdisc")
        for fmt in ("onnx", "tflite")
        for precision in ("float32", "int8")
    ],
]


def test_manifest_is_written_beside_the_files(exported: Exported) -> None:
    """manifest.json on disk is the manifest returned, and lists exactly the files written."""
    on_disk = json.loads((exported.out / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == exported.manifest
    listed = {f["file"] for m in on_disk["models"].values() for files in m["files"].values() for f in files.values()}
    assert listed == {name for *_, name in FILES}
    assert {p.name for p in exported.out.iterdir()} == listed | {"manifest.json"}


@pytest.mark.parametrize(("model", "fmt", "precision", "name"), FILES)
def test_every_file_has_its_sha256_and_size(
    exported: Exported, model: str, fmt: str, precision: str, name: str
) -> None:
    """Each file's entry names it and gives its real size and sha256."""
    entry = exported.manifest["models"][model]["files"][fmt][precision]
    path = exported.out / name
    assert entry["file"] == name
    assert entry["bytes"] == path.stat().st_size
    assert entry["sha256"] == file_sha256(path)


def test_source_checkpoints_are_hashed(exported: Exported) -> None:
    """Each model records the sha256 of the checkpoint it came from."""
    models = exported.manifest["models"]
    assert models["digits"]["checkpoint"] == {"file": DIGITS_CHECKPOINT.name, "sha256": file_sha256(DIGITS_CHECKPOINT)}
    text_checkpoint = exported.options.text_checkpoint
    assert text_checkpoint is not None
    assert models["text_step"]["checkpoint"]["sha256"] == file_sha256(text_checkpoint)


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_digits_tensors_are_described(exported: Exported, fmt: str) -> None:
    """The float digits file takes one (1, 8, 8) float32 image and returns (1, 10) logits over the labels."""
    digits = exported.manifest["models"]["digits"]
    entry = digits["files"][fmt]["float32"]
    assert entry["inputs"] == [{"name": "images", "dtype": "float32", "shape": [1, 8, 8]}]
    assert entry["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [1, 10]}]
    assert digits["kind"] == "digits_cnn"
    assert digits["labels"] == [str(d) for d in range(10)]


def test_static_int8_tflite_records_its_input_scale(exported: Exported) -> None:
    """A fully int8 TFLite file takes int8 pixels; the manifest gives the scale and zero point to quantize them."""
    (image,) = exported.manifest["models"]["digits"]["files"]["tflite"]["int8"]["inputs"]
    assert image["dtype"] == "int8"
    assert image["shape"] == [1, 8, 8]
    assert image["scale"] > 0
    assert -128 <= image["zero_point"] <= 127


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_text_step_tensors_are_described(exported: Exported, fmt: str) -> None:
    """The step takes (token, h, c) and returns (logits, h_out, c_out) with the state's shape."""
    step = exported.manifest["models"]["text_step"]
    entry = step["files"][fmt]["float32"]
    layers, hidden, vocab = step["layers"], step["hidden_size"], len(step["vocabulary"])
    state = [layers, 1, hidden]
    assert [(t["name"], t["dtype"], t["shape"]) for t in entry["inputs"]] == [
        ("token", "int32", [1]),
        ("h", "float32", state),
        ("c", "float32", state),
    ]
    assert [(t["name"], t["shape"]) for t in entry["outputs"]] == [
        ("logits", [1, vocab]),
        ("h_out", state),
        ("c_out", state),
    ]
    assert step["kind"] == "char_lstm_step"
    assert step["start_text"] == "\n"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"models": ("digits", "nope")},
            "models: unknown model 'nope'; known: digits, text_step, text_small_step, textdisc, kws, "
            "dcgan_generator, vae_decoder, dcgan_discriminator",
        ),
        ({"models": ()}, "models: give at least one model"),
        ({"formats": ("onnx", "coreml")}, "formats: unknown format 'coreml'; known: onnx, tflite"),
        ({"formats": ()}, "formats: give at least one format"),
        ({"models": ("digits",), "digits_checkpoint": None}, "digits_checkpoint: the digits model needs a checkpoint"),
        ({"models": ("kws",)}, "kws_checkpoint: kws needs a checkpoint (kws_checkpoint)"),
        ({"models": ("textdisc",)}, "textdisc_checkpoint: textdisc needs a checkpoint (textdisc_checkpoint)"),
        (
            {"models": ("dcgan_generator",), "dcgan_checkpoint": None},
            "dcgan_checkpoint: dcgan_generator needs a checkpoint (dcgan_checkpoint)",
        ),
        ({"models": ("vae_decoder",), "image_samples": 1}, "image_samples: must be in [2, 100000], got 1"),
        ({"models": ("digits",), "seed": -1}, "seed: must be in 0..2**63-1, got -1"),
        ({"models": ("digits",), "check_workers": -1}, "check_workers: must be in 0..256, got -1"),
        ({"models": ("digits", "kws", "digits")}, "models: digits is named twice"),
        ({"models": ("digits",), "formats": ("onnx", "onnx")}, "formats: onnx is named twice"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, options: dict[str, object], message: str) -> None:
    """Bad options raise InvalidArgument naming the option, before any file is written."""
    defaults: dict[str, object] = {"out": tmp_path / "out", "digits_checkpoint": DIGITS_CHECKPOINT}
    with pytest.raises(InvalidArgument) as info:
        export_models(ExportOptions(**{**defaults, **options}))  # type: ignore[arg-type]
    assert str(info.value) == message
    assert not (tmp_path / "out").exists()


def test_textdisc_is_described(exported: Exported) -> None:
    """textdisc takes (1, 256) int32 ids and returns (1, 2) logits; labels, vocabulary and the generator's files."""
    disc = exported.manifest["models"]["textdisc"]
    for fmt in ("onnx", "tflite"):
        for precision in ("float32", "int8"):
            entry = disc["files"][fmt][precision]
            assert entry["inputs"] == [{"name": "ids", "dtype": "int32", "shape": [1, 256]}]
            assert [(t["name"], t["shape"]) for t in entry["outputs"]] == [("logits", [1, 2])]
    assert disc["kind"] == "text_discriminator"
    assert disc["labels"] == ["real", "generated"]
    assert disc["window"] == 256
    assert disc["vocabulary"][0] == "\ufffd"
    assert disc["torch"]["accuracy"] >= 0.9


def test_small_step_is_its_own_model(exported: Exported) -> None:
    """text_small_step is listed beside text_step, with its own files and greedy-text check."""
    small = exported.manifest["models"]["text_small_step"]
    assert small["kind"] == "char_lstm_step"
    assert small["files"]["tflite"]["float32"]["file"] == "text_small_step.tflite"
    assert small["files"]["onnx"]["float32"]["parity"]["greedy_matches"] is True


def test_text_step_int8_keeps_its_head_float(exported: Exported) -> None:
    """The int8 text steps quantize the recurrent weights but leave the head that gives the logits float in both
    formats (int8 there flipped 1.2-1.4% of the long run's next characters)."""
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    step = exported.manifest["models"]["text_step"]["files"]
    graph = onnx.load(str(exported.out / step["onnx"]["int8"]["file"])).graph
    names = {i.name for i in graph.initializer}
    assert "head_weight" in names and not any(n.startswith("head_weight_quantized") for n in names)
    assert any(n.endswith("_quantized") for n in names)  # the recurrent weights are int8
    assert "products that give the outputs float" in step["onnx"]["int8"]["method"]
    assert "ops that give the outputs float" in step["tflite"]["int8"]["method"]
    entry = exported.manifest["models"]["text_step"]
    head_shape = sorted([len(entry["vocabulary"]), entry["hidden_size"]])
    interpreter = Interpreter(model_path=str(exported.out / step["tflite"]["int8"]["file"]))
    tensors = interpreter.get_tensor_details()
    heads = [t for t in tensors if sorted(t["shape"].tolist()) == head_shape]
    assert heads and all(t["dtype"] == np.float32 for t in heads)
    assert any(t["dtype"] == np.int8 for t in tensors)  # the recurrent weights are int8


def test_a_spec_can_ask_for_dynamic_int8_despite_calibration(exported: Exported, tmp_path: Path) -> None:
    """``dynamic_int8`` (the text discriminator with its LSTM scorer) quantizes the weights only, keeping float
    activations and a float input, even though the spec brings calibration inputs; the files still agree with
    torch."""
    from export.convert import onnx_int8, tflite_int8
    from export.parity import INT8_AGREEMENT, label_figures, run_all
    from export.runtime import OnnxRunner, TfliteRunner
    from export.specs import digits_spec

    spec = dataclasses.replace(digits_spec(DIGITS_CHECKPOINT), dynamic_int8=True)
    assert spec.calibration
    out = tmp_path / "digits.dynamic.tflite"
    assert "dynamic" in tflite_int8(spec, exported.out / "digits.tflite", out)
    runner = TfliteRunner(out, (spec.input_names, spec.output_names))
    assert label_figures(spec, run_all(runner, spec.real_inputs, "tflite"))["top_label_agreement"] >= INT8_AGREEMENT
    static = exported.manifest["models"]["digits"]["files"]["tflite"]["int8"]
    assert static["inputs"][0]["dtype"] == "int8"  # the static file takes int8 images; the dynamic one float
    assert runner.inputs[0].dtype == "float32" and runner.inputs[0].scale is None
    onnx_out = tmp_path / "digits.dynamic.onnx"
    assert "dynamic" in onnx_int8(spec, exported.out / "digits.onnx", onnx_out)
    onnx_runner = OnnxRunner(onnx_out)
    assert label_figures(spec, run_all(onnx_runner, spec.real_inputs, "onnx"))["top_label_agreement"] >= INT8_AGREEMENT


def test_exporting_one_model_keeps_the_others_listed(
    tmp_path: Path, tiny_text_checkpoint: Path, tiny_corpus: Path
) -> None:
    """A second export into the same folder adds its model to the manifest and keeps the earlier one while its
    files are unchanged; once one of them changes, the next export leaves that model out."""
    first = ExportOptions(out=tmp_path, models=("digits",), formats=("onnx",), digits_checkpoint=DIGITS_CHECKPOINT)
    digits = export_models(first)["models"]["digits"]
    second = ExportOptions(
        out=tmp_path,
        models=("text_small_step",),
        formats=("onnx",),
        small_text_checkpoint=tiny_text_checkpoint,
        text=load_corpus(tiny_corpus).valid_text,
    )
    both = export_models(second)
    assert set(both["models"]) == {"digits", "text_small_step"} and both["models"]["digits"] == digits
    assert json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8")) == both
    (tmp_path / "digits.onnx").write_bytes(b"not the exported file")
    assert set(export_models(second)["models"]) == {"text_small_step"}


def test_a_missing_checkpoint_is_found_before_any_conversion(tmp_path: Path) -> None:
    """A later model's missing checkpoint stops the export before the first model is converted, naming its flag."""
    missing = tmp_path / "none.safetensors"
    options = ExportOptions(
        out=tmp_path / "out", models=("digits", "kws"), digits_checkpoint=DIGITS_CHECKPOINT, kws_checkpoint=missing
    )
    with pytest.raises(CheckpointError) as info:
        export_models(options)
    assert str(info.value) == f"checkpoint {missing} does not exist (--kws-checkpoint)"
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_a_file_is_named(tmp_path: Path) -> None:
    """An out that is a file is an InvalidArgument naming it, not an OSError from making the folder."""
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(InvalidArgument) as info:
        export_models(ExportOptions(out=tmp_path / "file", models=("digits",), digits_checkpoint=DIGITS_CHECKPOINT))
    assert str(info.value) == f"out: {tmp_path / 'file'} is a file; name a folder for the files and manifest.json"


@pytest.fixture(scope="module")
def other_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits CNN other than the committed one (its trainer's tiny preset: seconds), whose files differ."""
    from server.vision.options import DigitsTrainOptions
    from server.vision.train import train_digits

    out = tmp_path_factory.mktemp("other_digits") / "digits.safetensors"
    train_digits(DigitsTrainOptions.dry_run(out=out))
    return out


def _digits_onnx(out: Path, checkpoint: Path, *more: str, **options: object) -> ExportOptions:
    return ExportOptions(out=out, models=("digits", *more), formats=("onnx",), digits_checkpoint=checkpoint, **options)  # type: ignore[arg-type]


def test_a_failed_export_leaves_the_folder_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that fails its check leaves the earlier files untouched and no trace of its own (the new file was
    written over the earlier one in place, while the manifest still listed the earlier one's sha256)."""
    export_models(_digits_onnx(tmp_path, DIGITS_CHECKPOINT))
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}

    def failing(*args: object) -> dict[str, object]:
        raise ExportError("digits.onnx: differs from torch")

    monkeypatch.setattr(pipeline, "_describe", failing)
    with pytest.raises(ExportError):
        export_models(_digits_onnx(tmp_path, DIGITS_CHECKPOINT))
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()} == before


def test_an_interrupted_export_lists_the_models_it_finished(
    tmp_path: Path, other_digits: Path, tiny_text_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C at the second model of a re-export leaves the first one's new files listed with their own sha256 (the
    manifest went on listing the earlier files' beside the new ones: the edge refused them)."""
    export_models(_digits_onnx(tmp_path, DIGITS_CHECKPOINT))
    build = pipeline.build_spec

    def interrupted(name: str, opts: ExportOptions) -> object:
        if name == "text_small_step":
            raise KeyboardInterrupt
        return build(name, opts)

    monkeypatch.setattr(pipeline, "build_spec", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_models(
            _digits_onnx(tmp_path, other_digits, "text_small_step", small_text_checkpoint=tiny_text_checkpoint)
        )
    digits = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))["models"]["digits"]
    assert digits["checkpoint"]["sha256"] == file_sha256(other_digits)
    assert digits["files"]["onnx"]["float32"]["sha256"] == file_sha256(tmp_path / "digits.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.onnx", "manifest.json"]


def test_the_staging_folder_of_a_killed_export_is_removed_by_the_next(tmp_path: Path) -> None:
    """An export killed before it could remove its staging folder (SIGKILL, a power cut) left ``.export-*`` with
    half-written files in the folder the edge reads; the next export removes it. A folder a running export holds
    (here: this test's lock on it) is left alone."""
    abandoned = tmp_path / ".export-killed"
    abandoned.mkdir()
    (abandoned / "digits.onnx").write_bytes(b"half a file")
    running = tmp_path / ".export-running"
    running.mkdir()
    fd = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        export_models(_digits_onnx(tmp_path, DIGITS_CHECKPOINT))
        assert sorted(p.name for p in tmp_path.iterdir()) == [".export-running", "digits.onnx", "manifest.json"]
    finally:
        os.close(fd)
