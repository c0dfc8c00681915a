"""Exported files against torch: float to 1e-4 on fresh inputs, int8 top labels, greedy text of the step."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from export.parity import greedy_ids, max_abs_difference, run_all, run_file, top_labels
from export.runtime import open_runner
from export.specs import digits_spec, text_step_spec, textdisc_spec

from .conftest import Exported

FORMATS = ["onnx", "tflite"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_float_digits_match_torch_on_fresh_inputs(exported: Exported, fmt: str) -> None:
    """Float digits files match torch to 1e-4 on random images of another seed and on the real test images."""
    assert exported.options.digits_checkpoint is not None
    spec = digits_spec(exported.options.digits_checkpoint, seed=7)
    runner = open_runner(fmt, exported.out / f"digits.{fmt}", (spec.input_names, spec.output_names))
    assert max_abs_difference(spec, runner, spec.random_inputs) <= 1e-4
    assert max_abs_difference(spec, runner, spec.real_inputs) <= 1e-4


@pytest.mark.parametrize("fmt", FORMATS)
def test_float_text_step_matches_torch_on_fresh_inputs(exported: Exported, fmt: str) -> None:
    """Float step files match torch to 1e-4 on random states of another seed and along real text."""
    assert exported.options.text_checkpoint is not None and exported.options.text is not None
    spec = text_step_spec(exported.options.text_checkpoint, exported.options.text[500:], seed=7)
    runner = open_runner(fmt, exported.out / f"text_step.{fmt}", (spec.input_names, spec.output_names))
    assert max_abs_difference(spec, runner, spec.random_inputs) <= 1e-4
    assert max_abs_difference(spec, runner, spec.real_inputs[:300]) <= 1e-4


@pytest.mark.parametrize("fmt", FORMATS)
def test_int8_digits_agree_with_torch_on_the_top_label(exported: Exported, fmt: str) -> None:
    """Int8 digits files give torch's top label on at least 99% of the test split, and keep its accuracy."""
    assert exported.options.digits_checkpoint is not None
    spec = digits_spec(exported.options.digits_checkpoint)
    runner = open_runner(fmt, exported.out / f"digits.int8.{fmt}", (spec.input_names, spec.output_names))
    got = top_labels([runner(*args) for args in spec.real_inputs])
    want = top_labels([spec.reference(args) for args in spec.real_inputs])
    assert np.mean(got == want) >= 0.99
    assert np.mean(got == spec.targets) >= np.mean(want == spec.targets) - 0.01


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_step_generates_torchs_greedy_text(exported: Exported, fmt: str) -> None:
    """The float step file, fed its own state, produces the same 200 greedy tokens as torch after a real prompt."""
    assert exported.options.text_checkpoint is not None and exported.options.text is not None
    spec = text_step_spec(exported.options.text_checkpoint, exported.options.text)
    runner = open_runner(fmt, exported.out / f"text_step.{fmt}", (spec.input_names, spec.output_names))
    prompt = [int(args[0][0]) for args in spec.real_inputs[:41]]
    layers, hidden = spec.info["layers"], spec.info["hidden_size"]
    want = greedy_ids(lambda *args: spec.reference(args), prompt, layers, hidden, tokens=200)
    got = greedy_ids(runner, prompt, layers, hidden, tokens=200)
    assert got == want
    assert len(set(want)) > 1  # a real continuation, not one repeated character


@pytest.mark.parametrize(
    ("model", "fmt"), [(m, f) for m in ("digits", "text_step", "text_small_step", "textdisc") for f in FORMATS]
)
def test_manifest_records_the_parity_measured_at_export(exported: Exported, model: str, fmt: str) -> None:
    """The manifest holds the figures the export measured, and they pass the tolerances."""
    files = exported.manifest["models"][model]["files"][fmt]
    assert max(files["float32"]["parity"]["max_abs_real"], files["float32"]["parity"]["max_abs_random"]) <= 1e-4
    assert files["float32"]["parity"]["top_label_agreement"] == 1.0
    assert files["int8"]["parity"]["top_label_agreement"] >= 0.99
    if model.startswith("text_") and model.endswith("_step"):
        assert files["float32"]["parity"]["greedy_matches"] is True
        assert files["float32"]["parity"]["greedy_tokens"] == 200


