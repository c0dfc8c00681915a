"""Keyword-spotter training: the checkpoint rebuilds, records its data and figures, and writes its card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from server.checkpoint import read_meta
from server.cli import main
from server.data.speech import Rendering, render
from server.errors import InvalidArgument
from server.kws.checkpoint import load_kws_model
from server.kws.data import LABELS, ClipSampler, KWSDataConfig, training_clips
from server.kws.model import KWSConfig, KWSNet
from server.kws.model_card import kws_card
from server.kws.options import KWSTrainOptions
from server.kws.train import (
    _mine,
    centred,
    distillation_loss,
    spec_augment,
    teacher_log_probs,
    train_kws,
    unknown_errors,
)


def test_checkpoint_rebuilds_and_records_its_figures(tiny_kws_checkpoint: Path) -> None:
    """The model comes back from the file; the held-out figures and the data sizes are recorded."""
    model, meta = load_kws_model(tiny_kws_checkpoint)
    assert meta["labels"] == list(LABELS)
    assert meta["data"]["per_number"] == 3 and meta["data"]["heldout_clips"] == 24
    metrics = meta["metrics"]
    assert 0 <= metrics["heldout_clean_accuracy"] <= 1
    assert np.asarray(metrics["heldout_clean_confusion"]).sum(axis=1).tolist() == [2] * 12
    assert [c["step"] for c in meta["training"]["curve"]] == [20, 40]
    assert model(torch.zeros(1, 16_000)).shape == (1, 12)


def test_model_card_is_written_beside_the_checkpoint(tiny_kws_checkpoint: Path) -> None:
    """The card names the command, the labels and both held-out figures."""
    card = tiny_kws_checkpoint.with_suffix(".md").read_text(encoding="utf-8")
    metrics = read_meta(tiny_kws_checkpoint)["metrics"]
    assert "antiphon train kws --steps 40 --seed 0" in card
    assert "zero, one, two, three, four, five, six, seven, eight, nine, unknown, silence" in card
    assert f"**{metrics['heldout_clean_accuracy']:.2%}**" in card
    assert f"**{metrics['heldout_noisy_accuracy']:.2%}**" in card
    assert f"| test set, clean | **{metrics['test_clean_accuracy']:.2%}** (24 clips: 2 of each label" in card
    assert "--test-per-label 2 " in card and "Confusion on the test set, clean" in card


def test_eval_scores_the_test_set_as_training_did(
    tiny_kws_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`antiphon eval kws --test-per-label N` scores the same test set the trainer scored: the same confusion."""
    metrics = read_meta(tiny_kws_checkpoint)["metrics"]
    assert np.asarray(metrics["test_clean_confusion"]).sum(axis=1).tolist() == [2] * 12
    code = main(["eval", "kws", "--test-per-label", "2", "--checkpoint", str(tiny_kws_checkpoint), "--json"])
    assert code == 0
    out = capsys.readouterr().out
    assert "on 24 test clips of the held-out espeak-ng voices" in out
    assert json.loads(out.strip().splitlines()[-1])["confusion"] == metrics["test_clean_confusion"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--test-per-label", "-1"], "--test-per-label: must be at least 0, got -1"),
        (["some.wav", "--test-per-label", "2"], "files: --noisy and --test-per-label score the espeak-ng voices"),
        (["some.wav", "--noisy"], "files: --noisy and --test-per-label score the espeak-ng voices"),
    ],
)
def test_eval_refuses_test_options_with_files(
    tiny_kws_checkpoint: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The test-set options and FILE arguments exclude each other; the error names the field (exit 2)."""
    with pytest.raises(SystemExit) as info:
        main(["eval", "kws", *argv, "--checkpoint", str(tiny_kws_checkpoint)])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_model_card_names_the_unknown_options(tiny_kws_checkpoint: Path, tmp_path: Path) -> None:
    """Hard negatives, the unknown share and the balanced loss are in the card's command and its text."""
    model, meta = load_kws_model(tiny_kws_checkpoint)
    meta["data"] = {**meta["data"], "hard_renderings": 8, "hard_negatives": 290}
    options = {**meta["training"]["options"], "unknown_share": 0.2, "hard_share": 0.3, "balanced_loss": True}
    meta["training"] = {**meta["training"], "options": options}
    card = kws_card(meta, model.config).write(tmp_path / "k.safetensors").read_text(encoding="utf-8")
    assert "--hard-renderings 8 --unknown-share 0.2 --hard-share 0.3 --balanced-loss " in card
    assert "8 renderings of each of 290 hard negatives" in card
    assert "20% of the clips of each batch unknown (30% of them hard negatives)" in card
    options = {**options, "mine_share": 0.5, "mine_every": 750, "keyword_gap": 0.15}
    meta["training"] = {**meta["training"], "options": options}
    card = kws_card(meta, model.config).write(tmp_path / "k.safetensors").read_text(encoding="utf-8")
    assert "--balanced-loss --mine-share 0.5 --mine-every 750 --keyword-gap 0.15 " in card
    assert "50% of the unknown clips mined" in card and "every 750 steps" in card
    assert "after a number word the next word 150 ms or more later" in card
    meta["training"]["options"] = {**options, "speed": [0.7, 1.4]}  # as JSON gives it back
    card = kws_card(meta, model.config).write(tmp_path / "k.safetensors").read_text(encoding="utf-8")
    assert " --speed-range 0.7,1.4 --hard-renderings 8 " in card
    assert "speed/pitch resampling (x0.7 to x1.4)" in card
    meta["data"] = {**meta["data"], "holder_renderings": 24, "holders": 25}
    card = kws_card(meta, model.config).write(tmp_path / "k.safetensors").read_text(encoding="utf-8")
    assert " --hard-renderings 8 --holder-renderings 24 --unknown-share 0.2 " in card
    assert "hard negatives (other words" in card and "; 24 more of each of the 25 that hold a number word whole" in card


@pytest.mark.parametrize("value", ["0.7", "a,b", "0.7,1.4,2"])
def test_a_bad_speed_range_is_named(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--speed-range takes two numbers; anything else exits 2 naming the option, before any rendering."""
    with pytest.raises(SystemExit) as info:
        main(["train", "kws", "--speed-range", value, "--steps", "1"])
    assert info.value.code == 2
    assert f"--speed-range: give two numbers as LOW,HIGH, got {value!r}" in capsys.readouterr().err


def test_mining_scores_every_unknown_clip(tiny_kws_checkpoint: Path) -> None:
    """The model's error on each unknown training clip is a probability's complement; the sampler takes it."""
    model, meta = load_kws_model(tiny_kws_checkpoint)
    base = training_clips(KWSDataConfig.from_meta(meta["data"]), workers=1)
    sampler = ClipSampler(base, seed=0, unknown_share=0.25, mine_share=0.5)
    found = _mine(model, sampler, step=0)
    errors = unknown_errors(model, base, sampler.unknown_clips)
    assert errors.shape == (len(sampler.unknown_clips),) == (found["clips"],)
    assert np.all((errors >= 0) & (errors <= 1))
    assert found["heard_as_number"] == int((errors > 0.5).sum()) and len(found["top"]) == min(12, len(errors))
    assert sampler.mine_cdf is not None and np.isclose(sampler.mine_cdf[-1], errors.sum(), rtol=1e-4)
    assert centred(np.ones(20_000, dtype=np.float32)).shape == (16_000,)


def test_eval_reads_wav_files_of_any_rate(
    tiny_kws_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`antiphon eval kws DIR --json` labels files by folder, reads 8 kHz int16 and 16 kHz float, and counts all."""
    for word, rate in (("seven", 8000), ("two", 16_000), ("hello", 16_000)):
        audio = render(word, Rendering("en-us+m1", 160, 50, 100), rate)
        folder = tmp_path / word
        folder.mkdir()
        data = (audio * 32767).astype(np.int16) if rate == 8000 else audio
        wavfile.write(folder / "a.wav", rate, data)
    code = main(["eval", "kws", str(tmp_path), "--checkpoint", str(tiny_kws_checkpoint), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["count"] == 3 and result["labels"] == list(LABELS)
    confusion = np.asarray(result["confusion"])
    assert confusion.sum() == 3
    assert [confusion[LABELS.index(w)].sum() for w in ("seven", "two", "unknown")] == [1, 1, 1]


def test_eval_reads_telephone_wav_and_other_formats_through_sox(
    tiny_kws_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """G.711 WAV files (what 8 kHz telephone recordings often are: the WAV reader refuses them) and FLAC and Ogg files
    are read through sox, found in folders and scored; a file sox cannot read either is named (exit 2)."""
    import subprocess

    audio = render("seven", Rendering("en-us+m1", 160, 50, 100), 16_000)
    folder = tmp_path / "seven"
    folder.mkdir()
    wavfile.write(tmp_path / "source.wav", 16_000, (audio * 32767).astype(np.int16))
    for name, flags in (("a.wav", ["-r", "8000", "-e", "u-law"]), ("b.wav", ["-r", "8000", "-e", "a-law"]),
                        ("c.flac", []), ("d.ogg", [])):  # fmt: skip
        subprocess.run(["sox", str(tmp_path / "source.wav"), *flags, str(folder / name)], check=True)
    (tmp_path / "source.wav").unlink()
    code = main(["eval", "kws", str(tmp_path), "--checkpoint", str(tiny_kws_checkpoint), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["count"] == 4
    from server.kws.audio_files import read_wav

    pcm = read_wav(folder / "c.flac")
    for name in ("a.wav", "b.wav"):  # the codec's 8 kHz: close to the original, not equal
        narrow = read_wav(folder / name)
        n = min(len(narrow), len(pcm))  # 8 kHz and back: a sample more or less
        assert abs(len(narrow) - len(pcm)) <= 2 and np.corrcoef(narrow[:n], pcm[:n])[0, 1] > 0.95
    (folder / "e.wav").write_text("not audio", encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["eval", "kws", str(tmp_path), "--checkpoint", str(tiny_kws_checkpoint)])
    assert info.value.code == 2
    assert "e.wav is not a readable audio file" in capsys.readouterr().err


def test_spec_augment_zeroes_bands_and_frames() -> None:
    """Masks zero whole mel bands and whole frames, at most the configured widths."""
    features = torch.ones(8, 40, 99)
    masked = spec_augment(
        features,
        KWSTrainOptions(freq_masks=1, freq_mask=5, time_masks=1, time_mask=10),
        torch.Generator().manual_seed(0),
    )
    for row in masked:
        bands = int((row.sum(dim=1) == 0).sum())
        frames = int((row.sum(dim=0) == 0).sum())
        assert bands <= 5 and frames <= 10
        assert int((row == 0).sum()) <= bands * 99 + frames * 40


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 0}, "steps: must be at least 1, got 0"),
        ({"batch_size": 1}, "batch_size: must be at least 2, got 1"),
        ({"lr": 0.0}, "lr: must be in (0, 1), got 0.0"),
        ({"data": KWSDataConfig(per_number=0)}, "per_number: must be at least 1, got 0"),
        ({"data": KWSDataConfig(accent_share=1.5)}, "accent_share: must be in [0, 1], got 1.5"),
        ({"context": -0.1}, "context: must be in [0, 1], got -0.1"),
        ({"unknown_share": 0.0}, "unknown_share: must be in (0, 1), got 0.0"),
        ({"hard_share": 1.5}, "hard_share: must be in [0, 1], got 1.5"),
        ({"data": KWSDataConfig(hard_renderings=-1)}, "hard_renderings: must be at least 0, got -1"),
        ({"mine_share": -0.1}, "mine_share: must be in [0, 1], got -0.1"),
        ({"mine_every": 0}, "mine_every: must be at least 1, got 0"),
        ({"keyword_gap": 0.6}, "keyword_gap: must be in [0, 0.5] seconds, got 0.6"),
        ({"test_per_label": -1}, "test_per_label: must be at least 0, got -1"),
        ({"unknown_bias": 6.0}, "unknown_bias: must be in [-5, 5], got 6.0"),
        ({"data": KWSDataConfig(train_speakers=("nobody",))}, "train_speakers: must name development speakers"),
        ({"speed": (1.2, 0.9)}, "speed: must be two factors 0.5 <= low <= high <= 2, got 1.2,0.9"),
        ({"speed": (0.4, 1.2)}, "speed: must be two factors 0.5 <= low <= high <= 2, got 0.4,1.2"),
        ({"widen": 144}, "widen: widens the --init checkpoint: give --init too"),
        ({"widen": 0, "init": Path("k.safetensors")}, "widen: must be at least 1, got 0"),
        ({"model": {"peak_db": 3.0}}, "peak_db: must be -60..0 dBFS, got 3"),
        ({"model": {"channels": 0}}, "channels: must be at least 1, got 0"),
        ({"model": {"channels": 8, "blocks": 0}}, "blocks: must be at least 1, got 0"),
        ({"teachers": ("missing.safetensors",)}, "teachers: no such kws checkpoint: missing.safetensors"),
        ({"distill_weight": 1.5}, "distill_weight: must be in [0, 1], got 1.5"),
        ({"distill_temperature": 0.0}, "distill_temperature: must be in [0.1, 10], got 0.0"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, options: dict[str, object], message: str) -> None:
    """Bad options raise InvalidArgument naming the option before anything is rendered."""
    opts = KWSTrainOptions(out=tmp_path / "k.safetensors")
    for key, value in options.items():
        setattr(opts, key, value)
    with pytest.raises(InvalidArgument) as info:
        train_kws(opts)
    assert str(info.value).startswith(message)


def test_unknown_bias_is_folded_into_the_head_before_the_figures(tiny_kws_checkpoint: Path, tmp_path: Path) -> None:
    """--unknown-bias B: the same run's weights, B more on the unknown logit's bias; the card says so."""
    out = tmp_path / "biased.safetensors"
    train_kws(KWSTrainOptions.dry_run(out=out, unknown_bias=1.5))
    plain, _ = load_kws_model(tiny_kws_checkpoint)
    biased, _ = load_kws_model(out)
    shift = biased.head.bias - plain.head.bias
    expected = torch.zeros_like(shift)
    expected[LABELS.index("unknown")] = 1.5
    torch.testing.assert_close(shift, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(biased.head.weight, plain.head.weight, rtol=0, atol=0)
    card = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "--unknown-bias 1.5" in card and "then +1.5 on the unknown logit" in card


def test_model_card_names_the_speech_beyond_espeak(tiny_kws_checkpoint: Path, tmp_path: Path) -> None:
    """Voices, recorded other words, perturbed copies and the real-people development set are in the card."""
    model, meta = load_kws_model(tiny_kws_checkpoint)
    meta["data"] = {**meta["data"], "voice_renderings": 40, "voice_words": 300, "recorded_unknown": True,
                    "stamp_unknown": True, "perturbed_copies": 2}  # fmt: skip
    meta["training"] = {**meta["training"], "options": {**meta["training"]["options"], "real_dev": True}}
    speaker = {"numbers": 0.9, "n_numbers": 10, "unknown": 0.8, "n_unknown": 40}
    real = {"recorded_numbers": 0.9, "recorded_unknown": 0.8, "voices_numbers": 0.95, "voices_unknown": 0.7,
            "speakers": {"asterisk-allison": speaker}, "words": {}}  # fmt: skip
    meta["metrics"] = {**meta["metrics"], "real_dev": real}
    card = kws_card(meta, model.config).write(tmp_path / "k.safetensors").read_text(encoding="utf-8")
    assert "--voice-renderings 40 --voice-words 300 --perturbed-copies 2 --recorded-unknown --stamp-unknown" in card
    assert "Tux Paint's stamp names read in twelve other languages" in card
    assert "40 renderings of each number word and 300 other words by each" in card
    assert "2 perturbed copies of every number-word clip" in card
    assert "**90.00%** of the number words (asterisk-allison 90%)" in card


def test_widening_keeps_the_function_and_lets_the_copies_part(tiny_kws_checkpoint: Path) -> None:
    """Net2WiderNet: without noise the wider network's logits are the narrow one's; with it, the copied channels
    start apart (or they would learn as one)."""
    narrow, _ = load_kws_model(tiny_kws_checkpoint)
    waves = torch.from_numpy(np.random.default_rng(0).uniform(-0.3, 0.3, (4, 16000)).astype(np.float32))
    exact = narrow.widened(24, noise=0).eval()
    assert exact.config.channels == 24 and exact.head.in_features == 24
    with torch.no_grad():
        torch.testing.assert_close(exact(waves), narrow(waves), rtol=0, atol=1e-4)
    noisy = narrow.widened(24, seed=1)
    rows = noisy.blocks[0][3].weight[:, :, 0, 0]
    assert torch.cdist(rows, rows).fill_diagonal_(1.0).min() > 0  # no two output channels alike
    with pytest.raises(ValueError, match="cannot widen 16 channels to 8"):
        narrow.widened(8)


def test_widen_trains_the_init_checkpoint_wider(tiny_kws_checkpoint: Path, tmp_path: Path) -> None:
    """--init X --widen N: the checkpoint and its card are the wider network's, the card's command included."""
    out = tmp_path / "wide.safetensors"
    train_kws(KWSTrainOptions.dry_run(out=out, init=tiny_kws_checkpoint, widen=24))
    model, meta = load_kws_model(out)
    assert model.config.channels == 24
    assert meta["training"]["init"]["widened_from"] == 16
    card = out.with_suffix(".md").read_text(encoding="utf-8")
    assert f"--init {tiny_kws_checkpoint.name} --widen 24" in card
    assert "widened from 16 to 24 channels" in card
    with pytest.raises(InvalidArgument, match="widen: must be at least the checkpoint's 16 channels, got 8"):
        train_kws(KWSTrainOptions.dry_run(out=tmp_path / "narrow.safetensors", init=tiny_kws_checkpoint, widen=8))


def test_peak_db_moves_the_init_checkpoints_level_and_keeps_its_weights(
    tiny_kws_checkpoint: Path, tmp_path: Path
) -> None:
    """--init X --peak-db D: the checkpoint starts from X's weights with every clip's peak moved to D, and its card's
    command names the flag; a fresh model takes it too."""
    base, _ = load_kws_model(tiny_kws_checkpoint)
    out = tmp_path / "level.safetensors"
    opts = KWSTrainOptions.dry_run(out=out, init=tiny_kws_checkpoint, steps=1, lr=1e-9)
    opts.model = {**(opts.model or {}), "peak_db": -24.0}
    train_kws(opts)
    model, meta = load_kws_model(out)
    assert model.config.peak_db == -24.0 and base.config.peak_db is None
    assert meta["training"]["init"]["peak_db_from"] is None
    for name, weight in base.state_dict().items():
        if weight.dtype.is_floating_point and "running" not in name:
            assert torch.allclose(weight, model.state_dict()[name], atol=1e-6), name
    card = out.with_suffix(".md").read_text(encoding="utf-8")
    assert f"--init {tiny_kws_checkpoint.name} --peak-db -24" in card
    assert "every clip's peak moved to -24 dBFS first" in card
    fresh = tmp_path / "fresh.safetensors"
    opts = KWSTrainOptions.dry_run(out=fresh)
    opts.model = {**(opts.model or {}), "peak_db": -12.0}
    train_kws(opts)
    assert load_kws_model(fresh)[0].config.peak_db == -12.0
    assert "--peak-db -12" in fresh.with_suffix(".md").read_text(encoding="utf-8")


def test_distillation_pulls_a_student_to_its_teachers(tiny_kws_checkpoint: Path) -> None:
    """The teachers' target is the normalised mean of their log-probabilities; the loss is zero at the target, and
    a fresh network that follows it alone comes to answer as the teacher does."""
    teacher, _ = load_kws_model(tiny_kws_checkpoint)
    rng = np.random.default_rng(3)
    words = [render(word, Rendering("en-us", 160, 50)) for word in ("three", "seven", "nine", "hello")]
    waves = torch.from_numpy(np.stack([centred(w) for w in words] + [
        rng.uniform(-a, a, 16000).astype(np.float32) for a in (0.01, 0.1, 0.5)
    ]))  # fmt: skip
    with torch.no_grad():
        own = torch.log_softmax(teacher(waves) / 2, dim=1)
    torch.testing.assert_close(teacher_log_probs([teacher], waves, 2.0), own)
    assert distillation_loss(teacher(waves).detach(), own, 2.0).item() == pytest.approx(0, abs=1e-5)
    other = KWSNet(KWSConfig(num_classes=len(LABELS), channels=8, blocks=1)).eval()
    pair = teacher_log_probs([teacher, other], waves, 1.0)
    with torch.no_grad():
        mean = (torch.log_softmax(teacher(waves), 1) + torch.log_softmax(other(waves), 1)) / 2
    torch.testing.assert_close(pair, torch.log_softmax(mean, 1))
    torch.testing.assert_close(pair.exp().sum(dim=1), torch.ones(len(waves)))

    torch.manual_seed(0)
    student = KWSNet(KWSConfig(num_classes=len(LABELS), channels=16, blocks=2)).eval()  # no batch statistics
    target = teacher_log_probs([teacher], waves, 1.0)
    before = distillation_loss(student(waves), target, 1.0).item()
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    for _ in range(60):
        optimizer.zero_grad()
        distillation_loss(student(waves), target, 1.0).backward()
        optimizer.step()
    with torch.no_grad():
        after = distillation_loss(student(waves), target, 1.0).item()
        agree = (student(waves).argmax(1) == teacher(waves).argmax(1)).float().mean().item()
    assert after < 0.2 * before and agree == 1.0


def test_teachers_are_recorded_and_named_on_the_card(tiny_kws_checkpoint: Path, tmp_path: Path) -> None:
    """--teachers A,B: the checkpoint records each teacher's file and hash, the card's command and training row name
    them with the weight and temperature."""
    out = tmp_path / "student.safetensors"
    train_kws(KWSTrainOptions.dry_run(out=out, teachers=(str(tiny_kws_checkpoint),) * 2, distill_weight=0.7))
    meta = read_meta(out)
    teachers = meta["training"]["teachers"]
    assert [t["file"] for t in teachers] == [tiny_kws_checkpoint.name] * 2
    assert all(len(t["sha256"]) == 64 for t in teachers)
    card = out.with_suffix(".md").read_text(encoding="utf-8")
    assert f"--teachers {tiny_kws_checkpoint.name},{tiny_kws_checkpoint.name} --distill-weight 0.7" in card
    assert "70% of the loss distilled from" in card and "at temperature 2" in card


def test_the_development_set_is_read_before_any_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--real-dev builds the development set before training, so that a fault there stops the run at its start, not
    after its steps with nothing saved."""
    from server.kws import devset
    from server.training import ClassifierTrainer

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no development set")

    steps: list[int] = []
    monkeypatch.setattr(devset, "development_set", broken)
    monkeypatch.setattr(ClassifierTrainer, "train", lambda *a, **k: steps.append(1))
    out = tmp_path / "k.safetensors"
    with pytest.raises(RuntimeError, match="no development set"):
        train_kws(KWSTrainOptions.dry_run(out=out, real_dev=True))
    assert steps == [] and not out.exists()
