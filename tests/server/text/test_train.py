"""The text trainer: budgets, exact resume, data-parallel training under torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from server.checkpoint import read_meta
from server.cli import build_parser
from server.data.shakespeare import DEV_PLAYS, Corpus
from server.errors import CheckpointError, InvalidArgument
from server.options import from_flags
from server.text.checkpoint import load_text_model
from server.text.model import CharLSTMConfig
from server.text.options import TextTrainOptions
from server.text.train import TextTrainer
from server.training import state_path

from ...conftest import timeout

TINY = {"hidden_size": 16, "num_layers": 2, "embed_dim": 8}


def options(corpus: Path, out: Path, **overrides: object) -> TextTrainOptions:
    base: dict[str, object] = {
        "corpus": corpus,
        "out": out,
        "steps": 6,
        "device": "cpu",
        "precision": "fp32",
        "batch_size": 4,
        "seq_len": 16,
        "warmup_steps": 2,
        "eval_every": 3,
        "progress": False,
        "model": {**TINY, "dropout": 0.0},
    }
    base.update(overrides)
    return TextTrainOptions(**base)  # type: ignore[arg-type]


def test_training_writes_checkpoint_with_metrics_and_card(tiny_corpus: Path, tmp_path: Path) -> None:
    """A run writes weights, config, vocabulary, corpus hash, steps, time and held-out bits/char."""
    out = tmp_path / "m.safetensors"
    info = TextTrainer(options(tiny_corpus, out)).train()
    meta = read_meta(out)
    assert meta["training"]["steps"] == 6
    assert meta["training"]["chars_seen"] == 6 * 4 * 16
    assert meta["corpus"]["sha256"] == info["corpus"]["sha256"]
    assert 0 < meta["metrics"]["held_out_bits_per_char"] < 8
    card = out.with_suffix(".md").read_text()
    assert "held-out bits per character" in card
    # the command names what differs from the defaults, so that it trains the same model again
    flags = "--steps 6 --warmup-steps 2 --batch-size 4 --seq-len 16 --hidden-size 16 --embed-dim 8 --dropout 0 --out"
    assert flags in card


def test_interrupted_run_resumes_exactly(tiny_corpus: Path, tmp_path: Path) -> None:
    """SIGINT saves the state after the current step; --resume then ends with the weights of an
    uninterrupted run."""

    def train_cmd(out: Path, *extra: str) -> list[str]:
        return [
            sys.executable, "-m", "server.cli", "train", "text", "--corpus", str(tiny_corpus), "--out", str(out),
            "--steps", "120", "--device", "cpu", "--precision", "fp32", "--batch-size", "4", "--seq-len", "16",
            "--hidden-size", "16", "--embed-dim", "8", "--warmup-steps", "2", "--eval-every", "3",
            "--no-progress", *extra,
        ]  # fmt: skip

    straight, split = tmp_path / "straight.safetensors", tmp_path / "split.safetensors"
    subprocess.run(train_cmd(straight), check=True, capture_output=True, timeout=timeout(120))
    proc = subprocess.Popen(train_cmd(split), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # the first held-out estimate shows that steps are being taken
        if "held-out ~" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=timeout(60))[0]
    assert proc.returncode == 130, rest
    assert "run again with --resume" in rest
    stopped_at = torch.load(state_path(split), weights_only=True)["step"]
    assert 3 <= stopped_at < 120
    subprocess.run(train_cmd(split, "--resume"), check=True, capture_output=True, timeout=timeout(120))
    a, _, _ = load_text_model(straight)
    b, _, meta = load_text_model(split)
    assert meta["training"]["steps"] == 120
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=0, atol=1e-6)


def test_resume_refuses_state_trained_on_other_data(tiny_corpus: Path, tmp_path: Path) -> None:
    """Resuming on a different corpus is an error that says why."""
    out = tmp_path / "m.safetensors"
    TextTrainer(options(tiny_corpus, out, steps=2)).train()
    other = tmp_path / "other.txt"
    other.write_text(tiny_corpus.read_text() + "\nMore text.\n")
    with pytest.raises(InvalidArgument, match=r"^corpus: .* trained on another corpus .* give that run's --corpus"):
        TextTrainer(options(other, out, steps=4, resume=True))


def test_snapshot_writes_the_saved_state_and_leaves_the_run_going(tiny_corpus: Path, tmp_path: Path) -> None:
    """--snapshot writes the checkpoint and card of a run's saved state elsewhere without training; the state
    file is untouched and --resume then finishes the run."""
    out, snap = tmp_path / "run.safetensors", tmp_path / "snap.safetensors"
    TextTrainer(options(tiny_corpus, out, steps=4)).train()  # a finished budget leaves its state too
    saved = state_path(out).read_bytes()
    TextTrainer(options(tiny_corpus, out, steps=8, resume=True, snapshot=snap)).train()
    assert state_path(out).read_bytes() == saved
    a, _, _ = load_text_model(out)
    b, _, meta = load_text_model(snap)
    assert meta["training"]["steps"] == 4
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=0, atol=0)
    card = snap.with_suffix(".md").read_text()
    assert f"--out {out} --resume --snapshot {snap}`" in card
    assert "held-out bits per character" in card
    TextTrainer(options(tiny_corpus, out, steps=8, resume=True)).train()
    assert read_meta(out)["training"]["steps"] == 8


def test_init_starts_from_a_checkpoints_weights_and_a_resume_keeps_the_record(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """--init: the run takes the checkpoint's weights, vocabulary and sizes (the size flags lose) and this run's
    dropouts; a resumed part of it still names the start in its checkpoint and card."""
    start_path, out = tmp_path / "start.safetensors", tmp_path / "more.safetensors"
    TextTrainer(options(tiny_corpus, start_path, steps=3)).train()
    start, start_vocab, start_meta = load_text_model(start_path)
    # the sizes given are not the checkpoint's; a tiny learning rate keeps the weights where they started
    model = {"hidden_size": 8, "num_layers": 1, "embed_dim": 4, "dropout": 0.3, "embed_dropout": 0.2}
    TextTrainer(options(tiny_corpus, out, steps=2, lr=1e-12, init=start_path, model=model)).train()
    after, vocab, meta = load_text_model(out)
    assert vocab.chars == start_vocab.chars
    assert after.config == CharLSTMConfig(**{**start.config.to_dict(), "dropout": 0.3, "embed_dropout": 0.2})
    for key, value in start.state_dict().items():
        torch.testing.assert_close(after.state_dict()[key], value, rtol=0, atol=1e-6)
    assert meta["init"]["file"] == start_path.name
    assert meta["init"]["steps"] == start_meta["training"]["steps"] == 3
    assert meta["init"]["held_out_bits_per_char"] == start_meta["metrics"]["held_out_bits_per_char"]
    TextTrainer(options(tiny_corpus, out, steps=4, resume=True, lr=1e-12, model=model)).train()  # the same command
    resumed = read_meta(out)
    assert resumed["training"]["steps"] == 4 and resumed["init"] == meta["init"]
    card = out.with_suffix(".md").read_text()
    assert f"--init {start_path.name}" in card and "| started from |" in card and "3 steps" in card
    assert "--lr 1e-12" in card and "--dropout 0.3 --embed-dropout 0.2" in card and "--hidden-size" not in card
    assert "(by this run" not in card  # the start held out the same text
    other = tmp_path / "other.txt"  # fine-tuning on another text: its held-out part may be in what the start read
    other.write_text(tiny_corpus.read_text() + "\nMore text.\n")
    TextTrainer(options(other, tmp_path / "tuned.safetensors", steps=1, init=start_path)).train()
    tuned = (tmp_path / "tuned.md").read_text()
    assert f"(by this run: the start `{start_path.name}` was trained on other text, which may hold them)" in tuned


def test_init_names_its_flag_when_it_cannot_start(tiny_corpus: Path, tmp_path: Path) -> None:
    """--init with --resume, or of a file that is not there, is refused before any training."""
    out = tmp_path / "m.safetensors"
    with pytest.raises(InvalidArgument, match="init: --resume continues a run"):
        TextTrainer(options(tiny_corpus, out, resume=True, init=tiny_corpus))
    with pytest.raises(InvalidArgument, match="init: no such checkpoint"):
        TextTrainer(options(tiny_corpus, out, init=tmp_path / "missing.safetensors"))
    assert not out.exists()


def test_snapshot_needs_resume_and_a_saved_state(tiny_corpus: Path, tmp_path: Path) -> None:
    """--snapshot without --resume names the flag; with no saved state it says where it looked."""
    out, snap = tmp_path / "run.safetensors", tmp_path / "snap.safetensors"
    with pytest.raises(InvalidArgument, match="snapshot"):
        TextTrainer(options(tiny_corpus, out, snapshot=snap))
    with pytest.raises(CheckpointError, match="no training state"):
        TextTrainer(options(tiny_corpus, out, resume=True, snapshot=snap))
    assert not snap.exists()


def test_budget_is_required(tiny_corpus: Path, tmp_path: Path) -> None:
    """Without --steps or --minutes the trainer says which option is missing."""
    with pytest.raises(InvalidArgument, match="steps"):
        TextTrainer(options(tiny_corpus, tmp_path / "m.safetensors", steps=None))


def test_torchrun_trains_with_two_processes(tiny_corpus: Path, tmp_path: Path) -> None:
    """`torchrun --nproc-per-node 2` trains one model on twice the data per step (gloo on CPU)."""
    out = tmp_path / "ddp.safetensors"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "server.cli", "train", "text", "--corpus", str(tiny_corpus), "--out", str(out),
        "--steps", "4", "--device", "cpu", "--precision", "fp32", "--batch-size", "4", "--seq-len", "16",
        "--hidden-size", "16", "--embed-dim", "8", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout(180), env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = read_meta(out)
    assert meta["training"]["processes"] == 2
    assert meta["training"]["chars_seen"] == 4 * 2 * 4 * 16


def dev_corpus(tiny_corpus: Path) -> Corpus:
    """The tiny corpus with its first part as training text, the rest as one held-out and one development play."""
    text = tiny_corpus.read_text(encoding="utf-8")
    cut, dev_cut = len(text) * 3 // 5, len(text) * 4 // 5
    valid, dev = {"held.txt": text[cut:dev_cut]}, {"dev.txt": text[dev_cut:]}
    return Corpus(train=text[:cut], valid=valid, source="test", sha256="0" * 64, dev=dev)


def test_dev_split_is_reported_beside_the_held_out_plays(tiny_corpus: Path, tmp_path: Path) -> None:
    """With development plays the checkpoint and its card report their bits/char beside the held-out figure."""
    out = tmp_path / "m.safetensors"
    opts = options(tiny_corpus, out)
    opts.corpus = None  # the corpus comes whole, as load_corpus gives it
    trainer = TextTrainer(opts, corpus=dev_corpus(tiny_corpus))
    trainer.train()
    meta = read_meta(out)
    assert meta["corpus"]["dev"] == {"dev.txt": len(dev_corpus(tiny_corpus).dev["dev.txt"])}
    assert 0 < meta["metrics"]["dev_bits_per_char"] < 8
    assert list(meta["metrics"]["dev_bits_per_char_by_document"]) == ["dev.txt"]
    assert 0 < meta["metrics"]["held_out_bits_per_char"] < 8
    card = out.with_suffix(".md").read_text()
    assert "| development bits per character |" in card and "| dev.txt (development) |" in card


def test_without_dev_plays_nothing_is_reported_for_them(tiny_corpus: Path, tmp_path: Path) -> None:
    """Today's runs (no development split) have no development figure."""
    out = tmp_path / "m.safetensors"
    TextTrainer(options(tiny_corpus, out, steps=2)).train()
    meta = read_meta(out)
    assert meta["corpus"]["dev"] == {} and "dev_bits_per_char" not in meta["metrics"]
    assert "development" not in out.with_suffix(".md").read_text()