@pytest.mark.parametrize("fmt", FORMATS)
def test_textdisc_matches_torch_on_fresh_windows(exported: Exported, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Float textdisc files match torch to 1e-4 on random ids of another seed and on the real windows; int8 files
    give torch's label on every test window."""
    opts = exported.options
    assert opts.textdisc_checkpoint is not None and opts.text_checkpoint is not None and opts.text is not None
    monkeypatch.setenv("ANTIPHON_CACHE", str(opts.textdisc_checkpoint.parent / "cache"))
    spec = textdisc_spec(opts.textdisc_checkpoint, opts.text_checkpoint, opts.text, seed=7)
    runner = open_runner(fmt, exported.out / f"textdisc.{fmt}", (spec.input_names, spec.output_names))
    assert max_abs_difference(spec, runner, spec.random_inputs) <= 1e-4
    assert max_abs_difference(spec, runner, spec.real_inputs) <= 1e-4
    int8 = open_runner(fmt, exported.out / f"textdisc.int8.{fmt}", (spec.input_names, spec.output_names))
    got = top_labels([int8(*args) for args in spec.real_inputs])
    want = top_labels([spec.reference(args) for args in spec.real_inputs])
    assert np.mean(got == want) >= 0.99


def test_textdisc_reference_in_batches_is_torchs_one_at_a_time(
    exported: Exported, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Torch's outputs for the real windows, computed several a call (64 in the export), are each window's own
    output computed alone (to float rounding), in order and in its shape."""
    opts = exported.options
    assert opts.textdisc_checkpoint is not None and opts.text_checkpoint is not None and opts.text is not None
    monkeypatch.setenv("ANTIPHON_CACHE", str(opts.textdisc_checkpoint.parent / "cache"))
    spec = textdisc_spec(opts.textdisc_checkpoint, opts.text_checkpoint, opts.text)
    assert spec.reference_rows == 64
    spec = replace(spec, reference_rows=5)  # the tiny model's 32 windows: seven calls, the last one of 2
    assert len(spec.real_inputs) % 5
    alone = [spec.reference(args) for args in spec.real_inputs]
    batched = spec.real_outputs
    assert len(batched) == len(alone)
    for got, want in zip(batched, alone, strict=True):
        assert [a.shape for a in got] == [a.shape for a in want]
        np.testing.assert_allclose(got[0], want[0], rtol=0, atol=1e-5)


def test_checking_threads_each_open_their_runner_and_keep_the_order(exported: Exported) -> None:
    """A file checked by several threads: each thread opens its own runner (a TFLite interpreter serves one thread),
    and the outputs are the one-thread outputs, input by input, in order."""
    opts = exported.options
    assert opts.digits_checkpoint is not None
    spec = digits_spec(opts.digits_checkpoint)
    path = exported.out / "digits.tflite"
    order = (spec.input_names, spec.output_names)
    inputs = spec.real_inputs[:200]
    opened: list[object] = []

    def open_one() -> object:
        runner = open_runner("tflite", path, order)
        opened.append(runner)
        return runner

    alone = run_all(open_runner("tflite", path, order), inputs, "one")
    threaded = run_file(open_one, inputs, "three", workers=3)  # type: ignore[arg-type]
    assert len(opened) == 3 and len({id(r) for r in opened}) == 3
    assert len(threaded) == len(alone) == 200
    for got, want in zip(threaded, alone, strict=True):
        np.testing.assert_array_equal(got[0], want[0])
    assert len(run_file(open_one, inputs[:100], "few", workers=3)) == 100  # under 64 a thread: one runner
    assert len(opened) == 4
