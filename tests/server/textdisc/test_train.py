"""Text discriminator training: accuracy of a tiny real model, the recorded data, the card, option checks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

from server.checkpoint import read_meta
from server.errors import InvalidArgument
from server.textdisc.options import TextDiscTrainOptions
from server.textdisc.samples import SampleSet
from server.textdisc.train import train_textdisc
from tests.conftest import textdisc_cache, train_tiny_textdisc

if TYPE_CHECKING:
    from export.specs import ExportSpec

SOURCES = {"T=0.8", "T=0.8 top-p 0.9", "T=1.1", "T=1.1 top-p 0.9"}


def test_tiny_discriminator_separates_real_and_generated(tiny_textdisc_checkpoint: Path) -> None:
    """150 steps tell the tiny corpus from the tiny LSTM's samples at unseen temperatures and seeds."""
    metrics = read_meta(tiny_textdisc_checkpoint)["metrics"]
    assert metrics["test_accuracy"] >= 0.9
    assert set(metrics["test_by_source"]) == {"real", *SOURCES}
    assert np.asarray(metrics["test_confusion"]).sum(axis=1).tolist() == [16, 16]  # 2 x 2 x 2 streams x 2 windows


def test_checkpoint_names_generator_and_sample_sets(tiny_textdisc_checkpoint: Path, tiny_text_checkpoint: Path) -> None:
    """The checkpoint records the generator's hash and both sample sets."""
    from server.checkpoint import file_sha256

    meta = read_meta(tiny_textdisc_checkpoint)
    assert meta["generator"]["sha256"] == file_sha256(tiny_text_checkpoint)
    assert meta["data"]["test_samples"]["temperatures"] == [0.8, 1.1]
    assert meta["data"]["test_samples"]["variants"] == [[0, 1.0], [0, 0.9]]
    assert meta["data"]["train_samples"]["prompt"] == 32
    assert meta["labels"] == ["real", "generated"]
    assert meta["window"] == 256


def test_model_card_is_written_beside_the_checkpoint(tiny_textdisc_checkpoint: Path) -> None:
    """The card names the command, the temperatures and the accuracy."""
    card = tiny_textdisc_checkpoint.with_suffix(".md").read_text(encoding="utf-8")
    accuracy = read_meta(tiny_textdisc_checkpoint)["metrics"]["test_accuracy"]
    assert "antiphon train textdisc --steps 150 --seed 0" in card and "--channels 32 --dilations 1,2,4" in card
    assert "temperatures 0.8, 1.1, each plain, top-p 0.9" in card and "32-character prompt of held-out text" in card
    assert "| T=1.1 top-p 0.9 |" in card
    assert f"**{accuracy:.2%}**" in card


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 0}, "steps: must be at least 1, got 0"),
        ({"batch_size": 1}, "batch_size: must be at least 2, got 1"),
        ({"lr": 2.0}, "lr: must be in (0, 1), got 2.0"),
        (
            {"test_samples": SampleSet((1.0,), 2, 600, 5)},
            "test_samples: test temperatures must differ from the training ones",
        ),
        ({"test_samples": SampleSet((0.7,), 2, 600, 1)}, "test_samples: test seeds must differ from the training ones"),
        ({"test_samples": SampleSet((), 2, 600, 5)}, "temperatures: give temperatures in (0, 10], got ()"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, options: dict[str, object], message: str) -> None:
    """Bad options raise InvalidArgument naming the option before any work."""
    opts = TextDiscTrainOptions(text_checkpoint=tmp_path / "none.safetensors", out=tmp_path / "d.safetensors")
    for key, value in options.items():
        setattr(opts, key, value)
    with pytest.raises(InvalidArgument) as info:
        train_textdisc(opts)
    assert str(info.value) == message