def test_recipe_options_reach_the_model_and_the_optimizer(tiny_corpus: Path, tmp_path: Path) -> None:
    """Embedding and output dropout go into the saved config; weight decay into the optimizer's matrices."""
    model = {**TINY, "dropout": 0.1, "embed_dropout": 0.2, "output_dropout": 0.3}
    out = tmp_path / "m.safetensors"
    trainer = TextTrainer(options(tiny_corpus, out, steps=2, model=model, weight_decay=0.1))
    assert [g["weight_decay"] for g in trainer.optimizer.param_groups] == [0.1, 0.0]
    trainer.train()
    config = read_meta(out)["config"]
    assert (config["dropout"], config["embed_dropout"], config["output_dropout"]) == (0.1, 0.2, 0.3)
    assert "dropout 0.2 on the embedding, 0.1 between layers, 0.3 on the output" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"dev_plays": ("othello",)}, "dev_plays"),  # with --corpus: a file has no plays
        ({"corpus": None, "dev_plays": ("hamlet",)}, "dev_plays"),
        ({"weight_decay": 1.5}, "weight_decay"),
        ({"min_lr_ratio": -0.1}, "min_lr_ratio"),
    ],
)
def test_bad_recipe_options_name_their_field(
    tiny_corpus: Path, tmp_path: Path, overrides: dict[str, object], field: str
) -> None:
    """Options out of range are refused before any data is read, naming the option."""
    opts = options(tiny_corpus, tmp_path / "m.safetensors")
    for name, value in overrides.items():
        setattr(opts, name, value)
    with pytest.raises(InvalidArgument) as caught:
        TextTrainer(opts)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("flags", "plays"),
    [([], ()), (["--dev-plays"], DEV_PLAYS), (["--dev-plays", "tempest", "lear"], ("tempest", "lear"))],
)
def test_dev_plays_flag_names_the_split(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], plays: tuple[str, ...]
) -> None:
    """No flag: no split; the flag alone: DEV_PLAYS; the flag with names: those plays."""
    seen: list[TextTrainOptions] = []

    class Recorder:
        def __init__(self, opts: TextTrainOptions) -> None:
            seen.append(opts)

        def train(self) -> dict[str, object]:
            return {}

    monkeypatch.setattr("server.text.train.TextTrainer", Recorder)
    args = build_parser().parse_args(["train", "text", "--steps", "1", "--embed-dropout", "0.1", *flags])
    assert args.func(args) == 0
    assert seen[0].dev_plays == plays
    # --output-dropout not given: left out of the model's options, the config's own (None: --dropout) applies
    assert seen[0].model["embed_dropout"] == 0.1 and seen[0].model.get("output_dropout") is None
    assert CharLSTMConfig(vocab_size=1, **seen[0].model).output_dropout is None


