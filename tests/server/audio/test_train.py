from pathlib import Path

import pytest
import torch

from server.audio.checkpoint import load_audio_model
from server.audio.options import AudioTrainOptions
from server.audio.train import AudioTrainer
from server.checkpoint import read_meta
from server.cli import main
from server.errors import InvalidArgument


def options(out: Path, steps: int, resume: bool = False) -> AudioTrainOptions:
    """The tiny preset, smaller still, with a constant rate: the schedule does not depend on the budget of each run."""
    return AudioTrainOptions.dry_run(
        out=out, steps=steps, resume=resume, batch_size=2, segment=400, min_lr_ratio=1.0, warmup_steps=1, lines=4,
        heldout_lines=1,
    )  # fmt: skip


def test_checkpoint_card_and_metrics(tiny_audio_checkpoint: Path) -> None:
    """The trainer writes a loadable checkpoint with held-out bits/sample, and a model card beside it."""
    model, voices, meta = load_audio_model(tiny_audio_checkpoint)
    assert voices[0] == "unseen" and len(voices) == model.config.voices
    bits = meta["metrics"]["heldout_bits_per_sample"]
    assert 0 < bits < 8.5
    card = tiny_audio_checkpoint.with_suffix(".md").read_text()
    assert f"{bits:.4f} bits per sample" in card
    assert all(v.split("+")[0] in ("en-029", "en-gb-x-gbcwmd") for v in meta["data"]["heldout_voices"])


def test_resume_continues_exactly(tmp_path: Path) -> None:
    """Four steps in one run give the same weights as two steps, a stop, and two resumed steps."""
    whole = tmp_path / "whole" / "w.safetensors"
    AudioTrainer(options(whole, 4)).train()
    split = tmp_path / "split" / "w.safetensors"
    AudioTrainer(options(split, 2)).train()
    AudioTrainer(options(split, 4, resume=True)).train()
    a, _, _ = load_audio_model(whole)
    b, _, _ = load_audio_model(split)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert read_meta(split)["training"]["steps"] == 4


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"steps": None}, "steps"),
        ({"segment": 100}, "segment"),
        ({"input_noise": -1.0}, "input_noise"),
        ({"lr": 2.0}, "lr"),
    ],
)
def test_bad_options_name_the_field(tmp_path: Path, overrides: dict[str, object], field: str) -> None:
    """Out-of-range options raise InvalidArgument naming the option, before any data is rendered."""
    opts = options(tmp_path / "w.safetensors", 4)
    for name, value in overrides.items():
        setattr(opts, name, value)
    with pytest.raises(InvalidArgument) as info:
        opts.validate()
    assert info.value.field == field


def test_cli_without_a_budget_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`antiphon train audio` with neither --steps nor --minutes is a usage error (exit 2) naming steps."""
    with pytest.raises(SystemExit) as info:
        main(["train", "audio", "--out", "unused.safetensors"])
    assert info.value.code == 2
    assert "steps" in capsys.readouterr().err


def test_init_starts_from_a_checkpoints_weights(tmp_path: Path, tiny_audio_checkpoint: Path) -> None:
    """--init: the run starts from the checkpoint's weights and config (zero steps later they are its weights),
    and the card names where it started."""
    opts = options(tmp_path / "w.safetensors", 1)
    opts.init = tiny_audio_checkpoint
    opts.lr = 1e-12  # one step that barely moves: the weights must still be the checkpoint's
    opts.model = {}  # the checkpoint's config wins over these
    AudioTrainer(opts).train()
    start, _, start_meta = load_audio_model(tiny_audio_checkpoint)
    after, _, meta = load_audio_model(tmp_path / "w.safetensors")
    assert after.config == start.config
    for (name, x), (_, y) in zip(start.state_dict().items(), after.state_dict().items(), strict=True):
        assert torch.allclose(x, y, atol=1e-6), name
    assert meta["init"]["file"] == tiny_audio_checkpoint.name
    assert meta["init"]["steps"] == start_meta["training"]["steps"]
    card = (tmp_path / "w.md").read_text()
    assert f"--init {tiny_audio_checkpoint.name}" in card and "| started from |" in card
    AudioTrainer(options(tmp_path / "w.safetensors", 2, resume=True)).train()  # a resumed part keeps the start
    resumed = read_meta(tmp_path / "w.safetensors")
    assert resumed["training"]["steps"] == 2 and resumed["init"] == meta["init"]


def test_init_and_resume_do_not_mix(tmp_path: Path, tiny_audio_checkpoint: Path) -> None:
    opts = options(tmp_path / "w.safetensors", 1, resume=True)
    opts.init = tiny_audio_checkpoint
    with pytest.raises(InvalidArgument) as info:
        opts.validate()
    assert info.value.field == "init"
    opts.resume, opts.init = False, tmp_path / "missing.safetensors"
    with pytest.raises(InvalidArgument, match="init: no such checkpoint"):
        opts.validate()
