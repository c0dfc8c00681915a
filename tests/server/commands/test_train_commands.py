"""`antiphon train FAMILY`: flags generated from torch-free options, the tiny preset (--dry-run), and the committed
checkpoints' records and cards, which the trainers' card writers give again."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from server.audio.options import AudioTrainOptions, WaveNetSizes
from server.checkpoint import read_meta
from server.cli import build_parser, main
from server.kws.data import KWSDataConfig
from server.kws.options import KWSModelOptions, KWSTrainOptions
from server.options import TrainOptions, from_flags
from server.paths import REPO_MODELS, default_checkpoint
from server.provenance import Provenance
from server.text.options import CharLSTMSizes, TextTrainOptions
from server.textdisc.options import TextDiscTrainOptions
from server.vision.options import DigitsTrainOptions

TORCH_FREE = (
    "server.options",
    "server.provenance",
    "server.model_card",
    "server.vision.options",
    "server.kws.options",
    "server.textdisc.options",
    "server.audio.options",
    "server.text.options",
    "server.cli",
)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_options_and_flags_import_no_torch(module: str) -> None:
    """The options, the records, the cards and the whole parser load without torch."""
    code = f"import sys, {module}; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    if module == "server.cli":
        code += "; server.cli.build_parser()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def parsed(family: str, *flags: str) -> Any:
    return build_parser().parse_args(["train", family, *flags])


@pytest.mark.parametrize(
    ("family", "cls", "expected"),
    [
        ("digits", DigitsTrainOptions, DigitsTrainOptions()),
        ("kws", KWSTrainOptions, KWSTrainOptions(model={"channels": 88, "blocks": 4})),
        (
            "textdisc",
            TextDiscTrainOptions,
            TextDiscTrainOptions(
                text_checkpoint=default_checkpoint("text"),
                model={
                    "channels": 64,
                    "dilations": (1, 2, 4, 8, 16),
                    "ngram_orders": (),
                    "ngram_buckets": 16381,
                    "characters": True,
                    "rank_width": 0.01,
                    "band_width": 0.05,
                },
            ),
        ),
        ("audio", AudioTrainOptions, AudioTrainOptions(model=dataclasses.asdict(WaveNetSizes()))),
        (
            "text",
            TextTrainOptions,
            TextTrainOptions(
                model={"hidden_size": 512, "num_layers": 2, "embed_dim": 64, "dropout": 0.1, "embed_dropout": 0.0}
            ),
        ),
    ],
)
def test_no_flags_give_the_default_options(family: str, cls: type[TrainOptions], expected: TrainOptions) -> None:
    """Without flags a command trains with its options' defaults, every model flag's default in the model dict."""
    assert from_flags(cls, parsed(family)) == expected


def test_flags_given_win_over_the_dry_run_preset() -> None:
    """--dry-run is the preset the tests train with; a flag given, nested ones too, wins over it."""
    opts = from_flags(KWSTrainOptions, parsed("kws", "--dry-run", "--steps", "7", "--per-number", "5", "--blocks", "3"))
    assert opts == KWSTrainOptions.dry_run(
        steps=7,
        data=KWSDataConfig(per_number=5, unknown_words=8, heldout_per_label=2),
        model={"channels": 16, "blocks": 3},
    )
    assert from_flags(DigitsTrainOptions, parsed("digits", "--dry-run")) == DigitsTrainOptions(steps=200)
    epochs = from_flags(DigitsTrainOptions, parsed("digits", "--dry-run", "--epochs", "2"))  # not the preset's steps
    assert (epochs.epochs, epochs.steps) == (2, None)
    audio = from_flags(AudioTrainOptions, parsed("audio", "--dry-run", "--no-progress", "--layers", "6"))
    assert audio.model == {**dataclasses.asdict(WaveNetSizes()), **AudioTrainOptions.DRY_RUN["model"], "layers": 6}
    assert audio.steps == 30 and not audio.progress


def test_model_flags_default_to_the_model_configs() -> None:
    """The flags that name a model config's fields (declared torch-free) keep the config's defaults."""
    from server.audio.model import SIZES, WaveNetConfig
    from server.kws.model import KWSConfig
    from server.text.model import CharLSTMConfig
    from server.textdisc.model import BAND_WIDTH, RANK_WIDTH

    sizes = dataclasses.asdict(WaveNetSizes())
    assert list(sizes) == list(SIZES)
    assert sizes == {name: getattr(WaveNetConfig(), name) for name in SIZES}
    kws = KWSConfig()
    assert dataclasses.asdict(KWSModelOptions()) == {
        "channels": kws.channels,
        "blocks": kws.blocks,
        "peak_db": kws.peak_db,
    }
    model = from_flags(TextDiscTrainOptions, parsed("textdisc")).model or {}
    assert (model["band_width"], model["rank_width"]) == (BAND_WIDTH, RANK_WIDTH)
    text = dataclasses.asdict(CharLSTMSizes())
    assert set(text) == {f.name for f in dataclasses.fields(CharLSTMConfig)} - {"vocab_size"}
    config = CharLSTMConfig(vocab_size=1)  # its dropout is 0.0; the command's 0.1
    assert text == {**{name: getattr(config, name) for name in text}, "dropout": 0.1}


def test_dry_run_trains_and_writes_the_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`antiphon train digits --dry-run` trains the tiny preset end to end: checkpoint, card, the figure printed."""
    out = tmp_path / "digits.safetensors"
    assert main(["train", "digits", "--dry-run", "--out", str(out)]) == 0
    accuracy = read_meta(out)["metrics"]["test_accuracy"]
    assert f"test accuracy {accuracy:.2%} -> {out}" in capsys.readouterr().out
    assert f"antiphon train digits --steps 200 --seed 0 --out {out}" in out.with_suffix(".md").read_text()


def committed_card(name: str, meta: dict[str, Any]) -> Any:
    if name.startswith("digits/"):
        from server.vision.train import digits_card

        return digits_card(meta, meta["config"])
    if name.startswith("kws/"):
        from server.kws.model import KWSConfig
        from server.kws.model_card import kws_card

        return kws_card(meta, KWSConfig(**meta["config"]))
    if name.startswith("audio/"):
        from server.audio.train import audio_card

        return audio_card(meta, meta["config"])
    if name.startswith("text/"):
        from server.text.train import text_card

        return text_card(meta, meta["config"])
    from server.textdisc.model_card import textdisc_card

    return textdisc_card(meta, meta["config"])


@pytest.mark.parametrize(
    "name",
    [
        "digits/digits_cnn",
        "kws/kws_dscnn",
        "kws/kws_dscnn_wide",
        "audio/wavenet",
        "text/char_lstm",
        "text/char_lstm_small",
        "textdisc/text_disc",
        "textdisc/text_disc_base",
    ],
)
def test_a_committed_card_is_written_again_from_its_checkpoint(name: str) -> None:
    """Each committed card is what its family's card writer makes of the checkpoint's metadata, and the checkpoint's
    training record reads back as a Provenance and writes the same JSON."""
    checkpoint = REPO_MODELS / f"{name}.safetensors"
    meta = read_meta(checkpoint)
    card = committed_card(name, meta).render(Path("models") / f"{name}.safetensors")
    assert card == checkpoint.with_suffix(".md").read_text(encoding="utf-8")
    seen = {"audio": "samples_seen", "text": "chars_seen"}.get(name.split("/")[0], "seen")
    assert Provenance.from_dict(meta["training"], seen).to_dict() == meta["training"]
