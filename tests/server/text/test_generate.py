"""Token-by-token generation: reproducibility, stop sequences and the sample command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.sampling import SamplingParams
from server.text.checkpoint import load_text_model
from server.text.generate import StopMatcher, TextGeneration

from ...conftest import timeout


def generate(checkpoint: Path, prompt: str, params: SamplingParams) -> tuple[str, str | None]:
    model, vocab, _ = load_text_model(checkpoint)
    generation = TextGeneration(model, vocab, prompt, params)
    return "".join(generation), generation.finish_reason


def test_seeded_sampling_is_reproducible(tiny_text_checkpoint: Path) -> None:
    """The same seed gives the same text; another seed gives other text."""
    params = SamplingParams(temperature=1.0, seed=42, max_tokens=80)
    first, reason = generate(tiny_text_checkpoint, "Kent.\n", params)
    again, _ = generate(tiny_text_checkpoint, "Kent.\n", params)
    other, _ = generate(tiny_text_checkpoint, "Kent.\n", params.with_defaults(seed=43))
    assert first == again
    assert first != other
    assert len(first) == 80
    assert reason == "length"


def test_generation_never_emits_the_unknown_symbol(tiny_text_checkpoint: Path) -> None:
    """Even at a high temperature the unknown symbol is never sampled."""
    text, _ = generate(tiny_text_checkpoint, "", SamplingParams(temperature=20.0, seed=1, max_tokens=300))
    assert "\ufffd" not in text


def test_stop_sequence_ends_generation_and_is_not_emitted(tiny_text_checkpoint: Path) -> None:
    """Greedy text cut at the first occurrence of a stop sequence, which is left out."""
    full, _ = generate(tiny_text_checkpoint, "Lear.\n", SamplingParams(temperature=0, max_tokens=200))
    stop = full[20:23]
    cut, reason = generate(tiny_text_checkpoint, "Lear.\n", SamplingParams(temperature=0, max_tokens=200, stop=(stop,)))
    assert reason == "stop"
    assert cut == full[: full.index(stop)]


def test_stop_matcher_holds_back_a_partial_match_across_pieces() -> None:
    """A stop sequence split over several tokens is caught; text that only looked like one is released."""
    matcher = StopMatcher(("\n\nKent.",))
    assert matcher.feed("Good night") == ("Good night", False)
    assert matcher.feed("\n") == ("", False)
    assert matcher.feed("\n") == ("", False)
    assert matcher.feed("K") == ("", False)
    assert matcher.feed("x") == ("\n\nKx", False)
    assert matcher.feed("\n\nKent") == ("", False)
    assert matcher.feed(".") == ("", True)


def run_sample(checkpoint: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "server.cli", "sample", "text", "--checkpoint", str(checkpoint), "--device", "cpu"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout(60), check=False)


def test_sample_command_streams_the_seeded_text(tiny_text_checkpoint: Path) -> None:
    """`antiphon sample text` prints the prompt and the same continuation as the library."""
    result = run_sample(tiny_text_checkpoint, "--prompt", "Fool.\n", "--seed", "5", "--max-tokens", "40")
    assert result.returncode == 0, result.stderr
    expected, _ = generate(tiny_text_checkpoint, "Fool.\n", SamplingParams(seed=5, max_tokens=40))
    assert result.stdout == "Fool.\n" + expected + "\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--temperature", "-1"], "--temperature: must be between 0 and 100"),
        (["--top-k", "-3"], "--top-k: must be in 0.."),
        (["--top-p", "2"], "--top-p: must be in (0, 1]"),
        (["--max-tokens", "0"], "--max-tokens: must be in 1..100000"),
        (["--seed", "-5"], "--seed: must be in 0..2**64-1"),
    ],
)
def test_sample_command_rejects_bad_arguments(tiny_text_checkpoint: Path, args: list[str], message: str) -> None:
    """A bad sampling argument exits 2 with a message naming it."""
    result = run_sample(tiny_text_checkpoint, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
