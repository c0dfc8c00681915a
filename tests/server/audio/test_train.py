from pathlib import Path

import torch

from server.audio.checkpoint import load_audio_model
from server.audio.train import AudioTrainer, AudioTrainOptions
from server.checkpoint import read_meta
from tests.server.conftest import TINY_AUDIO_MODEL


def options(out: Path, steps: int, resume: bool = False) -> AudioTrainOptions:
    return AudioTrainOptions(
        out=out,
        steps=steps,
        resume=resume,
        device="cpu",
        precision="fp32",
        batch_size=2,
        segment=400,
        lr=1e-2,
        min_lr_ratio=1.0,  # a constant rate: the schedule does not depend on the budget of each run
        warmup_steps=1,
        eval_every=1000,
        progress=False,
        lines=4,
        number_renderings=1,
        heldout_lines=1,
        heldout_number_renderings=0,
        model=TINY_AUDIO_MODEL,
    )


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