def test_dry_run_flag_trains_the_tests_tiny_model() -> None:
    """`antiphon train text --dry-run` is the preset the tests train with: the same options, the same model."""
    args = build_parser().parse_args(["train", "text", "--dry-run", "--corpus", "tiny.txt"])
    opts = from_flags(TextTrainOptions, args)
    preset = TextTrainOptions.dry_run(corpus=Path("tiny.txt"))
    assert CharLSTMConfig(vocab_size=1, **opts.model) == CharLSTMConfig(vocab_size=1, **preset.model)
    assert opts == TextTrainOptions.dry_run(corpus=Path("tiny.txt"), model=opts.model)
    assert (opts.steps, opts.batch_size, opts.seq_len) == (60, 8, 32)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--layers", "0"], "layers: must be at least 1, got 0"),
        (["--output-dropout", "1"], "output_dropout: must be in [0, 1), got 1.0"),
        (["--min-lr-ratio", "2"], "min_lr_ratio: must be in [0, 1], got 2.0"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(flags: list[str], message: str) -> None:
    """The options refuse a flag out of range before any data is read, naming the flag (--layers: layers)."""
    opts = from_flags(TextTrainOptions, build_parser().parse_args(["train", "text", "--steps", "1", *flags]))
    with pytest.raises(InvalidArgument) as caught:
        opts.validate()
    assert str(caught.value) == message
