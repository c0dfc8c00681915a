"""The keyword spotter exported: raw PCM in, float files at torch's numbers, int8 files small and in agreement."""

from __future__ import annotations

import numpy as np
import pytest

from export.parity import max_abs_difference, top_labels
from export.runtime import open_runner
from export.specs import kws_spec
from server.kws.data import LABELS, KWSDataConfig

from .conftest import KWS_CHECKPOINT, Exported

FORMATS = ["onnx", "tflite"]
TFLITE_INT8_LIMIT = 250_000  # bytes: the edge's int8 budget (docs/discriminators.md, "Model")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_graph_takes_raw_pcm(exported_kws: Exported, fmt: str, precision: str) -> None:
    """Every file takes (1, 16000) float32 audio (the front end is inside) and returns (1, 12) logits."""
    entry = exported_kws.manifest["models"]["kws"]
    files = entry["files"][fmt][precision]
    assert files["inputs"] == [{"name": "audio", "dtype": "float32", "shape": [1, 16000]}]
    assert [(t["name"], t["shape"]) for t in files["outputs"]] == [("logits", [1, 12])]
    assert entry["labels"] == list(LABELS)
    assert entry["sample_rate"] == 16_000


def test_int8_tflite_is_at_most_250_kb(exported_kws: Exported) -> None:
    """The int8 TFLite file (int8 weights everywhere, float front end) fits the edge budget."""
    assert (exported_kws.out / "kws.int8.tflite").stat().st_size <= TFLITE_INT8_LIMIT


def test_int8_tflite_inner_tensors_have_short_names(exported_kws: Exported) -> None:
    """The int8 file's inner tensors are named by index (the converter's module paths cost a quarter of the file);
    the signature keeps the audio and logits names."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(exported_kws.out / "kws.int8.tflite"))
    inner = [t["name"] for t in interpreter.get_tensor_details()]
    assert inner and max(len(name) for name in inner) <= 48
    signature = interpreter.get_signature_list()["serving_default"]
    assert signature == {"inputs": ["audio"], "outputs": ["logits"]}


@pytest.mark.parametrize("fmt", FORMATS)
def test_float_files_match_torch_on_fresh_audio(exported_kws: Exported, fmt: str) -> None:
    """Float files match torch to 1e-4 on random audio of another seed (quiet to full scale) and on held-out clips."""
    spec = kws_spec(
        KWS_CHECKPOINT,
        seed=7,
        data=KWSDataConfig(per_number=10, unknown_words=40, heldout_per_label=3),
        test_per_label=0,
    )
    runner = open_runner(fmt, exported_kws.out / f"kws.{fmt}", (spec.input_names, spec.output_names))
    assert max_abs_difference(spec, runner, spec.random_inputs) <= 1e-4
    assert max_abs_difference(spec, runner, spec.real_inputs) <= 1e-4


@pytest.mark.parametrize("fmt", FORMATS)
def test_int8_files_agree_with_torch(exported_kws: Exported, fmt: str) -> None:
    """Int8 files give torch's label on at least 99% of the held-out clips checked at export (the export's default
    threshold), within a point of its accuracy."""
    entry = exported_kws.manifest["models"]["kws"]
    parity = entry["files"][fmt]["int8"]["parity"]
    assert parity["evaluated"] == 240
    assert entry["int8_top_label_agreement_needed"] == 0.99 and entry["float_max_abs_allowed"] == 1e-4
    assert parity["top_label_agreement"] >= 0.99
    torch_accuracy = exported_kws.manifest["models"]["kws"]["torch"]["accuracy"]
    assert parity["accuracy"] >= torch_accuracy - 0.01


def test_int8_tflite_agrees_on_noisy_audio(exported_kws: Exported) -> None:
    """On the same clips through the training augmentation the int8 TFLite file still gives torch's label."""
    from server.kws.data import heldout_clips, heldout_set

    spec = kws_spec(
        KWS_CHECKPOINT, data=KWSDataConfig(per_number=10, unknown_words=40, heldout_per_label=3), test_per_label=0
    )
    waves, _ = heldout_set(heldout_clips(KWSDataConfig(per_number=10, unknown_words=40, heldout_per_label=10)), True)
    runner = open_runner("tflite", exported_kws.out / "kws.int8.tflite", (spec.input_names, spec.output_names))
    got = top_labels([runner(x[None]) for x in waves])
    want = top_labels([spec.reference((x[None],)) for x in waves])
    assert np.mean(got == want) >= 0.95


def test_the_evaluation_set_is_the_test_set() -> None:
    """By default the export checks the keyword spotter on the test set (fresh clips of the held-out voices), and
    the manifest says so; with 0 clips of each label, on the checkpoint's held-out set."""
    from server.kws.data import unseen_clips, unseen_set

    data = KWSDataConfig(per_number=10, unknown_words=40, heldout_per_label=3)
    spec = kws_spec(KWS_CHECKPOINT, data=data, test_per_label=2)
    waves, labels = unseen_set(unseen_clips(data, 2), noisy=False, config=data)
    assert len(spec.real_inputs) == 24 and np.array_equal(spec.targets, labels)
    assert np.array_equal(spec.real_inputs[5][0][0], waves[5])
    assert spec.info["evaluation"].startswith("the test set: 24 clips of the held-out voices")
    held = kws_spec(KWS_CHECKPOINT, data=data, test_per_label=0)
    assert len(held.real_inputs) == 36 and held.info["evaluation"].startswith("the held-out set: 36 clips")


def test_the_manifest_names_the_development_speakers_it_learned_from(exported_kws: Exported) -> None:
    """The manifest records the recorded speakers the checkpoint trained on, so that benchmarks/kws_real.py leaves
    them out of an exported file's figures as it does for the checkpoint's."""
    from benchmarks.kws_real import trained_speakers
    from server.checkpoint import read_meta

    learned = read_meta(KWS_CHECKPOINT)["data"]["train_speakers"]
    assert learned  # the committed spotter learned from Allison
    assert exported_kws.manifest["models"]["kws"]["trained_speakers"] == learned
    assert trained_speakers(exported_kws.out / "kws.int8.tflite") == learned
    assert trained_speakers(KWS_CHECKPOINT) == learned
    assert trained_speakers(exported_kws.out / "not_listed.tflite") == []
