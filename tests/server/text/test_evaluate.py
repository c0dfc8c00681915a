"""Bits per character, by the library and by the `antiphon eval text` command."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from server.text.checkpoint import load_text_model
from server.text.evaluate import bits_per_char, dynamic_total_bits, streamed_bits_per_char, total_bits
from server.text.options import DynamicEval
from server.text.vocab import START_TEXT

from ...conftest import timeout


def by_hand(checkpoint: Path, text: str) -> float:
    """-log2 p(char | everything before it), averaged, from one forward over START_TEXT + text."""
    model, vocab, _ = load_text_model(checkpoint)
    ids = vocab.encode(START_TEXT + text)
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]]), model.init_state(1))
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    return -sum(logp[i, ids[i + 1]].item() for i in range(len(text))) / math.log(2) / len(text)


def eval_text(path: Path, checkpoint: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`antiphon eval text PATH --checkpoint CHECKPOINT FLAGS`, run to its end; stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "eval", "text", str(path), "--checkpoint", str(checkpoint), *flags],
        capture_output=True,
        text=True,
        timeout=timeout(60),
        check=False,
    )


def test_eval_command_matches_the_value_computed_by_hand(tiny_text_checkpoint: Path, tmp_path: Path) -> None:
    """`antiphon eval text FILE --json` reports the hand-computed bits/char, newlines and unknowns included."""
    text = "Kent.\nThe king is come, Zounds!\n\nLear.\nGood night.\n"  # 'Z' and '!' are outside the vocabulary
    path = tmp_path / "known.txt"
    path.write_text(text, encoding="utf-8")
    result = eval_text(path, tiny_text_checkpoint, "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["chars"] == len(text)
    assert math.isclose(report["bits_per_char"], by_hand(tiny_text_checkpoint, text), rel_tol=1e-5)


@pytest.mark.parametrize("chunk", [1, 7, None], ids=["chunk=1", "chunk=7", "default chunk"])
def test_chunked_evaluation_carries_state(tiny_text_checkpoint: Path, chunk: int | None) -> None:
    """Scoring in chunks of any size gives the same total as one pass: the state runs on across chunks."""
    model, vocab, _ = load_text_model(tiny_text_checkpoint)
    default_chunk = inspect.signature(total_bits).parameters["chunk"].default
    text = "Fool.\nMy lord, the king is come.\n\n" * 150
    assert len(text) > default_chunk  # several chunks at every size, the default included
    bits = bits_per_char(model, vocab, text) if chunk is None else total_bits(model, vocab, text, chunk) / len(text)
    assert math.isclose(bits, by_hand(tiny_text_checkpoint, text), rel_tol=1e-5)


def test_streamed_estimate_is_close_to_the_exact_value(tiny_text_checkpoint: Path) -> None:
    """The parallel-stream estimate used for progress reports stays near the exact figure."""
    model, vocab, _ = load_text_model(tiny_text_checkpoint)
    text = "Edgar.\nWhat love may do for thee, my lord.\n\n" * 200
    exact = bits_per_char(model, vocab, text)
    estimate = streamed_bits_per_char(model, vocab.encode_tensor(text), streams=4, chunk=64)
    assert abs(estimate - exact) < 0.05


def test_eval_of_a_missing_file_exits_2_naming_it(tiny_text_checkpoint: Path, tmp_path: Path) -> None:
    """A missing FILE is a usage error that names the file."""
    missing = tmp_path / "nope.txt"
    result = eval_text(missing, tiny_text_checkpoint)
    assert result.returncode == 2
    assert f"FILE: {missing} does not exist" in result.stderr


def test_eval_with_a_missing_checkpoint_exits_1(tmp_path: Path) -> None:
    """A missing checkpoint is a runtime failure with a clear message, not a traceback."""
    path = tmp_path / "t.txt"
    path.write_text("hello", encoding="utf-8")
    missing = tmp_path / "no.safetensors"
    result = eval_text(path, missing)
    assert result.returncode == 1
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_dynamic_evaluation_scores_each_segment_before_it_adapts(tiny_text_checkpoint: Path) -> None:
    """A text within one segment is scored by the trained weights alone: dynamic equals static. On a text that
    repeats, the adapted weights predict the repeats better. The model passed in is left as trained."""
    model, vocab, _ = load_text_model(tiny_text_checkpoint)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    short = "Fool.\nMy lord, the king is come.\n\n"
    settings = DynamicEval(lr=1.0, segment=len(short))
    static = total_bits(model, vocab, short)
    assert math.isclose(dynamic_total_bits(model, vocab, short, settings), static, rel_tol=1e-6)
    text = short * 20
    assert dynamic_total_bits(model, vocab, text, settings) < 0.9 * total_bits(model, vocab, text)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_dynamic_evaluation_pulled_fully_back_is_static(tiny_text_checkpoint: Path) -> None:
    """decay 1 - 1e-12 undoes each step at once: every segment is scored by the trained weights, as statically."""
    model, vocab, _ = load_text_model(tiny_text_checkpoint)
    text = "Edgar.\nWhat love may do for thee, my lord.\n\n" * 5
    settings = DynamicEval(lr=0.05, decay=1 - 1e-12, segment=7)
    static = total_bits(model, vocab, text)
    assert math.isclose(dynamic_total_bits(model, vocab, text, settings), static, rel_tol=1e-5)


def test_eval_dynamic_reports_both_figures_and_names_a_bad_flag(tiny_text_checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / "play.txt"
    path.write_text("Kent.\nThe king is come.\n\n" * 10, encoding="utf-8")
    result = eval_text(path, tiny_text_checkpoint, "--dynamic", "--segment", "20", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["dynamic"]["segment"] == 20 and report["dynamic"]["bits_per_char"] < report["bits_per_char"]
    assert "(dynamic evaluation: " in result.stdout
    bad = eval_text(path, tiny_text_checkpoint, "--dynamic", "--dynamic-lr", "-1")
    assert bad.returncode == 2 and "--dynamic-lr" in bad.stderr and "positive" in bad.stderr