def test_eval_rebuilds_the_test_windows(
    tiny_textdisc_checkpoint: Path,
    tiny_text_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`antiphon eval textdisc --json` scores the recorded test set and gives the card's accuracy."""
    import json

    from server.cli import main

    monkeypatch.setenv("ANTIPHON_CACHE", str(tiny_textdisc_checkpoint.parent / "cache"))  # its samples
    args = ["eval", "textdisc", "--checkpoint", str(tiny_textdisc_checkpoint)]
    assert main([*args, "--text-checkpoint", str(tiny_text_checkpoint), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["count"] == 32
    assert result["accuracy"] == pytest.approx(
        read_meta(tiny_textdisc_checkpoint)["metrics"]["test_accuracy"], abs=1e-4
    )
    assert set(result["by_source"]) == {"real", *SOURCES}


def test_eval_judges_files(
    tiny_textdisc_checkpoint: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With files, each file's windows are judged; a file shorter than a window is a named bad argument."""
    import json

    from server.cli import main

    assert main(["eval", "textdisc", str(tiny_corpus), "--checkpoint", str(tiny_textdisc_checkpoint), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out.strip().splitlines()[-1])[str(tiny_corpus)]
    assert verdict["windows"] > 10 and verdict["generated_share"] < 0.2
    short = tmp_path / "short.txt"
    short.write_text("Kent.\nHo!\n", encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["eval", "textdisc", str(short), "--checkpoint", str(tiny_textdisc_checkpoint)])
    assert info.value.code == 2
    assert "FILE: " in capsys.readouterr().err


def test_train_streams_is_checked_and_matches_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    """`--train-streams` out of range exits 2 naming it; the CLI's default is the committed sample set's."""
    from server.cli import build_parser, main
    from server.options import from_flags
    from server.textdisc.data import TRAIN_SAMPLES

    args = build_parser().parse_args(["train", "textdisc"])
    assert from_flags(TextDiscTrainOptions, args).train_samples == TRAIN_SAMPLES
    with pytest.raises(SystemExit) as info:
        main(["train", "textdisc", "--train-streams", "0", "--out", "unused.safetensors"])
    assert info.value.code == 2
    assert "--train-streams: must be in 1..10000, got 0" in capsys.readouterr().err


def test_the_card_reports_the_memorisation_check(tiny_textdisc_checkpoint: Path) -> None:
    """Held-back training streams are scored beside trained ones, in the metrics and on the card."""
    metrics = read_meta(tiny_textdisc_checkpoint)["metrics"]
    assert 0 <= metrics["unseen_streams_caught"] <= 1 and 0 <= metrics["trained_streams_caught"] <= 1
    card = tiny_textdisc_checkpoint.with_suffix(".md").read_text(encoding="utf-8")
    assert f"{metrics['unseen_streams_caught']:.2%}" in card


def test_bad_ngram_orders_exit_2_before_sampling(capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "textdisc", "--ngrams", "3,x", "--out", "unused.safetensors"])
    assert info.value.code == 2 and "ngrams: must be whole numbers or 'none', got 3,x" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["train", "textdisc", "--ngrams", "1", "--out", "unused.safetensors"])
    assert info.value.code == 2 and "ngrams: give distinct orders in 2..8, got (1,)" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_scored_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_text_checkpoint: Path, tiny_corpus: Path
) -> Path:
    """A real text discriminator that reads the tiny LSTM's view of each window (the tiny LSTM as its scorer), the
    real class from the first half of the held-out text; 150 steps (seconds)."""
    return train_tiny_textdisc(
        tmp_path_factory.mktemp("textdisc_scored") / "tiny_scored.safetensors",
        tiny_text_checkpoint,
        tiny_corpus,
        model={"embed_dim": 16, "channels": 32, "dilations": (1, 2, 4)},
        scorer_checkpoint=tiny_text_checkpoint,
        real_train_share=0.5,
    )


def test_the_real_class_trains_on_held_out_text_the_scorer_never_read(
    tiny_scored_checkpoint: Path, tiny_corpus: Path
) -> None:
    """With a scorer, the real windows that train come from the first half of the held-out text and the test's
    from the rest: the checkpoint records the share and the card says so."""
    from server.data.shakespeare import load_corpus
    from server.textdisc.data import split_held_out

    tiny_textdisc_checkpoint = tiny_scored_checkpoint
    meta = read_meta(tiny_textdisc_checkpoint)
    assert meta["scorer"]["file"] == "tiny.safetensors" and meta["config"]["scorer"]["hidden_size"] == 32
    assert meta["data"]["real_train_share"] == 0.5
    train, _ = split_held_out(load_corpus(tiny_corpus).valid_text, 0.5)
    assert meta["data"]["real_train_characters"] == len(train) and train.endswith("\n")
    card = tiny_textdisc_checkpoint.with_suffix(".md").read_text(encoding="utf-8")
    assert "--scorer tiny.safetensors --pool-windows 0 --real-train-share 0.5" in card
    assert "the first 50.0% of the held-out text" in card and "surprise, entropy" in card


def test_split_held_out_cuts_at_a_line_start() -> None:
    from server.textdisc.data import split_held_out

    text = "".join(f"line {i:03d} of the held-out text\n" for i in range(100))
    train, test = split_held_out(text, 0.3)
    assert train + test == text and test.startswith("line 031") and train.endswith("\n")
    assert split_held_out(text, 0.0) == ("", text)
    for share, message in [(1.0, "must be in [0, 1), got 1.0"), (0.001, "0.001 leaves less than 256 characters")]:
        with pytest.raises(InvalidArgument) as info:
            split_held_out(text, share)
        assert str(info.value).startswith(f"real_train_share: {message}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--real-train-share", "1.5"], "--real-train-share: must be in [0, 1), got 1.5"),
        (["--scorer", "no-such.safetensors"], "--scorer: no such checkpoint: no-such.safetensors"),
        (["--pool-windows", "-1"], "--pool-windows: must be 0 (all) or more, got -1"),
        (["--real-train-plays", "1"], "--real-train-plays: must be in [0, 1), got 1.0"),
        (["--no-characters"], "characters: a model without characters needs a scorer"),
    ],
)
def test_bad_scorer_options_exit_2_before_sampling(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "textdisc", *args, "--out", "unused.safetensors"])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_the_scored_discriminator_exports_to_onnx_from_ids(
    tiny_scored_checkpoint: Path, tiny_text_checkpoint: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    """The exported graph takes the ids and computes the scorer's features itself: a float ONNX file matches torch
    to 1e-4 on the test windows."""
    spec = export_and_compare(tiny_scored_checkpoint, tiny_text_checkpoint, tiny_corpus, tmp_path)
    assert spec.float_scope == "scorer|reference|scorer_view|features|scorer_stats" and spec.float_output


def export_and_compare(checkpoint: Path, text_checkpoint: Path, corpus: Path, tmp_path: Path) -> ExportSpec:
    """Export a tiny discriminator to float ONNX and check it against torch to 1e-4 on its test windows and on
    random ids; returns its spec."""
    from export.convert import to_onnx
    from export.parity import max_abs_difference
    from export.runtime import open_runner
    from export.specs import textdisc_spec
    from server.data.shakespeare import load_corpus

    with textdisc_cache(checkpoint):
        spec = textdisc_spec(checkpoint, text_checkpoint, load_corpus(corpus).valid_text)
    to_onnx(spec, tmp_path / "textdisc.onnx")
    runner = open_runner("onnx", tmp_path / "textdisc.onnx", (spec.input_names, spec.output_names))
    assert max_abs_difference(spec, runner, spec.real_inputs) <= 1e-4
    assert max_abs_difference(spec, runner, spec.random_inputs) <= 1e-4
    return spec


def test_a_scorer_model_asks_for_dynamic_int8_tflite(
    tiny_stacked_checkpoint: Path, tiny_textdisc_checkpoint: Path, tiny_text_checkpoint: Path, tiny_corpus: Path
) -> None:
    """With a scorer (an LSTM over the window) the TFLite int8 file keeps float activations: the static recipe
    quantized the LSTM's weights even in the float scope and flipped 9% of the committed model's windows. Such a
    model meets the export's default int8 agreement; the base (no LSTM) keeps static int8 and its own threshold.
    (Converting even the tiny model to TFLite takes minutes: the recipe itself is tested on the digits CNN.)"""
    from export.specs import textdisc_spec
    from server.data.shakespeare import load_corpus

    text = load_corpus(tiny_corpus).valid_text
    with textdisc_cache(tiny_stacked_checkpoint):
        stacked = textdisc_spec(tiny_stacked_checkpoint, tiny_text_checkpoint, text)
    with textdisc_cache(tiny_textdisc_checkpoint):
        base = textdisc_spec(tiny_textdisc_checkpoint, tiny_text_checkpoint, text)
    assert stacked.dynamic_int8 and stacked.calibration and stacked.int8_agreement is None
    assert not base.dynamic_int8 and base.calibration and base.int8_agreement == 0.975


@pytest.fixture(scope="module")
def tiny_reference_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    """A weaker LSTM than the tiny one (one layer of 16), trained for a second on the same corpus."""
    from server.text.options import TextTrainOptions
    from server.text.train import TextTrainer

    out = tmp_path_factory.mktemp("reference") / "weaker.safetensors"
    model = {"hidden_size": 16, "num_layers": 1, "embed_dim": 8}
    TextTrainer(TextTrainOptions.dry_run(corpus=tiny_corpus, out=out, steps=30, model=model)).train()
    return out


@pytest.fixture(scope="module")
def tiny_stacked_checkpoint(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_textdisc_checkpoint: Path,
    tiny_text_checkpoint: Path,
    tiny_reference_checkpoint: Path,
    tiny_corpus: Path,
) -> Path:
    """The tiny discriminator (characters and lexicon) frozen under a head that also reads the tiny LSTM's view of
    the window, pooled, and how a weaker LSTM's view differs; the real class from the first half of the held-out
    text."""
    return train_tiny_textdisc(
        tmp_path_factory.mktemp("textdisc_stacked") / "tiny_stacked.safetensors",
        tiny_text_checkpoint,
        tiny_corpus,
        scorer_checkpoint=tiny_text_checkpoint,
        real_train_share=0.5,
        base_checkpoint=tiny_textdisc_checkpoint,
        reference_checkpoint=tiny_reference_checkpoint,
    )


def test_a_base_stays_frozen_and_only_the_head_learns(
    tiny_stacked_checkpoint: Path, tiny_textdisc_checkpoint: Path, tiny_reference_checkpoint: Path
) -> None:
    from server.text.checkpoint import load_text_model
    from server.textdisc.checkpoint import load_textdisc_model
    from server.textdisc.model import (
        BAND_WIDTH,
        LEXICON_STATISTICS,
        POSITION_STATISTICS,
        RANK_WIDTH,
        REFERENCE_STATISTICS,
        SCORER_FEATURES,
        WARM_UP,
        WINDOW_STATISTICS,
    )

    stacked, _, meta = load_textdisc_model(tiny_stacked_checkpoint)
    base, _, _ = load_textdisc_model(tiny_textdisc_checkpoint)
    assert stacked.config.scorer_pooled and stacked.config.lexicon_documents == base.config.lexicon_documents
    base_state = base.state_dict()
    for name, value in stacked.state_dict().items():
        if name in base_state and not name.startswith("head."):
            assert torch.equal(value, base_state[name]), name
    width = base.head.in_features
    # The base has a lexicon: the window statistics, the lexicon's, those by position in a word (soft-edged) and
    # the reference's difference.
    statistics = len(SCORER_FEATURES) * len(WINDOW_STATISTICS) + len(LEXICON_STATISTICS) + len(POSITION_STATISTICS)
    assert stacked.head.in_features == width + statistics + len(REFERENCE_STATISTICS)
    reference, _, _ = load_text_model(tiny_reference_checkpoint)
    assert stacked.reference is not None and not any(p.requires_grad for p in stacked.reference.parameters())
    for name, value in reference.state_dict().items():
        assert torch.equal(stacked.reference.state_dict()[name], value), name
    assert meta["reference"]["file"] == tiny_reference_checkpoint.name
    assert stacked.config.position_statistics and stacked.config.band_width == BAND_WIDTH
    assert stacked.config.rank_width == RANK_WIDTH  # soft comparisons throughout: export/specs.hard_comparisons
    assert stacked.config.scorer_skip == WARM_UP
    assert stacked.head.weight[:, width:].abs().sum() > 0  # the statistics' weights trained
    assert not torch.equal(stacked.scorer_stats.scale, torch.ones_like(stacked.scorer_stats.scale))
    assert meta["base"]["file"] == tiny_textdisc_checkpoint.name and meta["base"]["sha256"]
    card = tiny_stacked_checkpoint.with_suffix(".md").read_text(encoding="utf-8")
    assert f"--base {tiny_textdisc_checkpoint.name}" in card and "the frozen discriminator" in card
    assert f"--scorer-skip {WARM_UP}" in card and f"from character {WARM_UP} on" in card
    assert f"the frozen reference `{tiny_reference_checkpoint.name}` (a 1 x 16 LSTM" in card


def test_the_stacked_discriminator_exports_to_onnx_from_ids(
    tiny_stacked_checkpoint: Path, tiny_text_checkpoint: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    """Soft band edges and the reference too: the float file meets the export's default tolerance, 1e-4."""
    spec = export_and_compare(tiny_stacked_checkpoint, tiny_text_checkpoint, tiny_corpus, tmp_path)
    assert spec.float_tolerance is None


def test_a_base_needs_a_scorer(capsys: pytest.CaptureFixture[str]) -> None:
    from server.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "textdisc", "--base", "some.safetensors", "--out", "unused.safetensors"])
    assert info.value.code == 2 and "base: a base model is the frozen part beside a scorer" in capsys.readouterr().err


def test_a_reference_needs_a_base(capsys: pytest.CaptureFixture[str], tiny_text_checkpoint: Path) -> None:
    from server.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "textdisc", "--scorer", str(tiny_text_checkpoint), "--reference", str(tiny_text_checkpoint)])
    assert info.value.code == 2 and "reference: a reference model reads beside the scorer" in capsys.readouterr().err
