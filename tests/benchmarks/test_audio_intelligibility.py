"""The word error rate of benchmarks/audio_intelligibility.py, and PocketSphinx's own language model on espeak-ng."""

from __future__ import annotations

import pytest

from benchmarks.audio_intelligibility import pocketsphinx_transcripts, word_edits, word_error_rate, words
from server.data.speech import Rendering, render, trim_silence


def test_words_are_lowercase_without_punctuation() -> None:
    """Case and punctuation go; an apostrophe inside a word stays."""
    assert words("Where's the Train-station, Sir?") == ["where's", "the", "train", "station", "sir"]


@pytest.mark.parametrize(
    ("reference", "hypothesis", "edits"),
    [
        ("turn off the lights", "turn off the lights", 0),
        ("turn off the lights", "turn of the lights", 1),  # a substitution
        ("turn off the lights", "turn the lights", 1),  # a deletion
        ("turn off the lights", "turn off all the lights", 1),  # an insertion
        ("turn off the lights", "", 4),
        ("", "turn off", 2),
        ("a b c d", "b c d e", 2),  # a deletion and an insertion beat four substitutions
    ],
)
def test_word_edits(reference: str, hypothesis: str, edits: int) -> None:
    """The fewest substitutions, deletions and insertions between two word lists."""
    assert word_edits(reference.split(), hypothesis.split()) == edits


def test_word_error_rate_sums_edits_over_reference_words() -> None:
    """Edits of all pairs over all reference words, after case and punctuation are stripped."""
    assert word_error_rate(["Turn off the lights.", "call me"], ["turn of the lights", "call me home"]) == 2 / 6


def test_word_error_rate_refuses_unpaired_texts() -> None:
    """As many hypotheses as references, or an error that counts both."""
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])


def test_pocketsphinx_language_model_transcribes_an_espeak_ng_sentence() -> None:
    """PocketSphinx with its own en-us language model hears most of a simple sentence spoken by espeak-ng."""
    pytest.importorskip("pocketsphinx", reason="pocketsphinx (a dev dependency) is not installed")
    text = "where is the train station"
    wave = trim_silence(render(text, Rendering(voice="en-gb-x-gbcwmd+klatt3")), pad=160)
    assert word_error_rate([text], pocketsphinx_transcripts([wave])) <= 0.5
