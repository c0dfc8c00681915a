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
from server.errors import CheckpointError, InvalidArgument
from server.text.checkpoint import load_text_model
from server.text.train import TextTrainer, TextTrainOptions, state_path

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
    assert "held-out bits per character" in out.with_suffix(".md").read_text()


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
    with pytest.raises(CheckpointError, match="corpus hash differs"):
        TextTrainer(options(other, out, steps=4, resume=True))


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
